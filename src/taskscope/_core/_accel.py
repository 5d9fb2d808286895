"""Which hot path runs: the C accelerators (``_speedups.c`` for asyncio,
``_trio_speedups.c`` for trio) or their pure-Python twins.

The C extensions are built at install where a C compiler exists (setup.py, optional).
``TASKSCOPE_PURE_PYTHON=1`` forces the pure-Python path (the test suite runs on both;
also the way out of a suspected accelerator bug). The decision is made once, at import,
so that task records and the backend wrappers always come from the same side.
"""

from __future__ import annotations

import importlib
import os
from typing import TYPE_CHECKING, Any, Final


def _load(name: str) -> Any:
    if os.environ.get("TASKSCOPE_PURE_PYTHON"):
        return None
    try:
        return importlib.import_module(f"taskscope._core.{name}")
    except ImportError:
        return None


#: The compiled module, or None.
speedups: Final[Any] = _load("_speedups")
#: True when the C accelerator runs.
ACCELERATED: Final = speedups is not None
#: The trio backend's compiled hot path (hooks, dispatch, Runner wrappers), or None.
trio_speedups: Final[Any] = _load("_trio_speedups")


class PureRecordCore:
    """The fields of a task record written on every step (`TaskRecord`'s base).

    The C twin (``_speedups.RecordCore``) stores the same fields in its struct, so the
    C step trampoline reads and writes them by offset; Python code sees attributes
    either way.
    """

    __slots__ = (
        "busy",
        "first_step",
        "longest_step",
        "scheduled",
        "scheduled_at",
        "step_start",
        "steps",
        "waited_at",
    )

    busy: float
    first_step: float | None
    longest_step: float
    scheduled: float
    scheduled_at: float
    step_start: float
    steps: int
    waited_at: int


if TYPE_CHECKING:
    RecordCore = PureRecordCore
else:
    RecordCore = speedups.RecordCore if speedups is not None else PureRecordCore
