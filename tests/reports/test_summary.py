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


def _task(
    task_id: int, state: str, cancellation: dict[str, Any] | None, exception: Any = None
) -> dict[str, Any]:
    return {
        "id": task_id,
        "name": f"t{task_id}",
        "state": state,
        "internal": False,
        "cancellation": cancellation,
        "exception": exception,
    }


def _cancelled(cause: str, line: int | None) -> dict[str, Any]:
    location = _location(line, "Service.stop") if line is not None else None
    return {"cause": cause, "requested_by": None, "location": location, "message": None}


SCOPES_REPORT: dict[str, Any] = {
    **REPORT,
    "findings": [],
    "summary": {**REPORT["summary"], "findings": {"error": 0, "warning": 0, "info": 0}},
    "sites": [],
    "scopes": {
        "available": True,
        "statistics": {
            "entered": 1200,
            "cancelled": 7,
            "timed_out": 3,
            "errors": 1,
            "error_rate": 1 / 1200,
        },
        "errors": [
            {
                "kind": "cancel-scope-cross-task",
                "scope": {
                    "kind": "task_group",
                    "task": {"id": 1, "name": "main"},
                    "entered_at": _location(12, "stream"),
                },
                "exited_by": {"id": 4, "name": "Task-4"},
                "exited_at": None,
                "owner": "asyncgen_finalizer",
                "owner_name": "stream",
            }
        ],
    },
    "tasks": [
        _task(2, "cancelled", _cancelled("sibling-failure", 50)),
        _task(3, "cancelled", _cancelled("sibling-failure", 50)),
        _task(5, "cancelled", _cancelled("timeout", 61)),
        _task(6, "cancelled", _cancelled("shutdown", None)),
        _task(7, "completed", None),
        _task(
            8,
            "failed",
            None,
            {
                "type": "ExceptionGroup",
                "message": "unhandled errors in a TaskGroup (1 sub-exception)",
                "real_errors": [
                    {"type": "ValueError", "message": "boom", "location": _location(77, "job")}
                ],
                "cancelled": 2,
            },
        ),
    ],
}

EXPECTED_CANCELLATION = """\
taskscope: 12 tasks created, 11 finished, 1 alive; 0 errors, 0 warnings
no problems found
cancel scopes: 1,200 entered, 7 cancelled (3 timed out), 1 error (rate 0.08%)
  cross-task: task group entered by task 'main' (#1) at app/service.py:12 in stream
    -> exited by task 'Task-4' (#4) at unknown location [asyncgen finalizer stream]
cancelled tasks: 4 (sibling-failure 2, timeout 1, shutdown 1)
  2 cancelled from app/service.py:50 in Service.stop
  1 cancelled from app/service.py:61 in Service.stop
failed task groups (real errors first):
  task 't8' (#8): ValueError: boom at app/service.py:77 in job [in ExceptionGroup, 2 cancelled]
"""


class TestCancellationLines:
    """Scope statistics and errors, causes of cancellations, real errors of groups."""

    def test_plain_rendering(self) -> None:
        """The lines follow the findings, in a fixed order and wording."""
        summary = Summary(SCOPES_REPORT, cwd="/proj", import_roots=[])
        assert summary.plain() == EXPECTED_CANCELLATION

    def test_rich_renders_the_same_lines(self) -> None:
        """rich prints the same text as the plain rendering."""
        console = Console(file=io.StringIO(), width=100, color_system=None)
        console.print(Summary(SCOPES_REPORT, cwd="/proj", import_roots=[]))
        output = console.file.getvalue()  # type: ignore[attr-defined]
        assert output == EXPECTED_CANCELLATION

    def test_nothing_cancelled_adds_nothing(self) -> None:
        """A report without scopes and without cancelled tasks has no such lines."""
        text = Summary(REPORT, cwd="/proj", import_roots=[]).plain()
        assert "cancel" not in text.replace("task.exception()", "")
