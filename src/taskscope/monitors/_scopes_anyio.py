"""AnyIO's asyncio ``CancelScope``: the exit wrapper (its entry is `make_enter`).

AnyIO refuses a cross-task or misnested exit itself (it raises ``RuntimeError`` and
leaves the scope active), so the check runs only then: inside the exit, where the
stack is the exiting one, before the error reaches the program. A clean exit costs a
dict lookup before the original and three dict operations after it.
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

    from ._scopes_state import ScopeEntry, ScopeState


def make_exit(
    state: ScopeState, original: Callable[..., bool], current_task: Any
) -> Callable[..., bool]:
    """Wrap ``CancelScope.__exit__(exc_type, exc_val, exc_tb) -> bool``."""
    active = state.active
    settle = state.settle_exit
    exited_cleanly = state.exited_cleanly
    getframe = sys._getframe

    def exit_(scope: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
        entry = active.get(id(scope))
        try:
            result = original(scope, exc_type, exc_val, exc_tb)
        except BaseException as exc:
            if entry is not None:
                _refused(state, entry, scope, exc_val, exc, current_task, getframe(1))
            raise
        if entry is not None:
            try:
                if entry.ref() is scope:
                    if exc_val is None and entry.cancel is None:
                        exited_cleanly(entry, id(scope))
                    else:
                        settle(entry, scope, exc_val, swallowed=bool(result), raised=None)
            except Exception as exc:  # noqa: BLE001
                internal_error("scope monitor: exit", exc)
        return result

    return exit_


def _refused(  # noqa: PLR0917  # the exit's own arguments, passed through once
    state: ScopeState,
    entry: ScopeEntry,
    scope: Any,
    exc_val: BaseException | None,
    raised: BaseException,
    current_task: Any,
    frame: FrameType | None,
) -> None:
    """The original exit raised: explain it if AnyIO refused the exit (never raises)."""
    try:
        if entry.ref() is not scope:
            return
        if _compat_anyio.anyio_scope_active(scope):
            check_exit(state, entry, scope, id(current_task()), frame)
    except Exception as error:  # noqa: BLE001
        internal_error("scope monitor: exit", error)
        return
    state.settle_exit(entry, scope, exc_val, swallowed=False, raised=raised)
    if entry.problem is not None and state.exception_notes:
        add_note(state, raised, entry)
