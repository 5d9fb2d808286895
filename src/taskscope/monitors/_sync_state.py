"""Per-primitive state and the bookkeeping of the lock monitor.

Every tracked primitive has one `PrimitiveState` in a side table keyed by ``id()`` of
the primitive; a keyed weak reference removes the entry when the primitive is
collected, before its id can be reused. Nothing is ever stored on the user's object.

Hot-path rules (DESIGN.md, principle 2): an acquisition that does not block costs a
dict lookup, a clock read and one tuple; its release a dict lookup, a clock read and a
histogram bucket. Times are integer nanoseconds (``int.bit_length`` of a duration is
its histogram bucket), converted to seconds by the snapshot. Sites are kept as
``(code, f_lasti)``: the line number is looked up only when a snapshot formats it. Only
an acquisition that actually blocks registers a waiter and looks at the wait-for graph.

Hold entries are ``(task key, task record, since, code, lasti)``; wait entries (by task
key) ``(task record, since, code, lasti, operation)``. ``code`` is None when no user
frame was found. A lock's single holder lives in ``holder``, everything else in
``holds``. Per-primitive memory is budgeted (1 KB, DESIGN.md): containers are created
on first use, and hold and wait times share one histogram dict.
"""

from __future__ import annotations

import itertools
import math
import time
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from .._backends import _compat_sync
from .._core._accel import LockCore
from .._core._faults import internal_error
from .._core._location import to_location

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType

    from .._core._location import RawLocation
    from .._core._records import Location
    from .._core._registry import Registry, TaskRecord

#: Kinds of primitive that have holders (and so can be part of a deadlock).
HOLDING_KINDS: Final = frozenset({"lock", "semaphore", "capacity-limiter"})
#: Steps of the wait-for graph walked when a task starts waiting.
MAX_WALK: Final = 64
#: Deadlocks kept (each reported once).
MAX_DEADLOCKS: Final = 100
#: Collected primitives kept for the report after they are gone.
RETIRED_SIZE: Final = 1_000
#: Frames walked to find the user's line.
MAX_DEPTH: Final = 32

#: A hold: (task key, record, since ns, code, lasti).
Hold = tuple[int, "TaskRecord | None", int, "CodeType | None", int]
#: A wait: (record, since ns, code, lasti, operation).
Wait = tuple["TaskRecord | None", int, "CodeType | None", int, str]


#: Wait-time buckets live in the same dict as hold-time ones, shifted by this much.
WAIT_BUCKETS: Final = 64


def bucket_counts(hist: dict[int, int] | None, *, wait: bool) -> dict[int, int]:
    """Return the hold (or wait) buckets of a state's histogram dict.

    Bucket ``i`` counts durations of ``[2**(i-1), 2**i)`` ns: ``int.bit_length`` is the
    cheapest log2 there is, and the hot path of ``asyncio.Lock`` updates it inline.
    """
    if not hist:
        return {}
    items = list(hist.items())
    if wait:
        return {index - WAIT_BUCKETS: n for index, n in items if index >= WAIT_BUCKETS}
    return {index: n for index, n in items if index < WAIT_BUCKETS}


def quantile(buckets: dict[int, int], largest: int, q: float, zeros: int = 0) -> float:
    """Return the `q` quantile of `buckets` in seconds (a bucket's upper bound, capped at
    `largest` ns), counting `zeros` extra observations of zero."""
    total = sum(buckets.values()) + zeros
    if total == 0:
        return 0.0
    rank = max(1, math.ceil(q * total))
    if rank <= zeros:
        return 0.0
    seen = zeros
    for index in sorted(buckets):
        seen += buckets[index]
        if seen >= rank:
            return min(largest, 1 << index) * 1e-9
    return largest * 1e-9


class StateRef(weakref.ref):  # type: ignore[type-arg]
    """A weak reference to a primitive that knows its side-table key."""

    __slots__ = ("key",)
    key: int


