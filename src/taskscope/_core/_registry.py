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

from ._accel import RecordCore, SiteCore, speedups
from ._faults import internal_error

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
#: How deep an await chain is followed (coroutines awaiting coroutines).
MAX_AWAIT_DEPTH: Final = 64


#: Site keys pack a code object's address and a line into one int (`site_key_of`).
_ADDRESS_SPAN: Final = 1 << 48
_LINE_SHIFT: Final = 48
_LINE_SPAN: Final = 1 << 15


def site_key_of(raw: RawLocation) -> int | tuple[int, int]:
    """Key a creation site by its code object's id and line, as an int when it can be.

    ``id(code) | line << 48`` is unique while addresses stay below 2**48 (every 64-bit
    platform CPython runs on) and lines below 2**15; a tuple is used beyond. The C
    recorder (``_speedups.c: site_key``) computes the same key. The site aggregate keeps
    its code object alive, so the id stays its own.
    """
    code, line = raw
    address = id(code)
    if 0 < line < _LINE_SPAN and address < _ADDRESS_SPAN:
        return address | line << _LINE_SHIFT
    return (address, line)


class SiteAggregate(SiteCore):
    """Running totals for the tasks created at one place (mutable, internal).

    Every record belongs to one (unknown sites and overflow share the one keyed 0), so
    the registry's task counts are sums over the sites. The fields live in `SiteCore`
    (a C struct when the accelerator is built).
    """

    __slots__ = ()

    raw: RawLocation | None
    code: CodeType | None
    created: int
    completed: int
    failed: int
    cancelled: int
    alive: int
    busy: float
    wall: float
    longest_step: float

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


