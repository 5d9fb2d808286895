"""Cancel scopes: every AnyIO/trio cancel scope, task group and asyncio timeout, who
entered and exited it where, who cancelled it and why, and which task it cancelled.

How it works (also in docs/cancel-scopes.md):

* **Hooks.** The scope *classes* are wrapped (``__enter__``/exit/cancel), never the
  instances: AnyIO's asyncio ``CancelScope``, ``trio.CancelScope`` (which AnyIO on trio
  and every nursery use; exit at ``_close``, cancellation at ``_cancel``), asyncio's
  ``Timeout`` and ``TaskGroup``. Each wrapper calls the original with the same arguments
  and returns or re-raises exactly what it did; the only opt-in change is an exception
  note (``exception_notes=True``) on the library's own cross-task/misnesting error.
* **Hot path.** Entry: one ``current_task()``, a bounded walk of ``sys._getframe()``
  keeping ``(code, line)`` pairs, a weak reference, two dict stores. Exit: two dict
  lookups, an identity check of the task, one dict update. Per-scope state lives in
  side tables keyed by ``id(scope)`` holding a weak reference (AnyIO's scopes have
  ``__slots__``; nothing is ever set on them).
* **Errors.** Before the original exit runs (and raises AnyIO's ``RuntimeError``), the
  wrapper compares the exiting task with the entering one and the scope with the top
  of the task's scope stack; a mismatch is recorded with both stacks and the owner.
* **Provenance.** A cancellation request (``cancel()``, deadline, group failure) is
  recorded by the cancel wrapper *before* the original delivers it; the backends ask
  `note_cancel_request`/`note_task_cancelled` which scope delivered a task's
  cancellation and get the request's cause, requester, line and reason.
"""

from __future__ import annotations

import itertools
import logging
import sys
import threading
import weakref
from collections import deque
from inspect import CO_ASYNC_GENERATOR
from typing import TYPE_CHECKING, Any, Final

from .._backends import _compat, _compat_anyio
from .._backends._patching import Patches
from .._core._faults import internal_error
from .._core._location import to_location
from .._core._records import TaskRef
from ._scopes_records import (
    SCOPE_KINDS,
    ScopeCancel,
    ScopeErrorInfo,
    ScopeInfo,
    ScopeRef,
    ScopesSection,
    ScopeStatistics,
    TaskCancellation,
    TaskScopeStack,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType, ModuleType

    from .._core._location import RawLocation
    from .._core._records import Finding, Location
    from .._core._registry import Registry, TaskRecord

logger = logging.getLogger("taskscope")

CROSS_TASK: Final = "cancel-scope-cross-task"
MISNESTED: Final = "cancel-scope-misnested"

# Counter slots of each kind's statistics list.
_ENTERED: Final = 0
_EXITED: Final = 1
_CANCELLED: Final = 2
_CAUGHT: Final = 3
_TIMED_OUT: Final = 4
_FAILED: Final = 5
_CROSS: Final = 6
_MISNESTED: Final = 7
_N_COUNTERS: Final = 8

#: Frames walked for an exit stack or a requester's line (cold paths only).
_LONG_STACK: Final = 32


class _Note:
    """A cancellation request to a scope (mutable, internal)."""

    __slots__ = ("at", "cause", "entry", "error", "location", "reason", "requester")

    def __init__(self, cause: str, at: float) -> None:
        self.cause = cause
        self.at = at
        self.requester: tuple[int, str] | None = None
        self.location: RawLocation | None = None
        self.reason: str | None = None
        self.error: str | None = None
        #: The scope's entry, once it is (or was) entered.
        self.entry: _Entry | None = None


class _Problem:
    """A cross-task or misnested exit (mutable until the original exit returns)."""

    __slots__ = (
        "at",
        "entry",
        "exited_by",
        "exited_stack",
        "innermost",
        "kind",
        "owner",
        "owner_name",
        "raised",
        "still_active",
    )

    def __init__(self, kind: str, entry: _Entry, at: float) -> None:
        self.kind = kind
        self.entry = entry
        self.at = at
        self.exited_by: tuple[int, str] | None = None
        self.exited_stack: list[RawLocation] = []
        self.owner = "unknown"
        self.owner_name: str | None = None
        self.innermost: _Entry | None = None
        self.raised: str | None = None
        self.still_active = False


class _Entry:
    """One entered scope (mutable, internal). Hot fields only are set on entry."""

    __slots__ = (
        "cancel",
        "caught",
        "counts",
        "entered",
        "exception",
        "exited",
        "flavour",
        "kind",
        "parent",
        "problem",
        "record",
        "ref",
        "shield",
        "sid",
        "stack",
        "task_key",
        "timeout",
    )

    def __init__(  # noqa: PLR0917  # positional on purpose: called once per scope
        self,
        sid: int,
        ref: weakref.ref[Any],
        flavour: str,
        kind: str,
        counts: list[int],
        task_key: int,
        record: TaskRecord | None,
        stack: list[RawLocation],
        entered: float,
        parent: _Entry | None,
    ) -> None:
        self.sid = sid
        self.ref = ref
        self.flavour = flavour
        self.kind = kind
        self.counts = counts
        self.task_key = task_key
        self.record = record
        self.stack = stack
        self.entered = entered
        #: The scope that was innermost in the same task when this one was entered.
        self.parent = parent
        self.cancel: _Note | None = None
        self.problem: _Problem | None = None
        self.exited: float | None = None
        self.exception: str | None = None
        self.caught = False
        self.timeout: float | None = None
        self.shield = False


def _is_cancellation(exc: BaseException | None) -> bool:
    """Return True for asyncio's/trio's cancellation, or a group of nothing else."""
    if exc is None:
        return False
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(inner) for inner in exc.exceptions)
    name = type(exc).__name__
    return name == "CancelledError" or (name == "Cancelled" and "trio" in type(exc).__module__)