class PrimitiveState(LockCore):
    """What the lock monitor knows about one primitive (mutable, internal).

    Everything but the identity is created on first use, so a primitive that is never
    contended costs one object, one weak reference and one histogram dict. The fields
    the ``asyncio.Lock`` path touches (``holder``, ``holds``, ``hist``, ``hold_max``,
    ``site_code``, ``loop``, ``ref``; for waits ``kind``, ``waits``, ``wait_max``,
    ``cancelled_waits``) live in the base class, a C struct when the lock accelerator
    is built (`_accel.LockCore`).
    """

    __slots__ = (
        "acquiring",
        "backend",
        "capacity",
        "created_at",
        "held_too_long",
        "id",
        "name",
        "type_name",
        "worst_hold",
    )

    def __init__(  # noqa: PLR0917  # positional on purpose: one call per primitive
        self,
        state_id: int,
        kind: str,
        type_name: str,
        backend: str,
        created_at: RawLocation | None,
        name: str | None,
        ref: StateRef | None,
    ) -> None:
        self.id = state_id
        self.kind = kind
        self.type_name = type_name
        self.backend = backend
        self.created_at = created_at
        self.name = name
        self.ref = ref
        #: A lock's holder (the first hold of any primitive whose kind is ``lock``).
        self.holder: Hold | None = None
        #: Other current holds, oldest first (None while there are none).
        self.holds: list[Hold] | None = None
        #: Current waiters by task key (None while there are none).
        self.waits: dict[int, Wait] | None = None
        #: Keys of tasks inside a wrapped async acquire (its nested nowait call is theirs).
        self.acquiring: set[int] | None = None
        self.cancelled_waits = 0
        self.held_too_long = 0
        #: The longest hold over the threshold: (duration ns, record, code, lasti).
        self.worst_hold: tuple[int, TaskRecord | None, CodeType | None, int] | None = None
        #: Hold-time buckets, and wait-time ones from `WAIT_BUCKETS` on (see
        #: `bucket_counts`); None before the first.
        self.hist: dict[int, int] | None = None
        #: The longest hold and wait, in ns.
        self.hold_max = 0
        self.wait_max = 0
        self.capacity: float | None = None
        #: The event loop the primitive was last acquired on (up to 3.13 asking the
        #: loop for its current task is cheaper than finding the running loop).
        self.loop: Any = None
        #: The user code that last acquired it: the hot path compares code objects by
        #: identity instead of hashing them into the library table.
        self.site_code: CodeType | None = None

    @property
    def acquisitions(self) -> int:
        """Successful acquisitions: the released ones (each is in the hold histogram)
        and the current holds. Not counted on the hot path, so it costs nothing there."""
        released = sum(bucket_counts(self.hist, wait=False).values())
        return released + (self.holder is not None) + len(self.holds or ())

    @property
    def waited(self) -> int:
        """Waits that blocked and ended."""
        return sum(bucket_counts(self.hist, wait=True).values())

    def current_holds(self) -> list[Hold]:
        """Return every current hold."""
        holds = list(self.holds or ())
        holder = self.holder
        return [holder, *holds] if holder is not None else holds

    def active(self) -> bool:
        """True once it was ever acquired or waited on."""
        return bool(self.hist or self.holder or self.holds or self.waits)


