"""The trio backend: the same task records for trio programs and AnyIO on trio."""

from __future__ import annotations

import asyncio
import functools
import gc
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import trio
import trio.lowlevel
from trio import run as run_imported_before_install

import taskscope
from taskscope import MockClock, Session, TaskInfo
from taskscope._backends import _compat
from taskscope._core._faults import internal_error_counts, reset_internal_errors
from tests.conftest import line_of

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import outcome

THIS_FILE = str(Path(__file__).resolve())


def trio_name(function: Callable[..., Any]) -> str:
    """Return the name trio gives a task running `function`."""
    return f"{function.__module__}.{function.__qualname__}"


def trio_tasks(session: Session) -> list[TaskInfo]:
    """Return the trio task records of `session`, in creation order."""
    return [t for t in session.snapshot().tasks if t.backend == "trio"]


def by_name(session: Session) -> dict[str, TaskInfo]:
    """Return the trio task records of `session` by name (names must be unique)."""
    tasks = trio_tasks(session)
    named = {t.name: t for t in tasks}
    assert len(named) == len(tasks), [t.name for t in tasks]
    return named


async def checkpoints(n: int) -> int:
    """Pass `n` checkpoints, then return `n`."""
    for _ in range(n):
        await trio.sleep(0)
    return n


async def fail(message: str) -> None:
    """Checkpoint once, then raise ValueError(message)."""
    await trio.sleep(0)
    raise ValueError(message)  # raise-line


class TestCreation:
    """Which tasks are recorded, with which name, location and parent."""

    def test_names_coroutines_and_spawn_lines(self, session: Session) -> None:
        """Each task has its name, its coroutine's qualname and the start_soon line."""

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 1, name="first")  # spawn-first
                nursery.start_soon(checkpoints, 2)  # spawn-second

        trio.run(main)
        tasks = by_name(session)
        assert set(tasks) == {
            f"{__name__}.checkpoints",
            "first",
            trio_name(main),
        }
        first, second = tasks["first"], tasks[f"{__name__}.checkpoints"]
        assert first.coroutine == second.coroutine == "checkpoints"
        for task, marker in ((first, "spawn-first"), (second, "spawn-second")):
            assert task.created_at is not None
            assert (task.created_at.file, task.created_at.line) == (THIS_FILE, line_of(marker))
            assert task.created_at.function.endswith("main")
            assert not task.created_at_is_definition

    def test_main_task_points_at_the_run_call(self, session: Session) -> None:
        """The main task was created by the trio.run(...) line and has no parent."""

        async def main() -> None:
            await trio.sleep(0)

        trio.run(main)  # main-run-line
        (task,) = trio_tasks(session)
        assert task.coroutine == main.__qualname__
        assert task.parent_id is None
        assert task.created_at is not None
        assert task.created_at.line == line_of("main-run-line")

    def test_trio_machinery_is_not_recorded(self, session: Session) -> None:
        """trio's init and run_sync_soon tasks are the run loop's, not the program's."""

        async def main() -> None:
            trio.lowlevel.current_trio_token().run_sync_soon(lambda: None)
            await trio.sleep(0)

        trio.run(main)
        assert [t.coroutine for t in trio_tasks(session)] == [main.__qualname__]

    def test_library_only_spawn_has_no_spawn_line(self, session: Session) -> None:
        """A spawn made from trio's own code alone does not point at the trio.run line."""

        async def main() -> None:
            spawned = trio.Event()
            async with trio.open_nursery() as nursery:
                token = trio.lowlevel.current_trio_token()
                token.run_sync_soon(
                    functools.partial(nursery.start_soon, checkpoints, 1, name="indirect")
                )
                # Callbacks run in order: once this one ran, the spawn has happened.
                token.run_sync_soon(spawned.set)
                await spawned.wait()

        trio.run(main)
        indirect = by_name(session)["indirect"]
        assert indirect.created_at_is_definition
        assert indirect.created_at is not None
        assert indirect.created_at.line == checkpoints.__code__.co_firstlineno

    def test_parents_follow_the_spawning_task(self, session: Session) -> None:
        """A task's parent is the task that was running when it was spawned."""

        async def grandchild() -> None:
            await trio.sleep(0)

        async def child() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(grandchild, name="grandchild")

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(child, name="child")

        trio.run(main)
        tasks = by_name(session)
        main_task = tasks[trio_name(main)]
        assert main_task.parent_id is None
        assert tasks["child"].parent_id == main_task.id
        assert tasks["grandchild"].parent_id == tasks["child"].id

    def test_nursery_start(self, session: Session) -> None:
        """A task spawned with nursery.start points at the start line and its caller."""

        async def server(*, task_status: trio.TaskStatus[int]) -> None:
            await trio.sleep(0)
            task_status.started(42)
            await trio.sleep(0)

        async def main() -> int:
            async with trio.open_nursery() as nursery:
                value: int = await nursery.start(server, name="server")  # start-line
            return value

        assert trio.run(main) == 42
        tasks = by_name(session)
        server_task = tasks["server"]
        assert server_task.state == "completed"
        assert server_task.parent_id == tasks[trio_name(main)].id
        assert server_task.created_at is not None
        assert server_task.created_at.line == line_of("start-line")
        assert server_task.steps == 3

    def test_run_imported_before_install(self, session: Session) -> None:
        """A `from trio import run` done before install still records the run."""

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 1, name="early")

        run_imported_before_install(main)
        assert "early" in by_name(session)

    def test_guest_run(self, session: Session) -> None:
        """A trio guest run inside asyncio is recorded like trio.run."""

        async def trio_main() -> int:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 2, name="guest-child")  # guest-spawn
            return 7

        async def host() -> int:
            loop = asyncio.get_running_loop()
            done: asyncio.Future[outcome.Outcome[int]] = loop.create_future()
            trio.lowlevel.start_guest_run(
                trio_main,
                run_sync_soon_threadsafe=loop.call_soon_threadsafe,
                done_callback=done.set_result,
            )
            return (await done).unwrap()

        assert asyncio.run(host()) == 7
        child = by_name(session)["guest-child"]
        assert child.state == "completed"
        assert child.steps == 3
        assert child.created_at is not None
        assert child.created_at.line == line_of("guest-spawn")


