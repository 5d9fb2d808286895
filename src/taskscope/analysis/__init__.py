"""Analysis: turns snapshots into findings."""

from ._tasks import find_problems as find_problems

__all__ = ["find_problems"]
