"""TaskManager: adding, status transitions, timeouts, cancellation, queries, logging."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from taskscope.taskmanager import (
    DuplicateTaskError,
    ManagerStateError,
    QueueFullError,
    TaskInfo,
    TaskManager,
    TaskStatus,
    UnknownTaskError,
    WrongTaskError,
)

pytestmark = pytest.mark.anyio


async def echo(value: Any) -> Any:
    await anyio.lowlevel.checkpoint()
    return value


async def boom() -> None:
    await anyio.lowlevel.checkpoint()
    raise ValueError("boom")


async def wait_for(event: anyio.Event) -> str:
    await event.wait()
    return "released"


async def settle() -> None:
    """Let every ready task run a few steps."""
    for _ in range(5):
        await anyio.lowlevel.checkpoint()


class TestStatusTransitions:
    async def test_pending_running_completed(self) -> None:
        """A task is pending when added, running while it awaits, completed after."""
        release = anyio.Event()
        async with TaskManager() as manager:
            manager.add_task("job", wait_for, release)
            assert manager.status("job").status is TaskStatus.PENDING
            await settle()
            assert manager.status("job").status is TaskStatus.RUNNING
            release.set()
            info = await manager.wait("job")
        assert info.status is TaskStatus.COMPLETED
        assert info.result == "released"
        assert info.exception is None
        assert info.done

    async def test_failed_keeps_the_exception_and_the_manager(self) -> None:
        """A task that raises is failed, and the manager keeps running other tasks."""
        async with TaskManager() as manager:
            manager.add_task("bad", boom)
            info = await manager.wait("bad")
            manager.add_task("good", echo, 1)
            good = await manager.wait("good")
        assert info.status is TaskStatus.FAILED
        assert isinstance(info.exception, ValueError)
        assert info.result is None
        assert good.status is TaskStatus.COMPLETED

    async def test_sync_function_fails_with_a_clear_error(self) -> None:
        """A function that returns a non-awaitable fails with a message naming the fix."""

        def not_async() -> int:
            return 1

        async with TaskManager() as manager:
            manager.add_task("sync", not_async)  # type: ignore[arg-type]
            info = await manager.wait("sync")
        assert info.status is TaskStatus.FAILED
        assert "run_in_thread" in str(info.exception)

    async def test_timeout(self) -> None:
        """A task running past its timeout ends in the timeout state."""
        async with TaskManager() as manager:
            manager.add_task("slow", anyio.sleep_forever, timeout=0.01)
            info = await manager.wait("slow")
        assert info.status is TaskStatus.TIMEOUT
        assert info.timeout == 0.01
        assert info.started_at is not None

    async def test_default_timeout_applies(self) -> None:
        """Tasks added without a timeout get the manager's default_timeout."""
        async with TaskManager(default_timeout=0.01) as manager:
            manager.add_task("slow", anyio.sleep_forever)
            info = await manager.wait("slow")
        assert info.status is TaskStatus.TIMEOUT

    async def test_timeout_counts_from_start_not_from_add(self) -> None:
        """Time spent waiting for a slot does not count against the task's timeout."""
        release = anyio.Event()
        async with TaskManager(max_concurrency=1) as manager:
            manager.add_task("first", wait_for, release)
            manager.add_task("second", echo, 2, timeout=0.05)
            await anyio.sleep(0.15)
            assert manager.status("second").status is TaskStatus.PENDING
            release.set()
            info = await manager.wait("second")
        assert info.status is TaskStatus.COMPLETED

    async def test_fast_task_with_timeout_completes(self) -> None:
        """A task finishing within its timeout is completed, not timed out."""
        async with TaskManager() as manager:
            manager.add_task("fast", echo, "ok", timeout=5)
            info = await manager.wait("fast")
        assert info.status is TaskStatus.COMPLETED
        assert info.result == "ok"

    async def test_times_come_from_the_injected_clock(self) -> None:
        """created_at, started_at and ended_at are read from the clock in order."""
        ticks = itertools.count(100)
        async with TaskManager(clock=lambda: float(next(ticks))) as manager:
            manager.add_task("job", echo, 1)
            info = await manager.wait("job")
        assert (info.created_at, info.started_at, info.ended_at) == (100.0, 101.0, 102.0)
        assert info.duration == 1.0
        assert info.name == "echo"


