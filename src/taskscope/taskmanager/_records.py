"""Frozen records the task manager hands out: task states and manager snapshots.

Records are built on the slow path (when someone asks), never per task step.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from anyio import CapacityLimiter

__all__ = ["LimiterStatistics", "ManagerSnapshot", "TaskInfo", "TaskStatus"]


class TaskStatus(enum.StrEnum):
    """Where a managed task is in its life.

    ``pending`` → ``running`` → one of the four final states. A task cancelled or shut
    down while still pending goes straight to ``cancelled``.
    """

    PENDING = "pending"
    """Added; waiting to be scheduled or for a global concurrency slot."""
    RUNNING = "running"
    """Holding a global slot and executing the coroutine function."""
    COMPLETED = "completed"
    """Returned normally; ``TaskInfo.result`` holds the return value."""
    FAILED = "failed"
    """Raised an exception; ``TaskInfo.exception`` holds it."""
    CANCELLED = "cancelled"
    """Cancelled by :meth:`TaskManager.cancel_task` or by shutdown."""
    TIMEOUT = "timeout"
    """Ran longer than its ``timeout`` and was cancelled."""

    @property
    def is_final(self) -> bool:
        """Whether the task has finished (any state but pending and running)."""
        return self not in (TaskStatus.PENDING, TaskStatus.RUNNING)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """The state of one managed task at the moment it was asked for.

    Times are wall-clock seconds since the epoch, from the manager's ``clock``.

    Attributes:
        task_id: The id given to :meth:`TaskManager.add_task`; also the name of the
            underlying AnyIO task, so taskscope's task records show it.
        name: The qualified name of the coroutine function.
        status: The task's state.
        result: The return value when ``status`` is ``completed``, else ``None``.
        exception: The exception when ``status`` is ``failed``, else ``None``.
        created_at: When :meth:`TaskManager.add_task` accepted the task.
        started_at: When the task got a global slot and began running, or ``None``.
        ended_at: When the task reached a final state, or ``None``.
        timeout: The per-task timeout in seconds, or ``None``.
        cancel_reason: The ``reason`` given to :meth:`TaskManager.cancel_task`
            (``"shutdown"`` when cancelled by shutdown), or ``None``.
    """

    task_id: str
    name: str
    status: TaskStatus
    result: Any
    exception: BaseException | None
    created_at: float
    started_at: float | None
    ended_at: float | None
    timeout: float | None
    cancel_reason: str | None

    @property
    def done(self) -> bool:
        """Whether the task has reached a final state."""
        return self.status.is_final

    @property
    def duration(self) -> float | None:
        """Seconds between start and end, or ``None`` unless both are known."""
        if self.started_at is None or self.ended_at is None:
            return None
        return self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class LimiterStatistics:
    """Usage of one capacity limiter.

    Attributes:
        total: How many slots the limiter has.
        borrowed: How many slots are in use.
        waiting: How many tasks wait for a slot.
    """

    total: int
    borrowed: int
    waiting: int

    @classmethod
    def of(cls, limiter: CapacityLimiter) -> LimiterStatistics:
        """Build the record from an AnyIO limiter's ``statistics()``."""
        stats = limiter.statistics()
        return cls(
            total=int(stats.total_tokens),
            borrowed=stats.borrowed_tokens,
            waiting=stats.tasks_waiting,
        )


@dataclass(frozen=True, slots=True)
class ManagerSnapshot:
    """The state of a :class:`TaskManager` at the moment it was asked for.

    Attributes:
        accepting: Whether :meth:`TaskManager.add_task` currently accepts work.
        global_limiter: Slots of the global limiter (managed tasks).
        thread_limiter: Slots of the thread limiter (``run_in_thread``).
        process_limiter: Slots of the process limiter (``run_in_process``).
        max_queue: The backlog bound.
        queued: Pending tasks that wait for a global slot (bounded by ``max_queue``).
        pending: Live tasks in the ``pending`` state (queued or about to start).
        running: Live tasks in the ``running`` state.
        completed: Tasks that completed since the manager started.
        failed: Tasks that failed since the manager started.
        cancelled: Tasks that were cancelled since the manager started.
        timeout: Tasks that timed out since the manager started.
        history: How many finished records are retained.
    """

    accepting: bool
    global_limiter: LimiterStatistics
    thread_limiter: LimiterStatistics
    process_limiter: LimiterStatistics
    max_queue: int
    queued: int
    pending: int
    running: int
    completed: int
    failed: int
    cancelled: int
    timeout: int
    history: int
