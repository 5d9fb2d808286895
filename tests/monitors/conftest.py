"""Fixtures shared by the monitor tests."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from taskscope.monitors._locks import LockMonitor

if TYPE_CHECKING:
    from collections.abc import Iterator

    from taskscope import Session


@pytest.fixture
def locks(session: Session) -> Iterator[LockMonitor]:
    """A lock monitor (held-too-long threshold 50 ms) installed on the test's session."""
    monitor = LockMonitor(held_too_long=0.05)
    monitor.install(session.registry)
    try:
        yield monitor
    finally:
        monitor.uninstall()
