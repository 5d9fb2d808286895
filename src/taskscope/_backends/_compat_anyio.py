"""Every private AnyIO, trio and asyncio internal the cancel-scope monitor relies on.

The monitor wraps the *classes* of cancel scopes (never instances, which use
``__slots__``) and reads a handful of private attributes on the slow path. When AnyIO,
trio or asyncio move one of them, this is the file to change. Each accessor degrades
(returns None or a neutral value) rather than raising; `anyio_problem` says up front
when the installed AnyIO is not one this module knows, and the monitor then leaves
AnyIO alone ("scope tracking unavailable") instead of guessing.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import operator
import re
import sys
from dataclasses import dataclass
from types import CodeType, ModuleType
from typing import Any, Final

#: AnyIO releases whose internals this module was written against (4.14 introduced the
#: per-task ``TaskHandle`` scope); later 4.x releases are accepted when the structural
#: checks in `anyio_problem` pass.
ANYIO_MIN_VERSION: Final = (4, 14)
ANYIO_MAJOR: Final = 4

ANYIO_ASYNCIO_MODULE: Final = "anyio._backends._asyncio"
ANYIO_TRIO_MODULE: Final = "anyio._backends._trio"
ANYIO_TASKS_MODULE: Final = "anyio._core._tasks"
TRIO_RUN_MODULE: Final = "trio._core._run"


@dataclass(frozen=True, slots=True)
class ScopeClass:
    """One class of scope the monitor wraps, and the names of its methods.

    `exit_style` says how the exit method is called: ``cm`` is
    ``__exit__(type, value, tb) -> bool``, ``close`` is trio's
    ``_close(exc) -> exc | None`` (which ``NurseryManager`` calls instead of
    ``__exit__``), ``acm`` is an ``async def __aexit__``.
    """

    #: ``anyio-asyncio``, ``trio``, ``asyncio-timeout`` or ``asyncio-taskgroup``.
    flavour: str
    owner: type
    enter: str
    exit: str
    exit_style: str
    #: The method every cancellation request goes through (None: not wrapped).
    cancel: str | None


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        match = re.match(r"\d+", piece)
        if match is None:
            break
        parts.append(int(match.group()))
    return tuple(parts)


def anyio_version() -> str | None:
    """Return the installed AnyIO's version string, or None if it has no metadata."""
    try:
        return importlib.metadata.version("anyio")
    except importlib.metadata.PackageNotFoundError:
        return None


_ANYIO_SCOPE_SLOTS: Final = ("_active", "_host_task", "_cancel_called", "_parent_scope")


def anyio_problem(version: str | None, backend: ModuleType | None) -> str | None:
    """Return why AnyIO's scopes cannot be tracked, or None when they can.

    Args:
        version: the installed AnyIO version (`anyio_version`).
        backend: ``anyio._backends._asyncio`` if imported (checked structurally).
    """
    numbers = _version_tuple(version or "")
    if not numbers or numbers[0] != ANYIO_MAJOR or numbers[:2] < ANYIO_MIN_VERSION:
        return (
            f"AnyIO {version or '(unknown version)'} is not supported: taskscope tracks "
            f"cancel scopes on AnyIO {ANYIO_MAJOR}.x from "
            f"{'.'.join(map(str, ANYIO_MIN_VERSION))}; upgrade AnyIO or taskscope"
        )
    if backend is None:
        return None
    scope = getattr(backend, "CancelScope", None)
    deliver = getattr(getattr(scope, "_deliver_cancellation", None), "__code__", None)
    slots = getattr(scope, "__slots__", ())
    if (
        not isinstance(scope, type)
        or deliver is None
        or "origin" not in deliver.co_varnames
        or not all(name in slots for name in _ANYIO_SCOPE_SLOTS)
        or not all(callable(getattr(scope, name, None)) for name in ("__enter__", "__exit__"))
        or not callable(getattr(scope, "cancel", None))
    ):
        return (
            f"AnyIO {version}'s cancel scopes have an unknown layout; cancel-scope "
            "tracking is unavailable for AnyIO (asyncio and trio scopes are still tracked)"
        )
    return None


