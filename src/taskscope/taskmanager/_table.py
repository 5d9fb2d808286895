"""The bookkeeping half of the task manager: live tasks, history, counts and queries.

:class:`TaskTable` owns every record of managed tasks and how a task *finishes*
(slot release, history, waiters, logging); :class:`TaskManager` adds scheduling and the
task group's life. Query methods are synchronous and cheap; ``TaskInfo`` records are
built only when asked for.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import anyio

from ._entry import Entry, History
from ._errors import UnknownTaskError
from ._records import LimiterStatistics, ManagerSnapshot, TaskInfo, TaskStatus
from ._shutdown import check_owner

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable

    from ._limits import Limits

__all__ = ["SHUTDOWN_REASON", "TaskTable"]

_PENDING = TaskStatus.PENDING
_RUNNING = TaskStatus.RUNNING
_COMPLETED = TaskStatus.COMPLETED
_FAILED = TaskStatus.FAILED
_CANCELLED = TaskStatus.CANCELLED
_TIMEOUT = TaskStatus.TIMEOUT

SHUTDOWN_REASON = "shutdown"


class TaskTable:
    """Records of the tasks of one manager; the base class of :class:`TaskManager`."""

    # Invariant: the limiters exist whenever ``_started`` is True.
    _global: anyio.CapacityLimiter
    _threads: anyio.CapacityLimiter
    _processes: anyio.CapacityLimiter

    def __init__(
        self,
        *,
        limits: Limits,
        history_size: int,
        clock: Callable[[], float],
        logger: logging.Logger,
    ) -> None:
        self._limits = limits
        self._max_queue = limits.max_queue
        self._history = History(history_size)
        self._clock = clock
        self._log = logger
        self._started = False
        self._accepting = False
        self._thread: int | None = None
        self._live: dict[str, Entry] = {}
        self._queued = 0  # Invariant: live entries in the backlog (pending, no slot).
        self._active = 0  # Entries whose runner started and has not finished yet.
        self._wake: anyio.Event | None = None  # Set on every finish, for join/shutdown.
        self._counts = dict.fromkeys(TaskStatus, 0)

    def _finish(self, entry: Entry, status: TaskStatus) -> None:
        if entry.holds_slot:
            entry.holds_slot = False
            self._global.release_on_behalf_of(entry)
        elif entry.status is _PENDING:
            self._queued -= 1
        entry.status = status
        entry.ended_at = self._clock()
        self._counts[status] += 1
        del self._live[entry.task_id]
        entry.release()
        self._history.add(entry)
        if entry.done_event is not None:
            entry.done_event.set()
        if self._wake is not None:
            self._wake.set()
            self._wake = None
        if status is _COMPLETED:
            self._log.debug("task %r (%s) completed", entry.task_id, entry.name)
        elif status is _FAILED:
            self._log.error(
                "task %r (%s) failed", entry.task_id, entry.name, exc_info=entry.exception
            )
        elif status is _TIMEOUT:
            self._log.warning(
                "task %r (%s) timed out after %gs", entry.task_id, entry.name, entry.timeout
            )
        else:
            self._log.info(
                "task %r (%s) cancelled: %s", entry.task_id, entry.name, entry.cancel_reason
            )

    def _reconcile(self) -> None:
        # On asyncio a task cancelled before its first step never runs its body (nor
        # its finally clause), so it never finishes itself: finish it here.
        for entry in list(self._live.values()):
            entry.cancel_requested = True
            entry.cancel_reason = entry.cancel_reason or SHUTDOWN_REASON
            self._finish(entry, _CANCELLED)

    # ------------------------------------------------------ controlling and querying

    def cancel_task(self, task_id: str, reason: str | None = None) -> bool:
        """Cancel a live task, whether it is pending or running.

        Args:
            task_id: The task to cancel.
            reason: Kept in :attr:`TaskInfo.cancel_reason` and logged.

        Returns:
            ``True`` if the task was live and is now being cancelled, ``False`` if it had
            already finished.

        Raises:
            UnknownTaskError: No live task and no retained record has ``task_id``.
        """
        entry = self._live.get(task_id)
        if entry is None:
            if task_id not in self._history:
                raise UnknownTaskError(task_id, self._history.size)
            return False
        if threading.get_ident() != self._thread:
            check_owner(self._thread, None, "cancel tasks of")
        if not entry.cancel_requested:  # the first reason wins
            entry.cancel_reason = reason
        entry.cancel()
        return True

    def status(self, task_id: str) -> TaskInfo:
        """Return the current record of a live or retained task.

        Raises:
            UnknownTaskError: No live task and no retained record has ``task_id``.
        """
        entry = self._live.get(task_id)
        if entry is not None:
            return entry.info()
        info = self._history.get(task_id)
        if info is None:
            raise UnknownTaskError(task_id, self._history.size)
        return info

    def statuses(self) -> dict[str, TaskInfo]:
        """Return every retained finished record (oldest first), then every live one."""
        result = {info.task_id: info for info in self._history.values()}
        for task_id, entry in self._live.items():
            result.pop(task_id, None)
            result[task_id] = entry.info()
        return result

    async def wait(self, task_id: str) -> TaskInfo:
        """Wait until ``task_id`` finishes and return its final record.

        The task's exception is not raised here; look at :attr:`TaskInfo.exception`.

        Raises:
            UnknownTaskError: No live task and no retained record has ``task_id``.
        """
        entry = self._live.get(task_id)
        if entry is None:
            return self.status(task_id)
        if entry.done_event is None:
            entry.done_event = anyio.Event()
        await entry.done_event.wait()
        return entry.info()

    async def join(self) -> None:
        """Wait until no task is live (tasks added meanwhile are waited for too)."""
        while self._live:
            if self._wake is None:
                self._wake = anyio.Event()
            await self._wake.wait()

    async def _wait_idle(self, *, active_only: bool = False) -> None:
        # active_only: tasks that never got to run (cancelled before their first step on
        # asyncio) are not waited for; the task group's exit disposes of them.
        while self._active if active_only else self._live:
            if self._wake is None:
                self._wake = anyio.Event()
            await self._wake.wait()

    def _begin_cancel_all(self) -> list[str]:
        for entry in self._live.values():
            if not entry.cancel_requested:
                entry.cancel_requested = True
                entry.cancel_reason = SHUTDOWN_REASON
        return list(self._live)

    def _stuck_task_ids(self) -> list[str]:
        return [e.task_id for e in self._live.values() if e.status is _RUNNING]

    def snapshot(self) -> ManagerSnapshot:
        """Return limiter usage, backlog length and task counts per status."""
        running = sum(1 for e in self._live.values() if e.status is _RUNNING)
        counts = self._counts
        limits = self._limits
        started = self._started
        return ManagerSnapshot(
            accepting=self._accepting,
            global_limiter=self._stats(started and self._global, limits.max_concurrency),
            thread_limiter=self._stats(started and self._threads, limits.max_threads),
            process_limiter=self._stats(started and self._processes, limits.max_processes),
            max_queue=self._max_queue,
            queued=self._queued,
            pending=len(self._live) - running,
            running=running,
            completed=counts[_COMPLETED],
            failed=counts[_FAILED],
            cancelled=counts[_CANCELLED],
            timeout=counts[_TIMEOUT],
            history=len(self._history),
        )

    @staticmethod
    def _stats(limiter: anyio.CapacityLimiter | bool, total: int) -> LimiterStatistics:
        if isinstance(limiter, bool):
            return LimiterStatistics(total=total, borrowed=0, waiting=0)
        return LimiterStatistics.of(limiter)
