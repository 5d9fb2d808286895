"""Cancellation provenance: why each task was cancelled, by whom, through which scope.

The backends name a cause themselves and ask the scope monitor, when it is on, which
scope delivered the cancellation (see docs/cancel-scopes.md, "Provenance").
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import trio

import taskscope
from taskscope._core._exceptions import real_errors
from taskscope.monitors._scopes import ScopeMonitor
from tests.conftest import line_of

if TYPE_CHECKING:
    from collections.abc import Iterator

    from taskscope._core._records import TaskInfo

BACKENDS = [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]


@pytest.fixture
def provenance() -> Iterator[tuple[taskscope.Session, ScopeMonitor]]:
    """A session with the scope monitor on (the backends ask it about cancellations)."""
    session = taskscope.install(scopes=True)
    (monitor,) = [p for p in session.plugins if isinstance(p, ScopeMonitor)]
    try:
        yield session, monitor
    finally:
        session.uninstall()


@pytest.fixture
def plain_session() -> Iterator[taskscope.Session]:
    """A session without the scope monitor: the backends' own causes."""
    session = taskscope.install()
    try:
        yield session
    finally:
        session.uninstall()


def task_named(session: taskscope.Session, name: str) -> TaskInfo:
    """Return the one task called `name`."""
    (task,) = [t for t in session.snapshot().tasks if t.name == name]
    return task


async def sleeper() -> None:
    """Sleep until cancelled."""
    await anyio.sleep(10)


async def failing() -> None:
    """Fail after a moment."""
    await anyio.sleep(0.01)
    raise ValueError("boom")


class TestCauses:
    """Each cause of cancellation, on AnyIO's asyncio and trio backends."""

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_explicit_cancel_from_a_task(self, provenance: Any, backend: str) -> None:
        """scope.cancel(reason) from another task: who, which line, the reason, the scope."""
        session, monitor = provenance

        async def main() -> None:
            async with anyio.create_task_group() as group:  # explicit-tg
                group.start_soon(sleeper, name="victim")

                async def canceller() -> None:
                    await anyio.sleep(0.01)
                    group.cancel_scope.cancel("enough")  # explicit-cancel

                group.start_soon(canceller, name="canceller")

        anyio.run(main, backend=backend)
        victim = task_named(session, "victim")
        assert victim.state == "cancelled"
        cancellation = victim.cancellation
        assert cancellation is not None
        assert cancellation.cause == "cancel-call"
        assert cancellation.requested_by is not None
        assert cancellation.requested_by.name == "canceller"
        assert cancellation.location is not None
        assert cancellation.location.line == line_of("explicit-cancel")
        assert cancellation.message == "enough"
        scope = monitor.cancel_scope_of(victim.id)
        assert scope is not None
        assert scope.kind == "task_group"
        assert scope.entered_at is not None
        assert scope.entered_at.line == line_of("explicit-tg")
        assert cancellation.scope == scope

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_move_on_after_deadline(self, provenance: Any, backend: str) -> None:
        """A task inside a move_on_after that expires: timeout, located at the scope."""
        _session, monitor = provenance

        async def child() -> None:
            with anyio.move_on_after(0.01):  # deadline-scope
                await anyio.sleep(10)

        async def main() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(child, name="child")

        anyio.run(main, backend=backend)
        section = monitor.snapshot()
        (scope,) = [s for s in section.recent if s.kind == "move_on_after"]
        assert scope.cancel is not None
        assert scope.cancel.cause == "timeout"
        assert scope.cancelled_caught
        assert scope.cancel.location is not None
        assert scope.cancel.location.line == line_of("deadline-scope")
        assert section.by_kind["move_on_after"].timed_out == 1

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_fail_after_cancels_a_task(self, provenance: Any, backend: str) -> None:
        """A fail_after around a task group cancels its children: cause timeout."""
        session, monitor = provenance

        async def main() -> None:
            with contextlib.suppress(TimeoutError), anyio.fail_after(0.02):  # fail-scope
                async with anyio.create_task_group() as group:
                    group.start_soon(sleeper, name="slow")

        anyio.run(main, backend=backend)
        slow = task_named(session, "slow")
        assert slow.cancellation is not None
        assert slow.cancellation.cause == "timeout"
        assert slow.cancellation.location is not None
        assert slow.cancellation.location.line == line_of("fail-scope")
        scope = monitor.cancel_scope_of(slow.id)
        assert scope is not None
        assert scope.kind == "fail_after"
        assert monitor.snapshot().by_kind["fail_after"].timed_out == 1

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_sibling_failure(self, provenance: Any, backend: str) -> None:
        """A child that fails cancels its siblings: cause sibling-failure, naming it."""
        session, monitor = provenance

        async def main() -> None:
            async with anyio.create_task_group() as group:  # sibling-tg
                group.start_soon(sleeper, name="sibling")
                group.start_soon(failing, name="failing")

        with pytest.raises(BaseExceptionGroup) as caught:
            anyio.run(main, backend=backend)
        assert [type(e) for e in real_errors(caught.value)] == [ValueError]
        sibling = task_named(session, "sibling")
        assert sibling.cancellation is not None
        assert sibling.cancellation.cause == "sibling-failure"
        assert sibling.cancellation.requested_by is not None
        assert sibling.cancellation.requested_by.name == "failing"
        (entry,) = [c for c in monitor.snapshot().cancellations if c.task.name == "sibling"]
        assert entry.error == "ValueError"
        assert entry.scope is not None
        assert entry.scope.kind == "task_group"
        assert entry.scope.entered_at is not None
        assert entry.scope.entered_at.line == line_of("sibling-tg")

    def test_loop_shutdown(self, provenance: Any) -> None:
        """A task still pending when asyncio.run's main returns: cause shutdown."""
        session, _ = provenance

        async def main() -> None:
            asyncio.get_running_loop().create_task(asyncio.sleep(10), name="leftover")
            await asyncio.sleep(0)

        asyncio.run(main())
        leftover = task_named(session, "leftover")
        assert leftover.cancellation is not None
        assert leftover.cancellation.cause == "shutdown"

    def test_asyncio_taskgroup_sibling_failure(self, provenance: Any) -> None:
        """asyncio.TaskGroup: a failing child cancels the others, named in the cause."""
        session, _ = provenance

        async def boom() -> None:
            await asyncio.sleep(0.01)
            raise ValueError("boom")

        async def main() -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(10), name="other")
                group.create_task(boom(), name="boom")

        with pytest.raises(BaseExceptionGroup):
            asyncio.run(main())
        other = task_named(session, "other")
        assert other.cancellation is not None
        assert other.cancellation.cause == "sibling-failure"
        assert other.cancellation.requested_by is not None
        assert other.cancellation.requested_by.name == "boom"

    def test_asyncio_timeout(self, provenance: Any) -> None:
        """asyncio.timeout expiring cancels the task that entered it: cause timeout."""
        session, monitor = provenance

        async def waits() -> None:
            async with asyncio.timeout(0.01):  # asyncio-timeout
                await asyncio.sleep(10)

        async def main() -> None:
            with contextlib.suppress(TimeoutError):
                await asyncio.create_task(waits(), name="waits")

        asyncio.run(main())
        assert monitor.snapshot().by_kind["asyncio.timeout"].timed_out == 1
        waits_task = task_named(session, "waits")
        assert waits_task.state == "failed"  # it raised TimeoutError, not cancelled


