"""``TaskManager``: one long-lived AnyIO task group for bounded, observable background work.

Life of a task: ``add_task`` (synchronous, never blocks) borrows a global slot at once if
one is free, otherwise the task joins the bounded backlog; either way it is spawned
into the manager's task group at once, named after its id, in the ``pending`` state.
It becomes ``running`` once it holds a slot, and ends ``completed``, ``failed``,
``cancelled`` or ``timeout``. Its record then moves to a bounded history.

Only the task that opened the manager may close it (the task group's cancel scope is
that task's); any task on the event-loop thread may add, cancel and wait for tasks.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Any, Self, TypeVar

import anyio

from .._tracking import annotate_current_task
from ._entry import Entry, bad_task_id, cancel_outcome, func_name, not_awaitable
from ._errors import DuplicateTaskError, ManagerStateError, QueueFullError
from ._gather import gather_impl
from ._limits import check_callable, check_positive_int, check_timeout, resolve_limits
from ._offload import run_offloaded
from ._records import TaskStatus
from ._shutdown import check_grace, check_owner, close_group
from ._table import TaskTable
from ._workers import ProcessPool

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, Awaitable, Callable, Iterable
    from types import TracebackType

    from anyio.abc import TaskGroup

    from ._gather import ProgressCallback
    from ._limits import Limits

__all__ = ["TaskManager"]

T = TypeVar("T")
R = TypeVar("R")
_Item = TypeVar("_Item")

_RUNNING = TaskStatus.RUNNING
_COMPLETED = TaskStatus.COMPLETED
_FAILED = TaskStatus.FAILED
_CANCELLED = TaskStatus.CANCELLED

_NEW, _OPEN, _CLOSING, _CLOSED = "new", "open", "closing", "closed"
_NO_SCOPE = contextlib.nullcontext()


class TaskManager(TaskTable):
    """Run coroutine functions in the background under a global concurrency limit.

    Use it as ``async with TaskManager() as manager:`` or call :meth:`start` and
    :meth:`shutdown` from the same task, like the two halves of an ``async with``.

    Args:
        max_concurrency: How many tasks run at once; ``None`` reads
            ``TASKSCOPE_MAX_CONCURRENCY``, else ``min(max(32, 4 * CPU), 256)``.
        max_threads: Slots for :meth:`run_in_thread`; ``None`` reads
            ``TASKSCOPE_MAX_THREADS``, else ``min(max(16, 2 * max_concurrency // 3), 128)``.
        max_processes: Slots for :meth:`run_in_process`; ``None`` reads
            ``TASKSCOPE_MAX_PROCESSES``, else ``max(1, min(CPU, 8))``.
        max_queue: How many tasks may wait for a slot before :meth:`add_task` raises
            :class:`QueueFullError`; ``None`` reads ``TASKSCOPE_MAX_QUEUE``, else 10,000.
        history_size: How many finished task records to keep.
        default_timeout: Per-task timeout in seconds for tasks added without one.
        shutdown_grace: Seconds a clean shutdown waits for live tasks before cancelling
            them; 0 cancels at once.
        cancel_timeout: Seconds to wait for cancelled tasks before logging which ones
            ignore cancellation (shutdown still waits for them: nothing outlives it).
        clock: Wall clock for the times in :class:`TaskInfo`.
        logger: Where task failures, timeouts and cancellations are logged.

    Raises:
        TypeError: An option has the wrong type.
        ValueError: A limit, timeout or environment variable is out of range; the
            message names it.
    """

    # Invariant: both exist whenever the state is not _NEW.
    _tg: TaskGroup
    _cancelled_exc: type[BaseException]

    def __init__(
        self,
        *,
        max_concurrency: int | None = None,
        max_threads: int | None = None,
        max_processes: int | None = None,
        max_queue: int | None = None,
        history_size: int = 1000,
        default_timeout: float | None = None,
        shutdown_grace: float = 10.0,
        cancel_timeout: float = 5.0,
        clock: Callable[[], float] = time.time,
        logger: logging.Logger | None = None,
    ) -> None:
        check_callable("clock", clock)
        super().__init__(
            limits=resolve_limits(
                max_concurrency=max_concurrency,
                max_threads=max_threads,
                max_processes=max_processes,
                max_queue=max_queue,
            ),
            history_size=check_positive_int("history_size", history_size),
            clock=clock,
            logger=logger or logging.getLogger("taskscope.taskmanager"),
        )
        self._default_timeout = check_timeout("default_timeout", default_timeout)
        self._grace = check_grace("shutdown_grace", shutdown_grace)
        self._cancel_timeout = check_timeout("cancel_timeout", cancel_timeout) or 0.0
        self._state = _NEW
        self._owner_task: int | None = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def limits(self) -> Limits:
        """The effective capacity limits."""
        return self._limits

    async def start(self) -> None:
        """Open the manager's task group in the current task.

        Raises:
            ManagerStateError: The manager was already started (a manager runs once).
        """
        if self._state != _NEW:
            raise ManagerStateError(
                f"this TaskManager is {self._state}; a manager runs once, create a new one"
            )
        self._thread = threading.get_ident()
        self._owner_task = anyio.get_current_task().id
        limits = self._limits
        self._global = anyio.CapacityLimiter(limits.max_concurrency)
        self._threads = anyio.CapacityLimiter(limits.max_threads)
        self._processes = anyio.CapacityLimiter(limits.max_processes)
        self._pool = ProcessPool()
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        self._cancelled_exc = anyio.get_cancelled_exc_class()
        self._state = _OPEN
        self._started = self._accepting = True

    async def shutdown(self) -> None:
        """Stop accepting tasks, wait up to ``shutdown_grace``, then cancel the rest.

        Idempotent once the manager is closed. Must run in the task that started it.

        Raises:
            WrongTaskError: Called from a task or thread other than the one that
                started the manager; nothing was changed.
            ManagerStateError: The manager was never started.
        """
        await self.__aexit__(None, None, None)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        if self._state == _CLOSED:
            return None
        if self._state == _NEW:
            raise ManagerStateError("this TaskManager was never started; call start() first")
        check_owner(self._thread, self._owner_task, "shut down")
        self._state = _CLOSING
        self._accepting = False
        # A clean exit drains gracefully; an exception or cancellation cancels at once.
        try:
            await close_group(
                self, tg=self._tg, grace=self._grace, cancel_timeout=self._cancel_timeout, exc=exc
            )
        finally:
            self._state = _CLOSED
            self._reconcile()
            await self._pool.aclose()  # shielded: idle workers never outlive the manager
        return None  # the body's exception, if any, propagates unchanged

    # -------------------------------------------------------------- adding work

    def add_task(
        self,
        task_id: str,
        func: Callable[..., Awaitable[Any]],
        /,
        *args: Any,
        timeout: float | None = None,
        **kwargs: Any,
    ) -> None:
        """Start ``await func(*args, **kwargs)`` in the background as task ``task_id``.

        Synchronous and never blocks: the task starts as soon as a global slot is free.
        Callable from any task on the event-loop thread (workers may add work); from
        another thread use ``anyio.from_thread.run_sync(manager.add_task, ...)``.

        Args:
            task_id: Unique among live tasks; also the AnyIO task name.
            func: A coroutine function.
            *args: Positional arguments for ``func``.
            timeout: Seconds the task may run once started; ``None`` uses
                ``default_timeout``.
            **kwargs: Keyword arguments for ``func``.

        Raises:
            ManagerStateError: The manager is not started, or is shutting down.
            WrongTaskError: Called from another thread.
            DuplicateTaskError: A live task already has ``task_id``.
            QueueFullError: ``max_queue`` tasks already wait for a slot.
            TypeError: ``task_id`` is not a str or ``func`` is not callable.
            ValueError: ``task_id`` is empty or ``timeout`` is not positive.
        """
        if self._state != _OPEN:
            raise self._not_open("add_task")
        if threading.get_ident() != self._thread:
            check_owner(self._thread, None, "add tasks to")
        if not task_id or not isinstance(task_id, str):
            raise bad_task_id(task_id)
        if task_id in self._live:
            raise DuplicateTaskError(task_id)
        check_callable("func", func)
        timeout = self._default_timeout if timeout is None else check_timeout("timeout", timeout)
        entry = Entry(task_id, func_name(func), timeout, self._clock())
        try:
            self._global.acquire_on_behalf_of_nowait(entry)
        except anyio.WouldBlock:
            if self._queued >= self._max_queue:
                raise QueueFullError(task_id, self._max_queue) from None
            self._queued += 1
        else:
            entry.holds_slot = True
        self._live[task_id] = entry
        # AnyIO >= 4.16 returns a TaskHandle able to cancel the task; older ones, None.
        entry.handle = self._tg.start_soon(self._run, entry, func, args, kwargs, name=task_id)

    async def _run(
        self,
        entry: Entry,
        func: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> None:
        self._active += 1
        status = _CANCELLED
        # Entering a cancel scope is the costliest step of a task: when AnyIO's task
        # handle (AnyIO >= 4.16) can cancel the task, open our own only for a timeout.
        scope = None
        if entry.timeout is not None or entry.handle is None:
            scope = entry.scope = anyio.CancelScope()
        try:
            if entry.cancel_requested:  # cancelled before it was scheduled: never start
                return
            with scope or _NO_SCOPE:
                try:
                    if not entry.holds_slot:
                        await self._global.acquire_on_behalf_of(entry)
                        entry.holds_slot = True
                        self._queued -= 1
                    entry.status = _RUNNING
                    entry.started_at = self._clock()
                    if scope is not None and entry.timeout is not None:
                        scope.deadline = entry.deadline = anyio.current_time() + entry.timeout
                    awaitable = func(*args, **kwargs)
                    if not inspect.isawaitable(awaitable):
                        raise not_awaitable(entry, awaitable)  # noqa: TRY301 -- recorded below
                    entry.result = await awaitable
                    status = _COMPLETED
                except self._cancelled_exc as exc:
                    if anyio.current_effective_deadline() != -math.inf:
                        # Nothing around us is cancelled: the task raised the cancellation
                        # exception itself (asyncio allows that). It is a failure.
                        entry.exception = exc
                        status = _FAILED
                    else:
                        status = cancel_outcome(entry)
                        raise
                except Exception as exc:  # noqa: BLE001 -- a task never takes the manager down
                    entry.exception = exc
                    status = _FAILED
        finally:
            self._active -= 1
            self._finish(entry, status)
            # The wrapper absorbs the work's failure or cancellation, so the task itself
            # may end "completed": taskscope's record carries the manager's status.
            annotate_current_task(task_id=entry.task_id, status=status.value)

    def _not_open(self, what: str) -> ManagerStateError:
        if self._state == _NEW:
            return ManagerStateError(
                f"{what}() needs a started TaskManager: use 'async with TaskManager() as "
                "manager:' or 'await manager.start()' first"
            )
        return ManagerStateError(
            f"{what}() was called on a TaskManager that is {self._state}; it accepts no "
            "new work once shutdown has begun"
        )

    # ------------------------------------------------------ threads, processes, gather

    async def run_in_thread(
        self,
        func: Callable[..., T],
        *args: object,
        timeout: float | None = None,
        cancellable: bool = False,
    ) -> T:
        """Run blocking ``func(*args)`` in a worker thread under the thread limiter.

        With ``cancellable=True`` a timeout or cancellation returns at once and abandons
        the thread (it runs on, its result is dropped). With ``cancellable=False`` the
        call always completes, and raises :class:`TimeoutError` afterwards if it overran.

        Raises:
            TimeoutError: ``func`` did not finish within ``timeout``.
            ManagerStateError: The manager is not started.
        """
        if self._state == _NEW:
            raise self._not_open("run_in_thread")
        return await run_offloaded(
            "thread",
            func,
            args,
            limiter=self._threads,
            timeout=timeout,
            cancellable=cancellable,
        )

    async def run_in_process(
        self,
        func: Callable[..., T],
        *args: object,
        timeout: float | None = None,
        cancellable: bool = False,
    ) -> T:
        """Run ``func(*args)`` in a worker process under the process limiter.

        ``func`` and its arguments must be picklable (a module-level function). With
        ``cancellable=True`` a timeout or cancellation kills the worker process, also one
        that is still starting, and reaps it before the call returns. With
        ``cancellable=False`` the call (worker start-up included) always completes, and
        raises :class:`TimeoutError` afterwards if it overran. Workers belong to the
        manager: idle ones are reused, and stopped when the manager closes.

        Raises:
            TimeoutError: ``func`` did not finish within ``timeout``.
            BrokenWorkerProcess: The worker process could not start or died mid-call.
            ManagerStateError: The manager is not started.
        """
        if self._state == _NEW:
            raise self._not_open("run_in_process")
        return await run_offloaded(
            "process",
            func,
            args,
            limiter=self._processes,
            timeout=timeout,
            cancellable=cancellable,
            pool=self._pool,
        )

    async def gather_with_concurrency(
        self,
        func: Callable[[_Item], Awaitable[R]],
        items: Iterable[_Item] | AsyncIterable[_Item],
        *,
        limit: int | None = None,
        task_timeout: float | None = None,
        timeout: float | None = None,
        jitter: float | None = None,
        return_exceptions: bool = False,
        on_progress: ProgressCallback | None = None,
    ) -> list[R | BaseException]:
        """Like :func:`gather_with_concurrency`, and each call also holds a global slot.

        ``limit`` defaults to ``max_concurrency``; see the module-level function for
        the other arguments.
        """
        if self._state != _OPEN:
            raise self._not_open("gather_with_concurrency")
        return await gather_impl(
            func,
            items,
            limit=self._limits.max_concurrency if limit is None else limit,
            task_timeout=task_timeout,
            timeout=timeout,
            jitter=jitter,
            return_exceptions=return_exceptions,
            on_progress=on_progress,
            limiter=self._global,
        )

    def __repr__(self) -> str:
        return (
            f"<TaskManager {self._state} live={len(self._live)} queued={self._queued} "
            f"max_concurrency={self._limits.max_concurrency}>"
        )
