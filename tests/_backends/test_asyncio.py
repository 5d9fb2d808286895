"""The asyncio backend on the default loop and on uvloop."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
import threading
from typing import Any

import pytest

import taskscope
from taskscope import Instrument, MockClock, Session, TaskInfo
from taskscope._core._faults import reset_internal_errors
from tests.conftest import line_of, run_on


def by_name(session: Session, name: str) -> TaskInfo:
    matches = [t for t in session.snapshot().tasks if t.name == name]
    assert len(matches) == 1, [t.name for t in session.snapshot().tasks]
    return matches[0]


async def idle(steps: int = 1) -> int:
    for _ in range(steps):
        await asyncio.sleep(0)
    return steps


async def fail(message: str) -> None:
    raise ValueError(message)  # raise-line


class TestCreation:
    """Every way of creating a task is recorded, with the user's line and parent."""

    def test_every_creation_api_points_at_its_line(
        self, session: Session, loop_flavour: str
    ) -> None:
        """create_task, loop.create_task, TaskGroup, gather and ensure_future are all seen."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            await asyncio.create_task(idle(), name="via-create-task")  # create-task
            await loop.create_task(idle(), name="via-loop")  # loop-create-task
            async with asyncio.TaskGroup() as group:
                group.create_task(idle(), name="via-taskgroup")  # taskgroup
            fut = asyncio.ensure_future(idle())  # ensure-future
            fut.set_name("via-ensure-future")
            await fut
            await asyncio.gather(idle(2))  # gather

        run_on(loop_flavour, main)
        main_task = next(t for t in session.snapshot().tasks if t.coroutine.endswith("main"))
        for name, marker in [
            ("via-create-task", "create-task"),
            ("via-loop", "loop-create-task"),
            ("via-taskgroup", "taskgroup"),
            ("via-ensure-future", "ensure-future"),
        ]:
            task = by_name(session, name)
            assert task.created_at is not None
            assert task.created_at.file == __file__
            assert task.created_at.line == line_of(marker), name
            assert task.created_at.function.endswith("main")
            assert not task.created_at_is_definition
            assert task.parent_id == main_task.id
            assert task.state == "completed"
            assert task.coroutine == "idle"
            assert task.backend == "asyncio"
        gathered = [
            t
            for t in session.snapshot().tasks
            if t.created_at and t.created_at.line == line_of("gather")
        ]
        assert len(gathered) == 1
        assert gathered[0].steps == 3

    def test_main_task_points_at_the_run_call(self, session: Session, loop_flavour: str) -> None:
        """The task asyncio.run makes for main() is created at the run call."""

        async def main() -> None:
            await asyncio.sleep(0)

        run_on(loop_flavour, main)
        task = next(t for t in session.snapshot().tasks if t.coroutine.endswith("main"))
        assert task.created_at is not None
        assert task.created_at.function == "run_on"
        assert task.parent_id is None

    def test_task_made_in_a_plain_callback_points_at_the_callback(
        self, session: Session, loop_flavour: str
    ) -> None:
        """A task created from a call_soon callback is attributed to the callback's line."""

        async def main() -> None:
            done = asyncio.Event()
            holder: list[asyncio.Task[int]] = []

            def callback() -> None:
                holder.append(asyncio.ensure_future(idle()))  # in-callback
                done.set()

            asyncio.get_running_loop().call_soon(callback)
            await done.wait()
            await holder[0]

        run_on(loop_flavour, main)
        task = next(
            t
            for t in session.snapshot().tasks
            if t.created_at and t.created_at.function.endswith("callback")
        )
        assert task.created_at is not None
        assert task.created_at.line == line_of("in-callback")
        assert task.parent_id is None

    def test_tasks_without_a_user_creator_point_at_their_own_definitions(
        self, session: Session, loop_flavour: str
    ) -> None:
        """Tasks that library code alone created (here ensure_future run as a callback)
        share the unknown-site bucket, yet each keeps its own coroutine's definition."""

        async def first() -> None:
            await asyncio.sleep(0)

        async def second() -> None:
            await asyncio.sleep(0)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.call_soon(asyncio.ensure_future, first())
            loop.call_soon(asyncio.ensure_future, second())
            for _ in range(5):
                await asyncio.sleep(0)

        run_on(loop_flavour, main)
        tasks = session.snapshot().tasks
        for coroutine in (first, second):
            task = next(t for t in tasks if t.coroutine.endswith(coroutine.__name__))
            assert task.created_at_is_definition
            assert task.created_at is not None
            assert task.created_at.line == coroutine.__code__.co_firstlineno

    def test_tasks_created_before_install_are_adopted(self, loop_flavour: str) -> None:
        """Installing inside a running loop adopts the tasks that already exist."""
        sessions: list[Session] = []

        async def main() -> None:
            early = asyncio.create_task(idle(3), name="early")
            await asyncio.sleep(0)
            sessions.append(taskscope.install())
            await early

        try:
            run_on(loop_flavour, main)
            early = by_name(sessions[0], "early")
            assert early.adopted
            assert early.state == "completed"
            assert early.steps >= 1
        finally:
            for s in sessions:
                s.uninstall()

    @pytest.mark.skipif(sys.version_info < (3, 12), reason="eager tasks are new in 3.12")
    def test_eager_tasks_are_recorded(self, session: Session) -> None:
        """An eager task that finishes inside create_task is still recorded, with its step."""

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined,unused-ignore]
            asyncio.create_task(asyncio.sleep(0, "x"), name="eager-done")  # noqa: RUF006
            await asyncio.create_task(idle(2), name="eager-waits")

        asyncio.run(main())
        done = by_name(session, "eager-done")
        assert done.state == "completed"
        assert done.steps == 1
        waits = by_name(session, "eager-waits")
        assert waits.state == "completed"
        assert waits.steps >= 2


