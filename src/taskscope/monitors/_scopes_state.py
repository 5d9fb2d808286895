"""The cancel-scope monitor's tracking state: entered scopes, cancellation requests,
scope errors, and the accounting of exits.

Two forms of an entered scope: the hot path stores a tuple (`HotScope`: weak reference,
flavour, kind, task key, task record, entry stack, entry time) in `ScopeState.active`;
a scope that is cancelled, fails, is misused or reported gets a `ScopeEntry` (the
same fields plus the cold ones) in `ScopeState.details`. A tuple costs one
instruction to build; an object with an ``__init__`` costs a Python call.

A task's scope stack is not kept as a chain: scopes of one task nest, so its active
scopes in order of entry *are* its stack (built when reported). Only asyncio's own
classes, which do not check nesting themselves, keep a per-task list of ids.

Invariant: every table is keyed by ``id(scope)`` or ``id(task)`` and every entry holds
a weak reference to its scope, checked (``entry.ref() is scope``) before an entry found
by id is trusted: nothing is ever set on a scope (AnyIO's have ``__slots__``), and a
scope collected without exiting must not keep its task alive.
"""

from __future__ import annotations

import itertools
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from .._backends import _compat_anyio
from .._core._exceptions import is_cancellation
from .._core._faults import internal_error
from ._scopes_records import SCOPE_KINDS

if TYPE_CHECKING:
    import weakref
    from types import CodeType

    from .._core._location import RawLocation
    from .._core._registry import Registry, TaskRecord

CROSS_TASK: Final = "cancel-scope-cross-task"
MISNESTED: Final = "cancel-scope-misnested"

# Counter slots of each kind's statistics list.
ENTERED: Final = 0
ABANDONED: Final = 1
CANCELLED: Final = 2
CAUGHT: Final = 3
TIMED_OUT: Final = 4
FAILED: Final = 5
CROSS: Final = 6
MISNESTING: Final = 7
N_COUNTERS: Final = 8

# Fields of a hot record (`HotScope`).
REF: Final = 0
FLAVOUR: Final = 1
KIND: Final = 2
TASK: Final = 3
RECORD: Final = 4
STACK: Final = 5
ENTERED_AT: Final = 6

#: Frames walked for an exit stack or a requester's line (cold paths only).
LONG_STACK: Final = 32
#: Just-finished tasks searched for a record (a cancellation follows a failure closely).
RECENT_RECORDS: Final = 64


class CancelNote:
    """A cancellation request to a scope (mutable, internal)."""

    __slots__ = ("at", "cause", "entry", "error", "location", "reason", "requester")

    def __init__(self, cause: str, at: float) -> None:
        self.cause = cause
        self.at = at
        self.requester: tuple[int, str] | None = None
        self.location: RawLocation | None = None
        self.reason: str | None = None
        self.error: str | None = None
        #: The scope's entry, once it is (or was) entered.
        self.entry: ScopeEntry | None = None


class ScopeProblem:
    """A cross-task or misnested exit (mutable until the original exit returns)."""

    __slots__ = (
        "at",
        "entry",
        "exited_by",
        "exited_stack",
        "innermost",
        "kind",
        "owner",
        "owner_name",
        "raised",
        "still_active",
    )

    def __init__(self, kind: str, entry: ScopeEntry, at: float) -> None:
        self.kind = kind
        self.entry = entry
        self.at = at
        self.exited_by: tuple[int, str] | None = None
        self.exited_stack: list[RawLocation] = []
        self.owner = "unknown"
        self.owner_name: str | None = None
        self.innermost: ScopeEntry | None = None
        self.raised: str | None = None
        self.still_active = False


class ScopeEntry:
    """One entered scope with its cold state (mutable, internal; see the module doc).

    Fields copied from the hot record are slots; cold fields are class defaults, so an
    instance grows a ``__dict__`` only when one of them is set.
    """

    __slots__ = (
        "__dict__",
        "entered",
        "flavour",
        "kind",
        "record",
        "ref",
        "stack",
        "task_key",
    )

    #: taskscope's id, given when the scope is first reported (0: not yet).
    sid: int = 0
    cancel: CancelNote | None = None
    problem: ScopeProblem | None = None
    exited: float | None = None
    exception: str | None = None
    caught: bool = False
    timeout: float | None = None
    shield: bool = False

    def __init__(self, hot: HotScope) -> None:
        self.ref = hot[REF]
        self.flavour = hot[FLAVOUR]
        self.kind = hot[KIND]
        self.task_key = hot[TASK]
        #: The entering task's record (it may end long before the scope is reported):
        #: looked up when the scope gets its cold state, if the hot path did not.
        self.record = hot[RECORD]
        self.stack = hot[STACK]
        self.entered = hot[ENTERED_AT]


#: The hot record of an entered scope: (weak reference, flavour, kind, ``id(task)``,
#: the task's record, entry stack, entry time).
HotScope = tuple["weakref.ref[Any]", str, str, int, "TaskRecord | None", "list[RawLocation]", float]


