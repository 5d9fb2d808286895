"""Private internals of asyncio, AnyIO and trio synchronisation primitives, in one place.

The lock and resource monitors wrap public methods at class level; these are the few
places where they must know more than the public API says. When a runtime moves one of
these internals, this is the file to change. Accessors degrade rather than raise.
"""

from __future__ import annotations

import asyncio
import asyncio.locks
import asyncio.queues
import asyncio.tasks
import functools
import os
import sys
import time
from typing import TYPE_CHECKING, Any, Final, NamedTuple

from .._core import _accel
from .._core._faults import internal_error

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

# -- asyncio.Lock: the budgeted hot path ------------------------------------------------

#: ``asyncio.Lock`` on 3.11-3.14: ``acquire`` returns at once, without awaiting, when the
#: lock is free and no live waiter is queued; ``release`` clears ``_locked`` and wakes the
#: first waiter; ``async with`` is ``_ContextManagerMixin``'s ``await self.acquire()`` /
#: ``self.release()``. The tracked methods take those same paths themselves, verbatim.
ASYNCIO_LOCK_INLINE: Final = (3, 11) <= sys.version_info < (3, 15)

#: The dict of the task each running loop is in a step of (``asyncio.tasks._current_tasks``,
#: kept by the C tasks on 3.11-3.13). Asking it for a primitive's loop is the cheapest
#: way to the current task: ``asyncio.current_task()`` first finds the running loop, which
#: on 3.11 costs a ``getpid()`` system call (a fork check) and in a shared libpython a
#: thread-local lookup, more than the rest of an uncontended acquisition.
_CURRENT_TASKS: Final[dict[Any, Any] | None] = (
    getattr(asyncio.tasks, "_current_tasks", None) if sys.version_info < (3, 14) else None
)


