"""The system monitor: process CPU, memory, threads, files, context switches and the
garbage collector, sampled on the watchdog thread (psutil optional)."""

from __future__ import annotations

import gc
import logging
import os
import threading
from typing import TYPE_CHECKING, Any, Final

from .._core._faults import internal_error
from ._records import SystemHealth, SystemSample
from ._series import Series

if TYPE_CHECKING:
    from .._core._registry import Registry

logger = logging.getLogger("taskscope")

#: Samples kept (when full, every other one is dropped and the spacing doubles).
MAX_SAMPLES: Final = 512

_psutil_warned = False


def _import_psutil() -> Any:
    """Return the psutil module, or None (saying so once per process)."""
    global _psutil_warned  # noqa: PLW0603  # say it once per process, not per session
    try:
        import psutil
    except ImportError:
        if not _psutil_warned:
            _psutil_warned = True
            logger.warning(
                "taskscope: psutil is not installed, so the system monitor records CPU "
                "time, threads, GC and tasks only (no RSS, open files or context "
                "switches); install it with: pip install 'taskscope[system]'"
            )
        return None
    return psutil


def _keep_later(a: SystemSample, b: SystemSample) -> SystemSample:
    return b


class SystemMonitor:
    """Samples the process every `interval` seconds; GC pauses via ``gc.callbacks``."""

    def __init__(self, registry: Registry, interval: float) -> None:
        self.registry = registry
        self.clock = registry.clock
        self.interval = interval
        self.samples: Series[SystemSample] = Series(MAX_SAMPLES, _keep_later)
        self._psutil = _import_psutil()
        self._process: Any = None
        if self._psutil is not None:
            try:
                self._process = self._psutil.Process()
            except Exception:  # noqa: BLE001  # an unsupported platform: degrade
                self._process = None
        self.gc_collections = [0, 0, 0]
        self.gc_pause_total = 0.0
        self.gc_pause_max = 0.0
        self._gc_start = 0.0
        self._next = 0.0
        self._last_cpu: tuple[float, float] | None = None
        self._callback = self._on_gc

    def start(self) -> None:
        """Start counting GC pauses."""
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        """Stop counting GC pauses."""
        try:
            gc.callbacks.remove(self._callback)
        except ValueError:
            pass

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # An exception here would be printed by CPython as "Exception ignored in" the
        # gc callback, on the program's stderr: never let one out.
        try:
            self._account_gc(phase, info)
        except Exception as exc:  # noqa: BLE001
            self._gc_start = 0.0
            internal_error("system monitor: gc callback", exc)

    def _account_gc(self, phase: str, info: dict[str, Any]) -> None:
        # Runs on whichever thread collects: O(1), no allocation beyond the float.
        if phase == "start":
            self._gc_start = self.clock()
            return
        if not self._gc_start:
            return
        pause = self.clock() - self._gc_start
        self._gc_start = 0.0
        generation = info.get("generation", 0)
        if 0 <= generation < len(self.gc_collections):
            self.gc_collections[generation] += 1
        self.gc_pause_total += pause
        if pause > self.gc_pause_max:
            self.gc_pause_max = pause

    def poll(self, now: float) -> float:
        """Take a sample when one is due (watchdog thread); return when the next is."""
        if now >= self._next:
            self._next = now + self.interval
            self.samples.append(self.sample(now))
        return self._next

    def sample(self, now: float, *, remember: bool = True) -> SystemSample:
        """Read the process's resources now (`remember`: the base of the next CPU %)."""
        times = os.times()
        cpu_percent = None
        if self._last_cpu is not None:
            before_at, before_cpu = self._last_cpu
            if now > before_at:
                cpu_percent = (times.user + times.system - before_cpu) / (now - before_at)
        if remember:
            self._last_cpu = (now, times.user + times.system)
        rss = files = voluntary = involuntary = None
        threads = threading.active_count()
        process = self._process
        if process is not None:
            try:
                with process.oneshot():
                    rss = int(process.memory_info().rss)
                    threads = int(process.num_threads())
                    switches = process.num_ctx_switches()
                    voluntary, involuntary = int(switches.voluntary), int(switches.involuntary)
                    if hasattr(process, "num_fds"):
                        files = int(process.num_fds())
                    else:  # Windows
                        files = int(process.num_handles())
            except Exception:  # noqa: BLE001, S110  # a field the platform lacks stays None
                pass
        return SystemSample(
            at=self.registry.elapsed(now),
            cpu_user=times.user,
            cpu_system=times.system,
            cpu_percent=cpu_percent,
            rss=rss,
            threads=threads,
            open_files=files,
            ctx_switches_voluntary=voluntary,
            ctx_switches_involuntary=involuntary,
            gc_collections=sum(self.gc_collections),
            gc_pause_total=self.gc_pause_total,
            tasks_alive=len(self.registry.live),
        )

    def health(self) -> SystemHealth:
        """Return the time series and totals, with one fresh sample at the end."""
        samples = list(self.samples.snapshot())
        samples.append(self.sample(self.clock(), remember=False))
        return SystemHealth(
            interval=self.interval,
            psutil=self._process is not None,
            samples=tuple(samples),
            gc_collections=tuple(self.gc_collections),
            gc_pause_total=self.gc_pause_total,
            gc_pause_max=self.gc_pause_max,
        )
