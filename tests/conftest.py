"""Shared fixtures: a session that is always uninstalled, and loop flavours."""

from __future__ import annotations

import asyncio
import inspect
import logging
import sys
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

import taskscope
from taskscope import MockClock, Session

if TYPE_CHECKING:
    from collections.abc import Callable, Coroutine, Iterator

T = TypeVar("T")

#: Loop flavours every asyncio backend test runs on.
LOOP_FLAVOURS = [
    pytest.param("asyncio", id="asyncio"),
    pytest.param(
        "uvloop",
        id="uvloop",
        marks=pytest.mark.skipif(sys.platform == "win32", reason="uvloop is POSIX-only"),
    ),
]


#: The AnyIO backends (with options) every AnyIO-level test runs on.
ANYIO_BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(
        ("asyncio", {"use_uvloop": True}),
        id="asyncio+uvloop",
        marks=pytest.mark.skipif(sys.platform == "win32", reason="uvloop is POSIX-only"),
    ),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(autouse=True)
def taskscope_logs_propagate() -> Iterator[None]:
    """Let caplog see taskscope's own messages (they bypass the root logger by default)."""
    logger = logging.getLogger("taskscope")
    before = logger.propagate
    logger.propagate = True
    try:
        yield
    finally:
        logger.propagate = before


@pytest.fixture
def session() -> Iterator[Session]:
    """Install taskscope for one test and always uninstall it."""
    active = taskscope.install()
    try:
        yield active
    finally:
        active.uninstall()


@pytest.fixture
def mock_clock() -> MockClock:
    """A clock that only moves when the test advances it."""
    return MockClock(start=100.0)


@pytest.fixture
def clocked_session(mock_clock: MockClock) -> Iterator[Session]:
    """Install taskscope with the mock clock."""
    active = taskscope.install(clock=mock_clock)
    try:
        yield active
    finally:
        active.uninstall()


@pytest.fixture(params=LOOP_FLAVOURS)
def loop_flavour(request: pytest.FixtureRequest) -> str:
    """The asyncio event loop implementation to run on."""
    flavour: str = request.param
    return flavour


def run_on(flavour: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` on a fresh loop of the given flavour, as a program would."""
    if flavour == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main())
    return asyncio.run(main())


def line_of(marker: str, func: Callable[..., Any] | None = None) -> int:
    """Return the line number of the line containing ``# <marker>`` in the caller's file."""
    frame = inspect.currentframe()
    assert frame is not None
    assert frame.f_back is not None
    filename = inspect.getsourcefile(func) if func is not None else frame.f_back.f_code.co_filename
    assert filename is not None
    with open(filename, encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if line.rstrip().endswith(f"# {marker}"):
                return number
    raise AssertionError(f"marker {marker!r} not found in {filename}")