class TestCancellation:
    async def test_cancel_running(self) -> None:
        """Cancelling a running task ends it in the cancelled state with the reason."""
        async with TaskManager() as manager:
            manager.add_task("job", anyio.sleep_forever)
            await settle()
            assert manager.cancel_task("job", reason="user asked") is True
            info = await manager.wait("job")
        assert info.status is TaskStatus.CANCELLED
        assert info.cancel_reason == "user asked"

    async def test_cancel_running_with_timeout(self) -> None:
        """Cancelling a task that has a timeout is a cancellation, not a timeout."""
        async with TaskManager() as manager:
            manager.add_task("job", anyio.sleep_forever, timeout=60)
            await settle()
            manager.cancel_task("job")
            info = await manager.wait("job")
        assert info.status is TaskStatus.CANCELLED

    async def test_cancel_before_it_is_scheduled(self) -> None:
        """A task cancelled right after add_task never runs its function."""
        ran: list[str] = []

        async def record() -> None:
            ran.append("ran")

        async with TaskManager() as manager:
            manager.add_task("job", record)
            manager.cancel_task("job")
            info = await manager.wait("job")
        assert info.status is TaskStatus.CANCELLED
        assert info.started_at is None
        assert ran == []

    async def test_cancel_while_queued(self) -> None:
        """A task waiting for a slot can be cancelled and frees its backlog place."""
        release = anyio.Event()
        async with TaskManager(max_concurrency=1, max_queue=1) as manager:
            manager.add_task("first", wait_for, release)
            manager.add_task("queued", echo, 1)
            await settle()
            assert manager.snapshot().queued == 1
            manager.cancel_task("queued")
            info = await manager.wait("queued")
            assert manager.snapshot().queued == 0
            manager.add_task("again", echo, 2)  # the backlog has room again
            release.set()
            await manager.join()
        assert info.status is TaskStatus.CANCELLED
        assert info.started_at is None
        assert manager.status("again").status is TaskStatus.COMPLETED

    async def test_cancel_finished_returns_false(self) -> None:
        """Cancelling a finished task changes nothing and returns False."""
        async with TaskManager() as manager:
            manager.add_task("job", echo, 1)
            await manager.wait("job")
            assert manager.cancel_task("job") is False
        assert manager.status("job").status is TaskStatus.COMPLETED

    async def test_cancel_unknown_raises(self) -> None:
        """Cancelling an id the manager never saw raises UnknownTaskError naming it."""
        async with TaskManager() as manager:
            with pytest.raises(UnknownTaskError, match="'nope'"):
                manager.cancel_task("nope")

    async def test_task_that_swallows_cancellation_completes(self) -> None:
        """A task that catches its cancellation and returns is recorded as completed."""

        async def stubborn() -> str:
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                return "caught"
            return "unreachable"  # pragma: no cover

        async with TaskManager() as manager:
            manager.add_task("job", stubborn, timeout=60)
            await settle()
            manager.cancel_task("job")
            info = await manager.wait("job")
        assert info.status is TaskStatus.COMPLETED
        assert info.result == "caught"


