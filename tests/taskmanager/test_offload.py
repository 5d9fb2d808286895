"""run_in_thread and run_in_process: limiters, timeouts, cancellation."""

from __future__ import annotations

import gc
import os
import sys
import threading
import time
from functools import partial
from typing import TYPE_CHECKING

import anyio
import psutil
import pytest

from taskscope.taskmanager import ManagerStateError, TaskManager, _workers

if TYPE_CHECKING:
    from pathlib import Path

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


def fail_in_process() -> None:
    """Raise in the worker."""
    raise LookupError("in process")


def report_then_nap(fifo: str) -> None:
    """Tell the test this worker is running the call (its pid), then block."""
    with open(fifo, "w", encoding="ascii") as channel:
        channel.write(str(os.getpid()))
    time.sleep(60)


#: A worker command that starts, reports its pid to the path in its last argument, and
#: never answers: it is still starting when the call is cancelled or times out.
NEVER_READY = [
    sys.executable,
    "-c",
    (
        "import os, sys, time\n"
        "with open(sys.argv[1], 'w', encoding='ascii') as channel:\n"
        "    channel.write(str(os.getpid()))\n"
        "time.sleep(60)"
    ),
]


def make_fifo(tmp_path: Path) -> str:
    """A named pipe: reading it waits until a worker has written to it and closed it."""
    path = str(tmp_path / "started")
    os.mkfifo(path)
    return path


def read_fifo(path: str) -> str:
    """Block until the worker reports (run in a thread)."""
    with open(path, encoding="ascii") as channel:
        return channel.read()


def children() -> set[int]:
    """PIDs of this process's children, running or exited but not yet reaped."""
    return {child.pid for child in psutil.Process().children()}


def assert_gone(worker: int) -> None:
    """The worker was killed and reaped, and nothing of it is left to garbage-collect."""
    gc.collect()  # an unclosed pipe or pidfd would warn now, failing the test
    assert worker not in children()


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
        """A timeout that lands after start-up kills and reaps the worker at once."""
        async with TaskManager(max_processes=1) as manager:
            # The one worker is started and idle: the next call reuses it, so the
            # timeout cannot land during start-up, however slow the machine is.
            worker = await manager.run_in_process(pid)
            assert worker in children()
            with pytest.raises(TimeoutError, match="process"):
                await manager.run_in_process(nap, 60, timeout=0.2, cancellable=True)
            assert_gone(worker)
            assert manager.snapshot().process_limiter.borrowed == 0
            assert await manager.run_in_process(pid) not in (worker, os.getpid())

    async def test_cancel_kills_the_running_worker(self, tmp_path: Path) -> None:
        """Cancelling the caller while the function runs kills and reaps its worker."""
        fifo = make_fifo(tmp_path)
        async with TaskManager(max_processes=1) as manager:
            async with anyio.create_task_group() as tg:
                tg.start_soon(
                    partial(manager.run_in_process, report_then_nap, fifo, cancellable=True)
                )
                worker = int(await anyio.to_thread.run_sync(read_fifo, fifo))
                tg.cancel_scope.cancel()
            assert_gone(worker)
            assert manager.snapshot().process_limiter.borrowed == 0
            assert await manager.run_in_process(add, 1, 2) == 3

    async def test_cancel_kills_a_starting_worker(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A worker that never gets ready is killed and reaped when the caller cancels."""
        fifo = make_fifo(tmp_path)
        monkeypatch.setattr(_workers, "worker_command", lambda: [*NEVER_READY, fifo])
        async with TaskManager(max_processes=1) as manager:
            async with anyio.create_task_group() as tg:
                tg.start_soon(partial(manager.run_in_process, add, 1, 2, cancellable=True))
                worker = int(await anyio.to_thread.run_sync(read_fifo, fifo))
                tg.cancel_scope.cancel()
            assert_gone(worker)
            assert manager.snapshot().process_limiter.borrowed == 0

    async def test_cancellable_timeout_kills_a_starting_worker(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A timeout during start-up (here it never ends) kills and reaps the worker."""
        monkeypatch.setattr(_workers, "worker_command", lambda: [*NEVER_READY, os.devnull])
        before = children()
        async with TaskManager(max_processes=1) as manager:
            with pytest.raises(TimeoutError, match="process"):
                await manager.run_in_process(add, 1, 2, timeout=0.05, cancellable=True)
            gc.collect()  # an unclosed pipe or pidfd would warn now, failing the test
            assert children() <= before
            assert manager.snapshot().process_limiter.borrowed == 0

    async def test_uncancellable_timeout_waits_for_the_worker(self) -> None:
        """With cancellable=False the call completes and its worker is kept for reuse."""
        async with TaskManager(max_processes=1) as manager:
            with pytest.raises(TimeoutError, match="late result was dropped"):
                await manager.run_in_process(pid, timeout=1e-9)
            worker = await manager.run_in_process(pid)
            assert await manager.run_in_process(pid) == worker

    async def test_exception_propagates_and_the_worker_is_reused(self) -> None:
        """An exception raised in the worker is raised to the caller; the worker lives on."""
        async with TaskManager(max_processes=1) as manager:
            worker = await manager.run_in_process(pid)
            with pytest.raises(LookupError, match="in process"):
                await manager.run_in_process(fail_in_process)
            assert await manager.run_in_process(pid) == worker

    async def test_closing_the_manager_stops_idle_workers(self) -> None:
        """Idle workers never outlive their manager."""
        async with TaskManager(max_processes=1) as manager:
            worker = await manager.run_in_process(pid)
            assert worker in children()
        assert_gone(worker)
