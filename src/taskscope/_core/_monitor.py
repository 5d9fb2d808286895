"""The interface every monitor (locks, cancel scopes, resources, loop health) offers the
session: install and uninstall its hooks, return its report section as data, and its
findings. The session owns the order; monitors never import each other."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ._records import Finding
    from ._registry import Registry


class Monitor(Protocol):
    """A pluggable monitor. Each method must be safe to call from any thread."""

    #: The report section this monitor fills (``locks``, ``scopes``, ``resources``...).
    section: str

    def install(self, registry: Registry) -> None:
        """Install the monitor's hooks; `registry` gives the clock, tasks and locations."""

    def uninstall(self) -> None:
        """Remove every hook; the data stays readable."""

    def snapshot(self) -> Any:
        """Return the monitor's state as frozen records (the section's data)."""

    def findings(self, snapshot: Any) -> list[Finding]:
        """Return the findings for a snapshot taken by `snapshot`."""

    def end_of_program(self) -> None:
        """The program is ending: what is still held or open now is a finding."""