class TestAdding:
    async def test_duplicate_live_id_is_rejected(self) -> None:
        """Adding a second live task with the same id raises DuplicateTaskError."""
        async with TaskManager() as manager:
            manager.add_task("job", anyio.sleep_forever)
            with pytest.raises(DuplicateTaskError, match="'job'"):
                manager.add_task("job", echo, 1)
            manager.cancel_task("job")

    async def test_finished_id_can_be_reused(self) -> None:
        """Once a task finished its id may be used again; the record is replaced."""
        async with TaskManager() as manager:
            manager.add_task("job", echo, 1)
            await manager.wait("job")
            manager.add_task("job", echo, 2)
            info = await manager.wait("job")
        assert info.result == 2
        assert list(manager.statuses()) == ["job"]

    async def test_queue_full(self) -> None:
        """When max_queue tasks already wait for a slot, add_task raises QueueFullError."""
        release = anyio.Event()
        async with TaskManager(max_concurrency=2, max_queue=3) as manager:
            for i in range(5):  # 2 get a slot, 3 wait
                manager.add_task(f"t{i}", wait_for, release)
            with pytest.raises(QueueFullError, match="max_queue") as caught:
                manager.add_task("overflow", echo, 1)
            assert caught.value.max_queue == 3
            with pytest.raises(UnknownTaskError):
                manager.status("overflow")
            snapshot = manager.snapshot()
            assert (snapshot.queued, snapshot.pending) == (3, 5)
            release.set()
            await manager.join()
        assert manager.snapshot().completed == 5

    async def test_kwargs_are_forwarded(self) -> None:
        """Positional and keyword arguments reach the function, even 'task_id' and 'func'."""

        async def collect(*args: Any, **kwargs: Any) -> tuple[Any, ...]:
            await anyio.lowlevel.checkpoint()
            return args, kwargs

        async with TaskManager() as manager:
            manager.add_task("job", collect, 1, 2, task_id="x", func="y")
            info = await manager.wait("job")
        assert info.result == ((1, 2), {"task_id": "x", "func": "y"})

    async def test_workers_may_add_tasks(self) -> None:
        """A managed task can add further tasks to its own manager."""
        async with TaskManager() as manager:

            async def spawner() -> None:
                manager.add_task("child", echo, "from child")

            manager.add_task("parent", spawner)
            await manager.wait("parent")
            info = await manager.wait("child")
        assert info.result == "from child"

    async def test_add_from_another_thread_is_rejected(self) -> None:
        """Adding from a worker thread raises WrongTaskError naming from_thread."""
        async with TaskManager() as manager:
            errors: list[BaseException] = []

            def add() -> None:
                try:
                    manager.add_task("job", echo, 1)
                except WrongTaskError as exc:
                    errors.append(exc)

            await anyio.to_thread.run_sync(add)
            assert len(errors) == 1
            assert "from_thread" in str(errors[0])

    @pytest.mark.parametrize(
        ("task_id", "func", "kwargs", "error", "match"),
        [
            pytest.param("", echo, {}, ValueError, "task_id", id="empty-id"),
            pytest.param(3, echo, {}, TypeError, "task_id", id="int-id"),
            pytest.param("job", 42, {}, TypeError, "func must be callable", id="not-callable"),
            pytest.param("job", echo, {"timeout": 0}, ValueError, "timeout", id="zero-timeout"),
            pytest.param("job", echo, {"timeout": -1}, ValueError, "timeout", id="neg-timeout"),
            pytest.param("job", echo, {"timeout": "1"}, TypeError, "timeout", id="str-timeout"),
        ],
    )
    async def test_bad_arguments(
        self, task_id: Any, func: Any, kwargs: dict[str, Any], error: type[Exception], match: str
    ) -> None:
        """Bad add_task arguments raise a clear error naming the argument."""
        async with TaskManager() as manager:
            with pytest.raises(error, match=match):
                manager.add_task(task_id, func, **kwargs)
            assert manager.statuses() == {}


class TestQueries:
    async def test_unknown_status_names_the_id(self) -> None:
        """status() of an unknown id raises UnknownTaskError naming it and history_size."""
        async with TaskManager(history_size=7) as manager:
            with pytest.raises(UnknownTaskError, match=r"'ghost'.*history_size=7"):
                manager.status("ghost")
            with pytest.raises(UnknownTaskError):
                await manager.wait("ghost")

    async def test_history_is_bounded(self) -> None:
        """Only the newest history_size finished records are kept."""
        async with TaskManager(history_size=3) as manager:
            for i in range(5):  # one at a time: trio finishes a batch in random order
                manager.add_task(f"t{i}", echo, i)
                await manager.wait(f"t{i}")
            assert list(manager.statuses()) == ["t2", "t3", "t4"]
            with pytest.raises(UnknownTaskError):
                manager.status("t0")

    async def test_statuses_are_frozen_records(self) -> None:
        """statuses() returns frozen TaskInfo records for finished and live tasks."""
        async with TaskManager() as manager:
            manager.add_task("done", echo, 1)
            await manager.wait("done")
            manager.add_task("live", anyio.sleep_forever)
            records = manager.statuses()
            assert [r.status for r in records.values()] == [
                TaskStatus.COMPLETED,
                TaskStatus.PENDING,
            ]
            info = records["done"]
            assert isinstance(info, TaskInfo)
            with pytest.raises(AttributeError):
                info.status = TaskStatus.FAILED  # type: ignore[misc]
            manager.cancel_task("live")

    async def test_wait_on_finished_returns_at_once(self) -> None:
        """wait() on a finished task returns its retained record."""
        async with TaskManager() as manager:
            manager.add_task("job", echo, 5)
            await manager.join()
            info = await manager.wait("job")
        assert info.result == 5

    async def test_join_waits_for_tasks_added_meanwhile(self) -> None:
        """join() returns only when tasks added by other tasks have finished too."""
        async with TaskManager() as manager:

            async def chain(n: int) -> None:
                await anyio.lowlevel.checkpoint()
                if n:
                    manager.add_task(f"c{n - 1}", chain, n - 1)

            manager.add_task("c3", chain, 3)
            await manager.join()
            assert manager.snapshot().completed == 4
            assert manager.snapshot().pending == 0

    async def test_snapshot_shows_limiters_and_counts(self) -> None:
        """snapshot() reports borrowed and waiting slots and per-status counts."""
        release = anyio.Event()
        async with TaskManager(max_concurrency=2, max_threads=3, max_processes=1) as m:
            m.add_task("ok", echo, 1)
            m.add_task("bad", boom)
            await m.join()
            for i in range(3):
                m.add_task(f"w{i}", wait_for, release)
            await settle()
            snap = m.snapshot()
            assert snap.accepting
            assert (snap.global_limiter.total, snap.global_limiter.borrowed) == (2, 2)
            assert snap.global_limiter.waiting == 1
            assert (snap.thread_limiter.total, snap.process_limiter.total) == (3, 1)
            assert (snap.running, snap.pending, snap.queued) == (2, 1, 1)
            assert (snap.completed, snap.failed) == (1, 1)
            release.set()
        final = m.snapshot()
        assert not final.accepting
        assert final.global_limiter.borrowed == 0
        assert (final.completed, final.failed, final.history) == (4, 1, 5)

    async def test_snapshot_before_start(self) -> None:
        """A manager that never started still reports its limits."""
        manager = TaskManager(max_concurrency=4)
        snap = manager.snapshot()
        assert snap.global_limiter.total == 4
        assert not snap.accepting


