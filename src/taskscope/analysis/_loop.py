"""Loop findings: a loop blocked by a synchronous call, a task spinning without waiting."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .._core._records import Finding, Location, Snapshot, TaskRef

if TYPE_CHECKING:
    from ..monitors._records import LoopHealth, SpinningTask, Stall


def _milliseconds(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _blocked(stalls: list[Stall], threshold: float) -> Finding:
    """One finding per blocking line: its worst stall speaks for the others."""
    worst = stalls[0]
    total = sum(s.duration for s in stalls)
    ongoing = any(s.ongoing for s in stalls)
    task = worst.tasks[0] if worst.tasks else None
    who = f"task {task.name!r} ({task.coroutine})" if task is not None else "a callback"
    what = f" in {worst.blocking.function}" if worst.blocking is not None else ""
    times = f" ({len(stalls)} stalls, {_milliseconds(total)} in all)" if len(stalls) > 1 else ""
    still = ", and is still blocked" if ongoing else ""
    details: dict[str, Any] = {
        "duration": worst.duration,
        "stalls": len(stalls),
        "total": total,
        "ongoing": ongoing,
        "threshold": threshold,
        "stall_ids": [s.id for s in stalls[:20]],
        "blocking_function": worst.blocking.function if worst.blocking is not None else None,
        "blocking_category": worst.blocking.category if worst.blocking is not None else None,
        "thread": worst.thread,
    }
    if task is not None and task.created_at is not None:
        details["task_created_at"] = task.created_at
    return Finding(
        kind="loop-blocked",
        severity="warning",
        message=(
            f"The event loop was blocked for {_milliseconds(worst.duration)}{times} by "
            f"{who}{what}{still}: nothing else ran meanwhile. Await an async equivalent, "
            "or move the call to a thread (asyncio.to_thread, anyio.to_thread.run_sync, "
            "trio.to_thread.run_sync)."
        ),
        location=worst.location,
        task=TaskRef(id=task.id, name=task.name) if task is not None else None,
        details=details,
    )


def _spinning(spin: SpinningTask) -> Finding:
    task = spin.task
    still = " and is still spinning" if spin.ongoing else ""
    return Finding(
        kind="task-spinning",
        severity="warning",
        message=(
            f"Task {task.name!r} ({task.coroutine}) rescheduled itself {spin.steps} times "
            f"in {spin.duration:.1f} s ({spin.rate:.0f} steps/s) without waiting for I/O "
            f"or time{still}: a busy loop around sleep(0) or a checkpoint burns a CPU "
            "core. Wait for an event, a queue or a real timeout instead."
        ),
        location=task.created_at,
        task=TaskRef(id=task.id, name=task.name),
        details={
            "steps": spin.steps,
            "duration": spin.duration,
            "rate": spin.rate,
            "ongoing": spin.ongoing,
        },
    )


def loop_findings(snapshot: Snapshot) -> list[Finding]:
    """Return the loop findings of a snapshot taken by a session with the watchdog."""
    health: LoopHealth | None = getattr(snapshot, "loop", None)
    if health is None:
        return []
    by_line: dict[tuple[Location | None, int | None], list[Stall]] = {}
    for stall in health.stalls:  # longest first
        task_id = stall.tasks[0].id if stall.location is None and stall.tasks else None
        key = (stall.location, task_id)
        by_line.setdefault(key, []).append(stall)
    findings = [_blocked(stalls, health.block_threshold) for stalls in by_line.values()]
    findings.extend(_spinning(spin) for spin in health.spinning)
    return findings
