"""The mutable, private state of one managed task, and its bounded history.

An ``_Entry`` is touched on the hot path (add, start, finish), so it is a plain
``__slots__`` class; the frozen :class:`TaskInfo` is only built when someone asks.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ._records import TaskInfo, TaskStatus

if TYPE_CHECKING:
    import anyio

__all__ = ["Entry", "History"]


class Entry:
    """One managed task while it is live; also the borrower of its global slot."""

    __slots__ = (
        "cancel_reason",
        "cancel_requested",
        "created_at",
        "done_event",
        "ended_at",
        "exception",
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
        self.scope: anyio.CancelScope | None = None
        self.done_event: anyio.Event | None = None

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
    """Finished task records, newest last, at most ``size`` of them."""

    __slots__ = ("_records", "size")

    def __init__(self, size: int) -> None:
        self.size = size
        self._records: OrderedDict[str, TaskInfo] = OrderedDict()

    def add(self, info: TaskInfo) -> None:
        """Retain ``info``, replacing an older record with the same id, evicting the oldest."""
        records = self._records
        records.pop(info.task_id, None)
        records[info.task_id] = info
        if len(records) > self.size:
            records.popitem(last=False)

    def get(self, task_id: str) -> TaskInfo | None:
        """Return the retained record for ``task_id``, or ``None``."""
        return self._records.get(task_id)

    def values(self) -> list[TaskInfo]:
        """Return the retained records, oldest first."""
        return list(self._records.values())

    def __len__(self) -> int:
        return len(self._records)