class TestTiming:
    """Busy time, steps and the longest step, measured with an injected clock."""

    def test_busy_steps_and_longest_step(
        self, clocked_session: Session, mock_clock: MockClock, loop_flavour: str
    ) -> None:
        """Clock time spent inside steps is busy time; the slow step is located."""

        async def worker() -> None:
            mock_clock.advance(0.25)
            await asyncio.sleep(0)
            mock_clock.advance(1.5)  # the slow step
            await asyncio.sleep(0)  # after-slow-step
            mock_clock.advance(0.25)

        async def main() -> None:
            task = asyncio.create_task(worker(), name="worker")
            mock_clock.advance(10.0)  # outside the worker: not its busy time
            await task

        run_on(loop_flavour, main)
        task = by_name(clocked_session, "worker")
        assert task.steps == 3
        assert task.busy == pytest.approx(2.0)
        assert task.longest_step == pytest.approx(1.5)
        assert task.longest_step_at is not None
        assert task.longest_step_at.line == line_of("after-slow-step")
        assert task.first_step is not None
        assert task.ended is not None
        # Ready from its creation until main yielded: 10 s of the loop busy elsewhere.
        assert task.scheduled == pytest.approx(10.0)
        assert task.idle == pytest.approx(task.ended - task.created - task.busy - task.scheduled)

    def test_running_task_is_visible_from_another_thread(
        self, session: Session, loop_flavour: str
    ) -> None:
        """A snapshot taken while a step runs shows that task as running."""
        seen: list[str] = []

        async def main() -> None:
            started = threading.Event()
            release = threading.Event()

            def look() -> None:
                started.wait()
                seen.append(by_name(session, "blocker").state)
                release.set()

            watcher = threading.Thread(target=look)
            watcher.start()

            async def blocker() -> None:
                started.set()
                release.wait(10)  # blocks the loop until the snapshot is taken

            await asyncio.create_task(blocker(), name="blocker")
            watcher.join()

        run_on(loop_flavour, main)
        assert seen == ["running"]


