"""The task running right now, on asyncio or trio (whichever this thread runs)."""

from __future__ import annotations

import asyncio
import sys
from typing import Any


def current_task() -> Any:
    """Return the running asyncio or trio task, or None outside of one."""
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    if task is None and "trio" in sys.modules:
        try:
            task = sys.modules["trio"].lowlevel.current_task()
        except RuntimeError:
            task = None
    return task
