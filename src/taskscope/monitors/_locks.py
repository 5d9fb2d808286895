"""The lock monitor: who holds what, who waits, for how long, and deadlocks as they form.

Tracks asyncio's ``Lock``, ``Semaphore``, ``BoundedSemaphore``, ``Condition``, ``Event``
and ``Queue`` (and subclasses), AnyIO's ``Lock``, ``Semaphore``, ``CapacityLimiter``,
``Condition`` and ``Event`` on both backends, and trio's ``Lock``, ``StrictFIFOLock``,
``Semaphore``, ``CapacityLimiter`` and ``Event``, with no change to the program. See
docs/locks.md for what each figure means.
"""

from __future__ import annotations

import sys
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .._backends import _compat, _compat_sync
from .._core._faults import internal_error
from .._core._location import to_location
from .._core._records import Location, TaskRef
from ._sync_patches import SyncPatcher
from ._sync_state import (
    HOLDING_KINDS,
    PrimitiveState,
    SyncTracker,
    bucket_counts,
    display_name,
    quantile,
)

if TYPE_CHECKING:
    from types import ModuleType

    from .._core._records import Finding
    from .._core._registry import Registry, TaskRecord

# -- records ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Distribution:
    """Percentiles of a duration, in seconds (bucketed: within a factor of 1.42)."""

    count: int
    p50: float
    p99: float
    max: float


@dataclass(frozen=True, slots=True)
class HolderInfo:
    """A task holding a primitive now."""

    #: The holder; None when it is not a tracked task (a thread borrowing a limiter).
    task: TaskRef | None
    #: Where it acquired the primitive.
    acquired_at: Location | None
    #: When it acquired it (seconds since the session started).
    since: float
    #: How long it has held it so far.
    held_for: float
    #: True when the holder task has already finished: it will never release it.
    task_ended: bool


@dataclass(frozen=True, slots=True)
class WaiterInfo:
    """A task blocked on a primitive now."""

    task: TaskRef | None
    #: Where it waits.
    waiting_at: Location | None
    #: When it started waiting (seconds since the session started).
    since: float
    waited_for: float
    #: ``acquire``, ``wait``, ``get`` or ``put``.
    operation: str


@dataclass(frozen=True, slots=True)
class PrimitiveInfo:
    """One synchronisation primitive: its holders, waiters and statistics."""

    #: taskscope's id for the primitive (unique within a session).
    id: int
    #: ``lock``, ``semaphore``, ``capacity-limiter``, ``condition``, ``event``, ``queue``.
    kind: str
    #: Public type name, e.g. ``asyncio.Lock``, ``anyio.Semaphore``, ``trio.Lock``.
    type: str
    #: The name given to `track_lock`, else type and creation site.
    name: str
    #: Where it was created (the user's line), when known.
    created_at: Location | None
    #: ``asyncio`` or ``trio``.
    backend: str
    #: Tokens for semaphores and limiters, ``maxsize`` for bounded queues.
    capacity: float | None
    #: False once the primitive has been garbage-collected.
    alive: bool
    holders: tuple[HolderInfo, ...]
    waiters: tuple[WaiterInfo, ...]
    #: Successful acquisitions (holding kinds; 0 for events, conditions and queues).
    acquisitions: int
    #: Waits that blocked (for holding kinds: acquisitions that had to wait).
    waits: int
    #: Share of acquisitions that had to wait (0..1); None without acquisitions.
    contention: float | None
    #: Waits that ended by cancellation or timeout instead of succeeding.
    cancelled_waits: int
    #: Wait time of every acquisition (the uncontended ones count as zero) or, for
    #: events, conditions and queues, of every blocking wait.
    wait: Distribution
    #: Hold time of every released acquisition.
    hold: Distribution
    #: Releases after a hold of at least the threshold.
    held_too_long: int
    #: The longest such hold: seconds, holder and acquire site.
    longest_hold: float | None
    longest_hold_task: TaskRef | None
    longest_hold_at: Location | None


