"""Entering a scope: the hot path shared by every flavour (AnyIO, trio, asyncio).

Per entry: the entering task (read from the scope for AnyIO, from trio's run context,
or asked of asyncio), a short walk of ``sys._getframe()`` keeping ``(code, line)`` pairs
up to the user's frame and `context_frames` callers, a weak reference, one small
object and two dict stores. Deadlines, shields and earlier ``cancel()`` calls are read
on a slow path that a plain scope skips; ids, task records and formatted locations are
made only when a scope is reported.
"""

from __future__ import annotations

import functools
import sys
import weakref
from typing import TYPE_CHECKING, Any, Final

from .._backends import _compat, _compat_anyio
from .._core._faults import internal_error
from ._scopes_state import ENTERED, KIND

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

    from .._core._location import RawLocation
    from ._scopes_state import HotScope, ScopeState

#: Scope kinds fixed by the class wrapped (AnyIO's and trio's are told from the stack).
FIXED_KINDS: Final = {
    "asyncio-timeout": "asyncio.timeout",
    "asyncio-taskgroup": "asyncio.TaskGroup",
}


def task_getter(flavour: str, current_task: Any) -> Callable[[Any], Any]:
    """Return a one-argument callable giving the task entering `scope` (C calls where
    possible: this runs for every scope)."""
    if flavour == "anyio-asyncio":
        # AnyIO has just stored the entering task on the scope.
        return _compat_anyio.anyio_host_task
    if flavour == "trio":
        context = _compat.trio_run_context()
        if context is not None:
            # getattr(context, "task", scope): trio's running task, read in C.
            return functools.partial(getattr, context, "task")

    def ask(_scope: Any) -> Any:
        return current_task()

    return ask


