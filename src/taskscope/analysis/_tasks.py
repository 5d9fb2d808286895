"""Task findings: unretrieved exceptions, tasks left pending, tasks destroyed pending."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .._core._records import ExceptionInfo, Finding, Snapshot, TaskInfo, TaskRef
from ._loop import loop_findings

Rule = Callable[[TaskInfo], Finding | None]


def _ref(task: TaskInfo) -> TaskRef:
    return TaskRef(id=task.id, name=task.name)


def describe_failure(exc: ExceptionInfo) -> str:
    """Say what a task failed with: for an exception group, its real errors first (with
    their lines) and how many siblings it cancelled."""
    if not exc.real_errors:
        return f"{exc.type}: {exc.message}"
    errors = "; ".join(
        f"{error.type}: {error.message}"
        + (f" (at {error.location.file}:{error.location.line})" if error.location else "")
        for error in exc.real_errors
    )
    siblings = f", {exc.cancelled} cancelled" if exc.cancelled else ""
    return f"{errors} [in {exc.type}{siblings}]"


def unretrieved_exception(task: TaskInfo) -> Finding | None:
    """A task failed and nobody awaited it or asked for its result or exception."""
    if task.state != "failed" or task.exception_retrieved is not False or task.exception is None:
        return None
    exc = task.exception
    details: dict[str, Any] = {}
    if exc.real_errors:
        # The real errors first: the group's own message only lists sub-exceptions.
        details["real_errors"] = list(exc.real_errors)
    details["exception"] = {"type": exc.type, "message": exc.message}
    if exc.location is not None:
        details["raised_at"] = exc.location
    return Finding(
        kind="task-exception-unretrieved",
        severity="error",
        message=(
            f"Task {task.name!r} ({task.coroutine}) failed with {describe_failure(exc)} "
            "and nothing retrieved the exception; keep a reference to the "
            "task and await it, or add a done callback that calls task.exception()."
        ),
        location=task.created_at,
        task=_ref(task),
        details=details,
    )


def destroyed_pending(task: TaskInfo) -> Finding | None:
    """A task was garbage-collected before it finished: nothing held a reference."""
    if not task.destroyed_pending:
        return None
    return Finding(
        kind="task-destroyed-pending",
        severity="error",
        message=(
            f"Task {task.name!r} ({task.coroutine}) was destroyed while still pending: "
            "the event loop keeps only weak references to tasks, so keep "
            "your own (a set, a TaskGroup) until it is done."
        ),
        location=task.created_at,
        task=_ref(task),
        details={"steps": task.steps},
    )


def pending_at_exit(task: TaskInfo) -> Finding | None:
    """A task was still pending when the main coroutine returned or the loop closed."""
    if not task.pending_at_exit or task.destroyed_pending or task.internal:
        return None
    return Finding(
        kind="task-pending-at-exit",
        severity="warning",
        message=(
            f"Task {task.name!r} ({task.coroutine}) was still pending at exit "
            "and had to be cancelled or abandoned; cancel and await it "
            "before the program ends, or run it in a TaskGroup."
        ),
        location=task.created_at,
        task=_ref(task),
        details={"state": task.state, "steps": task.steps},
    )


RULES: tuple[Rule, ...] = (unretrieved_exception, destroyed_pending, pending_at_exit)

_SEVERITY_ORDER = {"error": 0, "warning": 1, "info": 2}


def find_problems(snapshot: Snapshot) -> list[Finding]:
    """Apply every rule to every task, then the loop rules; errors first, then by task id."""
    findings = [
        finding for task in snapshot.tasks for rule in RULES if (finding := rule(task)) is not None
    ]
    findings.extend(loop_findings(snapshot))
    findings.sort(key=lambda f: (_SEVERITY_ORDER[f.severity], f.task.id if f.task else 0))
    return findings
