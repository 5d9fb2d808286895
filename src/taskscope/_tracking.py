"""The seed conveniences: ``tracked_task`` names and annotates a task, ``tracked_scope``
times a named region. Both work with or without an installed session."""

from __future__ import annotations

import asyncio
import functools
import inspect
import sys
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, overload

from ._core._current import current_task
from ._core._faults import internal_error
from ._session import current_session

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine
    from types import TracebackType

    from ._core._location import RawLocation

P = ParamSpec("P")
T = TypeVar("T")


def annotate_current_task(**values: Any) -> None:
    """Add annotations to the running task's record (nothing without a session).

    Used by integrations (the task manager records its own status this way) and
    equivalent to entering ``tracked_task(**values)`` without renaming the task.
    """
    session = current_session()
    if session is None:
        return
    try:
        task = current_task()
        record = session.registry.find(task) if task is not None else None
        if record is not None:
            if record.annotations is None:
                record.annotations = {}
            record.annotations.update(values)
    except Exception as exc:  # noqa: BLE001  # annotating must never break the program
        internal_error("annotate_current_task", exc)


def _get_name(task: Any) -> str:
    getter = getattr(task, "get_name", None)
    return str(getter() if getter is not None else task.name)


def _set_name(task: Any, name: str) -> None:
    setter = getattr(task, "set_name", None)
    if setter is not None:
        setter(name)
    else:
        task.name = name


def _is_cancellation(exc_type: type[BaseException]) -> bool:
    if issubclass(exc_type, asyncio.CancelledError):
        return True
    trio = sys.modules.get("trio")
    return trio is not None and issubclass(exc_type, trio.Cancelled)


@overload
def tracked_task(
    name: Callable[P, Coroutine[Any, Any, T]], /
) -> Callable[P, Coroutine[Any, Any, T]]: ...
@overload
def tracked_task(name: str | None = None, /, **annotations: Any) -> TrackedTask: ...


def tracked_task(name: Any = None, /, **annotations: Any) -> Any:
    """Name and annotate the current task.

    As a decorator of a coroutine function (``@tracked_task`` or
    ``@tracked_task("fetch", kind="http")``), the task running it takes `name` (the
    function's qualified name by default) for good when the function is the task's own
    coroutine, and for the duration of the call when it is awaited inside another task.
    As a context manager (``with tracked_task("name", user=42):``), the task carries the
    name for the block. Annotations appear in the task's record and in the report.

    Args:
        name: the task name to show; defaults to the decorated function's name.
        **annotations: JSON-friendly values describing the work.

    Raises:
        TypeError: `name` is neither a string nor a coroutine function.
    """
    if callable(name):  # bare @tracked_task
        return TrackedTask(None, {})(name)
    if name is not None and not isinstance(name, str):
        raise TypeError(f"tracked_task name must be a string, got {name!r}")
    return TrackedTask(name, annotations)


class TrackedTask:
    """What `tracked_task(...)` returns: a decorator and a context manager."""

    __slots__ = ("_annotations", "_name", "_restore")

    def __init__(self, name: str | None, annotations: dict[str, Any]) -> None:
        self._name = name
        self._annotations = annotations
        self._restore: list[tuple[Any, str]] = []

    def __call__(
        self, func: Callable[P, Coroutine[Any, Any, T]]
    ) -> Callable[P, Coroutine[Any, Any, T]]:
        if not inspect.iscoroutinefunction(func):
            raise TypeError(
                f"@tracked_task decorates coroutine functions (async def), got {func!r}; "
                "use 'with tracked_task(...)' inside synchronous code instead"
            )
        name = self._name or func.__qualname__
        annotations = self._annotations

        @functools.wraps(func)
        async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            task = current_task()
            scope = TrackedTask(name, annotations)
            if task is not None and _is_own_coroutine(task, wrapper):
                scope._apply(task, restore=False)
                return await func(*args, **kwargs)
            with scope:
                return await func(*args, **kwargs)

        return wrapper

    def _apply(self, task: Any, *, restore: bool) -> None:
        try:
            if self._name is not None:
                if restore:
                    self._restore.append((task, _get_name(task)))
                _set_name(task, self._name)
            session = current_session()
            if session is None:
                return
            record = session.registry.find(task)
            if record is not None and self._annotations:
                if record.annotations is None:
                    record.annotations = {}
                record.annotations.update(self._annotations)
        except Exception as exc:  # noqa: BLE001  # naming must never break the program
            internal_error("tracked_task", exc)

    def __enter__(self) -> TrackedTask:
        task = current_task()
        if task is not None:
            self._apply(task, restore=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        while self._restore:
            task, old = self._restore.pop()
            try:
                _set_name(task, old)
            except Exception:  # noqa: BLE001, S110  # the task may be gone or read-only
                pass


def _is_own_coroutine(task: Any, wrapper: Callable[..., Any]) -> bool:
    coro = task.get_coro() if hasattr(task, "get_coro") else getattr(task, "coro", None)
    return getattr(coro, "cr_code", None) is wrapper.__code__


class tracked_scope:  # noqa: N801  # used like a function: with tracked_scope("name")
    """Time a named region of code and record its outcome (ok, error, cancelled).

    Usable as ``with`` and ``async with``. Per name, the report gives the count, errors,
    cancellations, total and longest duration, and where the region was first entered.

    Args:
        name: the region's name; regions with the same name are aggregated.
    """

    __slots__ = ("_location", "_name", "_start")

    def __init__(self, name: str) -> None:
        value: object = name
        if not isinstance(value, str) or not value:
            raise TypeError(f"tracked_scope needs a non-empty name string, got {name!r}")
        self._name = name
        self._start = 0.0
        self._location: RawLocation | None = None

    def _enter(self, depth: int) -> None:
        session = current_session()
        if session is None:
            return
        registry = session.registry
        region = registry.regions.get(self._name)
        if region is None:
            frame = sys._getframe(depth)
            region = registry.region(self._name, registry.locations.user_frame(frame))
        region.active += 1
        self._start = registry.clock()

    def _exit(self, exc_type: type[BaseException] | None) -> None:
        session = current_session()
        if session is None or not self._start:
            return
        registry = session.registry
        region = registry.regions.get(self._name)
        if region is None:
            return
        duration = registry.clock() - self._start
        self._start = 0.0
        region.active = max(0, region.active - 1)
        region.count += 1
        region.total += duration
        region.max = max(region.max, duration)
        if exc_type is not None:
            if _is_cancellation(exc_type):
                region.cancelled += 1
            else:
                region.errors += 1
                region.last_error = exc_type.__qualname__

    def __enter__(self) -> tracked_scope:
        self._enter(2)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc_type)

    async def __aenter__(self) -> tracked_scope:
        self._enter(2)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(exc_type)
