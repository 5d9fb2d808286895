"""Which hot path runs: the C accelerators (``_speedups.c`` for asyncio,
``_trio_speedups.c`` for trio, ``_lock_speedups.c`` for the lock monitor) or their
pure-Python twins.

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
    """The fields of a task record written for every task and on every step
    (`TaskRecord`'s base; `TaskRecord.__init__` documents each).

    The C twin (``_speedups.RecordCore``) stores the same fields in its struct, so the
    C call_soon wrapper, step trampoline and task recorder read and write them by
    offset; Python code sees attributes either way.
    """

    __slots__ = (
        "busy",
        "cancel_cause",
        "code",
        "created",
        "created_at",
        "ended",
        "first_step",
        "id",
        "longest_step",
        "longest_step_at",
        "name",
        "owner_key",
        "parent_id",
        "ref",
        "scheduled",
        "scheduled_at",
        "site",
        "state",
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


class PureSiteCore:
    """The running totals of one creation site (`SiteAggregate`'s base; the C twin,
    ``_speedups.SiteCore``, is updated by offset for every task)."""

    __slots__ = (
        "alive",
        "busy",
        "cancelled",
        "code",
        "completed",
        "created",
        "failed",
        "longest_step",
        "raw",
        "wall",
    )


if TYPE_CHECKING:
    RecordCore = PureRecordCore
    SiteCore = PureSiteCore
elif speedups is not None:
    RecordCore = speedups.RecordCore
    SiteCore = speedups.SiteCore
else:
    RecordCore = PureRecordCore
    SiteCore = PureSiteCore


# -- the lock monitor's accelerator ----------------------------------------------------


#: The lock monitor's compiled module (``_lock_speedups.c``), or None. Built and chosen
#: like `speedups`, independently of it: either may be missing where the other is not.
lock_speedups: Final[Any] = _load("_lock_speedups")
#: True when the lock monitor's C hot path runs.
LOCKS_ACCELERATED: Final = lock_speedups is not None


class PureLockCore:
    """The fields of a primitive's state used on every acquisition and every wait
    (`PrimitiveState`'s base; the C twin is ``_lock_speedups.LockCore``, read and
    written by offset)."""

    __slots__ = (
        "cancelled_waits",
        "hist",
        "hold_max",
        "holder",
        "holds",
        "kind",
        "loop",
        "ref",
        "site_code",
        "wait_max",
        "waits",
    )

    cancelled_waits: int
    hist: dict[int, int] | None
    hold_max: int
    holder: Any
    holds: Any
    kind: str
    loop: Any
    ref: Any
    site_code: Any
    wait_max: int
    waits: Any


if TYPE_CHECKING:
    LockCore = PureLockCore
else:
    LockCore = lock_speedups.LockCore if lock_speedups is not None else PureLockCore
