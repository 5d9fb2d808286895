"""Internal failures: logged once, counted, and never raised into the user's program."""

from __future__ import annotations

import logging
import threading

logger = logging.getLogger("taskscope")

_lock = threading.Lock()
_seen: set[str] = set()
_counts: dict[str, int] = {}


def internal_error(where: str, exc: BaseException) -> None:
    """Record that taskscope's own code failed at `where`; log the first time only."""
    with _lock:
        _counts[where] = _counts.get(where, 0) + 1
        first = where not in _seen
        _seen.add(where)
    if first:
        try:
            logger.error(
                "taskscope: internal error in %s (disabled where possible; "
                "your program is unaffected): %r",
                where,
                exc,
                exc_info=exc,
            )
        except Exception:  # noqa: BLE001, S110  # logging itself failed: nothing safer to do
            pass


def internal_error_counts() -> dict[str, int]:
    """Return how often each internal failure happened since the process started."""
    with _lock:
        return dict(_counts)


def reset_internal_errors() -> None:
    """Forget past failures, so the next one is logged again (for tests)."""
    with _lock:
        _seen.clear()
        _counts.clear()
