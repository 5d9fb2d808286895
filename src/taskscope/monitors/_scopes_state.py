"""The cancel-scope monitor's tracking state: entered scopes, each task's scope stack,
cancellation requests, scope errors, and the accounting of exits.

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
    """One entered scope (mutable, internal).

    Hot fields, set for every scope, are slots set once in ``__init__``. Cold fields,
    set only for scopes that are cancelled, fail, are misused or reported, are class
    defaults: an instance grows a ``__dict__`` only when one of them is set.
    """

    __slots__ = (
        "__dict__",
        "entered",
        "flavour",
        "kind",
        "parent",
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

    def __init__(  # noqa: PLR0917  # positional on purpose: called once per scope
        self,
        ref: weakref.ref[Any],
        flavour: str,
        kind: str,
        task_key: int,
        record: TaskRecord | None,
        stack: list[RawLocation],
        entered: float,
        parent: ScopeEntry | None,
    ) -> None:
        self.ref = ref
        self.flavour = flavour
        self.kind = kind
        self.task_key = task_key
        #: The entering task's record (it may end long before the scope is reported).
        self.record = record
        self.stack = stack
        self.entered = entered
        #: The scope that was innermost in the same task when this one was entered.
        self.parent = parent


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
        #: Entered scopes by ``id(scope)``.
        self.active: dict[int, ScopeEntry] = {}
        #: Innermost entered scope by ``id(task)``; entries chain to their parents.
        self.tops: dict[int, ScopeEntry] = {}
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

    def record_of(self, key: int) -> TaskRecord | None:
        """Return the record of the task with ``id(task) == key``, alive or just ended."""
        registry = self.registry
        record = registry.live.get(key)
        if record is not None:
            return record
        for ended in reversed(list(itertools.islice(reversed(registry.history), RECENT_RECORDS))):
            if ended.owner_key == key:
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

    def attach(self, entry: ScopeEntry, note: CancelNote) -> None:
        """Make `note` the cancellation request of `entry`."""
        entry.cancel = note
        note.entry = entry

    def exited_cleanly(self, entry: ScopeEntry, scope_id: int) -> None:
        """Drop a scope that exited without error, cancellation or problem (hot path)."""
        del self.active[scope_id]
        key = entry.task_key
        tops = self.tops
        if tops.get(key) is entry:
            parent = entry.parent
            if parent is None:
                del tops[key]
            else:
                tops[key] = parent
        else:
            self.splice(entry)

    def forget(self, entry: ScopeEntry, scope: Any) -> None:
        """Remove an exited scope from the side tables and its task's scope stack."""
        active = self.active
        if active.get(id(scope)) is entry:
            del active[id(scope)]
        key = entry.task_key
        tops = self.tops
        top = tops.get(key)
        if top is entry:
            if entry.parent is None:
                del tops[key]
            else:
                tops[key] = entry.parent
            return
        self.splice(entry)

    def splice(self, entry: ScopeEntry) -> None:
        """Take a scope exited out of order out of its task's chain."""
        child = self.tops.get(entry.task_key)
        while child is not None and child.parent is not entry:
            child = child.parent
        if child is not None:
            child.parent = entry.parent

    def prune(self) -> None:
        """Drop entries whose scope was collected without exiting (abandoned); if the
        table is still full, drop the oldest tenth too (counted in `dropped`), so that
        the next entries do not each pay for a full scan."""
        active = self.active
        for key, entry in list(active.items()):
            if entry.ref() is None:
                active.pop(key, None)
                self.stats[entry.kind][ABANDONED] += 1
                self.dropped += 1
        excess = len(active) - self.max_active * 9 // 10
        if excess > 0:
            # Dicts keep insertion order: the first keys are the oldest entries.
            for key in list(itertools.islice(active, excess)):
                entry = active.pop(key)
                self.stats[entry.kind][ABANDONED] += 1
                self.dropped += 1
        tops = self.tops
        for key, top in list(tops.items()):
            alive: ScopeEntry | None = top
            while alive is not None and (
                alive.ref() is None or active.get(id(alive.ref())) is not alive
            ):
                alive = alive.parent
            if alive is None:
                tops.pop(key, None)
            elif alive is not top:
                tops[key] = alive

    def settle_exit(  # noqa: PLR0912  # one place accounts every kind of exit
        self,
        entry: ScopeEntry,
        scope: Any,
        exc_in: BaseException | None,
        *,
        swallowed: bool,
        raised: BaseException | None,
    ) -> None:
        """Account an exit that was not the plain, clean one (never raises)."""
        try:
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
            self.forget(entry, scope)
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
