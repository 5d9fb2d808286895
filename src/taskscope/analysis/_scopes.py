"""Cancel-scope findings.

``cancel-scope-cross-task``: a scope (task group, timeout, cancel scope) was exited in
another task than the one that entered it. ``cancel-scope-misnested``: a task exited a
scope that was not its innermost one. Both point at where the scope was entered, carry
both stacks in ``details``, and a hint naming the likely cause and its fix.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .._core._records import Finding

if TYPE_CHECKING:
    from .._core._records import Location, TaskRef
    from ..monitors._scopes_records import ScopeErrorInfo, ScopesSection

#: What probably happened, and the fix, by owner (see `ScopeErrorInfo.owner`).
CROSS_TASK_HINTS: Final = {
    "asyncgen_finalizer": (
        "An async generator entered this scope and yielded inside it; its consumer "
        "abandoned it, and the event loop's async-generator finalizer closed it in "
        "another task. Don't yield inside a task group or cancel scope in an async "
        "generator: turn it into an @asynccontextmanager, or iterate it under "
        "`async with contextlib.aclosing(gen)` in the task that consumes it."
    ),
    "asyncgen": (
        "An async generator yielded while this scope was open and was resumed in another "
        "task (an async pytest fixture holding a task group across `yield` whose setup "
        "and teardown run in different tasks, or a generator shared between tasks). "
        "Don't yield inside a task group in an async generator; for fixtures, run the "
        "task group in a dedicated task (or use one event loop/task for the fixture)."
    ),
    "exit_stack": (
        "An (Async)ExitStack entered this scope in one task and was closed in another. "
        "Close the exit stack - or the client built on it - in the task that opened it: "
        "run the whole `async with` in one background task and talk to it through a "
        "memory object stream or an event."
    ),
    "asynccontextmanager": (
        "An @asynccontextmanager's `__aenter__` and `__aexit__` ran in different tasks. "
        "Enter and exit the context manager in the same task."
    ),
    "context_manager": (
        "A context manager (client/session) was opened in one task and closed in "
        "another. Close the client in the task that opened it: keep the whole "
        "`async with client:` block inside one task."
    ),
    "unknown": (
        "Enter and exit every cancel scope and task group in the same task: don't pass "
        "an entered scope, task group or context manager to another task to close."
    ),
}

MISNESTED_HINT: Final = (
    "Scopes must be exited in the reverse order of entry. Close clients and context "
    "managers in the reverse order you opened them - nest the `async with` blocks, or "
    "put them on one AsyncExitStack - and don't yield inside a scope in a generator."
)


def hint_for(kind: str, owner: str) -> str:
    """Return the hint for a scope error of `kind` whose owner is `owner`."""
    if kind == "cancel-scope-misnested":
        return MISNESTED_HINT
    return CROSS_TASK_HINTS.get(owner, CROSS_TASK_HINTS["unknown"])


def _who(task: TaskRef | None) -> str:
    return f"task {task.name!r} (#{task.id})" if task is not None else "an untracked task"


def _where(location: Location | None) -> str:
    return f" at {location.file}:{location.line}" if location is not None else ""


def _side(task: TaskRef | None, location: Location | None, stack: Any) -> dict[str, Any]:
    return {"task": task, "location": location, "stack": list(stack)}


#: Scope kinds whose plain name would not tell a reader what they are.
_LABELS: Final = {"task": "own cancel scope"}


def _label(kind: str) -> str:
    return _LABELS.get(kind, kind.replace("_", " "))


def scope_finding(error: ScopeErrorInfo) -> Finding:
    """Turn one scope error into a finding."""
    scope = error.scope
    label = _label(scope.kind)
    owner = f" ({error.owner.replace('_', ' ')} {error.owner_name})" if error.owner_name else ""
    if error.kind == "cancel-scope-cross-task":
        message = (
            f"A {label} entered in {_who(scope.task)}{_where(scope.entered_at)} was "
            f"exited in {_who(error.exited_by)}{_where(error.exited_at)}{owner}"
        )
    else:
        inner = error.innermost
        inner_label = _label(inner.kind) if inner is not None else "scope"
        if scope.kind in _LABELS:
            head = f"The cancel scope of {_who(scope.task)} itself"
        else:
            head = f"A {label} entered{_where(scope.entered_at)}"
        message = (
            f"{head} was exited"
            f"{_where(error.exited_at)} while the {inner_label} entered"
            f"{_where(inner.entered_at if inner else None)} was still open inside it"
        )
    if error.still_active:
        message += "; the scope is still active (swallowing the error leaves it cancelling)"
    details: dict[str, Any] = {
        "entered_at": _side(scope.task, scope.entered_at, scope.stack),
        "exited_at": _side(error.exited_by, error.exited_at, error.exited_stack),
        "scope": {"id": scope.id, "kind": scope.kind, "flavour": scope.flavour},
        "owner": error.owner,
        "owner_name": error.owner_name,
        "hint": hint_for(error.kind, error.owner),
        "still_active": error.still_active,
        "raised": error.raised,
    }
    if error.innermost is not None:
        details["innermost"] = error.innermost
    return Finding(
        kind=error.kind,
        severity="error",
        message=message + ".",
        # A scope a library entered for a task has no user line: point at the scope
        # still open inside it (misnested), or where it was exited.
        location=scope.entered_at
        or (error.innermost.entered_at if error.innermost is not None else None)
        or error.exited_at,
        task=scope.task,
        details=details,
    )


def scope_findings(section: ScopesSection) -> list[Finding]:
    """Return a finding per scope error in a ``scopes`` section."""
    return [scope_finding(error) for error in section.errors]