class TestEndings:
    """Completed, failed and cancelled tasks, with exception and cause."""

    def test_failed_task(self, session: Session) -> None:
        """A raising task is failed, with type, message and the raising line."""

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fail, "boom", name="failing")

        with pytest.raises(BaseExceptionGroup):
            trio.run(main)
        task = by_name(session)["failing"]
        assert task.state == "failed"
        assert task.exception is not None
        assert (task.exception.type, task.exception.message) == ("ValueError", "boom")
        assert task.exception.location is not None
        assert task.exception.location.line == line_of("raise-line")
        assert task.exception.frames[-1].line == line_of("raise-line")
        # trio hands every exception to the nursery: never "unretrieved".
        assert task.exception_retrieved is True
        kinds = {f.kind for f in session.findings()}
        assert "task-exception-unretrieved" not in kinds

    def test_main_task_failure(self, session: Session) -> None:
        """The main task's own exception is recorded although trio.run raises it."""

        async def main() -> None:
            await trio.sleep(0)
            raise KeyError("main")

        with pytest.raises(KeyError):
            trio.run(main)
        (task,) = trio_tasks(session)
        assert task.state == "failed"
        assert task.exception is not None
        assert task.exception.type == "KeyError"

    def test_sibling_cancelled_by_failure(self, session: Session) -> None:
        """A sibling cancelled because another child failed is cancelled, not failed."""

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever, name="sleeper")
                nursery.start_soon(fail, "x", name="failing")

        with pytest.raises(BaseExceptionGroup):
            trio.run(main)
        tasks = by_name(session)
        assert tasks["sleeper"].state == "cancelled"
        assert tasks["sleeper"].exception is None
        assert tasks["sleeper"].cancellation is not None
        assert tasks["sleeper"].cancellation.cause == "sibling-failure"
        # trio's own reason ("child task raised ...") is not a user's cancel message.
        assert tasks["sleeper"].cancellation.message is None
        assert tasks["failing"].state == "failed"

    @pytest.mark.parametrize(
        ("how", "cause", "message"),
        [
            pytest.param("deadline", "timeout", None, id="deadline"),
            pytest.param("explicit", "cancel-scope", "enough", id="explicit"),
        ],
    )
    def test_cancel_causes(
        self, session: Session, how: str, cause: str, message: str | None
    ) -> None:
        """A deadline is a timeout; an explicit cancel carries its reason."""

        async def main() -> None:
            with trio.CancelScope() as scope:
                if how == "deadline":
                    scope.deadline = trio.current_time()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(trio.sleep_forever, name="victim")
                    await trio.sleep(0)
                    if how == "explicit":
                        scope.cancel(reason="enough")

        trio.run(main)
        victim = by_name(session)["victim"]
        assert victim.state == "cancelled"
        assert victim.cancellation is not None
        assert (victim.cancellation.cause, victim.cancellation.message) == (cause, message)

    def test_group_of_cancellations_is_cancelled(self, session: Session) -> None:
        """A task ended by its own nursery's group of Cancelled is cancelled."""

        async def owner() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever)
                nursery.start_soon(trio.sleep_forever)
                await trio.sleep_forever()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(owner, name="owner")
                await trio.sleep(0)
                await trio.sleep(0)
                nursery.cancel_scope.cancel()

        trio.run(main)
        states = {t.name: t.state for t in trio_tasks(session)}
        assert states["owner"] == "cancelled"
        assert states[f"{trio.sleep_forever.__module__}.sleep_forever"] == "cancelled"

    def test_system_task_of_the_user(self, session: Session) -> None:
        """A system task the program spawns itself is recorded and shut down."""

        async def main() -> None:
            trio.lowlevel.spawn_system_task(trio.sleep_forever, name="service")
            await trio.sleep(0)

        trio.run(main)
        service = by_name(session)["service"]
        assert service.state == "cancelled"
        assert service.cancellation is not None
        assert service.cancellation.cause == "shutdown"
        assert session.snapshot().counters.tasks_alive == 0


