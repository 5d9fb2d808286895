"""The slot through which an opt-in monitor explains cancellations to the backends.

The backends see *that* a task is being cancelled (asyncio: its wakeup is scheduled
with a cancelled future; trio: it ended with ``Cancelled``) and name a coarse cause
themselves. The cancel-scope monitor knows more (which scope, who asked, from which
line, why); it registers here, and the backends ask it through these two functions,
which cost one global read when no monitor is installed and never raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ._faults import internal_error

if TYPE_CHECKING:
    from types import FrameType

    from ._registry import TaskRecord


class CancelExplainer(Protocol):
    """What a monitor offers to explain cancellations (see `ScopeMonitor`)."""

    def note_cancel_request(self, record: TaskRecord, frame: FrameType | None) -> bool:
        """`frame` is requesting `record`'s cancellation: fill in the cause; True if known."""

    def note_task_cancelled(self, record: TaskRecord, task: Any) -> bool:
        """`task` ended cancelled: fill in the cause if it can be found; True if known."""


_explainer: CancelExplainer | None = None


def set_explainer(explainer: CancelExplainer | None) -> None:
    """Install (or, with None, remove) the monitor that explains cancellations."""
    global _explainer  # noqa: PLW0603  # one process-wide slot, like the hooks it serves
    _explainer = explainer


def explainer() -> CancelExplainer | None:
    """Return the installed explainer, if any."""
    return _explainer


def cancel_requested(record: TaskRecord, frame: FrameType | None) -> bool:
    """Backend hook: a task's cancellation is being delivered by the code at `frame`."""
    explain = _explainer
    if explain is None:
        return False
    try:
        return explain.note_cancel_request(record, frame)
    except Exception as exc:  # noqa: BLE001  # never raise into the backend
        internal_error("cancellation provenance: request", exc)
        return False


def task_cancelled(record: TaskRecord, task: Any) -> bool:
    """Backend hook: `task` ended cancelled; its record is about to be finished."""
    explain = _explainer
    if explain is None:
        return False
    try:
        return explain.note_task_cancelled(record, task)
    except Exception as exc:  # noqa: BLE001  # never raise into the backend
        internal_error("cancellation provenance: ended", exc)
        return False
