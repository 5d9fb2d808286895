"""Clocks, injectable so tests can drive time instead of sleeping."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Return a monotonic time in seconds; only differences are meaningful."""

    def __call__(self) -> float: ...


#: The clock every session uses unless told otherwise: high resolution and monotonic,
#: so busy times of microsecond-long task steps are measurable.
default_clock: Clock = time.perf_counter


class MockClock:
    """A clock that only moves when told to: for tests of timings and thresholds."""

    __slots__ = ("now",)

    def __init__(self, start: float = 1.0) -> None:
        # Not 0.0: a reading of exactly 0.0 means "not inside a step" to the backends.
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by `seconds`."""
        if seconds < 0:
            raise ValueError(f"a clock cannot go backwards (advance by {seconds!r})")
        self.now += seconds
