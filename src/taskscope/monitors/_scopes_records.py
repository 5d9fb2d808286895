"""Frozen records of the ``scopes`` report section (built on the slow path only).

`ScopeRef` lives in the core records (a task's cancellation names its scope).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from .._core._records import ScopeRef

if TYPE_CHECKING:
    from .._core._records import Location, TaskRef

__all__ = [
    "SCOPE_KINDS",
    "ScopeCancel",
    "ScopeErrorInfo",
    "ScopeInfo",
    "ScopeRef",
    "ScopeStatistics",
    "ScopesSection",
    "TaskCancellation",
    "TaskScopeStack",
]

#: Scope kinds, as reported. ``task`` is the scope AnyIO (4.14+) opens around every
#: task it spawns; ``internal`` one AnyIO opens for its own bookkeeping.
SCOPE_KINDS = (
    "cancel_scope",
    "move_on_after",
    "fail_after",
    "task_group",
    "task",
    "internal",
    "asyncio.timeout",
    "asyncio.TaskGroup",
)


@dataclass(frozen=True, slots=True)
class ScopeCancel:
    """A cancellation request made to a scope: who, from where, why."""

    #: ``cancel-call`` (``scope.cancel()``), ``timeout`` (its deadline expired),
    #: ``sibling-failure`` (a task of the group failed), ``task-group-error`` (the body
    #: of the group raised), ``outer-cancel`` (the task hosting the group was cancelled
    #: from outside), ``shutdown`` or ``keyboard-interrupt`` (trio).
    cause: str
    #: The task that requested it (for ``sibling-failure``: the task that failed).
    requested_by: TaskRef | None
    #: The user's line that requested it (for ``timeout``: where the scope was entered).
    location: Location | None
    #: The reason given to ``cancel(reason)``, when one was given.
    reason: str | None
    #: The exception type that triggered it (``sibling-failure``, ``task-group-error``).
    error: str | None
    #: Seconds since the session started.
    at: float


@dataclass(frozen=True, slots=True)
class ScopeInfo:
    """One scope: where and in which task it was entered, and what became of it."""

    id: int
    kind: str
    #: ``anyio-asyncio``, ``trio`` (trio and AnyIO on trio), ``asyncio-timeout`` or
    #: ``asyncio-taskgroup``.
    flavour: str
    #: The task that entered it.
    task: TaskRef | None
    entered_at: Location | None
    #: The frames at entry, innermost first (bounded; library frames included).
    stack: tuple[Location, ...]
    #: Seconds since the session started.
    entered: float
    exited: float | None
    #: The deadline relative to entry, in seconds, when it had one.
    timeout: float | None
    shield: bool
    #: ``active`` or ``exited``.
    state: str
    cancel: ScopeCancel | None
    #: True when the scope swallowed the cancellation it delivered.
    cancelled_caught: bool
    #: Exception type that left the scope, if any.
    exception: str | None


@dataclass(frozen=True, slots=True)
class TaskScopeStack:
    """The scopes a task is inside right now, outermost first."""

    task: TaskRef | None
    scopes: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class ScopeErrorInfo:
    """A scope exited in another task than it was entered in, or out of order."""

    #: ``cancel-scope-cross-task`` or ``cancel-scope-misnested``.
    kind: str
    scope: ScopeInfo
    #: The task exiting it, and where (innermost user frame), and the stack.
    exited_by: TaskRef | None
    exited_at: Location | None
    exited_stack: tuple[Location, ...]
    #: Who owned the scope, as far as the stacks tell: ``asyncgen_finalizer`` (an
    #: abandoned async generator closed by the event loop), ``asyncgen`` (an async
    #: generator resumed in another task), ``exit_stack``, ``asynccontextmanager``,
    #: ``context_manager`` or ``unknown``.
    owner: str
    #: A name that goes with the owner: the async generator's or context manager's
    #: qualified name.
    owner_name: str | None
    #: For misnesting: the scope that was innermost in the task at that moment.
    innermost: ScopeRef | None
    #: True when the library refused the exit and the scope is still active (AnyIO will
    #: keep delivering its cancellation: the 100% CPU spin after a swallowed error).
    still_active: bool
    #: The exception the library raised out of the exit, if any (never changed).
    raised: str | None
    #: Seconds since the session started.
    at: float


@dataclass(frozen=True, slots=True)
class ScopeStatistics:
    """Counts over every tracked scope (or one kind of scope)."""

    entered: int
    exited: int
    active: int
    #: Scopes asked to cancel while entered (``cancel()``, deadline, group failure).
    cancelled: int
    #: Scopes that swallowed their own cancellation (``move_on_after`` expiring, ...).
    cancelled_caught: int
    #: Scopes whose deadline expired while entered.
    timed_out: int
    #: Scopes left by an exception other than a cancellation.
    failed: int
    cross_task: int
    misnested: int
    #: ``cross_task + misnested``.
    errors: int
    #: ``errors / entered`` (0.0 when nothing was entered).
    error_rate: float


@dataclass(frozen=True, slots=True)
class TaskCancellation:
    """Why a task was cancelled, with the scope that delivered it."""

    task: TaskRef
    cause: str
    scope: ScopeRef | None
    requested_by: TaskRef | None
    location: Location | None
    reason: str | None
    error: str | None


@dataclass(frozen=True, slots=True)
class ScopesSection:
    """The ``scopes`` report section."""

    #: False when scope tracking could not be installed (see `unavailable_reason`).
    available: bool
    unavailable_reason: str | None
    #: The AnyIO version seen, if AnyIO is installed.
    anyio_version: str | None
    statistics: ScopeStatistics
    by_kind: dict[str, ScopeStatistics]
    #: Scopes entered and not exited, in order of entry (bounded).
    active: tuple[ScopeInfo, ...]
    #: Each task's scope stack (ids into `active`).
    task_stacks: tuple[TaskScopeStack, ...]
    errors: tuple[ScopeErrorInfo, ...]
    #: Recently exited scopes that were cancelled or failed (bounded).
    recent: tuple[ScopeInfo, ...]
    cancellations: tuple[TaskCancellation, ...]
    #: Records not kept because a bounded table was full.
    dropped: int = 0
