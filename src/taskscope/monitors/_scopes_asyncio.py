"""asyncio's own scopes: ``asyncio.timeout``/``timeout_at`` (``Timeout``) and
``asyncio.TaskGroup``, whose enter and exit are coroutines (``__aenter__``/``__aexit__``).

Neither class refuses an exit in another task, so the task and the order are checked
before the original exit runs. Their cancellations go through ``Timeout._on_timeout``
and ``TaskGroup._abort`` (see `_scopes_cancel`).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ._scopes_enter import make_entered
from ._scopes_errors import checked_exit

if TYPE_CHECKING:
    from collections.abc import Callable

    from ._scopes_state import ScopeState


def make_aenter(
    state: ScopeState, original: Callable[[Any], Any], flavour: str, current_task: Any
) -> Callable[[Any], Any]:
    """Wrap ``async def __aenter__(self)``."""
    entered = make_entered(state, flavour, current_task)
    getframe = sys._getframe

    async def aenter(scope: Any) -> Any:
        result = await original(scope)
        entered(scope, getframe(1))
        return result

    return aenter


def make_aexit(
    state: ScopeState, original: Callable[..., Any], current_task: Any
) -> Callable[..., Any]:
    """Wrap ``async def __aexit__(self, exc_type, exc_val, exc_tb)``."""
    active = state.active
    tops = state.tops
    settle = state.settle_exit
    getframe = sys._getframe

    async def aexit(scope: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:
        entry = active.get(id(scope))
        if entry is not None:
            try:
                key = id(current_task())
            except RuntimeError:  # a coroutine driven without a running loop
                key = 0
            if key != entry.task_key or tops.get(key) is not entry:
                entry = checked_exit(state, entry, scope, key, getframe(1))
        try:
            result = await original(scope, exc_type, exc_val, exc_tb)
        except BaseException as exc:
            if entry is not None:
                settle(entry, scope, exc_val, swallowed=False, raised=exc)
            raise
        if entry is not None:
            settle(entry, scope, exc_val, swallowed=bool(result), raised=None)
        return result

    return aexit
