"""Per-primitive state and the hot-path bookkeeping of the lock monitor.

Every tracked primitive has one `PrimitiveState` in a side table keyed by ``id()`` of
the primitive; a weak reference with a shared callback removes the entry when the
primitive is collected, before its id can be reused. Nothing is ever stored on the
user's object.

Hot-path rules (DESIGN.md, principle 2): `acquired`/`released` do O(1) work (a dict
lookup, a clock read, a tuple appended or popped, a histogram bucket bumped). Only an
acquisition that actually blocks registers a waiter and walks the wait-for graph.
"""

from __future__ import annotations

import itertools
import math
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from .._backends import _compat_sync
from .._core._faults import internal_error
from .._core._location import to_location

if TYPE_CHECKING:
    from types import CodeType, FrameType

    from .._core._location import RawLocation
    from .._core._registry import Registry, TaskRecord

#: Kinds of primitive that have holders (and so can be part of a deadlock).
HOLDING_KINDS: Final = frozenset({"lock", "semaphore", "capacity-limiter"})
#: Steps of the wait-for graph walked when a task starts waiting.
MAX_WALK: Final = 64
#: Deadlocks kept (each reported once).
MAX_DEADLOCKS: Final = 100
#: Collected primitives kept for the report after they are gone.
RETIRED_SIZE: Final = 1_000


class Histogram:
    """Counts in log-spaced buckets, one per octave from 1 µs: O(1) add, small memory."""

    __slots__ = ("buckets", "count", "max", "total")

    def __init__(self) -> None:
        self.buckets: dict[int, int] = {}
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        """Add one observation, in seconds."""
        self.count += 1
        self.total += value
        if value > self.max:
            self.max = value
        # Bucket i holds [2**(i-1), 2**i) microseconds: int.bit_length is the cheapest
        # log2 there is.
        index = int(value * 1e6).bit_length() if value > 0 else 0
        buckets = self.buckets
        buckets[index] = buckets.get(index, 0) + 1

    def quantile(self, q: float, zeros: int = 0) -> float:
        """Return the `q` quantile (bucket upper bound, capped at the max), counting
        `zeros` extra observations of zero."""
        total = self.count + zeros
        if total == 0:
            return 0.0
        rank = max(1, math.ceil(q * total))
        if rank <= zeros:
            return 0.0
        seen = zeros
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen >= rank:
                return min(self.max, 1e-6 * (1 << index))
        return self.max


class PrimitiveState:
    """What the lock monitor knows about one primitive (mutable, internal)."""

    __slots__ = (
        "acquiring",
        "acquisitions",
        "backend",
        "cancelled_waits",
        "capacity",
        "created_at",
        "held_too_long",
        "hold_hist",
        "holds",
        "id",
        "kind",
        "name",
        "ref",
        "type_name",
        "wait_hist",
        "waits",
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
        ref: weakref.ref[Any] | None,
    ) -> None:
        self.id = state_id
        self.kind = kind
        self.type_name = type_name
        self.backend = backend
        self.created_at = created_at
        self.name = name
        self.ref = ref
        #: Current holds: (holder key, holder record, since, acquire site).
        self.holds: list[tuple[int, TaskRecord | None, float, RawLocation | None]] = []
        #: Current waiters by task key: (record, since, wait site, operation).
        self.waits: dict[int, tuple[TaskRecord | None, float, RawLocation | None, str]] = {}
        #: Keys of tasks inside a wrapped async acquire (its nested nowait call is theirs).
        self.acquiring: set[int] | None = None
        self.acquisitions = 0
        self.cancelled_waits = 0
        self.held_too_long = 0
        #: The longest hold over the threshold: (duration, record, acquire site).
        self.worst_hold: tuple[float, TaskRecord | None, RawLocation | None] | None = None
        self.wait_hist: Histogram | None = None
        self.hold_hist: Histogram | None = None
        self.capacity: float | None = None


