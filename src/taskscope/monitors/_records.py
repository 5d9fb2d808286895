"""Frozen records of the loop-health and system monitors (built on the watchdog thread
or at snapshot time, never per step)."""

from __future__ import annotations

from dataclasses import dataclass

from .._core._records import Location, Snapshot, TaskRef


@dataclass(frozen=True, slots=True)
class StackSample:
    """The loop thread's stack, sampled while the loop was stalled."""

    #: When the sample was taken (session seconds).
    at: float
    #: The frames, innermost first (the running line is ``frames[0]``).
    frames: tuple[Location, ...]


@dataclass(frozen=True, slots=True)
class StalledTask:
    """A task on the chain of the task that blocked the loop (itself, its parent, ...)."""

    id: int
    name: str
    #: Qualified name of its coroutine function.
    coroutine: str
    #: Where it was created.
    created_at: Location | None


@dataclass(frozen=True, slots=True)
class BlockingCall:
    """The blocking function a stall was spent in, when it is a known one."""

    #: What was called, e.g. ``time.sleep``, ``socket.recv``, ``subprocess.run``.
    function: str
    #: ``sleep``, ``socket``, ``ssl``, ``dns``, ``file``, ``subprocess``, ``http``,
    #: ``lock`` (a lock, event, queue, join or future wait) or ``stdin``.
    category: str


@dataclass(frozen=True, slots=True)
class Stall:
    """The event loop stayed inside one task step or callback past the threshold."""

    #: Number of the stall within the session (1, 2, ...).
    id: int
    #: ``asyncio`` or ``trio``.
    backend: str
    #: The loop thread's name and ident.
    thread: str
    thread_id: int
    #: When the step or callback started (session seconds); for a callback, an upper
    #: bound (the loop had stopped turning by then).
    start: float
    #: How long it lasted; for an `ongoing` stall, how long so far.
    duration: float
    #: True while the loop is still stuck (a hang, or a report written during the stall).
    ongoing: bool
    #: When the watchdog noticed (session seconds).
    detected: float
    #: The task whose step blocked, outermost last: the task, its parent, ... (empty
    #: when the loop was inside a plain callback).
    tasks: tuple[StalledTask, ...]
    #: The blocking line: the innermost user frame, the most frequent across samples.
    location: Location | None
    #: The known blocking function, if the stack shows one.
    blocking: BlockingCall | None
    #: Stacks sampled during the stall (bounded).
    samples: tuple[StackSample, ...]

    @property
    def task(self) -> TaskRef | None:
        """The task whose step blocked the loop, if a task step did."""
        if not self.tasks:
            return None
        return TaskRef(id=self.tasks[0].id, name=self.tasks[0].name)


@dataclass(frozen=True, slots=True)
class LagStatistics:
    """How late ready callbacks ran: the loop's scheduling latency.

    The watchdog hands the loop a probe callback every ``lag_interval`` (thread-safely,
    as a ready callback) and measures how long it waited to run.
    """

    #: Probes answered.
    count: int
    mean: float
    p50: float
    p90: float
    p99: float
    max: float
    #: Histogram: (upper bound in seconds, probes) for each non-empty bucket; buckets
    #: grow by a factor of 2**0.25, so percentiles are within 19%.
    buckets: tuple[tuple[float, int], ...]
    #: (session seconds, worst lag, probes) per interval, oldest first; bounded (when
    #: full, neighbouring points merge and the interval doubles).
    series: tuple[tuple[float, float, int], ...]


@dataclass(frozen=True, slots=True)
class SpinningTask:
    """A task that kept rescheduling itself without waiting for I/O or time."""

    task: StalledTask
    #: When the watchdog first saw the streak (session seconds).
    start: float
    #: How long the streak lasted (so far, if `ongoing`).
    duration: float
    #: Steps taken during the streak.
    steps: int
    #: Steps per second during the streak.
    rate: float
    ongoing: bool


@dataclass(frozen=True, slots=True)
class LoopHealth:
    """Everything the loop watchdog saw."""

    #: The thresholds in force (seconds).
    block_threshold: float
    spin_threshold: float
    #: Stalls, longest first (bounded; `stalls_dropped` counts the shorter ones left out).
    stalls: tuple[Stall, ...]
    stalls_total: int
    stalls_dropped: int
    #: Total time the loops spent stalled, and that as a fraction of the session.
    blocked_time: float
    blocked_fraction: float
    longest_stall: float
    lag: LagStatistics
    #: Spinning tasks (bounded).
    spinning: tuple[SpinningTask, ...]
    #: Event loops watched so far.
    loops_seen: int


@dataclass(frozen=True, slots=True)
class SystemSample:
    """One reading of the process's resources (None: not available without psutil)."""

    #: Session seconds.
    at: float
    cpu_user: float
    cpu_system: float
    #: CPU use since the previous sample, in cores (1.0 = one core fully busy).
    cpu_percent: float | None
    rss: int | None
    threads: int
    open_files: int | None
    ctx_switches_voluntary: int | None
    ctx_switches_involuntary: int | None
    gc_collections: int
    #: Time spent in the garbage collector since the session started.
    gc_pause_total: float
    tasks_alive: int


@dataclass(frozen=True, slots=True)
class SystemHealth:
    """The system monitor's time series and totals."""

    interval: float
    #: False when psutil is not installed: RSS, files and context switches are None.
    psutil: bool
    samples: tuple[SystemSample, ...]
    #: Collections per generation, total GC pause, longest GC pause.
    gc_collections: tuple[int, ...]
    gc_pause_total: float
    gc_pause_max: float


@dataclass(frozen=True, slots=True)
class HealthSnapshot(Snapshot):
    """A `Snapshot` with the loop watchdog's and the system monitor's data."""

    loop: LoopHealth | None = None
    system: SystemHealth | None = None
