"""trio's ``CancelScope`` (also AnyIO on trio, and every nursery): the ``_close`` wrapper,
and the cause of a cancellation read from trio's ``CancelReason``.

Nurseries call ``_close`` directly, not ``__exit__``, so that is where exits are seen.
trio does not always refuse a bad exit (it returns its own error instead of raising),
so the task and the order are checked before the original runs.
"""

from __future__ import annotations

import functools
import sys
from typing import TYPE_CHECKING, Any, Final

from .._backends import _compat, _compat_anyio
from .._core._faults import internal_error
from ._scopes_errors import add_note, checked_exit
from ._scopes_state import TASK, pair_of

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._scopes_state import CancelNote, ScopeState

#: ``CancelReason.source`` -> taskscope's cause.
_CAUSES: Final = {
    "deadline": "timeout",
    "nursery": "sibling-failure",
    "shutdown": "shutdown",
    "KeyboardInterrupt": "keyboard-interrupt",
}
_CHILD_FAILED: Final = "child task raised exception "


def running_task_getter(current_task: Any) -> Callable[[], Any]:
    """Return a no-argument callable giving trio's running task (None outside a run)."""
    context = _compat.trio_run_context()
    if context is not None:
        return functools.partial(getattr, context, "task", None)
    return current_task  # type: ignore[no-any-return]


def make_close(
    state: ScopeState, original: Callable[[Any, Any], Any], current_task: Any
) -> Callable[[Any, Any], Any]:
    """Wrap ``CancelScope._close(exc) -> exc | None``."""
    active = state.active
    details = state.details
    settle = state.settle_exit
    running = running_task_getter(current_task)
    status = _compat_anyio.trio_cancel_status
    getframe = sys._getframe

    def _close(scope: Any, exc: Any) -> Any:
        scope_id = id(scope)
        hot = active.get(scope_id)
        if hot is not None:
            try:
                task = running()
                # trio's own test: the exiting task's innermost scope must be this one.
                if id(task) != hot[TASK] or status(task) is not status(scope):
                    entry = state.entry_of(scope)
                    if entry is not None:
                        checked_exit(state, entry, scope, id(task), getframe(1))
            except Exception as error:  # noqa: BLE001
                internal_error("scope monitor: exit", error)
        try:
            result = original(scope, exc)
        except BaseException as error:
            if hot is not None:
                settle(scope_id, scope, exc, swallowed=False, raised=error)
            raise
        if hot is not None:
            if exc is None and result is None and scope_id not in details:
                active.pop(scope_id, None)  # the common case: a clean exit
            else:
                _settle(state, scope, exc, result)
        return result

    return _close


def _settle(state: ScopeState, scope: Any, exc: Any, result: Any) -> None:
    """Account an exit that was not clean; trio returns its own misnesting error
    instead of raising it."""
    try:
        entry = state.entry_of(scope)
        problem = entry.problem if entry is not None else None
        if entry is not None and problem is not None and result is not None and result is not exc:
            problem.raised = type(result).__qualname__
            if state.exception_notes:
                add_note(state, result, entry)
    except Exception as error:  # noqa: BLE001
        internal_error("scope monitor: exit", error)
    state.settle_exit(id(scope), scope, exc, swallowed=result is None, raised=None)


def trio_cause(state: ScopeState, note: CancelNote, argument: Any) -> None:
    """Fill `note` from the ``CancelReason`` trio passes to ``CancelScope._cancel``."""
    source, source_task, reason = _compat_anyio.trio_cancel_reason(argument)
    note.cause = _CAUSES.get(source or "", "cancel-call")
    if source == "nursery":
        if reason is not None and reason.startswith(_CHILD_FAILED):
            note.error = reason.removeprefix(_CHILD_FAILED).split("(")[0]
        key = trio_task_key(source_task)
        if key is not None:
            note.requester = pair_of(state.record_of(key))
    elif note.cause == "cancel-call":
        note.reason = reason


def trio_task_key(source_task: str | None) -> int | None:
    """Read ``id(task)`` back from trio's ``repr(task)`` (``<Task 'name' at 0x...>``)."""
    if source_task is None or " at 0x" not in source_task:
        return None
    try:
        return int(source_task.rsplit(" at 0x", 1)[1].rstrip(">"), 16)
    except ValueError:
        return None
