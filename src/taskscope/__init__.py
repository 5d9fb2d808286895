"""taskscope: see every task, lock, cancel scope and the event loop of asyncio, AnyIO
and trio programs: what is running, what is stuck, what leaked, and which line did it."""

from ._core._clock import MockClock as MockClock
from ._core._instruments import Instrument as Instrument
from ._core._records import CancellationInfo as CancellationInfo
from ._core._records import Counters as Counters
from ._core._records import ExceptionInfo as ExceptionInfo
from ._core._records import Finding as Finding
from ._core._records import Location as Location
from ._core._records import RegionInfo as RegionInfo
from ._core._records import SiteStatistics as SiteStatistics
from ._core._records import Snapshot as Snapshot
from ._core._records import TaskInfo as TaskInfo
from ._core._records import TaskRef as TaskRef
from ._session import Session as Session
from ._session import current_session as current_session
from ._session import install as install
from ._session import monitor as monitor
from ._tracking import tracked_scope as tracked_scope
from ._tracking import tracked_task as tracked_task
from .monitors._locks import track_lock as track_lock
from .monitors._resources import track_resource as track_resource
from .monitors._resources import track_session as track_session

__all__ = [
    "CancellationInfo",
    "Counters",
    "ExceptionInfo",
    "Finding",
    "Instrument",
    "Location",
    "MockClock",
    "RegionInfo",
    "Session",
    "SiteStatistics",
    "Snapshot",
    "TaskInfo",
    "TaskRef",
    "current_session",
    "install",
    "monitor",
    "track_lock",
    "track_resource",
    "track_session",
    "tracked_scope",
    "tracked_task",
]

__version__ = "0.1.0.dev0"

# Public objects say they live here (reprs, docs and pickles show the public path).
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("taskscope."):
        try:
            _obj.__module__ = "taskscope"
        except (AttributeError, TypeError):  # pragma: no cover  # builtins refuse
            pass
del _name, _obj
