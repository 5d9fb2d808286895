"""Frozen records: what taskscope reports. Built on the slow path, never per step."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

#: A task's state. ``pending`` has not run its first step yet (or is waiting),
#: ``running`` is inside a step right now.
TaskState = Literal["pending", "running", "completed", "failed", "cancelled"]

#: How bad a finding is; a clean program has no ``error`` and no ``warning``.
Severity = Literal["error", "warning", "info"]


@dataclass(frozen=True, slots=True)
class Location:
    """A place in source code."""

    #: Absolute path of the source file (as the interpreter knows it).
    file: str
    #: 1-based line number.
    line: int
    #: Qualified name of the function (``Class.method``, ``<module>``).
    function: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} in {self.function}"


@dataclass(frozen=True, slots=True)
class TaskRef:
    """A reference to a task by taskscope id and name."""

    #: taskscope's id for the task: unique within a session, assigned in creation order.
    id: int
    #: The task's name at the time the reference was made.
    name: str


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """One real error inside an exception group."""

    #: Qualified name of the exception type, e.g. ``ValueError``.
    type: str
    #: ``str()`` of the exception.
    message: str
    #: The innermost frame of its traceback in the user's code, when there is one.
    location: Location | None


@dataclass(frozen=True, slots=True)
class ExceptionInfo:
    """An exception that ended a task."""

    #: Qualified name of the exception type, e.g. ``ValueError``.
    type: str
    #: ``str()`` of the exception.
    message: str
    #: The traceback, outermost first.
    frames: tuple[Location, ...]
    #: The innermost frame in the user's code, when there is one.
    location: Location | None
    #: For an exception group (a task group that failed): the errors in it that are
    #: not cancellations, in order, with their own locations. Empty otherwise.
    real_errors: tuple[ErrorInfo, ...] = ()
    #: For an exception group: how many of its leaves are cancellations (siblings the
    #: failure cancelled).
    cancelled: int = 0


@dataclass(frozen=True, slots=True)
class ScopeRef:
    """A reference to a cancel scope, task group or timeout (see the ``scopes`` section)."""

    #: taskscope's id for the scope, unique within a session, given when it is first
    #: reported.
    id: int
    #: ``cancel_scope``, ``move_on_after``, ``fail_after``, ``task_group``, ``task``,
    #: ``internal``, ``asyncio.timeout`` or ``asyncio.TaskGroup``.
    kind: str
    #: Where it was entered: the innermost user frame.
    entered_at: Location | None


#: Why a task was cancelled. ``cancel-call``: someone called ``cancel()`` (on the task,
#: or on its scope); ``cancel-scope``: an AnyIO/trio scope delivered it (the scope
#: monitor, when on, names the cause instead); ``timeout``: a deadline expired;
#: ``sibling-failure``: another task of its group failed; ``task-group-error``: the
#: body of its group raised; ``outer-cancel``: the task running its group was
#: cancelled from outside; ``shutdown``: the runner cancelled what was left at the end;
#: ``keyboard-interrupt``: Ctrl-C; ``unknown``.
CANCEL_CAUSES = (
    "cancel-call",
    "cancel-scope",
    "timeout",
    "sibling-failure",
    "task-group-error",
    "outer-cancel",
    "shutdown",
    "keyboard-interrupt",
    "unknown",
)


@dataclass(frozen=True, slots=True)
class CancellationInfo:
    """Why a task was cancelled, as far as taskscope saw."""

    #: One of `CANCEL_CAUSES`.
    cause: str
    #: The task that requested the cancellation, when it came from a task (for
    #: ``sibling-failure``: the task that failed).
    requested_by: TaskRef | None
    #: The user's line that requested it, when known (for a deadline or a group's
    #: failure: where the scope was entered).
    location: Location | None
    #: The message passed to ``cancel(msg)`` (or a scope's ``cancel(reason)``), when
    #: one was given.
    message: str | None
    #: The scope that delivered it, when the scope monitor saw it.
    scope: ScopeRef | None = None


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """Everything taskscope knows about one task.

    Times are seconds since the session started; durations are seconds.
    """

    #: taskscope's id for the task (unique within a session).
    id: int
    #: The task's name.
    name: str
    #: Qualified name of the task's coroutine function.
    coroutine: str
    #: ``asyncio`` or ``trio``.
    backend: str
    #: Where the task was created: the innermost user frame of the creating call.
    created_at: Location | None
    #: True when no user frame was on the stack and ``created_at`` is where the
    #: coroutine function is defined instead.
    created_at_is_definition: bool
    #: The id of the task that was running when this one was created.
    parent_id: int | None
    #: See `TaskState`.
    state: TaskState
    #: When the task was created (or first seen, for tasks that existed before taskscope).
    created: float
    #: When its first step started; None if it never ran.
    first_step: float | None
    #: When it finished; None while it is alive.
    ended: float | None
    #: Total time spent running the task's steps.
    busy: float
    #: Time ready to run but waiting for the loop (from being woken, or rescheduling
    #: itself, to its step starting): the loop's lag as this task felt it.
    scheduled: float
    #: Time alive, neither running nor ready: waiting for I/O, time or another task
    #: (``wall - busy - scheduled``).
    idle: float
    #: Number of steps (resumptions of the coroutine).
    steps: int
    #: The longest single step.
    longest_step: float
    #: Where the task was suspended after its longest step ended (the ``await`` after the
    #: slow code), when known.
    longest_step_at: Location | None
    #: The exception that ended the task, if it failed.
    exception: ExceptionInfo | None
    #: Whether the task's exception was retrieved (awaited, ``result()``, ``exception()``)
    #: before the task was destroyed or the program ended; None when it did not fail or
    #: it is not known yet.
    exception_retrieved: bool | None
    #: Why the task was cancelled, if it was.
    cancellation: CancellationInfo | None
    #: True when the task was still pending when its event loop's main coroutine
    #: returned, at loop close, or when the session ended.
    pending_at_exit: bool
    #: True when the task was garbage-collected while still pending.
    destroyed_pending: bool
    #: True when taskscope found the task already existing (created before install).
    adopted: bool
    #: True for a library's own task: no user frame created it and its coroutine is
    #: library code (asyncio's runner shutdown tasks, AnyIO's test runner). Warnings
    #: are not raised against such tasks, since the user cannot act on them.
    internal: bool
    #: Annotations given through ``tracked_task``.
    annotations: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SiteStatistics:
    """Aggregates over every task created at one place, including forgotten ones."""

    #: The creation site (as `TaskInfo.created_at`).
    location: Location | None
    #: Qualified name of the (first seen) coroutine function created there.
    coroutine: str
    created: int
    completed: int
    failed: int
    cancelled: int
    #: Tasks from this site still alive.
    alive: int
    #: Total busy time of the finished tasks.
    busy: float
    #: Total lifetime of the finished tasks.
    wall: float
    #: The longest step any finished task from this site took.
    longest_step: float


@dataclass(frozen=True, slots=True)
class RegionInfo:
    """Aggregates for one ``tracked_scope`` name."""

    #: The name given to ``tracked_scope``.
    name: str
    #: Where the region was first entered.
    location: Location | None
    count: int
    #: Exits by exception (not counting cancellation).
    errors: int
    cancelled: int
    #: Exits still in progress.
    active: int
    total: float
    max: float
    #: The most recent exception type raised out of the region, if any.
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Finding:
    """A problem taskscope found, pointing at the user's code."""

    #: Stable kind, e.g. ``task-exception-unretrieved`` (see the docs for the list).
    kind: str
    severity: Severity
    #: One sentence saying what happened.
    message: str
    #: The user's line the finding is about (see each kind for which line).
    location: Location | None
    #: The task involved, if any.
    task: TaskRef | None
    #: Kind-specific data; extra locations use the same shape as `location`.
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Counters:
    """How much was seen and how much had to be dropped to stay bounded."""

    tasks_created: int
    tasks_finished: int
    tasks_alive: int
    #: Finished tasks no longer in the retained history (still in the site aggregates).
    history_dropped: int
    #: Creation sites not aggregated individually because the site table was full.
    sites_dropped: int
    #: Internal taskscope failures, by place (each disabled where possible).
    internal_errors: dict[str, int]


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A consistent picture of everything taskscope tracks, at one moment."""

    #: Seconds since the session started.
    elapsed: float
    #: Unix time when the session started.
    started_at: float
    #: Live tasks first, then retained finished ones, each by id.
    tasks: tuple[TaskInfo, ...]
    sites: tuple[SiteStatistics, ...]
    regions: tuple[RegionInfo, ...]
    counters: Counters
