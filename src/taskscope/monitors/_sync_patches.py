"""Class-level wrappers of asyncio, AnyIO and trio primitives for the lock monitor.

Each wrapper calls the original method unchanged and does its bookkeeping around it, so
fairness, cancellation and exceptions are the runtime's own. The only exception is
``asyncio.Lock``'s uncontended path (``acquire``, ``release``, ``async with``), which
runs asyncio's code verbatim with the bookkeeping inlined (in `_compat_sync`): it is the
budgeted hot path.

Which primitives are tracked: every one constructed while the monitor is installed,
except those a library constructs for its own use (AnyIO's ``Event`` wraps an
``asyncio.Event``; only the AnyIO one is tracked). Primitives made before install are
tracked only through `track_lock`.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import os
import sys
from typing import TYPE_CHECKING, Any, Final

from .._backends import _compat_sync
from .._backends._patching import Patches
from .._core._faults import internal_error

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, ModuleType

    from ._sync_state import SyncTracker

#: Creator classification of a code object (see `SyncPatcher._classify`).
_SKIP: Final = 0
_INTERNAL: Final = 1
_USER: Final = 2

#: AnyIO's construction plumbing: ``Lock.__new__`` asks the backend's ``create_lock``.
_ANYIO_PLUMBING: Final = frozenset(
    {
        "__new__",
        "__init__",
        "create_event",
        "create_lock",
        "create_semaphore",
        "create_capacity_limiter",
    }
)


def _dirs_of(module: ModuleType | None) -> list[str]:
    """Return a module's directory in both spellings (as imported, and resolved).

    Resolved only here, when a runtime is patched; frames are then classified by pure
    string work, because touching the file system on the event loop is a blocking call
    (AnyIO's blockbuster fixture rightly fails a test for it).
    """
    path = getattr(module, "__file__", None)
    if not path:
        return []
    forms = {os.path.normpath(path), os.path.realpath(path)}
    return sorted({os.path.join(os.path.dirname(form), "") for form in forms})


def _path_of(code: CodeType) -> str:
    filename = code.co_filename
    return os.path.normpath(filename) if os.path.isabs(filename) else filename


class SyncPatcher:
    """Installs the wrappers for one `SyncTracker`; `undo` restores every class."""

    def __init__(self, tracker: SyncTracker) -> None:
        self.tracker = tracker
        self.patches = Patches()
        self._type_names: dict[type, str] = {}
        self._creators: dict[tuple[str, CodeType], int] = {}
        self._library_dirs: tuple[str, ...] = ()
        self._anyio_dirs: tuple[str, ...] = ()
        self._sync_files: frozenset[str] = frozenset()

    def undo(self) -> None:
        """Restore every patched attribute."""
        self.patches.undo()

    def replace(self, cls: type, name: str, wrapper: Callable[..., Any]) -> None:
        """Set ``cls.name = wrapper``, with the original's name, qualified name, module,
        docstring and ``__wrapped__`` (AnyIO names a task after the function it runs:
        ``start_soon(semaphore.acquire)`` must name it as without taskscope)."""
        functools.update_wrapper(wrapper, getattr(cls, name))
        self.patches.replace(cls, name, wrapper)

    def _refresh_dirs(self) -> None:
        names = ("asyncio", "anyio", "trio", "taskscope")
        self._library_dirs = tuple(d for name in names for d in _dirs_of(sys.modules.get(name)))
        self._anyio_dirs = tuple(_dirs_of(sys.modules.get("anyio")))
        self._sync_files = _compat_sync.ASYNCIO_SYNC_FILES | _compat_sync.trio_sync_files()
        self.tracker.cancelled_types = _compat_sync.cancelled_types()

    # -- creation -------------------------------------------------------------------

    def _classify(self, family: str, code: CodeType) -> int:
        """Is `code`, constructing a `family` primitive, its constructor plumbing
        (skip), a library making one for itself (internal), or the user's code?"""
        key = (family, code)
        known = self._creators.get(key)
        if known is not None:
            return known
        path = _path_of(code)
        in_library = path.startswith(self._library_dirs)
        if code.co_filename.startswith("<attrs generated"):
            result = _SKIP
        elif family == "anyio":
            if path.startswith(self._anyio_dirs) and code.co_name in _ANYIO_PLUMBING:
                result = _SKIP
            else:
                result = _INTERNAL if in_library else _USER
        elif path in self._sync_files:
            result = _SKIP
        else:
            result = _INTERNAL if in_library else _USER
        self._creators[key] = result
        return result

    def _type_name(self, cls: type) -> str:
        name = self._type_names.get(cls)
        if name is None:
            module = cls.__module__
            if module.startswith("anyio."):
                module = "anyio"
            elif module.startswith("asyncio."):
                module = "asyncio"
            elif module.startswith("trio."):
                module = "trio"
            name = self._type_names[cls] = f"{module}.{cls.__qualname__}"
        return name

    def wrap_init(
        self,
        cls: type,
        kind: str,
        backend: str,
        family: str,
        capacity: Callable[[Any], float | None] | None = None,
    ) -> None:
        """Register every instance of `cls` constructed from now on."""
        original = cls.__init__  # type: ignore[misc]
        tracker = self.tracker
        classify = self._classify
        type_name = self._type_name

        def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            original(obj, *args, **kwargs)
            try:
                if id(obj) in tracker.states:
                    return  # a subclass's __init__ chained to ours
                frame: Any = sys._getframe(1)
                depth = 0
                while frame is not None and depth < 16:
                    verdict = classify(family, frame.f_code)
                    if verdict == _INTERNAL:
                        return
                    if verdict == _USER:
                        break
                    frame = frame.f_back
                    depth += 1
                state = tracker.register(
                    obj, kind, type_name(type(obj)), backend, tracker.user_location(frame)
                )
                if capacity is not None:
                    state.capacity = capacity(obj)
            except Exception as exc:  # noqa: BLE001  # never break a constructor
                internal_error("lock monitor: register", exc)

        self.replace(cls, "__init__", __init__)

    # -- asyncio.Lock: the budgeted hot path ------------------------------------------

    def wrap_asyncio_lock(self, cls: type) -> None:
        """Replace ``asyncio.Lock``'s acquire, release and ``async with`` methods (see
        `_compat_sync.make_asyncio_lock_methods`); generic wrappers on other versions."""
        if not _compat_sync.ASYNCIO_LOCK_INLINE:
            task = self.tracker.asyncio_task
            self.wrap_acquire(cls, "acquire", task, _locked)
            self.wrap_release(cls, "release", task)
            return
        methods = _compat_sync.make_asyncio_lock_methods(cls, self.tracker)
        for name, method in methods.items():
            self.patches.replace(cls, name, method)

    # -- generic wrappers -----------------------------------------------------------

    def wrap_acquire(
        self,
        cls: type,
        name: str,
        task_of: Callable[[Any], Any],
        would_block: Callable[[Any], bool],
        *,
        nested: bool = False,
        borrower: bool = False,
        reentry_raises: bool = False,
    ) -> None:
        """Wrap an async acquire method of `cls`: time the wait when it blocks, record
        the hold when it succeeds (`task_of(state)` returns the running task).
        `reentry_raises`: acquiring it again while holding it raises at once (AnyIO's and
        trio's locks and limiters): that is neither a wait nor a deadlock."""
        original = getattr(cls, name)
        tracker = self.tracker
        states = tracker.states
        live = tracker.live

        async def acquire(obj: Any, *args: Any, **kwargs: Any) -> Any:
            state = states.get(id(obj))
            if state is None:
                return await original(obj, *args, **kwargs)
            since = -1
            try:
                frame = sys._getframe(1)
                task_key = id(task_of(state))
                key = id(args[0]) if borrower and args else task_key
                record = live.get(key)
                if nested:
                    if state.acquiring is None:
                        state.acquiring = set()
                    state.acquiring.add(task_key)
                if would_block(obj) and not (reentry_raises and tracker.holding(state, key)):
                    since = tracker.wait_begin(state, key, record, frame, "acquire")
            except Exception as exc:  # noqa: BLE001
                internal_error("lock monitor: acquire", exc)
                return await original(obj, *args, **kwargs)
            try:
                result = await original(obj, *args, **kwargs)
            except BaseException as exc:
                done(state, task_key, key, since, None, None, exc)
                raise
            done(state, task_key, key, since, record, frame, None)
            return result

        def done(  # noqa: PLR0917  # the acquire's locals, one call site each
            state: Any,
            task_key: int,
            key: int,
            since: int,
            record: Any,
            frame: Any,
            exc: BaseException | None,
        ) -> None:
            try:
                if nested and state.acquiring is not None:
                    state.acquiring.discard(task_key)
                if since >= 0:
                    cancelled = exc is not None and isinstance(exc, tracker.cancelled_types)
                    tracker.wait_end(state, key, since, cancelled, record, exc is None)
                elif exc is None:
                    tracker.hold(state, key, record, frame)
            except Exception as error:  # noqa: BLE001
                internal_error("lock monitor: acquire", error)

        self.replace(cls, name, acquire)

    def wrap_acquire_nowait(
        self, cls: type, name: str, task_of: Callable[[Any], Any], *, borrower: bool = False
    ) -> None:
        """Wrap a synchronous acquire (``acquire_nowait``): a hold when it returns."""
        original = getattr(cls, name)
        tracker = self.tracker
        states = tracker.states
        live = tracker.live

        def acquire_nowait(obj: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(obj, *args, **kwargs)
            state = states.get(id(obj))
            if state is not None:
                try:
                    task_key = id(task_of(state))
                    acquiring = state.acquiring
                    if acquiring is None or task_key not in acquiring:
                        key = id(args[0]) if borrower and args else task_key
                        tracker.hold(state, key, live.get(key), sys._getframe(1))
                except Exception as exc:  # noqa: BLE001
                    internal_error("lock monitor: acquire_nowait", exc)
            return result

        self.replace(cls, name, acquire_nowait)

    def wrap_release(
        self, cls: type, name: str, task_of: Callable[[Any], Any], *, borrower: bool = False
    ) -> None:
        """Wrap a release method: the hold ends once the original returns."""
        original = getattr(cls, name)
        tracker = self.tracker
        states = tracker.states

        def released(obj: Any, args: tuple[Any, ...]) -> None:
            state = states.get(id(obj))
            if state is not None and (state.holder is not None or state.holds):
                try:
                    key = id(args[0]) if borrower and args else id(task_of(state))
                    tracker.unhold(state, key)
                except Exception as exc:  # noqa: BLE001
                    internal_error("lock monitor: release", exc)

        if inspect.iscoroutinefunction(original):  # an ``__aexit__``

            async def release_async(obj: Any, *args: Any, **kwargs: Any) -> Any:
                result = await original(obj, *args, **kwargs)
                released(obj, ())
                return result

            self.replace(cls, name, release_async)
            return

        def release(obj: Any, *args: Any, **kwargs: Any) -> Any:
            result = original(obj, *args, **kwargs)
            released(obj, args)
            return result

        self.replace(cls, name, release)

    def wrap_wait(
        self,
        cls: type,
        name: str,
        task_of: Callable[[Any], Any],
        would_block: Callable[[Any], bool] | None,
        operation: str,
    ) -> None:
        """Wrap a method that only waits (``Event.wait``, ``Queue.get``, ``Condition.wait``)."""
        original = getattr(cls, name)
        tracker = self.tracker
        states = tracker.states
        live = tracker.live

        async def wait(obj: Any, *args: Any, **kwargs: Any) -> Any:
            state = states.get(id(obj))
            if state is None or (would_block is not None and not would_block(obj)):
                return await original(obj, *args, **kwargs)
            try:
                key = id(task_of(state))
                since = tracker.wait_begin(state, key, live.get(key), sys._getframe(1), operation)
            except Exception as exc:  # noqa: BLE001
                internal_error("lock monitor: wait", exc)
                return await original(obj, *args, **kwargs)
            try:
                result = await original(obj, *args, **kwargs)
            except BaseException as exc:
                try:
                    cancelled = isinstance(exc, tracker.cancelled_types)
                    tracker.wait_end(state, key, since, cancelled)
                except Exception as error:  # noqa: BLE001
                    internal_error("lock monitor: wait", error)
                raise
            try:
                tracker.wait_end(state, key, since, False)
            except Exception as error:  # noqa: BLE001
                internal_error("lock monitor: wait", error)
            return result

        self.replace(cls, name, wait)

    # -- per runtime ----------------------------------------------------------------

    def patch_asyncio(self) -> None:
        """Wrap asyncio's Lock, Semaphore, BoundedSemaphore, Condition, Event, Queue."""
        self._refresh_dirs()
        task = self.tracker.asyncio_task
        self.wrap_init(asyncio.Lock, "lock", "asyncio", "asyncio")
        self.wrap_asyncio_lock(asyncio.Lock)
        self.wrap_init(
            asyncio.Semaphore,
            "semaphore",
            "asyncio",
            "asyncio",
            capacity=_compat_sync.asyncio_semaphore_value,
        )
        self.wrap_acquire(asyncio.Semaphore, "acquire", task, asyncio.Semaphore.locked)
        self.wrap_release(asyncio.Semaphore, "release", task)
        self.wrap_init(asyncio.Condition, "condition", "asyncio", "asyncio")
        self.wrap_wait(asyncio.Condition, "wait", task, None, "wait")
        self.wrap_init(asyncio.Event, "event", "asyncio", "asyncio")
        self.wrap_wait(asyncio.Event, "wait", task, _not_set, "wait")
        self.wrap_init(asyncio.Queue, "queue", "asyncio", "asyncio", capacity=_queue_capacity)
        self.wrap_wait(asyncio.Queue, "get", task, asyncio.Queue.empty, "get")
        self.wrap_wait(asyncio.Queue, "put", task, asyncio.Queue.full, "put")

    def patch_trio(self, trio: ModuleType) -> None:
        """Wrap trio's Lock (and StrictFIFOLock), Semaphore, CapacityLimiter, Event."""
        self._refresh_dirs()
        task = _trio_task_of(trio)
        base = _compat_sync.trio_lock_base(trio)
        if base is not None:
            for cls in {trio.Lock, trio.StrictFIFOLock, base}:
                if "__init__" in vars(cls):
                    self.wrap_init(cls, "lock", "trio", "trio")
            self.wrap_acquire(base, "acquire", task, _locked, nested=True, reentry_raises=True)
            self.wrap_acquire_nowait(base, "acquire_nowait", task)
            self.wrap_release(base, "release", task)
        self.wrap_init(trio.Semaphore, "semaphore", "trio", "trio", capacity=_value_of)
        self.wrap_acquire(trio.Semaphore, "acquire", task, _value_zero, nested=True)
        self.wrap_acquire_nowait(trio.Semaphore, "acquire_nowait", task)
        self.wrap_release(trio.Semaphore, "release", task)
        self._patch_limiter(trio.CapacityLimiter, "trio", "trio", task, routed=True)
        self.wrap_init(trio.Event, "event", "trio", "trio")
        self.wrap_wait(trio.Event, "wait", task, _not_set, "wait")

    def _patch_limiter(
        self, cls: type, backend: str, family: str, task: Callable[[Any], Any], *, routed: bool
    ) -> None:
        """A capacity limiter: `routed` when its task methods call the borrower ones."""
        self.wrap_init(cls, "capacity-limiter", backend, family, capacity=_total_tokens)
        block = _no_tokens
        self.wrap_acquire(
            cls,
            "acquire_on_behalf_of",
            task,
            block,
            nested=True,
            borrower=True,
            reentry_raises=True,
        )
        self.wrap_acquire_nowait(cls, "acquire_on_behalf_of_nowait", task, borrower=True)
        self.wrap_release(cls, "release_on_behalf_of", task, borrower=True)
        if not routed:
            self.wrap_acquire(cls, "acquire", task, block, reentry_raises=True)
            self.wrap_acquire_nowait(cls, "acquire_nowait", task)
            self.wrap_release(cls, "release", task)
        if _compat_sync.anyio_context_bypasses_acquire(cls, backend):
            self.wrap_acquire(cls, "__aenter__", task, block, reentry_raises=True)
            self.wrap_release(cls, "__aexit__", task)

    def patch_anyio_backend(self, module: ModuleType, backend: str) -> None:
        """Wrap one AnyIO backend's Lock, Semaphore, CapacityLimiter and Event."""
        self._refresh_dirs()
        task: Callable[[Any], Any]
        if backend == "trio":
            task = _trio_task_of(sys.modules["trio"])
        else:
            task = self.tracker.asyncio_task
        classes = _compat_sync.anyio_backend_classes(module)
        lock = classes.get("Lock")
        if lock is not None:
            self.wrap_init(lock, "lock", backend, "anyio")
            self.wrap_acquire(lock, "acquire", task, _locked, reentry_raises=True)
            self.wrap_acquire_nowait(lock, "acquire_nowait", task)
            self.wrap_release(lock, "release", task)
        semaphore = classes.get("Semaphore")
        if semaphore is not None:
            self.wrap_init(semaphore, "semaphore", backend, "anyio", capacity=_value_of)
            self.wrap_acquire(semaphore, "acquire", task, _value_zero)
            self.wrap_acquire_nowait(semaphore, "acquire_nowait", task)
            self.wrap_release(semaphore, "release", task)
        limiter = classes.get("CapacityLimiter")
        if limiter is not None:
            self._patch_limiter(limiter, backend, "anyio", task, routed=backend == "asyncio")
        event = classes.get("Event")
        if event is not None:
            self.wrap_init(event, "event", backend, "anyio")
            self.wrap_wait(event, "wait", task, _not_set, "wait")

    def patch_anyio_condition(self, module: ModuleType) -> None:
        """Wrap AnyIO's (backend-independent) Condition."""
        self._refresh_dirs()
        cls = getattr(module, "Condition", None)
        if not isinstance(cls, type):
            return
        self.wrap_init(cls, "condition", "anyio", "anyio")
        self.wrap_wait(cls, "wait", _any_current_task, None, "wait")


def _any_current_task(_state: Any) -> Any:
    try:
        return asyncio.current_task()
    except RuntimeError:
        trio = sys.modules.get("trio")
        return trio.lowlevel.current_task() if trio is not None else None


def _trio_task_of(trio: ModuleType) -> Callable[[Any], Any]:
    current_task = trio.lowlevel.current_task

    def task_of(_state: Any) -> Any:
        return current_task()

    return task_of


def _not_set(obj: Any) -> bool:
    return not obj.is_set()


def _locked(obj: Any) -> bool:
    return bool(obj.locked())


def _value_zero(obj: Any) -> bool:
    return bool(obj.value == 0)


def _value_of(obj: Any) -> float | None:
    value = getattr(obj, "value", None)
    return float(value) if isinstance(value, int | float) else None


def _no_tokens(obj: Any) -> bool:
    return bool(obj.available_tokens <= 0)


def _total_tokens(obj: Any) -> float | None:
    value = getattr(obj, "total_tokens", None)
    return float(value) if isinstance(value, int | float) else None


def _queue_capacity(obj: Any) -> float | None:
    maxsize = getattr(obj, "maxsize", 0)
    return float(maxsize) if isinstance(maxsize, int) and maxsize > 0 else None
