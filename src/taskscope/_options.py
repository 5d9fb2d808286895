"""Session options: validated once, at install time, never per event."""

from __future__ import annotations

from dataclasses import dataclass

from ._core._clock import Clock, default_clock


@dataclass(frozen=True, slots=True)
class Options:
    """Everything `taskscope.install` accepts."""

    #: Finished tasks kept individually (older ones live on in per-site aggregates).
    history_size: int = 10_000
    #: Creation sites aggregated individually before they share one bucket.
    max_sites: int = 10_000
    #: The monotonic clock used for every timing (inject a `MockClock` in tests).
    clock: Clock = default_clock

    def __post_init__(self) -> None:
        for name in ("history_size", "max_sites"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not callable(self.clock):
            raise TypeError(f"clock must be a callable returning seconds, got {self.clock!r}")
