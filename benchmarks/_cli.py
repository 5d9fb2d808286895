"""Command-line helpers shared by ``python -m benchmarks`` and ``benchmarks.instructions``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Collection


class UsageError(Exception):
    """A bad command line; the message is one line that lists the valid choices."""


def select(text: str | None, valid: Collection[str], what: str) -> list[str]:
    """Parse a comma-separated list of names (None: all of `valid`).

    Raises:
        UsageError: a name is not in `valid`, or none is given.
    """
    if text is None:
        return list(valid)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in valid]
    if unknown or not names:
        shown = ", ".join(repr(name) for name in unknown) or "(none given)"
        raise UsageError(f"unknown {what} {shown}; valid {what}s: {', '.join(valid)}")
    return names
