"""Validate reports against the shipped JSON Schema: ``assert_valid_report(report)``."""

from __future__ import annotations

import functools
import importlib
from typing import Any

from taskscope.reports import load_schema


@functools.cache
def _validator() -> Any:
    # Through import_module: jsonschema ships no type information.
    jsonschema: Any = importlib.import_module("jsonschema")
    schema = load_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def assert_valid_report(report: dict[str, Any]) -> None:
    """Fail with every schema violation (path and message) when `report` is invalid."""
    errors = sorted(
        _validator().iter_errors(report), key=lambda e: [str(part) for part in e.absolute_path]
    )
    if errors:
        lines = [f"/{'/'.join(str(p) for p in e.absolute_path)}: {e.message}" for e in errors]
        raise AssertionError("report does not match its schema:\n  " + "\n  ".join(lines))