class TestAsyncioCauses:
    """asyncio's own requesters, told apart with and without the scope monitor."""

    @pytest.mark.parametrize("scopes", [False, True], ids=["plain", "scopes"])
    def test_task_group_body_error(self, scopes: bool) -> None:
        """The body of a TaskGroup raising cancels its children: task-group-error."""

        async def main() -> None:
            async with asyncio.TaskGroup() as group:  # body-error-tg
                group.create_task(asyncio.sleep(10), name="child")
                await asyncio.sleep(0.01)
                raise KeyError("body")

        with taskscope.monitor(scopes=scopes) as session:
            with pytest.raises(BaseExceptionGroup):
                asyncio.run(main())
            child = task_named(session, "child")
        assert child.cancellation is not None
        assert child.cancellation.cause == "task-group-error"
        if scopes:
            assert child.cancellation.scope is not None
            assert child.cancellation.scope.kind == "asyncio.TaskGroup"
            assert child.cancellation.scope.entered_at is not None
            assert child.cancellation.scope.entered_at.line == line_of("body-error-tg")

    @pytest.mark.parametrize("scopes", [False, True], ids=["plain", "scopes"])
    def test_outer_cancel(self, scopes: bool) -> None:
        """The task running a TaskGroup cancelled from outside: its children are
        cancelled with cause outer-cancel."""

        async def host() -> None:
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(10), name="inner")
                await asyncio.sleep(10)

        async def main() -> None:
            task = asyncio.create_task(host(), name="host")
            await asyncio.sleep(0.01)
            task.cancel()  # outer-cancel
            with contextlib.suppress(asyncio.CancelledError):
                await task

        with taskscope.monitor(scopes=scopes) as session:
            asyncio.run(main())
            inner = task_named(session, "inner")
            host_task = task_named(session, "host")
        assert inner.cancellation is not None
        assert inner.cancellation.cause == "outer-cancel"
        assert host_task.cancellation is not None
        assert host_task.cancellation.cause == "cancel-call"
        assert host_task.cancellation.location is not None
        assert host_task.cancellation.location.line == line_of("outer-cancel")

    def test_cancelled_before_first_step(self, plain_session: taskscope.Session) -> None:
        """A task cancelled before it ever ran: a cancel() call (asyncio forgets the
        message once the task has ended, so only the cause is known)."""

        async def main() -> None:
            task = asyncio.create_task(asyncio.sleep(10), name="never-ran")
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

        asyncio.run(main())
        task = task_named(plain_session, "never-ran")
        assert task.state == "cancelled"
        assert task.cancellation is not None
        assert task.cancellation.cause == "cancel-call"
        assert task.cancellation.requested_by is None

    def test_raising_cancelled_error_itself(self, plain_session: taskscope.Session) -> None:
        """A coroutine raising CancelledError without any cancel() call: unknown."""

        async def quits() -> None:
            raise asyncio.CancelledError

        async def main() -> None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.create_task(quits(), name="quits")

        asyncio.run(main())
        task = task_named(plain_session, "quits")
        assert task.cancellation is not None
        assert task.cancellation.cause == "unknown"

    def test_keyboard_interrupt(self, plain_session: taskscope.Session) -> None:
        """Ctrl-C under asyncio.run cancels the main task: keyboard-interrupt."""

        async def interrupted() -> None:
            # The signal arrives while the main task waits, as Ctrl-C usually does.
            asyncio.get_running_loop().call_later(0.01, signal.raise_signal, signal.SIGINT)
            await asyncio.sleep(10)

        with pytest.raises(KeyboardInterrupt):
            asyncio.run(interrupted())
        (main_task,) = [
            t for t in plain_session.snapshot().tasks if t.coroutine.endswith("interrupted")
        ]
        assert main_task.cancellation is not None
        assert main_task.cancellation.cause == "keyboard-interrupt"

    def test_trio_nursery_sibling_failure(self, plain_session: taskscope.Session) -> None:
        """On trio, a child failing cancels its siblings: sibling-failure, even without
        the scope monitor (trio's Cancelled says so)."""

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep_forever, name="sleeper")
                nursery.start_soon(failing, name="failing")

        with pytest.raises(BaseExceptionGroup):
            trio.run(main)
        sleeper = task_named(plain_session, "sleeper")
        assert sleeper.cancellation is not None
        assert sleeper.cancellation.cause == "sibling-failure"


