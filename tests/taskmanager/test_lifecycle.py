"""TaskManager lifecycle: start, graceful and bounded shutdown, wrong-task use."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import pytest

from taskscope.taskmanager import (
    ManagerStateError,
    TaskManager,
    TaskStatus,
    WrongTaskError,
)

pytestmark = pytest.mark.anyio


async def settle() -> None:
    """Let every ready task run a few steps."""
    for _ in range(5):
        await anyio.lowlevel.checkpoint()


class _SetOnRecord(logging.Handler):
    """A logging handler that sets an event when a record arrives."""

    def __init__(self, event: anyio.Event) -> None:
        super().__init__(logging.WARNING)
        self.event = event
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())
        self.event.set()


class TestStartAndShutdown:
    async def test_start_and_shutdown_methods(self) -> None:
        """start() and shutdown() work like entering and leaving 'async with'."""
        manager = TaskManager()
        await manager.start()
        manager.add_task("job", anyio.sleep, 0)
        await manager.shutdown()
        await manager.shutdown()  # idempotent
        assert manager.status("job").status is TaskStatus.COMPLETED

    async def test_a_manager_runs_once(self) -> None:
        """Starting a manager twice raises ManagerStateError saying to create a new one."""
        async with TaskManager() as manager:
            with pytest.raises(ManagerStateError, match="create a new one"):
                await manager.start()
        with pytest.raises(ManagerStateError, match="create a new one"):
            await manager.start()

    async def test_shutdown_before_start(self) -> None:
        """shutdown() of a manager that never started raises ManagerStateError."""
        with pytest.raises(ManagerStateError, match="start"):
            await TaskManager().shutdown()

    async def test_no_new_work_after_shutdown(self) -> None:
        """add_task after shutdown raises ManagerStateError; so does it during the drain."""
        errors: list[Exception] = []
        async with TaskManager(shutdown_grace=5) as manager:

            async def late_adder() -> None:
                await anyio.sleep(0.01)  # runs while the owner drains
                try:
                    manager.add_task("late", anyio.sleep, 0)
                except ManagerStateError as exc:
                    errors.append(exc)

            manager.add_task("adder", late_adder)
        assert len(errors) == 1
        assert "shutdown" in str(errors[0])
        with pytest.raises(ManagerStateError):
            manager.add_task("later", anyio.sleep, 0)

    async def test_graceful_shutdown_lets_tasks_finish(self) -> None:
        """Within the grace period live tasks finish normally."""
        async with TaskManager(shutdown_grace=10) as manager:
            for i in range(5):
                manager.add_task(f"t{i}", anyio.sleep, 0.01)
        assert {info.status for info in manager.statuses().values()} == {TaskStatus.COMPLETED}

    async def test_stuck_tasks_are_cancelled_after_grace(self) -> None:
        """Tasks still running when the grace period ends are cancelled for 'shutdown'."""
        finished: list[str] = []

        async def stuck(name: str) -> None:
            try:
                await anyio.sleep_forever()
            finally:
                finished.append(name)

        async with TaskManager(shutdown_grace=0.01, max_concurrency=1) as manager:
            manager.add_task("running", stuck, "running")
            manager.add_task("queued", stuck, "queued")
            await settle()
        infos = manager.statuses()
        assert infos["running"].status is TaskStatus.CANCELLED
        assert infos["running"].cancel_reason == "shutdown"
        assert infos["queued"].status is TaskStatus.CANCELLED
        assert "running" in finished  # its cleanup ran before the context exited
        snap = manager.snapshot()
        assert (snap.pending, snap.running, snap.queued, snap.global_limiter.borrowed) == (
            0,
            0,
            0,
            0,
        )

    async def test_zero_grace_cancels_at_once(self) -> None:
        """shutdown_grace=0 cancels live tasks, including ones never scheduled."""
        async with TaskManager(shutdown_grace=0) as manager:
            manager.add_task("running", anyio.sleep_forever)
            await settle()
            manager.add_task("unscheduled", anyio.sleep_forever)
        statuses = {k: v.status for k, v in manager.statuses().items()}
        assert statuses == {"running": TaskStatus.CANCELLED, "unscheduled": TaskStatus.CANCELLED}

    async def test_task_ignoring_cancellation_is_logged_and_awaited(self) -> None:
        """A task shielding itself is named in a warning, and shutdown still waits for it."""
        release = anyio.Event()
        handler = _SetOnRecord(release)
        logger = logging.getLogger("test.taskmanager.stuck")
        logger.addHandler(handler)
        order: list[str] = []

        async def shielded() -> None:
            with anyio.CancelScope(shield=True):
                await release.wait()  # set by the warning shutdown logs
            order.append("task done")

        try:
            async with TaskManager(shutdown_grace=0, cancel_timeout=0.01, logger=logger) as m:
                m.add_task("stubborn", shielded)
                await settle()
            order.append("context exited")
        finally:
            logger.removeHandler(handler)
        assert order == ["task done", "context exited"]
        assert "'stubborn'" in handler.messages[0]
        assert "ignore cancellation" in handler.messages[0]
        assert m.status("stubborn").status is TaskStatus.COMPLETED

    async def test_exception_in_body_cancels_at_once_and_propagates(self) -> None:
        """An exception leaving the block cancels live tasks (no grace) and propagates."""
        manager = TaskManager(shutdown_grace=60)

        async def body() -> None:
            async with manager:
                manager.add_task("job", anyio.sleep_forever)
                await settle()
                raise KeyError("body")

        with pytest.raises(KeyError, match="body"):
            await body()
        assert manager.status("job").status is TaskStatus.CANCELLED

    async def test_owner_cancelled_from_outside(self) -> None:
        """Cancelling the owning task cancels every managed task; nothing keeps running."""
        manager = TaskManager(shutdown_grace=60)
        with anyio.move_on_after(0.05):
            async with manager:
                manager.add_task("job", anyio.sleep_forever)
                await anyio.sleep_forever()
        assert manager.status("job").status is TaskStatus.CANCELLED
        assert manager.snapshot().running == 0

    async def test_owner_cancelled_while_draining(self) -> None:
        """If the owner is cancelled during the grace period, tasks are cancelled too."""
        manager = TaskManager(shutdown_grace=60)
        with anyio.move_on_after(0.05) as scope:
            async with manager:
                manager.add_task("job", anyio.sleep_forever)
        assert scope.cancelled_caught
        assert manager.status("job").status is TaskStatus.CANCELLED

    async def test_failing_tasks_never_fail_the_context(self) -> None:
        """Many failing tasks leave the context without raising."""

        async def fail(i: int) -> None:
            raise RuntimeError(i)

        async with TaskManager() as manager:
            for i in range(20):
                manager.add_task(str(i), fail, i)
        assert manager.snapshot().failed == 20


class TestWrongTask:
    async def test_shutdown_from_another_task_is_refused(self) -> None:
        """Shutting down from a task other than the owner raises WrongTaskError first."""
        errors: list[BaseException] = []
        async with TaskManager() as manager:

            async def intruder() -> None:
                try:
                    await manager.shutdown()
                except WrongTaskError as exc:
                    errors.append(exc)

            manager.add_task("intruder", intruder)
            await manager.wait("intruder")
            assert manager.snapshot().accepting  # untouched
            manager.add_task("still-works", anyio.sleep, 0)
            await manager.wait("still-works")
        assert len(errors) == 1
        assert "task that called start()" in str(errors[0])
        assert isinstance(errors[0], RuntimeError)

    async def test_exit_from_another_task_is_refused(self) -> None:
        """Calling __aexit__ from a sibling task raises WrongTaskError, not AnyIO's error."""
        manager = TaskManager()
        started = anyio.Event()
        done = anyio.Event()
        errors: list[BaseException] = []

        async def owner() -> None:
            async with manager:
                started.set()
                await done.wait()

        async def other() -> None:
            await started.wait()
            try:
                await manager.__aexit__(None, None, None)
            except WrongTaskError as exc:
                errors.append(exc)
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(owner)
            tg.start_soon(other)
        assert len(errors) == 1

    async def test_shutdown_from_another_thread_is_refused(self) -> None:
        """Shutting down from a foreign thread raises WrongTaskError before any await."""
        async with TaskManager() as manager:

            def from_thread() -> BaseException | None:
                coro = manager.shutdown()
                try:
                    coro.send(None)  # the check runs before the first await
                except WrongTaskError as exc:
                    return exc
                finally:
                    coro.close()
                return None  # pragma: no cover

            error = await anyio.to_thread.run_sync(from_thread)
            assert manager.snapshot().accepting
        assert isinstance(error, WrongTaskError)
        assert "from_thread" in str(error)

    async def test_cancel_from_another_thread_is_refused(self) -> None:
        """cancel_task from a foreign thread raises WrongTaskError."""
        async with TaskManager() as manager:
            manager.add_task("job", anyio.sleep_forever)

            def from_thread() -> None:
                manager.cancel_task("job")

            with pytest.raises(WrongTaskError):
                await anyio.to_thread.run_sync(from_thread)
            manager.cancel_task("job")