class TestEndings:
    """How tasks end: results, exceptions, cancellation, exit and garbage collection."""

    def test_failed_task_records_its_exception(self, session: Session, loop_flavour: str) -> None:
        """The exception type, message and the user's raising line are recorded."""

        async def main() -> None:
            task = asyncio.create_task(fail("broken"), name="failing")
            with pytest.raises(ValueError, match="broken"):
                await task

        run_on(loop_flavour, main)
        task = by_name(session, "failing")
        assert task.state == "failed"
        assert task.exception is not None
        assert (task.exception.type, task.exception.message) == ("ValueError", "broken")
        assert task.exception.location is not None
        assert task.exception.location.line == line_of("raise-line")
        assert task.exception_retrieved is True
        assert session.findings() == []

    def test_unretrieved_exception_of_a_forgotten_task(
        self, session: Session, loop_flavour: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A fire-and-forget task that fails and is collected is an error finding."""

        async def main() -> None:
            asyncio.create_task(fail("lost"), name="forgotten")  # noqa: RUF006  # fire-and-forget
            await asyncio.sleep(0)
            await asyncio.sleep(0)

        with caplog.at_level(logging.ERROR, logger="asyncio"):
            run_on(loop_flavour, main)
            gc.collect()
        assert "never retrieved" in caplog.text  # asyncio's own behaviour is unchanged
        findings = session.findings()
        assert [f.kind for f in findings] == ["task-exception-unretrieved"]
        finding = findings[0]
        assert finding.severity == "error"
        assert finding.location is not None
        assert finding.location.line == line_of("fire-and-forget")
        assert finding.task is not None
        assert finding.task.name == "forgotten"
        assert finding.details["exception"] == {"type": "ValueError", "message": "lost"}

    def test_unretrieved_exception_of_a_live_task_at_the_end(
        self, session: Session, loop_flavour: str
    ) -> None:
        """A failed task still referenced but never awaited is reported at the end."""
        keep: list[asyncio.Task[None]] = []

        async def main() -> None:
            keep.append(asyncio.create_task(fail("kept"), name="kept"))
            await asyncio.sleep(0)
            await asyncio.sleep(0)

        run_on(loop_flavour, main)
        assert session.findings() == []  # mid-run it may still be awaited
        session.end_of_program()
        assert [f.kind for f in session.findings()] == ["task-exception-unretrieved"]
        keep[0].exception()  # retrieve, so asyncio does not log at collection

    def test_pending_at_exit(self, session: Session, loop_flavour: str) -> None:
        """A task that asyncio.run has to cancel is pending at exit, cause shutdown."""

        async def main() -> None:
            asyncio.create_task(asyncio.sleep(3600), name="leftover")  # noqa: RUF006  # leftover
            await asyncio.sleep(0)

        run_on(loop_flavour, main)
        task = by_name(session, "leftover")
        assert task.pending_at_exit
        assert task.state == "cancelled"
        assert task.cancellation is not None
        assert task.cancellation.cause == "shutdown"
        findings = session.findings()
        assert [f.kind for f in findings] == ["task-pending-at-exit"]
        assert findings[0].severity == "warning"
        assert findings[0].location is not None
        assert findings[0].location.line == line_of("leftover")

    def test_destroyed_pending(
        self, session: Session, loop_flavour: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A pending task that nothing references is collected: an error finding."""

        async def waits_forever(future: asyncio.Future[None]) -> None:
            await future

        async def main() -> None:
            loop = asyncio.get_running_loop()
            asyncio.create_task(  # noqa: RUF006  # dropped
                waits_forever(loop.create_future()), name="dropped"
            )
            await asyncio.sleep(0)
            await asyncio.sleep(0)
            gc.collect()

        with caplog.at_level(logging.ERROR, logger="asyncio"):
            run_on(loop_flavour, main)
        task = by_name(session, "dropped")
        assert task.destroyed_pending
        findings = session.findings()
        assert [f.kind for f in findings] == ["task-destroyed-pending"]
        assert findings[0].location is not None
        assert findings[0].location.line == line_of("dropped")

    def test_cancellation_names_the_requester_and_line(
        self, session: Session, loop_flavour: str
    ) -> None:
        """Cancelling a waiting task records who asked, from which line, and the message."""

        async def main() -> None:
            victim = asyncio.create_task(asyncio.sleep(3600), name="victim")
            await asyncio.sleep(0)
            victim.cancel("enough")  # cancel-call
            with pytest.raises(asyncio.CancelledError):
                await victim

        run_on(loop_flavour, main)
        victim = by_name(session, "victim")
        assert victim.state == "cancelled"
        cancellation = victim.cancellation
        assert cancellation is not None
        assert cancellation.cause == "cancel-call"
        assert cancellation.location is not None
        assert cancellation.location.line == line_of("cancel-call")
        assert cancellation.requested_by is not None
        assert cancellation.requested_by.id == victim.parent_id
        assert cancellation.message == "enough"

    def test_timeout_cancellation_is_attributed_to_the_timeout(
        self, session: Session, loop_flavour: str
    ) -> None:
        """A task cancelled by wait_for's timeout has cause timeout."""

        async def main() -> None:
            slow = asyncio.ensure_future(asyncio.sleep(3600))
            slow.set_name("slow")
            # Let it start waiting: a task cancelled before its first step has no
            # delivery to attribute (a slow machine made this test flaky).
            await asyncio.sleep(0)
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(slow, timeout=0.001)

        run_on(loop_flavour, main)
        slow = by_name(session, "slow")
        assert slow.state == "cancelled"
        assert slow.cancellation is not None
        assert slow.cancellation.cause == "timeout"

    def test_a_clean_program_has_no_findings(self, session: Session, loop_flavour: str) -> None:
        """Structured concurrency with every task awaited produces no findings."""

        async def main() -> None:
            async with asyncio.TaskGroup() as group:
                for n in range(10):
                    group.create_task(idle(n))

        run_on(loop_flavour, main)
        session.end_of_program()
        assert session.findings() == []


class TestTransparency:
    """The program sees the same tasks, results and factories as without taskscope."""

    def test_task_identity_and_results(self, session: Session, loop_flavour: str) -> None:
        """type(task), get_coro() and results are untouched."""

        async def main() -> None:
            coro = idle(2)
            task = asyncio.create_task(coro)
            assert type(task) is asyncio.Task
            assert task.get_coro() is coro
            assert await task == 2
            assert asyncio.current_task() in asyncio.all_tasks()

        run_on(loop_flavour, main)

    def test_a_user_task_factory_is_chained_and_visible(
        self, session: Session, loop_flavour: str
    ) -> None:
        """A factory set by the program is used, returned by get_task_factory, and recorded."""
        made: list[str] = []

        def factory(loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> asyncio.Task[Any]:
            made.append(coro.__qualname__)
            return asyncio.Task(coro, loop=loop, **kwargs)

        async def main() -> None:
            loop = asyncio.get_running_loop()
            loop.set_task_factory(factory)
            assert loop.get_task_factory() is factory
            await asyncio.create_task(idle(), name="from-factory")

        run_on(loop_flavour, main)
        assert "idle" in made
        assert by_name(session, "from-factory").state == "completed"

    def test_scheduling_order_is_unchanged(self, session: Session, loop_flavour: str) -> None:
        """Interleaving of tasks is the same as on a plain loop."""

        async def main() -> list[str]:
            events: list[str] = []

            async def actor(name: str) -> None:
                for i in range(3):
                    events.append(f"{name}{i}")
                    await asyncio.sleep(0)

            await asyncio.gather(actor("a"), actor("b"), actor("c"))
            return events

        traced = run_on(loop_flavour, main)
        session.uninstall()
        assert traced == run_on(loop_flavour, main)

    def test_uninstall_restores_the_loop_classes(self) -> None:
        """After uninstall, the loop methods are the originals and nothing is recorded."""
        originals = {
            name: vars(asyncio.BaseEventLoop).get(name)
            for name in ("call_soon", "create_task", "call_exception_handler", "close")
        }
        active = taskscope.install()
        assert asyncio.BaseEventLoop.call_soon is not originals["call_soon"]
        active.uninstall()
        for name, original in originals.items():
            assert vars(asyncio.BaseEventLoop).get(name) is original, name
        created = active.registry.created
        asyncio.run(idle())
        assert active.registry.created == created

    def test_tasks_alive_at_uninstall_are_not_reported_destroyed(self, loop_flavour: str) -> None:
        """A task still running when the session ends is not a false destroyed-pending."""
        sessions: list[Session] = []

        async def main() -> None:
            sessions.append(taskscope.install())
            task = asyncio.create_task(idle(3), name="outlives")
            await asyncio.sleep(0)
            sessions[0].uninstall()
            await task
            del task
            gc.collect()

        run_on(loop_flavour, main)
        outlives = by_name(sessions[0], "outlives")
        assert not outlives.destroyed_pending
        assert sessions[0].findings() == []

    def test_a_failed_install_leaves_nothing_behind(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """If an opt-in monitor fails to install, every hook already in is taken out."""
        from taskscope.monitors._scopes import ScopeMonitor

        def broken(self: ScopeMonitor, registry: object) -> None:
            raise RuntimeError("cannot install")

        monkeypatch.setattr(ScopeMonitor, "install", broken)
        original = vars(asyncio.BaseEventLoop)["call_soon"]
        with pytest.raises(RuntimeError, match="cannot install"):
            taskscope.install(scopes=True)
        assert vars(asyncio.BaseEventLoop)["call_soon"] is original
        assert taskscope.current_session() is None

    def test_install_twice_is_an_error(self, session: Session) -> None:
        """A second install while one is active says how to proceed."""
        with pytest.raises(RuntimeError, match="already installed"):
            taskscope.install()
        assert taskscope.current_session() is session


class TestBounds:
    """Finished tasks are bounded; aggregates keep counting."""

    def test_history_is_bounded_and_sites_aggregate(self, loop_flavour: str) -> None:
        """With history_size=10, 200 tasks keep 10 records and every count."""
        with taskscope.monitor(history_size=10) as session:

            async def main() -> None:
                for _ in range(200):
                    await asyncio.create_task(idle())  # spawn-site

            run_on(loop_flavour, main)
            snapshot = session.snapshot()
        assert snapshot.counters.tasks_created >= 201
        assert snapshot.counters.history_dropped >= 190
        assert len(session.registry.history) == 10
        site = next(
            s for s in snapshot.sites if s.location and s.location.line == line_of("spawn-site")
        )
        assert (site.created, site.completed, site.alive) == (200, 200, 0)

    @pytest.mark.parametrize(
        "options",
        [
            pytest.param({"history_size": 0}, id="zero-history"),
            pytest.param({"history_size": -5}, id="negative-history"),
            pytest.param({"max_sites": 1.5}, id="float-sites"),
        ],
    )
    def test_bad_options_are_rejected(self, options: dict[str, Any]) -> None:
        """Options that are not positive integers name themselves in the error."""
        with pytest.raises(ValueError, match=next(iter(options))):
            taskscope.install(**options)
        assert taskscope.current_session() is None


class TestFaults:
    """Failures inside taskscope never reach the program."""

    def test_a_raising_instrument_is_disabled_and_logged_once(
        self, loop_flavour: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        """An instrument hook that raises is removed; the program's result is unchanged."""
        calls: list[int] = []

        class Broken(Instrument):
            def before_task_step(self, task_id: int) -> None:
                calls.append(task_id)
                raise RuntimeError("instrument bug")

        with taskscope.monitor(instruments=[Broken()]) as session:
            assert run_on(loop_flavour, lambda: idle(5)) == 5
            assert "before_task_step" not in session.instruments
        assert len(calls) == 1
        assert caplog.text.count("has been disabled") == 1

    def test_instruments_receive_task_events(self, loop_flavour: str) -> None:
        """Hooks see creation, every step and the end of each task."""
        events: list[str] = []

        class Recorder(Instrument):
            def task_created(self, task: TaskInfo) -> None:
                events.append(f"created {task.name}")

            def after_task_step(self, task_id: int, duration: float) -> None:
                events.append("step")

            def task_finished(self, task: TaskInfo) -> None:
                events.append(f"finished {task.name} {task.state}")

        async def main() -> None:
            await asyncio.create_task(idle(1), name="t")

        with taskscope.monitor(instruments=[Recorder()]):
            run_on(loop_flavour, main)
        mine = events[events.index("created t") :]
        assert mine[:1] == ["created t"]
        assert "finished t completed" in mine

    def test_an_internal_error_is_contained(
        self,
        session: Session,
        loop_flavour: str,
        caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A bug in step accounting is logged once and the program runs on unchanged."""
        reset_internal_errors()
        backend = session._backends[0]

        def broken(record: Any, task: Any, ended: float | None = None) -> None:
            raise RuntimeError("accounting bug")

        # The Python finish, and the registry's (whose C twin files completed tasks).
        monkeypatch.setattr(backend, "finish", broken)
        monkeypatch.setattr(backend.registry, "task_finished", broken)
        monkeypatch.setattr(backend, "_timed_step", backend._make_timed_step())
        # Reinstall the wrappers so the broken accounting is the one in use.
        backend.uninstall()
        backend.install()
        assert run_on(loop_flavour, lambda: idle(3)) == 3
        assert caplog.text.count("internal error in asyncio backend: step accounting") == 1
        assert session.snapshot().counters.internal_errors["asyncio backend: step accounting"] >= 1

    def test_a_callback_with_a_hostile_getattr_is_left_alone(
        self, session: Session, loop_flavour: str
    ) -> None:
        """call_soon with an object whose attribute access raises behaves as without us."""

        class Hostile:
            def __getattr__(self, name: str) -> Any:
                raise KeyError(name)

            def __call__(self) -> None:
                ran.append(True)

        ran: list[bool] = []

        async def main() -> None:
            asyncio.get_running_loop().call_soon(Hostile())
            await asyncio.sleep(0)

        run_on(loop_flavour, main)
        assert ran == [True]
