"""Bounded, lazy, ordered fan-out: ``gather_with_concurrency`` and its streaming twin.

Instead of one task per item behind a semaphore (memory grows with the input), a pool
of at most ``limit`` workers pulls items one at a time from a shared iterator. So at
most ``limit`` items are in flight, the input may be endless or lazy, and no task is
created per item. Workers are spawned as items arrive, so a short input never spawns
``limit`` workers.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sized
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, overload

import anyio

from ._limits import check_callable, check_positive_int, check_timeout

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectSendStream

__all__ = [
    "ProgressCallback",
    "as_completed_with_concurrency",
    "gather_impl",
    "gather_with_concurrency",
]

T = TypeVar("T")
R = TypeVar("R")


class ProgressCallback(Protocol):
    """Called after each item finishes (successfully or, with ``return_exceptions``, not)."""

    def __call__(self, completed: int, total: int | None, /) -> object:
        """Report ``completed`` items of ``total`` (``None`` if the input has no length)."""


_DONE: Any = object()  # what a pull returns once the input is exhausted


class _Pool:
    """The shared state of one fan-out: source, results and the first error."""

    __slots__ = (
        "aiter",
        "completed",
        "error",
        "exhausted",
        "func",
        "iter",
        "jitter",
        "limit",
        "limiter",
        "lock",
        "on_progress",
        "pulled",
        "results",
        "return_exceptions",
        "running",
        "send",
        "spawned",
        "task_timeout",
        "total",
    )

    def __init__(
        self,
        func: Callable[[Any], Awaitable[Any]],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        limit: int,
        task_timeout: float | None,
        jitter: float | None,
        return_exceptions: bool,
        on_progress: ProgressCallback | None,
        limiter: anyio.CapacityLimiter | None,
    ) -> None:
        check_callable("func", func)
        self.limit = check_positive_int("limit", limit)
        self.task_timeout = check_timeout("task_timeout", task_timeout)
        self.jitter = check_timeout("jitter", jitter)
        if not isinstance(return_exceptions, bool):
            raise TypeError(f"return_exceptions must be True or False, got {return_exceptions!r}")
        if on_progress is not None:
            check_callable("on_progress", on_progress)
        # Exactly one of iter / aiter is set; the lock serialises __anext__ calls, since
        # concurrent ones on one async generator raise RuntimeError.
        self.iter: Iterator[Any] | None = None
        self.aiter: AsyncIterator[Any] = _empty()
        if isinstance(items, AsyncIterable):
            self.aiter = aiter(items)
        elif isinstance(items, Iterable):
            self.iter = iter(items)
        else:
            raise TypeError(
                f"items must be an iterable or an async iterable, got {type(items).__name__}"
            )
        self.lock = anyio.Lock()
        self.total = len(items) if isinstance(items, Sized) else None
        self.func = func
        self.return_exceptions = return_exceptions
        self.on_progress = on_progress
        self.limiter = limiter
        self.results: list[Any] = []
        self.pulled = 0
        self.completed = 0
        self.running = 0  # workers alive; the last one closes the stream
        self.spawned = 0  # workers ever started (at most limit)
        self.exhausted = False
        self.error: BaseException | None = None
        self.send: MemoryObjectSendStream[tuple[int, Any]] | None = None

    def start(self, tg: TaskGroup) -> None:
        self.running = self.spawned = 1
        tg.start_soon(self.worker, tg)

    def fail(self, error: BaseException, tg: TaskGroup) -> None:
        if self.error is None:
            self.error = error
        tg.cancel_scope.cancel()

    async def apull(self) -> Any:
        async with self.lock:
            if self.exhausted:
                return _DONE
            return await anext(self.aiter, _DONE)

    async def call(self, item: Any) -> Any:
        if self.jitter:
            await anyio.sleep(random.random() * self.jitter)  # noqa: S311 -- not crypto
        if self.task_timeout is None:
            return await self.func(item)
        with anyio.move_on_after(self.task_timeout):
            return await self.func(item)
        raise TimeoutError(f"item did not finish within task_timeout={self.task_timeout:g}s")

    async def worker(self, tg: TaskGroup) -> None:  # noqa: PLR0912 -- one hot frame on purpose
        results = self.results
        sync_iter = self.iter
        try:
            while self.error is None and not self.exhausted:
                try:
                    item = next(sync_iter, _DONE) if sync_iter is not None else await self.apull()
                except Exception as exc:  # noqa: BLE001 -- the input's error ends the run
                    self.fail(exc, tg)
                    return
                if item is _DONE:
                    self.exhausted = True
                    return
                index = self.pulled
                self.pulled += 1
                if self.send is None:
                    results.append(None)
                # Ramp up: each pulled item may add one worker, up to limit in all.
                # Workers are never replaced (they only stop when the run ends).
                if self.spawned < self.limit and not tg.cancel_scope.cancel_called:
                    self.spawned += 1
                    self.running += 1
                    tg.start_soon(self.worker, tg)
                try:
                    if self.limiter is None:
                        value = await self.call(item)
                    else:
                        async with self.limiter:
                            value = await self.call(item)
                except Exception as exc:  # noqa: BLE001 -- returned or re-raised below
                    if not self.return_exceptions:
                        self.fail(exc, tg)
                        return
                    value = exc
                del item
                self.completed += 1
                if self.send is None:
                    results[index] = value
                else:
                    await self.send.send((index, value))
                if self.on_progress is not None:
                    try:
                        self.on_progress(self.completed, self.total)
                    except Exception as exc:  # noqa: BLE001 -- the caller's callback, re-raised
                        self.fail(exc, tg)
                        return
        finally:
            self.running -= 1
            if self.running == 0 and self.send is not None:
                self.send.close()


async def _empty() -> AsyncIterator[Any]:  # the unused async source of a sync pool
    return
    yield


async def gather_impl(
    func: Callable[[Any], Awaitable[Any]],
    items: Iterable[Any] | AsyncIterable[Any],
    *,
    limit: int,
    task_timeout: float | None,
    timeout: float | None,
    jitter: float | None,
    return_exceptions: bool,
    on_progress: ProgressCallback | None,
    limiter: anyio.CapacityLimiter | None,
) -> list[Any]:
    """Implement :func:`gather_with_concurrency`; ``limiter`` adds a shared bound."""
    pool = _Pool(
        func,
        items,
        limit=limit,
        task_timeout=task_timeout,
        jitter=jitter,
        return_exceptions=return_exceptions,
        on_progress=on_progress,
        limiter=limiter,
    )
    timeout = check_timeout("timeout", timeout)
    with anyio.CancelScope() as deadline_scope:
        if timeout is not None:
            deadline_scope.deadline = anyio.current_time() + timeout
        async with anyio.create_task_group() as tg:
            pool.start(tg)
    if pool.error is not None:
        raise pool.error
    if deadline_scope.cancelled_caught:
        raise TimeoutError(
            f"gather_with_concurrency did not finish within timeout={timeout:g}s "
            f"({pool.completed} items done, {pool.pulled} started); the rest were cancelled"
        )
    return pool.results


@overload
async def gather_with_concurrency(
    func: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int,
    task_timeout: float | None = ...,
    timeout: float | None = ...,
    jitter: float | None = ...,
    return_exceptions: Literal[False] = ...,
    on_progress: ProgressCallback | None = ...,
) -> list[R]: ...
@overload
async def gather_with_concurrency(
    func: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int,
    task_timeout: float | None = ...,
    timeout: float | None = ...,
    jitter: float | None = ...,
    return_exceptions: bool,
    on_progress: ProgressCallback | None = ...,
) -> list[R | Exception]: ...
async def gather_with_concurrency(
    func: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int,
    task_timeout: float | None = None,
    timeout: float | None = None,
    jitter: float | None = None,
    return_exceptions: bool = False,
    on_progress: ProgressCallback | None = None,
) -> list[R] | list[R | Exception]:
    """Await ``func(item)`` for every item, at most ``limit`` at a time, in input order.

    ``items`` is consumed lazily: an item is pulled only when a worker is free, so at
    most ``limit`` items are in flight and a generator of a million items costs the
    memory of ``limit`` (plus the result list). Cancelling the caller cancels every
    call in flight.

    Args:
        func: A coroutine function taking one item (use a tuple or
            ``functools.partial`` for more arguments).
        items: An iterable or async iterable.
        limit: The most calls in flight at once.
        task_timeout: Seconds each call may take; a slow call fails with
            :class:`TimeoutError`.
        timeout: Seconds the whole gather may take; then every call in flight is
            cancelled and :class:`TimeoutError` is raised.
        jitter: Sleep a random 0 to ``jitter`` seconds before each call, to spread starts.
        return_exceptions: Put each exception (including per-call timeouts) in the
            result list instead of cancelling the rest and raising the first one.
        on_progress: Called as ``on_progress(completed, total)`` after each item;
            ``total`` is ``None`` when ``items`` has no ``len()``. If it raises, the
            gather is cancelled and that exception is raised.

    Returns:
        One result (or, with ``return_exceptions``, exception) per item, in input order.

    Raises:
        TimeoutError: ``timeout`` expired, or a call exceeded ``task_timeout`` without
            ``return_exceptions``.
        TypeError: ``func`` or ``on_progress`` is not callable, or ``items`` is not
            iterable.
        ValueError: ``limit`` or a timeout is not positive.
    """
    return await gather_impl(
        func,
        items,
        limit=limit,
        task_timeout=task_timeout,
        timeout=timeout,
        jitter=jitter,
        return_exceptions=return_exceptions,
        on_progress=on_progress,
        limiter=None,
    )


@asynccontextmanager
async def as_completed_with_concurrency(
    func: Callable[[T], Awaitable[R]],
    items: Iterable[T] | AsyncIterable[T],
    *,
    limit: int,
    task_timeout: float | None = None,
    jitter: float | None = None,
    return_exceptions: bool = False,
    on_progress: ProgressCallback | None = None,
) -> AsyncIterator[AsyncIterator[tuple[int, R]]]:
    """Stream ``(index, result)`` pairs as calls finish, at most ``limit`` at a time.

    An async context manager (the task group needs a scope the caller owns); iterate
    the object it yields. Workers wait while the consumer is busy, so memory stays
    bounded however long the input is. Leaving the block early cancels the rest.

    Example::

        async with as_completed_with_concurrency(fetch, urls, limit=10) as results:
            async for index, page in results:
                ...

    Args:
        func: A coroutine function taking one item.
        items: An iterable or async iterable, consumed lazily.
        limit: The most calls in flight at once.
        task_timeout: Seconds each call may take.
        jitter: Sleep a random 0 to ``jitter`` seconds before each call.
        return_exceptions: Yield exceptions as results instead of raising the first.
        on_progress: Called as ``on_progress(completed, total)`` after each item.

    Yields:
        An async iterator of ``(index, result)`` pairs, ``index`` being the item's
        position in ``items``.
    """
    pool = _Pool(
        func,
        items,
        limit=limit,
        task_timeout=task_timeout,
        jitter=jitter,
        return_exceptions=return_exceptions,
        on_progress=on_progress,
        limiter=None,
    )
    send, receive = anyio.create_memory_object_stream[tuple[int, Any]](0)
    pool.send = send
    with send, receive:
        async with anyio.create_task_group() as tg:
            pool.start(tg)
            try:
                yield receive
            finally:
                tg.cancel_scope.cancel()
    if pool.error is not None:
        raise pool.error
