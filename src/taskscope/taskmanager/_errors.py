"""Exceptions raised by the task manager.

Every error says what went wrong *and* what to do about it; they share one base class so
callers can catch "anything the manager refused" in one clause.
"""

from __future__ import annotations

import importlib.util

__all__ = [
    "DuplicateTaskError",
    "ManagerStateError",
    "QueueFullError",
    "TaskManagerError",
    "UnknownTaskError",
    "WrongTaskError",
    "require_anyio",
]


class TaskManagerError(Exception):
    """Base class of every error the task manager raises on its own behalf."""


class QueueFullError(TaskManagerError):
    """The backlog of tasks waiting for a concurrency slot is full.

    Raised by :meth:`TaskManager.add_task` when ``max_queue`` tasks are already pending;
    nothing was started. Wait for some work to finish (``await manager.join()``), raise
    ``max_queue``, or slow the producer down.
    """

    def __init__(self, task_id: str, max_queue: int) -> None:
        self.task_id = task_id
        self.max_queue = max_queue
        super().__init__(
            f"cannot add task {task_id!r}: the backlog is full ({max_queue} tasks are "
            "waiting for a concurrency slot); await manager.join() or wait() before adding "
            "more, or raise max_queue (argument or TASKSCOPE_MAX_QUEUE)"
        )


class DuplicateTaskError(TaskManagerError, ValueError):
    """A task with the same id is still pending or running."""

    def __init__(self, task_id: str) -> None:
        self.task_id = task_id
        super().__init__(
            f"task_id {task_id!r} is already in use by a live task; choose a unique id, "
            "or await manager.wait(task_id) before reusing it"
        )


class UnknownTaskError(TaskManagerError, LookupError):
    """No live task and no retained record carries this id."""

    def __init__(self, task_id: str, history_size: int) -> None:
        self.task_id = task_id
        super().__init__(
            f"task_id {task_id!r} is unknown: it was never added, or its record left the "
            f"history (history_size={history_size}); raise history_size to keep more "
            "finished records"
        )


class ManagerStateError(TaskManagerError, RuntimeError):
    """The call does not fit the manager's state.

    For example ``add_task`` before ``start()`` or after ``shutdown()`` began, or a second
    ``start()``. A manager runs once: create a new one to start again.
    """


class WrongTaskError(TaskManagerError, RuntimeError):
    """The manager's task group was entered or exited from the wrong task or thread.

    A task group's cancel scope belongs to the task that opened it; exiting it anywhere
    else corrupts AnyIO's cancel-scope stacks. This error is raised *before* that can
    happen, and leaves the manager untouched.
    """


def require_anyio() -> None:
    """Raise ``ImportError`` with the install command unless AnyIO is importable.

    The rest of the package imports AnyIO at module level; ``__init__`` runs this first
    so users see what to install rather than a bare ``ModuleNotFoundError``.
    """
    if importlib.util.find_spec("anyio") is None:
        raise ImportError("taskscope.taskmanager needs AnyIO: pip install 'taskscope[anyio]'")
