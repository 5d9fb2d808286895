"""The asyncio backend: records every task of the default loop and of uvloop.

How each figure is measured (also in docs/how-it-works.md):

* **Creation.** ``create_task`` is wrapped on the loop *class* (``BaseEventLoop`` and
  ``uvloop.Loop``), and every way of making a task goes through it (``asyncio.create_task``,
  ``TaskGroup``, ``gather``/``ensure_future``, AnyIO), after any task factory, which is
  left exactly where the user put it. Tasks that bypass it (made before install, or by
  calling ``Task()`` directly) are adopted the first time they schedule a step.
* **Steps and busy time.** A task step is a callback the task schedules on its loop with
  ``loop.call_soon`` (its step, or its wakeup when an awaited future completes); C tasks
  look ``call_soon`` up on the loop object, so one wrapper sees them on both loops. The
  wrapper swaps the callback for a timing trampoline; ``busy`` is the sum of the
  trampoline's ``perf_counter`` differences. The task object, its class and
  ``get_coro()`` are untouched.
* **Endings.** After each step the trampoline checks ``task.done()``; the exception is
  read without marking it retrieved. "Never retrieved" is what asyncio itself reports
  through ``call_exception_handler`` when the task is destroyed (also wrapped), or what
  ``_log_traceback`` says at the end. A pending task that is garbage-collected is seen
  through a weak reference; the runner's ``_cancel_all_tasks`` marks pending-at-exit.
"""

from __future__ import annotations

import asyncio
import asyncio.base_events
import asyncio.events
import asyncio.runners
import sys
import weakref
from types import CodeType, ModuleType
from typing import TYPE_CHECKING, Any, Final

from .._core._accel import speedups as _speedups
from .._core._faults import internal_error
from .._core._provenance import cancel_requested, task_cancelled
from .._core._registry import CANCELLED, COMPLETED, FAILED, Registry, TaskRecord
from . import _compat
from ._cancel_causes import cancel_cause, cancel_was_called
from ._patching import Patches

if TYPE_CHECKING:
    from collections.abc import Callable

    from .._core._instruments import Instruments
    from .._core._location import LocationFilter, RawLocation


current_task = asyncio.current_task
task_types: tuple[type[Any], ...] = _compat.TASK_TYPES


class AsyncioTaskRecord(TaskRecord):
    """A record of an asyncio task."""

    __slots__ = ()
    backend = "asyncio"

    @staticmethod
    def name_of(task: Any) -> str:
        """Read the task's current name."""
        name: str = task.get_name()
        return name


def _qualname(coro: Any) -> str:
    return str(getattr(coro, "__qualname__", type(coro).__qualname__))


def _code_of(coro: Any) -> CodeType | None:
    code = getattr(coro, "cr_code", None) or getattr(coro, "gi_code", None)
    return code if isinstance(code, CodeType) else None


def _codes(*functions: Any) -> frozenset[CodeType]:
    return frozenset(f.__code__ for f in functions if hasattr(f, "__code__"))


#: The event loop's own callback dispatch: a stack walk for the user's line stops
#: there, because whatever lies above (``asyncio.run(main())``) did not cause the event.
_DISPATCH_CODES: Final = _codes(
    asyncio.events.Handle._run, getattr(asyncio.base_events.BaseEventLoop, "_run_once", None)
)
#: Where a program enters the loop; a C loop (uvloop) runs callbacks right under these.
_ENTRY_CODES: Final = _codes(
    asyncio.base_events.BaseEventLoop.run_forever,
    asyncio.base_events.BaseEventLoop.run_until_complete,
    asyncio.runners.Runner.run,
)


# Frame kinds for `AsyncioBackend.user_frame`.
_USER: Final = 0
_LIBRARY: Final = 1
_DISPATCH: Final = 2
_ENTRY: Final = 3