class TestObservability:
    async def test_task_is_named_after_its_id(self) -> None:
        """The AnyIO task running a managed task carries the task id as its name."""

        async def my_name() -> str:
            return anyio.get_current_task().name or ""

        async with TaskManager() as manager:
            manager.add_task("fetch-42", my_name)
            info = await manager.wait("fetch-42")
        assert info.result == "fetch-42"

    async def test_running_tasks_are_listed_by_id(self) -> None:
        """anyio.get_running_tasks() lists a live managed task under its id."""
        async with TaskManager() as manager:
            manager.add_task("listed", anyio.sleep_forever)
            await settle()
            names = {task.name for task in anyio.get_running_tasks()}
            manager.cancel_task("listed")
        assert "listed" in names

    async def test_failure_is_logged_with_traceback(self, caplog: pytest.LogCaptureFixture) -> None:
        """A failed task is logged at ERROR with its traceback; a timeout at WARNING."""
        caplog.set_level(logging.DEBUG, logger="taskscope.taskmanager")
        async with TaskManager() as manager:
            manager.add_task("bad", boom)
            manager.add_task("slow", anyio.sleep_forever, timeout=0.01)
            manager.add_task("ok", echo, 1)
            await manager.join()
        by_level = {(r.levelno, r.getMessage().split()[1]) for r in caplog.records}
        assert (logging.ERROR, "'bad'") in by_level
        assert (logging.WARNING, "'slow'") in by_level
        assert (logging.DEBUG, "'ok'") in by_level
        error = next(r for r in caplog.records if r.levelno == logging.ERROR)
        assert error.exc_info is not None
        assert isinstance(error.exc_info[1], ValueError)

    async def test_custom_logger(self, caplog: pytest.LogCaptureFixture) -> None:
        """Records go to the logger passed to the manager."""
        logger = logging.getLogger("my.app.tasks")
        caplog.set_level(logging.INFO, logger="my.app.tasks")
        async with TaskManager(logger=logger) as manager:
            manager.add_task("job", anyio.sleep_forever)
            await settle()
            manager.cancel_task("job", reason="because")
        assert any(r.name == "my.app.tasks" and "because" in r.getMessage() for r in caplog.records)


class TestRawCancelledError:
    @pytest.mark.parametrize("anyio_backend", [("asyncio", {})], indirect=True)
    async def test_task_raising_cancelled_error_itself_fails(self) -> None:
        """On asyncio, a task raising CancelledError with nothing cancelled is failed."""
        import asyncio

        async def liar() -> None:
            await anyio.lowlevel.checkpoint()
            raise asyncio.CancelledError

        async with TaskManager() as manager:
            manager.add_task("liar", liar)
            info = await manager.wait("liar")
            manager.add_task("after", echo, 1)
            assert (await manager.wait("after")).status is TaskStatus.COMPLETED
        assert info.status is TaskStatus.FAILED
        assert isinstance(info.exception, asyncio.CancelledError)


def test_add_before_start_is_refused() -> None:
    """add_task on a manager that was never started says how to start it."""
    with pytest.raises(ManagerStateError, match="async with TaskManager"):
        TaskManager().add_task("job", echo, 1)