@dataclass(frozen=True, slots=True)
class DeadlockMember:
    """One task of a deadlock cycle."""

    task: TaskRef | None
    #: What it waits for: ``{"primitive": id, "name", "kind"}`` or ``{"task": id, "name"}``.
    waits_for: dict[str, Any] | None
    waiting_at: Location | None
    #: What it holds: ``{"primitive", "name", "kind", "acquired_at"}`` each.
    holds: tuple[dict[str, Any], ...]


@dataclass(frozen=True, slots=True)
class DeadlockInfo:
    """A cycle in the wait-for graph, as detected when it formed."""

    #: When it was detected (seconds since the session started).
    detected: float
    tasks: tuple[DeadlockMember, ...]


@dataclass(frozen=True, slots=True)
class LocksSnapshot:
    """The ``locks`` report section."""

    #: Seconds a hold may last before it is ``lock-held-too-long``.
    held_too_long_threshold: float
    #: True once the program ended: what is still held now is never released.
    program_ended: bool
    #: Primitives tracked now (alive).
    tracked: int
    #: Collected primitives no longer listed (beyond the retained ones).
    dropped: int
    #: Live primitives with any activity, then retained collected ones.
    primitives: tuple[PrimitiveInfo, ...]
    deadlocks: tuple[DeadlockInfo, ...]


# -- the monitor -----------------------------------------------------------------------


class LockMonitor:
    """Tracks synchronisation primitives (section ``locks``).

    Args:
        held_too_long: seconds a primitive may be held before the release is reported
            as ``lock-held-too-long``.
        idle_primitives: also list primitives that were never acquired nor waited on.
    """

    section = "locks"

    def __init__(self, *, held_too_long: float = 1.0, idle_primitives: bool = False) -> None:
        if isinstance(held_too_long, bool) or not isinstance(held_too_long, int | float):
            raise TypeError(f"held_too_long must be seconds (a number), got {held_too_long!r}")
        if not held_too_long > 0:
            raise ValueError(f"held_too_long must be positive, got {held_too_long!r}")
        self.held_too_long = float(held_too_long)
        self.idle_primitives = idle_primitives
        self.tracker: SyncTracker | None = None
        self._patcher: SyncPatcher | None = None
        self._installed = False
        self._lock = threading.Lock()

    # -- lifecycle ------------------------------------------------------------------

    def install(self, registry: Registry) -> None:
        """Wrap the primitives of asyncio now, and of trio and AnyIO when imported."""
        with self._lock:
            if self._installed:
                return
            self.tracker = SyncTracker(registry, held_too_long=self.held_too_long)
            self._patcher = SyncPatcher(self.tracker)
            self._installed = True
        _active_monitors.append(self)
        self._patcher.patch_asyncio()
        _compat.when_imported("trio", self._on_trio)
        _compat.when_imported(_compat_sync.ANYIO_ASYNCIO_BACKEND, self._on_anyio_asyncio)
        _compat.when_imported(_compat_sync.ANYIO_TRIO_BACKEND, self._on_anyio_trio)
        _compat.when_imported(_compat_sync.ANYIO_SYNC, self._on_anyio_sync)

    def _guarded(self, what: str, patch: Any, *args: Any) -> None:
        if not self._installed or self._patcher is None:
            return  # uninstalled before the import happened
        try:
            patch(*args)
        except Exception as exc:  # noqa: BLE001  # never break an import
            internal_error(f"lock monitor: patching {what}", exc)

    def _on_trio(self, module: ModuleType) -> None:
        if self._patcher is not None:
            self._guarded("trio", self._patcher.patch_trio, module)

    def _on_anyio_asyncio(self, module: ModuleType) -> None:
        if self._patcher is not None:
            self._guarded("anyio", self._patcher.patch_anyio_backend, module, "asyncio")

    def _on_anyio_trio(self, module: ModuleType) -> None:
        if self._patcher is not None:
            self._guarded("anyio", self._patcher.patch_anyio_backend, module, "trio")

    def _on_anyio_sync(self, module: ModuleType) -> None:
        if self._patcher is not None:
            self._guarded("anyio", self._patcher.patch_anyio_condition, module)

    def uninstall(self) -> None:
        """Restore every wrapped class; the data stays readable."""
        with self._lock:
            if not self._installed:
                return
            self._installed = False
        if self._patcher is not None:
            self._patcher.undo()
        if self in _active_monitors:
            _active_monitors.remove(self)

    def end_of_program(self) -> None:
        """From now on, whatever is still held is ``lock-never-released``."""
        if self.tracker is not None:
            self.tracker.ended = True

    # -- explicit tracking ----------------------------------------------------------

    def track(self, obj: Any, *, name: str | None, kind: str | None, depth: int) -> Any:
        """Name `obj` and track it (see `track_lock`)."""
        tracker = self.tracker
        if tracker is None:
            return obj
        state = tracker.states.get(id(obj))
        if state is None:
            detected_kind, backend = _kind_of(obj)
            site = tracker.user_location(sys._getframe(depth + 1))
            type_name = f"{type(obj).__module__}.{type(obj).__qualname__}"
            # An object of a class the monitor does not wrap is listed by its name,
            # without holders or waits (docs/locks.md).
            tracker.register(obj, kind or detected_kind, type_name, backend, site, name)
        elif name is not None:
            state.name = name
        return obj

    # -- reading --------------------------------------------------------------------

    def snapshot(self) -> LocksSnapshot:
        """Return the ``locks`` section as frozen records."""
        tracker = self.tracker
        if tracker is None:
            return LocksSnapshot(self.held_too_long, False, 0, 0, (), ())
        try:
            tracker.check_all_deadlocks()
        except Exception as exc:  # noqa: BLE001
            internal_error("lock monitor: deadlock check", exc)
        now = tracker.clock()
        started = tracker.started
        states = list(tracker.states.values())
        listed = [s for s in states if self.idle_primitives or s.active()]
        retired = list(tracker.retired)
        primitives = tuple(
            [_primitive_info(tracker, s, now, started, alive=True) for s in listed]
            + [_primitive_info(tracker, s, now, started, alive=False) for s in retired]
        )
        deadlocks = tuple(_deadlock_info(d) for d in list(tracker.deadlocks))
        return LocksSnapshot(
            held_too_long_threshold=self.held_too_long,
            program_ended=tracker.ended,
            tracked=len(states),
            dropped=0,
            primitives=primitives,
            deadlocks=deadlocks,
        )

    def findings(self, snapshot: LocksSnapshot) -> list[Finding]:
        """Return ``lock-held-too-long``, ``lock-never-released`` and ``deadlock``."""
        from ..analysis._locks import lock_findings

        return lock_findings(snapshot)


