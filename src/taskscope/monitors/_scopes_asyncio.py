"""asyncio's own scopes: ``asyncio.timeout``/``timeout_at`` (``Timeout``) and
``asyncio.TaskGroup``, whose enter and exit are coroutines (``__aenter__``/``__aexit__``).

Neither class refuses an exit in another task or out of order, so the monitor keeps
each task's list of these scopes (`ScopeState.native`) and checks the task and the
order before the original exit runs. Their cancellations go through
``Timeout._on_timeout`` and ``TaskGroup._abort`` (see `_scopes_cancel`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._scopes_enter import make_enter
from ._scopes_errors import checked_exit
from ._scopes_state import TASK

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._scopes_state import ScopeState


def make_aenter(
    state: ScopeState, original: Callable[[Any], Any], flavour: str, current_task: Any
) -> Callable[[Any], Any]:
    """Wrap ``async def __aenter__(self)``."""
    # Records the entry as a synchronous enter would, for the caller of `aenter`.
    entered = make_enter(state, _same, flavour, current_task, caller_depth=2)
    active = state.active
    native = state.native

    async def aenter(scope: Any) -> Any:
        result = await original(scope)
        entered(scope)
        hot = active.get(id(scope))
        if hot is not None:
            native.setdefault(hot[TASK], []).append(id(scope))
        return result

    return aenter


def make_aexit(
    state: ScopeState, original: Callable[..., Any], current_task: Any
) -> Callable[..., Any]:
    """Wrap ``async def __aexit__(self, exc_type, exc_val, exc_tb)``."""
    active = state.active
    native = state.native
    settle = state.settle_exit
    getframe = sys._getframe

    async def aexit(scope: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:
        scope_id = id(scope)
        hot = active.get(scope_id)
        if hot is not None:
            try:
                key = id(current_task())
            except RuntimeError:  # a coroutine driven without a running loop
                key = 0
            ids = native.get(key)
            if key != hot[TASK] or not ids or ids[-1] != scope_id:
                entry = state.entry_of(scope)
                if entry is not None:
                    checked_exit(state, entry, scope, key, getframe(1))
        try:
            result = await original(scope, exc_type, exc_val, exc_tb)
        except BaseException as exc:
            if hot is not None:
                settle(scope_id, scope, exc_val, swallowed=False, raised=exc)
            raise
        if hot is not None:
            settle(scope_id, scope, exc_val, swallowed=bool(result), raised=None)
        return result

    return aexit


def _same(scope: Any) -> Any:
    return scope
