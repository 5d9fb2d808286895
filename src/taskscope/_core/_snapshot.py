"""Turn mutable registry state into frozen records (the slow path)."""

from __future__ import annotations

import time
from typing import Any

from ._faults import internal_error_counts
from ._location import RawLocation, to_location
from ._records import (
    CancellationInfo,
    Counters,
    ErrorInfo,
    ExceptionInfo,
    Location,
    RegionInfo,
    ScopeRef,
    SiteStatistics,
    Snapshot,
    TaskInfo,
    TaskRef,
    TaskState,
)
from ._registry import PENDING, STATE_NAMES, Registry, TaskRecord


def _exception_info(
    raw: tuple[str, str, list[RawLocation]] | None,
    group: tuple[list[tuple[str, str, list[RawLocation]]], int] | None,
    innermost: Any,
) -> ExceptionInfo | None:
    if raw is None:
        return None
    type_name, message, frames = raw
    located = tuple(loc for loc in (to_location(f) for f in frames) if loc is not None)
    errors, cancelled = group if group is not None else ([], 0)
    return ExceptionInfo(
        type=type_name,
        message=message,
        frames=located,
        location=to_location(innermost(frames)),
        real_errors=tuple(
            ErrorInfo(type=name, message=text, location=to_location(innermost(trace)))
            for name, text, trace in errors
        ),
        cancelled=cancelled,
    )


def task_info(record: TaskRecord, registry: Registry, now: float | None = None) -> TaskInfo:
    """Build the frozen view of one task record."""
    if now is None:
        now = registry.clock()
    elapsed = registry.elapsed
    state: TaskState
    if record.state == PENDING:
        state = "running" if record.step_start else "pending"
    else:
        state = STATE_NAMES[record.state]
    # A step in progress counts towards busy time up to now.
    busy = record.busy + (now - record.step_start if record.step_start else 0.0)
    end = record.ended if record.ended is not None else now
    # A task ready to run right now has been scheduled since `scheduled_at`.
    scheduled = record.scheduled
    if record.scheduled_at and record.state == PENDING and not record.step_start:
        scheduled += now - record.scheduled_at
    cancellation = None
    if record.cancel_cause is not None and (state == "cancelled" or record.state == PENDING):
        requester = record.cancel_requester
        scope = record.cancel_scope
        cancellation = CancellationInfo(
            cause=record.cancel_cause,
            requested_by=TaskRef(id=requester[0], name=requester[1]) if requester else None,
            location=to_location(record.cancel_location),
            message=record.cancel_message,
            scope=ScopeRef(id=scope[0], kind=scope[1], entered_at=to_location(scope[2]))
            if scope is not None
            else None,
        )
    return TaskInfo(
        id=record.id,
        name=record.current_name(),
        coroutine=record.coroutine,
        backend=record.backend,
        created_at=to_location(record.created_at),
        created_at_is_definition=record.created_at_is_definition,
        parent_id=record.parent_id,
        state=state,
        created=elapsed(record.created),
        first_step=elapsed(record.first_step) if record.first_step is not None else None,
        ended=elapsed(record.ended) if record.ended is not None else None,
        busy=busy,
        scheduled=scheduled,
        idle=max(0.0, end - record.created - busy - scheduled),
        steps=record.steps,
        longest_step=record.longest_step,
        longest_step_at=to_location(record.longest_step_at),
        exception=_exception_info(
            record.exception, record.exception_group, registry.innermost_user
        ),
        exception_retrieved=record.exception_retrieved,
        cancellation=cancellation,
        pending_at_exit=record.pending_at_exit,
        destroyed_pending=record.destroyed_pending,
        adopted=record.adopted,
        internal=record.internal,
        annotations=dict(record.annotations or {}),
    )


def build_snapshot(registry: Registry, started_at: float) -> Snapshot:
    """Take a consistent-enough snapshot; safe to call from any thread."""
    now = registry.clock()
    records: dict[int, TaskRecord] = {}
    # Copies first: the loop thread may change these containers while we read.
    for record in list(registry.live.values()):
        records[record.id] = record
    for record in list(registry.history) + list(registry.notable):
        records.setdefault(record.id, record)
    tasks = tuple(task_info(records[key], registry, now) for key in sorted(records))
    sites = tuple(
        SiteStatistics(
            location=to_location(site.raw),
            coroutine=site.code.co_qualname if site.code is not None else "",
            created=site.created,
            completed=site.completed,
            failed=site.failed,
            cancelled=site.cancelled,
            alive=site.alive,
            busy=site.busy,
            wall=site.wall,
            longest_step=site.longest_step,
        )
        for site in list(registry.sites.values())
    )
    regions = tuple(
        RegionInfo(
            name=name,
            location=to_location(region.raw),
            count=region.count,
            errors=region.errors,
            cancelled=region.cancelled,
            active=region.active,
            total=region.total,
            max=region.max,
            last_error=region.last_error,
        )
        for name, region in list(registry.regions.items())
    )
    counters = Counters(
        tasks_created=registry.created,
        tasks_finished=registry.finished,
        tasks_alive=len(registry.live),
        history_dropped=registry.history_dropped,
        sites_dropped=registry.sites_dropped,
        internal_errors=internal_error_counts(),
    )
    return Snapshot(
        elapsed=now - registry.started,
        started_at=started_at,
        tasks=tasks,
        sites=sites,
        regions=regions,
        counters=counters,
    )


def wall_clock() -> float:
    """Return the Unix time (for the report's start timestamp)."""
    return time.time()


__all__ = ["Location", "build_snapshot", "task_info", "wall_clock"]