class SyncTracker:
    """The side table of tracked primitives and the wait-for graph between tasks."""

    def __init__(self, registry: Registry, *, held_too_long: float) -> None:
        self.registry = registry
        #: Integer nanoseconds on the registry's clock.
        self.clock = nanosecond_clock(registry.clock)
        self.started = round(registry.started * 1e9)
        self.live = registry.live
        self.locations = registry.locations
        #: The threshold, in ns.
        self.held_too_long = round(held_too_long * 1e9)
        self.states: dict[int, PrimitiveState] = {}
        self._gone_callback = self._gone
        #: Task key -> the primitive it is blocked on (the wait-for graph's edges).
        self.waiting: dict[int, PrimitiveState] = {}
        self.retired: deque[PrimitiveState] = deque(maxlen=RETIRED_SIZE)
        self.deadlocks: list[dict[str, Any]] = []
        self._deadlock_keys: set[frozenset[int]] = set()
        self._ids = itertools.count(1)
        #: Code object -> is it library code (shared with the inlined hot path).
        self.library_codes: dict[CodeType, bool] = {}
        self._lines: dict[tuple[CodeType, int], int] = {}
        self.cancelled_types: tuple[type[BaseException], ...] = _compat_sync.cancelled_types()
        self.ended = False

    # -- registration ---------------------------------------------------------------

    def register(  # noqa: PLR0917  # mirrors PrimitiveState's fields
        self,
        obj: Any,
        kind: str,
        type_name: str,
        backend: str,
        created_at: RawLocation | None,
        name: str | None = None,
    ) -> PrimitiveState:
        """Start tracking `obj` (once; a second call returns the existing state)."""
        key = id(obj)
        state = self.states.get(key)
        if state is not None:
            return state
        ref = StateRef(obj, self._gone_callback)
        ref.key = key
        state = PrimitiveState(next(self._ids), kind, type_name, backend, created_at, name, ref)
        self.states[key] = state
        return state

    def _gone(self, ref: StateRef) -> None:
        states = self.states
        state = states.get(ref.key)
        if state is None or state.ref is not ref:
            return
        del states[ref.key]
        state.loop = None
        if state.active():
            self.retired.append(state)

    # -- locations ------------------------------------------------------------------

    def user_frame(self, frame: FrameType | None) -> FrameType | None:
        """Return the innermost user frame at or above `frame` (classified per code)."""
        library = self.library_codes
        depth = 0
        while frame is not None and depth < MAX_DEPTH:
            code = frame.f_code
            is_library = library.get(code)
            if is_library is None:
                is_library = library[code] = self.locations.is_library(code)
            if not is_library:
                return frame
            frame = frame.f_back
            depth += 1
        return None

    def user_location(self, frame: FrameType | None) -> RawLocation | None:
        """Return the innermost user frame at or above `frame` as (code, line)."""
        found = self.user_frame(frame)
        return (found.f_code, found.f_lineno) if found is not None else None

    def location(self, code: CodeType | None, lasti: int) -> Location | None:
        """Format a hot-path site (slow path: the line is looked up here)."""
        if code is None:
            return None
        key = (code, lasti)
        line = self._lines.get(key)
        if line is None:
            line = self._lines[key] = line_of(code, lasti)
        return to_location((code, line))

    # -- tasks ----------------------------------------------------------------------

    def asyncio_task(self, state: PrimitiveState) -> Any:
        """Return the running asyncio task, or None (see `_compat_sync.asyncio_task`)."""
        return _compat_sync.asyncio_task(state)

    # -- holds ----------------------------------------------------------------------

    def site(self, state: PrimitiveState, frame: FrameType | None) -> tuple[CodeType | None, int]:
        """Return the user's (code, lasti) at or above `frame`; remember its code."""
        found = self.user_frame(frame)
        if found is None:
            return None, 0
        code = state.site_code = found.f_code
        return code, found.f_lasti

    def add_hold(self, state: PrimitiveState, entry: Hold) -> None:
        """Record a current hold (a lock's single holder has its own slot)."""
        if state.holder is None and state.kind == "lock":
            state.holder = entry
        elif state.holds is None:
            state.holds = [entry]
        else:
            state.holds.append(entry)

    def hold(self, state: PrimitiveState, key: int, record: Any, frame: FrameType | None) -> None:
        """A task now holds `state` (it acquired it without waiting)."""
        code, lasti = self.site(state, frame)
        self.add_hold(state, (key, record, self.clock(), code, lasti))

    def holding(self, state: PrimitiveState, key: int) -> bool:
        """True when the task (or borrower) `key` holds `state` now."""
        holder = state.holder
        if holder is not None and holder[0] == key:
            return True
        return any(hold[0] == key for hold in state.holds or ())

    def unhold(self, state: PrimitiveState, key: int) -> None:
        """The holder `key` released `state` (the oldest hold when `key` holds none:
        a semaphore may be released by another task than the one that acquired it)."""
        holder = state.holder
        holds = state.holds
        if holder is not None and (holder[0] == key or not holds):
            state.holder = None
            entry = holder
        elif not holds:
            return
        elif len(holds) == 1 or holds[0][0] == key:
            entry = holds.pop(0)
        else:
            for index, candidate in enumerate(holds):
                if candidate[0] == key:
                    entry = holds.pop(index)
                    break
            else:
                entry = holds.pop(0)
        self.held(state, entry, self.clock() - entry[2])

    def held(self, state: PrimitiveState, entry: Hold, duration: int) -> None:
        """Account a finished hold of `duration` ns."""
        hist = state.hist
        if hist is None:
            hist = state.hist = {}
        if duration > state.hold_max:
            state.hold_max = duration
        index = duration.bit_length()
        hist[index] = hist.get(index, 0) + 1
        if duration >= self.held_too_long:
            self.long_hold(state, entry, duration)

    def long_hold(self, state: PrimitiveState, entry: Hold, duration: int) -> None:
        """A hold of at least the threshold ended (its histogram is already updated)."""
        state.held_too_long += 1
        worst = state.worst_hold
        if worst is None or duration > worst[0]:
            state.worst_hold = (duration, entry[1], entry[3], entry[4])

    # -- waits (slow path: only when a task blocks) -----------------------------------

    def wait_begin(
        self,
        state: PrimitiveState,
        key: int,
        record: TaskRecord | None,
        frame: FrameType | None,
        operation: str,
    ) -> int:
        """A task starts blocking on `state`; return the start time (ns), or -1 when
        the bookkeeping failed (it never raises)."""
        try:
            code = frame.f_code if frame is not None else None
            if code is not None and code is state.site_code:
                lasti = frame.f_lasti  # type: ignore[union-attr]  # code implies frame
            else:
                code, lasti = self.site(state, frame)
            since = self.clock()
            waits = state.waits
            if waits is None:
                waits = state.waits = {}
            waits[key] = (record, since, code, lasti, operation)
            if state.kind in HOLDING_KINDS:
                self.waiting[key] = state
                # Only a holder that is itself blocked, or awaits a task, can close a
                # cycle: check those cheaply before walking the graph.
                holder = state.holder
                if (holder is not None and self._blocked(holder)) or (
                    state.holds and any(self._blocked(hold) for hold in state.holds)
                ):
                    self.check_deadlock(key)
        except Exception as exc:  # noqa: BLE001  # bookkeeping never breaks a wait
            internal_error("lock monitor: wait", exc)
            return -1
        return since

    def wait_end(  # noqa: PLR0917  # positional: called once per blocking wait
        self,
        state: PrimitiveState,
        key: int,
        since: int,
        cancelled: bool,
        hold_record: Any = None,
        hold: bool = False,
    ) -> None:
        """The wait that began at `since` ended: acquired (`hold`: now held by `key`,
        whose record is `hold_record`), or cancelled/timed out. Never raises."""
        if since < 0:
            return
        try:
            now = self.clock()
            waits = state.waits
            entry = None
            if waits is not None:
                entry = waits.pop(key, None)
                if not waits:
                    state.waits = None
            waiting = self.waiting
            if waiting.get(key) is state:
                del waiting[key]
            hist = state.hist
            if hist is None:
                hist = state.hist = {}
            duration = now - since
            if duration > state.wait_max:
                state.wait_max = duration
            index = WAIT_BUCKETS + duration.bit_length()
            hist[index] = hist.get(index, 0) + 1
            if cancelled:
                state.cancelled_waits += 1
            if hold:
                code, lasti = (entry[2], entry[3]) if entry is not None else (None, 0)
                self.add_hold(state, (key, hold_record, now, code, lasti))
        except Exception as exc:  # noqa: BLE001
            internal_error("lock monitor: wait", exc)

    # -- deadlocks ------------------------------------------------------------------

    def _blocked(self, hold: Hold) -> bool:
        """True when the holder of `hold` is blocked on a primitive or awaits a task."""
        if hold[0] in self.waiting:
            return True
        record = hold[1]
        ref = record.ref if record is not None else None
        task = ref() if ref is not None else None
        return task is not None and _compat_sync.asyncio_awaited_task(task) is not None

    def _successors(self, key: int) -> list[int]:
        state = self.waiting.get(key)
        if state is not None:
            return [hold[0] for hold in state.current_holds()]
        record = self.live.get(key)
        task = record.task() if record is not None else None
        if task is not None:
            awaited = _compat_sync.asyncio_awaited_task(task)
            if awaited is not None:
                return [id(awaited)]
        return []

    def check_deadlock(self, start: int) -> bool:
        """Walk the wait-for graph from task `start`; record a cycle back to it."""
        path = [start]
        stack = [iter(self._successors(start))]
        visited = {start}
        steps = 0
        while stack and steps < MAX_WALK:
            steps += 1
            following = next(stack[-1], None)
            if following is None:
                stack.pop()
                path.pop()
                continue
            if following == start:
                self._record_deadlock(list(path))
                return True
            if following in visited:
                continue
            visited.add(following)
            path.append(following)
            stack.append(iter(self._successors(following)))
        return False

    def _record_deadlock(self, cycle: list[int]) -> None:
        identity = frozenset(cycle)
        if identity in self._deadlock_keys or len(self.deadlocks) >= MAX_DEADLOCKS:
            return
        self._deadlock_keys.add(identity)
        members = [self._describe_member(key) for key in cycle]
        detected = (self.clock() - self.started) * 1e-9
        self.deadlocks.append({"detected": detected, "tasks": members})

    def _describe_member(self, key: int) -> dict[str, Any]:
        record = self.live.get(key)
        state = self.waiting.get(key)
        waits_for: dict[str, Any] | None = None
        waiting_at = None
        if state is not None:
            entry = state.waits.get(key) if state.waits is not None else None
            waiting_at = self.location(entry[2], entry[3]) if entry is not None else None
            waits_for = {"primitive": state.id, "name": display_name(state), "kind": state.kind}
        else:
            task = record.task() if record is not None else None
            awaited = _compat_sync.asyncio_awaited_task(task) if task is not None else None
            awaited_record = self.live.get(id(awaited)) if awaited is not None else None
            if awaited_record is not None:
                waits_for = {"task": awaited_record.id, "name": awaited_record.current_name()}
            waiting_at = to_location(self._suspended_at(task))
        holds = [
            {
                "primitive": held.id,
                "name": display_name(held),
                "kind": held.kind,
                "acquired_at": self.location(hold[3], hold[4]),
            }
            for held in list(self.states.values())
            for hold in held.current_holds()
            if hold[0] == key
        ]
        return {
            "task": (record.id, record.current_name()) if record is not None else None,
            "waits_for": waits_for,
            "waiting_at": waiting_at,
            "holds": holds,
        }

    def _suspended_at(self, task: Any) -> RawLocation | None:
        coro = task.get_coro() if hasattr(task, "get_coro") else None
        found = None
        depth = 0
        while coro is not None and depth < 64:
            frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
            if frame is not None and not self.locations.is_library(frame.f_code):
                found = (frame.f_code, frame.f_lineno)
            coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
            depth += 1
        return found

    def check_all_deadlocks(self) -> None:
        """Look for cycles from every waiting task (cycles closed by ``await task``)."""
        for key in list(self.waiting):
            self.check_deadlock(key)


def nanosecond_clock(clock: Callable[[], float]) -> Callable[[], int]:
    """Return `clock` in integer nanoseconds (``time.perf_counter_ns`` for the default)."""
    if clock is time.perf_counter:
        return time.perf_counter_ns

    def clock_ns() -> int:
        return round(clock() * 1e9)

    return clock_ns


def line_of(code: CodeType, lasti: int) -> int:
    """Return the line of the instruction at byte offset `lasti` of `code`."""
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line or code.co_firstlineno
    return code.co_firstlineno


def display_name(state: PrimitiveState) -> str:
    """Return a primitive's readable name: the given one, else type and creation site."""
    if state.name:
        return state.name
    where = to_location(state.created_at)
    if where is None:
        return f"{state.type_name}#{state.id}"
    return f"{state.type_name} at {where.file.rsplit('/', 1)[-1]}:{where.line}"
