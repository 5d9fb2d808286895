"""The C accelerator of the asyncio hot path (``_speedups.c``) and its pure-Python twin.

The whole suite runs on both (``make pytest-pure`` sets ``TASKSCOPE_PURE_PYTHON``); these
tests pin what is specific to having two: which one runs, that the C wrapper binds like
a method, and that a failure of taskscope's own accounting never reaches the program.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import os
import sys
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
    assert {
        "CallSoon",
        "RecordCore",
        "SiteCore",
        "TaskFinisher",
        "TaskRecorder",
        "TimedStep",
    } <= set(dir(module))
    trio_module = importlib.import_module("taskscope._core._trio_speedups")
    assert {"Dispatch", "Hooks", "RunnerMethod"} <= set(dir(trio_module))
    # The walk to a task's creating line reads the interpreter's frames where their
    # layout is known (_cframes.h), and creates no frame objects there.
    walk = "interpreter frames" if sys.version_info < (3, 14) else "frame objects"
    assert module.FRAME_WALK == trio_module.FRAME_WALK == walk


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


async def _child(value: int) -> int:
    await asyncio.sleep(0)
    return value


async def _spawn_twice() -> list[int]:
    # The first task at a site takes the slow path (new site, new code); the rest of
    # the batch the C recorder's fast path, and the same for their endings.
    tasks = [asyncio.create_task(_child(n)) for n in range(50)]
    return list(await asyncio.gather(*tasks))


def test_every_new_task_is_recorded_alike(session: taskscope.Session) -> None:
    """Tasks from one site are recorded the same whichever path took them: creation
    line, coroutine, parent, times read from perf_counter, and the site's totals."""
    before = time.perf_counter()
    assert asyncio.run(_spawn_twice()) == list(range(50))
    after = time.perf_counter()
    registry = session.registry
    children = [r for r in registry.history if r.code is _child.__code__]
    assert len(children) == 50
    lines = {r.created_at[1] for r in children if r.created_at is not None}
    assert lines == {_spawn_twice.__code__.co_firstlineno + 3}
    parents = {r.parent_id for r in children}
    assert len(parents) == 1
    assert None not in parents
    for record in children:
        assert record.state == 1  # completed
        assert before < record.created <= (record.ended or 0.0) < after
        assert record.steps == 2
        assert record.name.startswith("Task-")
    site = children[0].site
    assert site is not None
    assert all(r.site is site for r in children)
    assert (site.created, site.completed, site.alive) == (50, 50, 0)
    assert site.busy == pytest.approx(sum(r.busy for r in children))
    assert registry.created == len(registry.history) == registry.finished
    assert not registry.live
    assert all(r.ref is None for r in registry.history)


def test_completed_records_leave_the_cyclic_collector(session: taskscope.Session) -> None:
    """The C path untracks live and completed records (nothing in them leads back to
    them); a failed task's record is tracked again while it holds the task's weak
    reference, whose callback leads back to the registry."""
    live_tracked: list[bool] = []

    async def fails() -> None:
        record = session.registry.find(asyncio.current_task())
        assert record is not None
        live_tracked.append(gc.is_tracked(record))
        await asyncio.sleep(0)
        raise KeyError("mine")

    async def main() -> None:
        await _spawn_twice()
        with pytest.raises(KeyError):
            await asyncio.create_task(fails())

    asyncio.run(main())
    assert live_tracked == [not _accel.ACCELERATED]
    children = [r for r in session.registry.history if r.code is _child.__code__]
    failed = [r for r in session.registry.history if r.state == 2]
    assert failed
    if _accel.ACCELERATED:
        assert not any(gc.is_tracked(r) for r in children[1:])
    assert all(gc.is_tracked(r) for r in failed)


async def _created_on_lines() -> list[tuple[Any, int]]:
    """Create tasks through the shapes the walk to the creating line meets, and return
    each task with the line that created it, read by sys._getframe."""
    made: list[tuple[Any, int]] = []

    def note(task: Any) -> None:
        made.append((task, sys._getframe(1).f_lineno))

    note(asyncio.create_task(_child(0)))  # directly
    made.extend((t, sys._getframe().f_lineno) for t in [asyncio.create_task(_child(1))])
    note(asyncio.ensure_future(_child(2)))  # through a library frame
    await asyncio.gather(_child(3))  # gather wraps it in a task: library frames only

    async def nested() -> None:
        loop = asyncio.get_running_loop()
        made.append((loop.create_task(_child(4)), sys._getframe().f_lineno))

    await nested()
    await asyncio.gather(*(task for task, _ in made))
    return made


def test_creating_line_is_the_one_python_sees(session: taskscope.Session) -> None:
    """The creating line found by the frame walk (the interpreter's frames in C, frame
    objects in Python) is the line sys._getframe reports at the call."""
    made = asyncio.run(_created_on_lines())
    by_task = {r.id: r for r in session.registry.history}
    assert len(made) == 4
    for task, line in made:
        record = next(r for r in by_task.values() if r.name == task.get_name())
        assert record.created_at is not None
        assert record.created_at[1] == line, (task, record.created_at)
    names = {task.get_name() for task, _ in made}
    gathered = [r for r in by_task.values() if r.code is _child.__code__ and r.name not in names]
    assert len(gathered) == 1
    assert gathered[0].created_at is not None
    assert gathered[0].created_at[0] is _created_on_lines.__code__


def test_task_methods_are_read_as_python_reads_them(session: taskscope.Session) -> None:
    """The C path calls a C task's methods directly (_cmethods.h), except when the
    task's own __dict__ could shadow one: then it asks Python, like the pure path."""

    async def main() -> None:
        plain = asyncio.create_task(_child(1))
        shadowed = asyncio.create_task(_child(2))
        shadowed.get_name = lambda: "named by its instance"  # type: ignore[method-assign]
        annotated = asyncio.create_task(_child(3))
        annotated.note = "an unrelated attribute"  # type: ignore[attr-defined]
        await asyncio.gather(plain, shadowed, annotated)

    asyncio.run(main())
    children = sorted(
        (r for r in session.registry.history if r.code is _child.__code__), key=lambda r: r.id
    )
    assert [r.state for r in children] == [1, 1, 1]  # all completed
    plain, shadowed, annotated = (r.name for r in children)
    assert shadowed == "named by its instance"
    assert plain.startswith("Task-")
    assert annotated.startswith("Task-")
