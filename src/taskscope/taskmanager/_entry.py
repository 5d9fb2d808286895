"""The mutable, private state of one managed task, and its bounded history.

An ``_Entry`` is touched on the hot path (add, start, finish), so it is a plain
``__slots__`` class; the frozen :class:`TaskInfo` is only built when someone asks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

import anyio

from ._records import TaskInfo, TaskStatus

if TYPE_CHECKING:
    from anyio import TaskHandle

__all__ = [
    "Entry",
    "History",
    "bad_task_id",
    "cancel_outcome",
    "func_name",
    "not_awaitable",
]


class Entry:
    """One managed task while it is live; also the borrower of its global slot."""

    __slots__ = (
        "cancel_reason",
        "cancel_requested",
        "created_at",
        "deadline",
        "done_event",
        "ended_at",
        "exception",
        "handle",
        "holds_slot",
        "name",
        "result",
        "scope",
        "started_at",
        "status",
        "task_id",
        "timeout",
    )

    def __init__(self, task_id: str, name: str, timeout: float | None, created_at: float) -> None:
        self.task_id = task_id
        self.name = name
        self.timeout = timeout
        self.created_at = created_at
        self.status = TaskStatus.PENDING
        self.started_at: float | None = None
        self.ended_at: float | None = None
        self.result: Any = None
        self.exception: BaseException | None = None
        self.cancel_requested = False
        self.cancel_reason: str | None = None
        # Invariant: holds_slot is True exactly while this entry is a borrower of the
        # manager's global limiter.
        self.holds_slot = False
        # How to cancel it: its own scope when it has one, else AnyIO's task handle.
        self.scope: anyio.CancelScope | None = None
        self.handle: TaskHandle[None] | None = None
        self.deadline: float | None = None  # in AnyIO's clock, once running with a timeout
        self.done_event: anyio.Event | None = None

    def cancel(self) -> None:
        """Cancel the task (pending or running); a no-op once it has finished."""
        self.cancel_requested = True
        if self.scope is not None:
            self.scope.cancel()
        elif self.handle is not None:
            self.handle.cancel()

    def release(self) -> None:
        """Drop what a finished task no longer needs (scopes and handles hold frames)."""
        self.scope = None
        self.handle = None

    def info(self) -> TaskInfo:
        """Freeze the current state into a :class:`TaskInfo`."""
        return TaskInfo(
            task_id=self.task_id,
            name=self.name,
            status=self.status,
            result=self.result,
            exception=self.exception,
            created_at=self.created_at,
            started_at=self.started_at,
            ended_at=self.ended_at,
            timeout=self.timeout,
            cancel_reason=self.cancel_reason,
        )

    def __repr__(self) -> str:
        return f"<taskscope managed task {self.task_id!r} {self.status.value}>"


class History:
    """Finished tasks, newest last, at most ``size`` of them.

    Entries are kept as they are (a finished entry never changes again) and frozen into
    :class:`TaskInfo` only when asked for, which keeps finishing a task cheap.
    """

    __slots__ = ("_records", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._records: OrderedDict[str, Entry] = OrderedDict()

    def add(self, entry: Entry) -> None:
        """Retain ``entry``, replacing an older one with the same id, evicting the oldest."""
        records = self._records
        if entry.task_id in records:
            del records[entry.task_id]
        records[entry.task_id] = entry
        if len(records) > self.size:
            records.popitem(last=False)

    def get(self, task_id: str) -> TaskInfo | None:
        """Return the retained record for ``task_id``, or ``None``."""
        entry = self._records.get(task_id)
        return None if entry is None else entry.info()

    def __contains__(self, task_id: str) -> bool:
        return task_id in self._records

    def values(self) -> list[TaskInfo]:
        """Return the retained records, oldest first."""
        return [entry.info() for entry in self._records.values()]

    def __len__(self) -> int:
        return len(self._records)


# ------------------------------------------------------------------ helpers


def func_name(func: object) -> str:
    """Return the name a task's record shows for ``func``."""
    return getattr(func, "__qualname__", None) or getattr(func, "__name__", None) or repr(func)


def bad_task_id(task_id: object) -> Exception:
    """Build the error for a task id that is not a non-empty str."""
    if isinstance(task_id, str):
        return ValueError("task_id must be a non-empty str")
    return TypeError(f"task_id must be a str, got {task_id!r}")


def cancel_outcome(entry: Entry) -> TaskStatus:
    """Tell a timeout from a cancellation, when a cancellation reaches the task."""
    if entry.cancel_requested or entry.deadline is None:
        return TaskStatus.CANCELLED
    return TaskStatus.TIMEOUT if anyio.current_time() >= entry.deadline else TaskStatus.CANCELLED


def not_awaitable(entry: Entry, value: object) -> TypeError:
    """Build the error for a task function that returned a non-awaitable."""
    return TypeError(
        f"{entry.name} returned {type(value).__name__}, not an awaitable: add_task runs "
        "coroutine functions; wrap blocking code with manager.run_in_thread()"
    )
