"""Reversible attribute patches: every wrapper taskscope installs can be taken back."""

from __future__ import annotations

from typing import Any

_MISSING: Any = object()


class Patches:
    """A stack of attribute replacements, undone in reverse order."""

    __slots__ = ("_undo",)

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def replace(self, owner: Any, name: str, value: Any) -> Any:
        """Set ``owner.name = value``; return the attribute as it was looked up before."""
        before = getattr(owner, name)
        own = vars(owner).get(name, _MISSING) if isinstance(owner, type) else before
        self._undo.append((owner, name, own))
        setattr(owner, name, value)
        return before

    def undo(self) -> None:
        """Restore every replaced attribute, newest first."""
        while self._undo:
            owner, name, own = self._undo.pop()
            if own is _MISSING:
                delattr(owner, name)
            else:
                setattr(owner, name, own)
