"""Every private runtime internal taskscope relies on, in one place.

When asyncio, uvloop, trio or AnyIO move an internal, this is the file to change.
Each accessor degrades (returns a neutral value) rather than raising.
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import asyncio.tasks
import gc
import importlib.abc
import importlib.machinery
import sys
import threading
from types import CodeType, FunctionType, MethodType, ModuleType
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence
    from types import FrameType

PY312: Final = sys.version_info >= (3, 12)
#: 3.13+ (PEP 667): ``frame.f_locals`` is a write-through proxy, not a cached snapshot.
PY313: Final = sys.version_info >= (3, 13)

# -- asyncio tasks ---------------------------------------------------------------------

#: Task classes: the C task and the pure-Python one (used when the C module is missing
#: and by some tests). Both keep their step/wakeup as bound callables.
TASK_TYPES: Final[tuple[type, ...]] = tuple(
    {asyncio.Task, getattr(asyncio.tasks, "_PyTask", asyncio.Task)}
)

#: asyncio's ``{loop: running task}``, which ``asyncio.current_task`` reads (a dict on
#: 3.11-3.13; None where it is not, and then the C recorder is not used).
_current = getattr(asyncio.tasks, "_current_tasks", None)
current_tasks: Final[dict[Any, Any] | None] = _current if isinstance(_current, dict) else None

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


def is_pending_task(obj: Any) -> bool:
    """Return True if `obj` is an asyncio task that has not finished."""
    return isinstance(obj, TASK_TYPES) and not obj.done()  # type: ignore[attr-defined]


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


def wrapped_coroutine_code(coro: Any, is_library: Callable[[CodeType], bool]) -> CodeType | None:
    """Return the code of the user coroutine an unstarted library wrapper will run.

    AnyIO spawns every task as a wrapper coroutine: ``TaskHandle._run_coro()`` (4.16)
    with the user's coroutine in ``self._coro``, or earlier a function receiving it as
    an argument. Before the wrapper starts, its locals are just its arguments, so the
    user's coroutine is one of them or the ``_coro`` of one of them.

    The locals are read with ``gc.get_referents(coro)``, never ``frame.f_locals``: that
    would leave a dict on the frame (3.11, 3.12) closing a reference cycle from the
    task through its coroutine back to the task, keeping both alive until a collection.
    """
    if getattr(coro, "cr_frame", None) is None:
        return None
    for value in gc.get_referents(coro):
        try:
            candidates = (value, getattr(value, "_coro", None))
        except Exception:  # noqa: BLE001, S112  # an argument with a hostile __getattr__
            continue
        for candidate in candidates:
            code = getattr(candidate, "cr_code", None)
            if isinstance(code, CodeType) and candidate is not coro and not is_library(code):
                return code
    return None


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
        meta_path = sys.meta_path
        if meta_path and meta_path[0] is not self:
            _move_to_front(self)
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


def _move_to_front(finder: importlib.abc.MetaPathFinder) -> None:
    """Put `finder` first in ``sys.meta_path`` again.

    A finder inserted in front of it later loads modules without it ever seeing them:
    pytest's assertion rewriter does that for every module of a plugin's distribution
    (``anyio._backends._asyncio`` under AnyIO's pytest plugin). Being first changes
    nothing else: `_PostImportFinder` answers only for watched modules, and then with
    the spec of the finders behind it, in their order. Invariant: the import system
    iterates ``sys.meta_path`` by index, and this runs while it consults `finder` at
    index i > 0; after the move the finders from i + 1 on keep their index, so none is
    skipped or asked twice.
    """
    with _import_lock:
        meta_path = sys.meta_path
        if finder in meta_path and meta_path[0] is not finder:
            meta_path.remove(finder)
            meta_path.insert(0, finder)


def _wrap_loader(spec: importlib.machinery.ModuleSpec, fullname: str) -> None:
    loader: Any = spec.loader
    exec_module: Callable[[ModuleType], None] | None = getattr(loader, "exec_module", None)
    if exec_module is None:
        return
    run_module: Callable[[ModuleType], None] = exec_module

    class _Loader:
        def __getattr__(self, name: str) -> Any:
            return getattr(loader, name)

        def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
            module: ModuleType | None = loader.create_module(spec)
            return module

        def exec_module(self, module: ModuleType) -> None:
            run_module(module)
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


# -- trio ------------------------------------------------------------------------------
#
# The trio backend is a `trio.abc.Instrument`; these are the private parts of trio it
# relies on beyond that public interface. Every accessor returns None (or False) when
# trio has moved things, and the backend then degrades instead of failing.

#: The module holding ``setup_runner``, which both ``trio.run`` and
#: ``trio.lowlevel.start_guest_run`` look up as a module global to create each run's
#: ``Runner``: wrapping it reaches every run, however ``run`` itself was imported.
TRIO_RUN_MODULE: Final = "trio._core._run"
TRIO_SETUP_RUNNER: Final = "setup_runner"
#: ``Runner.task_exited(self, task, outcome)``: the one place a task's outcome passes
#: through before the ``task_exited`` instrument hook (which does not receive it).
TRIO_TASK_EXITED: Final = "task_exited"
#: ``Runner.reschedule(self, task, next_send=...)``: every task made ready to run passes
#: through it (it calls the ``task_scheduled`` hook itself, at a dispatch cost).
TRIO_RESCHEDULE: Final = "reschedule"


def trio_run_module() -> ModuleType | None:
    """Return ``trio._core._run`` if it is imported and has ``setup_runner``."""
    module = sys.modules.get(TRIO_RUN_MODULE)
    if module is None or not callable(getattr(module, TRIO_SETUP_RUNNER, None)):
        return None
    return module


def trio_runner_class(module: ModuleType) -> type | None:
    """Return trio's ``Runner`` class when its ``task_exited`` has the known signature."""
    runner = getattr(module, "Runner", None)
    method = getattr(runner, TRIO_TASK_EXITED, None) if isinstance(runner, type) else None
    code = getattr(method, "__code__", None)
    if code is None or code.co_varnames[: code.co_argcount] != ("self", "task", "outcome"):
        return None
    return runner


def trio_add_instrument(runner: Any, instrument: Any) -> bool:
    """Add `instrument` to a ``Runner`` being set up; False if it has no instruments."""
    add = getattr(getattr(runner, "instruments", None), "add_instrument", None)
    if add is None:
        return False
    add(instrument)
    return True


def trio_remove_instrument(runner: Any, instrument: Any) -> None:
    """Remove `instrument` from a ``Runner``, if it is still there."""
    instruments = getattr(runner, "instruments", None)
    remove = getattr(instruments, "remove_instrument", None)
    if remove is not None:
        try:
            remove(instrument)
        except KeyError:
            pass  # never added, or trio disabled it after it raised


def trio_override_instruments_call(
    runner: Any, make: Callable[[dict[str, Any], Callable[..., None]], Any]
) -> Any:
    """Set ``make(data, original_call)`` as the ``call`` of one run's ``Instruments``.

    trio's ``Instruments`` is a ``UserDict`` (hook name -> instruments in ``data``) with
    an instance ``__dict__``, and its call sites look ``instruments.call`` up per call,
    so an instance attribute takes over for this run only. Returns what was set, or None
    when the layout is not the expected one or ``call`` is already overridden.
    """
    instruments = getattr(runner, "instruments", None)
    namespace = getattr(instruments, "__dict__", None)
    data = getattr(instruments, "data", None)
    original = getattr(instruments, "call", None)
    if (
        not isinstance(namespace, dict)
        or not isinstance(data, dict)
        or "call" in namespace
        or original is None
    ):
        return None
    override = make(data, original)
    namespace["call"] = override
    return override


def trio_restore_instruments_call(runner: Any, override: Any) -> None:
    """Undo `trio_override_instruments_call` if `override` is still the one set."""
    namespace = getattr(getattr(runner, "instruments", None), "__dict__", None)
    if isinstance(namespace, dict) and namespace.get("call") is override:
        namespace.pop("call", None)


def trio_current_runner() -> Any:
    """Return the ``Runner`` of the trio run on this thread, or None outside one."""
    return getattr(trio_run_context(), "runner", None)


def trio_machinery_codes(module: ModuleType) -> frozenset[Any]:
    """Return the code of trio's own tasks (the init task, the ``run_sync_soon`` task,
    async generator finalizers): they are the run loop's, not the program's."""
    names = (
        ("Runner", "init"),
        ("EntryQueue", "task"),
        ("AsyncGenerators", "_finalize_one"),
    )
    entry_queue = sys.modules.get("trio._core._entry_queue")
    asyncgens = sys.modules.get("trio._core._asyncgens")
    owners = {"Runner": module, "EntryQueue": entry_queue, "AsyncGenerators": asyncgens}
    codes = set()
    for class_name, attribute in names:
        cls = getattr(owners[class_name], class_name, None)
        code = getattr(getattr(cls, attribute, None), "__code__", None)
        if code is not None:
            codes.add(code)
    return frozenset(codes)


def trio_run_loop_codes(module: ModuleType) -> tuple[frozenset[Any], frozenset[Any]]:
    """Return (entry points, direct calls) for the user-frame walk: the run loop
    (``unrolled_run``) dispatches every task step, so a walk that reaches it from a
    task stops there; only the init task, which spawns the main task, sees through it
    to the ``trio.run(...)`` line."""
    unrolled = getattr(getattr(module, "unrolled_run", None), "__code__", None)
    init = getattr(getattr(getattr(module, "Runner", None), "init", None), "__code__", None)
    return (
        frozenset([unrolled] if unrolled is not None else []),
        frozenset([init] if init is not None else []),
    )


def trio_outcome_error(outcome: Any) -> tuple[bool, BaseException | None]:
    """Split an ``outcome.Value``/``outcome.Error`` into (known, exception)."""
    error = getattr(outcome, "error", None)
    if isinstance(error, BaseException):
        return True, error
    return hasattr(outcome, "value"), None


def trio_cancel_source(exc: BaseException) -> str | None:
    """Return why trio cancelled (``Cancelled.source``, trio 0.30+): ``deadline``,
    ``explicit``, ``nursery``, ``shutdown``, ``KeyboardInterrupt`` or ``unknown``."""
    source = getattr(exc, "source", None)
    return source if isinstance(source, str) else None


def trio_cancel_reason(exc: BaseException) -> str | None:
    """Return the reason given to ``CancelScope.cancel(reason=...)`` (trio 0.30+)."""
    reason = getattr(exc, "reason", None)
    return reason if isinstance(reason, str) else None


def trio_run_context() -> Any:
    """Return trio's thread-local run context, whose ``task`` attribute is the task
    running on this thread (what ``trio.lowlevel.current_task()`` reads), or None."""
    module = sys.modules.get(TRIO_RUN_MODULE)
    return getattr(module, "GLOBAL_RUN_CONTEXT", None)


def frame_locals(frame: FrameType, names: Iterable[str]) -> dict[str, Any]:
    """Read some locals of a running library frame without leaving a reference cycle.

    Before 3.13, ``frame.f_locals`` fills a snapshot dict cached on the frame object;
    left filled, it keeps every local alive as long as the frame, so an exception held
    in a local and whose traceback holds the frame is a reference cycle (AnyIO's
    refcycle tests catch exactly that). The snapshot is emptied after the read (a trace
    function refills it before it looks). From 3.13 the proxy caches nothing, and
    clearing it would delete the frame's locals, so it is left alone.
    """
    snapshot = frame.f_locals
    try:
        return {name: snapshot[name] for name in names if name in snapshot}
    finally:
        if not PY313:
            snapshot.clear()
