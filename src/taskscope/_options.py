"""Session options: validated once, at install time, never per event."""

from __future__ import annotations

import math
import signal
from dataclasses import dataclass

from ._core._clock import Clock, default_clock

#: Signals that cannot be caught, so cannot trigger a dump.
_UNCATCHABLE = frozenset(
    getattr(signal, name) for name in ("SIGKILL", "SIGSTOP") if hasattr(signal, name)
)


def _check_duration(name: str, value: object, *, zero_disables: bool = False) -> float:
    """Return `value` as seconds, or raise ValueError naming the option."""
    allowed = "a non-negative" if zero_disables else "a positive"
    if isinstance(value, bool) or not isinstance(value, int | float):
        # ValueError for every bad threshold, so callers catch one type (the issue's
        # contract); the message names the option either way.
        raise ValueError(  # noqa: TRY004
            f"{name} must be {allowed} number of seconds, got {value!r}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_disables):
        hint = " (0 turns it off)" if zero_disables else ""
        raise ValueError(f"{name} must be {allowed} number of seconds{hint}, got {value!r}")
    return seconds


def signal_number(name: str, value: object) -> int:
    """Return the number of a catchable signal given by number, `signal.Signals` or name
    (``SIGUSR1`` or ``USR1``); raise ValueError naming the option otherwise."""
    number: int | None = None
    if isinstance(value, str):
        text = value.strip().upper()
        if text.isdigit():
            number = int(text)
        else:
            found = getattr(signal, text if text.startswith("SIG") else "SIG" + text, None)
            number = int(found) if isinstance(found, int) else None
    elif isinstance(value, int) and not isinstance(value, bool):
        number = int(value)
    if number is None or number not in signal.valid_signals() or number in _UNCATCHABLE:
        raise ValueError(
            f"{name} must be a signal that can be caught, such as signal.SIGUSR1 or "
            f"'SIGUSR1', got {value!r}"
        )
    return number


@dataclass(frozen=True, slots=True)
class Options:
    """Everything `taskscope.install` accepts."""

    #: Finished tasks kept individually (older ones live on in per-site aggregates).
    history_size: int = 10_000
    #: Creation sites aggregated individually before they share one bucket.
    max_sites: int = 10_000
    #: The monotonic clock used for every timing (inject a `MockClock` in tests).
    clock: Clock = default_clock
    #: A loop stuck in one step or callback this long (seconds) is a stall.
    block_threshold: float = 0.1
    #: A task rescheduling itself without waiting this long (seconds) is spinning.
    spin_threshold: float = 1.0
    #: How often each loop is probed for its scheduling lag (seconds; at most half of
    #: `block_threshold` is used).
    lag_interval: float = 0.05
    #: How often the system monitor samples the process (seconds; 0 turns it off).
    system_interval: float = 1.0
    #: A signal that writes the emergency dump to stderr (None: no dump signal).
    dump_signal: int | None = None
    #: Track locks, semaphores, conditions, events and queues (opt-in: its cost on
    #: lock-heavy code is above the budget in DESIGN.md, see docs/locks.md).
    locks: bool = False
    #: A lock held this long (seconds) is ``lock-held-too-long``.
    lock_hold_threshold: float = 1.0
    #: Track transports, servers, subprocesses and HTTP client sessions (opt-in).
    resources: bool = False
    #: Track cancel scopes, task groups and timeouts (opt-in: see docs/cancel-scopes.md).
    scopes: bool = False
    #: With `scopes`: add a note naming the entering task and line to AnyIO's and
    #: trio's own cross-task/misnesting RuntimeError (the exception is otherwise unchanged).
    scope_notes: bool = False

    def __post_init__(self) -> None:
        for name in ("history_size", "max_sites"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not callable(self.clock):
            raise TypeError(f"clock must be a callable returning seconds, got {self.clock!r}")
        for name in ("locks", "resources", "scopes", "scope_notes"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.scope_notes and not self.scopes:
            raise ValueError("scope_notes adds notes to cancel-scope errors; it needs scopes=True")
        for name in ("block_threshold", "spin_threshold", "lag_interval", "lock_hold_threshold"):
            object.__setattr__(self, name, _check_duration(name, getattr(self, name)))
        object.__setattr__(
            self,
            "system_interval",
            _check_duration("system_interval", self.system_interval, zero_disables=True),
        )
        if self.dump_signal is not None:
            object.__setattr__(self, "dump_signal", signal_number("dump_signal", self.dump_signal))