# -- the classes wrapped -------------------------------------------------------------


def anyio_asyncio_class(module: ModuleType) -> ScopeClass | None:
    """Return AnyIO's asyncio ``CancelScope`` as a wrappable class."""
    owner = getattr(module, "CancelScope", None)
    if not isinstance(owner, type):
        return None
    return ScopeClass("anyio-asyncio", owner, "__enter__", "__exit__", "cm", "cancel")


def trio_class(module: ModuleType) -> ScopeClass | None:
    """Return ``trio.CancelScope`` (which AnyIO on trio wraps) as a wrappable class.

    Its exit is wrapped at ``_close``, because nurseries call ``_close`` directly; its
    cancellation at ``_cancel``, through which explicit, deadline, nursery and shutdown
    cancellations all pass with a ``CancelReason``.
    """
    owner = getattr(module, "CancelScope", None)
    if not isinstance(owner, type):
        return None
    close = getattr(getattr(owner, "_close", None), "__code__", None)
    cancel = getattr(getattr(owner, "_cancel", None), "__code__", None)
    if (
        close is None
        or close.co_varnames[:2] != ("self", "exc")
        or cancel is None
        or "_cancel_status" not in getattr(owner, "__slots__", ("_cancel_status",))
        or "_cancel_status" not in getattr(getattr(module, "Task", None), "__slots__", ())
    ):
        return None
    return ScopeClass("trio", owner, "__enter__", "_close", "close", "_cancel")


def asyncio_classes() -> list[ScopeClass]:
    """Return asyncio's ``timeout`` scope and ``TaskGroup`` (3.11+) as wrappable classes."""
    classes: list[ScopeClass] = []
    timeouts = sys.modules.get("asyncio.timeouts")
    timeout = getattr(timeouts, "Timeout", None)
    if isinstance(timeout, type) and callable(getattr(timeout, "_on_timeout", None)):
        classes.append(
            ScopeClass("asyncio-timeout", timeout, "__aenter__", "__aexit__", "acm", "_on_timeout")
        )
    group = getattr(asyncio, "TaskGroup", None)
    if isinstance(group, type) and callable(getattr(group, "_abort", None)):
        classes.append(
            ScopeClass("asyncio-taskgroup", group, "__aenter__", "__aexit__", "acm", "_abort")
        )
    return classes


# -- reading scopes (slow path) ------------------------------------------------------


def scope_is_active(flavour: str, scope: Any) -> bool:
    """Return True while a scope is entered and not exited (after a failed exit too)."""
    if flavour == "anyio-asyncio":
        return bool(getattr(scope, "_active", False))
    if flavour == "trio":
        return getattr(scope, "_cancel_status", None) is not None
    return False


#: The task that entered an active AnyIO asyncio scope (read right after ``__enter__``).
anyio_host_task: Final = operator.attrgetter("_host_task")
#: An AnyIO asyncio scope's deadline (``math.inf``: none), read in C.
anyio_deadline: Final = operator.attrgetter("_deadline")
#: Whether an AnyIO asyncio scope is entered (still True after a refused exit).
anyio_scope_active: Final = operator.attrgetter("_active")
#: A trio task's innermost cancel status, or a trio scope's own (trio's nesting test:
#: ``task._cancel_status is scope._cancel_status`` for the task's innermost scope).
trio_cancel_status: Final = operator.attrgetter("_cancel_status")


def scope_deadline(scope: Any) -> float | None:
    """Return a scope's deadline (clock of its loop), or None when it has none."""
    try:
        if hasattr(scope, "when") and callable(scope.when):
            when = scope.when()  # asyncio.timeout
        else:
            when = getattr(scope, "_deadline", None)
    except Exception:  # noqa: BLE001  # a property that fails means "unknown"
        return None
    if isinstance(when, (int, float)) and when not in (float("inf"), float("-inf")):
        return float(when)
    return None


