"""The JSON report, schema ``taskscope.report/1`` (documented in docs/report.md)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import tempfile
from os import PathLike
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable

    from .._core._records import Finding, Snapshot

SCHEMA_ID: Final = "taskscope.report/1"

#: The sections every report has; monitors add more (``loop``, ``locks``, ...).
SECTIONS: Final = ("schema", "program", "summary", "findings", "tasks", "sites", "regions")


def to_jsonable(value: Any) -> Any:
    """Convert records (frozen dataclasses), tuples and dicts to JSON-ready values."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None  # JSON has no NaN or infinity
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    return repr(value)


def event_loop_name(backends: Iterable[str]) -> str | None:
    """Return which event loop ran the program's tasks, when it is unambiguous.

    ``trio`` for trio (and AnyIO on trio); for asyncio, ``uvloop`` when uvloop was
    imported (a best-effort guess: importing uvloop almost always means running it),
    else ``asyncio``. None when no task ran, or tasks ran on both backends.
    """
    seen = set(backends)
    if seen == {"trio"}:
        return "trio"
    if seen == {"asyncio"}:
        return "uvloop" if "uvloop" in sys.modules else "asyncio"
    return None


def default_program() -> dict[str, Any]:
    """Describe the current process, for reports written through the Python API."""
    return {
        "argv": list(sys.argv),
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "pid": os.getpid(),
        "exit_status": None,
    }


def build_report(
    snapshot: Snapshot, findings: list[Finding], *, program: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Assemble the report dict from one snapshot and its findings.

    Args:
        snapshot: what the session saw.
        findings: the findings computed from `snapshot`.
        program: fields of the ``program`` section overriding the defaults (the command
            line passes argv, start, duration and exit_status).
    """
    by_state: dict[str, int] = {}
    for task in snapshot.tasks:
        by_state[task.state] = by_state.get(task.state, 0) + 1
    by_severity = {"error": 0, "warning": 0, "info": 0}
    for finding in findings:
        by_severity[finding.severity] += 1
    backends = sorted({t.backend for t in snapshot.tasks})
    info = default_program()
    info["backends"] = backends
    info["loop"] = event_loop_name(backends)
    info["start"] = snapshot.started_at
    info["duration"] = snapshot.elapsed
    info.update(program or {})
    return {
        "schema": SCHEMA_ID,
        "program": info,
        "summary": {
            "tasks_created": snapshot.counters.tasks_created,
            "tasks_finished": snapshot.counters.tasks_finished,
            "tasks_alive": snapshot.counters.tasks_alive,
            "tasks_by_state": by_state,
            "findings": by_severity,
            "history_dropped": snapshot.counters.history_dropped,
            "sites_dropped": snapshot.counters.sites_dropped,
            "internal_errors": dict(snapshot.counters.internal_errors),
        },
        "findings": [to_jsonable(f) for f in findings],
        "tasks": [to_jsonable(t) for t in snapshot.tasks],
        "sites": [to_jsonable(s) for s in snapshot.sites],
        "regions": [to_jsonable(r) for r in snapshot.regions],
        "loop": to_jsonable(getattr(snapshot, "loop", None)),
        "system": to_jsonable(getattr(snapshot, "system", None)),
    }


def write_json(report: dict[str, Any], path: str | PathLike[str]) -> None:
    """Write `report` to `path` atomically (a temporary file renamed into place).

    Raises:
        OSError: the directory does not exist or is not writable, or the disk is full.
    """
    target = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(target))
    fd, tmp = tempfile.mkstemp(prefix=".taskscope-", suffix=".json", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(report, out, indent=2, allow_nan=False, default=repr)
            out.write("\n")
        os.replace(tmp, target)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def check_writable(path: str | PathLike[str]) -> None:
    """Check, before a program runs, that `write_json` will be able to write `path`.

    Creates and removes a temporary file next to `path`: the one test that is right
    for every case (missing directory, permissions, read-only file system, root).

    Raises:
        OSError: `path` is a directory, or its directory is missing or not writable.
    """
    target = os.path.abspath(os.fspath(path))
    if os.path.isdir(target):
        raise IsADirectoryError(21, "Is a directory", target)
    fd, tmp = tempfile.mkstemp(prefix=".taskscope-", suffix=".json", dir=os.path.dirname(target))
    os.close(fd)
    os.unlink(tmp)
