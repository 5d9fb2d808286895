"""Closing the manager's task group: graceful, bounded, and only from the right task.

Shutdown runs in three phases:

1. **Drain** (clean exit only): wait up to ``shutdown_grace`` seconds for live tasks.
2. **Cancel**: cancel the task group, then wait, *shielded* and at most
   ``cancel_timeout`` seconds, for the cancelled tasks; tasks that still run after that
   ignore cancellation and are logged by id.
3. **Exit** the task group, which waits for every child: nothing outlives the manager.
"""

from __future__ import annotations

import math
import threading
from typing import TYPE_CHECKING, Protocol

import anyio

from ._errors import WrongTaskError

if TYPE_CHECKING:
    import logging

    from anyio.abc import TaskGroup

__all__ = ["check_grace", "check_owner", "close_group"]


class _Closable(Protocol):
    _log: logging.Logger

    async def _wait_idle(self, *, active_only: bool = False) -> None: ...

    def _begin_cancel_all(self) -> list[str]: ...

    def _stuck_task_ids(self) -> list[str]: ...


def check_grace(name: str, value: object) -> float:
    """Return ``value`` as a float if it is a finite number of seconds of at least 0."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}")
    if not value >= 0 or math.isinf(value):
        raise ValueError(f"{name} must be a finite number of seconds of at least 0, got {value!r}")
    return float(value)


def check_owner(thread: int | None, owner_task: int | None, action: str) -> None:
    """Raise :class:`WrongTaskError` unless called from the owning thread (and task).

    Args:
        thread: The event-loop thread the manager was started in.
        owner_task: The AnyIO task id that started it, or ``None`` to check the thread
            only.
        action: What the caller tried, for the message ("shut down").
    """
    if threading.get_ident() != thread:
        raise WrongTaskError(
            f"cannot {action} a TaskManager from another thread; it belongs to its event "
            "loop's thread: use anyio.from_thread.run(...) / run_sync(...) to call it there"
        )
    if owner_task is not None and anyio.get_current_task().id != owner_task:
        raise WrongTaskError(
            f"cannot {action} a TaskManager from a task other than the one that started "
            "it: its task group's cancel scope belongs to that task. Call shutdown() (or "
            "leave 'async with') in the task that called start(); other tasks may "
            "add_task(), cancel_task() and wait(), or signal the owner (e.g. an "
            "anyio.Event) to shut down"
        )


async def close_group(
    manager: _Closable,
    *,
    tg: TaskGroup,
    grace: float,
    cancel_timeout: float,
    exc: BaseException | None,
) -> None:
    """Drain, cancel and exit ``tg``.

    The task group never sees the exception leaving the ``async with`` body: managed
    tasks never raise into the group, so the only error it could report is the body's
    own, and AnyIO would wrap it in an ``ExceptionGroup``. The caller lets the original
    propagate unchanged instead.
    """
    try:
        if grace > 0 and exc is None:
            with anyio.move_on_after(grace):
                await manager._wait_idle()
    finally:
        # Also runs when the owner is cancelled (or interrupted) while draining.
        await _cancel_and_exit(manager, tg, cancel_timeout)


async def _cancel_and_exit(manager: _Closable, tg: TaskGroup, cancel_timeout: float) -> None:
    if manager._begin_cancel_all():
        tg.cancel_scope.cancel()
        if cancel_timeout > 0:
            # Shielded: the owner may itself be cancelled, and the group's own scope is.
            with anyio.CancelScope(shield=True), anyio.move_on_after(cancel_timeout):
                await manager._wait_idle(active_only=True)
            stuck = manager._stuck_task_ids()
            if stuck:
                manager._log.warning(
                    "tasks %s ignore cancellation %gs after shutdown cancelled them; "
                    "shutdown waits for them to return",
                    ", ".join(map(repr, stuck)),
                    cancel_timeout,
                )
    await tg.__aexit__(None, None, None)
