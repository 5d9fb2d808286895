"""The trio backend: records every task of trio programs and of AnyIO on trio.

How each figure is measured (also in docs/backends.md):

* **Getting in.** trio creates each run's ``Runner`` in ``trio._core._run.setup_runner``,
  a module global that ``trio.run``, ``trio.lowlevel.start_guest_run`` (and so
  ``anyio.run(backend="trio")`` and pytest-trio) look up at call time; it is wrapped to
  add one `trio.abc.Instrument` to every new run, however ``run`` was imported. When
  taskscope is installed inside a running run, the instrument is added to it with
  ``trio.lowlevel.add_instrument`` and the tasks already alive are adopted.
* **Creation.** ``task_spawned`` is called synchronously inside ``spawn_impl``, so the
  stack leads through trio's (and AnyIO's) internals to the user's ``start_soon`` /
  ``start`` line; the parent is the task running at that moment.
* **Steps and busy time.** ``before_task_step``/``after_task_step`` bracket each step;
  ``busy`` is the sum of their clock differences. A task's last step ends inside the
  run loop's ``task_exited``, before ``after_task_step``, so it is closed there.
* **Endings.** The ``task_exited`` hook does not receive the outcome, so
  ``Runner.task_exited(task, outcome)`` is wrapped on the class: ``Value`` is completed,
  ``Cancelled`` (or a group of only ``Cancelled``) is cancelled, any other error failed.
  trio always delivers a task's exception to its nursery, so on trio a failed task's
  exception is never "unretrieved".
"""

from __future__ import annotations

import sys
import weakref
from types import CodeType
from typing import TYPE_CHECKING, Any, Final

import trio
from outcome import Value

from .._core._accel import trio_speedups as _trio_speedups
from .._core._exceptions import is_cancellation
from .._core._faults import internal_error
from .._core._provenance import task_cancelled
from .._core._registry import CANCELLED, COMPLETED, FAILED, Registry, TaskRecord
from . import _compat
from ._patching import Patches

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._core._instruments import Instruments
    from .._core._location import LocationFilter, RawLocation


class TrioTaskRecord(TaskRecord):
    """A record of a trio task."""

    __slots__ = ()
    backend = "trio"

    @staticmethod
    def name_of(task: Any) -> str:
        """Read the task's current name."""
        name: str = task.name
        return name


def _code_of(coro: Any) -> CodeType | None:
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    return code if isinstance(code, CodeType) else None


def _qualname(coro: Any) -> str:
    return str(getattr(coro, "__qualname__", type(coro).__qualname__))


