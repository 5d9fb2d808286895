"""The registry: live tasks individually, finished ones in a bounded history plus
aggregates per creation site, so that ten million tasks fit in constant memory.

Hot-path rules (DESIGN.md, principle 2): everything a backend calls per task or per
step is O(1), allocates little, and takes no lock. Dict and deque operations are atomic
under the GIL, which is all the thread safety the snapshot (taken from another thread)
needs: a snapshot may be a step behind, never corrupt.
"""

from __future__ import annotations

import itertools
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType

    from ._clock import Clock
    from ._location import LocationFilter, RawLocation
    from ._records import TaskState

# Task states as small ints on the hot path; names only when reported.
PENDING: Final = 0
COMPLETED: Final = 1
FAILED: Final = 2
CANCELLED: Final = 3
STATE_NAMES: Final[tuple[TaskState, ...]] = ("pending", "completed", "failed", "cancelled")

#: Creation sites aggregated individually; past this, new sites share one bucket.
DEFAULT_MAX_SITES: Final = 10_000
#: Records with a finding kept beyond the history (a forgotten task that failed early
#: must still be reported at the end), up to this many.
MAX_NOTABLE: Final = 1_000


class _TaskRef(weakref.ref[Any]):
    """A weak reference to a task that remembers the task's registry key."""

    __slots__ = ("key",)
    key: int

    def __new__(cls, task: Any, callback: Callable[[Any], None], key: int) -> _TaskRef:
        self = super().__new__(cls, task, callback)
        self.key = key
        return self

    def __init__(self, task: Any, callback: Callable[[Any], None], key: int) -> None:
        # weakref.ref.__init__ takes (object, callback); the key was set in __new__.
        super().__init__(task, callback)  # type: ignore[call-arg]


class SiteAggregate:
    """Running totals for the tasks created at one place (mutable, internal)."""

    __slots__ = (
        "alive",
        "busy",
        "cancelled",
        "code",
        "completed",
        "created",
        "failed",
        "longest_step",
        "raw",
        "wall",
    )

    def __init__(self, raw: RawLocation | None, code: CodeType | None) -> None:
        self.raw = raw
        self.code = code
        self.created = 0
        self.completed = 0
        self.failed = 0
        self.cancelled = 0
        self.alive = 0
        self.busy = 0.0
        self.wall = 0.0
        self.longest_step = 0.0


class TaskRecord:
    """What taskscope knows about one task while it lives (mutable, internal).

    Backends write the fields; `Session.snapshot` turns them into frozen `TaskInfo`.
    """

    __slots__ = (
        "adopted",
        "annotations",
        "backend",
        "busy",
        "cancel_cause",
        "cancel_location",
        "cancel_message",
        "cancel_requester",
        "code",
        "coroutine",
        "created",
        "created_at",
        "created_at_is_definition",
        "destroyed_pending",
        "ended",
        "exception",
        "exception_id",
        "exception_retrieved",
        "first_step",
        "id",
        "longest_step",
        "longest_step_at",
        "name",
        "name_of",
        "owner_key",
        "parent_id",
        "pending_at_exit",
        "ref",
        "site",
        "state",
        "step_start",
        "steps",
    )

    def __init__(
        self,
        record_id: int,
        backend: str,
        created: float,
        name_of: Callable[[Any], str],
    ) -> None:
        self.id = record_id
        self.backend = backend
        self.created = created
        self.name_of = name_of
        self.name = ""
        self.coroutine = ""
        self.code: CodeType | None = None
        self.created_at: RawLocation | None = None
        self.created_at_is_definition = False
        self.parent_id: int | None = None
        self.ref: weakref.ref[Any] | None = None
        self.owner_key = 0
        self.site: SiteAggregate | None = None
        self.state = PENDING
        self.first_step: float | None = None
        self.step_start = 0.0
        self.ended: float | None = None
        self.busy = 0.0
        self.steps = 0
        self.longest_step = 0.0
        self.longest_step_at: RawLocation | None = None
        # Exception as (type name, message, frames outermost first), extracted at finish
        # so the record never keeps a traceback (and its frames) alive.
        self.exception: tuple[str, str, list[RawLocation]] | None = None
        self.exception_id = 0
        self.exception_retrieved: bool | None = None
        self.cancel_cause: str | None = None
        self.cancel_requester: tuple[int, str] | None = None
        self.cancel_location: RawLocation | None = None
        self.cancel_message: str | None = None
        self.pending_at_exit = False
        self.destroyed_pending = False
        self.adopted = False
        self.annotations: dict[str, Any] | None = None

    def task(self) -> Any:
        """Return the task object while it is alive, else None."""
        ref = self.ref
        return ref() if ref is not None else None

    def current_name(self) -> str:
        """Return the task's name now (alive) or at the time it finished."""
        task = self.task()
        if task is not None:
            try:
                self.name = self.name_of(task)
            except Exception:  # noqa: BLE001, S110  # a broken name never breaks a snapshot
                pass
        return self.name