def running_loop() -> Any:
    """Return the running event loop of this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def asyncio_task(state: Any) -> Any:
    """Return the running asyncio task, or None outside of one.

    Up to 3.13 the loop is cached in ``state.loop`` (the primitive's last loop): when
    it has a task in a step right now, that is this thread's task, because a primitive
    is only used by the loop it belongs to.
    """
    if _CURRENT_TASKS is None:
        try:
            return asyncio.current_task()
        except RuntimeError:
            return None
    loop = state.loop
    if loop is not None:
        task = _CURRENT_TASKS.get(loop)
        if task is not None:
            return task
    loop = state.loop = running_loop()
    return _CURRENT_TASKS.get(loop) if loop is not None else None


def cancelled_types() -> tuple[type[BaseException], ...]:
    """Return the exceptions that mean "cancelled" (asyncio's, and trio's once imported)."""
    trio = sys.modules.get("trio")
    cancelled = getattr(trio, "Cancelled", None)
    if isinstance(cancelled, type) and issubclass(cancelled, BaseException):
        return (asyncio.CancelledError, cancelled)
    return (asyncio.CancelledError,)


class LockHooks(NamedTuple):
    """The bookkeeping of ``asyncio.Lock``'s uncontended path (see `lock_hooks`)."""

    #: ``enter(lock)``: the running task just took `lock` without waiting.
    enter: Callable[[Any], None]
    #: ``exit(lock)``: `lock` was just released.
    exit: Callable[[Any], None]
    #: ``aenter(lock)``: ``async with`` is taking `lock` without waiting: False when
    #: the class's ``acquire`` was replaced since (nothing recorded), else `enter`.
    aenter: Callable[[Any], bool]
    #: ``aexit(lock)``: the same for ``release`` and `exit`.
    aexit: Callable[[Any], bool]
    #: ``wait_begin(lock)``: the running task is about to block acquiring `lock` (at
    #: the calling wrapper's caller's line): return a token for `wait_end`, or None
    #: when `lock` is not tracked.
    wait_begin: Callable[[Any], Any]
    #: ``wait_end(lock, token, exc)``: that wait ended, acquired (`exc` None) or not.
    wait_end: Callable[[Any, Any, BaseException | None], None]


def lock_hooks(tracker: Any, lock_cls: Any, acquire: Any, release: Any) -> LockHooks:
    """Return the bookkeeping of an ``asyncio.Lock`` (`lock_cls`) the calling wrapper
    takes without waiting, and releases; `acquire` and `release` are the tracked methods.

    The C accelerator's (``_lock_speedups.LockHooks``) when it is built, else their
    pure-Python twins below. Both find the state through the one last used (confirmed
    through its weak reference, so no lock is kept alive and another thread's update is
    harmless), take the running task from the loop cached on the state, and leave the
    first acquisition from each site, a release without a single holder and a hold over
    the threshold to `tracker` (a ``SyncTracker``). Each may raise: the wrappers report
    it as an internal error. Invariant: they mirror ``SyncTracker.hold`` and
    ``SyncTracker.held`` (a lock's holder lives in ``state.holder``; times are ns), and
    for an acquisition that blocks ``SyncTracker.wait_begin`` and ``wait_end`` (the C
    ones call back into `tracker` for a new site, a deadlock check, a second hold).
    """
    from ..monitors._sync_state import HOLDING_KINDS

    if _accel.lock_speedups is not None:
        hooks = _accel.lock_speedups.LockHooks(
            states=tracker.states,
            live=tracker.live,
            tasks=_CURRENT_TASKS,
            clock=tracker.clock,
            threshold=tracker.held_too_long,
            slow_task=asyncio_task,
            hold=tracker.hold,
            unhold=tracker.unhold,
            long_hold=tracker.long_hold,
            getframe=sys._getframe,
            lock_cls=lock_cls,
            acquire=acquire,
            release=release,
            fast_clock=tracker.clock is time.perf_counter_ns,
            tracker=tracker,
            waiting=tracker.waiting,
            holding_kinds=HOLDING_KINDS,
            task_cls=asyncio.Task,
        )
        return LockHooks(
            hooks.enter, hooks.exit, hooks.aenter, hooks.aexit, hooks.wait_begin, hooks.wait_end
        )
    return _pure_lock_hooks(tracker, lock_cls, acquire, release)


def _pure_lock_hooks(  # noqa: PLR0915  # one closure per hook, inlined on purpose
    tracker: Any, lock_cls: Any, acquire: Any, release: Any
) -> LockHooks:
    """The pure-Python twin of ``_lock_speedups.LockHooks`` (see `lock_hooks`)."""
    states_get = tracker.states.get
    live_get = tracker.live.get
    clock = tracker.clock
    threshold = tracker.held_too_long
    slow_hold = tracker.hold
    unhold = tracker.unhold
    long_hold = tracker.long_hold
    slow_task = asyncio_task
    tasks_get = _CURRENT_TASKS.get if _CURRENT_TASKS is not None else None
    getframe = sys._getframe
    hot: Any = None

    # One function per hook and no nested calls: Python calls are what costs here.
    def aenter(lock: Any, depth: int = 2, check: bool = True) -> bool:
        nonlocal hot
        if check and getattr(lock_cls, "acquire", None) is not acquire:
            return False
        state = hot
        if state is None or state.ref() is not lock:
            state = states_get(id(lock))
            if state is None:
                return True
            hot = state
        loop = state.loop
        task = tasks_get(loop) if tasks_get is not None and loop is not None else None
        if task is None:
            task = slow_task(state)
        key = id(task)
        frame = getframe(depth)  # the wrapper's caller
        record = live_get(key)
        code = frame.f_code
        if code is state.site_code:
            state.holder = (key, record, clock(), code, frame.f_lasti)
        else:
            state.holder = None  # the lock was free: any holder left is stale
            slow_hold(state, key, record, frame)
        return True

    def enter(lock: Any) -> None:
        aenter(lock, 3, False)

    def aexit(lock: Any, check: bool = True) -> bool:
        nonlocal hot
        if check and getattr(lock_cls, "release", None) is not release:
            return False
        state = hot
        if state is None or state.ref() is not lock:
            state = states_get(id(lock))
            if state is None:
                return True
            hot = state
        entry = state.holder
        if entry is None:
            if state.holds:
                unhold(state, 0)
            return True
        state.holder = None
        duration = clock() - entry[2]
        hist = state.hist
        if hist is None:
            hist = state.hist = {}
        if duration > state.hold_max:
            state.hold_max = duration
        index = duration.bit_length()
        hist[index] = hist.get(index, 0) + 1
        if duration >= threshold:
            long_hold(state, entry, duration)
        return True

    def exit_(lock: Any) -> None:
        aexit(lock, False)

    wait_begin_ = tracker.wait_begin
    wait_end_ = tracker.wait_end

    def wait_begin(lock: Any) -> Any:
        state = states_get(id(lock))
        if state is None:
            return None
        loop = state.loop
        task = tasks_get(loop) if tasks_get is not None and loop is not None else None
        if task is None:
            task = slow_task(state)
        key = id(task)
        record = live_get(key)
        since = wait_begin_(state, key, record, getframe(2), "acquire")  # never raises
        return (state, key, record, since) if since >= 0 else False

    def wait_end(lock: Any, token: Any, exc: BaseException | None) -> None:
        if token is False:
            return
        state, key, record, since = token
        if exc is None:
            wait_end_(state, key, since, False, record, True)
        else:
            wait_end_(state, key, since, isinstance(exc, tracker.cancelled_types))

    return LockHooks(enter, exit_, aenter, aexit, wait_begin, wait_end)


def make_asyncio_lock_methods(  # noqa: PLR0915  # one closure per method, inlined on purpose
    lock_cls: Any, tracker: Any
) -> dict[str, Callable[..., Any]]:
    """Return tracked ``acquire``, ``release``, ``__aenter__`` and ``__aexit__`` for
    `lock_cls` (``asyncio.Lock``), bookkeeping into `tracker` (a ``SyncTracker``).

    The uncontended case runs asyncio's own fast path, verbatim, plus one call of the
    bookkeeping (`lock_hooks`, in C where built): no extra frame, and ``async with``
    even saves the ``acquire`` coroutine plain asyncio creates. A contended acquisition,
    an error (``release`` of an unlocked lock), a subclass and a class whose
    ``acquire``/``release`` was replaced since take asyncio's own code. One difference
    remains: ``async with`` on a plain ``asyncio.Lock`` does not look for an
    ``acquire``/``release`` set on the instance.
    """
    original_acquire = lock_cls.acquire
    original_release = lock_cls.release

    async def acquire(lock: Any) -> bool:
        # Invariant: asyncio's fast path, verbatim, so fairness is unchanged.
        if not lock._locked and (
            lock._waiters is None
            or not lock._waiters
            or (lock._waiters[0].cancelled() and all(w.cancelled() for w in lock._waiters))
        ):
            lock._locked = True
            try:
                enter(lock)
            except Exception as exc:  # noqa: BLE001
                internal_error("lock monitor: acquire", exc)
            return True
        # The contended path: asyncio's own acquire, timed around (wait_begin and
        # wait_end in C where built; None: untracked; what fails is reported and the
        # wait goes on).
        try:
            token = wait_begin(lock)
        except Exception as exc:  # noqa: BLE001
            internal_error("lock monitor: wait", exc)
            token = None
        if token is None:
            return await original_acquire(lock)  # type: ignore[no-any-return]
        try:
            await original_acquire(lock)
        except BaseException as exc:
            try:
                wait_end(lock, token, exc)
            except Exception as error:  # noqa: BLE001
                internal_error("lock monitor: wait", error)
            raise
        try:
            wait_end(lock, token, None)
        except Exception as exc:  # noqa: BLE001
            internal_error("lock monitor: wait", exc)
        return True

    def release(lock: Any) -> None:
        if lock._locked:
            lock._locked = False
            lock._wake_up_first()
            try:
                exit_(lock)
            except Exception as exc:  # noqa: BLE001
                internal_error("lock monitor: release", exc)
        else:
            original_release(lock)  # raises asyncio's own RuntimeError

    async def __aenter__(lock: Any) -> None:  # noqa: N807
        # The class itself with its tracked acquire only (`aenter` checks that on the
        # fast path): a subclass, or a class whose acquire was replaced since (a mock),
        # goes through ``self.acquire()``, as asyncio's mixin does.
        if type(lock) is lock_cls:
            if not lock._locked and (
                lock._waiters is None
                or not lock._waiters
                or (lock._waiters[0].cancelled() and all(w.cancelled() for w in lock._waiters))
            ):
                try:
                    ours = aenter(lock)  # the budgeted path
                except Exception as exc:  # noqa: BLE001
                    internal_error("lock monitor: acquire", exc)
                    ours = lock_cls.acquire is acquire
                if ours:
                    lock._locked = True
                    return
            elif lock_cls.acquire is acquire:
                # acquire()'s contended path, inlined: one coroutine less to resume at
                # each wakeup.
                try:
                    token = wait_begin(lock)
                except Exception as exc:  # noqa: BLE001
                    internal_error("lock monitor: wait", exc)
                    token = None
                if token is None:
                    await original_acquire(lock)
                    return
                try:
                    await original_acquire(lock)
                except BaseException as exc:
                    try:
                        wait_end(lock, token, exc)
                    except Exception as error:  # noqa: BLE001
                        internal_error("lock monitor: wait", error)
                    raise
                try:
                    wait_end(lock, token, None)
                except Exception as exc:  # noqa: BLE001
                    internal_error("lock monitor: wait", exc)
                return
        await lock.acquire()

    async def __aexit__(lock: Any, exc_type: Any, exc: Any, tb: Any) -> None:  # noqa: N807
        if type(lock) is lock_cls and lock._locked:
            try:
                ours = aexit(lock)  # the budgeted path
            except Exception as error:  # noqa: BLE001
                internal_error("lock monitor: release", error)
                ours = lock_cls.release is release
            if ours:
                lock._locked = False
                lock._wake_up_first()
                return
        lock.release()

    enter, exit_, aenter, aexit, wait_begin, wait_end = lock_hooks(
        tracker, lock_cls, acquire, release
    )
    methods: dict[str, Callable[..., Any]] = {
        "acquire": acquire,
        "release": release,
        "__aenter__": __aenter__,
        "__aexit__": __aexit__,
    }
    for name, method in methods.items():
        # The original's name, qualified name and module: what a task running
        # ``lock.acquire`` is named after, and what tracebacks and inspect show.
        functools.update_wrapper(method, getattr(lock_cls, name))
    return methods


def asyncio_awaited_task(task: Any) -> Any:
    """Return the task `task` is awaiting right now (``await other_task``), or None."""
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is not None and isinstance(waiter, asyncio.Task):
        return waiter
    return None


#: asyncio's own synchronisation modules: frames there are a primitive's constructor.
#: Both spellings of each path (as imported, and resolved), so frames are matched by
#: string work alone.
ASYNCIO_SYNC_FILES: Final = frozenset(
    form
    for module in (asyncio.locks, asyncio.queues)
    for form in (os.path.normpath(module.__file__ or ""), os.path.realpath(module.__file__ or ""))
)

# -- AnyIO -----------------------------------------------------------------------------

ANYIO_ASYNCIO_BACKEND: Final = "anyio._backends._asyncio"
ANYIO_TRIO_BACKEND: Final = "anyio._backends._trio"
ANYIO_SYNC: Final = "anyio._core._synchronization"


def anyio_backend_classes(module: ModuleType) -> dict[str, type]:
    """Return AnyIO's backend ``Lock``, ``Semaphore``, ``CapacityLimiter`` and ``Event``
    classes found in `module` (an ``anyio._backends`` module)."""
    classes: dict[str, type] = {}
    for name in ("Lock", "Semaphore", "CapacityLimiter", "Event"):
        cls = getattr(module, name, None)
        if isinstance(cls, type):
            classes[name] = cls
    return classes


def anyio_context_bypasses_acquire(cls: type, backend: str) -> bool:
    """True when ``async with`` on `cls` does not go through its own ``acquire`` and
    ``release``: AnyIO's trio ``CapacityLimiter`` enters the trio limiter it wraps
    directly, so its ``__aenter__``/``__aexit__`` are what to wrap."""
    return backend == "trio" and "__aenter__" in vars(cls) and "__aexit__" in vars(cls)


# -- trio --------------------------------------------------------------------------------

TRIO_SYNC: Final = "trio._sync"


def trio_sync_files() -> frozenset[str]:
    """Return the files holding trio's primitives (their constructors run there), in both
    spellings (resolves symlinks: call it when patching, not on the event loop)."""
    module = sys.modules.get(TRIO_SYNC)
    path = getattr(module, "__file__", None)
    return frozenset([os.path.normpath(path), os.path.realpath(path)] if path else [])


def asyncio_semaphore_value(semaphore: Any) -> float | None:
    """Return a semaphore's initial counter (read right after its constructor)."""
    value = getattr(semaphore, "_value", None)
    return float(value) if isinstance(value, int) else None


def trio_lock_base(trio: ModuleType) -> type | None:
    """Return the class implementing ``trio.Lock`` and ``trio.StrictFIFOLock``
    (``trio._sync._LockImpl``), when it has the methods the monitor wraps."""
    module = sys.modules.get(TRIO_SYNC)
    base = getattr(module, "_LockImpl", None)
    if not isinstance(base, type) or not issubclass(trio.Lock, base):
        return None
    if not all(hasattr(base, name) for name in ("acquire", "acquire_nowait", "release")):
        return None
    return base


# -- resources ---------------------------------------------------------------------------


def is_closed(obj: Any) -> bool | None:
    """Return whether a resource is closed, by its public API; None when it has none.

    Transports answer ``is_closing()``, servers an empty ``sockets``, aiohttp sessions
    ``closed``, httpx clients ``is_closed``.
    """
    if callable(getattr(obj, "is_serving", None)) and hasattr(obj, "sockets"):
        return not obj.sockets  # a server: close() empties its sockets
    is_closing = getattr(obj, "is_closing", None)
    if callable(is_closing):
        return bool(is_closing())
    for name in ("closed", "is_closed"):
        value = getattr(obj, name, None)
        if isinstance(value, bool):
            return value
    return None