def scope_deadline_or_inf(scope: Any) -> float:
    """Return a scope's deadline attribute as is (``inf`` when it has none or fails)."""
    try:
        # The private attribute: trio's ``deadline`` property warns on an unentered
        # relative scope and reads the clock.
        deadline = getattr(scope, "_deadline", None)
        if deadline is None:
            deadline = scope.deadline
    except Exception:  # noqa: BLE001  # asyncio.timeout has no ``deadline``
        return float("inf")
    return deadline if isinstance(deadline, float) else float("inf")


def scope_shield(scope: Any) -> bool:
    """Return whether a scope shields its contents from outer cancellation."""
    try:
        return bool(getattr(scope, "shield", False))
    except Exception:  # noqa: BLE001
        return False


def scope_cancel_called(scope: Any) -> bool:
    """Return whether a scope was asked to cancel (by ``cancel()`` or its deadline).

    Reads the private flag first: trio's ``cancel_called`` *property* cancels a scope
    whose deadline has passed, which inside ``_cancel`` (the runner expiring
    deadlines) would re-enter the deadline bookkeeping.
    """
    flag = getattr(scope, "_cancel_called", None)
    if isinstance(flag, bool):
        return flag
    try:
        return bool(getattr(scope, "cancel_called", False))
    except Exception:  # noqa: BLE001
        return False


def scope_cancelled_caught(scope: Any) -> bool:
    """Return whether a scope swallowed the cancellation it delivered."""
    try:
        return bool(getattr(scope, "cancelled_caught", False))
    except Exception:  # noqa: BLE001
        return False


def loop_time() -> float | None:
    """Return the running loop's (or trio run's) clock, the one deadlines are on."""
    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        pass
    trio = sys.modules.get("trio")
    if trio is not None:
        try:
            return float(trio.current_time())
        except RuntimeError:
            pass
    return None


def trio_cancel_reason(reason: Any) -> tuple[str | None, str | None, str | None]:
    """Split trio's ``CancelReason`` into (source, source task repr, reason)."""
    source = getattr(reason, "source", None)
    source_task = getattr(reason, "source_task", None)
    text = getattr(reason, "reason", None)
    return (
        source if isinstance(source, str) else None,
        source_task if isinstance(source_task, str) else None,
        text if isinstance(text, str) else None,
    )


def trio_task_cancel_scopes(task: Any) -> list[Any]:
    """Return the scopes whose cancellation can reach a trio task, innermost first,
    up to the first shield (``Task._cancel_status`` chain)."""
    scopes = []
    status = getattr(task, "_cancel_status", None)
    depth = 0
    while status is not None and depth < 256:
        scope = getattr(status, "_scope", None)
        if scope is not None:
            scopes.append(scope)
            if scope_shield(scope):
                break
        status = getattr(status, "parent", None)
        depth += 1
    return scopes


def anyio_task_cancel_scopes(task: Any) -> list[Any]:
    """Return the AnyIO scopes whose cancellation can reach an asyncio task, innermost
    first, up to the first shield (AnyIO's per-task state and ``_parent_scope``)."""
    backend = sys.modules.get(ANYIO_ASYNCIO_MODULE)
    states = getattr(backend, "_task_states", None)
    if states is None:
        return []
    try:
        state = states.get(task)
    except TypeError:
        return []
    scope = getattr(state, "cancel_scope", None)
    scopes = []
    depth = 0
    while scope is not None and depth < 256:
        scopes.append(scope)
        if scope_shield(scope):
            break
        scope = getattr(scope, "_parent_scope", None)
        depth += 1
    return scopes


def asyncio_group_tasks(group: Any) -> frozenset[Any]:
    """Return the tasks an ``asyncio.TaskGroup`` is still waiting for."""
    tasks = getattr(group, "_tasks", None)
    try:
        return frozenset(tasks) if tasks is not None else frozenset()
    except TypeError:
        return frozenset()


# -- code objects that identify who is on the stack ------------------------------------


def _code(obj: Any) -> CodeType | None:
    obj = getattr(obj, "__wrapped__", obj)
    code = getattr(obj, "__code__", None)
    return code if isinstance(code, CodeType) else None


