"""Cancel scopes: every AnyIO/trio cancel scope, task group and asyncio timeout, who
entered and exited it where, who cancelled it and why, and which task it cancelled.

How it works (also in docs/cancel-scopes.md):

* **Hooks.** The scope *classes* are wrapped (enter/exit/cancel), never the instances:
  AnyIO's asyncio ``CancelScope`` (`_scopes_anyio`), ``trio.CancelScope``, which AnyIO
  on trio and every nursery use (`_scopes_trio`), asyncio's ``Timeout`` and
  ``TaskGroup`` (`_scopes_asyncio`). Each wrapper calls the original with the same
  arguments and returns or re-raises exactly what it did; the only opt-in change is an
  exception note (``exception_notes=True``) on the library's own cross-task/misnesting
  error.
* **Hot path.** Entering (`_scopes_enter`) and a clean exit touch only the side tables
  of `_scopes_state`, keyed by ``id(scope)`` with a weak reference (AnyIO's scopes have
  ``__slots__``; nothing is ever set on them).
* **Errors.** An exit in the wrong task or order is recorded with both stacks and the
  owner (`_scopes_errors`) before the library's error reaches the program.
* **Provenance.** Cancellation requests are recorded before delivery, and the backends
  ask which scope delivered a task's cancellation (`_scopes_cancel`).

This module holds the monitor itself (options, installing the wrappers as AnyIO and
trio are imported, the report section) and the hooks the backends call.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import TYPE_CHECKING, Any

from .._backends import _compat, _compat_anyio
from .._backends._patching import Patches
from .._core import _provenance
from .._core._faults import internal_error
from . import _scopes_cancel
from ._scopes_anyio import make_exit
from ._scopes_asyncio import make_aenter, make_aexit
from ._scopes_cancel import make_cancel
from ._scopes_enter import make_enter
from ._scopes_records import ScopeRef, ScopesSection
from ._scopes_state import CROSS_TASK, MISNESTED, ScopeState
from ._scopes_trio import make_close
from ._scopes_view import empty_section, scope_ref, section

if TYPE_CHECKING:
    from types import FrameType, ModuleType

    from .._core._records import Finding
    from .._core._registry import Registry, TaskRecord

__all__ = ["CROSS_TASK", "MISNESTED", "ScopeMonitor"]

logger = logging.getLogger("taskscope")

_installed: ScopeMonitor | None = None
_install_lock = threading.Lock()


class ScopeMonitor:
    """Tracks cancel scopes, task groups and timeouts (report section ``scopes``).

    Args:
        exception_notes: add a note naming the entering task and line to the
            ``RuntimeError`` AnyIO (or trio) raises for a cross-task or misnested exit
            (the exception is otherwise never touched).
        stack_depth: at most this many frames kept per entered scope (its entry stack).
        context_frames: callers kept beyond the user's frame in an entry stack (each
            costs a frame object per scope entered: the caller of a coroutine is
            materialized on demand).
        max_errors: scope errors kept individually (all are counted).
        max_recent: exited scopes that were cancelled or failed, kept individually.
        max_active: entered scopes tracked at once; past this, abandoned (garbage
            collected without exiting) scopes are pruned.
    """

    section = "scopes"

    def __init__(
        self,
        *,
        exception_notes: bool = False,
        stack_depth: int = 8,
        context_frames: int = 0,
        max_errors: int = 1_000,
        max_recent: int = 1_000,
        max_active: int = 100_000,
    ) -> None:
        if stack_depth < 1 or max_errors < 0 or max_recent < 0 or max_active < 1:
            raise ValueError(
                "ScopeMonitor options must be positive: stack_depth >= 1, max_active >= 1, "
                "max_errors and max_recent >= 0"
            )
        self.exception_notes = exception_notes
        self._options = (stack_depth, max(0, context_frames), max_errors, max_recent, max_active)
        self.state: ScopeState | None = None
        self.installed = False
        self.unavailable_reason: str | None = None
        self.anyio_version: str | None = None
        self._patches = Patches()
        self._wrapped: set[type] = set()

    # -- install / uninstall --------------------------------------------------------

    def install(self, registry: Registry) -> None:
        """Wrap the scope classes now, and AnyIO's/trio's as soon as they are imported.

        Raises:
            RuntimeError: another `ScopeMonitor` is installed (the hooks are per class,
                so one per process); uninstall it first.
        """
        global _installed  # noqa: PLW0603  # the one process-wide monitor slot
        with _install_lock:
            if _installed is not None:
                raise RuntimeError(
                    "a ScopeMonitor is already installed in this process; call its "
                    "uninstall() first"
                )
            _installed = self
        try:
            self._install(registry)
        except BaseException:
            self.uninstall()  # all or nothing, like the session
            raise

    def _install(self, registry: Registry) -> None:
        stack_depth, context_frames, max_errors, max_recent, max_active = self._options
        self.state = ScopeState(
            registry,
            stack_depth,
            context_frames,
            max_errors,
            max_recent,
            max_active,
            self.exception_notes,
        )
        self.installed = True
        _provenance.set_explainer(self)
        self.anyio_version = _compat_anyio.anyio_version()
        for scope_class in _compat_anyio.asyncio_classes():
            self._wrap(scope_class)
        _compat.when_imported(_compat_anyio.ANYIO_ASYNCIO_MODULE, self._on_anyio_asyncio)
        _compat.when_imported("trio", self._on_trio)
        _compat.when_imported(_compat_anyio.ANYIO_TRIO_MODULE, self._on_anyio_trio)

    def uninstall(self) -> None:
        """Restore every wrapped method exactly; the data stays readable."""
        global _installed  # noqa: PLW0603
        with _install_lock:
            if _installed is self:
                _installed = None
        if _provenance.explainer() is self:
            _provenance.set_explainer(None)
        self.installed = False
        self._patches.undo()
        self._wrapped.clear()

    def _on_anyio_asyncio(self, module: ModuleType) -> None:
        state = self.state
        if not self.installed or state is None:
            return
        try:
            problem = _compat_anyio.anyio_problem(self.anyio_version, module)
            if problem is not None:
                self.unavailable_reason = problem
                logger.warning("taskscope: cancel-scope tracking unavailable: %s", problem)
                return
            scope_class = _compat_anyio.anyio_asyncio_class(module)
            if scope_class is not None:
                state.refresh_codes()
                self._wrap(scope_class)
        except Exception as exc:  # noqa: BLE001  # never break an import
            internal_error("scope monitor: wrapping AnyIO", exc)

    def _on_anyio_trio(self, _module: ModuleType) -> None:
        if self.installed and self.state is not None:
            try:
                self.state.refresh_codes()
            except Exception as exc:  # noqa: BLE001  # never break an import
                internal_error("scope monitor: AnyIO trio backend", exc)

    def _on_trio(self, _module: ModuleType) -> None:
        state = self.state
        if not self.installed or state is None:
            return
        try:
            run = sys.modules.get(_compat_anyio.TRIO_RUN_MODULE)
            scope_class = _compat_anyio.trio_class(run) if run is not None else None
            if scope_class is None:
                self.unavailable_reason = "trio's CancelScope has an unknown layout"
                logger.warning(
                    "taskscope: cancel-scope tracking unavailable for trio: "
                    "trio.CancelScope has an unknown layout"
                )
                return
            state.refresh_codes()
            self._wrap(scope_class)
        except Exception as exc:  # noqa: BLE001  # never break an import
            internal_error("scope monitor: wrapping trio", exc)

    def _wrap(self, scope_class: _compat_anyio.ScopeClass) -> None:
        state = self.state
        owner = scope_class.owner
        if state is None or owner in self._wrapped:
            return
        self._wrapped.add(owner)
        flavour = scope_class.flavour
        current_task = state.current_task[flavour]
        replace = self._patches.replace
        enter = getattr(owner, scope_class.enter)
        leave = getattr(owner, scope_class.exit)
        # trio's methods are KeyboardInterrupt-protected: so are their wrappers.
        protect = _compat_anyio.trio_ki_protect if flavour == "trio" else _same
        if scope_class.exit_style == "acm":
            replace(owner, scope_class.enter, make_aenter(state, enter, flavour, current_task))
            replace(owner, scope_class.exit, make_aexit(state, leave, current_task))
        else:
            replace(
                owner, scope_class.enter, protect(make_enter(state, enter, flavour, current_task))
            )
            if scope_class.exit_style == "cm":
                replace(owner, scope_class.exit, make_exit(state, leave, current_task))
            else:
                replace(owner, scope_class.exit, protect(make_close(state, leave, current_task)))
        if scope_class.cancel is not None:
            cancel = getattr(owner, scope_class.cancel)
            replace(owner, scope_class.cancel, protect(make_cancel(state, cancel, flavour)))

    # -- reading (slow path, any thread) ----------------------------------------------

    def snapshot(self) -> ScopesSection:
        """Return the ``scopes`` section: statistics, active scopes, stacks, errors."""
        if self.state is None:
            return empty_section("not installed", self.anyio_version)
        return section(self.state, self.unavailable_reason, self.anyio_version)

    def findings(self, snapshot: Any) -> list[Finding]:
        """Return a ``cancel-scope-cross-task``/``-misnested`` finding per scope error."""
        from ..analysis._scopes import scope_findings  # analysis imports us

        return scope_findings(snapshot) if isinstance(snapshot, ScopesSection) else []

    def end_of_program(self) -> None:
        """Nothing to settle: scopes still active are visible in the section."""

    # -- provenance (asked by the backends) -------------------------------------------

    def note_cancel_request(self, record: TaskRecord, frame: FrameType | None) -> bool:
        """A task is being cancelled, and `frame` is the code requesting it: if a scope
        is delivering the cancellation, write its cause into `record`; True if so."""
        state = self.state
        return state is not None and _scopes_cancel.note_cancel_request(state, record, frame)

    def note_task_cancelled(self, record: TaskRecord, task: Any) -> bool:
        """A task ended cancelled: if no cause is known yet beyond "a scope did it",
        find the cancelled scope around it and write its cause into `record`."""
        state = self.state
        return state is not None and _scopes_cancel.note_task_cancelled(state, record, task)

    def cancel_scope_of(self, record_id: int) -> ScopeRef | None:
        """Return the scope that delivered a task's cancellation, when known."""
        state = self.state
        entry = _scopes_cancel.delivering_entry(state, record_id) if state else None
        return scope_ref(state, entry) if state is not None and entry is not None else None


def _same(function: Any) -> Any:
    return function
