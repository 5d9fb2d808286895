"""Run ``python -m taskscope`` and plain python in subprocesses, side by side."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env["PYTHONUNBUFFERED"] = "0"
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def taskscope(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m taskscope ARGS`` in `cwd`."""
    return subprocess.run(
        [sys.executable, "-m", "taskscope", *args],
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        check=False,
    )


def python(cwd: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run plain ``python ARGS`` in `cwd`, for comparison."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        timeout=30,
        env=_env(),
        check=False,
    )


def read_report(path: Path) -> dict[str, Any]:
    """Load a JSON report."""
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return report


def line_of(path: Path, marker: str) -> int:
    """Return the number of the line of `path` that ends with ``# <marker>``."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.rstrip().endswith(f"# {marker}"):
            return number
    raise AssertionError(f"marker {marker!r} not found in {path}")
