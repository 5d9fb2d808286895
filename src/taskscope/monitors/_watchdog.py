"""The watchdog thread: wakes every few milliseconds and polls the monitors.

It never runs on an event loop, never waits for one, and takes no lock a loop thread
could hold while stuck, so a loop blocked in C or in a pure-Python loop cannot stall it
(it needs only the GIL, which the interpreter hands over every switch interval, or
which a blocking C call releases). It is a daemon thread: it never keeps a finished
program alive.
"""

from __future__ import annotations

import atexit
import threading
from typing import TYPE_CHECKING, Final

from .._core._faults import internal_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._core._clock import Clock

#: How long `stop` waits for the thread to end.
_JOIN_TIMEOUT: Final = 2.0
#: The longest the thread sleeps when nothing is due.
_MAX_SLEEP: Final = 1.0


class Watchdog:
    """A daemon thread calling each poller with the clock.

    Each poller returns when it next needs to run; the thread sleeps until the earliest
    of those, but at least `period` (so an idle program costs a few wakeups a second).
    """

    def __init__(
        self, clock: Clock, period: float, pollers: list[Callable[[float], float]]
    ) -> None:
        self.clock = clock
        self.period = period
        self.pollers = pollers
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def thread(self) -> threading.Thread | None:
        """The watchdog thread, while started."""
        return self._thread

    def start(self) -> None:
        """Start the thread."""
        self._stop.clear()
        thread = threading.Thread(target=self._run, name="taskscope-watchdog", daemon=True)
        self._thread = thread
        thread.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Stop the thread and wait for it (briefly; it is a daemon either way)."""
        atexit.unregister(self.stop)
        self._stop.set()
        thread = self._thread
        self._thread = None
        if thread is not None and thread is not threading.current_thread():
            thread.join(_JOIN_TIMEOUT)

    def _run(self) -> None:
        wait = self._stop.wait
        period = self.period
        pollers = self.pollers
        clock = self.clock
        delay = period
        while not wait(delay):
            delay = period
            try:
                now = clock()
            except Exception as exc:  # noqa: BLE001  # an injected clock may fail
                internal_error("watchdog: clock", exc)
                continue
            wake = now + _MAX_SLEEP
            for poll in pollers:
                try:
                    wake = min(wake, poll(now))
                except Exception as exc:  # noqa: BLE001  # the watchdog never dies
                    internal_error(f"watchdog: {getattr(poll, '__qualname__', poll)}", exc)
            try:
                delay = max(period, wake - clock())
            except Exception as exc:  # noqa: BLE001
                internal_error("watchdog: clock", exc)