def _codes_of(pairs: list[tuple[Any, str]]) -> dict[CodeType, str]:
    result: dict[CodeType, str] = {}
    for obj, label in pairs:
        code = _code(obj)
        if code is not None:
            result[code] = label
    return result


def kind_codes() -> dict[CodeType, str]:
    """Map the code of each function that enters a scope on the user's behalf to the
    kind of scope it makes (``task_group``, ``fail_after``, ``task``, ``internal``)."""
    pairs: list[tuple[Any, str]] = []
    tasks = sys.modules.get(ANYIO_TASKS_MODULE)
    if tasks is not None:
        pairs += [
            (getattr(tasks, "fail_at", None), "fail_after"),
            (getattr(getattr(tasks, "TaskHandle", None), "_run_coro", None), "task"),
        ]
    backend = sys.modules.get(ANYIO_ASYNCIO_MODULE)
    if backend is not None:
        group = getattr(backend, "TaskGroup", None)
        pairs += [
            (getattr(group, "__aenter__", None), "task_group"),
            (getattr(group, "__aexit__", None), "internal"),
        ]
    run = sys.modules.get(TRIO_RUN_MODULE)
    if run is not None:
        pairs.append(
            (getattr(getattr(run, "NurseryManager", None), "__aenter__", None), "task_group")
        )
    timeouts = sys.modules.get("trio._timeouts")
    if timeouts is not None:
        pairs += [
            (getattr(timeouts, "fail_at", None), "fail_after"),
            (getattr(timeouts, "fail_after", None), "fail_after"),
        ]
    return _codes_of(pairs)


def cancel_cause_codes() -> dict[CodeType, str]:
    """Map the code of each library function that requests a cancellation to the cause
    it stands for: ``timeout`` (a deadline expired), ``sibling-failure`` (a task of the
    group failed), ``task-group-error`` (the body of the group raised)."""
    pairs: list[tuple[Any, str]] = []
    backend = sys.modules.get(ANYIO_ASYNCIO_MODULE)
    if backend is not None:
        scope = getattr(backend, "CancelScope", None)
        group = getattr(backend, "TaskGroup", None)
        pairs += [
            (getattr(scope, "_timeout", None), "timeout"),
            (getattr(group, "__aexit__", None), "task-group-error"),
        ]
        spawn = _code(getattr(group, "_spawn", None))
        if spawn is not None:
            # ``task_done`` is a closure inside ``TaskGroup._spawn``.
            for const in spawn.co_consts:
                if isinstance(const, CodeType) and const.co_name == "task_done":
                    pairs.append((_CodeHolder(const), "sibling-failure"))
    group = getattr(asyncio, "TaskGroup", None)
    if group is not None:
        pairs += [
            (getattr(group, "_on_task_done", None), "sibling-failure"),
            (getattr(group, "__aexit__", None), "task-group-error"),
        ]
    return _codes_of(pairs)


class _CodeHolder:
    """Lets a bare code object go through `_codes_of`."""

    __slots__ = ("__code__",)

    def __init__(self, code: CodeType) -> None:
        self.__code__ = code


#: Local variable holding the failed child task (``sibling-failure`` code).
FAILED_TASK_LOCALS: Final = ("_task", "task")


def deliver_codes() -> dict[CodeType, str]:
    """Map the code of each function that delivers a scope's cancellation to a task to
    the local variable naming the scope: AnyIO's ``_deliver_cancellation(origin)``,
    asyncio's ``Timeout._on_timeout`` and ``TaskGroup._abort`` (``self``)."""
    result: dict[CodeType, str] = {}
    backend = sys.modules.get(ANYIO_ASYNCIO_MODULE)
    code = _code(getattr(getattr(backend, "CancelScope", None), "_deliver_cancellation", None))
    if code is not None:
        result[code] = "origin"
    timeouts = sys.modules.get("asyncio.timeouts")
    code = _code(getattr(getattr(timeouts, "Timeout", None), "_on_timeout", None))
    if code is not None:
        result[code] = "self"
    code = _code(getattr(getattr(asyncio, "TaskGroup", None), "_abort", None))
    if code is not None:
        result[code] = "self"
    return result