#: Installed lock monitors (`track_lock` registers with the newest).
_active_monitors: list[LockMonitor] = []


def _kind_of(obj: Any) -> tuple[str, str]:
    """Guess the kind and backend of a primitive (for `track_lock`)."""
    module = type(obj).__module__
    backend = "trio" if module.startswith("trio") or "_trio" in module else "asyncio"
    names = {cls.__name__ for cls in type(obj).__mro__}
    for kind, markers in (
        ("capacity-limiter", ("CapacityLimiter",)),
        ("semaphore", ("Semaphore", "BoundedSemaphore")),
        ("condition", ("Condition",)),
        ("event", ("Event",)),
        ("queue", ("Queue",)),
    ):
        if names.intersection(markers):
            return kind, backend
    return "lock", backend


def track_lock(obj: Any, *, name: str | None = None, kind: str | None = None) -> Any:
    """Name a synchronisation primitive (and track it, if it was made before install).

    Every primitive the lock monitor knows (asyncio, AnyIO and trio locks, semaphores,
    capacity limiters, conditions, events and queues) is tracked automatically; this
    gives it a readable name in the report, or starts tracking one created before
    taskscope was installed. Tracking the same object again only renames it. Without an
    installed lock monitor this does nothing.

    Args:
        obj: the primitive.
        name: the name shown in the report and findings.
        kind: override the detected kind (``lock``, ``semaphore``, ...).

    Returns:
        `obj` itself, so ``lock = track_lock(asyncio.Lock(), name="db")`` works.

    Raises:
        TypeError: `obj` is None, cannot be weakly referenced, or has neither
            ``acquire`` nor ``wait`` (it is not a synchronisation primitive).
    """
    if obj is None or not (hasattr(obj, "acquire") or hasattr(obj, "wait") or hasattr(obj, "get")):
        raise TypeError(
            f"track_lock needs a lock, semaphore, condition, event or queue, got {obj!r}; "
            "use track_resource() for connections, files and other resources"
        )
    if name is not None and not isinstance(name, str):
        raise TypeError(f"track_lock name must be a string, got {name!r}")
    try:
        import weakref

        weakref.ref(obj)
    except TypeError:
        raise TypeError(
            f"track_lock cannot track {type(obj).__qualname__} objects: they do not "
            "support weak references (add '__weakref__' to its __slots__)"
        ) from None
    if not _active_monitors:
        return obj
    return _active_monitors[-1].track(obj, name=name, kind=kind, depth=1)


