"""Cancellations and the real errors of an exception group.

A task group that fails raises a ``BaseExceptionGroup`` holding the one real error and
every sibling's cancellation; what the user needs first is the real error and its line.
Cancellation classes are recognised without importing trio or AnyIO (the core needs
only the standard library): asyncio's ``CancelledError`` (which AnyIO on asyncio uses)
and any class named ``Cancelled`` defined in trio (which AnyIO on trio uses).
"""

from __future__ import annotations

import asyncio
from typing import Final

#: How many leaves of a (nested) exception group are looked at, at most.
MAX_LEAVES: Final = 100


def is_cancellation(exc: BaseException | None) -> bool:
    """Return True for asyncio's/trio's cancellation, or a group of nothing else."""
    if exc is None:
        return False
    if isinstance(exc, BaseExceptionGroup):
        return all(is_cancellation(inner) for inner in exc.exceptions)
    if isinstance(exc, asyncio.CancelledError):
        return True
    cls = type(exc)
    return cls.__name__ == "Cancelled" and cls.__module__.startswith("trio")


def real_errors(exc: BaseException, *, limit: int = MAX_LEAVES) -> list[BaseException]:
    """Return the errors inside `exc` that are not cancellations, depth first.

    An exception group that carries one real failure among its siblings'
    cancellations yields just that failure; a plain exception yields itself (unless it
    is a cancellation). Nested groups are flattened, in order.
    """
    found: list[BaseException] = []
    pending: list[BaseException] = [exc]
    seen = 0
    while pending and len(found) < limit and seen < limit * 10:
        current = pending.pop(0)
        seen += 1
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = list(current.exceptions)
        elif not is_cancellation(current):
            found.append(current)
    return found


def cancellation_count(exc: BaseException, *, limit: int = MAX_LEAVES) -> int:
    """Return how many leaves of a (nested) exception group are cancellations."""
    count = 0
    pending: list[BaseException] = [exc]
    seen = 0
    while pending and seen < limit * 10:
        current = pending.pop()
        seen += 1
        if isinstance(current, BaseExceptionGroup):
            pending.extend(current.exceptions)
        elif is_cancellation(current):
            count += 1
    return count