class RegionAggregate:
    """Running totals for one ``tracked_scope`` name (mutable, internal)."""

    __slots__ = ("active", "cancelled", "count", "errors", "last_error", "max", "raw", "total")

    def __init__(self, raw: RawLocation | None) -> None:
        self.raw = raw
        self.count = 0
        self.errors = 0
        self.cancelled = 0
        self.active = 0
        self.total = 0.0
        self.max = 0.0
        self.last_error: str | None = None


class Registry:
    """Live task records, a bounded history of finished ones, and per-site aggregates."""

    def __init__(
        self,
        *,
        clock: Clock,
        history_size: int,
        locations: LocationFilter,
        max_sites: int = DEFAULT_MAX_SITES,
    ) -> None:
        self.clock = clock
        self.locations = locations
        self.started = clock()
        #: Live records by ``id()`` of their task object. Tasks are held weakly (by the
        #: record's ``ref``), exactly as the event loop holds them, so taskscope never
        #: keeps a forgotten task alive and can see it being destroyed.
        self.live: dict[int, TaskRecord] = {}
        self.history: deque[TaskRecord] = deque(maxlen=history_size)
        self.sites: dict[RawLocation | None, SiteAggregate] = {}
        self.max_sites = max_sites
        self.regions: dict[str, RegionAggregate] = {}
        #: Records that carry a finding, kept even after they leave the history.
        self.notable: deque[TaskRecord] = deque(maxlen=MAX_NOTABLE)
        #: Failed tasks whose exception may still be retrieved, or logged as never
        #: retrieved, by ``id()`` of the task.
        self.failed_watch: dict[int, TaskRecord] = {}
        self._ids = itertools.count(1)
        self.created = 0
        self.finished = 0
        self.sites_dropped = 0

    # -- creation -------------------------------------------------------------------

    def new_record(
        self,
        task: Any,
        *,
        backend: str,
        name_of: Callable[[Any], str],
        created_at: RawLocation | None,
        code: CodeType | None,
        coroutine: str,
        parent_id: int | None,
    ) -> TaskRecord:
        """Create and register the record of a new live task (hot path)."""
        record = TaskRecord(next(self._ids), backend, self.clock(), name_of)
        record.code = code
        record.coroutine = coroutine
        record.parent_id = parent_id
        if created_at is None and code is not None:
            created_at = (code, code.co_firstlineno)
            record.created_at_is_definition = True
        record.created_at = created_at
        key = id(task)
        record.owner_key = key
        record.ref = _TaskRef(task, self._gone, key)
        site = self.sites.get(created_at)
        if site is None:
            site = self._new_site(created_at, code)
        site.created += 1
        site.alive += 1
        record.site = site
        self.live[key] = record
        self.created += 1
        return record

    def _new_site(self, raw: RawLocation | None, code: CodeType | None) -> SiteAggregate:
        if len(self.sites) >= self.max_sites:
            self.sites_dropped += 1
            site = self.sites.get(None)
            if site is None:
                site = self.sites[None] = SiteAggregate(None, None)
            return site
        site = self.sites[raw] = SiteAggregate(raw, code)
        return site

    def _gone(self, ref: weakref.ref[Any]) -> None:
        # One bound method serves every task; the key rides on the weakref itself, so
        # no closure is allocated per task.
        self.task_gone(ref.key)  # type: ignore[attr-defined]  # always a _TaskRef

    # -- steps and endings ----------------------------------------------------------

    def step_done(self, record: TaskRecord, start: float, end: float) -> bool:
        """Account one step; return True when it is the task's longest so far."""
        duration = end - start
        record.busy += duration
        record.steps += 1
        if record.first_step is None:
            record.first_step = start
        if duration > record.longest_step:
            record.longest_step = duration
            return True
        return False

    def task_finished(self, record: TaskRecord, state: int, task: Any) -> None:
        """Move a record from live to history and fold it into its site (slow-ish path)."""
        if record.state != PENDING:
            return
        record.state = state
        record.ended = self.clock()
        try:
            record.name = record.name_of(task)
        except Exception:  # noqa: BLE001, S110  # keep the last known name
            pass
        self.live.pop(record.owner_key, None)
        if state == FAILED:
            # Keep watching until the exception is retrieved or logged as never retrieved.
            self.failed_watch[record.owner_key] = record
        else:
            record.ref = None  # drop the weakref: no callback for a finished task
        site = record.site
        if site is not None:
            site.alive -= 1
            if state == COMPLETED:
                site.completed += 1
            elif state == FAILED:
                site.failed += 1
            else:
                site.cancelled += 1
            site.busy += record.busy
            site.wall += record.ended - record.created
            site.longest_step = max(site.longest_step, record.longest_step)
        self.history.append(record)
        self.finished += 1

    def task_gone(self, key: int) -> None:
        """A task object was garbage-collected (weakref callback)."""
        record = self.live.pop(key, None)
        if record is not None:
            # Destroyed while pending: the event loop dropped it (no strong reference).
            record.destroyed_pending = True
            record.ended = self.clock()
            self.notable.append(record)
            site = record.site
            if site is not None:
                site.alive -= 1
            self.history.append(record)
            self.finished += 1
            return
        record = self.failed_watch.get(key)
        if record is not None and record.exception_retrieved is None:
            # A failed task is gone. If it never handed out its exception, its
            # finaliser reports that through the loop's exception handler, which runs
            # before or (for cyclic garbage) after this callback; `exception_logged`
            # settles it either way, and `settle_failed` treats silence as retrieved.
            record.ref = None

    def exception_logged(self, key: int, exception_id: int) -> bool:
        """The loop reported a task's exception as never retrieved; True if it is ours."""
        record = self.failed_watch.pop(key, None)
        if record is None or record.exception_id != exception_id:
            return False
        record.exception_retrieved = False
        self.notable.append(record)
        return True

    def settle_failed(self, is_unretrieved: Callable[[Any], bool], *, final: bool) -> None:
        """Decide retrieval for every watched failed task.

        Mid-run, a failed task that is alive and unretrieved may still be awaited, so it
        stays undecided; at the end (`final`), it is a finding.
        """
        for key, record in list(self.failed_watch.items()):
            if record.exception_retrieved is not None:
                self.failed_watch.pop(key, None)
                continue
            task = record.task()
            if task is None:
                # Gone without a "never retrieved" report: it was retrieved.
                record.exception_retrieved = True
                self.failed_watch.pop(key, None)
            elif not is_unretrieved(task):
                record.exception_retrieved = True
                record.ref = None
                self.failed_watch.pop(key, None)
            elif final:
                record.exception_retrieved = False
                self.notable.append(record)
                self.failed_watch.pop(key, None)

    def mark_pending_at_exit(self, record: TaskRecord) -> None:
        """The task was still pending when its loop or the program ended."""
        if not record.pending_at_exit:
            record.pending_at_exit = True
            self.notable.append(record)

    # -- regions (tracked_scope) ------------------------------------------------------

    def region(self, name: str, raw: RawLocation | None) -> RegionAggregate:
        """Return the aggregate for region `name`, creating it on first use."""
        region = self.regions.get(name)
        if region is None:
            region = self.regions[name] = RegionAggregate(raw)
        return region

    # -- reading --------------------------------------------------------------------

    def elapsed(self, t: float) -> float:
        """Convert a clock reading to seconds since the session started."""
        return t - self.started

    def innermost_user(self, frames: list[RawLocation]) -> RawLocation | None:
        """Return the innermost user frame of `frames` (outermost first)."""
        return self.locations.innermost_user(frames)

    def find(self, task: Any) -> TaskRecord | None:
        """Return the live record of `task`, if it is tracked."""
        return self.live.get(id(task))

    @property
    def history_dropped(self) -> int:
        """How many finished records fell out of the bounded history."""
        return max(0, self.finished - len(self.history))
