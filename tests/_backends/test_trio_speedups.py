"""The C hot path of the trio backend (``_trio_speedups.c``) against trio's own dispatch.

The whole trio suite runs on both paths (``make pytest-pure``); these tests pin what is
specific to the C one: the per-run ``Instruments.call`` override, that trio's dispatch
still serves every other instrument, and that uninstall leaves trio as it was.
"""

from __future__ import annotations

import collections
from typing import Any

import pytest
import trio
import trio.lowlevel

import taskscope
from taskscope._backends import _compat
from taskscope._core import _accel, _registry
from taskscope._core._faults import internal_error_counts, reset_internal_errors
from taskscope._core._registry import Registry

needs_c = pytest.mark.skipif(
    _accel.trio_speedups is None, reason="the trio C accelerator is not in use"
)


async def checkpoints(n: int) -> int:
    """Pass `n` checkpoints, then return `n`."""
    for _ in range(n):
        await trio.sleep(0)
    return n


class _TrioRecorder(trio.abc.Instrument):
    """A user's trio instrument: records the hooks it sees for the program's tasks
    (trio's own system tasks step a varying number of times)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def _note(self, hook: str, task: trio.lowlevel.Task) -> None:
        if task.coro.cr_code.co_filename == __file__:
            self.calls.append(hook)

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self._note("task_spawned", task)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self._note("before_task_step", task)

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self._note("after_task_step", task)


@needs_c
class TestDispatch:
    """``runner.instruments.call`` takes the short way only for taskscope's hooks."""

    def test_override_is_per_run_and_undone(self) -> None:
        """The override is an instance attribute of one run's Instruments, gone at
        uninstall; the class keeps trio's own ``call``."""
        seen: list[Any] = []

        async def main() -> None:
            runner = _compat.trio_current_runner()
            seen.append(runner.instruments)
            seen.append(vars(runner.instruments).get("call"))
            installed.uninstall()
            seen.append(vars(runner.instruments).get("call"))

        installed = taskscope.install()
        try:
            trio.run(main)
        finally:
            installed.uninstall()
        instruments, during, after = seen
        assert type(during).__name__ == "Dispatch"
        assert after is None
        assert instruments.call.__func__ is type(instruments).call

    def test_user_instrument_sees_every_hook(self) -> None:
        """With a user's instrument on the same hooks, trio's dispatch calls both, in
        order, and taskscope's records are the same as alone."""
        recorder = _TrioRecorder()
        with taskscope.monitor() as session:
            assert trio.run(checkpoints, 3, instruments=[recorder]) == 3
        assert recorder.calls.count("before_task_step") == 4
        assert recorder.calls.count("after_task_step") == 4
        assert recorder.calls.count("task_spawned") == 1
        (task,) = [t for t in session.snapshot().tasks if t.backend == "trio"]
        assert (task.state, task.steps) == ("completed", 4)

    def test_instrument_added_mid_run(self) -> None:
        """An instrument added and removed inside the run sees the same calls as
        without taskscope."""

        def run() -> list[str]:
            recorder = _TrioRecorder()

            async def main() -> None:
                trio.lowlevel.add_instrument(recorder)
                await checkpoints(2)
                trio.lowlevel.remove_instrument(recorder)
                await checkpoints(2)

            trio.run(main)
            return recorder.calls

        expected = run()
        with taskscope.monitor() as session:
            assert run() == expected
        (task,) = [t for t in session.snapshot().tasks if t.backend == "trio"]
        assert task.steps == 5

    def test_unknown_hook_is_trio_s_error(self) -> None:
        """A hook nobody registered raises trio's own KeyError, as without taskscope."""
        errors: list[BaseException] = []

        async def main() -> None:
            instruments = _compat.trio_current_runner().instruments
            try:
                instruments.call("before_task_step_typo", None)
            except KeyError as exc:
                errors.append(exc)

        trio.run(main)
        expected = errors.pop()
        with taskscope.monitor():
            trio.run(main)
        assert repr(errors.pop()) == repr(expected)


class TestFaults:
    """A failure of taskscope's own accounting (in C, or its Python twin) never
    reaches the program."""

    def test_failing_record_creation_stays_inside(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A registry that cannot create records: trio runs as without taskscope, and
        each failure is an internal error of task_spawned."""

        def broken(*_args: Any) -> None:
            raise RuntimeError("registry bug")

        # The Python method: the C fast path only files tasks at sites it already made.
        monkeypatch.setattr(Registry, "_new_record", broken)
        reset_internal_errors()
        with taskscope.monitor() as session:
            assert trio.run(checkpoints, 3) == 3
        assert set(internal_error_counts()) == {"trio backend: task_spawned"}
        assert not [t for t in session.snapshot().tasks if t.backend == "trio"]

    def test_failing_task_finished_stays_inside(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """A registry that cannot finish records: the program's outcome is unchanged."""

        def broken(*_args: Any) -> None:
            raise RuntimeError("registry bug")

        class BrokenHistory(collections.deque[Any]):
            def append(self, item: Any) -> None:
                raise RuntimeError("registry bug")

        # The Python method, and the history the C path files completed tasks in.
        monkeypatch.setattr(Registry, "_task_finished", broken)
        monkeypatch.setattr(_registry, "deque", BrokenHistory)
        reset_internal_errors()
        with taskscope.monitor():
            assert trio.run(checkpoints, 3) == 3
        assert set(internal_error_counts()) == {"trio backend: task_exited"}
