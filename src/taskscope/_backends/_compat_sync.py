"""Private internals of asyncio, AnyIO and trio synchronisation primitives, in one place.

The lock and resource monitors wrap public methods at class level; these are the few
places where they must know more than the public API says. When a runtime moves one of
these internals, this is the file to change. Accessors degrade rather than raise.
"""

from __future__ import annotations

import asyncio
import asyncio.locks
import asyncio.queues
import os
import sys
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from types import ModuleType

# -- asyncio.Lock fast path --------------------------------------------------------------

#: ``asyncio.Lock.acquire`` on 3.11-3.13 returns at once, without awaiting, when the lock
#: is free and no live waiter is queued; the tracked acquire takes that same path itself
#: (so the uncontended case costs no extra coroutine) and delegates everything else.
ASYNCIO_LOCK_FAST_PATH: Final = (3, 11) <= sys.version_info < (3, 15)


def make_asyncio_lock_acquire(
    original: Callable[[Any], Awaitable[bool]],
    acquired: Callable[[Any], None],
    contended: Callable[[Any], Awaitable[bool]],
) -> Callable[[Any], Awaitable[bool]]:
    """Return a replacement for ``asyncio.Lock.acquire``.

    The uncontended case is asyncio's own fast path, verbatim, followed by
    `acquired(lock)`; otherwise `contended(lock)` runs (which awaits `original`).
    """
    if not ASYNCIO_LOCK_FAST_PATH:

        async def delegating_acquire(lock: Any) -> bool:
            return await contended(lock)

        return delegating_acquire

    async def acquire(lock: Any) -> bool:
        # Invariant: identical to asyncio's fast path, so fairness is unchanged.
        if not lock._locked and (
            lock._waiters is None or all(w.cancelled() for w in lock._waiters)
        ):
            lock._locked = True
            acquired(lock)
            return True
        return await contended(lock)

    return acquire


def asyncio_awaited_task(task: Any) -> Any:
    """Return the task `task` is awaiting right now (``await other_task``), or None."""
    waiter = getattr(task, "_fut_waiter", None)
    if waiter is not None and isinstance(waiter, asyncio.Task):
        return waiter
    return None


#: asyncio's own synchronisation modules: frames there are a primitive's constructor.
ASYNCIO_SYNC_FILES: Final = frozenset(
    os.path.realpath(module.__file__ or "") for module in (asyncio.locks, asyncio.queues)
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


# -- trio --------------------------------------------------------------------------------

TRIO_SYNC: Final = "trio._sync"


def trio_sync_files() -> frozenset[str]:
    """Return the files holding trio's primitives (their constructors run there)."""
    module = sys.modules.get(TRIO_SYNC)
    path = getattr(module, "__file__", None)
    return frozenset([os.path.realpath(path)] if path else [])


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


def fast_current_task() -> Callable[[], Any]:
    """Return the cheapest function answering ``asyncio.current_task()`` inside a task.

    ``asyncio.current_task`` is a Python function that looks the loop up; the C module
    has ``current_task`` from 3.12; on 3.11 the task table and the C
    ``get_running_loop`` are read directly.
    """
    import _asyncio

    current = getattr(_asyncio, "current_task", None)
    if current is not None:
        return current  # type: ignore[no-any-return]
    table = getattr(asyncio.tasks, "_current_tasks", None)
    get_loop = getattr(_asyncio, "get_running_loop", None)
    if isinstance(table, dict) and get_loop is not None:
        get = table.get

        def current_task() -> Any:
            return get(get_loop())

        return current_task
    return asyncio.current_task
