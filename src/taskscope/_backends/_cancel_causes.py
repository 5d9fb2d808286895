"""Why an asyncio task is being cancelled, told from the code requesting it.

The asyncio backend sees a cancellation when the task's wakeup is scheduled with a
cancelled future; the stack at that moment leads to whoever asked. asyncio's own
requesters are recognised by their code objects (private names, so they live here):

* ``Timeout._on_timeout``, ``wait_for`` -> ``timeout``
* ``TaskGroup._on_task_done`` (a child failed) -> ``sibling-failure``
* ``TaskGroup.__aexit__``: ``task-group-error`` when the body raised an error,
  ``outer-cancel`` when the body was itself cancelled
* ``Runner._on_sigint`` (Ctrl-C under ``asyncio.run``) -> ``keyboard-interrupt``
* any AnyIO code -> ``cancel-scope`` (the scope monitor, when on, says which and why)
* anything else -> ``cancel-call`` (a ``Task.cancel()`` call)
"""

from __future__ import annotations

import asyncio
import asyncio.runners
import asyncio.tasks
import os
from typing import TYPE_CHECKING, Any, Final

from .._core._exceptions import is_cancellation
from ._compat import frame_locals

if TYPE_CHECKING:
    from collections.abc import Collection
    from types import FrameType

#: Frames walked from the wakeup towards the requester.
MAX_DEPTH: Final = 32
_ANYIO_DIR: Final = os.sep + "anyio" + os.sep


def _code_ids(pairs: list[tuple[Any, str]]) -> dict[int, str]:
    # Keyed by id(code): hashing a code object hashes its bytecode on every lookup.
    # The functions are module attributes of asyncio, alive as long as the process.
    return {
        id(code): cause
        for function, cause in pairs
        if (code := getattr(function, "__code__", None)) is not None
    }


def _known_codes() -> dict[int, str]:
    timeouts = getattr(asyncio, "timeouts", None)
    group = getattr(asyncio, "TaskGroup", None)
    runner = getattr(asyncio.runners, "Runner", None)
    return _code_ids(
        [
            (getattr(getattr(timeouts, "Timeout", None), "_on_timeout", None), "timeout"),
            (getattr(asyncio.tasks, "wait_for", None), "timeout"),
            (getattr(group, "_on_task_done", None), "sibling-failure"),
            (getattr(group, "__aexit__", None), "task-group-exit"),
            (getattr(runner, "_on_sigint", None), "keyboard-interrupt"),
        ]
    )


_CODES: Final = _known_codes()


def cancel_cause(frame: FrameType | None, stop_codes: Collection[Any]) -> str:
    """Return the cause of the cancellation requested by the code at `frame`.

    Args:
        frame: the innermost frame of the request (above the backend's own).
        stop_codes: the loop's dispatch codes: what lies beyond did not ask.
    """
    depth = 0
    while frame is not None and depth < MAX_DEPTH:
        code = frame.f_code
        if code in stop_codes:
            break
        cause = _CODES.get(id(code))
        if cause == "task-group-exit":
            return _group_exit_cause(frame)
        if cause is not None:
            return cause
        if _ANYIO_DIR in code.co_filename:
            return "cancel-scope"
        frame = frame.f_back
        depth += 1
    return "cancel-call"


#: The locals `group_exit_cause` reads (asyncio's and AnyIO's ``__aexit__``).
GROUP_EXIT_LOCALS: Final = ("ex", "exc_val", "et")


def _group_exit_cause(frame: FrameType) -> str:
    return group_exit_cause(frame_locals(frame, GROUP_EXIT_LOCALS))[0]


def group_exit_cause(f_locals: dict[str, Any]) -> tuple[str, str | None]:
    """Why a task group's exit (asyncio's or AnyIO's ``__aexit__``) cancels its
    children: ``task-group-error`` (with the error's type name) when its body raised,
    ``outer-cancel`` when the task running it was cancelled from outside."""
    waiting = f_locals.get("ex")  # asyncio: cancelled while waiting for the children
    if isinstance(waiting, asyncio.CancelledError):
        return "outer-cancel", None
    error = f_locals.get("exc_val")  # AnyIO: the exception itself
    if isinstance(error, BaseException):
        if is_cancellation(error):
            return "outer-cancel", None
        return "task-group-error", type(error).__qualname__
    exc_type = f_locals.get("et")  # asyncio: its type
    if isinstance(exc_type, type) and issubclass(exc_type, BaseException):
        if issubclass(exc_type, asyncio.CancelledError) or exc_type.__name__ == "Cancelled":
            return "outer-cancel", None
        return "task-group-error", exc_type.__qualname__
    return "outer-cancel", None


def cancel_was_called(task: Any) -> bool:
    """Return True when ``cancel()`` was called on a finished, cancelled task (its
    ``cancelling()`` count; 0 when its coroutine raised ``CancelledError`` itself)."""
    cancelling = getattr(task, "cancelling", None)
    try:
        return bool(cancelling()) if cancelling is not None else True
    except Exception:  # noqa: BLE001  # a task class of a third party
        return True