class TestRealErrors:
    """The real errors of an exception group come first, cancellations dropped."""

    def test_flattens_and_drops_cancellations(self) -> None:
        """One real error among sibling cancellations is all that is left."""
        error = ValueError("real")
        group = BaseExceptionGroup(
            "tg",
            [
                asyncio.CancelledError(),
                BaseExceptionGroup("inner", [error, trio.Cancelled._create()]),
            ],
        )
        assert real_errors(group) == [error]

    def test_plain_exception_and_plain_cancellation(self) -> None:
        """A plain error is its own real error; a bare cancellation has none."""
        error = KeyError("k")
        assert real_errors(error) == [error]
        assert real_errors(asyncio.CancelledError()) == []


async def _group_host() -> None:
    """Run a task group whose child fails while its sibling sleeps."""
    async with anyio.create_task_group() as group:
        group.start_soon(sleeper, name="sibling")
        group.start_soon(failing, name="failing")


async def _mixed_group() -> None:
    """Raise a group of one real error among two cancellations (nested)."""
    await asyncio.sleep(0)
    try:
        raise ValueError("real")  # noqa: TRY301  # mixed-error
    except ValueError as error:
        inner = BaseExceptionGroup("inner", [asyncio.CancelledError(), error])
        raise BaseExceptionGroup("outer", [asyncio.CancelledError(), inner]) from None


class TestRealErrorsReported:
    """A task's exception group shows its real errors first, with their own lines."""

    def test_task_exception_lists_real_errors(self, plain_session: taskscope.Session) -> None:
        """The real error's type, message and line, and the cancellations counted."""

        async def main() -> None:
            with contextlib.suppress(BaseExceptionGroup):
                await asyncio.create_task(_mixed_group(), name="mixed")

        asyncio.run(main())
        exc = task_named(plain_session, "mixed").exception
        assert exc is not None
        assert exc.type == "BaseExceptionGroup"
        assert [(e.type, e.message) for e in exc.real_errors] == [("ValueError", "real")]
        assert exc.real_errors[0].location is not None
        assert exc.real_errors[0].location.line == line_of("mixed-error")
        assert exc.cancelled == 2

    def test_unretrieved_group_names_the_real_error_first(
        self, plain_session: taskscope.Session
    ) -> None:
        """A failed task group nobody awaited: the finding leads with the child's error."""
        keep: list[Any] = []

        async def main() -> None:
            keep.append(asyncio.create_task(_group_host(), name="host"))
            await asyncio.sleep(0.1)

        asyncio.run(main())
        plain_session.end_of_program()
        (finding,) = [f for f in plain_session.findings() if f.kind == "task-exception-unretrieved"]
        assert finding.message.startswith(
            f"Task 'host' ({_group_host.__qualname__}) failed with ValueError: boom (at "
        )
        assert "[in ExceptionGroup]" in finding.message
        (real,) = finding.details["real_errors"]
        assert real.type == "ValueError"
        assert real.location is not None
        assert real.location.function == failing.__qualname__
        assert next(iter(finding.details)) == "real_errors"

    def test_trio_task_group_failure(self, plain_session: taskscope.Session) -> None:
        """On trio, the task hosting a failed nursery records the child's error."""

        async def host() -> None:
            await _group_host()

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(host, name="host")

        with pytest.raises(BaseExceptionGroup):
            trio.run(main)
        exc = task_named(plain_session, "host").exception
        assert exc is not None
        assert [e.type for e in exc.real_errors] == ["ValueError"]
        assert exc.real_errors[0].location is not None
        assert exc.real_errors[0].location.function == failing.__qualname__
