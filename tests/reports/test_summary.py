"""The console summary renders a report the same way every time, with or without rich."""

from __future__ import annotations

import io
from typing import Any

import pytest
from rich.console import Console

from taskscope.reports import Summary, print_summary


def _location(line: int, function: str) -> dict[str, Any]:
    return {"file": "/proj/app/service.py", "line": line, "function": function}


def _site(line: int, coroutine: str, created: int, busy: float) -> dict[str, Any]:
    return {
        "location": _location(line, "Service.run"),
        "coroutine": coroutine,
        "created": created,
        "completed": created - 1,
        "failed": 1,
        "cancelled": 0,
        "alive": 0,
        "busy": busy,
        "wall": busy * 3,
        "longest_step": busy / 4,
    }


REPORT: dict[str, Any] = {
    "schema": "taskscope.report/1",
    "summary": {
        "tasks_created": 12,
        "tasks_finished": 11,
        "tasks_alive": 1,
        "findings": {"error": 1, "warning": 1, "info": 0},
    },
    "findings": [
        {
            "kind": "task-exception-unretrieved",
            "severity": "error",
            "message": "Task 'audit' (send_audit) failed with ValueError: rejected and nothing "
            "retrieved the exception; keep a reference to the task and await it, or add a done "
            "callback that calls task.exception().",
            "location": _location(42, "Service.worker"),
            "task": {"id": 7, "name": "audit"},
            "details": {},
        },
        {
            "kind": "task-pending-at-exit",
            "severity": "warning",
            "message": "Task 'metrics' was still pending at exit.",
            "location": {"file": "/usr/lib/other.py", "line": 3, "function": "<module>"},
            "task": None,
            "details": {},
        },
    ],
    "sites": [
        _site(10, "Service.worker", 3, 0.0425),
        _site(20, "Service.send_audit", 30, 0.0005),
        _site(30, "never_busy", 2, 0.0),
    ],
}

EXPECTED = """\
taskscope: 12 tasks created, 11 finished, 1 alive; 1 error, 1 warning
error    task-exception-unretrieved  app/service.py:42 in Service.worker
         Task 'audit' (send_audit) failed with ValueError: rejected and nothing retrieved the
         exception; keep a reference to the task and await it, or add a done callback that calls
         task.exception().
warning  task-pending-at-exit  /usr/lib/other.py:3 in <module>
         Task 'metrics' was still pending at exit.
"""

RICH_SITES = """\
busiest creation sites
creation site      coroutine           tasks  alive  failed     busy  longest
─────────────────────────────────────────────────────────────────────────────
app/service.py:10  Service.worker          3      0       1  42.5 ms  10.6 ms
app/service.py:20  Service.send_audit     30      0       1   500 us   125 us
report: /proj/taskscope-report.json
"""

PLAIN_SITES = """\
busiest creation sites
creation site      coroutine           tasks  alive  failed     busy  longest
-----------------  ------------------  -----  -----  ------  -------  -------
app/service.py:10  Service.worker          3      0       1  42.5 ms  10.6 ms
app/service.py:20  Service.send_audit     30      0       1   500 us   125 us
report: /proj/taskscope-report.json
"""


def _summary() -> Summary:
    return Summary(REPORT, report_path="/proj/taskscope-report.json", cwd="/proj", import_roots=[])


class TestRichRendering:
    """With rich, the summary renders to an exact, width-bounded text."""

    def test_exact_rendering(self) -> None:
        """Header, findings, the busiest sites table and the report path, in order."""
        out = io.StringIO()
        Console(file=out, width=100).print(_summary())
        assert out.getvalue() == EXPECTED + RICH_SITES

    def test_no_findings(self) -> None:
        """A clean report says so and omits the empty sites table."""
        clean = {**REPORT, "findings": [], "sites": []}
        clean["summary"] = {**REPORT["summary"], "findings": {"error": 0, "warning": 0, "info": 0}}
        out = io.StringIO()
        Console(file=out, width=100).print(Summary(clean, cwd="/proj", import_roots=[]))
        assert out.getvalue() == (
            "taskscope: 12 tasks created, 11 finished, 1 alive; 0 errors, 0 warnings\n"
            "no problems found\n"
        )


class TestPlainRendering:
    """Without rich, the same lines render as plain text."""

    def test_exact_rendering(self) -> None:
        """The plain text has the same content as the rich rendering."""
        assert _summary().plain(100) == EXPECTED + PLAIN_SITES

    @pytest.mark.parametrize(
        "use_rich", [pytest.param(False, id="plain"), pytest.param(True, id="rich")]
    )
    def test_print_summary(self, use_rich: bool) -> None:
        """`print_summary` writes the header first and the report path last."""
        out = io.StringIO()
        print_summary(REPORT, file=out, report_path="r.json", use_rich=use_rich, width=100)
        lines = out.getvalue().splitlines()
        assert lines[0].startswith("taskscope: 12 tasks created")
        assert lines[-1] == "report: r.json"

    def test_long_paths_are_clipped(self) -> None:
        """A long site path keeps its end (file and line) within the column."""
        site = _site(99, "x" * 40, 1, 0.01)
        site["location"]["file"] = "/elsewhere/" + "deep/" * 20 + "mod.py"
        report = {**REPORT, "findings": [], "sites": [site]}
        rows = Summary(report, cwd="/proj", import_roots=[]).plain(100).splitlines()
        row = next(line for line in rows if line.startswith("..."))
        assert "deep/mod.py:99" in row
        assert len(row) <= 100
