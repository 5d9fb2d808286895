"""run_in_thread and run_in_process: limiters, timeouts, cancellation."""

from __future__ import annotations

import os
import threading
import time

import anyio
import pytest

from taskscope.taskmanager import ManagerStateError, TaskManager

pytestmark = pytest.mark.anyio


def add(a: int, b: int) -> int:
    """Module-level, so worker processes can unpickle it."""
    return a + b


def pid() -> int:
    """Return the worker process id."""
    return os.getpid()


def nap(seconds: float) -> str:
    """Block the worker for a while."""
    time.sleep(seconds)
    return "rested"


class TestRunInThread:
    async def test_result_and_limiter(self) -> None:
        """A blocking call runs in a thread and borrows the thread limiter while it runs."""
        inside = threading.Event()
        leave = threading.Event()

        def blocking() -> int:
            inside.set()
            leave.wait(5)
            return threading.get_ident()

        async with TaskManager(max_threads=2) as manager, anyio.create_task_group() as tg:
            results: list[int] = []

            async def call() -> None:
                results.append(await manager.run_in_thread(blocking))

            tg.start_soon(call)
            await anyio.to_thread.run_sync(inside.wait, 5)
            snap = manager.snapshot()
            leave.set()
        assert (snap.thread_limiter.total, snap.thread_limiter.borrowed) == (2, 1)
        assert results[0] != threading.get_ident()

    async def test_cancellable_timeout_returns_at_once(self) -> None:
        """With cancellable=True the caller gets TimeoutError while the thread still runs."""
        release = threading.Event()
        finished = threading.Event()

        def stuck() -> None:
            release.wait(5)
            finished.set()

        async with TaskManager() as manager:
            with pytest.raises(TimeoutError, match=r"timeout=0\.01"):
                await manager.run_in_thread(stuck, timeout=0.01, cancellable=True)
            assert not finished.is_set()
            release.set()
        await anyio.to_thread.run_sync(finished.wait, 5)

    async def test_uncancellable_timeout_waits_then_raises(self) -> None:
        """With cancellable=False the call completes, then TimeoutError reports the overrun."""
        finished = threading.Event()

        def slow() -> str:
            time.sleep(0.05)
            finished.set()
            return "late"

        async with TaskManager() as manager:
            with pytest.raises(TimeoutError, match="late result was dropped"):
                await manager.run_in_thread(slow, timeout=0.01)
        assert finished.is_set()

    async def test_within_timeout(self) -> None:
        """A call that finishes in time returns its result."""
        async with TaskManager() as manager:
            assert await manager.run_in_thread(add, 1, 2, timeout=5) == 3

    async def test_exception_propagates(self) -> None:
        """An exception raised in the thread is raised to the caller."""

        def fail() -> None:
            raise LookupError("in thread")

        async with TaskManager() as manager:
            with pytest.raises(LookupError, match="in thread"):
                await manager.run_in_thread(fail)

    async def test_bad_arguments(self) -> None:
        """A non-callable, a bad timeout or a non-bool cancellable is rejected by name."""
        async with TaskManager() as manager:
            with pytest.raises(TypeError, match="func"):
                await manager.run_in_thread(42)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="timeout"):
                await manager.run_in_thread(add, 1, 2, timeout=0)
            with pytest.raises(TypeError, match="cancellable"):
                await manager.run_in_thread(add, 1, 2, cancellable=1)  # type: ignore[arg-type]

    async def test_needs_a_started_manager(self) -> None:
        """Offloading before start raises ManagerStateError."""
        with pytest.raises(ManagerStateError):
            await TaskManager().run_in_thread(add, 1, 2)


class TestRunInProcess:
    async def test_result_in_another_process(self) -> None:
        """A module-level function runs in a worker process under the process limiter."""
        async with TaskManager(max_processes=1) as manager:
            assert await manager.run_in_process(add, 2, 3) == 5
            assert await manager.run_in_process(pid) != os.getpid()

    async def test_cancellable_timeout_kills_the_worker(self) -> None:
        """With cancellable=True a timeout raises TimeoutError without waiting."""
        async with TaskManager(max_processes=1) as manager:
            with pytest.raises(TimeoutError, match="process"):
                await manager.run_in_process(nap, 30, timeout=0.2, cancellable=True)
            assert manager.snapshot().process_limiter.borrowed == 0
