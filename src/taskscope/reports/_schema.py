"""The report's JSON Schema (shipped next to this module) and validation against it."""

from __future__ import annotations

import functools
import importlib
import json
from importlib import resources
from typing import Any, Final

from ._json import SCHEMA_ID, SECTIONS

SCHEMA_FILE: Final = "report.schema.json"


@functools.cache
def _schema_text() -> str:
    return resources.files(__package__).joinpath(SCHEMA_FILE).read_text(encoding="utf-8")


def load_schema() -> dict[str, Any]:
    """Return the JSON Schema (draft 2020-12) of ``taskscope.report/1`` as a fresh dict."""
    schema: dict[str, Any] = json.loads(_schema_text())
    return schema


def _where(path: Any) -> str:
    return "/" + "/".join(str(part) for part in path)


def report_problems(report: Any, *, limit: int = 10) -> list[str]:
    """Return why `report` is not a valid taskscope report (empty when it is).

    Validates against the JSON Schema when ``jsonschema`` is installed; otherwise
    checks only the schema id and the required sections.
    """
    if not isinstance(report, dict) or report.get("schema") != SCHEMA_ID:
        return [f'not a taskscope report (no "schema": "{SCHEMA_ID}")']
    try:
        # Through import_module: jsonschema ships no type information (typed as Any).
        jsonschema: Any = importlib.import_module("jsonschema")
    except ImportError:
        missing = [name for name in SECTIONS if name not in report]
        return [f"missing section {name!r}" for name in missing]
    validator = jsonschema.Draft202012Validator(load_schema())
    errors = sorted(
        validator.iter_errors(report), key=lambda e: [str(part) for part in e.absolute_path]
    )
    return [f"{_where(e.absolute_path)}: {e.message}" for e in errors[:limit]]
