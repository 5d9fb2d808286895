"""The lock monitor's C accelerator (``_lock_speedups.c``) and its pure-Python twin.

The whole suite runs on both (``make pytest-pure``); these tests pin what is specific to
having two: which one runs, that both report the same figures for the same program,
that the fields the C side defers (the holder tuple, pending hold-time buckets) read
the same from Python, and that a failure of the bookkeeping never reaches the program.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
from typing import TYPE_CHECKING, Any

import pytest

import taskscope
from taskscope._backends import _compat_sync
from taskscope._core import _accel
from taskscope._core._faults import internal_error_counts, reset_internal_errors
from taskscope.monitors._locks import LockMonitor
from tests.conftest import line_of

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

    from taskscope.monitors._locks import PrimitiveInfo

pytestmark = pytest.mark.skipif(
    not _compat_sync.ASYNCIO_LOCK_INLINE, reason="the inlined asyncio.Lock path is 3.11-3.14"
)


class _ManualClock:
    """A registry clock (seconds) that moves only when told to, or raises when broken."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.failing = False

    def __call__(self) -> float:
        if self.failing:
            raise ZeroDivisionError("clock broke")
        return self.now


def _run_tracked(
    main: Callable[[_ManualClock], Coroutine[Any, Any, Any]],
) -> tuple[LockMonitor, Any]:
    """Run `main(clock)` under a lock monitor whose registry uses a manual clock."""
    clock = _ManualClock()
    session = taskscope.install(clock=clock)
    monitor = LockMonitor(held_too_long=0.001)
    monitor.install(session.registry)
    try:
        result = asyncio.run(main(clock))
    finally:
        monitor.uninstall()
        session.uninstall()
    return monitor, result


def _figures(info: PrimitiveInfo) -> tuple[Any, ...]:
    """Everything a primitive reports, but its id (which differs between sessions)."""
    return (
        info.kind,
        info.created_at,
        info.acquisitions,
        info.waits,
        info.contention,
        info.wait,
        info.hold,
        info.held_too_long,
        info.longest_hold,
        info.longest_hold_at,
        info.longest_hold_task is not None,
        [(h.acquired_at, h.since, h.held_for, h.task_ended) for h in info.holders],
    )


async def _uncontended(clock: _ManualClock) -> list[Any]:
    """Hold one lock for 1, 2, 4, ... ns (a new bucket each time), then 2 ms, then
    through ``acquire``/``release``, and snapshot it while held."""
    lock = asyncio.Lock()  # created
    for delay in [*((1 << shift) * 1e-9 for shift in range(12)), 0.002]:
        async with lock:  # with
            clock.now += delay
    for _ in range(2):
        await lock.acquire()
        clock.now += 3e-9
        lock.release()
    seen = []
    async with lock:  # held
        clock.now += 5e-9
        seen.append(_snapshot_of_created())
    return seen


_monitors: list[LockMonitor] = []


def _snapshot_of_created() -> PrimitiveInfo:
    """The lock of `_uncontended`, from the monitor that runs now."""
    snapshot = _monitors[-1].snapshot()
    return next(p for p in snapshot.primitives if p.created_at and p.created_at.line == _CREATED)


_CREATED = line_of("created")


@pytest.fixture
def both_paths() -> list[str]:
    """The names of the hook implementations to compare (C only where it is built)."""
    return ["c", "pure"] if _accel.lock_speedups is not None else ["pure"]


def _run_on(path: str, monkeypatch: pytest.MonkeyPatch) -> tuple[PrimitiveInfo, PrimitiveInfo]:
    with monkeypatch.context() as patch:
        if path == "pure":
            patch.setattr(_accel, "lock_speedups", None)
        clock = _ManualClock()
        session = taskscope.install(clock=clock)
        monitor = LockMonitor(held_too_long=0.001)
        monitor.install(session.registry)
        _monitors.append(monitor)
        try:
            (during,) = asyncio.run(_uncontended(clock))
            final = _snapshot_of_created()
        finally:
            _monitors.pop()
            monitor.uninstall()
            session.uninstall()
    return during, final


class TestChoice:
    """Which implementation runs."""

    def test_built_where_a_compiler_is_expected(self) -> None:
        """CI sets TASKSCOPE_EXPECT_SPEEDUPS: a silently failed build would be slow, not red."""
        if not os.environ.get("TASKSCOPE_EXPECT_SPEEDUPS"):
            pytest.skip("TASKSCOPE_EXPECT_SPEEDUPS is not set")
        module = importlib.import_module("taskscope._core._lock_speedups")
        assert {"LockCore", "LockHooks"} <= set(dir(module))

    def test_pure_python_switch_is_honoured(self) -> None:
        """TASKSCOPE_PURE_PYTHON turns the lock accelerator off too."""
        try:
            importlib.import_module("taskscope._core._lock_speedups")
        except ImportError:
            built = False
        else:
            built = True
        expected = built and not os.environ.get("TASKSCOPE_PURE_PYTHON")
        assert expected == _accel.LOCKS_ACCELERATED