class TestTimings:
    """Steps, busy time and the longest step."""

    def test_steps_and_busy(self, session: Session) -> None:
        """A task passing N checkpoints takes N + 1 steps and has busy time."""

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 5, name="five")
                nursery.start_soon(checkpoints, 0, name="zero")

        trio.run(main)
        tasks = by_name(session)
        assert (tasks["five"].steps, tasks["zero"].steps) == (6, 1)
        for task in (tasks["five"], tasks["zero"]):
            assert task.busy > 0
            assert task.first_step is not None
            assert task.ended is not None
            assert task.created <= task.first_step <= task.ended
            assert task.longest_step <= task.busy

    def test_longest_step_points_after_the_busy_part(
        self, clocked_session: Session, mock_clock: MockClock
    ) -> None:
        """A CPU-busy step is the longest, and points at the await that ends it."""
        session, clock = clocked_session, mock_clock

        async def worker() -> None:
            await trio.sleep(0)
            clock.advance(2.0)  # the busy part of a step
            await trio.sleep(0)  # after-busy
            clock.advance(0.5)
            await trio.sleep(0)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker, name="worker")

        trio.run(main)
        task = by_name(session)["worker"]
        assert task.busy == pytest.approx(2.5)
        assert task.longest_step == pytest.approx(2.0)
        assert task.longest_step_at is not None
        assert (task.longest_step_at.file, task.longest_step_at.line) == (
            THIS_FILE,
            line_of("after-busy"),
        )
        assert task.steps == 4
        assert task.idle == pytest.approx(0.0)

    def test_final_step_keeps_the_suspension_point(
        self, clocked_session: Session, mock_clock: MockClock
    ) -> None:
        """When the last step is the longest, longest_step_at stays where it was."""
        session, clock = clocked_session, mock_clock

        async def worker() -> None:
            clock.advance(1.0)
            await trio.sleep(0)  # first-suspension
            clock.advance(3.0)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(worker, name="worker")

        trio.run(main)
        task = by_name(session)["worker"]
        assert task.longest_step == pytest.approx(3.0)
        assert task.longest_step_at is not None
        assert task.longest_step_at.line == line_of("first-suspension")

    def test_running_task_is_running(self, session: Session) -> None:
        """A snapshot taken inside a task shows that task as running."""
        seen: list[str] = []

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 3, name="other")
                seen.extend(t.state for t in trio_tasks(session) if t.name != "other")

        trio.run(main)
        assert seen == ["running"]