class AsyncioBackend:
    """Wraps the loop classes' task entry points; `uninstall` restores them exactly."""

    def __init__(
        self, registry: Registry, instruments: Instruments, locations: LocationFilter
    ) -> None:
        self.registry = registry
        self.instruments = instruments
        self.locations = locations
        self.stop_codes: frozenset[CodeType] = _DISPATCH_CODES
        #: Calls an entry point makes itself (creating the main task): see `user_frame`.
        self.direct_codes: frozenset[CodeType] = _codes(
            asyncio.base_events.BaseEventLoop.create_task
        )
        self._patches = Patches()
        self._patched_classes: set[type] = set()
        #: ``id()`` of loops inside ``_cancel_all_tasks`` (cancellations there are shutdown).
        self._shutting_down: set[int] = set()
        #: ``id()`` of a code object -> frame kind (user, library, dispatch, entry point).
        #: Keyed by id because hashing a code object hashes its bytecode and constants;
        #: `_kind_codes` keeps each code alive so that its id is never reused.
        self._frame_kinds: dict[int, int] = {}
        self._kind_codes: list[CodeType] = []
        for code in _DISPATCH_CODES:
            self._set_frame_kind(code, _DISPATCH)
        for code in _ENTRY_CODES:
            self._set_frame_kind(code, _ENTRY)
        self._timed_step = self._make_timed_step()
        self._call_soon_code: CodeType | None = None
        #: How far up a method the call_soon wrapper calls (`_discover`,
        #: `_note_cancel_request`) finds the caller of call_soon: 2 past the Python
        #: wrapper's frame, 1 for the C wrapper, which has none.
        self._caller_depth = 2
        self._create_task_code: CodeType | None = None
        #: What `_track_eager` passes `user_frame` as the code its frame called: the C
        #: create_task wrapper has no frame of its own (see `_make_create_task`).
        self._eager_caller: CodeType | None = None
        #: Called (on the loop's thread) with each event loop the first time one of its
        #: tasks is seen: the loop monitor starts watching it.
        self.on_new_loop: Callable[[Any], None] | None = None
        #: ``id()`` of the loop of the last task discovered (new loops are rare: one int
        #: compare per task). An id, not the loop: holding the loop would keep it alive;
        #: a weakref callback resets it when that loop dies, so a new loop at the same
        #: address is still seen as new.
        self._last_loop_id = 0
        self._last_loop_ref: weakref.ref[Any] | None = None

    # -- install / uninstall --------------------------------------------------------

    def install(self) -> None:
        """Wrap the loop classes (uvloop's as soon as it is imported) and the runner."""
        for cls in _compat.loop_classes():
            self._patch_loop_class(cls)
        _compat.when_imported("uvloop", self._on_uvloop_import)
        original = getattr(_compat.runners_module, _compat.CANCEL_ALL_TASKS, None)
        if original is not None:
            self._patches.replace(
                _compat.runners_module,
                _compat.CANCEL_ALL_TASKS,
                self._make_cancel_all_tasks(original),
            )
        self._adopt_running_loop_tasks()
        step_code = getattr(self._timed_step, "__code__", None)
        if step_code is not None:  # the C trampoline has no frame to stop at
            self.stop_codes = self.stop_codes | {step_code}
            self._set_frame_kind(step_code, _DISPATCH)
        self.direct_codes = self.direct_codes | {
            code for code in (self._call_soon_code, self._create_task_code) if code is not None
        }

    def _set_frame_kind(self, code: CodeType, kind: int) -> None:
        self._kind_codes.append(code)
        self._frame_kinds[id(code)] = kind

    def uninstall(self) -> None:
        """Restore every wrapped attribute."""
        self._patches.undo()
        self._patched_classes.clear()
        self._last_loop_id = 0
        self._last_loop_ref = None

    def _on_uvloop_import(self, module: ModuleType) -> None:
        loop_class = getattr(module, "Loop", None)
        if isinstance(loop_class, type):
            try:
                self._patch_loop_class(loop_class)
            except Exception as exc:  # noqa: BLE001  # never break an import
                internal_error("asyncio backend: patching uvloop", exc)

    def _patch_loop_class(self, cls: Any) -> None:
        if cls in self._patched_classes:
            return
        self._patched_classes.add(cls)
        replace = self._patches.replace
        if _compat.PY312:
            # Only eager tasks (3.12+) can run, or even finish, without scheduling a
            # step through call_soon; they are caught when create_task returns.
            replace(cls, "create_task", self._make_create_task(cls.create_task))
        replace(cls, "call_soon", self._make_call_soon(cls.call_soon))
        replace(
            cls,
            "call_exception_handler",
            self._make_exception_handler(cls.call_exception_handler),
        )
        replace(cls, "close", self._make_close(cls.close))

    # -- the hot path ---------------------------------------------------------------

    def _make_timed_step(self) -> Callable[..., None]:
        if _speedups is not None:
            # Same logic as `_make_pure_timed_step`, in C (_speedups.c: TimedStep), and
            # `finish` for a task that completed, in C too (TaskFinisher).
            registry = self.registry
            finish = _speedups.TaskFinisher(self.finish, self.instruments, registry.task_finished)
            # note_suspension's walk of the await chain too, with the frame-kind cache.
            timed: Callable[..., None] = _speedups.TimedStep(
                registry.clock,
                self.instruments,
                finish,
                self._first_step,
                self.registry.note_suspension,
                internal_error,
                self._frame_kinds,
                self._code_kind,
            )
            return timed
        return self._make_pure_timed_step()

    def _make_pure_timed_step(self) -> Callable[..., None]:
        clock = self.registry.clock
        instruments = self.instruments
        account = self._make_step_account()

        def timed_step(record: TaskRecord, task: Any, callback: Any, *args: Any) -> None:
            start: float | None = None
            try:
                if "before_task_step" in instruments:
                    instruments.call("before_task_step", record.id)
                start = clock()
                record.step_start = start
                scheduled_at = record.scheduled_at
                if scheduled_at:
                    record.scheduled += start - scheduled_at
                    record.scheduled_at = 0.0
            except Exception as exc:  # noqa: BLE001  # the step runs regardless
                internal_error("asyncio backend: step accounting", exc)
                start = None
            try:
                callback(*args)
            finally:
                # Not `return` here: that would swallow the callback's exception.
                if start is not None:
                    account(record, task, start)

        return timed_step

    def _make_step_account(self) -> Callable[[TaskRecord, Any, float], None]:
        """Return what runs after each step: times, first/last step, instruments."""
        clock = self.registry.clock
        instruments = self.instruments
        finish = self.finish
        first_step = self._first_step
        note_suspension = self.registry.note_suspension

        def account(record: TaskRecord, task: Any, start: float) -> None:
            try:
                record.step_start = 0.0
                end = clock()
                duration = end - start
                record.busy += duration
                record.steps += 1
                if task.done():
                    # The common short task: first and last step at once.
                    if record.first_step is None:
                        record.first_step = start
                        if "task_created" in instruments:
                            first_step(record, task)
                    if duration > record.longest_step:
                        record.longest_step = duration
                    finish(record, task, end)
                else:
                    if record.first_step is None:
                        record.first_step = start
                        first_step(record, task)
                    if duration > record.longest_step:
                        record.longest_step = duration
                        note_suspension(record, task.get_coro())
                if "after_task_step" in instruments:
                    instruments.call("after_task_step", record.id, duration)
            except Exception as exc:  # noqa: BLE001  # never raise into the loop
                internal_error("asyncio backend: step accounting", exc)

        return account

    def _first_step(self, record: TaskRecord, task: Any) -> None:
        """The task ran for the first time: take its name, tell the instruments."""
        # Keep a name for a task that may be collected unseen later.
        record.name = task.get_name()
        if "task_created" in self.instruments:
            # Fired at the first step: only now are the task's name and context set.
            self.instruments.call("task_created", self._info(record))

    def _make_call_soon(self, original: Callable[..., Any]) -> Callable[..., Any]:
        live = self.registry.live
        kinds = _compat.callback_kinds
        classify = _compat.classify_callback_type
        step_names = _compat.STEP_NAMES
        timed_step = self._timed_step
        discover: Callable[..., TaskRecord | None] = self._discover
        note_cancel = self._note_cancel_request
        clock = self.registry.clock
        if _speedups is not None:
            # Same logic as call_soon below, in C (_speedups.c: CallSoon). It has no
            # frame: `_discover` looks one frame less deep, and its own code stands
            # for the wrapper where `user_frame` asks who called an entry point.
            # Discovery of a new task at a known site is in C too (TaskRecorder),
            # reading the caches `_discover` fills.
            if _compat.current_tasks is not None:
                discover = self._make_task_recorder(_compat.current_tasks)
            accelerated: Callable[..., Any] = _speedups.CallSoon(
                original,
                live,
                kinds,
                classify,
                step_names,
                timed_step,
                discover,
                note_cancel,
                clock,
                internal_error,
            )
            self._caller_depth = 1
            self._call_soon_code = self._discover.__code__
            return accelerated

        def call_soon(loop: Any, callback: Any, *args: Any, context: Any = None) -> Any:
            record = owner = None
            try:
                kind = kinds.get(type(callback))
                if kind is None:
                    kind = classify(type(callback))
                if kind and (kind == 2 or callback.__name__ in step_names):
                    owner = callback.__self__
                    record = live.get(id(owner))
                    if record is None:
                        record = discover(owner, loop)
                    if record is not None:
                        record.scheduled_at = clock()
                        if args:
                            # Woken by what it waited for; a step without args is the
                            # task rescheduling itself (see LoopMonitor: spinning).
                            record.waited_at = record.steps
                            # A wakeup with a cancelled future delivers a cancellation.
                            if record.cancel_cause is None and args[0].cancelled():
                                note_cancel(record, loop, args[0])
            except Exception as exc:  # noqa: BLE001  # fall back to the plain call
                internal_error("asyncio backend: call_soon", exc)
                record = None
            if record is None:
                return original(loop, callback, *args, context=context)
            # Outside the try: the loop's own errors (closed loop) pass through once.
            return original(loop, timed_step, record, owner, callback, *args, context=context)

        self._caller_depth = 2
        self._call_soon_code = call_soon.__code__
        return call_soon

    def _make_task_recorder(
        self, current_tasks: dict[Any, Any]
    ) -> Callable[[Any, Any], TaskRecord | None]:
        recorder: Callable[[Any, Any], TaskRecord | None] = _speedups.TaskRecorder(
            self._discover,
            task_types,
            self._frame_kinds,
            current_tasks,
            AsyncioTaskRecord,
            self.registry.new_record,  # the registry's C RecordMaker files the record
        )
        return recorder

    def _make_create_task(self, original: Callable[..., Any]) -> Callable[..., Any]:
        clock = self.registry.clock
        track_eager = self._track_eager
        live = self.registry.live
        if _speedups is not None:
            # The same in C (_speedups.c: CreateTask), one frame fewer for every task on
            # 3.12+. It hands `_track_eager` its caller's frame; `_track_eager`'s own
            # code then stands for the wrapper where `user_frame` asks who called an
            # entry point.
            accelerated: Callable[..., Any] = _speedups.CreateTask(
                original, clock, live, track_eager, internal_error
            )
            self._create_task_code = self._eager_caller = track_eager.__code__
            return accelerated

        def create_task(loop: Any, coro: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                start = clock()
            except Exception as exc:  # noqa: BLE001  # an injected clock may fail
                internal_error("asyncio backend: create_task", exc)
                return original(loop, coro, *args, **kwargs)
            task = original(loop, coro, *args, **kwargs)
            try:
                if id(task) not in live:
                    track_eager(task, coro, loop, sys._getframe(0), start)
            except Exception as exc:  # noqa: BLE001  # the task is returned regardless
                internal_error("asyncio backend: create_task", exc)
            return task

        self._create_task_code = create_task.__code__
        return create_task

    # -- recording ------------------------------------------------------------------

    def _discover(
        self, owner: Any, loop: Any, frame: Any = None, caller: CodeType | None = None
    ) -> TaskRecord | None:
        """An untracked task schedules a step: record it (once per task, hot path).

        A task schedules its first step from its constructor, so for a new task the
        stack right now leads through ``create_task`` to the line that created it
        (`frame` is where to start looking; the caller's caller by default). A task
        whose coroutine already ran existed before taskscope: it is adopted.
        """
        if not isinstance(owner, task_types) or owner.done():
            return None
        if id(loop) != self._last_loop_id:
            self._new_loop(loop)
        coro = owner.get_coro()
        if frame is None:
            # Its coroutine already ran and is suspended: the task existed before us.
            # (Only ``cr_suspended`` is read: reading ``cr_frame`` would make CPython
            # allocate a frame object for every new task.)
            if getattr(coro, "cr_suspended", False):
                return self._adopt(owner)
            # The caller of the call_soon wrapper (this method's only caller without a
            # frame); the C wrapper has no frame of its own.
            frame = sys._getframe(self._caller_depth)
            caller = self._call_soon_code
        registry = self.registry
        code = getattr(coro, "cr_code", None)
        if code is not None and self._code_kind(code) == _LIBRARY:
            # A library wrapper (AnyIO's): name the task after the coroutine it runs.
            # (Through the kind cache, so the C recorder knows the wrapped code next time.)
            code = _compat.wrapped_coroutine_code(coro, self._is_library_code) or code
        parent = current_task(loop)
        parent_record = registry.live.get(id(parent)) if parent is not None else None
        record = registry.new_record(
            owner,
            AsyncioTaskRecord,
            self.user_frame(frame, caller),
            code,
            parent_record.id if parent_record is not None else None,
        )
        if code is None:
            record.coroutine_override = _qualname(coro)
        return record

    def _code_kind(self, code: CodeType) -> int:
        """Return whether `code` is the user's or a library's, cached (the C recorder
        reads the same cache)."""
        kind = self._frame_kinds.get(id(code))
        if kind is None:
            kind = _LIBRARY if self.locations.is_library(code) else _USER
            self._set_frame_kind(code, kind)
        return kind

    def _is_library_code(self, code: CodeType) -> bool:
        return self._code_kind(code) == _LIBRARY

    def _new_loop(self, loop: Any) -> None:
        """A task of a loop other than the last one's: tell the loop monitor (which
        ignores loops it already watches)."""
        self._last_loop_id = id(loop)
        try:
            self._last_loop_ref = weakref.ref(loop, self._loop_gone)
        except TypeError:  # a loop class without weakref support: check every time
            self._last_loop_id = 0
        if self.on_new_loop is not None:
            self.on_new_loop(loop)

    def _loop_gone(self, ref: weakref.ref[Any]) -> None:
        if ref is self._last_loop_ref:
            self._last_loop_id = 0
            self._last_loop_ref = None

    def _track_eager(self, task: Any, coro: Any, loop: Any, frame: Any, start: float) -> None:
        """Record a task that ``create_task`` returned without it scheduling a step:
        an eager task (3.12+) that ran its first step, or finished, in the constructor.

        `coro` is the coroutine given to ``create_task``: ``get_coro()`` on a task that
        finished eagerly crashes CPython 3.12.0-3.12.4 (cpython#122332).
        """
        if task.done():
            code = getattr(coro, "cr_code", None)
            record = self.registry.new_record(
                task, AsyncioTaskRecord, self.user_frame(frame, self._eager_caller), code, None
            )
            if code is None:
                record.coroutine_override = _qualname(coro)
        else:
            found = self._discover(task, loop, frame, self._eager_caller)
            if found is None:
                return
            record = found
        if _compat.coroutine_started(coro):
            # Its first step ran inside create_task; that call's duration stands for it.
            self.registry.step_done(record, start, self.registry.clock())
            self._first_step(record, task)
        if task.done():
            self.finish(record, task)

    def user_frame(self, frame: Any, previous: CodeType | None = None) -> RawLocation | None:
        """Return the user's line responsible for what is happening at `frame`.

        Inlines `LocationFilter.user_frame` with one cache that also knows the loop's
        dispatch and entry codes, because this runs once per task on the event loop.
        `previous` is the code called from `frame` when that call has no frame of its
        own to walk (the call_soon wrapper, when the walk starts at its caller).
        """
        kinds = self._frame_kinds
        depth = 0
        while frame is not None and depth < 64:
            code = frame.f_code
            kind = kinds.get(id(code))
            if kind is None:
                kind = self._code_kind(code)
            if kind == _USER:
                return code, frame.f_lineno
            if kind == _DISPATCH or (kind == _ENTRY and previous not in self.direct_codes):
                return None
            previous = code
            frame = frame.f_back
            depth += 1
        return None

    def _adopt(self, owner: Any) -> TaskRecord | None:
        """Start tracking a task that existed before taskscope saw it (slow path)."""
        if not _compat.is_pending_task(owner):
            return None
        coro = owner.get_coro()
        code = _code_of(coro)
        record = self.registry.new_record(owner, AsyncioTaskRecord, None, code, None)
        if code is None:
            record.coroutine_override = _qualname(coro)
        record.adopted = True
        return record

    def _adopt_running_loop_tasks(self) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._new_loop(loop)
        for task in asyncio.all_tasks(loop):
            if id(task) not in self.registry.live:
                self._adopt(task)

    def finish(self, record: TaskRecord, task: Any, ended: float | None = None) -> None:
        """Record how a task ended and move it to the history."""
        if task.cancelled():
            state = CANCELLED
            task_cancelled(record, task)  # the scope monitor may know which scope did it
            if record.cancel_cause is None:
                # No wakeup delivered it: cancelled before its first step (or while
                # running), by the runner's shutdown or a cancel() call, or it raised
                # CancelledError itself (cancelling() stays 0).
                if id(task.get_loop()) in self._shutting_down:
                    record.cancel_cause = "shutdown"
                elif cancel_was_called(task):
                    record.cancel_cause = "cancel-call"
                else:
                    record.cancel_cause = "unknown"
        else:
            exc = _compat.task_exception(task)
            if exc is None:
                state = COMPLETED
            else:
                state = FAILED
                record.exception = self.locations.describe_exception(exc)
                record.exception_group = self.locations.describe_group(exc)
                record.exception_id = id(exc)
        self.registry.task_finished(record, state, task, ended)
        if "task_finished" in self.instruments:
            self.instruments.call("task_finished", self._info(record))

    def _note_cancel_request(self, record: TaskRecord, loop: Any, future: Any) -> None:
        """A task's wakeup is scheduled with a cancelled future: cancellation is being
        delivered, and the stack right now is the code that requested it."""
        # Task.cancel(msg) hands the message to the future it is waiting on.
        record.cancel_message = _compat.task_cancel_message(future)
        if id(loop) in self._shutting_down:
            record.cancel_cause = "shutdown"
            return
        frame = sys._getframe(self._caller_depth)
        record.cancel_cause = self._cancel_cause(frame)
        record.cancel_location = self.user_frame(frame)
        requester = asyncio.current_task(loop)
        if requester is not None:
            requester_record = self.registry.live.get(id(requester))
            if requester_record is not None and requester_record is not record:
                record.cancel_requester = (requester_record.id, requester_record.current_name())
        cancel_requested(record, frame)  # the scope monitor names the scope and cause

    def _cancel_cause(self, frame: Any) -> str:
        return cancel_cause(frame, self.stop_codes)

    # -- loop and runner ends -------------------------------------------------------

    def _mark_pending(self, loop: Any) -> None:
        live = self.registry.live
        for task in asyncio.all_tasks(loop):
            record = live.get(id(task))
            if record is not None:
                self.registry.mark_pending_at_exit(record)

    def _make_cancel_all_tasks(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        def _cancel_all_tasks(loop: Any) -> None:
            try:
                self._mark_pending(loop)
                self._shutting_down.add(id(loop))
            except Exception as exc:  # noqa: BLE001
                internal_error("asyncio backend: runner shutdown", exc)
            try:
                original(loop)
            finally:
                self._shutting_down.discard(id(loop))

        return _cancel_all_tasks

    def _make_close(self, original: Callable[[Any], None]) -> Callable[[Any], None]:
        def close(loop: Any) -> None:
            try:
                if not loop.is_running() and not loop.is_closed():
                    self._mark_pending(loop)
            except Exception as exc:  # noqa: BLE001
                internal_error("asyncio backend: loop close", exc)
            original(loop)

        return close

    def _make_exception_handler(
        self, original: Callable[[Any, dict[str, Any]], None]
    ) -> Callable[[Any, dict[str, Any]], None]:
        registry = self.registry

        def call_exception_handler(loop: Any, context: dict[str, Any]) -> None:
            try:
                future = context.get("future")
                exception = context.get("exception")
                if future is not None and exception is not None:
                    registry.exception_logged(id(future), id(exception))
            except Exception as exc:  # noqa: BLE001
                internal_error("asyncio backend: exception handler", exc)
            original(loop, context)

        return call_exception_handler

    def _info(self, record: TaskRecord) -> Any:
        from .._core._snapshot import task_info

        return task_info(record, self.registry)
