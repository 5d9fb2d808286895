"""The console summary's lines about locks, resources and sessions."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from taskscope.reports import Summary
from taskscope.reports._summary_locks import lock_lines, resource_lines


def _at(line: int, function: str = "Service.run") -> dict[str, Any]:
    return {"file": "/proj/app/service.py", "line": line, "function": function}


def _primitive(name: str, kind: str, **fields: Any) -> dict[str, Any]:
    primitive: dict[str, Any] = {
        "name": name,
        "type": kind,
        "acquisitions": 0,
        "waits": 0,
        "contention": None,
        "wait": {"count": 0, "p50": 0.0, "p99": 0.0, "max": 0.0},
        "holders": [],
    }
    primitive.update(fields)
    return primitive


LOCKS: dict[str, Any] = {
    "program_ended": True,
    "primitives": [
        _primitive(
            "asyncio.Lock at service.py:12",
            "asyncio.Lock",
            acquisitions=50,
            waits=5,
            contention=0.1,
            wait={"count": 50, "p50": 0.0, "p99": 0.0012, "max": 0.002},
        ),
        _primitive(
            "db",
            "asyncio.Semaphore",
            acquisitions=200,
            waits=90,
            contention=0.45,
            wait={"count": 200, "p50": 0.001, "p99": 0.0123, "max": 0.02},
            holders=[
                {
                    "task": {"id": 7, "name": "worker"},
                    "acquired_at": _at(40),
                    "since": 1.0,
                    "held_for": 2.5,
                    "task_ended": True,
                }
            ],
        ),
        _primitive("idle", "anyio.Event"),
    ],
}

RESOURCES: dict[str, Any] = {
    "program_ended": True,
    "open": 1,
    "opened": 3,
    "resources": [
        {
            "kind": "http-session",
            "name": "ClientSession",
            "opened_at": _at(80, "main"),
            "closed": None,
            "collected_open": False,
            "duration": 3.2,
        },
        {
            "kind": "transport",
            "name": "TCPTransport",
            "opened_at": _at(81, "main"),
            "closed": 1.5,
            "collected_open": False,
            "duration": 0.5,
        },
    ],
    "sessions": [
        {
            "name": "mcp",
            "ok": 9,
            "errors": 1,
            "cancelled": 0,
            "active": 0,
            "success_rate": 0.9,
        }
    ],
}

EXPECTED = """\
locks: 2 used, 2 contended, 1 hold still in progress
  most contended  db (asyncio.Semaphore): 45% of 200 acquisitions waited, wait p99 12.3 ms
  most contended  asyncio.Lock at service.py:12: 10% of 50 acquisitions waited, wait p99 1.2 ms
  still held      db (asyncio.Semaphore) by task 'worker' (#7) for 2.50 s, and its task has ended; \
acquired at app/service.py:40 in Service.run
resources: 3 opened, 1 open now, 1 unclosed
  unclosed        http-session ClientSession (open at exit after 3.20 s), opened at \
app/service.py:80 in main
  session         mcp: 9 of 10 ok (90%), 1 error, 0 cancelled, 0 open
"""

BASE: dict[str, Any] = {
    "schema": "taskscope.report/1",
    "summary": {
        "tasks_created": 2,
        "tasks_finished": 2,
        "tasks_alive": 0,
        "findings": {"error": 0, "warning": 0, "info": 0},
    },
    "findings": [],
    "sites": [],
}


def _summary(**sections: Any) -> Summary:
    return Summary({**BASE, **sections}, cwd="/proj", import_roots=[])


class TestLines:
    """The lines themselves."""

    def test_contended_held_unclosed_sessions(self) -> None:
        """Most contended first (by waits), holds with their acquire sites, unclosed
        resources with their open sites, and each session's success rate."""
        summary = _summary(locks=LOCKS, resources=RESOURCES)
        assert "\n".join(summary.locks_lines()) + "\n" == EXPECTED

    def test_nothing_to_say(self) -> None:
        """Sections without activity (or absent) add no line."""
        quiet_locks = {"program_ended": True, "primitives": [_primitive("e", "anyio.Event")]}
        quiet_resources = {**RESOURCES, "opened": 0, "resources": [], "sessions": []}
        summary = _summary(locks=quiet_locks, resources=quiet_resources)
        assert summary.locks_lines() == []
        assert _summary().locks_lines() == []

    def test_lists_are_bounded(self) -> None:
        """Only the five longest holds are listed, then how many more there are."""
        holders = [
            {"task": None, "acquired_at": None, "since": 0.0, "held_for": float(n)}
            for n in range(8)
        ]
        locks: dict[str, Any] = {
            "primitives": [_primitive("s", "trio.Semaphore", acquisitions=8, holders=holders)]
        }
        lines = lock_lines({"locks": locks}, lambda where: "somewhere")
        held = [line for line in lines if "still held" in line]
        assert len(held) == 5
        assert "7.00 s" in held[0]
        assert "a borrower that is not a task" in held[0]
        assert lines[-1].strip() == "... and 3 more (see the report)"

    def test_sessions_without_outcome(self) -> None:
        """A session name none of whose sessions finished yet has no rate."""
        resources = {
            "opened": 1,
            "sessions": [
                {
                    "name": "job",
                    "ok": 0,
                    "errors": 0,
                    "cancelled": 0,
                    "active": 1,
                    "success_rate": None,
                }
            ],
        }
        lines = resource_lines({"resources": resources}, lambda where: "somewhere")
        assert (
            lines[-1].strip()
            == "session         job: 0 of 0 ok (none finished), 0 errors, 0 cancelled, 1 open"
        )


class TestRenderings:
    """Both renderings show the lines after the findings."""

    def test_plain(self) -> None:
        """The plain text has them, in order, after 'no problems found'."""
        text = _summary(locks=LOCKS, resources=RESOURCES).plain(width=300)
        assert "no problems found\n" + EXPECTED in text

    def test_wrapped_under_their_text(self) -> None:
        """At 100 columns a long detail continues under its text, not under the label."""
        text = _summary(locks=LOCKS, resources=RESOURCES).plain(width=100)
        lines = text.splitlines()
        assert max(len(line) for line in lines) <= 100
        held = next(n for n, line in enumerate(lines) if "still held" in line)
        assert lines[held + 1] == " " * 18 + "acquired at app/service.py:40 in Service.run"

    def test_rich(self) -> None:
        """Rich shows the same lines (headings bold); wide enough, nothing wraps."""
        output = io.StringIO()
        Console(file=output, width=200, color_system=None).print(
            _summary(locks=LOCKS, resources=RESOURCES)
        )
        assert EXPECTED in output.getvalue()
