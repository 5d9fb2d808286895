"""Blocking work in worker threads and processes, under a limiter and a timeout.

Threads cannot be interrupted, and a worker process can only be killed. So a timeout
means two different things, depending on ``cancellable``:

* ``cancellable=True``: at the deadline the caller gets :class:`TimeoutError` at once; a
  thread is abandoned (it runs on, its result is dropped), a worker process is killed
  and reaped, whether it was still starting or already running the call.
* ``cancellable=False``: the call always runs to completion and the caller waits for it;
  if it overran the deadline, :class:`TimeoutError` is raised when it returns, so a late
  result is never mistaken for a timely one.

Threads come from ``anyio.to_thread``; processes from the manager's own
:class:`~._workers.ProcessPool` (see there why not ``anyio.to_process``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal, TypeVar

import anyio
from anyio import to_thread

from ._limits import check_callable, check_timeout

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio import CapacityLimiter

    from ._workers import ProcessPool

__all__ = ["run_offloaded"]

T = TypeVar("T")


def _name(func: Callable[..., object]) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


async def run_offloaded(
    kind: Literal["thread", "process"],
    func: Callable[..., T],
    args: tuple[object, ...],
    *,
    limiter: CapacityLimiter,
    timeout: float | None,
    cancellable: bool,
    pool: ProcessPool | None = None,
) -> T:
    """Run ``func(*args)`` in a worker thread or process under ``limiter``.

    Args:
        kind: ``"thread"`` or ``"process"``.
        func: The blocking callable; for processes it must be picklable (a module-level
            function).
        args: Positional arguments for ``func``.
        limiter: The limiter the worker slot is borrowed from.
        timeout: Seconds before :class:`TimeoutError`, or ``None``.
        cancellable: Whether cancellation and timeouts may abandon a thread or kill a
            process instead of waiting for it.
        pool: The worker processes (required for ``"process"``).

    Returns:
        What ``func`` returned.

    Raises:
        TimeoutError: ``func`` did not finish within ``timeout``.
        TypeError: ``func`` is not callable or ``timeout`` is not a number.
        ValueError: ``timeout`` is not positive and finite.
    """
    check_callable("func", func)
    timeout = check_timeout("timeout", timeout)
    if not isinstance(cancellable, bool):
        raise TypeError(f"cancellable must be True or False, got {cancellable!r}")
    if timeout is None:
        return await _call(kind, func, args, limiter=limiter, cancellable=cancellable, pool=pool)
    deadline = anyio.current_time() + timeout
    with anyio.CancelScope(deadline=deadline):
        result = await _call(kind, func, args, limiter=limiter, cancellable=cancellable, pool=pool)
        if anyio.current_time() <= deadline:
            return result
    # Either the scope cut the call short, or an uninterruptible call overran.
    raise TimeoutError(
        f"{_name(func)} did not finish in its {kind} within timeout={timeout:g}s"
        + ("" if cancellable else " (it ran to completion; its late result was dropped)")
    )


async def _call(
    kind: Literal["thread", "process"],
    func: Callable[..., T],
    args: tuple[object, ...],
    *,
    limiter: CapacityLimiter,
    cancellable: bool,
    pool: ProcessPool | None,
) -> T:
    if kind == "thread":
        return await to_thread.run_sync(func, *args, abandon_on_cancel=cancellable, limiter=limiter)
    if pool is None:
        raise TypeError("run_offloaded() needs the manager's pool for processes")
    return await pool.run(func, args, limiter=limiter, cancellable=cancellable)
