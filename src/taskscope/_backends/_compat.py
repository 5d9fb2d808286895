"""Every private runtime internal taskscope relies on, in one place.

When asyncio, uvloop, trio or AnyIO move an internal, this is the file to change.
Each accessor degrades (returns a neutral value) rather than raising.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import asyncio.tasks
import importlib.abc
import importlib.machinery
import sys
import threading
from collections.abc import Callable, Sequence
from types import FunctionType, MethodType, ModuleType
from typing import Any, Final

PY312: Final = sys.version_info >= (3, 12)

# -- asyncio tasks ---------------------------------------------------------------------

#: Task classes: the C task and the pure-Python one (used when the C module is missing
#: and by some tests). Both keep their step/wakeup as bound callables.
TASK_TYPES: Final[tuple[type, ...]] = tuple(
    {asyncio.Task, getattr(asyncio.tasks, "_PyTask", asyncio.Task)}
)

#: How a task schedules itself: the C task's step is a ``TaskStepMethWrapper`` and its
#: wakeup a builtin named ``task_wakeup``; the pure-Python task uses bound methods
#: ``__step`` and ``__wakeup``. Both carry the task as ``__self__``.
STEP_NAMES: Final = frozenset({"task_wakeup", "__step", "__wakeup"})
_STEP_WRAPPER_TYPE_NAMES: Final = frozenset({"TaskStepMethWrapper", "TaskWakeupMethWrapper"})
_BOUND_TYPES: Final = (type(len), MethodType)

#: Per callback type: 2 = always a task step (the C step wrapper), 1 = a bound callable
#: whose name tells, 0 = never a task step. Filled in as types are first seen.
callback_kinds: dict[type, int] = {FunctionType: 0}


def classify_callback_type(kind: type) -> int:
    """Classify a callback type once (see `callback_kinds`)."""
    if kind.__name__ in _STEP_WRAPPER_TYPE_NAMES:
        result = 2
    elif issubclass(kind, _BOUND_TYPES):
        result = 1
    else:
        result = 0
    callback_kinds[kind] = result
    return result


def task_exception(task: Any) -> BaseException | None:
    """Return a finished task's exception without marking it as retrieved.

    ``Task.exception()`` would clear the "never retrieved" flag and so change what
    asyncio logs at shutdown; the private attribute does not.
    """
    exc = getattr(task, "_exception", None)
    return exc if isinstance(exc, BaseException) else None


def task_log_traceback(task: Any) -> bool:
    """Return True while a failed task's exception has not been retrieved."""
    return bool(getattr(task, "_log_traceback", False))


def task_cancel_message(task: Any) -> str | None:
    """Return the message given to ``Task.cancel(msg)``, if any."""
    msg = getattr(task, "_cancel_message", None)
    return msg if isinstance(msg, str) else None


def coroutine_started(coro: Any) -> bool:
    """Return True if a coroutine has already run (an eager task's first step)."""
    if getattr(coro, "cr_frame", 0) is None:
        return True  # finished
    return bool(getattr(coro, "cr_suspended", False))


#: Module holding ``_cancel_all_tasks``, which ``asyncio.run``/``Runner.close`` call
#: when the main coroutine has returned, to cancel every task still pending.
runners_module: Final[ModuleType] = asyncio.runners
CANCEL_ALL_TASKS: Final = "_cancel_all_tasks"


def loop_classes() -> list[type]:
    """Return the event loop classes whose methods the asyncio backend wraps."""
    classes: list[type] = [asyncio.BaseEventLoop]
    uvloop = sys.modules.get("uvloop")
    loop_class = getattr(uvloop, "Loop", None) if uvloop is not None else None
    if isinstance(loop_class, type):
        # uvloop.Loop is a Python subclass of the Cython loop, so methods set on it are
        # found by attribute lookup, which is how C tasks call ``loop.call_soon``.
        classes.append(loop_class)
    return classes


# -- post-import hooks -----------------------------------------------------------------

_import_callbacks: dict[str, list[Callable[[ModuleType], None]]] = {}
_import_lock = threading.RLock()


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Runs callbacks right after a watched module finishes importing."""

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in _import_callbacks:
            return None
        for finder in sys.meta_path:
            if finder is self:
                continue
            find = getattr(finder, "find_spec", None)
            if find is None:
                continue
            spec: importlib.machinery.ModuleSpec | None = find(fullname, path, target)
            if spec is not None and spec.loader is not None:
                _wrap_loader(spec, fullname)
                return spec
        return None


def _wrap_loader(spec: importlib.machinery.ModuleSpec, fullname: str) -> None:
    loader: Any = spec.loader
    exec_module = getattr(loader, "exec_module", None)
    if exec_module is None:
        return

    class _Loader:
        def __getattr__(self, name: str) -> Any:
            return getattr(loader, name)

        def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
            module: ModuleType | None = loader.create_module(spec)
            return module

        def exec_module(self, module: ModuleType) -> None:
            exec_module(module)
            _run_import_callbacks(fullname, module)

    spec.loader = _Loader()  # type: ignore[assignment]


def _run_import_callbacks(name: str, module: ModuleType) -> None:
    with _import_lock:
        callbacks = _import_callbacks.pop(name, [])
    for callback in callbacks:
        callback(module)


_finder = _PostImportFinder()


def when_imported(name: str, callback: Callable[[ModuleType], None]) -> None:
    """Call `callback(module)` now if `name` is imported, else right after its import."""
    module = sys.modules.get(name)
    if module is not None:
        callback(module)
        return
    with _import_lock:
        _import_callbacks.setdefault(name, []).append(callback)
        if _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)


def cancel_import_callbacks() -> None:
    """Forget every pending post-import callback and remove the finder."""
    with _import_lock:
        _import_callbacks.clear()
        if _finder in sys.meta_path:
            sys.meta_path.remove(_finder)