_installed: ScopeMonitor | None = None
_install_lock = threading.Lock()


class ScopeMonitor:
    """Tracks cancel scopes, task groups and timeouts (report section ``scopes``).

    Args:
        exception_notes: add a note naming the entering task and line to the
            ``RuntimeError`` AnyIO (or trio) raises for a cross-task or misnested exit
            (the exception is otherwise never touched).
        stack_depth: at most this many frames kept per entered scope (its entry stack).
        context_frames: callers kept beyond the user's frame in an entry stack.
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
        context_frames: int = 1,
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
        self.stack_depth = stack_depth
        self.context_frames = max(0, context_frames)
        self.max_active = max_active
        self.registry: Registry | None = None
        self.installed = False
        self.unavailable_reason: str | None = None
        self.anyio_version: str | None = None
        self._patches = Patches()
        self._ids = itertools.count(1)
        #: Entered scopes by ``id(scope)``; each entry holds a weak reference.
        self._active: dict[int, _Entry] = {}
        #: Innermost entered scope by ``id(task)``; entries chain to their parents.
        self._tops: dict[int, _Entry] = {}
        #: Cancellation requests to scopes not entered yet, by ``id(scope)``.
        self._pending: dict[int, tuple[weakref.ref[Any], _Note]] = {}
        #: Statistics lists (see the ``_ENTERED``... slots) by scope kind.
        self._stats: dict[str, list[int]] = {kind: [0] * _N_COUNTERS for kind in SCOPE_KINDS}
        self._errors: deque[_Problem] = deque(maxlen=max_errors)
        self._recent: deque[_Entry] = deque(maxlen=max_recent)
        #: Cancellation provenance by task record id (insertion-ordered, bounded).
        self._task_notes: dict[int, tuple[str, _Note]] = {}
        self._max_task_notes = 10_000
        self.dropped = 0
        self._kind_codes: dict[CodeType, str] = {}
        self._cause_codes: dict[CodeType, str] = {}
        self._deliver_codes: dict[CodeType, str] = {}
        self._owner_codes: dict[CodeType, str] = {}
        #: Updated in place: AnyIO's trio backend is imported after trio itself.
        self._passthrough: set[CodeType] = set()
        self._current_task: dict[str, Any] = {}
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
        self.registry = registry
        self.installed = True
        self.anyio_version = _compat_anyio.anyio_version()
        self._owner_codes = _compat_anyio.exit_owner_codes()
        self._refresh_codes()
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
        self.installed = False
        self._patches.undo()
        self._wrapped.clear()

    def _refresh_codes(self) -> None:
        self._kind_codes.update(_compat_anyio.kind_codes())
        self._cause_codes.update(_compat_anyio.cancel_cause_codes())
        self._deliver_codes.update(_compat_anyio.deliver_codes())
        self._owner_codes.update(_compat_anyio.exit_owner_codes())
        self._passthrough.update(_compat_anyio.passthrough_codes())
        self._current_task.update(_compat_anyio.current_task_functions())

    def _on_anyio_asyncio(self, module: ModuleType) -> None:
        if not self.installed:
            return
        try:
            problem = _compat_anyio.anyio_problem(self.anyio_version, module)
            if problem is not None:
                self.unavailable_reason = problem
                logger.warning("taskscope: cancel-scope tracking unavailable: %s", problem)
                return
            scope_class = _compat_anyio.anyio_asyncio_class(module)
            if scope_class is not None:
                self._refresh_codes()
                self._wrap(scope_class)
        except Exception as exc:  # noqa: BLE001  # never break an import
            internal_error("scope monitor: wrapping AnyIO", exc)

    def _on_anyio_trio(self, _module: ModuleType) -> None:
        if self.installed:
            try:
                self._refresh_codes()
            except Exception as exc:  # noqa: BLE001  # never break an import
                internal_error("scope monitor: AnyIO trio backend", exc)

    def _on_trio(self, _module: ModuleType) -> None:
        if not self.installed:
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
            self._refresh_codes()
            self._wrap(scope_class)
        except Exception as exc:  # noqa: BLE001  # never break an import
            internal_error("scope monitor: wrapping trio", exc)

    def _wrap(self, scope_class: _compat_anyio.ScopeClass) -> None:
        owner = scope_class.owner
        if owner in self._wrapped:
            return
        self._wrapped.add(owner)
        flavour = scope_class.flavour
        current_task = self._current_task[flavour]
        replace = self._patches.replace
        enter = getattr(owner, scope_class.enter)
        leave = getattr(owner, scope_class.exit)
        if scope_class.exit_style == "acm":
            replace(owner, scope_class.enter, self._make_aenter(enter, flavour, current_task))
            replace(owner, scope_class.exit, self._make_aexit(leave, current_task))
        else:
            protect = _compat_anyio.trio_ki_protect if flavour == "trio" else _same
            replace(
                owner,
                scope_class.enter,
                protect(self._make_enter(enter, flavour, current_task)),
            )
            if scope_class.exit_style == "cm":
                replace(owner, scope_class.exit, self._make_exit(leave, current_task))
            else:
                replace(owner, scope_class.exit, protect(self._make_close(leave, current_task)))
        if scope_class.cancel is not None:
            cancel = getattr(owner, scope_class.cancel)
            wrapper = self._make_cancel(cancel, flavour)
            if flavour == "trio":
                wrapper = _compat_anyio.trio_ki_protect(wrapper)
            replace(owner, scope_class.cancel, wrapper)

    # -- the hot path: entering -----------------------------------------------------

    def _make_entered(  # noqa: PLR0915  # the hot path, one closure on purpose
        self, flavour: str, current_task: Any
    ) -> Callable[[Any, Any], None]:
        """Return the function recording that `scope` was just entered (hot path)."""
        registry = self.registry
        assert registry is not None  # install() sets it first
        active = self._active
        tops = self._tops
        live = registry.live
        clock = registry.clock
        pending = self._pending
        stats = self._stats
        kind_codes = self._kind_codes
        is_library = registry.locations.is_library
        depth = self.stack_depth
        context = self.context_frames
        #: Code -> "is a library frame", decided once per code object.
        libraries: dict[CodeType, bool] = {}
        #: The run loops' dispatch: what lies above did not enter the scope.
        stop_codes = _compat_anyio.run_loop_codes()
        #: Thin wrappers entering a scope for the caller (AnyIO's trio CancelScope).
        passthrough = self._passthrough
        new_id = self._ids.__next__
        make_ref = weakref.ref
        max_active = self.max_active
        fixed_kind = {
            "asyncio-timeout": "asyncio.timeout",
            "asyncio-taskgroup": "asyncio.TaskGroup",
        }
        kind_default = fixed_kind.get(flavour)
        scope_started = self._scope_started
        inf = float("inf")
        # AnyIO has just stored the entering task on the scope: cheaper than asking
        # asyncio again (``asyncio.current_task`` is Python code on 3.11).
        deadline_of = (
            _compat_anyio.anyio_deadline
            if flavour == "anyio-asyncio"
            else _compat_anyio.scope_deadline_or_inf
        )

        def ask_current_task(_scope: Any) -> Any:
            return current_task()

        task_of = _compat_anyio.anyio_host_task if flavour == "anyio-asyncio" else ask_current_task

        def entered(scope: Any, frame: FrameType | None) -> None:  # noqa: PLR0912  # hot path
            key = id(task_of(scope))
            # The entry stack, innermost first: up to the user's frame and `context`
            # callers beyond it (each f_back materializes a frame object: keep it short).
            stack: list[RawLocation] = []
            kind = kind_default
            extra = -1
            found = False
            #: Whether the first frame that is not a thin wrapper is library code.
            direct: bool | None = None
            while frame is not None:
                code = frame.f_code
                stack.append((code, frame.f_lineno))
                if extra >= 0:
                    extra -= 1
                    if extra < 0:
                        break
                else:
                    if kind is None:
                        kind = kind_codes.get(code)
                    library = libraries.get(code)
                    if library is None:
                        library = libraries[code] = is_library(code)
                    if direct is None and code not in passthrough:
                        direct = library
                    if not library:
                        found = True
                        extra = context - 1
                        if extra < 0:
                            break
                if len(stack) >= depth:
                    break
                frame = frame.f_back
                if frame is not None and frame.f_code in stop_codes:
                    break
            if (not found and kind != "task") or (kind is None and direct):
                # No user frame before the run loop: the runtime's own scope (trio's
                # system nursery, AnyIO's bookkeeping).
                kind = "internal"
            # Deadlines are read on the slow path, which a scope without one skips.
            slow = kind_default is not None or pending or deadline_of(scope) != inf
            if kind is None:
                kind = "cancel_scope"
            parent = tops.get(key)
            entry = _Entry(
                new_id(),
                make_ref(scope),
                flavour,
                kind,
                stats[kind],
                key,
                live.get(key),
                stack,
                clock(),
                parent,
            )
            active[id(scope)] = entry
            tops[key] = entry
            if slow:
                scope_started(entry, scope)
            entry.counts[_ENTERED] += 1
            if len(active) > max_active:
                self._prune()

        return entered

    def _scope_started(self, entry: _Entry, scope: Any) -> None:
        """Settle what the hot path left open: deadline, kind, an earlier cancel()."""
        deadline = _compat_anyio.scope_deadline(scope)
        if deadline is not None:
            now = _compat_anyio.loop_time()
            if now is not None:
                entry.timeout = deadline - now
            if entry.kind == "cancel_scope":
                entry.kind = "move_on_after"
        entry.shield = _compat_anyio.scope_shield(scope)
        entry.counts = self._stats[entry.kind]
        waiting = self._pending.pop(id(scope), None)
        if waiting is not None and waiting[0]() is scope:
            self._attach(entry, waiting[1])

    def _make_enter(
        self, original: Callable[[Any], Any], flavour: str, current_task: Any
    ) -> Callable[[Any], Any]:
        entered = self._make_entered(flavour, current_task)
        getframe = sys._getframe

        def enter(scope: Any) -> Any:
            result = original(scope)
            try:
                entered(scope, getframe(1))
            except Exception as exc:  # noqa: BLE001  # never raise into the program
                internal_error("scope monitor: enter", exc)
            return result

        return enter

    def _make_aenter(
        self, original: Callable[[Any], Any], flavour: str, current_task: Any
    ) -> Callable[[Any], Any]:
        entered = self._make_entered(flavour, current_task)
        getframe = sys._getframe

        async def aenter(scope: Any) -> Any:
            result = await original(scope)
            try:
                entered(scope, getframe(1))
            except Exception as exc:  # noqa: BLE001  # never raise into the program
                internal_error("scope monitor: enter", exc)
            return result

        return aenter

    # -- the hot path: exiting ------------------------------------------------------

    def _make_exit(self, original: Callable[..., bool], current_task: Any) -> Callable[..., bool]:
        is_active = _compat_anyio.anyio_scope_active
        active = self._active
        tops = self._tops
        check = self._check_exit
        settle = self._settle_exit
        getframe = sys._getframe
        note = self._add_note

        def exit_(scope: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> bool:
            # AnyIO itself refuses (raises) a cross-task or misnested exit, leaving the
            # scope active; so the check runs only then, still inside the exit (the
            # stack is the exiting one) and before the error reaches the program.
            entry = active.get(id(scope))
            try:
                result = original(scope, exc_type, exc_val, exc_tb)
            except BaseException as exc:
                if entry is not None:
                    try:
                        if entry.ref() is scope and is_active(scope):
                            check(entry, scope, id(current_task()), getframe(1))
                    except Exception as error:  # noqa: BLE001
                        internal_error("scope monitor: exit", error)
                    settle(entry, scope, exc_val, swallowed=False, raised=exc)
                    if entry.problem is not None and self.exception_notes:
                        note(exc, entry)
                raise
            if entry is not None:
                try:
                    key = entry.task_key
                    if (
                        exc_val is None
                        and entry.cancel is None
                        and tops.get(key) is entry
                        and entry.ref() is scope
                    ):
                        # The common case, inlined: a clean exit in the right order.
                        del active[id(scope)]
                        parent = entry.parent
                        if parent is None:
                            del tops[key]
                        else:
                            tops[key] = parent
                        entry.counts[_EXITED] += 1
                    elif entry.ref() is scope:
                        settle(entry, scope, exc_val, swallowed=bool(result), raised=None)
                except Exception as exc:  # noqa: BLE001
                    internal_error("scope monitor: exit", exc)
            return result

        return exit_

    def _make_close(
        self, original: Callable[[Any, Any], Any], current_task: Any
    ) -> Callable[[Any, Any], Any]:
        active = self._active
        tops = self._tops
        check = self._check_exit
        settle = self._settle_exit
        getframe = sys._getframe
        note = self._add_note

        def _close(scope: Any, exc: Any) -> Any:  # noqa: PLR0912  # hot path, inlined on purpose
            entry = active.get(id(scope))
            if entry is not None:
                try:
                    key = id(current_task())
                    if key != entry.task_key or tops.get(key) is not entry:
                        entry = check(entry, scope, key, getframe(1))
                except Exception as error:  # noqa: BLE001
                    internal_error("scope monitor: exit", error)
                    entry = None
            try:
                result = original(scope, exc)
            except BaseException as error:
                if entry is not None:
                    settle(entry, scope, exc, swallowed=False, raised=error)
                raise
            if entry is not None:
                try:
                    if (
                        exc is None
                        and result is None
                        and entry.cancel is None
                        and (entry.problem is None)
                    ):
                        del active[id(scope)]
                        key = entry.task_key
                        parent = entry.parent
                        if parent is None:
                            del tops[key]
                        else:
                            tops[key] = parent
                        entry.counts[_EXITED] += 1
                    else:
                        # trio returns its own misnesting error instead of raising it.
                        if result is not None and result is not exc and entry.problem:
                            entry.problem.raised = type(result).__qualname__
                            if self.exception_notes:
                                note(result, entry)
                        settle(entry, scope, exc, swallowed=result is None, raised=None)
                except Exception as error:  # noqa: BLE001
                    internal_error("scope monitor: exit", error)
            return result

        return _close

    def _make_aexit(self, original: Callable[..., Any], current_task: Any) -> Callable[..., Any]:
        active = self._active
        tops = self._tops
        check = self._check_exit
        settle = self._settle_exit
        getframe = sys._getframe

        async def aexit(scope: Any, exc_type: Any, exc_val: Any, exc_tb: Any) -> Any:
            entry = active.get(id(scope))
            if entry is not None:
                try:
                    key = id(current_task())
                    if key != entry.task_key or tops.get(key) is not entry:
                        entry = check(entry, scope, key, getframe(1))
                except Exception as exc:  # noqa: BLE001
                    internal_error("scope monitor: exit", exc)
                    entry = None
            try:
                result = await original(scope, exc_type, exc_val, exc_tb)
            except BaseException as exc:
                if entry is not None:
                    settle(entry, scope, exc_val, swallowed=False, raised=exc)
                raise
            if entry is not None:
                settle(entry, scope, exc_val, swallowed=bool(result), raised=None)
            return result

        return aexit

    # -- exits: the slow path -------------------------------------------------------

    def _check_exit(
        self, entry: _Entry, scope: Any, key: int, frame: FrameType | None
    ) -> _Entry | None:
        """An exit in another task or out of order: record it before the original runs."""
        if entry.ref() is not scope:
            return None  # a stale entry of a collected scope whose id was reused
        registry = self.registry
        assert registry is not None
        problem = _Problem(
            CROSS_TASK if key != entry.task_key else MISNESTED, entry, registry.clock()
        )
        record = registry.live.get(key)
        if record is not None:
            problem.exited_by = (record.id, record.current_name())
        problem.exited_stack = registry.locations.stack(frame, limit=_LONG_STACK)
        if problem.kind == MISNESTED:
            problem.innermost = self._tops.get(key)
        problem.owner, problem.owner_name = self._owner(entry, problem.exited_stack, key)
        entry.problem = problem
        entry.counts[_CROSS if problem.kind == CROSS_TASK else _MISNESTED] += 1
        self._errors.append(problem)
        return entry

    def _owner(
        self, entry: _Entry, exited_stack: list[RawLocation], task_key: int
    ) -> tuple[str, str | None]:
        """Tell who owned a scope from the stacks at entry and at exit."""
        owner_codes = self._owner_codes
        is_library = self._is_library
        both = exited_stack + entry.stack
        labels = {owner_codes[code] for code, _ in both if code in owner_codes}
        generator = next(
            (
                code
                for code, _ in both
                if code.co_flags & CO_ASYNC_GENERATOR and not is_library(code)
            ),
            None,
        )
        generator_name = generator.co_qualname if generator is not None else None
        task = self._task_of(task_key)
        if "asyncgen_finalizer" in labels or (
            generator is not None and _compat_anyio.task_runs_asyncgen_close(task)
        ):
            return "asyncgen_finalizer", generator_name
        if "exit_stack" in labels:
            return "exit_stack", self._context_manager_name(both)
        if "asynccontextmanager" in labels:
            return "asynccontextmanager", generator_name
        if generator is not None:
            return "asyncgen", generator_name
        name = self._context_manager_name(both)
        if name is not None:
            return "context_manager", name
        return "unknown", None

    def _context_manager_name(self, frames: list[RawLocation]) -> str | None:
        for code, _ in frames:
            if code.co_name in {"__aexit__", "__exit__", "__aenter__", "__enter__", "aclose"} and (
                not self._is_library(code)
            ):
                return code.co_qualname.rsplit(".", 1)[0]
        return None

    def _is_library(self, code: CodeType) -> bool:
        registry = self.registry
        return registry is not None and registry.locations.is_library(code)

    def _task_of(self, key: int) -> Any:
        registry = self.registry
        record = registry.live.get(key) if registry is not None else None
        return record.task() if record is not None else None

    def _settle_exit(  # noqa: PLR0912  # one place accounts every kind of exit
        self,
        entry: _Entry,
        scope: Any,
        exc_in: BaseException | None,
        *,
        swallowed: bool,
        raised: BaseException | None,
    ) -> None:
        """Account an exit that was not the plain, clean one."""
        try:
            problem = entry.problem
            if raised is not None and problem is not None and problem.raised is None:
                problem.raised = type(raised).__qualname__
            if _compat_anyio.scope_is_active(entry.flavour, scope):
                # The library refused the exit (AnyIO's cross-task/misnesting error):
                # the scope stays entered, in the task that entered it.
                if problem is not None:
                    problem.still_active = True
                return
            if problem is not None:
                problem.still_active = False
            self._forget(entry, scope)
            registry = self.registry
            assert registry is not None
            entry.exited = registry.clock()
            counts = entry.counts
            counts[_EXITED] += 1
            leaving = raised if raised is not None else (None if swallowed else exc_in)
            if leaving is not None:
                entry.exception = type(leaving).__qualname__
                if not _is_cancellation(leaving) and not (
                    entry.kind == "asyncio.timeout"
                    and entry.cancel is not None
                    and isinstance(leaving, TimeoutError)
                ):
                    counts[_FAILED] += 1
            if entry.cancel is not None:
                counts[_CANCELLED] += 1
                if entry.cancel.cause == "timeout":
                    counts[_TIMED_OUT] += 1
                if entry.flavour in {"anyio-asyncio", "trio"}:
                    entry.caught = _compat_anyio.scope_cancelled_caught(scope)
                else:
                    entry.caught = entry.kind == "asyncio.timeout"
                if entry.caught:
                    counts[_CAUGHT] += 1
            if entry.cancel is not None or entry.exception is not None or problem is not None:
                self._recent.append(entry)
        except Exception as exc:  # noqa: BLE001
            internal_error("scope monitor: exit accounting", exc)

    def _forget(self, entry: _Entry, scope: Any) -> None:
        """Remove an exited scope from the side tables and its task's scope stack."""
        if self._active.get(id(scope)) is entry:
            del self._active[id(scope)]
        key = entry.task_key
        top = self._tops.get(key)
        if top is entry:
            if entry.parent is None:
                del self._tops[key]
            else:
                self._tops[key] = entry.parent
            return
        # Out of order: splice it out of the chain.
        child = top
        while child is not None and child.parent is not entry:
            child = child.parent
        if child is not None:
            child.parent = entry.parent

    def _prune(self) -> None:
        """Drop entries whose scope was collected without exiting (abandoned)."""
        for key, entry in list(self._active.items()):
            if entry.ref() is None:
                self._active.pop(key, None)
                self.dropped += 1
        for key, top in list(self._tops.items()):
            alive: _Entry | None = top
            while alive is not None and alive.ref() is None:
                alive = alive.parent
            if alive is None:
                self._tops.pop(key, None)
            elif alive is not top:
                self._tops[key] = alive

    def _add_note(self, exc: BaseException, entry: _Entry) -> None:
        """The opt-in: say where the scope was entered, as a note on the library's error."""
        try:
            where = to_location(self._user_raw(entry.stack))
            task = entry.record
            who = f"task {task.current_name()!r}" if task is not None else "another task"
            exc.add_note(
                f"taskscope: this {entry.kind.replace('_', ' ')} was entered in {who}"
                + (f" at {where}" if where is not None else "")
            )
        except Exception as error:  # noqa: BLE001
            internal_error("scope monitor: exception note", error)

    # -- cancellation requests ------------------------------------------------------

    def _make_cancel(self, original: Callable[..., Any], flavour: str) -> Callable[..., Any]:
        requested = self._cancel_requested
        getframe = sys._getframe

        def cancel(scope: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                requested(scope, flavour, args, kwargs, getframe(1))
            except Exception as exc:  # noqa: BLE001
                internal_error("scope monitor: cancel", exc)
            return original(scope, *args, **kwargs)

        cancel.__name__ = getattr(original, "__name__", "cancel")
        return cancel

    def _cancel_requested(
        self,
        scope: Any,
        flavour: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        frame: FrameType | None,
    ) -> None:
        """Record the first cancellation request of a scope, before it is delivered."""
        entry = self._active.get(id(scope))
        if entry is not None and entry.ref() is not scope:
            entry = None
        if entry is not None and entry.cancel is not None:
            return
        if flavour in {"anyio-asyncio", "trio"} and _compat_anyio.scope_cancel_called(scope):
            return
        registry = self.registry
        assert registry is not None
        note = _Note("cancel-call", registry.elapsed(registry.clock()))
        argument = args[0] if args else kwargs.get("reason")
        if flavour == "trio":
            source, source_task, reason = _compat_anyio.trio_cancel_reason(argument)
            self._trio_cause(note, source, source_task, reason, frame)
        elif flavour == "asyncio-timeout":
            note.cause = "timeout"
        else:
            if isinstance(argument, str):
                note.reason = argument
            self._cause_from_stack(note, frame)
        if note.cause == "cancel-call":
            self._requester(note, frame)
        if entry is not None:
            self._attach(entry, note)
        else:
            if len(self._pending) > self.max_active:
                self._pending.clear()
            self._pending[id(scope)] = (weakref.ref(scope), note)

    def _attach(self, entry: _Entry, note: _Note) -> None:
        entry.cancel = note
        note.entry = entry

    def _requester(self, note: _Note, frame: FrameType | None) -> None:
        registry = self.registry
        assert registry is not None
        note.location = registry.locations.user_frame(frame)
        task = self._current()
        record = registry.live.get(id(task)) if task is not None else None
        if record is not None:
            note.requester = (record.id, record.current_name())

    def _current(self) -> Any:
        for flavour in ("anyio-asyncio", "trio"):
            function = self._current_task.get(flavour)
            if function is None:
                continue
            try:
                task = function()
            except RuntimeError:
                continue
            if task is not None:
                return task
        return None

    def _cause_from_stack(self, note: _Note, frame: FrameType | None) -> None:
        """Name the cause from the library code asking for the cancellation."""
        cause_codes = self._cause_codes
        depth = 0
        while frame is not None and depth < 8:
            cause = cause_codes.get(frame.f_code)
            if cause is not None:
                note.cause = cause
                f_locals = frame.f_locals
                if cause == "sibling-failure":
                    for name in _compat_anyio.FAILED_TASK_LOCALS:
                        failed = f_locals.get(name)
                        if failed is not None:
                            self._failed_task(note, failed)
                            break
                elif cause == "task-group-error":
                    error = next(
                        (
                            f_locals.get(name)
                            for name in _compat_anyio.BODY_ERROR_LOCALS
                            if f_locals.get(name) is not None
                        ),
                        None,
                    )
                    if not isinstance(error, BaseException) or _is_cancellation(error):
                        note.cause = "outer-cancel"
                    else:
                        note.error = type(error).__qualname__
                return
            frame = frame.f_back
            depth += 1

    def _failed_task(self, note: _Note, task: Any) -> None:
        registry = self.registry
        assert registry is not None
        record = registry.live.get(id(task)) or self._recent_record(id(task))
        if record is not None:
            note.requester = (record.id, record.current_name())
        error = _compat.task_exception(task)
        if error is not None:
            note.error = type(error).__qualname__
        elif record is not None and record.exception is not None:
            note.error = record.exception[0]

    def _recent_record(self, key: int) -> TaskRecord | None:
        """Find a just-finished task's record (cancellations follow failures closely)."""
        registry = self.registry
        if registry is None:
            return None
        for record in reversed(list(itertools.islice(reversed(registry.history), 64))):
            if record.owner_key == key:
                return record
        return None

    def _trio_cause(
        self,
        note: _Note,
        source: str | None,
        source_task: str | None,
        reason: str | None,
        frame: FrameType | None,
    ) -> None:
        causes = {
            "deadline": "timeout",
            "nursery": "sibling-failure",
            "shutdown": "shutdown",
            "KeyboardInterrupt": "keyboard-interrupt",
        }
        note.cause = causes.get(source or "", "cancel-call")
        if source == "explicit":
            note.reason = reason
        elif source == "nursery":
            if reason is not None and reason.startswith("child task raised exception "):
                note.error = reason.removeprefix("child task raised exception ").split("(")[0]
            key = _trio_task_key(source_task)
            record = None
            if key is not None:
                registry = self.registry
                record = (registry.live.get(key) if registry else None) or self._recent_record(key)
            if record is not None:
                note.requester = (record.id, record.current_name())
        elif source == "deadline":
            pass
        elif note.cause == "cancel-call":
            note.reason = reason
        del frame

    # -- provenance hooks (called by the backends) ------------------------------------

    def note_cancel_request(self, record: TaskRecord, frame: FrameType | None) -> bool:
        """A task is being cancelled, and `frame` is the code requesting it: if a scope
        is delivering the cancellation, write its cause into `record`; True if so."""
        deliver = self._deliver_codes
        depth = 0
        while frame is not None and depth < 12:
            name = deliver.get(frame.f_code)
            if name is not None:
                scope = frame.f_locals.get(name)
                return scope is not None and self._apply(record, scope, None)
            frame = frame.f_back
            depth += 1
        return False

    def note_task_cancelled(self, record: TaskRecord, task: Any) -> bool:
        """A task ended cancelled: if no cause is known yet beyond "a scope did it",
        find the cancelled scope around it and write its cause into `record`."""
        if record.id in self._task_notes:
            return True
        if record.cancel_cause not in {None, "unknown", "cancel-scope", "timeout"}:
            return False
        if type(task).__module__.startswith("trio"):
            scopes = _compat_anyio.trio_task_cancel_scopes(task)
        else:
            scopes = _compat_anyio.anyio_task_cancel_scopes(task)
        for scope in scopes:
            if _compat_anyio.scope_cancel_called(scope):
                return self._apply(record, scope, None)
        return False

    def _apply(self, record: TaskRecord, scope: Any, note: _Note | None) -> bool:
        if note is None:
            entry = self._active.get(id(scope))
            if entry is not None and entry.ref() is scope:
                note = entry.cancel
            if note is None:
                waiting = self._pending.get(id(scope))
                if waiting is not None and waiting[0]() is scope:
                    note = waiting[1]
            if note is None:
                return False
        record.cancel_cause = note.cause
        record.cancel_requester = note.requester if note.requester != (record.id, "") else None
        if note.requester is not None and note.requester[0] == record.id:
            record.cancel_requester = None
        record.cancel_location = note.location
        if note.location is None and note.entry is not None:
            record.cancel_location = self._user_raw(note.entry.stack)
        record.cancel_message = note.reason
        notes = self._task_notes
        notes[record.id] = (record.current_name(), note)
        if len(notes) > self._max_task_notes:
            del notes[next(iter(notes))]
            self.dropped += 1
        return True

    def cancel_scope_of(self, record_id: int) -> ScopeRef | None:
        """Return the scope that delivered a task's cancellation, when known."""
        found = self._task_notes.get(record_id)
        if found is None or found[1].entry is None:
            return None
        return self._scope_ref(found[1].entry)

    # -- reading (slow path, any thread) ----------------------------------------------

    def _user_raw(self, stack: list[RawLocation]) -> RawLocation | None:
        for code, line in stack:
            if not self._is_library(code):
                return code, line
        return None

    def _locations(self, stack: list[RawLocation]) -> tuple[Location, ...]:
        return tuple(loc for loc in (to_location(raw) for raw in stack) if loc is not None)

    def _task_ref(self, record: TaskRecord | None) -> TaskRef | None:
        return TaskRef(id=record.id, name=record.current_name()) if record is not None else None

    def _scope_ref(self, entry: _Entry) -> ScopeRef:
        return ScopeRef(
            id=entry.sid, kind=entry.kind, entered_at=to_location(self._user_raw(entry.stack))
        )

    def _cancel_info(self, note: _Note | None) -> ScopeCancel | None:
        if note is None:
            return None
        location = note.location
        if location is None and note.entry is not None and note.cause == "timeout":
            location = self._user_raw(note.entry.stack)
        return ScopeCancel(
            cause=note.cause,
            requested_by=_ref(note.requester),
            location=to_location(location),
            reason=note.reason,
            error=note.error,
            at=note.at,
        )

    def _scope_info(self, entry: _Entry) -> ScopeInfo:
        registry = self.registry
        assert registry is not None
        return ScopeInfo(
            id=entry.sid,
            kind=entry.kind,
            flavour=entry.flavour,
            task=self._task_ref(entry.record),
            entered_at=to_location(self._user_raw(entry.stack)),
            stack=self._locations(entry.stack),
            entered=registry.elapsed(entry.entered),
            exited=registry.elapsed(entry.exited) if entry.exited is not None else None,
            timeout=entry.timeout,
            shield=entry.shield,
            state="active" if entry.exited is None else "exited",
            cancel=self._cancel_info(entry.cancel),
            cancelled_caught=entry.caught,
            exception=entry.exception,
        )

    def _error_info(self, problem: _Problem) -> ScopeErrorInfo:
        registry = self.registry
        assert registry is not None
        innermost = problem.innermost
        return ScopeErrorInfo(
            kind=problem.kind,
            scope=self._scope_info(problem.entry),
            exited_by=_ref(problem.exited_by),
            exited_at=to_location(self._user_raw(problem.exited_stack)),
            exited_stack=self._locations(problem.exited_stack),
            owner=problem.owner,
            owner_name=problem.owner_name,
            innermost=self._scope_ref(innermost) if innermost is not None else None,
            still_active=problem.still_active,
            raised=problem.raised,
            at=registry.elapsed(problem.at),
        )

    def statistics(self) -> tuple[ScopeStatistics, dict[str, ScopeStatistics]]:
        """Return the totals and the per-kind statistics."""
        active_by_kind: dict[str, int] = {}
        for entry in list(self._active.values()):
            active_by_kind[entry.kind] = active_by_kind.get(entry.kind, 0) + 1
        by_kind = {
            kind: _statistics(list(counts), active_by_kind.get(kind, 0))
            for kind, counts in self._stats.items()
            if counts[_ENTERED]
        }
        totals = [0] * _N_COUNTERS
        for counts in list(self._stats.values()):
            for index, value in enumerate(list(counts)):
                totals[index] += value
        return _statistics(totals, sum(active_by_kind.values())), by_kind

    def snapshot(self) -> ScopesSection:
        """Return the ``scopes`` section: statistics, active scopes, stacks, errors."""
        statistics, by_kind = self.statistics()
        if self.registry is None:
            return ScopesSection(
                available=False,
                unavailable_reason="not installed",
                anyio_version=self.anyio_version,
                statistics=statistics,
                by_kind=by_kind,
                active=(),
                task_stacks=(),
                errors=(),
                recent=(),
                cancellations=(),
            )
        entries = sorted(
            (entry for entry in list(self._active.values()) if entry.ref() is not None),
            key=lambda entry: entry.sid,
        )
        stacks = []
        for top in list(self._tops.values()):
            chain: list[int] = []
            entry: _Entry | None = top
            while entry is not None and len(chain) < 1_000:
                chain.append(entry.sid)
                entry = entry.parent
            stacks.append(
                TaskScopeStack(task=self._task_ref(top.record), scopes=tuple(reversed(chain)))
            )
        cancellations = []
        for record_id, (name, note) in list(self._task_notes.items()):
            entry = note.entry
            info = self._cancel_info(note)
            assert info is not None
            cancellations.append(
                TaskCancellation(
                    task=TaskRef(id=record_id, name=name),
                    cause=note.cause,
                    scope=self._scope_ref(entry) if entry is not None else None,
                    requested_by=info.requested_by,
                    location=info.location
                    if info.location is not None or entry is None
                    else to_location(self._user_raw(entry.stack)),
                    reason=note.reason,
                    error=note.error,
                )
            )
        return ScopesSection(
            available=self.unavailable_reason is None,
            unavailable_reason=self.unavailable_reason,
            anyio_version=self.anyio_version,
            statistics=statistics,
            by_kind=by_kind,
            active=tuple(self._scope_info(entry) for entry in entries),
            task_stacks=tuple(stacks),
            errors=tuple(self._error_info(problem) for problem in list(self._errors)),
            recent=tuple(self._scope_info(entry) for entry in list(self._recent)),
            cancellations=tuple(cancellations),
            dropped=self.dropped,
        )

    def findings(self, snapshot: Any) -> list[Finding]:
        """Return a ``cancel-scope-cross-task``/``-misnested`` finding per scope error."""
        from ..analysis._scopes import scope_findings  # analysis imports us

        return scope_findings(snapshot) if isinstance(snapshot, ScopesSection) else []

    def end_of_program(self) -> None:
        """Nothing to settle: scopes still active are visible in the section."""


def _ref(pair: tuple[int, str] | None) -> TaskRef | None:
    return TaskRef(id=pair[0], name=pair[1]) if pair is not None else None


def _same(function: Any) -> Any:
    return function


def _statistics(counts: list[int], active: int) -> ScopeStatistics:
    errors = counts[_CROSS] + counts[_MISNESTED]
    entered = counts[_ENTERED]
    return ScopeStatistics(
        entered=entered,
        exited=counts[_EXITED],
        active=active,
        cancelled=counts[_CANCELLED],
        cancelled_caught=counts[_CAUGHT],
        timed_out=counts[_TIMED_OUT],
        failed=counts[_FAILED],
        cross_task=counts[_CROSS],
        misnested=counts[_MISNESTED],
        errors=errors,
        error_rate=errors / entered if entered else 0.0,
    )


def _trio_task_key(source_task: str | None) -> int | None:
    """Read ``id(task)`` back from trio's ``repr(task)`` (``<Task 'name' at 0x...>``)."""
    if source_task is None or " at 0x" not in source_task:
        return None
    try:
        return int(source_task.rsplit(" at 0x", 1)[1].rstrip(">"), 16)
    except ValueError:
        return None


# -- module-level hooks for the backends ------------------------------------------------


def installed_monitor() -> ScopeMonitor | None:
    """Return the installed `ScopeMonitor`, if any."""
    return _installed


def note_cancel_request(record: TaskRecord, frame: FrameType | None) -> bool:
    """Backend hook: see `ScopeMonitor.note_cancel_request` (no-op when not installed)."""
    monitor = _installed
    if monitor is None:
        return False
    try:
        return monitor.note_cancel_request(record, frame)
    except Exception as exc:  # noqa: BLE001  # never raise into the backend
        internal_error("scope monitor: cancel provenance", exc)
        return False


def note_task_cancelled(record: TaskRecord, task: Any) -> bool:
    """Backend hook: see `ScopeMonitor.note_task_cancelled` (no-op when not installed)."""
    monitor = _installed
    if monitor is None:
        return False
    try:
        return monitor.note_task_cancelled(record, task)
    except Exception as exc:  # noqa: BLE001  # never raise into the backend
        internal_error("scope monitor: cancel provenance", exc)
        return False


def cancel_scope_of(record_id: int) -> ScopeRef | None:
    """Snapshot hook: the scope that delivered a task's cancellation, when known."""
    monitor = _installed
    return monitor.cancel_scope_of(record_id) if monitor is not None else None
