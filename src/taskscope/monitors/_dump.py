"""The emergency dump: every thread's stack, every live task with where it was created
and where it waits, and the stall in progress, written on a signal of the user's choice.

Two layers, because a stuck program may be stuck in two ways:

* a Python-level handler (``signal.signal``) writes the full dump with task context; it
  runs in the main thread between bytecodes, which covers CPU-bound loops and every
  blocking call that returns to Python on a signal (sleep, sockets, lock waits);
* ``faulthandler.register(chain=True)`` first writes the raw stacks of every thread
  from C, which works even while the main thread is stuck in C holding the GIL.
"""

from __future__ import annotations

import faulthandler
import signal
import sys
import threading
from typing import IO, TYPE_CHECKING, Any

from .._core._faults import internal_error
from .._core._location import to_location

if TYPE_CHECKING:
    from types import FrameType

    from .._core._registry import Registry
    from ._loop import LoopMonitor


def _await_point(record: Any) -> str:
    task = record.task()
    if task is None:
        return "finished"
    if record.step_start:
        return "running"
    coro = getattr(task, "coro", None)
    if coro is None:
        get_coro = getattr(task, "get_coro", None)
        coro = get_coro() if get_coro is not None else None
    where = None
    depth = 0
    while coro is not None and depth < 64:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            where = frame
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
        depth += 1
    if where is None:
        return "unknown"
    return str(to_location((where.f_code, where.f_lineno)))


def format_dump(registry: Registry, loop: LoopMonitor | None) -> str:
    """Return the dump as text (safe from any thread)."""
    lines = ["taskscope: emergency dump", ""]
    if loop is not None:
        for stall in loop.current_stalls():
            who = (
                f"task {stall.tasks[0].name!r} (#{stall.tasks[0].id})"
                if stall.tasks
                else "a callback"
            )
            lines.append(
                f"LOOP BLOCKED for {stall.duration * 1000:.0f} ms in {who} on thread "
                f"{stall.thread!r}, at {stall.location or 'unknown location'}"
            )
            if stall.blocking is not None:
                lines.append(
                    f"  blocking call: {stall.blocking.function} ({stall.blocking.category})"
                )
            lines.extend(
                f"  task #{task.id} {task.name!r} ({task.coroutine}) created at {task.created_at}"
                for task in stall.tasks
            )
        lines.append("")
    records = sorted(registry.live.values(), key=lambda r: r.id)
    lines.append(f"live tasks: {len(records)}")
    lines.extend(
        f"  #{record.id} {record.current_name()!r} {record.coroutine} [{record.backend}]\n"
        f"      created at {to_location(record.created_at)}\n"
        f"      now at     {_await_point(record)}"
        for record in records
    )
    lines.append("")
    names = {thread.ident: thread.name for thread in threading.enumerate()}
    for ident, frame in sys._current_frames().items():
        lines.append(f"thread {names.get(ident, ident)!r} ({ident}), most recent call first:")
        current: FrameType | None = frame
        depth = 0
        while current is not None and depth < 64:
            lines.append(f"  {to_location((current.f_code, current.f_lineno))}")
            current = current.f_back
            depth += 1
    del frame, current
    return "\n".join(lines) + "\n"


class DumpOnSignal:
    """Writes the emergency dump to `file` (stderr by default) when `signum` arrives."""

    def __init__(
        self,
        signum: int,
        registry: Registry,
        loop: LoopMonitor | None,
        file: IO[str] | None = None,
    ) -> None:
        self.signum = signum
        self.registry = registry
        self.loop = loop
        self.file = file
        self._previous: Any = None
        self._installed = False

    def install(self) -> None:
        """Install the handlers (from the main thread only, as signal.signal requires).

        Raises:
            ValueError: not called from the main thread.
        """
        if threading.current_thread() is not threading.main_thread():
            raise ValueError(
                "dump_signal needs taskscope.install() to be called from the main thread "
                "(Python runs signal handlers there only); install from the main thread "
                "or leave dump_signal unset"
            )
        self._previous = signal.signal(self.signum, self._handle)
        self._installed = True
        try:
            stream = self.file if self.file is not None else sys.stderr
            faulthandler.register(self.signum, file=stream, all_threads=True, chain=True)
        except (AttributeError, ValueError, RuntimeError, OSError) as exc:
            internal_error("dump: faulthandler.register", exc)

    def uninstall(self) -> None:
        """Restore the signal's previous handler."""
        if not self._installed:
            return
        self._installed = False
        try:
            faulthandler.unregister(self.signum)
        except (AttributeError, ValueError, RuntimeError):
            pass
        try:
            signal.signal(
                self.signum, self._previous if self._previous is not None else signal.SIG_DFL
            )
        except (ValueError, TypeError) as exc:  # not the main thread any more
            internal_error("dump: restoring the signal handler", exc)

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        try:
            stream = self.file if self.file is not None else sys.stderr
            stream.write(format_dump(self.registry, self.loop))
            stream.flush()
        except Exception as exc:  # noqa: BLE001  # a dump never breaks the program
            internal_error("dump: writing", exc)
        previous = self._previous
        if callable(previous):
            previous(signum, frame)
