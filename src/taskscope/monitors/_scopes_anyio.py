"""AnyIO's asyncio ``CancelScope``: the exit wrapper (its entry is `make_enter`).

AnyIO refuses a cross-task or misnested exit itself (it raises ``RuntimeError`` and
leaves the scope active), so the check runs only then: inside the exit, where the
stack is the exiting one, before the error reaches the program. A clean exit costs one
dict lookup and a ``pop``.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from .._backends import _compat_anyio
from .._core._faults import internal_error
from ._scopes_errors import add_note, check_exit

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType

    from ._scopes_state import ScopeState


def make_exit(
    state: ScopeState, original: Callable[..., bool], current_task: Any
) -> Callable[..., bool]:
    """Wrap ``CancelScope.__exit__(exc_type, exc_val, exc_tb) -> bool``."""
    active = state.active
    details = state.details
    settle = state.settle_exit
    getframe = sys._getframe

    def exit_(scope: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        try:
            result = original(scope, exc_type, exc_val, exc_tb)
        except BaseException as exc:
            if id(scope) in active:
                _refused(state, scope, exc_val, exc, current_task, getframe(1))
            raise
        scope_id = id(scope)
        if exc_val is None and scope_id not in details:
            active.pop(scope_id, None)  # the common case: a clean exit (or untracked)
        elif scope_id in active:
            settle(scope_id, scope, exc_val, swallowed=bool(result), raised=None)
        return result

    return exit_


def _refused(  # noqa: PLR0917  # the exit's own arguments, passed through once
    state: ScopeState,
    scope: Any,
    exc_val: BaseException | None,
    raised: BaseException,
    current_task: Any,
    frame: FrameType | None,
) -> None:
    """The original exit raised: explain it if AnyIO refused the exit (never raises)."""
    try:
        entry = state.entry_of(scope)
        if entry is None:
            return
        if _compat_anyio.anyio_scope_active(scope):
            check_exit(state, entry, scope, id(current_task()), frame)
    except Exception as error:  # noqa: BLE001
        internal_error("scope monitor: exit", error)
        return
    state.settle_exit(id(scope), scope, exc_val, swallowed=False, raised=raised)
    if entry.problem is not None and state.exception_notes:
        add_note(state, raised, entry)
