"""Core pieces: location filtering, instrument dispatch, clock, public surface."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from typing import TYPE_CHECKING

import pytest

import taskscope
from taskscope import Instrument, MockClock, TaskInfo
from taskscope._core._instruments import Instruments
from taskscope._core._location import LocationFilter, to_location
from tests.conftest import line_of

if TYPE_CHECKING:
    from collections.abc import Iterator


class TestLocationFilter:
    """Which frames count as the user's code."""

    @pytest.mark.parametrize(
        "code",
        [
            pytest.param(asyncio.sleep.__code__, id="asyncio"),
            pytest.param(contextlib.contextmanager.__code__, id="contextlib"),
            pytest.param(taskscope.install.__code__, id="taskscope"),
        ],
    )
    def test_libraries_are_looked_through(self, code: object) -> None:
        """Frames in asyncio, contextlib and taskscope itself are never the user's line."""
        assert LocationFilter().is_library(code)  # type: ignore[arg-type]

    def test_user_code_is_a_user_frame(self) -> None:
        """This test file is user code."""
        locations = LocationFilter()
        assert not locations.is_library(self.test_user_code_is_a_user_frame.__code__)

    def test_user_frame_skips_library_frames(self) -> None:
        """From inside a library call, the walk finds the calling line here."""
        locations = LocationFilter()
        found: list[object] = []

        @contextlib.contextmanager
        def probe() -> Iterator[None]:
            found.append(locations.user_frame(sys._getframe(0)))
            yield

        with probe():  # the-with-line
            pass
        raw = found[0]
        assert isinstance(raw, tuple)
        location = to_location(raw)
        assert location is not None
        assert location.function.endswith("probe")

    def test_stop_codes_end_the_walk(self) -> None:
        """A stop code returns None rather than a frame further out."""
        locations = LocationFilter()
        frame = sys._getframe(0)
        assert locations.user_frame(frame, stop_at=frozenset({frame.f_code})) is None


class TestInstruments:
    """Hook dispatch in the manner of trio's instrumentation."""

    def test_only_overridden_hooks_are_registered(self) -> None:
        """An instrument that overrides one hook costs nothing for the others."""

        class OnlyFinished(Instrument):
            def task_finished(self, task: TaskInfo) -> None:
                pass

        instruments = Instruments([OnlyFinished()])
        assert set(instruments) == {"task_finished"}
        assert "before_task_step" not in instruments

    def test_a_raising_hook_is_removed_and_logged(self, caplog: pytest.LogCaptureFixture) -> None:
        """The hook is dropped after raising; the other instrument keeps working."""
        calls: list[str] = []

        class Bad(Instrument):
            def before_task_step(self, task_id: int) -> None:
                raise ValueError("bug")

        class Good(Instrument):
            def before_task_step(self, task_id: int) -> None:
                calls.append("good")

        instruments = Instruments([Bad(), Good()])
        with caplog.at_level(logging.ERROR, logger="taskscope"):
            instruments.call("before_task_step", 1)
            instruments.call("before_task_step", 2)
        assert calls == ["good", "good"]
        assert len(instruments["before_task_step"]) == 1
        assert caplog.text.count("has been disabled") == 1

    def test_a_non_instrument_is_rejected(self) -> None:
        """Passing something else says what is expected."""
        with pytest.raises(TypeError, match=r"taskscope\.Instrument"):
            Instruments([object()])  # type: ignore[list-item]


class TestMockClock:
    """The injectable clock."""

    def test_advances_only_when_told(self) -> None:
        """Reading does not move it; advance does; going back is refused."""
        clock = MockClock(5.0)
        assert clock() == clock() == 5.0
        clock.advance(0.5)
        assert clock() == 5.5
        with pytest.raises(ValueError, match="backwards"):
            clock.advance(-1)


class TestPublicSurface:
    """The package's public names."""

    def test_all_is_sorted_and_complete(self) -> None:
        """__all__ is sorted, and every name in it exists."""
        assert taskscope.__all__ == sorted(taskscope.__all__)
        for name in taskscope.__all__:
            assert hasattr(taskscope, name), name

    def test_each_public_name_has_one_public_home(self) -> None:
        """Every public object reports the top-level package as its module."""
        for name in taskscope.__all__:
            assert getattr(taskscope, name).__module__ == "taskscope", name

    def test_line_of_helper_finds_markers(self) -> None:
        """The test helper resolves marker comments (used by many tests)."""
        assert line_of("the-marker-line") == sys._getframe(0).f_lineno  # the-marker-line


class TestCompiledCode:
    """Frames of compiled (Cython) code, as uvloop's coroutines produce."""

    def test_relative_package_paths_are_library_code(self) -> None:
        """A code object named ``uvloop/loop.pyx`` is looked through."""
        code = compile("pass", "uvloop/loop.pyx", "exec")
        assert LocationFilter().is_library(code)

    def test_a_missing_line_number_falls_back_to_the_first_line(self) -> None:
        """A raw location with no line still formats to a valid location."""
        code = compile("\n\npass", "/somewhere/app.py", "exec")
        location = to_location((code, None))  # type: ignore[arg-type]
        assert location is not None
        assert location.line >= 1
