"""Loop health: stalls (seen while they last), scheduling lag, and spinning tasks.

Everything here runs on the watchdog thread except `_answer`, the probe callback,
which runs on the loop and does three attribute stores.

How a stall is seen (also in docs/loop-health.md):

* **Probes.** Every ``lag_interval`` the watchdog hands each watched loop a probe: a
  ready callback, scheduled thread-safely (``loop.call_soon_threadsafe``, trio's
  ``TrioToken.run_sync_soon``). An idle loop wakes up and runs it at once, so the wait
  is the loop's scheduling lag; a loop that is inside a long step cannot run it.
* **Stalls.** While a probe is unanswered, the watchdog looks for the task step in
  progress on that loop (the backends set ``TaskRecord.step_start`` for the duration
  of a step): past ``block_threshold``, it is a stall, timed from the step's start.
  With no task step in progress, the loop is inside a plain callback, timed from the
  probe. A loop waiting in ``select()`` answers probes, so it is never a stall.
* **Samples.** The loop thread's stack is read with ``sys._current_frames()`` during
  the stall, at growing intervals, at most `MAX_SAMPLES` times per stall.
* **Spinning.** The backends store ``waited_at = steps`` each time a task is
  woken by a future (I/O, a timer, another task). A task whose steps keep growing with
  ``waited_at`` unchanged reschedules itself without ever waiting.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Final

from .._core._faults import internal_error
from .._core._location import to_location
from ._records import LagStatistics, LoopHealth, SpinningTask, StackSample, Stall, StalledTask
from ._series import Histogram, Series
from ._stacks import classify, innermost_user, sample_stack, thread_holds_frame

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from .._core._location import RawLocation
    from .._core._registry import Registry, TaskRecord

#: Stack samples kept per stall.
MAX_SAMPLES: Final = 20
#: Each sample waits this much longer than the previous one after it.
_SAMPLE_BACKOFF: Final = 1.25
#: Stalls kept individually (the longest ones); all of them count in the totals.
MAX_STALLS: Final = 100
#: Spinning tasks kept individually.
MAX_SPINNING: Final = 100
#: Points of the lag time series.
SERIES_POINTS: Final = 512
#: A self-rescheduling streak needs this many steps to count as spinning.
MIN_SPIN_STEPS: Final = 10
#: Parent chain depth reported for a stalled task.
_MAX_CHAIN: Final = 16


class _Probe:
    """One watched event loop (an asyncio loop or a trio run)."""

    __slots__ = (
        "__weakref__",
        "answered",
        "answered_seq",
        "backend",
        "is_running",
        "next_send",
        "outstanding",
        "send",
        "sent",
        "seq",
        "stall",
        "thread_id",
        "window",
    )

    def __init__(
        self,
        backend: str,
        send: Callable[..., Any],
        is_running: Callable[[], bool],
        thread_id: int,
    ) -> None:
        self.backend = backend
        #: Schedules ``callback(*args)`` on the loop from any thread.
        self.send = send
        self.is_running = is_running
        #: The loop's thread, as last seen by a probe answer.
        self.thread_id = thread_id
        self.seq = 0
        self.answered_seq = 0
        self.sent = 0.0
        self.answered = 0.0
        self.outstanding = False
        self.next_send = 0.0
        self.stall: _OpenStall | None = None
        #: (start, worst lag, probes) of the series interval in progress.
        self.window: list[float] = [0.0, 0.0, 0.0]


def _answer(probe: _Probe, seq: int, clock: Callable[[], float]) -> None:
    """The probe callback, run by the loop: note when (order matters, see `_poll_probe`)."""
    probe.answered = clock()
    probe.thread_id = threading.get_ident()
    probe.answered_seq = seq


class _OpenStall:
    """A stall in progress (mutable, watchdog thread only)."""

    __slots__ = (
        "busy_before",
        "detected",
        "last_open",
        "next_sample",
        "number",
        "probe",
        "record",
        "samples",
        "spacing",
        "start",
        "step_start",
        "steps_before",
        "tasks",
        "thread_id",
        "thread_name",
    )

    def __init__(self, number: int, probe: _Probe, start: float, detected: float) -> None:
        self.number = number
        self.probe = probe
        self.start = start
        self.detected = detected
        #: The last poll that saw the stall still in progress.
        self.last_open = detected
        self.thread_id = probe.thread_id
        self.thread_name = _thread_name(probe.thread_id)
        self.record: TaskRecord | None = None
        self.step_start = 0.0
        self.steps_before = 0
        self.busy_before = 0.0
        self.tasks: tuple[StalledTask, ...] = ()
        self.samples: list[tuple[float, list[RawLocation]]] = []
        self.next_sample = detected
        self.spacing = 0.0


class _Streak:
    """A task seen rescheduling itself (mutable, watchdog thread only)."""

    __slots__ = ("first_seen", "last_seen", "last_steps", "record", "steps_at_start", "waited_at")

    def __init__(self, record: TaskRecord, now: float) -> None:
        self.record = record
        self.waited_at = record.waited_at
        self.steps_at_start = record.steps
        self.last_steps = record.steps
        self.first_seen = now
        self.last_seen = now


def _thread_name(thread_id: int) -> str:
    for thread in threading.enumerate():
        if thread.ident == thread_id:
            return thread.name
    return f"thread-{thread_id}"


class LoopMonitor:
    """Watches every event loop taskscope sees; polled by the watchdog thread."""

    def __init__(
        self,
        registry: Registry,
        *,
        block_threshold: float,
        spin_threshold: float,
        lag_interval: float,
    ) -> None:
        self.registry = registry
        self.clock = registry.clock
        self.block_threshold = block_threshold
        self.spin_threshold = spin_threshold
        # A probe must be sent soon enough after a stall starts for the stall to be
        # seen by `block_threshold`, so the interval is at most half of it.
        self.probe_interval = min(lag_interval, block_threshold / 2)
        #: Probe age past which the task steps in progress are looked at.
        self.busy_age = block_threshold / 4
        self.spin_check = min(spin_threshold / 4, 0.25)
        self._probes: list[_Probe] = []
        self._seen_loops: weakref.WeakSet[Any] = weakref.WeakSet()
        self._lock = threading.Lock()
        self.lag = Histogram()
        self.series: Series[tuple[float, float, int]] = Series(SERIES_POINTS, _merge_points)
        self.stalls: list[Stall] = []
        self.stalls_total = 0
        self.stalls_dropped = 0
        self.blocked_time = 0.0
        self.longest_stall = 0.0
        self.loops_seen = 0
        self._streaks: dict[int, _Streak] = {}
        self.spinning: list[SpinningTask] = []
        self._next_spin_check = 0.0
        self._trio_patches: Any = None

    # -- loops ------------------------------------------------------------------------

    def watch_asyncio_loop(self, loop: Any) -> None:
        """Start probing an asyncio loop (called by the asyncio backend, on the loop's
        thread, when it first sees a task of that loop)."""
        with self._lock:
            if loop in self._seen_loops:
                return
            self._seen_loops.add(loop)
        ref = weakref.ref(loop)

        def send(callback: Any, *args: Any) -> None:
            target = ref()
            if target is None:
                raise RuntimeError("the loop is gone")
            target.call_soon_threadsafe(callback, *args)

        def is_running() -> bool:
            target = ref()
            return target is not None and target.is_running() and not target.is_closed()

        self._add(_Probe("asyncio", send, is_running, threading.get_ident()))

    def watch_trio_runner(self, runner: Any) -> None:
        """Start probing a trio run (its ``Runner``, on the thread that will run it)."""
        with self._lock:
            if runner in self._seen_loops:
                return
            self._seen_loops.add(runner)
        token = runner.current_trio_token()
        runner_ref = weakref.ref(runner)
        finished: list[bool] = []

        def send(callback: Any, *args: Any) -> None:
            try:
                token.run_sync_soon(callback, *args)
            except Exception:
                finished.append(True)
                raise

        def is_running() -> bool:
            return not finished and runner_ref() is not None

        self._add(_Probe("trio", send, is_running, threading.get_ident()))

    def watch_trio_runs(self, module: ModuleType) -> None:
        """Probe every future trio run (wrapping ``setup_runner``), and the current one."""
        from .._backends import _compat
        from .._backends._patching import Patches

        del module  # the hook point is trio's runner module, imported with trio
        run_module = _compat.trio_run_module()
        if run_module is None:
            return  # the trio backend has said this trio is not supported
        patches = Patches()
        original = getattr(run_module, _compat.TRIO_SETUP_RUNNER)
        watch = self.watch_trio_runner

        def setup_runner(*args: Any, **kwargs: Any) -> Any:
            runner = original(*args, **kwargs)
            try:
                watch(runner)
            except Exception as exc:  # noqa: BLE001  # the run goes on unwatched
                internal_error("loop monitor: watching a trio run", exc)
            return runner

        patches.replace(run_module, _compat.TRIO_SETUP_RUNNER, setup_runner)
        self._trio_patches = patches
        runner = _compat.trio_current_runner()
        if runner is not None:
            watch(runner)

    def unwatch_trio_runs(self) -> None:
        """Restore ``setup_runner`` (before the trio backend restores its own wrapper)."""
        if self._trio_patches is not None:
            self._trio_patches.undo()
            self._trio_patches = None

    def _add(self, probe: _Probe) -> None:
        with self._lock:
            self._probes.append(probe)
            self.loops_seen += 1

    # -- the watchdog's poll ----------------------------------------------------------

    def poll(self, now: float) -> float:
        """Check every loop once (watchdog thread); return when to check again: soon
        while a probe is unanswered, else when the next probe or spin check is due."""
        wake = self._next_spin_check
        for probe in list(self._probes):
            try:
                self._poll_probe(probe, now)
            except Exception as exc:  # noqa: BLE001  # one bad loop never stops the others
                internal_error("loop monitor: poll", exc)
                self._drop(probe, now)
            # An idle loop answers within microseconds: look again when the next probe
            # is due (one wakeup per probe). A probe still unanswered then means a busy
            # loop: look every watchdog period until it answers.
            busy = probe.outstanding and now >= probe.next_send
            wake = min(wake, now if busy or probe.stall is not None else probe.next_send)
        if now >= self._next_spin_check:
            self._next_spin_check = now + self.spin_check
            self._check_spinning(now)
        return wake

    def _drop(self, probe: _Probe, now: float) -> None:
        if probe.stall is not None:
            self._close(probe.stall, now)
        with self._lock:
            if probe in self._probes:
                self._probes.remove(probe)

    def _poll_probe(self, probe: _Probe, now: float) -> None:
        if not probe.is_running():
            # Stopped between runs (or closed): its probe waits, unanswered, without the
            # loop being stuck. Forget it; a late answer is ignored by its number.
            if probe.stall is not None:
                self._close(probe.stall, now)
            probe.outstanding = False
            probe.seq += 1
            return
        if probe.outstanding and probe.answered_seq == probe.seq:
            probe.outstanding = False
            self._note_lag(probe, probe.answered - probe.sent, probe.answered)
        stall = probe.stall
        if stall is not None:
            if self._stall_over(stall, now):
                self._close(stall, now)
            else:
                stall.last_open = now
                self._maybe_sample(stall, now)
        elif probe.outstanding and now - probe.sent >= self.busy_age:
            self._look_for_stall(probe, now)
        if not probe.outstanding and now >= probe.next_send:
            probe.seq += 1
            probe.sent = self.clock()
            probe.outstanding = True
            probe.next_send = now + self.probe_interval
            try:
                probe.send(_answer, probe, probe.seq, self.clock)
            except Exception:  # noqa: BLE001  # closed loop, finished run
                self._drop(probe, now)

    def _note_lag(self, probe: _Probe, lag: float, at: float) -> None:
        lag = max(0.0, lag)
        self.lag.add(lag)
        window = probe.window
        elapsed = self.registry.elapsed(at)
        if window[2] and elapsed - window[0] >= 1.0:
            self.series.append((window[0], window[1], int(window[2])))
            window[:] = [0.0, 0.0, 0.0]
        if not window[2]:
            window[0] = elapsed
        window[1] = max(window[1], lag)
        window[2] += 1

    # -- stalls -----------------------------------------------------------------------

    def _running_record(self, probe: _Probe) -> TaskRecord | None:
        """Return the task record whose step is in progress on `probe`'s loop."""
        candidates = [
            record
            for record in list(self.registry.live.values())
            if record.step_start and record.backend == probe.backend
        ]
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        for record in candidates:
            if thread_holds_frame(probe.thread_id, _coroutine_frame(record)):
                return record
        return None

    def _look_for_stall(self, probe: _Probe, now: float) -> None:
        record = self._running_record(probe)
        if record is not None:
            step_start = record.step_start
            if not step_start or now - step_start < self.block_threshold:
                return  # the loop turns, step after step: lag, not a stall
            stall = self._open(probe, step_start, now)
            stall.record = record
            stall.step_start = step_start
            stall.steps_before = record.steps
            stall.busy_before = record.busy
            stall.tasks = self._chain(record)
        elif now - probe.sent >= self.block_threshold:
            self._open(probe, probe.sent, now)

    def _open(self, probe: _Probe, start: float, now: float) -> _OpenStall:
        self.stalls_total += 1
        stall = _OpenStall(self.stalls_total, probe, start, now)
        stall.spacing = max(self.block_threshold / 2, 0.02)
        probe.stall = stall
        self._maybe_sample(stall, now)
        return stall

    def _stall_over(self, stall: _OpenStall, now: float) -> bool:
        record = stall.record
        if record is not None:
            return record.step_start != stall.step_start
        probe = stall.probe
        return probe.answered_seq == probe.seq or not probe.outstanding

    def _end_of(self, stall: _OpenStall, now: float) -> float:
        record = stall.record
        if record is not None:
            if record.steps == stall.steps_before + 1:
                # The stalled step was the only one since: its exact duration is known.
                return stall.start + (record.busy - stall.busy_before)
            longest = record.longest_step
            if stall.last_open - stall.start <= longest <= now - stall.start:
                # Later steps ran too, but the stalled one is the task's longest.
                return stall.start + longest
        probe = stall.probe
        if record is None and probe.answered_seq == probe.seq:
            return probe.answered
        return now

    def _maybe_sample(self, stall: _OpenStall, now: float) -> None:
        if len(stall.samples) >= MAX_SAMPLES or now < stall.next_sample:
            return
        frames = sample_stack(stall.thread_id)
        if frames is None:
            return
        stall.samples.append((now, frames))
        stall.next_sample = now + stall.spacing
        stall.spacing *= _SAMPLE_BACKOFF

    def _close(self, stall: _OpenStall, now: float) -> None:
        stall.probe.stall = None
        done = self._freeze(stall, self._end_of(stall, now), ongoing=False, now=now)
        self.blocked_time += done.duration
        self.longest_stall = max(self.longest_stall, done.duration)
        stalls = self.stalls
        stalls.append(done)
        if len(stalls) > MAX_STALLS:
            stalls.sort(key=lambda s: -s.duration)
            del stalls[MAX_STALLS:]
            self.stalls_dropped += 1

    def _freeze(self, stall: _OpenStall, end: float, *, ongoing: bool, now: float) -> Stall:
        elapsed = self.registry.elapsed
        samples = list(stall.samples)
        locations = self.registry.locations
        # The blocking line: the innermost user frame seen most often (for a CPU-bound
        # loop the line moves within the hot function; the first sample wins ties).
        tally: dict[RawLocation, int] = {}
        best: tuple[int, list[RawLocation]] | None = None
        for _at, frames in samples:
            found = innermost_user(frames, locations)
            if found is not None:
                tally[found[1]] = tally.get(found[1], 0) + 1
        line: RawLocation | None = None
        if tally:
            line = max(tally, key=lambda raw: tally[raw])
            for _at, frames in samples:
                found = innermost_user(frames, locations)
                if found is not None and found[1] == line:
                    best = (found[0], frames)
                    break
        if best is not None:
            blocking = classify(best[1], best[0])
        elif samples:
            blocking = classify(samples[0][1], None)
        else:
            blocking = None
        return Stall(
            id=stall.number,
            backend=stall.probe.backend,
            thread=stall.thread_name,
            thread_id=stall.thread_id,
            start=elapsed(stall.start),
            duration=max(0.0, end - stall.start),
            ongoing=ongoing,
            detected=elapsed(stall.detected),
            tasks=stall.tasks,
            location=to_location(line),
            blocking=blocking,
            samples=tuple(
                StackSample(
                    at=elapsed(at),
                    frames=tuple(loc for loc in map(to_location, frames) if loc is not None),
                )
                for at, frames in samples
            ),
        )

    def _chain(self, record: TaskRecord) -> tuple[StalledTask, ...]:
        """Return the task and its ancestors, as far as they are known."""
        by_id = {r.id: r for r in list(self.registry.live.values())}
        chain: list[StalledTask] = []
        current: TaskRecord | None = record
        while current is not None and len(chain) < _MAX_CHAIN:
            chain.append(_stalled_task(current))
            parent = current.parent_id
            current = by_id.get(parent) if parent is not None else None
            if current is None and parent is not None:
                current = next((r for r in list(self.registry.history) if r.id == parent), None)
        return tuple(chain)

    # -- spinning ---------------------------------------------------------------------

    def _check_spinning(self, now: float) -> None:
        streaks = self._streaks
        seen: set[int] = set()
        for record in list(self.registry.live.values()):
            if record.steps - record.waited_at < 2:
                continue
            seen.add(record.id)
            streak = streaks.get(record.id)
            if streak is not None and (
                streak.waited_at != record.waited_at or record.steps == streak.last_steps
            ):
                self._end_streak(streak)
                streak = None
            if streak is None:
                streaks[record.id] = _Streak(record, now)
                continue
            streak.last_steps = record.steps
            streak.last_seen = now
        for key in [key for key in streaks if key not in seen]:
            self._end_streak(streaks[key])

    def _end_streak(self, streak: _Streak) -> None:
        self._streaks.pop(streak.record.id, None)
        spin = self._spin_of(streak, ongoing=False)
        if spin is not None:
            self.spinning.append(spin)
            if len(self.spinning) > MAX_SPINNING:
                self.spinning.sort(key=lambda s: -s.duration)
                del self.spinning[MAX_SPINNING:]

    def _spin_of(self, streak: _Streak, *, ongoing: bool) -> SpinningTask | None:
        duration = streak.last_seen - streak.first_seen
        steps = streak.last_steps - streak.steps_at_start
        if duration < self.spin_threshold or steps < MIN_SPIN_STEPS:
            return None
        return SpinningTask(
            task=_stalled_task(streak.record),
            start=self.registry.elapsed(streak.first_seen),
            duration=duration,
            steps=steps,
            rate=steps / duration if duration > 0 else 0.0,
            ongoing=ongoing,
        )

    # -- reading ----------------------------------------------------------------------

    def health(self, elapsed: float) -> LoopHealth:
        """Return the frozen picture, ongoing stalls and spins included (any thread)."""
        now = self.clock()
        stalls = list(self.stalls)
        blocked = self.blocked_time
        longest = self.longest_stall
        for stall in self._open_stalls(now):
            stalls.append(stall)
            blocked += stall.duration
            longest = max(longest, stall.duration)
        stalls.sort(key=lambda s: -s.duration)
        spinning = list(self.spinning)
        for streak in list(self._streaks.values()):
            spin = self._spin_of(streak, ongoing=True)
            if spin is not None:
                spinning.append(spin)
        lag = self.lag
        series = list(self.series.snapshot())
        for probe in list(self._probes):
            window = list(probe.window)
            if window[2]:
                series.append((window[0], window[1], int(window[2])))
        series.sort()
        return LoopHealth(
            block_threshold=self.block_threshold,
            spin_threshold=self.spin_threshold,
            stalls=tuple(stalls),
            stalls_total=self.stalls_total,
            stalls_dropped=self.stalls_dropped,
            blocked_time=blocked,
            blocked_fraction=min(1.0, blocked / elapsed) if elapsed > 0 else 0.0,
            longest_stall=longest,
            lag=LagStatistics(
                count=lag.count,
                mean=lag.total / lag.count if lag.count else 0.0,
                p50=lag.percentile(0.5),
                p90=lag.percentile(0.9),
                p99=lag.percentile(0.99),
                max=lag.max,
                buckets=lag.buckets(),
                series=tuple(series),
            ),
            spinning=tuple(sorted(spinning, key=lambda s: -s.duration)),
            loops_seen=self.loops_seen,
        )

    def _open_stalls(self, now: float) -> list[Stall]:
        """Freeze the stalls the watchdog has open: ongoing, or over since its last poll
        (the watchdog closes those on its next poll; this only reads)."""
        stalls = []
        for probe in list(self._probes):
            stall = probe.stall
            if stall is None:
                continue
            if self._stall_over(stall, now) or not probe.is_running():
                stalls.append(self._freeze(stall, self._end_of(stall, now), ongoing=False, now=now))
            else:
                stalls.append(self._freeze(stall, now, ongoing=True, now=now))
        return stalls

    def current_stalls(self) -> list[Stall]:
        """Return the stalls in progress now."""
        return [stall for stall in self._open_stalls(self.clock()) if stall.ongoing]


def _merge_points(
    a: tuple[float, float, int], b: tuple[float, float, int]
) -> tuple[float, float, int]:
    return (a[0], max(a[1], b[1]), a[2] + b[2])


def _coroutine_frame(record: TaskRecord) -> Any:
    task = record.task()
    if task is None:
        return None
    coro = getattr(task, "coro", None)
    if coro is None:
        get_coro = getattr(task, "get_coro", None)
        coro = get_coro() if get_coro is not None else None
    return getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)


def _stalled_task(record: TaskRecord) -> StalledTask:
    return StalledTask(
        id=record.id,
        name=record.current_name(),
        coroutine=record.coroutine,
        created_at=to_location(record.created_at),
    )