# -- snapshot helpers ------------------------------------------------------------------


def _ref(record: TaskRecord | None) -> TaskRef | None:
    return TaskRef(record.id, record.current_name()) if record is not None else None


def _distribution(buckets: dict[int, int], largest: int, zeros: int) -> Distribution:
    count = sum(buckets.values()) + zeros
    if count == 0:
        return Distribution(0, 0.0, 0.0, 0.0)
    return Distribution(
        count,
        quantile(buckets, largest, 0.5, zeros),
        quantile(buckets, largest, 0.99, zeros),
        largest * 1e-9,
    )


def _primitive_info(
    tracker: SyncTracker, state: PrimitiveState, now: int, started: int, *, alive: bool
) -> PrimitiveInfo:
    """Build the record of one primitive (times in the state are ns)."""

    def location(code: Any, lasti: int, record: TaskRecord | None) -> Location | None:
        # No user frame (a task that runs ``lock.acquire`` itself): where it was created.
        found = tracker.location(code, lasti)
        if found is None and record is not None:
            found = to_location(record.created_at)
        return found

    holders = tuple(
        HolderInfo(
            task=_ref(record),
            acquired_at=location(code, lasti, record),
            since=(since - started) * 1e-9,
            held_for=(now - since) * 1e-9,
            task_ended=record is not None and record.ended is not None,
        )
        for _key, record, since, code, lasti in state.current_holds()
    )
    waiters = tuple(
        WaiterInfo(
            _ref(record),
            location(code, lasti, record),
            (since - started) * 1e-9,
            (now - since) * 1e-9,
            operation,
        )
        for record, since, code, lasti, operation in list((state.waits or {}).values())
    )
    holding = state.kind in HOLDING_KINDS
    hold_buckets = bucket_counts(state.hist, wait=False)
    wait_buckets = bucket_counts(state.hist, wait=True)
    waits = sum(wait_buckets.values())
    acquisitions = sum(hold_buckets.values()) + len(state.current_holds())
    zeros = max(0, acquisitions - waits) if holding else 0
    worst = state.worst_hold
    return PrimitiveInfo(
        id=state.id,
        kind=state.kind,
        type=state.type_name,
        name=display_name(state),
        created_at=to_location(state.created_at),
        backend=state.backend,
        capacity=state.capacity,
        alive=alive,
        holders=holders,
        waiters=waiters,
        acquisitions=acquisitions,
        waits=waits,
        contention=min(1.0, waits / acquisitions) if holding and acquisitions else None,
        cancelled_waits=state.cancelled_waits,
        wait=_distribution(wait_buckets, state.wait_max, zeros),
        hold=_distribution(hold_buckets, state.hold_max, 0),
        held_too_long=state.held_too_long,
        longest_hold=worst[0] * 1e-9 if worst is not None else None,
        longest_hold_task=_ref(worst[1]) if worst is not None else None,
        longest_hold_at=location(worst[2], worst[3], worst[1]) if worst is not None else None,
    )


def _deadlock_info(raw: dict[str, Any]) -> DeadlockInfo:
    members = []
    for member in raw["tasks"]:
        task = member["task"]
        members.append(
            DeadlockMember(
                task=TaskRef(task[0], task[1]) if task is not None else None,
                waits_for=member["waits_for"],
                waiting_at=member["waiting_at"],
                holds=tuple(member["holds"]),
            )
        )
    return DeadlockInfo(detected=raw["detected"], tasks=tuple(members))
