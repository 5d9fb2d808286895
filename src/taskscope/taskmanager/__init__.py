"""Bounded, observable background work on AnyIO that cannot leak.

``TaskManager`` runs coroutine functions in one long-lived task group under a global
concurrency limit, with per-task timeouts, cancellation, status records and graceful
shutdown; ``gather_with_concurrency`` and ``as_completed_with_concurrency`` fan out over
lazy inputs. Needs AnyIO: ``pip install 'taskscope[anyio]'``.
"""

from __future__ import annotations

from ._errors import require_anyio

require_anyio()

from ._errors import DuplicateTaskError as DuplicateTaskError  # noqa: E402
from ._errors import ManagerStateError as ManagerStateError  # noqa: E402
from ._errors import QueueFullError as QueueFullError  # noqa: E402
from ._errors import TaskManagerError as TaskManagerError  # noqa: E402
from ._errors import UnknownTaskError as UnknownTaskError  # noqa: E402
from ._errors import WrongTaskError as WrongTaskError  # noqa: E402
from ._gather import ProgressCallback as ProgressCallback  # noqa: E402
from ._gather import as_completed_with_concurrency as as_completed_with_concurrency  # noqa: E402
from ._gather import gather_with_concurrency as gather_with_concurrency  # noqa: E402
from ._limits import Limits as Limits  # noqa: E402
from ._limits import resolve_limits as resolve_limits  # noqa: E402
from ._manager import TaskManager as TaskManager  # noqa: E402
from ._records import LimiterStatistics as LimiterStatistics  # noqa: E402
from ._records import ManagerSnapshot as ManagerSnapshot  # noqa: E402
from ._records import TaskInfo as TaskInfo  # noqa: E402
from ._records import TaskStatus as TaskStatus  # noqa: E402

__all__ = [
    "DuplicateTaskError",
    "LimiterStatistics",
    "Limits",
    "ManagerSnapshot",
    "ManagerStateError",
    "ProgressCallback",
    "QueueFullError",
    "TaskInfo",
    "TaskManager",
    "TaskManagerError",
    "TaskStatus",
    "UnknownTaskError",
    "WrongTaskError",
    "as_completed_with_concurrency",
    "gather_with_concurrency",
    "resolve_limits",
]

# Public names live here: show the public path in reprs, tracebacks and docs.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(__name__ + "._"):
        _obj.__module__ = __name__
del _name, _obj
