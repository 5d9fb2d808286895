"""The ``scopes`` report section: frozen records built from the tracking state (slow
path, any thread). Ids are given to scopes here, when they are first reported."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .._core._location import to_location
from .._core._records import TaskRef
from ._scopes_records import (
    ScopeCancel,
    ScopeErrorInfo,
    ScopeInfo,
    ScopeRef,
    ScopesSection,
    ScopeStatistics,
    TaskCancellation,
    TaskScopeStack,
)
from ._scopes_state import (
    ABANDONED,
    CANCELLED,
    CAUGHT,
    CROSS,
    ENTERED,
    FAILED,
    KIND,
    MISNESTING,
    N_COUNTERS,
    REF,
    TIMED_OUT,
)

if TYPE_CHECKING:
    from .._core._location import RawLocation
    from .._core._records import Location
    from ._scopes_state import CancelNote, ScopeEntry, ScopeProblem, ScopeState

#: Links followed up a task's scope chain, at most.
_MAX_CHAIN = 1_000


def _ref(pair: tuple[int, str] | None) -> TaskRef | None:
    return TaskRef(id=pair[0], name=pair[1]) if pair is not None else None


def _locations(stack: list[RawLocation]) -> tuple[Location, ...]:
    return tuple(loc for loc in (to_location(raw) for raw in stack) if loc is not None)


def task_ref(state: ScopeState, entry: ScopeEntry) -> TaskRef | None:
    """Return the task that entered `entry`."""
    record = entry.record
    return TaskRef(id=record.id, name=record.current_name()) if record is not None else None


def scope_ref(state: ScopeState, entry: ScopeEntry) -> ScopeRef:
    """Return a reference to a scope: id, kind, where it was entered."""
    return ScopeRef(
        id=state.new_sid(entry),
        kind=entry.kind,
        entered_at=to_location(state.user_raw(entry.stack)),
    )


def cancel_location(state: ScopeState, note: CancelNote) -> RawLocation | None:
    """Where a cancellation came from: the requesting line, else (deadlines, group
    failures) where the scope was entered."""
    if note.location is not None or note.entry is None:
        return note.location
    return state.user_raw(note.entry.stack)


def _cancel_info(state: ScopeState, note: CancelNote | None) -> ScopeCancel | None:
    if note is None:
        return None
    location = note.location
    if location is None and note.cause == "timeout":
        location = cancel_location(state, note)
    return ScopeCancel(
        cause=note.cause,
        requested_by=_ref(note.requester),
        location=to_location(location),
        reason=note.reason,
        error=note.error,
        at=note.at,
    )


def scope_info(state: ScopeState, entry: ScopeEntry) -> ScopeInfo:
    """Return everything known about one scope."""
    elapsed = state.registry.elapsed
    return ScopeInfo(
        id=state.new_sid(entry),
        kind=entry.kind,
        flavour=entry.flavour,
        task=task_ref(state, entry),
        entered_at=to_location(state.user_raw(entry.stack)),
        stack=_locations(entry.stack),
        entered=elapsed(entry.entered),
        exited=elapsed(entry.exited) if entry.exited is not None else None,
        timeout=entry.timeout,
        shield=entry.shield,
        state="active" if entry.exited is None else "exited",
        cancel=_cancel_info(state, entry.cancel),
        cancelled_caught=entry.caught,
        exception=entry.exception,
    )


def _error_info(state: ScopeState, problem: ScopeProblem) -> ScopeErrorInfo:
    innermost = problem.innermost
    return ScopeErrorInfo(
        kind=problem.kind,
        scope=scope_info(state, problem.entry),
        exited_by=_ref(problem.exited_by),
        exited_at=to_location(state.user_raw(problem.exited_stack)),
        exited_stack=_locations(problem.exited_stack),
        owner=problem.owner,
        owner_name=problem.owner_name,
        innermost=scope_ref(state, innermost) if innermost is not None else None,
        still_active=problem.still_active,
        raised=problem.raised,
        at=state.registry.elapsed(problem.at),
    )


def _statistics(counts: list[int], active: int) -> ScopeStatistics:
    errors = counts[CROSS] + counts[MISNESTING]
    entered = counts[ENTERED]
    return ScopeStatistics(
        entered=entered,
        # Clean exits are not counted one by one (the hot path): every scope entered
        # is exited, still active, or was collected without exiting.
        exited=max(0, entered - active - counts[ABANDONED]),
        active=active,
        cancelled=counts[CANCELLED],
        cancelled_caught=counts[CAUGHT],
        timed_out=counts[TIMED_OUT],
        failed=counts[FAILED],
        cross_task=counts[CROSS],
        misnested=counts[MISNESTING],
        errors=errors,
        error_rate=errors / entered if entered else 0.0,
    )


def statistics(state: ScopeState) -> tuple[ScopeStatistics, dict[str, ScopeStatistics]]:
    """Return the totals and the per-kind statistics."""
    active_by_kind: dict[str, int] = {}
    for hot in list(state.active.values()):
        active_by_kind[hot[KIND]] = active_by_kind.get(hot[KIND], 0) + 1
    by_kind = {
        kind: _statistics(list(counts), active_by_kind.get(kind, 0))
        for kind, counts in list(state.stats.items())
        if counts[ENTERED]
    }
    totals = [0] * N_COUNTERS
    for counts in list(state.stats.values()):
        for index, value in enumerate(list(counts)):
            totals[index] += value
    return _statistics(totals, sum(active_by_kind.values())), by_kind


def empty_section(reason: str, anyio_version: str | None) -> ScopesSection:
    """Return the section of a monitor that is not installed."""
    nothing = _statistics([0] * N_COUNTERS, 0)
    return ScopesSection(
        available=False,
        unavailable_reason=reason,
        anyio_version=anyio_version,
        statistics=nothing,
        by_kind={},
        active=(),
        task_stacks=(),
        errors=(),
        recent=(),
        cancellations=(),
    )


def _task_stacks(state: ScopeState, entries: dict[int, ScopeEntry]) -> tuple[TaskScopeStack, ...]:
    """Each task's entered scopes, outermost first: scopes of one task nest, so their
    order of entry is their stack."""
    by_task: dict[int, list[ScopeEntry]] = {}
    for entry in entries.values():
        by_task.setdefault(entry.task_key, []).append(entry)
    return tuple(
        TaskScopeStack(
            task=task_ref(state, scopes[0]),
            scopes=tuple(state.new_sid(entry) for entry in scopes[:_MAX_CHAIN]),
        )
        for scopes in by_task.values()
    )


def _cancellations(state: ScopeState) -> tuple[TaskCancellation, ...]:
    cancellations = []
    for record_id, (name, note) in list(state.task_notes.items()):
        entry = note.entry
        cancellations.append(
            TaskCancellation(
                task=TaskRef(id=record_id, name=name),
                cause=note.cause,
                scope=scope_ref(state, entry) if entry is not None else None,
                requested_by=_ref(note.requester),
                location=to_location(cancel_location(state, note)),
                reason=note.reason,
                error=note.error,
            )
        )
    return tuple(cancellations)


def section(
    state: ScopeState, unavailable_reason: str | None, anyio_version: str | None
) -> ScopesSection:
    """Return the ``scopes`` section: statistics, active scopes, stacks, errors."""
    totals, by_kind = statistics(state)
    # Active scopes in order of entry (the table's order); ids are given in that order.
    entries: dict[int, ScopeEntry] = {}
    for scope_id, hot in list(state.active.items()):
        if hot[REF]() is not None:
            entry = state.entry(scope_id)
            if entry is not None:
                entries[scope_id] = entry
    active = tuple(scope_info(state, entry) for entry in entries.values())
    # A scope that exited while this thread was giving it its cold state leaves that
    # state behind: drop it (the loop thread pops both tables with defaults).
    for scope_id in [sid for sid in list(state.details) if sid not in state.active]:
        state.details.pop(scope_id, None)
    return ScopesSection(
        available=unavailable_reason is None,
        unavailable_reason=unavailable_reason,
        anyio_version=anyio_version,
        statistics=totals,
        by_kind=by_kind,
        active=active,
        task_stacks=_task_stacks(state, entries),
        errors=tuple(_error_info(state, problem) for problem in list(state.errors)),
        recent=tuple(scope_info(state, entry) for entry in list(state.recent)),
        cancellations=_cancellations(state),
        dropped=state.dropped,
    )
