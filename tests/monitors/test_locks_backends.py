"""The lock monitor on AnyIO (both backends) and trio: semaphores, capacity limiters,
conditions, events, re-acquisition, task names and a trio deadlock as it forms."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
import trio
import trio.testing

from tests.conftest import line_of

if TYPE_CHECKING:
    from taskscope.monitors._locks import LockMonitor, LocksSnapshot, PrimitiveInfo

BACKENDS = [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]


def _by_line(snapshot: LocksSnapshot, line: int) -> PrimitiveInfo:
    """Return the primitive created at `line` of this file."""
    found = [p for p in snapshot.primitives if p.created_at and p.created_at.line == line]
    assert len(found) == 1, [(p.type, p.created_at) for p in snapshot.primitives]
    return found[0]


async def _settle() -> None:
    """Let every other task run until it blocks (both backends)."""
    for _ in range(10):
        await anyio.sleep(0)


class TestAnyioPrimitives:
    """AnyIO's Semaphore, CapacityLimiter, Condition and Event, on asyncio and trio."""

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_semaphore_holders_and_waiter(self, locks: LockMonitor, backend: str) -> None:
        """Two holders and a waiter are listed with their sites; contention is 1 in 3."""
        seen: list[LocksSnapshot] = []

        async def main() -> None:
            sem = anyio.Semaphore(2)  # anyio semaphore
            release = anyio.Event()

            async def user() -> None:
                async with sem:  # sem acquired
                    await release.wait()

            async with anyio.create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(user)
                await _settle()
                seen.append(locks.snapshot())
                release.set()

        anyio.run(main, backend=backend)
        during = _by_line(seen[0], line_of("anyio semaphore"))
        assert during.type == "anyio.Semaphore"
        assert during.backend == backend
        assert during.capacity == 2.0
        acquire_line = line_of("sem acquired")
        assert [h.acquired_at.line for h in during.holders if h.acquired_at] == [acquire_line] * 2
        assert [(w.operation, w.waiting_at.line) for w in during.waiters if w.waiting_at] == [
            ("acquire", acquire_line)
        ]
        after = _by_line(locks.snapshot(), line_of("anyio semaphore"))
        assert (after.acquisitions, after.waits, after.holders, after.waiters) == (3, 1, (), ())
        assert after.contention == pytest.approx(1 / 3)

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_capacity_limiter(self, locks: LockMonitor, backend: str) -> None:
        """A borrowing task is a holder; a second one waits; a cancelled wait is counted."""
        seen: list[LocksSnapshot] = []

        async def main() -> None:
            limiter = anyio.CapacityLimiter(1)  # limiter
            release = anyio.Event()

            async def borrower() -> None:
                async with limiter:  # borrowed
                    await release.wait()

            async with anyio.create_task_group() as tg:
                tg.start_soon(borrower, name="first")
                await _settle()
                tg.start_soon(borrower, name="second")
                await _settle()
                with anyio.move_on_after(0.01):
                    await limiter.acquire()  # gives up
                seen.append(locks.snapshot())
                release.set()

        anyio.run(main, backend=backend)
        during = _by_line(seen[0], line_of("limiter"))
        assert (during.kind, during.type, during.capacity) == (
            "capacity-limiter",
            "anyio.CapacityLimiter",
            1.0,
        )
        assert [h.task.name for h in during.holders if h.task] == ["first"]
        assert [w.task.name for w in during.waiters if w.task] == ["second"]
        after = _by_line(locks.snapshot(), line_of("limiter"))
        assert (after.acquisitions, after.waits, after.cancelled_waits) == (2, 2, 1)

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_condition(self, locks: LockMonitor, backend: str) -> None:
        """A task in ``Condition.wait`` is a waiter at its line until notified."""
        seen: list[LocksSnapshot] = []

        async def main() -> None:
            condition = anyio.Condition()  # condition

            async def waiter() -> None:
                async with condition:
                    await condition.wait()  # waits for notify

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await _settle()
                seen.append(locks.snapshot())
                async with condition:
                    condition.notify()

        anyio.run(main, backend=backend)
        during = _by_line(seen[0], line_of("condition"))
        assert (during.kind, during.type) == ("condition", "anyio.Condition")
        assert [
            (w.operation, w.waiting_at.line if w.waiting_at else None) for w in during.waiters
        ] == [("wait", line_of("waits for notify"))]
        after = _by_line(locks.snapshot(), line_of("condition"))
        assert (after.waits, after.waiters) == (1, ())

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_event(self, locks: LockMonitor, backend: str) -> None:
        """Event waiters are listed; a wait cancelled by a timeout is a cancelled wait."""
        seen: list[LocksSnapshot] = []

        async def main() -> None:
            event = anyio.Event()  # event

            async def waiter() -> None:
                await event.wait()  # waits for set

            async with anyio.create_task_group() as tg:
                tg.start_soon(waiter)
                await _settle()
                seen.append(locks.snapshot())
                with anyio.move_on_after(0.01):
                    await event.wait()
                event.set()

        anyio.run(main, backend=backend)
        during = _by_line(seen[0], line_of("event"))
        assert (during.kind, during.type) == ("event", "anyio.Event")
        assert [w.waiting_at.line for w in during.waiters if w.waiting_at] == [
            line_of("waits for set")
        ]
        after = _by_line(locks.snapshot(), line_of("event"))
        assert (after.waits, after.cancelled_waits) == (2, 1)

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_reacquire_is_not_a_wait(self, locks: LockMonitor, backend: str) -> None:
        """AnyIO refuses a lock its holder acquires again: neither a wait nor a deadlock."""

        async def main() -> None:
            lock = anyio.Lock()  # held twice
            async with lock:
                with pytest.raises(RuntimeError, match="already held"):
                    await lock.acquire()

        anyio.run(main, backend=backend)
        snapshot = locks.snapshot()
        lock = _by_line(snapshot, line_of("held twice"))
        assert (lock.acquisitions, lock.waits) == (1, 0)
        assert snapshot.deadlocks == ()

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_task_running_acquire(self, locks: LockMonitor, backend: str) -> None:
        """A task running ``semaphore.acquire`` itself is named as without taskscope, and
        its acquisition (no user frame) is placed where the task was created."""
        names: list[str] = []

        async def main() -> None:
            sem = anyio.Semaphore(1)  # leaked semaphore
            acquire: Any = sem.acquire
            names.append(f"{acquire.__module__}.{acquire.__qualname__}")
            async with anyio.create_task_group() as tg:
                tg.start_soon(sem.acquire)

        anyio.run(main, backend=backend)
        assert not names[0].startswith("taskscope"), names
        findings = locks.findings(locks.snapshot())
        leaked = [f for f in findings if f.kind == "lock-never-released"]
        assert [(f.task.name if f.task else None) for f in leaked] == names
        assert [f.location.file for f in leaked if f.location] == [__file__]