def passthrough_codes() -> frozenset[CodeType]:
    """Return the code of thin wrappers that enter a scope on their caller's behalf
    (AnyIO's trio ``CancelScope.__enter__``), seen through when classifying."""
    backend = sys.modules.get(ANYIO_TRIO_MODULE)
    scope = getattr(backend, "CancelScope", None)
    return frozenset(_codes_of([(getattr(scope, "__enter__", None), "")]))


def run_loop_codes() -> frozenset[CodeType]:
    """Return the code of the run loops' task dispatch (asyncio's ``Handle._run``,
    trio's ``unrolled_run``): a stack walk for the user's line stops there."""
    import asyncio.events

    objects: list[Any] = [
        asyncio.events.Handle._run,
        getattr(asyncio.BaseEventLoop, "_run_once", None),
    ]
    run = sys.modules.get(TRIO_RUN_MODULE)
    if run is not None:
        objects += [getattr(run, "unrolled_run", None), getattr(run, "run", None)]
    return frozenset(_codes_of([(obj, "") for obj in objects]))


def exit_owner_codes() -> dict[CodeType, str]:
    """Map library code seen on the stack when a scope is exited (or entered) to the
    owner it reveals: an exit stack, an ``@asynccontextmanager``, or the event loop
    finalizing an abandoned async generator."""
    import contextlib  # stdlib, always importable

    pairs: list[tuple[Any, str]] = [
        (contextlib.AsyncExitStack.__aexit__, "exit_stack"),
        (contextlib.AsyncExitStack.aclose, "exit_stack"),
        (contextlib.AsyncExitStack.enter_async_context, "exit_stack"),
        (contextlib.ExitStack.__exit__, "exit_stack"),
        (contextlib.ExitStack.enter_context, "exit_stack"),
        (contextlib._AsyncGeneratorContextManager.__aexit__, "asynccontextmanager"),
        (contextlib._AsyncGeneratorContextManager.__aenter__, "asynccontextmanager"),
        (asyncio.BaseEventLoop.shutdown_asyncgens, "asyncgen_finalizer"),
        (getattr(asyncio.BaseEventLoop, "_asyncgen_finalizer_hook", None), "asyncgen_finalizer"),
    ]
    asyncgens = sys.modules.get("trio._core._asyncgens")
    generators = getattr(asyncgens, "AsyncGenerators", None)
    pairs += [
        (getattr(generators, "_finalize_one", None), "asyncgen_finalizer"),
        (getattr(generators, "finalize_remaining", None), "asyncgen_finalizer"),
    ]
    return _codes_of(pairs)


def task_runs_asyncgen_close(task: Any) -> bool:
    """Return True when an asyncio task's coroutine is an async generator's ``aclose()``
    / ``athrow()`` awaitable: the task the loop's finalizer hook (or
    ``shutdown_asyncgens``) made to close an abandoned async generator."""
    get_coro = getattr(task, "get_coro", None)
    if get_coro is None:
        return False
    try:
        coro = get_coro()
    except Exception:  # noqa: BLE001
        return False
    return type(coro).__name__ == "async_generator_athrow"


def current_task_functions() -> dict[str, Any]:
    """Return, per flavour, the function giving the current task (or raising)."""
    functions: dict[str, Any] = {
        "anyio-asyncio": asyncio.current_task,
        "asyncio-timeout": asyncio.current_task,
        "asyncio-taskgroup": asyncio.current_task,
    }
    trio = sys.modules.get("trio")
    if trio is not None:
        functions["trio"] = trio.lowlevel.current_task
    return functions


def trio_ki_protect(function: Any) -> Any:
    """Mark a wrapper of a trio method as KeyboardInterrupt-protected, like the method."""
    trio = sys.modules.get("trio")
    protect = getattr(getattr(trio, "lowlevel", None), "enable_ki_protection", None)
    if protect is None:
        return function
    try:
        return protect(function)
    except Exception:  # noqa: BLE001  # protection is a nicety, never a requirement
        return function
