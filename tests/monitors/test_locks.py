"""The lock monitor: holders, waiters, statistics, findings and transparency."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest

import taskscope
from taskscope._core._faults import internal_error_counts, reset_internal_errors
from taskscope.monitors._locks import LockMonitor, LocksSnapshot, track_lock
from taskscope.reports._json import to_jsonable
from tests.conftest import line_of, run_on

if TYPE_CHECKING:
    from taskscope import Session


def _by_line(snapshot: LocksSnapshot, line: int) -> Any:
    return next(p for p in snapshot.primitives if p.created_at and p.created_at.line == line)


class TestHolders:
    """Holders and waiters are reported with where and since when."""

    def test_holder_and_waiter(self, locks: LockMonitor, loop_flavour: str) -> None:
        """A held lock lists its holder's acquire site and its waiter's wait site."""
        seen: list[LocksSnapshot] = []

        async def main() -> None:
            lock = asyncio.Lock()  # created
            entered = asyncio.Event()

            async def holder() -> None:
                async with lock:  # acquired
                    entered.set()
                    await asyncio.sleep(0.05)

            async def waiter() -> None:
                await entered.wait()
                async with lock:  # waits
                    pass

            await asyncio.gather(holder(), waiter(), probe())

        async def probe() -> None:
            await asyncio.sleep(0.02)
            seen.append(locks.snapshot())

        run_on(loop_flavour, main)
        lock = _by_line(seen[0], line_of("created"))
        assert lock.kind == "lock"
        assert lock.type == "asyncio.Lock"
        assert [h.acquired_at.line for h in lock.holders if h.acquired_at] == [line_of("acquired")]
        assert [w.waiting_at.line for w in lock.waiters if w.waiting_at] == [line_of("waits")]
        final = _by_line(locks.snapshot(), line_of("created"))
        assert final.acquisitions == 2
        assert final.waits == 1
        assert final.contention == 0.5
        assert final.hold.max >= 0.04  # loop timers may fire slightly early

    def test_semaphore_capacity(self, locks: LockMonitor) -> None:
        """A semaphore records its capacity and concurrent holders."""

        async def main() -> None:
            sem = asyncio.BoundedSemaphore(2)  # sem
            async with sem, sem:
                snap = _by_line(locks.snapshot(), line_of("sem"))
                assert snap.capacity == 2.0
                assert len(snap.holders) == 2

        asyncio.run(main())


class TestQueues:
    """asyncio queues: consumers blocked in ``get``, producers blocked in ``put``."""

    def test_get_and_put_waiters(self, locks: LockMonitor) -> None:
        """Both kinds of waiter are listed at their lines; a subclass is tracked too."""
        seen: list[LocksSnapshot] = []

        async def main() -> None:
            queue: asyncio.PriorityQueue[int] = asyncio.PriorityQueue(maxsize=1)  # queue

            async def consumer() -> int:
                return await queue.get()  # get waits

            async def producer(item: int) -> None:
                await queue.put(item)  # put waits

            task = asyncio.create_task(consumer())
            await asyncio.sleep(0)
            seen.append(locks.snapshot())
            await queue.put(1)
            assert await task == 1
            await queue.put(2)
            blocked = asyncio.create_task(producer(3))
            await asyncio.sleep(0)
            seen.append(locks.snapshot())
            assert queue.get_nowait() == 2
            await blocked

        asyncio.run(main())
        getting, putting = (_by_line(s, line_of("queue")) for s in seen)
        assert (getting.kind, getting.type, getting.capacity) == (
            "queue",
            "asyncio.PriorityQueue",
            1.0,
        )
        assert [(w.operation, w.waiting_at.line) for w in getting.waiters if w.waiting_at] == [
            ("get", line_of("get waits"))
        ]
        assert [(w.operation, w.waiting_at.line) for w in putting.waiters if w.waiting_at] == [
            ("put", line_of("put waits"))
        ]
        after = _by_line(locks.snapshot(), line_of("queue"))
        assert (after.waits, after.waiters, after.acquisitions) == (2, (), 0)


class TestFindings:
    """Findings: held too long, never released, deadlock."""

    def test_held_too_long(self, locks: LockMonitor) -> None:
        """A hold over the threshold is reported at its acquire site."""

        async def main() -> None:
            lock = asyncio.Lock()
            async with lock:  # slow hold
                await asyncio.sleep(0.06)

        asyncio.run(main())
        findings = locks.findings(locks.snapshot())
        kinds = [(f.kind, f.location.line if f.location else None) for f in findings]
        assert ("lock-held-too-long", line_of("slow hold")) in kinds

    def test_never_released_by_ended_task(self, locks: LockMonitor) -> None:
        """A task that ends holding a lock is reported at the acquire site."""

        async def main() -> None:
            lock = asyncio.Lock()

            async def leaker() -> None:
                await lock.acquire()  # leak

            await asyncio.create_task(leaker())

        asyncio.run(main())
        findings = [f for f in locks.findings(locks.snapshot()) if f.kind == "lock-never-released"]
        assert [f.location.line for f in findings if f.location] == [line_of("leak")]
        assert findings[0].details["reason"] == "holder-ended"

    def test_deadlock_detected_while_stuck(self, locks: LockMonitor, loop_flavour: str) -> None:
        """Two tasks taking two locks in opposite order are reported while blocked."""
        found: list[Any] = []

        async def main() -> None:
            a, b = asyncio.Lock(), asyncio.Lock()
            both = asyncio.Barrier(2) if hasattr(asyncio, "Barrier") else None

            async def one(first: asyncio.Lock, second: asyncio.Lock) -> None:
                async with first:
                    if both is not None:
                        await both.wait()
                    else:
                        await asyncio.sleep(0.01)
                    async with second:  # cycle
                        pass

            tasks = [asyncio.create_task(one(a, b)), asyncio.create_task(one(b, a))]
            await asyncio.sleep(0.05)
            found.extend(f for f in locks.findings(locks.snapshot()) if f.kind == "deadlock")
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        run_on(loop_flavour, main)
        assert len(found) == 1
        details = found[0].details
        assert len(details["tasks"]) == 2
        assert all(member["holds"] for member in details["tasks"])
        assert {m["waiting_at"]["line"] for m in details["tasks"]} == {line_of("cycle")}


class TestTransparency:
    """Tracking never changes a primitive's behaviour."""

    @staticmethod
    async def _fifo() -> list[int]:
        lock = asyncio.Lock()
        order: list[int] = []

        async def worker(n: int) -> None:
            async with lock:
                order.append(n)
                await asyncio.sleep(0)

        await asyncio.gather(*(worker(n) for n in range(20)))
        return order

    @staticmethod
    async def _cancel_waiter() -> str:
        lock = asyncio.Lock()
        await lock.acquire()
        waiter = asyncio.create_task(lock.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        try:
            await waiter
        except asyncio.CancelledError:
            lock.release()
            return f"cancelled, locked={lock.locked()}"
        return "not cancelled"

    @staticmethod
    async def _bad_release() -> str:
        try:
            asyncio.Lock().release()
        except RuntimeError as exc:
            return f"RuntimeError: {exc}"
        return "no error"

    @pytest.mark.parametrize("scenario", ["_fifo", "_cancel_waiter", "_bad_release"])
    def test_same_outcome(self, scenario: str) -> None:
        """FIFO order, cancellation of a waiter and errors are identical when tracked."""
        plain = asyncio.run(getattr(self, scenario)())
        with taskscope.monitor() as session:
            monitor = LockMonitor()
            monitor.install(session.registry)
            try:
                tracked = asyncio.run(getattr(self, scenario)())
            finally:
                monitor.uninstall()
        assert tracked == plain

    def test_uninstall_restores(self, session: Session) -> None:
        """Uninstall puts back the original methods."""
        before = (asyncio.Lock.acquire, asyncio.Lock.release, asyncio.Queue.get)
        monitor = LockMonitor()
        monitor.install(session.registry)
        assert asyncio.Lock.acquire is not before[0]
        monitor.uninstall()
        assert (asyncio.Lock.acquire, asyncio.Lock.release, asyncio.Queue.get) == before


class TestOtherBackends:
    """AnyIO and trio primitives are tracked too."""

    def test_trio_lock(self, locks: LockMonitor) -> None:
        """A trio lock held across a checkpoint lists its holder."""
        import trio

        async def main() -> None:
            lock = trio.Lock()  # trio lock
            async with lock:
                snap = _by_line(locks.snapshot(), line_of("trio lock"))
                assert snap.type == "trio.Lock"
                assert len(snap.holders) == 1
            assert _by_line(locks.snapshot(), line_of("trio lock")).acquisitions == 1

        trio.run(main)

    @pytest.mark.parametrize("backend", ["asyncio", "trio"])
    def test_anyio_lock(self, locks: LockMonitor, backend: str) -> None:
        """An AnyIO lock is tracked once (not also as its backend's inner lock)."""
        import anyio

        async def main() -> None:
            lock = anyio.Lock()  # anyio lock
            async with lock:
                pass

        anyio.run(main, backend=backend)
        matches = [
            p
            for p in locks.snapshot().primitives
            if p.created_at and p.created_at.line == line_of("anyio lock")
        ]
        assert [(p.type, p.acquisitions) for p in matches] == [("anyio.Lock", 1)]


class TestNoBlockingCalls:
    """The monitor's own work on the loop never blocks it."""

    def test_new_creation_site_under_blockbuster(self, locks: LockMonitor) -> None:
        """Deciding who created a primitive is string work: AnyIO's blockbuster (which
        fails a test for any file-system call on the loop) sees none."""
        from blockbuster import blockbuster_ctx

        reset_internal_errors()

        async def main() -> None:
            async def fresh_site() -> None:  # a code object classified for the first time
                lock = asyncio.Lock()  # under blockbuster
                async with lock:
                    pass

            with blockbuster_ctx():
                await fresh_site()

        asyncio.run(main())
        assert internal_error_counts() == {}
        lock = _by_line(locks.snapshot(), line_of("under blockbuster"))
        assert lock.acquisitions == 1


class TestTrackLock:
    """The explicit API."""

    def test_names_and_rejects(self, locks: LockMonitor) -> None:
        """track_lock names a lock, is idempotent, and rejects non-locks clearly."""

        async def main() -> None:
            lock = track_lock(asyncio.Lock(), name="db")
            assert track_lock(lock, name="db") is lock
            async with lock:
                pass

        asyncio.run(main())
        assert [p.name for p in locks.snapshot().primitives] == ["db"]
        with pytest.raises(TypeError, match="track_resource"):
            track_lock(42)

    def test_section_is_json(self, locks: LockMonitor) -> None:
        """The section converts to JSON-ready data."""
        data = to_jsonable(locks.snapshot())
        assert set(data) >= {"primitives", "deadlocks", "held_too_long_threshold"}