class SyncTracker:
    """The side table of tracked primitives and the wait-for graph between tasks."""

    def __init__(self, registry: Registry, *, held_too_long: float) -> None:
        self.registry = registry
        self.clock = registry.clock
        self.live = registry.live
        self.locations = registry.locations
        self.held_too_long = held_too_long
        self.states: dict[int, PrimitiveState] = {}
        self._ref_keys: dict[int, int] = {}
        self._gone_callback = self._gone
        #: Task key -> the primitive it is blocked on (the wait-for graph's edges).
        self.waiting: dict[int, PrimitiveState] = {}
        self.retired: deque[PrimitiveState] = deque(maxlen=RETIRED_SIZE)
        self.deadlocks: list[dict[str, Any]] = []
        self._deadlock_keys: set[frozenset[int]] = set()
        self._ids = itertools.count(1)
        #: Code object -> is it library code (shared with the inlined hot path).
        self.library_codes: dict[CodeType, bool] = {}
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
        ref = weakref.ref(obj, self._gone_callback)
        state = PrimitiveState(next(self._ids), kind, type_name, backend, created_at, name, ref)
        self._ref_keys[id(ref)] = key
        self.states[key] = state
        return state

    def _gone(self, ref: weakref.ref[Any]) -> None:
        key = self._ref_keys.pop(id(ref), None)
        if key is None:
            return
        state = self.states.pop(key, None)
        if state is not None and (state.acquisitions or state.waits or state.cancelled_waits):
            self.retired.append(state)

    # -- locations ------------------------------------------------------------------

    def user_frame(self, frame: FrameType | None) -> RawLocation | None:
        """Return the innermost user frame at or above `frame` (cached per code)."""
        library = self.library_codes
        depth = 0
        while frame is not None and depth < 32:
            code = frame.f_code
            is_library = library.get(code)
            if is_library is None:
                is_library = library[code] = self.locations.is_library(code)
            if not is_library:
                return code, frame.f_lineno
            frame = frame.f_back
            depth += 1
        return None

    # -- holds (hot path) -----------------------------------------------------------

    def hold(self, state: PrimitiveState, key: int, record: TaskRecord | None, site: Any) -> None:
        """A task now holds `state` (it acquired it)."""
        state.holds.append((key, record, self.clock(), site))
        state.acquisitions += 1

    def unhold(self, state: PrimitiveState, key: int) -> None:
        """The holder `key` released `state` (the oldest hold when `key` holds none:
        a semaphore may be released by another task than the one that acquired it)."""
        holds = state.holds
        if not holds:
            return
        if len(holds) == 1 or holds[0][0] == key:
            entry = holds.pop(0)
        else:
            for index, candidate in enumerate(holds):
                if candidate[0] == key:
                    entry = holds.pop(index)
                    break
            else:
                entry = holds.pop(0)
        self.held(state, entry)

    def held(self, state: PrimitiveState, entry: tuple[int, TaskRecord | None, float, Any]) -> None:
        """Account a finished hold."""
        duration = self.clock() - entry[2]
        hist = state.hold_hist
        if hist is None:
            hist = state.hold_hist = Histogram()
        hist.add(duration)
        if duration >= self.held_too_long:
            state.held_too_long += 1
            worst = state.worst_hold
            if worst is None or duration > worst[0]:
                state.worst_hold = (duration, entry[1], entry[3])

    # -- waits (slow path: only when a task blocks) -----------------------------------

    def wait_begin(
        self,
        state: PrimitiveState,
        key: int,
        record: TaskRecord | None,
        site: RawLocation | None,
        operation: str,
    ) -> float:
        """A task starts blocking on `state`; return the start time."""
        since = self.clock()
        state.waits[key] = (record, since, site, operation)
        if state.kind in HOLDING_KINDS:
            self.waiting[key] = state
            try:
                self.check_deadlock(key)
            except Exception as exc:  # noqa: BLE001  # detection never breaks a wait
                internal_error("lock monitor: deadlock check", exc)
        return since

    def wait_end(self, state: PrimitiveState, key: int, since: float, *, cancelled: bool) -> None:
        """The wait that began at `since` ended (acquired, or cancelled/timed out)."""
        state.waits.pop(key, None)
        if self.waiting.get(key) is state:
            del self.waiting[key]
        hist = state.wait_hist
        if hist is None:
            hist = state.wait_hist = Histogram()
        hist.add(self.clock() - since)
        if cancelled:
            state.cancelled_waits += 1

    # -- deadlocks ------------------------------------------------------------------

    def _successors(self, key: int) -> list[int]:
        state = self.waiting.get(key)
        if state is not None:
            return [hold[0] for hold in state.holds]
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
        self.deadlocks.append({"detected": self.clock() - self.registry.started, "tasks": members})

    def _describe_member(self, key: int) -> dict[str, Any]:
        record = self.live.get(key)
        state = self.waiting.get(key)
        waits_for: dict[str, Any] | None = None
        waiting_at = None
        if state is not None:
            entry = state.waits.get(key)
            waiting_at = to_location(entry[2]) if entry is not None else None
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
                "acquired_at": to_location(hold[3]),
            }
            for held in list(self.states.values())
            for hold in list(held.holds)
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


def display_name(state: PrimitiveState) -> str:
    """Return a primitive's readable name: the given one, else type and creation site."""
    if state.name:
        return state.name
    where = to_location(state.created_at)
    if where is None:
        return f"{state.type_name}#{state.id}"
    return f"{state.type_name} at {where.file.rsplit('/', 1)[-1]}:{where.line}"
