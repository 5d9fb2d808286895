"""tracked_task names and annotates tasks; tracked_scope times named regions."""

from __future__ import annotations

import asyncio

import pytest

import taskscope
from taskscope import MockClock, Session
from tests.conftest import line_of, run_on


class TestTrackedTask:
    """The decorator and context manager forms of tracked_task."""

    def test_decorator_names_the_task_that_runs_the_function(
        self, session: Session, loop_flavour: str
    ) -> None:
        """A decorated coroutine run as a task gives the task its name and annotations."""

        @taskscope.tracked_task("fetch-user", kind="http")
        async def fetch(user: int) -> int:
            return user

        async def main() -> int:
            return await asyncio.create_task(fetch(7))

        assert run_on(loop_flavour, main) == 7
        task = next(t for t in session.snapshot().tasks if t.name == "fetch-user")
        assert task.annotations == {"kind": "http"}
        assert task.state == "completed"

    def test_bare_decorator_uses_the_function_name(self, session: Session) -> None:
        """@tracked_task without arguments names the task after the function."""

        @taskscope.tracked_task
        async def refresh() -> None:
            await asyncio.sleep(0)

        async def main() -> None:
            await asyncio.create_task(refresh())

        asyncio.run(main())
        names = [t.name for t in session.snapshot().tasks]
        assert any(name.endswith("refresh") for name in names)

    def test_awaited_inline_the_name_is_restored(self, session: Session) -> None:
        """Awaited inside another task, the decorated function renames it only for the call."""
        seen: list[str] = []

        @taskscope.tracked_task("inner")
        async def inner() -> None:
            task = asyncio.current_task()
            assert task is not None
            seen.append(task.get_name())

        async def outer() -> None:
            await inner()
            task = asyncio.current_task()
            assert task is not None
            seen.append(task.get_name())

        async def main() -> None:
            await asyncio.create_task(outer(), name="outer")

        asyncio.run(main())
        assert seen == ["inner", "outer"]

    def test_context_manager_annotates_and_restores(self, session: Session) -> None:
        """`with tracked_task(...)` renames for the block and keeps the annotations."""
        names: list[str] = []

        async def main() -> None:
            task = asyncio.current_task()
            assert task is not None
            with taskscope.tracked_task("batch", size=3):
                names.append(task.get_name())
            names.append(task.get_name())

        asyncio.run(main())
        assert names[0] == "batch"
        assert names[1] != "batch"
        main_task = next(t for t in session.snapshot().tasks if t.coroutine.endswith("main"))
        assert main_task.annotations == {"size": 3}

    def test_works_without_a_session(self) -> None:
        """With taskscope not installed, tracked_task still names the task."""

        @taskscope.tracked_task("solo")
        async def work() -> str:
            task = asyncio.current_task()
            assert task is not None
            return task.get_name()

        async def main() -> str:
            return await asyncio.create_task(work())

        assert taskscope.current_session() is None
        assert asyncio.run(main()) == "solo"

    @pytest.mark.parametrize("bad", [pytest.param(3, id="int"), pytest.param(b"x", id="bytes")])
    def test_bad_names_are_rejected(self, bad: object) -> None:
        """A name that is not a string is a TypeError naming the problem."""
        with pytest.raises(TypeError, match="name must be a string"):
            taskscope.tracked_task(bad)  # type: ignore[call-overload]

    def test_decorating_a_sync_function_is_rejected(self) -> None:
        """Only coroutine functions can be decorated; the error says what to use instead."""
        with pytest.raises(TypeError, match="coroutine functions"):
            taskscope.tracked_task("x")(lambda: None)  # type: ignore[arg-type,return-value]


class TestTrackedScope:
    """Named regions: count, outcome and duration."""

    def test_durations_and_outcomes_are_aggregated(
        self, clocked_session: Session, mock_clock: MockClock
    ) -> None:
        """Two ok runs, one error and one cancellation are counted with their durations."""

        async def main() -> None:
            for seconds in (0.5, 1.5):
                async with taskscope.tracked_scope("db"):  # first-entry
                    mock_clock.advance(seconds)

            def failing_region() -> None:
                with taskscope.tracked_scope("db"):
                    mock_clock.advance(0.25)
                    raise KeyError("row")

            with pytest.raises(KeyError):
                failing_region()
            task = asyncio.create_task(asyncio.sleep(3600))
            await asyncio.sleep(0)

            async def cancelled_region() -> None:
                with taskscope.tracked_scope("db"):
                    await task

            waiter = asyncio.create_task(cancelled_region())
            await asyncio.sleep(0)
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
            task.cancel()

        asyncio.run(main())
        (region,) = clocked_session.snapshot().regions
        assert region.name == "db"
        assert (region.count, region.errors, region.cancelled, region.active) == (4, 1, 1, 0)
        assert region.total == pytest.approx(2.25)
        assert region.max == pytest.approx(1.5)
        assert region.last_error == "KeyError"
        assert region.location is not None
        assert region.location.line == line_of("first-entry")

    def test_without_a_session_it_is_a_no_op(self) -> None:
        """Outside a session the region runs and records nothing."""
        with taskscope.tracked_scope("nothing"):
            value = 1
        assert value == 1

    def test_an_empty_name_is_rejected(self) -> None:
        """A region needs a name."""
        with pytest.raises(TypeError, match="non-empty name"):
            taskscope.tracked_scope("")