class TestAnyio:
    """AnyIO programs on the trio backend."""

    def test_task_group(self, session: Session) -> None:
        """tg.start_soon and tg.start tasks point at their lines and at user code."""

        async def starter(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            task_status.started()
            await anyio.sleep(0)

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(checkpoints, 2, name="soon")  # anyio-soon
                await tg.start(starter, name="started")  # anyio-start

        anyio.run(main, backend="trio")
        tasks = by_name(session)
        main_task = next(t for t in tasks.values() if t.coroutine == main.__qualname__)
        for name, marker, coroutine in (
            ("soon", "anyio-soon", "checkpoints"),
            ("started", "anyio-start", starter.__qualname__),
        ):
            task = tasks[name]
            assert task.state == "completed"
            assert task.parent_id == main_task.id
            assert task.created_at is not None
            assert (task.created_at.file, task.created_at.line) == (THIS_FILE, line_of(marker))
            # AnyIO's wrapper coroutine is named after the user's function.
            assert task.coroutine == coroutine

    def test_wrapped_coroutine_named_from_creation(self, session: Session) -> None:
        """An AnyIO task is named after the user's coroutine even before it runs."""
        coroutines: list[str] = []

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(checkpoints, 0, name="at-once")
                coroutines.extend(t.coroutine for t in trio_tasks(session) if t.name == "at-once")

        anyio.run(main, backend="trio")
        assert coroutines == ["checkpoints"]
        assert by_name(session)["at-once"].coroutine == "checkpoints"

    def test_failure_and_cancellation(self, session: Session) -> None:
        """An AnyIO task failure and the sibling it cancels are recorded as such."""

        async def main() -> None:
            async with anyio.create_task_group() as tg:
                tg.start_soon(anyio.sleep_forever, name="sleeper")
                tg.start_soon(fail, "anyio", name="failing")

        with pytest.raises(BaseExceptionGroup):
            anyio.run(main, backend="trio")
        tasks = by_name(session)
        assert tasks["failing"].state == "failed"
        assert tasks["failing"].exception is not None
        assert tasks["failing"].exception.message == "anyio"
        assert tasks["sleeper"].state == "cancelled"


class TestInstallDuringRun:
    """Installing and uninstalling while a trio run is going on."""

    def test_install_adopts_existing_tasks(self) -> None:
        """Tasks alive at install are adopted with their parents; new ones are tracked."""
        sessions: list[Session] = []
        states: dict[str, str] = {}

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 3, name="old")
                await trio.sleep(0)
                sessions.append(taskscope.install())
                states.update((t.name, t.state) for t in trio_tasks(sessions[0]))
                nursery.start_soon(checkpoints, 1, name="new")  # new-after-install

        try:
            trio.run(main)
        finally:
            for installed in sessions:
                installed.uninstall()
        (session,) = sessions
        tasks = by_name(session)
        main_task = tasks[trio_name(main)]
        old, new = tasks["old"], tasks["new"]
        assert main_task.adopted
        assert old.adopted
        assert not new.adopted
        assert old.parent_id == new.parent_id == main_task.id
        assert {t.state for t in tasks.values()} == {"completed"}
        assert new.created_at is not None
        assert new.created_at.line == line_of("new-after-install")
        assert old.created_at_is_definition
        # The installing step is timed from install on: the installer is running.
        assert states == {trio_name(main): "running", "old": "pending"}

    def test_uninstall_inside_a_run(self) -> None:
        """After uninstall inside a run, the instrument is gone and new tasks unseen."""
        installed = taskscope.install()
        runners: list[Any] = []

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 1, name="before")
                await trio.sleep(0)
                installed.uninstall()
                runners.append(_compat.trio_current_runner())
                nursery.start_soon(checkpoints, 1, name="after")

        try:
            trio.run(main)
        finally:
            installed.uninstall()
        gc.collect()
        tasks = by_name(installed)
        assert "after" not in tasks
        # Alive at uninstall: still pending, detached, never "destroyed while pending".
        assert {(t.state, t.destroyed_pending) for t in tasks.values()} == {("pending", False)}
        assert set(tasks) == {"before", trio_name(main)}
        (runner,) = runners
        assert not any(
            type(instrument).__module__.startswith("taskscope")
            for instrument in runner.instruments["_all"]
        )