def make_enter(  # noqa: PLR0915  # the hot path, one closure on purpose
    state: ScopeState,
    original: Callable[[Any], Any],
    flavour: str,
    current_task: Any,
    *,
    caller_depth: int = 1,
) -> Callable[[Any], Any]:
    """Wrap a synchronous ``__enter__`` (AnyIO's asyncio and trio's ``CancelScope``):
    call it, then record that the scope was entered by the frame `caller_depth` levels
    up (the wrapper's caller; asyncio's ``__aenter__`` wrappers call this one with an
    identity `original` and ``caller_depth=2``)."""
    active = state.active
    pending = state.pending
    stats = state.stats
    kind_codes = state.kind_codes
    registry = state.registry
    clock = registry.clock
    is_library = registry.locations.is_library
    depth = state.stack_depth
    context = state.context_frames
    #: ``id(code)`` -> "is a library frame", decided once per code object (kept alive
    #: in `seen`, so that its id stays its own). Ids, not codes: see `ScopeState`.
    libraries: dict[int, bool] = {}
    seen: list[CodeType] = state.code_refs
    #: The run loops' dispatch: what lies above did not enter the scope.
    stop_codes = set(state.by_id(dict.fromkeys(_compat_anyio.run_loop_codes(), "")))
    #: Thin wrappers entering a scope for the caller (AnyIO's trio CancelScope).
    passthrough = state.passthrough
    make_ref = weakref.ref
    max_active = state.max_active
    kind_default = FIXED_KINDS.get(flavour)
    inf = float("inf")
    deadline_of = (
        _compat_anyio.anyio_deadline
        if flavour == "anyio-asyncio"
        else _compat_anyio.scope_deadline_or_inf
    )
    #: trio keeps a scope's deadline as a float in ``_deadline``: read it inline (the
    #: common case of `scope_deadline_or_inf`, without a Python call per scope).
    read_deadline = flavour == "trio"
    task_of = task_getter(flavour, current_task)
    live = registry.live
    getframe = sys._getframe
    #: The kind of a scope entered directly by user code (no context frames wanted).
    direct_kind = kind_default or "cancel_scope"
    user_only = context == 0

    def walk(frame: FrameType | None) -> tuple[str, list[RawLocation]]:  # noqa: PLR0912
        """Classify a scope entered through library code, and take its entry stack:
        up to the user's frame and `context` callers beyond it, innermost first."""
        stack: list[RawLocation] = []
        kind = kind_default
        extra = -1
        found = False
        #: Whether the first frame that is not a thin wrapper is library code.
        direct: bool | None = None
        while frame is not None:
            code = frame.f_code
            code_id = id(code)
            stack.append((code, frame.f_lineno))
            if extra >= 0:
                extra -= 1
                if extra < 0:
                    break
            else:
                library = libraries.get(code_id)
                if library is None:
                    library = libraries[code_id] = is_library(code)
                    seen.append(code)
                if library:
                    if kind is None:
                        kind = kind_codes.get(code_id)
                        if kind == "task":
                            # AnyIO's per-task scope, entered by the task's own root
                            # coroutine: only the event loop lies above (and its frame
                            # would be materialized for nothing).
                            break
                    if direct is None and code_id not in passthrough:
                        direct = True
                        if kind is None:
                            # Entered by library code that is not a known scope maker
                            # (trio's checkpoints, AnyIO's bookkeeping): internal, and
                            # nothing above can change that.
                            break
                else:
                    if direct is None:
                        direct = False
                    found = True
                    extra = context - 1
                    if extra < 0:
                        break
            if len(stack) >= depth:
                break
            # Each f_back materializes a frame object: keep the walk short.
            frame = frame.f_back
            if frame is not None and id(frame.f_code) in stop_codes:
                break
        if kind is None:
            # No user frame before the run loop, or entered by library code itself: the
            # runtime's own scope (trio's sleep, system nursery, AnyIO's bookkeeping).
            kind = "internal" if direct or not found else "cancel_scope"
        elif not found and kind != "task":
            kind = "internal"
        return kind, stack

    def enter(scope: Any) -> Any:
        result = original(scope)
        try:
            frame = getframe(caller_depth)
            code = frame.f_code
            library = libraries.get(id(code))
            if user_only and library is False:
                # The common case, inlined: the user's own ``with`` entered the scope.
                stack = [(code, frame.f_lineno)]
                kind = direct_kind
            elif (
                user_only
                and library
                and depth > 1
                and id(code) in passthrough
                and kind_codes.get(id(code)) is None
                and (back := frame.f_back) is not None
                and libraries.get(id(back.f_code)) is False
                and id(back.f_code) not in stop_codes
            ):
                # The next most common, inlined: the user's ``with`` through a thin
                # wrapper (AnyIO's trio CancelScope); what `walk` returns for it.
                stack = [(code, frame.f_lineno), (back.f_code, back.f_lineno)]
                kind = direct_kind
            else:
                kind, stack = walk(frame)
            key = id(task_of(scope))
            slow = pending or kind_default is not None
            if not slow:
                deadline = getattr(scope, "_deadline", None) if read_deadline else None
                if deadline.__class__ is not float:
                    deadline = deadline_of(scope)
                slow = deadline != inf
            if slow:
                # Deadlines are read on the slow path, which a scope without one skips.
                hot = (make_ref(scope), flavour, kind, key, live.get(key), stack, clock())
                kind = scope_started(state, scope, hot)
            else:
                active[id(scope)] = (
                    make_ref(scope),
                    flavour,
                    kind,
                    key,
                    live.get(key),
                    stack,
                    clock(),
                )
            stats[kind][ENTERED] += 1
            if len(active) > max_active:
                state.prune()
        except Exception as exc:  # noqa: BLE001  # never raise into the program
            internal_error("scope monitor: enter", exc)
        return result

    return enter


def scope_started(state: ScopeState, scope: Any, hot: HotScope) -> str:
    """Store a scope the hot path could not settle alone (a deadline, a fixed kind, an
    earlier ``cancel()``), with its cold state; return its kind."""
    deadline = _compat_anyio.scope_deadline(scope)
    kind = hot[KIND]
    if deadline is not None and kind == "cancel_scope":
        hot = (hot[0], hot[1], "move_on_after", *hot[3:])
    state.active[id(scope)] = hot
    entry = state.entry(id(scope))
    if entry is None:  # pruned by another thread's snapshot in between: nothing to add
        return hot[KIND]
    if deadline is not None:
        now = _compat_anyio.loop_time()
        if now is not None:
            entry.timeout = deadline - now
    entry.shield = _compat_anyio.scope_shield(scope)
    waiting = state.pending.pop(id(scope), None)
    if waiting is not None and waiting[0]() is scope:
        state.attach(entry, waiting[1])
    return hot[KIND]
