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
from ._scopes_state import pair_of

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
    tops = state.tops
    settle = state.settle_exit
    exited_cleanly = state.exited_cleanly
    running = running_task_getter(current_task)
    getframe = sys._getframe

    def _close(scope: Any, exc: Any) -> Any:
        entry = active.get(id(scope))
        if entry is not None:
            key = id(running())
            if key != entry.task_key or tops.get(key) is not entry:
                entry = checked_exit(state, entry, scope, key, getframe(1))
        try:
            result = original(scope, exc)
        except BaseException as error:
            if entry is not None:
                settle(entry, scope, exc, swallowed=False, raised=error)
            raise
        if entry is not None:
            try:
                if exc is None and result is None and entry.cancel is None and not entry.problem:
                    exited_cleanly(entry, id(scope))
                else:
                    # trio returns its own misnesting error instead of raising it.
                    problem = entry.problem
                    if result is not None and result is not exc and problem is not None:
                        problem.raised = type(result).__qualname__
                        if state.exception_notes:
                            add_note(state, result, entry)
                    settle(entry, scope, exc, swallowed=result is None, raised=None)
            except Exception as error:  # noqa: BLE001
                internal_error("scope monitor: exit", error)
        return result

    return _close


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
