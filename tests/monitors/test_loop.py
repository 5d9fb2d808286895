"""The loop watchdog: stalls seen while they last, lag, spinning tasks, the dump."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest

import taskscope
from taskscope import Session
from taskscope.monitors import HealthSnapshot, Stall
from tests.conftest import line_of, run_on
from tests.reportcheck import assert_valid_report

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

#: Generous bound for waiting on the watchdog (never asserted on: only a hang guard).
_PATIENCE = 20.0


@pytest.fixture
def watched() -> Iterator[Session]:
    """A session with small thresholds, always uninstalled."""
    session = taskscope.install(block_threshold=0.05, spin_threshold=0.05)
    try:
        yield session
    finally:
        session.uninstall()


def snapshot_of(session: Session) -> HealthSnapshot:
    snapshot = session.snapshot()
    assert isinstance(snapshot, HealthSnapshot)
    return snapshot


def wait_for_stall(session: Session, release: threading.Event) -> Stall:
    """From another thread: wait until the ongoing stall shows, then end it."""
    deadline = time.monotonic() + _PATIENCE
    try:
        while time.monotonic() < deadline:
            health = snapshot_of(session).loop
            assert health is not None
            ongoing = [stall for stall in health.stalls if stall.ongoing]
            if ongoing:
                return ongoing[0]
            time.sleep(0.005)
        raise AssertionError("no stall seen")
    finally:
        release.set()


def blocking_sleep(release: threading.Event) -> None:
    while not release.is_set():
        time.sleep(0.02)  # sleep-line


def hot_loop(release: threading.Event) -> int:
    count = 0
    while not release.is_set():
        count += 1  # hot-line
    return count


def run_blocking(
    flavour: str, session: Session, block: Callable[[threading.Event], Any]
) -> tuple[Stall, HealthSnapshot]:
    """Run a task that blocks the loop until a watcher thread has seen the stall."""
    release = threading.Event()
    seen: list[Stall] = []
    watcher = threading.Thread(target=lambda: seen.append(wait_for_stall(session, release)))

    async def blocker() -> None:
        await asyncio.sleep(0)
        watcher.start()
        block(release)

    async def main() -> None:
        await asyncio.create_task(blocker(), name="the-blocker")  # create-blocker

    run_on(flavour, main)
    watcher.join(_PATIENCE)
    assert seen, "the watcher saw no ongoing stall"
    return seen[0], snapshot_of(session)


class TestStalls:
    """A loop stuck in one step is reported, while stuck, at the blocking line."""

    def test_sleep_is_seen_during_the_stall(self, watched: Session, loop_flavour: str) -> None:
        """time.sleep in a task: the ongoing stall names the task, its creation, the line."""
        ongoing, snapshot = run_blocking(loop_flavour, watched, blocking_sleep)
        assert ongoing.ongoing
        assert ongoing.location is not None
        assert ongoing.location.line == line_of("sleep-line")
        assert ongoing.location.function == "blocking_sleep"
        assert ongoing.blocking is not None
        assert ongoing.blocking.function == "time.sleep"
        assert ongoing.blocking.category == "sleep"
        assert ongoing.tasks[0].name == "the-blocker"
        assert ongoing.tasks[0].created_at is not None
        assert ongoing.tasks[0].created_at.line == line_of("create-blocker")
        assert ongoing.tasks[1].coroutine.endswith("main")  # the parent chain
        assert ongoing.samples
        assert ongoing.samples[0].frames[0].line == line_of("sleep-line")
        assert ongoing.duration >= 0.05
        loop = snapshot.loop
        assert loop is not None
        (done,) = loop.stalls
        assert not done.ongoing
        assert done.duration >= ongoing.duration
        findings = [f for f in watched.findings(snapshot) if f.kind == "loop-blocked"]
        assert len(findings) == 1
        assert findings[0].location == ongoing.location
        assert findings[0].task is not None
        assert findings[0].task.name == "the-blocker"
        assert findings[0].details["blocking_function"] == "time.sleep"
        assert_valid_report(watched.report())

    def test_cpu_loop_points_inside_the_hot_function(
        self, watched: Session, loop_flavour: str
    ) -> None:
        """A pure-Python busy loop (holding the GIL) is seen, inside the hot function."""
        ongoing, _snapshot = run_blocking(loop_flavour, watched, hot_loop)
        assert ongoing.location is not None
        assert ongoing.location.function == "hot_loop"
        assert ongoing.blocking is None

    def test_idle_loop_is_not_a_stall(self, watched: Session, loop_flavour: str) -> None:
        """A loop waiting in select() for a timer answers its probes: no stall."""

        async def main() -> None:
            await asyncio.sleep(0.3)

        run_on(loop_flavour, main)
        loop = snapshot_of(watched).loop
        assert loop is not None
        assert loop.stalls == ()
        assert loop.lag.count > 0
        assert loop.lag.max >= loop.lag.p99 >= loop.lag.p50 >= 0
        assert [f for f in watched.findings() if f.kind == "loop-blocked"] == []

    def test_trio_stall(self, watched: Session) -> None:
        """trio runs are probed too: a blocking trio task is a stall with its task."""
        trio = pytest.importorskip("trio")
        release = threading.Event()
        seen: list[Stall] = []
        watcher = threading.Thread(target=lambda: seen.append(wait_for_stall(watched, release)))

        async def blocker() -> None:
            await trio.sleep(0)
            watcher.start()
            blocking_sleep(release)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(blocker, name="trio-blocker")

        trio.run(main)
        watcher.join(_PATIENCE)
        assert seen
        assert seen[0].backend == "trio"
        assert seen[0].tasks[0].name == "trio-blocker"
        assert seen[0].location is not None
        assert seen[0].location.line == line_of("sleep-line")


class TestSpinning:
    """A task that only ever reschedules itself is reported as spinning."""

    def test_sleep_zero_loop(self, watched: Session, loop_flavour: str) -> None:
        """while True: await asyncio.sleep(0), cancelled later, is task-spinning."""

        async def spin() -> None:
            while True:
                await asyncio.sleep(0)

        async def main() -> None:
            task = asyncio.create_task(spin(), name="spinner")  # create-spinner
            await asyncio.sleep(0.4)
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        run_on(loop_flavour, main)
        (finding,) = [f for f in watched.findings() if f.kind == "task-spinning"]
        assert finding.task is not None
        assert finding.task.name == "spinner"
        assert finding.location is not None
        assert finding.location.line == line_of("create-spinner")
        assert finding.details["rate"] > 0
        assert finding.details["steps"] >= 10

    def test_checkpoint_loop_on_trio(self, watched: Session) -> None:
        """while True: await trio.sleep(0), cancelled later, is task-spinning on trio."""
        import trio

        async def spin() -> None:
            while True:
                await trio.sleep(0)

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(spin, name="trio-spinner")  # start-trio-spinner
                await trio.sleep(0.4)
                nursery.cancel_scope.cancel()

        trio.run(main)
        (finding,) = [f for f in watched.findings() if f.kind == "task-spinning"]
        assert finding.task is not None
        assert finding.task.name == "trio-spinner"
        assert finding.location is not None
        assert finding.location.line == line_of("start-trio-spinner")
        assert finding.details["steps"] >= 10

    def test_waiting_task_is_not_spinning(self, watched: Session) -> None:
        """A task that waits for timers between steps is not spinning."""

        async def main() -> None:
            for _ in range(40):
                await asyncio.sleep(0.005)

        asyncio.run(main())
        assert [f for f in watched.findings() if f.kind == "task-spinning"] == []


class TestLifecycle:
    """The watchdog starts and stops with the session."""

    def test_watchdog_stops_on_uninstall(self) -> None:
        """After uninstall the watchdog thread is gone."""
        session = taskscope.install()
        assert session.monitors is not None
        thread = session.monitors.watchdog.thread
        assert thread is not None
        assert thread.is_alive()
        assert thread.daemon
        session.uninstall()
        assert not thread.is_alive()

    def test_dump_during_a_stall(self, watched: Session) -> None:
        """The emergency dump lists the stall, the live tasks and the threads."""
        release = threading.Event()
        dumps: list[str] = []

        def watch() -> None:
            wait_for_stall(watched, threading.Event())
            dumps.append(watched.dump())
            release.set()

        watcher = threading.Thread(target=watch)

        async def blocker() -> None:
            await asyncio.sleep(0)
            watcher.start()
            blocking_sleep(release)

        async def main() -> None:
            await asyncio.create_task(blocker(), name="dumped")

        asyncio.run(main())
        watcher.join(_PATIENCE)
        (text,) = dumps
        assert "LOOP BLOCKED" in text
        assert "'dumped'" in text
        assert "time.sleep" in text
        assert "MainThread" in text


class TestOptions:
    """Bad thresholds are refused with the option's name."""

    @pytest.mark.parametrize(
        ("option", "value"),
        [
            pytest.param("block_threshold", 0, id="zero"),
            pytest.param("block_threshold", -1, id="negative"),
            pytest.param("spin_threshold", "1s", id="string"),
            pytest.param("lag_interval", float("nan"), id="nan"),
            pytest.param("block_threshold", True, id="bool"),
            pytest.param("system_interval", -0.5, id="negative-interval"),
            pytest.param("dump_signal", "SIGNOPE", id="unknown-signal"),
        ],
    )
    def test_bad_value(self, option: str, value: object) -> None:
        """install() raises ValueError naming the option."""
        with pytest.raises(ValueError, match=option):
            taskscope.install(**{option: value})  # type: ignore[arg-type]
        assert taskscope.current_session() is None


def test_blocking_line_without_a_line_number_is_not_classified() -> None:
    """A sampled frame may have no line number (3.12+ mid-instruction): no lookup of line
    None (linecache raised, logged as an internal error with a traceback)."""
    from taskscope.monitors._stacks import classify

    code = test_blocking_line_without_a_line_number_is_not_classified.__code__
    assert classify([(code, None)], 0) is None  # type: ignore[list-item]
    assert classify([(code, 0)], 0) is None
