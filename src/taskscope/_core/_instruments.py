"""Hook dispatch in the manner of trio's instrumentation.

An `Instrument` overrides only the hooks it wants. The dispatcher registers exactly the
hooks a subclass overrides, so a call site pays one dict membership test when nobody
listens (``if "task_created" in instruments:``). An instrument that raises is removed
from that hook and logged once; it never crashes the program.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._records import TaskInfo

from ._faults import logger


class Instrument:
    """The interface for hooks into taskscope's view of tasks. Every hook is optional."""

    __slots__ = ()

    def task_created(self, task: TaskInfo) -> None:
        """Called when taskscope first sees a task, just before its first step."""

    def before_task_step(self, task_id: int) -> None:
        """Called on the event loop thread just before a task step runs."""

    def after_task_step(self, task_id: int, duration: float) -> None:
        """Called on the event loop thread just after a task step ran `duration` seconds."""

    def task_finished(self, task: TaskInfo) -> None:
        """Called when a task completes, fails or is cancelled."""


HOOKS = tuple(name for name in vars(Instrument) if not name.startswith("_"))


class Instruments(dict[str, list[Callable[..., None]]]):
    """Hook name -> bound methods of the instruments that override it.

    Invariant: a hook name is a key only while at least one instrument implements it.
    """

    __slots__ = ()

    def __init__(self, instruments: Iterable[Instrument] = ()) -> None:
        super().__init__()
        for instrument in instruments:
            self.add(instrument)

    def add(self, instrument: Instrument) -> None:
        """Register every hook that `instrument` overrides."""
        if not isinstance(instrument, Instrument):
            raise TypeError(
                f"instruments must be taskscope.Instrument subclasses, got {instrument!r}"
            )
        for name in HOOKS:
            method = getattr(type(instrument), name, None)
            if method is not None and method is not getattr(Instrument, name):
                self.setdefault(name, []).append(getattr(instrument, name))

    def call(self, hook: str, *args: Any) -> None:
        """Call every method registered for `hook`; disable the ones that raise."""
        for method in list(self.get(hook, ())):
            try:
                method(*args)
            except BaseException as exc:  # noqa: BLE001  # an instrument never breaks the program
                self._disable(hook, method, exc)

    def _disable(self, hook: str, method: Callable[..., None], exc: BaseException) -> None:
        methods = self.get(hook)
        if methods is not None and method in methods:
            methods.remove(method)
            if not methods:
                del self[hook]
        logger.error(
            "taskscope: instrument hook %s raised; the instrument has been disabled for this hook.",
            getattr(method, "__qualname__", hook),
            exc_info=exc,
        )
