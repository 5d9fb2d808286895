"""Cancellation provenance: who asked a scope to cancel, from where and why, and which
scope delivered each task's cancellation.

A request (``cancel()``, an expired deadline, a failing child, the body of a group
raising) is recorded by the cancel wrapper *before* the original delivers it: the
stack then is the requester's. The cause is named from the library code on that stack
(`_compat_anyio.cancel_cause_codes`) or, on trio, from its ``CancelReason``. The
backends then ask, per cancelled task, which scope delivered it (`note_cancel_request`,
`note_task_cancelled`) and get the request's cause, requester, line and reason.
"""

from __future__ import annotations

import sys
import weakref
from typing import TYPE_CHECKING, Any

from .._backends import _compat, _compat_anyio
from .._backends._cancel_causes import GROUP_EXIT_LOCALS, group_exit_cause
from .._core._faults import internal_error
from ._scopes_state import CancelNote, pair_of
from ._scopes_trio import trio_cause

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from .._core._registry import TaskRecord
    from ._scopes_state import ScopeEntry, ScopeState

#: Frames walked from a cancellation request for the library code naming its cause.
_CAUSE_DEPTH = 8
#: Frames walked from a task's wakeup for the code delivering a scope's cancellation.
_DELIVER_DEPTH = 12


def make_cancel(
    state: ScopeState, original: Callable[..., Any], flavour: str
) -> Callable[..., Any]:
    """Wrap the method every cancellation request of a scope class goes through."""
    getframe = sys._getframe

    def cancel(scope: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            cancel_requested(state, scope, flavour, args[0] if args else kwargs.get("reason"),
                             getframe(1))  # fmt: skip
        except Exception as exc:  # noqa: BLE001
            internal_error("scope monitor: cancel", exc)
        return original(scope, *args, **kwargs)

    cancel.__name__ = getattr(original, "__name__", "cancel")
    return cancel


def cancel_requested(
    state: ScopeState, scope: Any, flavour: str, argument: Any, frame: FrameType | None
) -> None:
    """Record the first cancellation request of a scope, before it is delivered."""
    entry = state.entry_of(scope)
    if entry is not None and entry.cancel is not None:
        return
    if flavour in {"anyio-asyncio", "trio"} and _compat_anyio.scope_cancel_called(scope):
        return
    registry = state.registry
    note = CancelNote("cancel-call", registry.elapsed(registry.clock()))
    if flavour == "trio":
        trio_cause(state, note, argument)
    elif flavour == "asyncio-timeout":
        note.cause = "timeout"
    else:
        if isinstance(argument, str):
            note.reason = argument
        _cause_from_stack(state, note, frame)
    if note.cause == "cancel-call":
        note.location = registry.locations.user_frame(frame)
        running = state.running_task()
        if running is not None:
            note.requester = pair_of(registry.live.get(id(running)))
    if entry is not None:
        state.attach(entry, note)
    else:
        pending = state.pending
        if len(pending) > state.max_active:
            pending.clear()
        pending[id(scope)] = (weakref.ref(scope), note)


def _cause_from_stack(state: ScopeState, note: CancelNote, frame: FrameType | None) -> None:
    """Name the cause from the library code asking for the cancellation."""
    cause_codes = state.cause_codes
    depth = 0
    while frame is not None and depth < _CAUSE_DEPTH:
        cause = cause_codes.get(id(frame.f_code))
        if cause is not None:
            note.cause = cause
            f_locals = _compat.frame_locals(
                frame, (*_compat_anyio.FAILED_TASK_LOCALS, *GROUP_EXIT_LOCALS)
            )
            if cause == "sibling-failure":
                failed = next(
                    (f_locals[name] for name in _compat_anyio.FAILED_TASK_LOCALS
                     if f_locals.get(name) is not None),
                    None,
                )  # fmt: skip
                if failed is not None:
                    _failed_task(state, note, failed)
            elif cause == "task-group-error":
                note.cause, note.error = group_exit_cause(f_locals)
            return
        frame = frame.f_back
        depth += 1


def _failed_task(state: ScopeState, note: CancelNote, task: Any) -> None:
    """A child of the group failed: it is the requester, its exception the error."""
    record = state.record_of(id(task))
    note.requester = pair_of(record)
    error = _compat.task_exception(task)
    if error is not None:
        note.error = type(error).__qualname__
    elif record is not None and record.exception is not None:
        note.error = record.exception[0]


# -- provenance: asked by the backends ---------------------------------------------------


def note_cancel_request(state: ScopeState, record: TaskRecord, frame: FrameType | None) -> bool:
    """A task is being cancelled, and `frame` is the code requesting it: if a scope is
    delivering the cancellation, write its cause into `record`; True if so."""
    deliver = state.deliver_codes
    depth = 0
    while frame is not None and depth < _DELIVER_DEPTH:
        name = deliver.get(id(frame.f_code))
        if name is not None:
            scope = frame.f_locals.get(name)
            return scope is not None and apply_note(state, record, scope, None)
        frame = frame.f_back
        depth += 1
    return False


#: Causes a backend names when it cannot tell more: the monitor may refine them.
_COARSE_CAUSES = frozenset({None, "unknown", "cancel-scope", "timeout"})


def note_task_cancelled(state: ScopeState, record: TaskRecord, task: Any) -> bool:
    """A task ended cancelled: unless its cause is already known (a request this
    monitor explained, or an explicit ``Task.cancel()`` seen with its caller), find the
    cancelled scope around it and write that scope's cause into `record`."""
    if record.id in state.task_notes:
        return True
    trio_task = type(task).__module__.startswith("trio")
    if not trio_task and record.cancel_cause not in _COARSE_CAUSES:
        return False
    if trio_task:
        scopes = _compat_anyio.trio_task_cancel_scopes(task)
    else:
        scopes = _compat_anyio.anyio_task_cancel_scopes(task) + _asyncio_groups_of(state, task)
    for scope in scopes:
        if _compat_anyio.scope_cancel_called(scope) or _note_of(state, scope) is not None:
            return apply_note(state, record, scope, None)
    return False


def _asyncio_groups_of(state: ScopeState, task: Any) -> list[Any]:
    """Return the active asyncio TaskGroups that were cancelled and hold `task` (its
    cancellation never went through the loop when it had not started yet)."""
    groups = []
    for entry in list(state.details.values()):
        if entry.flavour == "asyncio-taskgroup" and entry.cancel is not None:
            group = entry.ref()
            if group is not None and task in _compat_anyio.asyncio_group_tasks(group):
                groups.append(group)
    return groups


def _note_of(state: ScopeState, scope: Any) -> CancelNote | None:
    """Return the cancellation request recorded for `scope`, entered or not."""
    entry = state.details.get(id(scope))
    if entry is not None and entry.ref() is scope and entry.cancel is not None:
        return entry.cancel
    waiting = state.pending.get(id(scope))
    if waiting is not None and waiting[0]() is scope:
        return waiting[1]
    return None


def apply_note(state: ScopeState, record: TaskRecord, scope: Any, note: CancelNote | None) -> bool:
    """Write the cause of `scope`'s cancellation into a task's record; True if known."""
    if note is None:
        note = _note_of(state, scope)
        if note is None:
            return False
    record.cancel_cause = note.cause
    requester = note.requester
    record.cancel_requester = requester if requester is None or requester[0] != record.id else None
    location = note.location
    if location is None and note.entry is not None:
        location = state.user_raw(note.entry.stack)
    record.cancel_location = location
    record.cancel_message = note.reason
    entry = note.entry
    record.cancel_scope = (
        (state.new_sid(entry), entry.kind, state.user_raw(entry.stack))
        if entry is not None
        else None
    )
    notes = state.task_notes
    notes[record.id] = (record.current_name(), note)
    if len(notes) > state.max_task_notes:
        del notes[next(iter(notes))]
        state.dropped += 1
    return True


def delivering_entry(state: ScopeState, record_id: int) -> ScopeEntry | None:
    """Return the entry of the scope that delivered a task's cancellation, if known."""
    found = state.task_notes.get(record_id)
    return found[1].entry if found is not None else None