class TaskRecord(RecordCore):
    """What taskscope knows about one task while it lives (mutable, internal).

    Backends write the fields; `Session.snapshot` turns them into frozen `TaskInfo`.
    Each backend subclasses it to set `backend` and `name_of` as class constants, so a
    record (made once per task, on the loop) costs one call and slot stores.
    """

    # Hot fields, written for every task or on every step, live in `RecordCore` (a C
    # struct when the accelerator is built, so the C recorder sets them by offset).
    # Cold fields, set only for tasks that fail, are cancelled, leak or are annotated,
    # are class defaults: an instance grows a __dict__ only when one of them is set.
    __slots__ = ("__dict__",)

    id: int
    created: float
    code: CodeType | None
    created_at: RawLocation | None
    parent_id: int | None
    owner_key: int
    ref: weakref.KeyedRef[Any, Any] | None
    site: SiteAggregate | None
    name: str
    longest_step_at: RawLocation | None
    state: int
    ended: float | None

    #: ``asyncio`` or ``trio`` (a class constant of each backend's subclass).
    backend: str = ""
    #: True when no user frame created the task and `created_at` is the coroutine's
    #: definition instead.
    created_at_is_definition: bool = False
    #: The coroutine's qualified name when it differs from ``code.co_qualname``.
    coroutine_override: str | None = None
    #: (type name, message, frames outermost first), extracted at finish so the record
    #: never keeps a traceback (and its frames) alive.
    exception: tuple[str, str, list[RawLocation]] | None = None
    exception_id: int = 0
    #: For an exception group: its real errors (described like `exception`) and how
    #: many of its leaves were cancellations.
    exception_group: tuple[list[tuple[str, str, list[RawLocation]]], int] | None = None
    exception_retrieved: bool | None = None
    cancel_cause: str | None
    cancel_requester: tuple[int, str] | None = None
    cancel_location: RawLocation | None = None
    cancel_message: str | None = None
    #: The scope that delivered the cancellation: (scope id, kind, where entered).
    cancel_scope: tuple[int, str, RawLocation | None] | None = None
    pending_at_exit: bool = False
    destroyed_pending: bool = False
    adopted: bool = False
    #: Created by library code only, running library code (asyncio's, AnyIO's own).
    internal: bool = False
    annotations: dict[str, Any] | None = None

    def __init__(  # noqa: PLR0917  # positional on purpose: called once per task
        self,
        record_id: int,
        created: float,
        code: CodeType | None,
        created_at: RawLocation | None,
        parent_id: int | None,
        owner_key: int,
        ref: weakref.KeyedRef[Any, Any] | None,
        site: SiteAggregate | None,
    ) -> None:
        self.id = record_id
        self.created = created
        self.code = code
        #: Innermost user frame of the creating call (or the coroutine's definition).
        self.created_at = created_at
        self.parent_id = parent_id
        #: The registry key: ``id()`` of the task object.
        self.owner_key = owner_key
        #: Weak reference to the task; None once finished (failed tasks keep it until
        #: the retrieval of their exception is settled).
        self.ref = ref
        self.site = site
        self.name = ""
        #: Where the task was suspended after its longest step. In `RecordCore`, not a
        #: class default: almost every task that waits sets it, and an instance
        #: __dict__ costs 72-300 B (more when instances set cold fields in different
        #: orders).
        self.longest_step_at = None
        self.state = PENDING
        self.first_step = None
        #: Clock reading when the current step began; 0.0 between steps.
        self.step_start = 0.0
        #: Clock reading when the task was last made ready to run; 0.0 once it runs.
        self.scheduled_at = 0.0
        #: Total time spent ready but waiting for the loop to run it.
        self.scheduled = 0.0
        self.ended = None
        #: Why it was cancelled, once known ("cancel-call", "timeout", ...). In
        #: `RecordCore` because the call_soon wrapper reads it at every wakeup.
        self.cancel_cause = None
        self.busy = 0.0
        self.steps = 0
        #: `steps` when the task was last woken by something it waited for (a future:
        #: I/O, a timer, another task); steps since then were self-rescheduled (set by
        #: backends that can tell; the loop monitor reads it to find spinning tasks).
        self.waited_at = 0
        self.longest_step = 0.0

    @staticmethod
    def name_of(task: Any) -> str:
        """Read the task's current name (each backend's subclass overrides this)."""
        return str(getattr(task, "name", ""))

    @property
    def coroutine(self) -> str:
        """Qualified name of the task's coroutine function."""
        if self.coroutine_override is not None:
            return self.coroutine_override
        return self.code.co_qualname if self.code is not None else ""

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
        #: Aggregates by creation site (`site_key_of`; 0: unknown site or overflow).
        self.sites: dict[int | tuple[int, int], SiteAggregate] = {}
        #: One bound method for every task's weakref, which carries the task's key
        #: (`weakref.KeyedRef`; `_speedups.TaskRef` in C). (It, `live`, `sites`,
        #: `history` and `ids` are shared with the C record maker and filer, which write
        #: them too: never rebind them.)
        self.gone_callback = self._gone
        self.max_sites = max_sites
        self.regions: dict[str, RegionAggregate] = {}
        #: Records that carry a finding, kept even after they leave the history.
        self.notable: deque[TaskRecord] = deque(maxlen=MAX_NOTABLE)
        #: Failed tasks whose exception may still be retrieved, or logged as never
        #: retrieved, by ``id()`` of the task.
        self.failed_watch: dict[int, TaskRecord] = {}
        #: Record ids, 1, 2, ...
        self.ids = itertools.count(1)
        self.sites_dropped = 0
        #: Create and register the record of a new live task (hot path; `_new_record`
        #: documents it). With the accelerator, a task at a known site is filed by C
        #: (`_speedups.RecordMaker`), everything else by `_new_record`.
        self.new_record: Callable[
            [Any, type[TaskRecord], RawLocation | None, CodeType | None, int | None],
            TaskRecord,
        ] = self._new_record
        if speedups is not None:
            self.new_record = speedups.RecordMaker(
                self._new_record,
                self.live,
                self.sites,
                self.ids,
                self.gone_callback,
                self.clock,
            )
        #: Move a record from live to history (`_task_finished` documents it). With the
        #: accelerator, a completed task is filed by C (`_speedups.RecordFiler`).
        self.task_finished: Callable[..., None] = self._task_finished
        if speedups is not None:
            self.task_finished = speedups.RecordFiler(
                self._task_finished, self.live, self.history, self.clock
            )
        #: Take a record out of the cyclic GC and put it back (C only; plain Python
        #: cannot). A live record is untracked (the live table holds it, and nothing in
        #: it leads back to it), and so is a completed one; one that ends otherwise is
        #: tracked again (see `_task_finished`).
        self._untrack: Callable[[TaskRecord], None] | None = (
            speedups.untrack if speedups is not None else None
        )
        self._track: Callable[[TaskRecord], None] | None = (
            speedups.track if speedups is not None else None
        )

    # -- creation -------------------------------------------------------------------

    def _new_record(
        self,
        task: Any,
        record_class: type[TaskRecord],
        created_at: RawLocation | None,
        code: CodeType | None,
        parent_id: int | None,
    ) -> TaskRecord:
        """Create and register the record of a new live task (hot path).

        `created_at` is the innermost user frame of the creating call, or None when
        there was none (then the coroutine's definition stands in for it).
        """
        is_definition = internal = False
        site_key: int | tuple[int, int]
        if created_at is None:
            site_key = 0
            if code is not None:
                created_at = (code, code.co_firstlineno)
                is_definition = True
                internal = self.locations.is_library(code)
        else:
            site_key = site_key_of(created_at)
        site = self.sites.get(site_key)
        if site is None:
            site = self._new_site(site_key, created_at, code)
        elif site_key != 0 and site.raw is not None:
            # Share the site's tuple: one fewer object per task for the cyclic GC. (Not
            # in the shared bucket 0, whose tasks were created at different places.)
            created_at = site.raw
        site.created += 1
        site.alive += 1
        key = id(task)
        ref = weakref.KeyedRef(task, self.gone_callback, key)
        record = record_class(
            next(self.ids), self.clock(), code, created_at, parent_id, key, ref, site
        )
        if is_definition:
            record.created_at_is_definition = True
            if internal:
                record.internal = True
        self.live[key] = record
        if self._untrack is not None:
            self._untrack(record)  # as the C RecordMaker does
        return record

    def _new_site(
        self, key: int | tuple[int, int], raw: RawLocation | None, code: CodeType | None
    ) -> SiteAggregate:
        if key != 0 and len(self.sites) >= self.max_sites:
            self.sites_dropped += 1
            key = 0
            raw = None
        site = self.sites.get(key)
        if site is None:
            # The site keeps its code object alive, so the id() in its key stays unique.
            site = self.sites[key] = SiteAggregate(raw, code)
        return site

    def _gone(self, ref: weakref.KeyedRef[Any, Any]) -> None:
        # One bound method serves every task's weakref; no closure per task. The key is
        # None once the registry stopped watching the task (`drop_ref`).
        try:
            key = ref.key
            if key is not None:
                ref.key = None
                self.task_gone(key)
        except Exception as exc:  # noqa: BLE001  # else "Exception ignored in" on stderr
            internal_error("registry: task collected", exc)

    def drop_ref(self, record: TaskRecord) -> None:
        """Stop watching a record's task for collection."""
        ref = record.ref
        if ref is not None:
            ref.key = None
            record.ref = None

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

    def _task_finished(
        self, record: TaskRecord, state: int, task: Any, ended: float | None = None
    ) -> None:
        """Move a record from live to history and fold it into its site.

        `ended` is a clock reading the caller already has (the end of the last step),
        saving a second read per task.
        """
        if record.state != PENDING:
            return
        record.state = state
        record.ended = self.clock() if ended is None else ended
        try:
            record.name = record.name_of(task)
        except Exception:  # noqa: BLE001, S110  # keep the last known name
            pass
        self.live.pop(record.owner_key, None)
        if state == FAILED and record.exception_retrieved is None:
            # Keep watching until the exception is retrieved or logged as never retrieved.
            self.failed_watch[record.owner_key] = record
        else:
            # No weakref callback for a finished task (drop_ref, inlined: once per task).
            ref = record.ref
            if ref is not None:
                ref.key = None
                record.ref = None
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
        if state != COMPLETED and self._track is not None:
            # A failed record may keep its weakref (failed_watch), whose callback leads
            # back to the registry: let the collector see that cycle. Nothing in a
            # completed record leads back to it (no task, no weakref, no exception), so
            # it stays out: the collector need not scan the history (as the C finisher).
            self._track(record)

    def task_gone(self, key: int) -> None:
        """A task object was garbage-collected (weakref callback)."""
        record = self.live.pop(key, None)
        if record is not None:
            # Destroyed while pending: the event loop dropped it (no strong reference).
            record.destroyed_pending = True
            record.ended = self.clock()
            if self._track is not None:
                self._track(record)  # as every record that did not complete
            self.notable.append(record)
            site = record.site
            if site is not None:
                site.alive -= 1
            self.history.append(record)
            return
        record = self.failed_watch.get(key)
        if record is not None and record.exception_retrieved is None:
            # A failed task is gone. If it never handed out its exception, its
            # finaliser reports that through the loop's exception handler, which runs
            # before or (for cyclic garbage) after this callback; `exception_logged`
            # settles it either way, and `settle_failed` treats silence as retrieved.
            record.ref = None  # its key was cleared by _gone

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
                self.drop_ref(record)
                self.failed_watch.pop(key, None)
            elif final:
                record.exception_retrieved = False
                self.notable.append(record)
                self.failed_watch.pop(key, None)

    def detach(self) -> None:
        """Stop watching live tasks (at uninstall): taskscope no longer sees them end,
        so their later collection must not read as "destroyed while pending"."""
        for record in list(self.live.values()):
            ref = record.ref
            if ref is not None:
                ref.key = None
                record.ref = None
            record.step_start = 0.0

    def note_suspension(self, record: TaskRecord, coro: Any) -> None:
        """Remember where a task is suspended after its longest step so far.

        Walks the coroutine's await chain to the innermost user frame: the ``await``
        right after the slow code. Also names the task after the outermost *user*
        coroutine in the chain when its own coroutine is a library wrapper (AnyIO wraps
        every spawned coroutine), so reports say ``fetch`` rather than ``_run_coro``.
        """
        is_library = self.locations.is_library
        frame = None
        rename = record.code is not None and is_library(record.code)
        depth = 0
        while coro is not None and depth < MAX_AWAIT_DEPTH:
            inner = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if inner is not None and not is_library(inner.f_code):
                frame = inner
                if rename:
                    record.code = inner.f_code
                    record.coroutine_override = None
                    site = record.site
                    if site is not None and (site.code is None or is_library(site.code)):
                        site.code = inner.f_code
                    rename = False
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            depth += 1
        record.longest_step_at = (frame.f_code, frame.f_lineno) if frame is not None else None

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
    def created(self) -> int:
        """How many tasks were recorded (a sum over the sites, which count them)."""
        return sum(site.created for site in list(self.sites.values()))

    @property
    def finished(self) -> int:
        """How many recorded tasks ended (or were collected while pending)."""
        return sum(site.created - site.alive for site in list(self.sites.values()))

    @property
    def history_dropped(self) -> int:
        """How many finished records fell out of the bounded history."""
        return max(0, self.finished - len(self.history))