def _first_cancelled(exc: BaseException) -> BaseException:
    """Return the first ``Cancelled`` of a (possibly grouped) cancellation."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


# Frame kinds for `TrioBackend.user_frame`.
_USER: Final = 0
_LIBRARY: Final = 1
_ENTRY: Final = 2

#: ``Cancelled.source`` -> taskscope's cancellation cause (``explicit``: a scope's
#: ``cancel()``, which the scope monitor, when on, explains further).
_CANCEL_CAUSES: Final = {
    "deadline": "timeout",
    "shutdown": "shutdown",
    "nursery": "sibling-failure",
    "KeyboardInterrupt": "keyboard-interrupt",
}


class _TaskInstrument(trio.abc.Instrument):
    """The instrument added to every trio run; each hook is O(1) and never raises.

    trio would disable an instrument that raises; catching here instead keeps the
    other hooks (and the other tasks' records) working after one bad event.
    """

    __slots__ = ("_backend", "_clock", "_end_step", "_instruments", "_live")

    def __init__(self, backend: TrioBackend) -> None:
        self._backend: TrioBackend | None = backend
        self._live = backend.registry.live
        self._clock = backend.registry.clock
        self._instruments = backend.instruments
        self._end_step = backend.end_step

    def disable(self) -> None:
        """Turn every hook into a no-op (for runners taskscope cannot reach any more)."""
        self._backend = None
        self._live = {}

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        """Record a new task and the user's line that spawned it."""
        backend = self._backend
        if backend is None:
            return
        try:
            backend.track(task, sys._getframe(1))
        except Exception as exc:  # noqa: BLE001  # never raise into the run loop
            internal_error("trio backend: task_spawned", exc)

    def _note_scheduled(self, task: trio.lowlevel.Task) -> None:
        """Note that a task became ready to run, and whether it had waited.

        Called from the wrapped ``Runner.reschedule`` (cheaper than trio's instrument
        dispatch, which costs microseconds per call); the degraded instrument, which
        cannot wrap the runner, takes it as its ``task_scheduled`` hook.
        """
        record = self._live.get(id(task))
        if record is not None:
            try:
                if not record.step_start:
                    # Woken from outside its own step: it waited for something. A
                    # checkpoint reschedules the task inside its step (before
                    # after_task_step), which is not a wait (spinning).
                    record.waited_at = record.steps
                record.scheduled_at = self._clock()
            except Exception as exc:  # noqa: BLE001  # a broken injected clock
                internal_error("trio backend: task_scheduled", exc)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        """Start timing a step."""
        record = self._live.get(id(task))
        if record is not None:
            try:
                if "before_task_step" in self._instruments:
                    self._instruments.call("before_task_step", record.id)
                start = record.step_start = self._clock()
                scheduled_at = record.scheduled_at
                if scheduled_at:
                    record.scheduled += start - scheduled_at
                    record.scheduled_at = 0.0
            except Exception as exc:  # noqa: BLE001  # a broken injected clock
                internal_error("trio backend: before_task_step", exc)

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        """Account the step that just ran (a finished task was accounted on exit)."""
        record = self._live.get(id(task))
        if record is not None and record.step_start:
            try:
                # `TrioBackend.end_step`, inlined for the common case: not the first
                # step, not the longest, nobody listening.
                start = record.step_start
                duration = self._clock() - start
                if (
                    duration > record.longest_step
                    or record.first_step is None
                    or "after_task_step" in self._instruments
                ):
                    self._end_step(record, task)
                else:
                    record.step_start = 0.0
                    record.busy += duration
                    record.steps += 1
            except Exception as exc:  # noqa: BLE001  # never raise into the run loop
                internal_error("trio backend: after_task_step", exc)


class _TaskInstrumentWithoutOutcome(_TaskInstrument):
    """The degraded instrument, used when ``Runner.task_exited`` cannot be wrapped:
    endings come from the public hook, without the outcome (recorded as completed)."""

    __slots__ = ()

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        """Note that a task became ready to run (no runner wrapper in this mode)."""
        self._note_scheduled(task)

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        """Record that a task ended, outcome unknown."""
        backend = self._backend
        if backend is not None:
            record = backend.registry.live.get(id(task))
            if record is not None:
                backend.finish(record, task, None, outcome_known=False)


class TrioBackend:
    """Adds a `trio.abc.Instrument` to every trio run; `uninstall` restores trio exactly."""

    def __init__(
        self, registry: Registry, instruments: Instruments, locations: LocationFilter
    ) -> None:
        self.registry = registry
        self.instruments = instruments
        self.locations = locations
        self._patches = Patches()
        self._runners: weakref.WeakSet[Any] = weakref.WeakSet()
        #: The C hooks (``_trio_speedups.Hooks``), None on the pure-Python path.
        self._hooks: Any = None
        #: Runner -> the ``Dispatch`` set as its instruments' ``call`` (C path only).
        self._dispatches: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        #: ``id()`` of trio's own task coroutines' code (code objects of a module that
        #: stays imported, so the ids stay theirs); ids because hashing a code object
        #: hashes its bytecode, once per task here.
        self._machinery: frozenset[int] = frozenset()
        self._direct_codes: frozenset[CodeType] = frozenset()
        #: ``id()`` of a code object -> frame kind (user, library, run-loop entry),
        #: decided once; `_kind_codes` keeps those codes alive so no id is reused.
        self._frame_kinds: dict[int, int] = {}
        self._kind_codes: list[CodeType] = []
        #: trio's thread-local run context (its ``task`` is the running task).
        self._run_context: Any = None
        self.instrument: _TaskInstrument = _TaskInstrument(self)

    # -- install / uninstall --------------------------------------------------------

    def install(self) -> None:
        """Hook every future trio run, and the one running on this thread if any."""
        module = _compat.trio_run_module()
        if module is None:
            internal_error(
                "trio backend: trio._core._run.setup_runner not found",
                RuntimeError(f"trio {trio.__version__} is not supported; tasks are not recorded"),
            )
            return
        self._machinery = frozenset(map(id, _compat.trio_machinery_codes(module)))
        entry_codes, self._direct_codes = _compat.trio_run_loop_codes(module)
        self._kind_codes.extend(entry_codes)
        self._frame_kinds.update(dict.fromkeys(map(id, entry_codes), _ENTRY))
        self._run_context = _compat.trio_run_context()
        runner_class = _compat.trio_runner_class(module)
        self._hooks = self._make_hooks()
        if runner_class is None:
            internal_error(
                "trio backend: Runner.task_exited not found",
                RuntimeError("task outcomes are unavailable; trio tasks are recorded completed"),
            )
            self.instrument = _TaskInstrumentWithoutOutcome(self)
        else:
            original = getattr(runner_class, _compat.TRIO_TASK_EXITED)
            self._patches.replace(
                runner_class, _compat.TRIO_TASK_EXITED, self._make_task_exited(original)
            )
            reschedule = getattr(runner_class, _compat.TRIO_RESCHEDULE, None)
            if reschedule is not None:
                self._patches.replace(
                    runner_class, _compat.TRIO_RESCHEDULE, self._make_reschedule(reschedule)
                )
        self._patches.replace(
            module,
            _compat.TRIO_SETUP_RUNNER,
            self._make_setup_runner(getattr(module, _compat.TRIO_SETUP_RUNNER)),
        )
        runner = _compat.trio_current_runner()
        if runner is not None:
            self._attach(runner)
            self._adopt_running_tasks()

    def uninstall(self) -> None:
        """Restore trio and take the instrument out of the runs it was added to.

        A run on another thread cannot be changed safely from here (trio reads its
        instruments without a lock), so there the instrument stays, disabled.
        Tasks still alive stay recorded as pending, detached: their ending is no longer
        seen, so their disappearance must not read as "destroyed while pending".
        """
        self._patches.undo()
        # Dictionary operations, atomic under the GIL: safe for runs on other threads.
        for runner, dispatch in list(self._dispatches.items()):
            _compat.trio_restore_instruments_call(runner, dispatch)
        self._dispatches = weakref.WeakKeyDictionary()
        current = _compat.trio_current_runner()
        if current is not None and current in self._runners:
            _compat.trio_remove_instrument(current, self.instrument)
        self.instrument.disable()
        if self._hooks is not None:
            self._hooks.disable()
        self._runners = weakref.WeakSet()
        for record in list(self.registry.live.values()):
            if record.backend == "trio":
                if record.step_start:
                    task = record.task()
                    if task is not None:
                        self.end_step(record, task)
                    record.step_start = 0.0
                record.current_name()
                self.registry.drop_ref(record)

    def _make_hooks(self) -> Any:
        """Return the C hooks, or None for the pure-Python path (not built, forced, or
        a record type whose fields the C code cannot reach)."""
        if _trio_speedups is None:
            return None
        registry = self.registry
        try:
            return _trio_speedups.Hooks(
                live=registry.live,
                clock=registry.clock,
                instruments=self.instruments,
                track=self.track,
                end_step=self.end_step,
                finish=self.finish,
                on_error=internal_error,
                record_type=TrioTaskRecord,
                kinds=self._frame_kinds,
                classify=self._classify,
                machinery=self._machinery,
                direct_codes=self._direct_codes,
                run_context=self._run_context,
                new_record=registry.new_record,
                task_finished=registry.task_finished,
                value_type=Value,
                completed=COMPLETED,
            )
        except Exception as exc:  # noqa: BLE001  # the pure-Python path still works
            internal_error("trio backend: C hooks", exc)
            return None

    def _attach(self, runner: Any) -> None:
        try:
            if _compat.trio_add_instrument(runner, self.instrument):
                self._runners.add(runner)
                if self._hooks is not None:
                    self._accelerate(runner)
            else:
                internal_error(
                    "trio backend: runner has no instruments",
                    RuntimeError("this trio run is not recorded"),
                )
        except Exception as exc:  # noqa: BLE001  # the run goes on unrecorded
            internal_error("trio backend: adding the instrument", exc)

    def _accelerate(self, runner: Any) -> None:
        """Let taskscope's hooks skip trio's dispatch in this run (`_trio_speedups.c`).

        trio calls ``runner.instruments.call(hook, task)``; a ``Dispatch`` set as that
        object's ``call`` runs the C hooks directly while taskscope's instrument is the
        only one for the hook, and trio's own ``call`` otherwise.
        """
        hooks = self._hooks
        instrument = self.instrument

        def make(data: dict[str, Any], original: Callable[..., None]) -> Any:
            return _trio_speedups.Dispatch(
                hooks=hooks, data=data, instrument=instrument, original=original
            )

        dispatch = _compat.trio_override_instruments_call(runner, make)
        if dispatch is not None:
            self._dispatches[runner] = dispatch

    def _make_setup_runner(self, original: Callable[..., Any]) -> Callable[..., Any]:
        attach = self._attach

        def setup_runner(*args: Any, **kwargs: Any) -> Any:
            runner = original(*args, **kwargs)
            attach(runner)
            return runner

        return setup_runner

    def _make_reschedule(self, original: Callable[..., None]) -> Callable[..., None]:
        if self._hooks is not None:
            # The same, in C (`_trio_speedups.c`: RunnerMethod, `note_scheduled`).
            accelerated: Callable[..., None] = _trio_speedups.RunnerMethod(
                original=original, hooks=self._hooks, exited=False
            )
            return accelerated
        instrument = self.instrument

        def reschedule(runner: Any, task: Any, *args: Any, **kwargs: Any) -> None:
            original(runner, task, *args, **kwargs)
            instrument._note_scheduled(task)

        return reschedule

    def _make_task_exited(self, original: Callable[..., None]) -> Callable[..., None]:
        if self._hooks is not None:
            # The same, in C (`_trio_speedups.c`: RunnerMethod, `note_exited`).
            accelerated: Callable[..., None] = _trio_speedups.RunnerMethod(
                original=original, hooks=self._hooks, exited=True
            )
            return accelerated
        live = self.registry.live
        finish = self.finish

        def task_exited(runner: Any, task: Any, outcome: Any) -> None:
            # Recorded first: the original hands the outcome to the nursery and may
            # raise (only for trio's own init task, which is not recorded).
            record = live.get(id(task))
            if record is not None:
                finish(record, task, outcome, outcome_known=True)
            original(runner, task, outcome)

        return task_exited

    # -- recording ------------------------------------------------------------------

    def track(self, task: Any, frame: Any) -> TaskRecord | None:
        """Register a task being spawned; `frame` is where to look for the user's line."""
        coro = task.coro
        code = getattr(coro, "cr_code", None)
        if id(code) in self._machinery:
            return None
        if code is not None and self.locations.is_library(code):
            # A library wrapper (AnyIO's): name the task after the coroutine it runs.
            code = _compat.wrapped_coroutine_code(coro, self.locations.is_library) or code
        registry = self.registry
        # The running task; there is none while trio spawns its init task.
        parent = getattr(self._run_context, "task", None)
        parent_record = registry.live.get(id(parent)) if parent is not None else None
        record = registry.new_record(
            task,
            TrioTaskRecord,
            self.user_frame(frame),
            code,
            parent_record.id if parent_record is not None else None,
        )
        if code is None:
            record.coroutine_override = _qualname(coro)
        if "task_created" in self.instruments:
            self.instruments.call("task_created", self._info(record))
        return record

    def user_frame(self, frame: Any) -> RawLocation | None:
        """Return the user's line responsible for what is happening at `frame`.

        `LocationFilter.user_frame` with one cache that also knows the run loop's
        entry (``unrolled_run``): a walk from a task stops there, unless it comes from
        trio's init task, which spawns the main task for the ``trio.run(...)`` line.
        This runs once per task, so it is inlined.
        """
        kinds = self._frame_kinds
        is_library = self.locations.is_library
        previous = None
        depth = 0
        while frame is not None and depth < 64:
            code = frame.f_code
            kind = kinds.get(id(code))
            if kind is None:
                kind = kinds[id(code)] = _LIBRARY if is_library(code) else _USER
                self._kind_codes.append(code)
            if kind == _USER:
                return code, frame.f_lineno
            if kind == _ENTRY and previous not in self._direct_codes:
                return None
            previous = code
            frame = frame.f_back
            depth += 1
        return None

    def _classify(self, code: CodeType) -> int:
        """Return the frame kind of `code` (`user_frame`'s cache miss, for the C walk)."""
        kind = self._frame_kinds[id(code)] = _LIBRARY if self.locations.is_library(code) else _USER
        self._kind_codes.append(code)
        return kind

    def end_step(self, record: TaskRecord, task: Any, *, final: bool = False) -> None:
        """Account the step in progress (hot path; `record.step_start` is set).

        A task's `final` step leaves `longest_step_at` where it was: the task is not
        suspended anywhere any more (as in the asyncio backend).
        """
        end = self.registry.clock()
        start = record.step_start
        record.step_start = 0.0
        duration = end - start
        record.busy += duration
        record.steps += 1
        if record.first_step is None:
            record.first_step = start
        if duration > record.longest_step:
            record.longest_step = duration
            if not final:
                self.registry.note_suspension(record, task.coro)
        if "after_task_step" in self.instruments:
            self.instruments.call("after_task_step", record.id, duration)

    def finish(self, record: TaskRecord, task: Any, outcome: Any, *, outcome_known: bool) -> None:
        """Record how a task ended (its last step included) and move it to the history."""
        try:
            if record.step_start:
                self.end_step(record, task, final=True)
            state = COMPLETED
            if outcome_known and type(outcome) is not Value:
                known, error = _compat.trio_outcome_error(outcome)
                if not known:
                    internal_error(
                        "trio backend: unknown outcome type",
                        TypeError(f"{type(outcome).__qualname__} is not an outcome.Outcome"),
                    )
                elif error is not None:
                    state = self._describe_end(record, error, task)
            # A failed trio task's exception is always retrieved (it propagates into the
            # nursery), so the registry does not keep watching it.
            self.registry.task_finished(record, state, task)
            if "task_finished" in self.instruments:
                self.instruments.call("task_finished", self._info(record))
        except Exception as exc:  # noqa: BLE001  # never raise into the run loop
            internal_error("trio backend: task_exited", exc)

    def _describe_end(self, record: TaskRecord, error: BaseException, task: Any) -> int:
        if is_cancellation(error):
            cancelled = _first_cancelled(error)
            source = _compat.trio_cancel_source(cancelled)
            record.cancel_cause = _CANCEL_CAUSES.get(source or "", "cancel-scope")
            if source == "explicit":
                # Only a user's ``cancel(reason=...)``; trio's own reasons are not messages.
                record.cancel_message = _compat.trio_cancel_reason(cancelled)
            # Before trio's own task_exited: the task's cancel status is still there.
            task_cancelled(record, task)  # the scope monitor names the scope, who, where
            return CANCELLED
        record.exception = self.locations.describe_exception(error)
        record.exception_group = self.locations.describe_group(error)
        record.exception_id = id(error)
        # trio hands every task's exception to its nursery, which raises it in the
        # parent: it is always retrieved (there is no "never retrieved" on trio).
        record.exception_retrieved = True
        return FAILED

    # -- adoption -------------------------------------------------------------------

    def _adopt_running_tasks(self) -> None:
        """Adopt the tasks of the run on this thread, parents before children."""
        try:
            root = trio.lowlevel.current_root_task()
            current = trio.lowlevel.current_task()
        except RuntimeError:
            return
        if root is None:
            return
        pending: list[tuple[Any, Any]] = [(root, None)]
        while pending:
            task, parent = pending.pop()
            record = self.registry.live.get(id(task))
            if record is None:
                record = self._adopt(task, parent)
            if record is not None and task is current:
                # install() runs inside this step: time the rest of it.
                record.step_start = self.registry.clock()
            for nursery in task.child_nurseries:
                pending.extend((child, task) for child in nursery.child_tasks)

    def _adopt(self, task: Any, parent: Any) -> TaskRecord | None:
        coro = task.coro
        code = _code_of(coro)
        if id(code) in self._machinery:
            return None
        parent_record = self.registry.live.get(id(parent)) if parent is not None else None
        record = self.registry.new_record(
            task,
            TrioTaskRecord,
            None,
            code,
            parent_record.id if parent_record is not None else None,
        )
        if code is None:
            record.coroutine_override = _qualname(coro)
        record.adopted = True
        return record

    def _info(self, record: TaskRecord) -> Any:
        from .._core._snapshot import task_info

        return task_info(record, self.registry)