class TestTrio:
    """trio's own primitives."""

    def test_semaphore_limiter_event(self, locks: LockMonitor) -> None:
        """trio's Semaphore and CapacityLimiter list holders; an Event lists its waiter."""
        seen: list[LocksSnapshot] = []

        async def main() -> None:
            sem = trio.Semaphore(1)  # trio semaphore
            limiter = trio.CapacityLimiter(1)  # trio limiter
            event = trio.Event()  # trio event

            async def holder() -> None:
                async with sem, limiter:
                    await event.wait()  # trio waits

            async with trio.open_nursery() as nursery:
                nursery.start_soon(holder)
                await trio.testing.wait_all_tasks_blocked()
                seen.append(locks.snapshot())
                event.set()

        trio.run(main)
        snapshot = seen[0]
        sem = _by_line(snapshot, line_of("trio semaphore"))
        limiter = _by_line(snapshot, line_of("trio limiter"))
        event = _by_line(snapshot, line_of("trio event"))
        assert (sem.type, len(sem.holders), sem.capacity) == ("trio.Semaphore", 1, 1.0)
        assert (limiter.type, len(limiter.holders)) == ("trio.CapacityLimiter", 1)
        assert [w.waiting_at.line for w in event.waiters if w.waiting_at] == [line_of("trio waits")]
        after = locks.snapshot()
        assert _by_line(after, line_of("trio semaphore")).holders == ()
        assert _by_line(after, line_of("trio event")).waits == 1

    def test_deadlock_detected_while_stuck(self, locks: LockMonitor) -> None:
        """Two trio tasks taking two locks in opposite order are reported while blocked."""
        found: list[Any] = []

        async def main() -> None:
            first, second = trio.Lock(), trio.Lock()
            both_hold = trio.Event()
            holding = 0

            async def take(a: trio.Lock, b: trio.Lock) -> None:
                nonlocal holding
                async with a:  # trio holds
                    holding += 1
                    if holding == 2:
                        both_hold.set()
                    await both_hold.wait()
                    async with b:  # trio cycle
                        pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(take, first, second, name="one")
                nursery.start_soon(take, second, first, name="two")
                await trio.testing.wait_all_tasks_blocked()
                # Detected when it formed: before any snapshot walked the graph.
                found.extend(locks.tracker.deadlocks if locks.tracker else ())
                found.extend(f for f in locks.findings(locks.snapshot()) if f.kind == "deadlock")
                nursery.cancel_scope.cancel()

        trio.run(main)
        raw, finding = found
        assert len(raw["tasks"]) == 2
        details = finding.details
        assert sorted(m["task"]["name"] for m in details["tasks"]) == ["one", "two"]
        assert {m["waiting_at"]["line"] for m in details["tasks"]} == {line_of("trio cycle")}
        holds = [h for m in details["tasks"] for h in m["holds"]]
        assert {h["acquired_at"]["line"] for h in holds} == {line_of("trio holds")}
        assert all(m["waits_for"]["kind"] == "lock" for m in details["tasks"])
