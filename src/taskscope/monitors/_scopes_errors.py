"""Scope errors: an exit in another task than the entry (``cancel-scope-cross-task``) or
out of order within one task (``cancel-scope-misnested``), with both stacks and the
owner the stacks reveal (an abandoned async generator, an exit stack, a client).

Nothing here runs for a clean exit: the exit wrappers call `check_exit` only when the
task or the order is wrong, before the library's own error reaches the program.
"""

from __future__ import annotations

from inspect import CO_ASYNC_GENERATOR
from typing import TYPE_CHECKING, Any

from .._backends import _compat_anyio
from .._core._faults import internal_error
from .._core._location import to_location
from ._scopes_state import CROSS, CROSS_TASK, LONG_STACK, MISNESTED, MISNESTING, ScopeProblem

if TYPE_CHECKING:
    from types import FrameType

    from .._core._location import RawLocation
    from ._scopes_state import ScopeEntry, ScopeState

#: Methods whose (user-defined) class names the context manager that owned a scope.
_CONTEXT_METHODS = frozenset({"__aexit__", "__exit__", "__aenter__", "__enter__", "aclose"})


def check_exit(
    state: ScopeState, entry: ScopeEntry, scope: Any, key: int, frame: FrameType | None
) -> ScopeEntry | None:
    """An exit in another task (``id(task) == key``) or out of order: record it with
    the exiting stack, before the library's error reaches the program."""
    registry = state.registry
    problem = ScopeProblem(
        CROSS_TASK if key != entry.task_key else MISNESTED, entry, registry.clock()
    )
    record = registry.live.get(key)
    if record is not None:
        problem.exited_by = (record.id, record.current_name())
    problem.exited_stack = registry.locations.stack(frame, limit=LONG_STACK)
    if problem.kind == MISNESTED:
        # The task's scopes nest: the last one it entered is its innermost.
        inner = [sid for sid in state.task_scopes(key) if sid != id(scope)]
        problem.innermost = state.entry(inner[-1]) if inner else None
    problem.owner, problem.owner_name = owner_of(state, entry, problem.exited_stack, key)
    entry.problem = problem
    state.stats[entry.kind][CROSS if problem.kind == CROSS_TASK else MISNESTING] += 1
    state.errors.append(problem)
    return entry


def checked_exit(
    state: ScopeState, entry: ScopeEntry, scope: Any, key: int, frame: FrameType | None
) -> ScopeEntry | None:
    """`check_exit` for libraries that do not always refuse a bad exit (trio, asyncio's
    own classes): called before the original exit changes the task's scopes; returns
    the entry to settle after the exit, or None; never raises."""
    try:
        return check_exit(state, entry, scope, key, frame)
    except Exception as exc:  # noqa: BLE001
        internal_error("scope monitor: exit", exc)
        return None


def owner_of(
    state: ScopeState, entry: ScopeEntry, exited_stack: list[RawLocation], task_key: int
) -> tuple[str, str | None]:
    """Tell who owned a scope from the stacks at entry and at exit."""
    owner_codes = state.owner_codes
    is_library = state.is_library
    both = exited_stack + entry.stack
    labels = {owner_codes[id(code)] for code, _ in both if id(code) in owner_codes}
    generator = next(
        (code for code, _ in both if code.co_flags & CO_ASYNC_GENERATOR and not is_library(code)),
        None,
    )
    generator_name = generator.co_qualname if generator is not None else None
    if "asyncgen_finalizer" in labels or (
        generator is not None
        and _compat_anyio.task_runs_asyncgen_close(state.task_object(task_key))
    ):
        return "asyncgen_finalizer", generator_name
    if "exit_stack" in labels:
        return "exit_stack", _context_manager_name(state, both)
    if "asynccontextmanager" in labels:
        return "asynccontextmanager", generator_name
    if generator is not None:
        return "asyncgen", generator_name
    name = _context_manager_name(state, both)
    if name is not None:
        return "context_manager", name
    return "unknown", None


def _context_manager_name(state: ScopeState, frames: list[RawLocation]) -> str | None:
    for code, _ in frames:
        if code.co_name in _CONTEXT_METHODS and not state.is_library(code):
            return code.co_qualname.rsplit(".", 1)[0]
    return None


def add_note(state: ScopeState, exc: BaseException, entry: ScopeEntry) -> None:
    """The opt-in: say where the scope was entered, as a note on the library's error."""
    try:
        where = to_location(state.user_raw(entry.stack))
        task = entry.record
        who = f"task {task.current_name()!r}" if task is not None else "another task"
        exc.add_note(
            f"taskscope: this {entry.kind.replace('_', ' ')} was entered in {who}"
            + (f" at {where}" if where is not None else "")
        )
    except Exception as error:  # noqa: BLE001
        internal_error("scope monitor: exception note", error)
