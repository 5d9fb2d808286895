"""The C accelerator of the asyncio hot path (``_speedups.c``) and its pure-Python twin.

The whole suite runs on both (``make pytest-pure`` sets ``TASKSCOPE_PURE_PYTHON``); these
tests pin what is specific to having two: which one runs, that the C wrapper binds like
a method, and that a failure of taskscope's own accounting never reaches the program.
"""

from __future__ import annotations

import asyncio
import importlib
import os
import time
from typing import TYPE_CHECKING, Any

import pytest

import taskscope
from taskscope._core import _accel
from taskscope._core._faults import internal_error_counts, reset_internal_errors

if TYPE_CHECKING:
    from collections.abc import Iterator


def test_built_where_a_compiler_is_expected() -> None:
    """CI sets TASKSCOPE_EXPECT_SPEEDUPS: a silently failed build would be slow, not red."""
    if not os.environ.get("TASKSCOPE_EXPECT_SPEEDUPS"):
        pytest.skip("TASKSCOPE_EXPECT_SPEEDUPS is not set")
    module = importlib.import_module("taskscope._core._speedups")
    assert {"CallSoon", "RecordCore", "TimedStep"} <= set(dir(module))
    trio_module = importlib.import_module("taskscope._core._trio_speedups")
    assert {"Dispatch", "Hooks", "RunnerMethod"} <= set(dir(trio_module))


def test_pure_python_switch_is_honoured() -> None:
    try:
        importlib.import_module("taskscope._core._speedups")
    except ImportError:
        built = False
    else:
        built = True
    expected = built and not os.environ.get("TASKSCOPE_PURE_PYTHON")
    assert expected == _accel.ACCELERATED


def test_pure_python_switch_is_honoured_for_trio() -> None:
    """The trio accelerator is chosen by the same switch, independently of asyncio's."""
    try:
        importlib.import_module("taskscope._core._trio_speedups")
    except ImportError:
        built = False
    else:
        built = True
    expected = built and not os.environ.get("TASKSCOPE_PURE_PYTHON")
    assert expected == (_accel.trio_speedups is not None)


def test_wrapper_binds_like_a_method(session: taskscope.Session) -> None:
    """``loop.call_soon`` keeps its calling conventions: positional args, ``context=``,
    a Handle back; unbound through the class too."""
    seen: list[tuple[Any, ...]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        done = loop.create_future()
        handle = loop.call_soon(lambda *args: seen.append(args), 1, 2, context=None)
        assert isinstance(handle, asyncio.Handle)

        def last() -> None:
            seen.append(("class",))
            done.set_result(None)

        type(loop).call_soon(loop, last)
        await done

    asyncio.run(main())
    assert seen == [(1, 2), ("class",)]


class _FlakyClock:
    """perf_counter, until told to fail."""

    def __init__(self) -> None:
        self.failing = False

    def __call__(self) -> float:
        if self.failing:
            raise ZeroDivisionError("clock broke")
        return time.perf_counter()


@pytest.fixture
def flaky() -> Iterator[tuple[taskscope.Session, _FlakyClock]]:
    reset_internal_errors()
    clock = _FlakyClock()
    session = taskscope.install(clock=clock)
    try:
        yield session, clock
    finally:
        session.uninstall()
        reset_internal_errors()


def test_accounting_failure_never_reaches_the_program(
    flaky: tuple[taskscope.Session, _FlakyClock],
) -> None:
    """With taskscope's clock raising inside call_soon and every step, tasks still run,
    results and exceptions arrive unchanged, and the failures are counted internally."""
    _, clock = flaky

    async def double(value: int) -> int:
        await asyncio.sleep(0)
        return value * 2

    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("mine")

    async def main() -> list[int]:
        clock.failing = True
        results = await asyncio.gather(*(double(n) for n in range(5)))
        with pytest.raises(KeyError, match="mine"):
            await asyncio.create_task(fails())
        clock.failing = False
        return list(results)

    assert asyncio.run(main()) == [0, 2, 4, 6, 8]
    counts = internal_error_counts()
    assert counts.get("asyncio backend: call_soon", 0) > 0
    assert counts.get("asyncio backend: step accounting", 0) > 0