def pair_of(record: TaskRecord | None) -> tuple[int, str] | None:
    """Return (id, current name) of a task record, the form notes keep."""
    return (record.id, record.current_name()) if record is not None else None


class ScopeState:
    """Everything the scope monitor knows, shared by its hooks and its snapshot.

    Args:
        registry: the session's registry (clock, live tasks, location filter).
        stack_depth: at most this many frames kept per entry stack.
        context_frames: callers kept beyond the user's frame in an entry stack.
        max_errors: scope errors kept individually.
        max_recent: exited scopes that were cancelled or failed, kept individually.
        max_active: entered scopes tracked at once before abandoned ones are pruned.
        exception_notes: add a note to the library's cross-task/misnesting error.
    """

    def __init__(  # noqa: PLR0917  # the monitor's options, passed through once
        self,
        registry: Registry,
        stack_depth: int,
        context_frames: int,
        max_errors: int,
        max_recent: int,
        max_active: int,
        exception_notes: bool,
    ) -> None:
        self.registry = registry
        self.stack_depth = stack_depth
        self.context_frames = context_frames
        self.max_active = max_active
        self.exception_notes = exception_notes
        self.ids = itertools.count(1)
        #: Entered scopes by ``id(scope)``: hot records, in order of entry.
        self.active: dict[int, HotScope] = {}
        #: The cold state of entered scopes that have one, by ``id(scope)``.
        self.details: dict[int, ScopeEntry] = {}
        #: Ids of the entered asyncio ``timeout``/``TaskGroup`` scopes, by ``id(task)``.
        self.native: dict[int, list[int]] = {}
        #: Cancellation requests to scopes not entered yet, by ``id(scope)``.
        self.pending: dict[int, tuple[weakref.ref[Any], CancelNote]] = {}
        #: Statistics lists (see the ``ENTERED``... slots) by scope kind.
        self.stats: dict[str, list[int]] = {kind: [0] * N_COUNTERS for kind in SCOPE_KINDS}
        self.errors: deque[ScopeProblem] = deque(maxlen=max_errors)
        self.recent: deque[ScopeEntry] = deque(maxlen=max_recent)
        #: Cancellation provenance by task record id (insertion-ordered, bounded).
        self.task_notes: dict[int, tuple[str, CancelNote]] = {}
        self.max_task_notes = 10_000
        self.dropped = 0
        # Code tables are keyed by ``id(code)``: hashing a code object hashes its
        # bytecode and constants (nested functions included) on every lookup, up to a
        # microsecond; `code_refs` keeps each code alive so that its id stays its own.
        self.code_refs: list[CodeType] = []
        self.kind_codes: dict[int, str] = {}
        self.cause_codes: dict[int, str] = {}
        self.deliver_codes: dict[int, str] = {}
        self.owner_codes: dict[int, str] = {}
        #: Updated in place: AnyIO's trio backend is imported after trio itself.
        self.passthrough: set[int] = set()
        self.current_task: dict[str, Any] = {}
        self.refresh_codes()

    def refresh_codes(self) -> None:
        """Learn the code objects of the libraries imported so far."""
        self.kind_codes.update(self.by_id(_compat_anyio.kind_codes()))
        self.cause_codes.update(self.by_id(_compat_anyio.cancel_cause_codes()))
        self.deliver_codes.update(self.by_id(_compat_anyio.deliver_codes()))
        self.owner_codes.update(self.by_id(_compat_anyio.exit_owner_codes()))
        self.passthrough.update(self.by_id(dict.fromkeys(_compat_anyio.passthrough_codes(), "")))
        self.current_task.update(_compat_anyio.current_task_functions())

    def by_id(self, codes: dict[CodeType, str]) -> dict[int, str]:
        """Key a code table by ``id(code)``, keeping the codes alive."""
        self.code_refs.extend(codes)
        return {id(code): label for code, label in codes.items()}

    # -- tasks ----------------------------------------------------------------------

    def record_of(self, key: int, since: float | None = None) -> TaskRecord | None:
        """Return the record of the task with ``id(task) == key``, alive or just ended
        (created no later than `since`: a later task may have reused the id)."""
        registry = self.registry
        record = registry.live.get(key)
        if record is not None and (since is None or record.created <= since):
            return record
        for ended in reversed(list(itertools.islice(reversed(registry.history), RECENT_RECORDS))):
            if ended.owner_key == key and (since is None or ended.created <= since):
                return ended
        return None

    def running_task(self) -> Any:
        """Return the task running now, on whichever library is running."""
        for flavour in ("anyio-asyncio", "trio"):
            function = self.current_task.get(flavour)
            if function is None:
                continue
            try:
                task = function()
            except RuntimeError:
                continue
            if task is not None:
                return task
        return None

    def task_object(self, key: int) -> Any:
        """Return the live task object with ``id(task) == key``, if it is tracked."""
        record = self.registry.live.get(key)
        return record.task() if record is not None else None

    # -- locations ------------------------------------------------------------------

    def is_library(self, code: CodeType) -> bool:
        """Return True when frames of `code` are looked through."""
        return self.registry.locations.is_library(code)

    def user_raw(self, stack: list[RawLocation]) -> RawLocation | None:
        """Return the innermost user frame of a stack ordered innermost first."""
        is_library = self.registry.locations.is_library
        for code, line in stack:
            if not is_library(code):
                return code, line
        return None

    def new_sid(self, entry: ScopeEntry) -> int:
        """Return the entry's id, giving it one now if it has none yet."""
        sid = entry.sid
        if not sid:
            sid = entry.sid = next(self.ids)
        return sid

    # -- entries --------------------------------------------------------------------

    def entry(self, scope_id: int) -> ScopeEntry | None:
        """Return the cold state of an entered scope, making it if it has none yet."""
        entry = self.details.get(scope_id)
        if entry is None:
            hot = self.active.get(scope_id)
            if hot is None:
                return None
            entry = self.details[scope_id] = ScopeEntry(hot)
            if entry.record is None:
                entry.record = self.record_of(entry.task_key, since=entry.entered)
        return entry

    def entry_of(self, scope: Any) -> ScopeEntry | None:
        """Return the cold state of `scope` if it is entered (never a stale id's)."""
        entry = self.entry(id(scope))
        return entry if entry is not None and entry.ref() is scope else None

    def task_scopes(self, task_key: int) -> list[int]:
        """Return the ids of a task's entered scopes, outermost first (slow: a scan)."""
        return [sid for sid, hot in list(self.active.items()) if hot[TASK] == task_key]

    def attach(self, entry: ScopeEntry, note: CancelNote) -> None:
        """Make `note` the cancellation request of `entry`."""
        entry.cancel = note
        note.entry = entry

    def forget(self, scope_id: int, entry: ScopeEntry) -> None:
        """Remove an exited scope from the side tables."""
        self.details.pop(scope_id, None)
        self.active.pop(scope_id, None)
        native = self.native.get(entry.task_key)
        if native is not None and scope_id in native:
            native.remove(scope_id)
            if not native:
                del self.native[entry.task_key]

    def prune(self) -> None:
        """Drop entries whose scope was collected without exiting (abandoned); if the
        table is still full, drop the oldest tenth too (counted in `dropped`), so that
        the next entries do not each pay for a full scan."""
        active = self.active
        gone = [sid for sid, hot in list(active.items()) if hot[REF]() is None]
        excess = len(active) - len(gone) - self.max_active * 9 // 10
        if excess > 0:
            # Dicts keep insertion order: the first keys are the oldest entries.
            dead = set(gone)
            gone += [sid for sid in list(active) if sid not in dead][:excess]
        for sid in gone:
            hot = active.pop(sid, None)
            if hot is not None:
                self.stats[hot[KIND]][ABANDONED] += 1
                self.dropped += 1
        details = self.details
        for sid in [sid for sid in list(details) if sid not in active]:
            details.pop(sid, None)
        for key, ids in list(self.native.items()):
            ids[:] = [sid for sid in ids if sid in active]
            if not ids:
                self.native.pop(key, None)

    def settle_exit(  # noqa: PLR0912  # one place accounts every kind of exit
        self,
        scope_id: int,
        scope: Any,
        exc_in: BaseException | None,
        *,
        swallowed: bool,
        raised: BaseException | None,
    ) -> None:
        """Account an exit that was not the plain, clean one (never raises)."""
        try:
            entry = self.entry(scope_id)
            if entry is None or entry.ref() is not scope:
                self.active.pop(scope_id, None)  # a stale id: nothing to account
                return
            problem = entry.problem
            if raised is not None and problem is not None and problem.raised is None:
                problem.raised = type(raised).__qualname__
            if _compat_anyio.scope_is_active(entry.flavour, scope):
                # The library refused the exit (AnyIO's cross-task/misnesting error):
                # the scope stays entered, in the task that entered it.
                if problem is not None:
                    problem.still_active = True
                return
            if problem is not None:
                problem.still_active = False
            self.forget(scope_id, entry)
            entry.exited = self.registry.clock()
            counts = self.stats[entry.kind]
            leaving = raised if raised is not None else (None if swallowed else exc_in)
            if leaving is not None:
                entry.exception = type(leaving).__qualname__
                if not is_cancellation(leaving) and not (
                    entry.kind == "asyncio.timeout"
                    and entry.cancel is not None
                    and isinstance(leaving, TimeoutError)
                ):
                    counts[FAILED] += 1
            if entry.cancel is not None:
                counts[CANCELLED] += 1
                if entry.cancel.cause == "timeout":
                    counts[TIMED_OUT] += 1
                if entry.flavour in {"anyio-asyncio", "trio"}:
                    entry.caught = _compat_anyio.scope_cancelled_caught(scope)
                else:
                    entry.caught = entry.kind == "asyncio.timeout"
                if entry.caught:
                    counts[CAUGHT] += 1
            if entry.cancel is not None or entry.exception is not None or problem is not None:
                self.recent.append(entry)
        except Exception as exc:  # noqa: BLE001
            internal_error("scope monitor: exit accounting", exc)
