"""The monitors a session runs: the loop watchdog, the system monitor, the dump signal."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from .._core._faults import internal_error
from ._dump import DumpOnSignal, format_dump
from ._loop import LoopMonitor
from ._system import SystemMonitor
from ._watchdog import Watchdog

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType

    from .._core._registry import Registry
    from .._options import Options
    from ._records import LoopHealth, SystemHealth

#: The watchdog wakes at most this far apart; a fraction of the threshold below it, so a
#: stall is seen within a few milliseconds of crossing the threshold.
_MAX_PERIOD: Final = 0.02
_MIN_PERIOD: Final = 0.002


class Monitors:
    """Starts, polls (on one watchdog thread) and stops the session's monitors."""

    def __init__(self, registry: Registry, options: Options) -> None:
        self.registry = registry
        self.loop = LoopMonitor(
            registry,
            block_threshold=options.block_threshold,
            spin_threshold=options.spin_threshold,
            lag_interval=options.lag_interval,
        )
        self.system = (
            SystemMonitor(registry, options.system_interval) if options.system_interval else None
        )
        pollers: list[Callable[[float], float]] = [self.loop.poll]
        if self.system is not None:
            pollers.append(self.system.poll)
        period = min(_MAX_PERIOD, max(_MIN_PERIOD, options.block_threshold / 5))
        self.watchdog = Watchdog(registry.clock, period, pollers)
        self.dump = (
            DumpOnSignal(options.dump_signal, registry, self.loop)
            if options.dump_signal is not None
            else None
        )

    def start(self) -> None:
        """Start the watchdog thread, GC accounting and the dump signal."""
        if self.dump is not None:
            self.dump.install()  # first: it raises for a bad signal, before anything runs
        if self.system is not None:
            self.system.start()
        self.watchdog.start()

    def stop(self) -> None:
        """Stop everything `start` started; the data stays readable."""
        self.loop.unwatch_trio_runs()
        self.watchdog.stop()
        if self.system is not None:
            self.system.stop()
        if self.dump is not None:
            self.dump.uninstall()

    def watch_asyncio_loop(self, loop: Any) -> None:
        """Hook for the asyncio backend: a task of a loop not seen before."""
        try:
            self.loop.watch_asyncio_loop(loop)
        except Exception as exc:  # noqa: BLE001  # the loop runs unwatched
            internal_error("loop monitor: watching an asyncio loop", exc)

    def watch_trio(self, module: ModuleType) -> None:
        """Probe every trio run from now on (trio was just imported)."""
        try:
            self.loop.watch_trio_runs(module)
        except Exception as exc:  # noqa: BLE001  # trio runs unwatched
            internal_error("loop monitor: watching trio", exc)

    def loop_health(self, elapsed: float) -> LoopHealth:
        """Return the loop watchdog's picture."""
        return self.loop.health(elapsed)

    def system_health(self) -> SystemHealth | None:
        """Return the system monitor's picture, if it runs."""
        return self.system.health() if self.system is not None else None

    def dump_text(self) -> str:
        """Return the emergency dump as text."""
        return format_dump(self.registry, self.loop)