class TestTwins:
    """The C hooks and the Python ones report the same figures."""

    def test_same_figures(self, both_paths: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
        """Holds in a dozen buckets, a hold over the threshold and a current holder read
        the same on both paths, and as the program's clock says."""
        results = {path: _run_on(path, monkeypatch) for path in both_paths}
        during, final = results["pure"]
        for path in both_paths:
            assert _figures(results[path][0]) == _figures(during), path
            assert _figures(results[path][1]) == _figures(final), path
        assert final.acquisitions == 16
        assert final.hold.count == 16
        assert final.held_too_long == 1
        assert final.longest_hold == pytest.approx(0.002)
        assert final.longest_hold_at is not None
        assert final.longest_hold_at.line == line_of("with")
        assert final.hold.max == pytest.approx(0.002)
        (holder,) = during.holders
        assert holder.acquired_at is not None
        assert holder.acquired_at.line == line_of("held")
        assert holder.held_for == pytest.approx(5e-9)
        assert final.holders == ()


async def _contended(clock: _ManualClock) -> list[Any]:
    """Queue tasks on a held lock (``async with`` and ``acquire``), cancel one waiter,
    time one out, snapshot while they wait and after, then form a two-task deadlock."""
    lock = asyncio.Lock()  # contended-created
    monitor = _monitors[-1]

    async def worker(n: int) -> None:
        async with lock:  # contended-with
            clock.now += (n + 1) * 1e-6
            await asyncio.sleep(0)

    async def via_acquire() -> None:
        await lock.acquire()  # contended-acquire
        clock.now += 3e-6
        lock.release()

    await lock.acquire()
    tasks = [asyncio.create_task(worker(n)) for n in range(3)]
    tasks.append(asyncio.create_task(via_acquire()))
    cancelled = asyncio.create_task(worker(9))
    timed = asyncio.create_task(asyncio.wait_for(lock.acquire(), 0.001))
    for _ in range(3):  # wait_for runs the acquire in a task of its own (3.11)
        await asyncio.sleep(0)
    clock.now += 1e-5
    seen: list[Any] = [monitor.snapshot()]
    cancelled.cancel()
    with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
        await timed
    clock.now += 2e-5
    lock.release()
    await asyncio.gather(*tasks, cancelled, return_exceptions=True)
    seen.append(monitor.snapshot())

    first, second = asyncio.Lock(), asyncio.Lock()

    async def crossed(a: asyncio.Lock, b: asyncio.Lock) -> None:
        async with a:
            await asyncio.sleep(0)
            clock.now += 1e-6
            async with b:  # deadlock-wait
                pass

    pair = [
        asyncio.create_task(crossed(first, second)),
        asyncio.create_task(crossed(second, first)),
    ]
    for _ in range(3):
        await asyncio.sleep(0)
    seen.append(monitor.snapshot())
    for task in pair:
        task.cancel()
    await asyncio.gather(*pair, return_exceptions=True)
    seen.append(monitor.snapshot())
    return seen


def _contended_figures(snapshot: Any) -> Any:
    """Every figure of a `_contended` snapshot but task identities."""
    primitives = [
        (
            _figures(info),
            info.cancelled_waits,
            info.name,
            [(w.waiting_at, w.since, w.waited_for, w.operation) for w in info.waiters],
        )
        for info in snapshot.primitives
    ]
    deadlocks = [
        (d.detected, [(m.waits_for, m.waiting_at, m.holds) for m in d.tasks])
        for d in snapshot.deadlocks
    ]
    return primitives, deadlocks


class TestContendedTwins:
    """The contended path (waits, cancellations, timeouts, deadlocks) reports the same
    figures in C and in Python."""

    def test_same_figures(self, both_paths: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
        results = {}
        for path in both_paths:
            with monkeypatch.context() as patch:
                if path == "pure":
                    patch.setattr(_accel, "lock_speedups", None)
                clock = _ManualClock()
                session = taskscope.install(clock=clock)
                monitor = LockMonitor(held_too_long=0.001)
                monitor.install(session.registry)
                _monitors.append(monitor)
                try:
                    results[path] = [_contended_figures(s) for s in asyncio.run(_contended(clock))]
                finally:
                    _monitors.pop()
                    monitor.uninstall()
                    session.uninstall()
        expected = results["pure"]
        for path in both_paths:
            assert results[path] == expected, path
        waiting, after, stuck, _ = expected
        (primitive, *_), _ = waiting
        figures, cancelled_waits, _, waiters = primitive
        assert [w[3] for w in waiters] == ["acquire"] * 6
        assert [w[0].line for w in waiters[:5]] == [line_of("contended-with")] * 3 + [
            line_of("contended-acquire"),
            line_of("contended-with"),
        ]
        assert [w[2] for w in waiters] == [pytest.approx(1e-5)] * 6
        (primitive, *_), _ = after
        figures, cancelled_waits, _, waiters = primitive
        assert waiters == []
        assert cancelled_waits == 2
        assert figures[3] == 6  # waits: every waiter, cancelled or not
        assert figures[2] == 5  # acquisitions: the first and four that waited
        _, deadlocks = stuck
        (deadlock,) = deadlocks
        assert [m[1].line for m in deadlock[1]] == [line_of("deadlock-wait")] * 2


class TestStateFields:
    """What the C side defers reads from Python as if it were written at once."""

    def test_holder_and_buckets(self) -> None:
        """``holder`` is the hold tuple while held and None after; ``hist`` has a bucket
        per hold, whichever way it is read or written in between."""

        async def main(clock: _ManualClock) -> list[Any]:
            lock = asyncio.Lock()
            tracker = _monitors[-1].tracker
            assert tracker is not None
            state: Any = tracker.states[id(lock)]
            seen: list[Any] = []
            for shift in (3, 3, 5, 9, 3):
                async with lock:
                    holder = state.holder
                    seen.append((holder[0] == id(asyncio.current_task()), holder is state.holder))
                    clock.now += (1 << shift) * 1e-9
            seen.append(dict(state.hist))
            state.hist = None  # the Python slow path creates it again like this
            async with lock:
                clock.now += 8e-9
            seen.append((state.holder, dict(state.hist)))
            return seen

        session = taskscope.install(clock=_ManualClock())
        monitor = LockMonitor()
        monitor.install(session.registry)
        _monitors.append(monitor)
        try:
            seen = asyncio.run(main(session.registry.clock))  # type: ignore[arg-type]
        finally:
            _monitors.pop()
            monitor.uninstall()
            session.uninstall()
        assert seen[:5] == [(True, True)] * 5
        assert seen[5] == {4: 3, 6: 1, 10: 1}
        assert seen[6] == (None, {4: 1})


class TestFailures:
    """A failure of the bookkeeping never reaches the program."""

    @pytest.fixture
    def clean_errors(self) -> Iterator[None]:
        reset_internal_errors()
        yield
        reset_internal_errors()

    @pytest.mark.usefixtures("clean_errors")
    def test_clock_failure(self) -> None:
        """With the clock raising, locks still lock, release and hand over in order,
        and the failures are counted internally."""

        async def main(clock: _ManualClock) -> list[int]:
            lock = asyncio.Lock()
            order: list[int] = []

            async def worker(n: int) -> None:
                async with lock:
                    order.append(n)
                    await asyncio.sleep(0)

            await lock.acquire()
            clock.failing = True
            lock.release()  # ends a hold: reads the clock
            assert not lock.locked()
            async with lock:  # starts one: reads the clock
                assert lock.locked()
            assert not lock.locked()
            await asyncio.gather(*(worker(n) for n in range(5)))
            clock.failing = False
            return order

        _, order = _run_tracked(main)
        assert order == [0, 1, 2, 3, 4]
        counts = internal_error_counts()
        assert counts.get("lock monitor: acquire", 0) > 0
        assert counts.get("lock monitor: release", 0) > 0
        assert counts.get("lock monitor: wait", 0) > 0  # the workers queued on it

    def test_replaced_acquire_is_called(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A class whose acquire and release are replaced after install (a mock) has
        ``async with`` call the replacements, as asyncio's own mixin does."""
        calls: list[str] = []

        async def main(_clock: _ManualClock) -> bool:
            lock = asyncio.Lock()
            async with lock:
                pass  # caches that acquire and release are the tracked ones
            tracked_acquire = asyncio.Lock.acquire
            tracked_release = asyncio.Lock.release

            async def acquire(self: asyncio.Lock) -> bool:
                calls.append("acquire")
                return await tracked_acquire(self)

            def release(self: asyncio.Lock) -> None:
                calls.append("release")
                tracked_release(self)

            with monkeypatch.context() as patch:
                patch.setattr(asyncio.Lock, "acquire", acquire)
                patch.setattr(asyncio.Lock, "release", release)
                async with lock:
                    pass
            async with lock:
                pass
            return lock.locked()

        _, locked = _run_tracked(main)
        assert calls == ["acquire", "release"]
        assert not locked
