"""Internal failures: logged once, counted, and never raised into the user's program."""

from __future__ import annotations

import logging
import sys
import threading

logger = logging.getLogger("taskscope")


class _StderrHandler(logging.Handler):
    """Write taskscope's own messages to the current ``sys.stderr``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:  # noqa: BLE001  # a closed stderr: nothing safer to do
            self.handleError(record)


# taskscope's messages must not enter the program's own logging (its handlers, its
# tests' captured logs): they go to stderr directly. A program that wants them in its
# logging can set ``logging.getLogger("taskscope").propagate = True``.
if not logger.handlers:
    _handler = _StderrHandler()
    _handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(_handler)
    logger.propagate = False

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
