"""Monitors: the loop watchdog (stalls, lag, spinning tasks), the system monitor and the
emergency dump; their records are part of every snapshot."""

from ._records import BlockingCall as BlockingCall
from ._records import HealthSnapshot as HealthSnapshot
from ._records import LagStatistics as LagStatistics
from ._records import LoopHealth as LoopHealth
from ._records import SpinningTask as SpinningTask
from ._records import StackSample as StackSample
from ._records import Stall as Stall
from ._records import StalledTask as StalledTask
from ._records import SystemHealth as SystemHealth
from ._records import SystemSample as SystemSample

__all__ = [
    "BlockingCall",
    "HealthSnapshot",
    "LagStatistics",
    "LoopHealth",
    "SpinningTask",
    "StackSample",
    "Stall",
    "StalledTask",
    "SystemHealth",
    "SystemSample",
]