class TestUninstall:
    """Uninstalling restores trio exactly."""

    def test_restores_trio(self) -> None:
        """setup_runner and Runner.task_exited are trio's own again after uninstall."""
        module = _compat.trio_run_module()
        assert module is not None
        setup_runner = module.setup_runner
        task_exited = vars(module.Runner)["task_exited"]
        installed = taskscope.install()
        try:
            assert module.setup_runner is not setup_runner
            assert vars(module.Runner)["task_exited"] is not task_exited
        finally:
            installed.uninstall()
        assert module.setup_runner is setup_runner
        assert vars(module.Runner)["task_exited"] is task_exited

    def test_run_after_uninstall_records_nothing(self) -> None:
        """A trio run after uninstall adds no record."""
        installed = taskscope.install()
        trio.run(checkpoints, 1)
        installed.uninstall()
        before = len(trio_tasks(installed))
        trio.run(checkpoints, 1)
        assert before == 1
        assert len(trio_tasks(installed)) == before


class _Recorder(taskscope.Instrument):
    """Records every hook call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def task_created(self, task: TaskInfo) -> None:
        self.calls.append(("task_created", task.name))

    def before_task_step(self, task_id: int) -> None:
        self.calls.append(("before_task_step", task_id))

    def after_task_step(self, task_id: int, duration: float) -> None:
        self.calls.append(("after_task_step", task_id))

    def task_finished(self, task: TaskInfo) -> None:
        self.calls.append(("task_finished", task.state))


class _RaisingStep(taskscope.Instrument):
    """Raises from before_task_step."""

    def __init__(self) -> None:
        self.calls = 0

    def before_task_step(self, task_id: int) -> None:
        self.calls += 1
        raise RuntimeError("instrument bug")


class TestInstruments:
    """taskscope instruments see trio tasks; faults never reach the program."""

    def test_hooks_in_order(self) -> None:
        """One task's hooks: created, one bracket per step, finished."""
        recorder = _Recorder()
        with taskscope.monitor(instruments=[recorder]) as session:
            trio.run(checkpoints, 2)
        (task,) = trio_tasks(session)
        steps = [("before_task_step", task.id), ("after_task_step", task.id)] * 3
        assert recorder.calls == [
            ("task_created", task.name),
            *steps,
            ("task_finished", "completed"),
        ]

    def test_raising_hook_is_disabled(self, caplog: pytest.LogCaptureFixture) -> None:
        """A raising hook is disabled after one call; the program and records go on."""
        raising, recorder = _RaisingStep(), _Recorder()
        with taskscope.monitor(instruments=[raising, recorder]) as session:
            assert trio.run(checkpoints, 3) == 3
        assert raising.calls == 1
        (task,) = trio_tasks(session)
        assert task.steps == 4
        assert recorder.calls.count(("before_task_step", task.id)) == 4
        assert "has been disabled" in caplog.text

    def test_internal_fault_stays_inside(self) -> None:
        """A failing clock is logged as an internal error; trio keeps our instrument."""

        class FlakyClock(MockClock):
            armed = False

            def __call__(self) -> float:
                if self.armed:
                    self.armed = False
                    raise OSError("clock")
                return self.now

        reset_internal_errors()
        clock = FlakyClock(100.0)

        async def main() -> int:
            await trio.sleep(0)
            clock.armed = True
            await trio.sleep(0)  # the next step's start fails
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 2, name="later")
            return 5

        with taskscope.monitor(clock=clock) as session:
            assert trio.run(main) == 5
        # The first hook to read the armed clock fails (task_scheduled, for the
        # checkpoint's reschedule); exactly one fault, contained.
        counts = internal_error_counts()
        assert sum(counts.values()) == 1
        assert next(iter(counts)).startswith("trio backend: ")
        later = by_name(session)["later"]
        assert (later.state, later.steps) == ("completed", 3)

    def test_degraded_without_task_exited(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Without Runner.task_exited, tasks still end (as completed) and it is logged."""
        reset_internal_errors()
        monkeypatch.setattr(_compat, "trio_runner_class", lambda module: None)
        module = _compat.trio_run_module()
        assert module is not None
        task_exited = vars(module.Runner)["task_exited"]

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fail, "hidden", name="failing")

        with taskscope.monitor() as session:
            assert vars(module.Runner)["task_exited"] is task_exited
            with pytest.raises(BaseExceptionGroup):
                trio.run(main)
        failing = by_name(session)["failing"]
        assert (failing.state, failing.steps) == ("completed", 2)
        assert session.snapshot().counters.tasks_alive == 0
        assert "internal error in trio backend: Runner.task_exited not found" in caplog.text


def _shape(exc: BaseException) -> Any:
    """Describe an exception (and groups, recursively) by type and message."""
    if isinstance(exc, BaseExceptionGroup):
        return (type(exc).__name__, exc.message, sorted(map(repr, map(_shape, exc.exceptions))))
    return (type(exc).__name__, str(exc))


def _run(entry: Callable[[], Awaitable[Any]], *, via_anyio: bool) -> Any:
    """Run `entry` on trio; return ("ok", value) or ("raised", shape)."""
    try:
        value = anyio.run(entry, backend="trio") if via_anyio else trio.run(entry)
    except BaseException as exc:  # noqa: BLE001  # the outcome is what is compared
        return ("raised", _shape(exc))
    return ("ok", value)


async def _returns() -> int:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(checkpoints, 2)
    return await checkpoints(3)


async def _fail_at_once(message: str) -> None:
    # Raising in the first step, before any checkpoint, makes the group's content
    # independent of trio's randomised scheduling order.
    raise ValueError(message)


async def _raises_group() -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_fail_at_once, "one")
        nursery.start_soon(_fail_at_once, "two")
        nursery.start_soon(trio.sleep_forever)


async def _raises_plain() -> None:
    await trio.sleep(0)
    raise LookupError("plain")


async def _timeout() -> str:
    with trio.move_on_after(0):
        await trio.sleep_forever()
    with pytest.raises(trio.TooSlowError):
        with trio.fail_after(0):
            await trio.sleep_forever()
    return "timed out"


class TestTransparency:
    """A program behaves the same with and without taskscope."""

    @pytest.mark.parametrize(
        "entry",
        [
            pytest.param(_returns, id="returns"),
            pytest.param(_raises_group, id="exception-group"),
            pytest.param(_raises_plain, id="plain-exception"),
            pytest.param(_timeout, id="timeouts"),
        ],
    )
    @pytest.mark.parametrize("via_anyio", [False, True], ids=["trio", "anyio-trio"])
    def test_same_outcome(self, entry: Callable[[], Awaitable[Any]], via_anyio: bool) -> None:
        """Return values and exceptions (groups included) are unchanged."""
        plain = _run(entry, via_anyio=via_anyio)
        with taskscope.monitor() as session:
            observed = _run(entry, via_anyio=via_anyio)
        assert observed == plain
        assert trio_tasks(session)

    def test_task_objects_untouched(self, session: Session) -> None:
        """Task objects keep their type, name and coroutine under taskscope."""
        seen: list[tuple[type, str, str]] = []

        async def main() -> None:
            task = trio.lowlevel.current_task()
            seen.append((type(task), task.name, task.coro.cr_code.co_name))
            await trio.sleep(0)

        trio.run(main)
        assert seen == [(trio.lowlevel.Task, trio_name(main), "main")]


class TestScheduledAndSpinning:
    """Scheduled time and the waits that spinning detection relies on, on trio."""

    def test_scheduled_time_is_ready_but_not_running(
        self, clocked_session: Session, mock_clock: MockClock
    ) -> None:
        """A task made ready while another holds the loop is scheduled for that long."""

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(checkpoints, 1, name="waiter")
                mock_clock.advance(3.0)  # the spawner keeps the loop; waiter is ready

        trio.run(main)
        waiter = by_name(clocked_session)["waiter"]
        assert waiter.scheduled == pytest.approx(3.0)
        assert waiter.idle == pytest.approx(
            waiter.ended - waiter.created - waiter.busy - waiter.scheduled  # type: ignore[operator]
        )

    def test_checkpoints_are_not_waits_but_sleeps_are(self, session: Session) -> None:
        """A bare checkpoint leaves waited_at alone; a real sleep moves it."""
        seen: dict[str, tuple[int, int]] = {}

        async def spinner() -> None:
            for _ in range(5):
                await trio.lowlevel.checkpoint()
            record = session.registry.find(trio.lowlevel.current_task())
            assert record is not None
            seen["spinner"] = (record.steps, record.waited_at)

        async def sleeper() -> None:
            for _ in range(5):
                await trio.sleep(0.001)
            record = session.registry.find(trio.lowlevel.current_task())
            assert record is not None
            seen["sleeper"] = (record.steps, record.waited_at)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(spinner)
                nursery.start_soon(sleeper)

        trio.run(main)
        spin_steps, spin_waited = seen["spinner"]
        assert spin_steps - spin_waited >= 5  # no wait since its first step
        sleep_steps, sleep_waited = seen["sleeper"]
        assert sleep_steps - sleep_waited <= 1  # woken by the timer each time
