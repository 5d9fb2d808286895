"""The session: installs the backends, owns the registry, produces snapshots and reports.

One session is active per process at a time, because the hooks it installs (loop class
methods, trio's runner) are process-wide.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from ._backends import _compat
from ._backends._asyncio import AsyncioBackend
from ._core._clock import default_clock
from ._core._faults import internal_error
from ._core._instruments import Instrument, Instruments
from ._core._location import default_filter
from ._core._registry import Registry
from ._core._snapshot import build_snapshot, wall_clock
from ._options import Options
from .monitors._monitors import Monitors
from .monitors._records import HealthSnapshot

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator
    from os import PathLike

    from ._core._monitor import Monitor
    from ._core._records import Finding, Snapshot

_active_lock = threading.Lock()
_active: Session | None = None


class Session:
    """A running taskscope: what `taskscope.install()` returns."""

    def __init__(self, options: Options, instruments: Iterable[Instrument] = ()) -> None:
        self.options = options
        self.instruments = Instruments(instruments)
        self.registry = Registry(
            clock=options.clock,
            history_size=options.history_size,
            max_sites=options.max_sites,
            locations=default_filter(),
        )
        self.started_at = wall_clock()
        self.installed = False
        self.ended = False
        self._backends: list[Any] = []
        self.monitors: Monitors | None = None
        #: Opt-in monitors (locks, resources, scopes), in installation order.
        self.plugins: list[Monitor] = []

    # -- lifecycle ------------------------------------------------------------------

    def _install(self) -> None:
        monitors = self.monitors = Monitors(self.registry, self.options)
        monitors.start()  # first: a bad dump signal fails here, before any hook is in
        asyncio_backend = AsyncioBackend(self.registry, self.instruments, self.registry.locations)
        asyncio_backend.on_new_loop = monitors.watch_asyncio_loop
        self._backends.append(asyncio_backend)  # before install: a partial one is undone
        asyncio_backend.install()
        _compat.when_imported("trio", self._on_trio_import)
        # After the backends: the resource monitor wraps the same loop methods, and
        # wrappers are undone newest first.
        for plugin in self._make_plugins():
            plugin.install(self.registry)
            self.plugins.append(plugin)
        self.installed = True

    def _make_plugins(self) -> list[Monitor]:
        options = self.options
        plugins: list[Monitor] = []
        if options.locks:
            from .monitors._locks import LockMonitor

            plugins.append(LockMonitor(held_too_long=options.lock_hold_threshold))
        if options.resources:
            from .monitors._resources import ResourceMonitor

            plugins.append(ResourceMonitor())
        if options.scopes:
            from .monitors._scopes import ScopeMonitor

            plugins.append(ScopeMonitor(exception_notes=options.scope_notes))
        return plugins

    def _on_trio_import(self, _module: Any) -> None:
        try:
            from ._backends._trio import TrioBackend

            backend = TrioBackend(self.registry, self.instruments, self.registry.locations)
            backend.install()
            self._backends.append(backend)
        except Exception as exc:  # noqa: BLE001  # trio programs still run untracked
            internal_error("trio backend: install", exc)
        if self.monitors is not None:
            # After the backend: its setup_runner wrapper adds the instrument first.
            self.monitors.watch_trio(_module)

    def uninstall(self) -> None:
        """Remove every hook taskscope installed; the records stay readable."""
        global _active  # noqa: PLW0603  # the one process-wide session slot
        with _active_lock:
            if not self.installed:
                return
            self._teardown()
            if _active is self:
                _active = None

    def _teardown(self) -> None:
        """Undo whatever `_install` put in, newest first (also after a failed install)."""
        _compat.cancel_import_callbacks()
        for plugin in reversed(self.plugins):
            try:
                plugin.uninstall()
            except Exception as exc:  # noqa: BLE001
                internal_error(f"{type(plugin).__name__}: uninstall", exc)
        if self.monitors is not None:
            # Before the backends: the monitors' wrappers sit on top of theirs.
            try:
                self.monitors.stop()
            except Exception as exc:  # noqa: BLE001
                internal_error("monitors: stop", exc)
        for backend in reversed(self._backends):
            try:
                backend.uninstall()
            except Exception as exc:  # noqa: BLE001
                internal_error(f"{type(backend).__name__}: uninstall", exc)
        self._backends.clear()
        self.registry.detach()
        self.installed = False

    def end_of_program(self) -> None:
        """Mark the end of the monitored program: what is still pending now is a finding."""
        if self.ended:
            return
        self.ended = True
        for plugin in self.plugins:
            try:
                plugin.end_of_program()
            except Exception as exc:  # noqa: BLE001
                internal_error(f"{type(plugin).__name__}: end of program", exc)
        for record in list(self.registry.live.values()):
            self.registry.mark_pending_at_exit(record)
        self.registry.settle_failed(_compat.task_log_traceback, final=True)

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.uninstall()

    # -- reading --------------------------------------------------------------------

    def snapshot(self) -> HealthSnapshot:
        """Return a frozen picture of every tracked task, the event loops' health
        (stalls in progress included) and the process; safe from any thread."""
        self.registry.settle_failed(_compat.task_log_traceback, final=self.ended)
        base = build_snapshot(self.registry, self.started_at)
        fields = {field.name: getattr(base, field.name) for field in dataclasses.fields(base)}
        monitors = self.monitors
        if monitors is None:
            return HealthSnapshot(**fields)
        return HealthSnapshot(
            **fields,
            loop=monitors.loop_health(base.elapsed),
            system=monitors.system_health(),
        )

    def dump(self, file: IO[str] | None = None) -> str:
        """Write the emergency dump (every thread's stack, every live task with its
        creation site and await point, the stall in progress) to `file` and return it."""
        text = self.monitors.dump_text() if self.monitors is not None else ""
        if file is not None:
            file.write(text)
            file.flush()
        return text

    def findings(self, snapshot: Snapshot | None = None) -> list[Finding]:
        """Return the findings for `snapshot` (a new one by default), including the
        opt-in monitors' findings as of now."""
        from .analysis import find_problems

        found = find_problems(snapshot if snapshot is not None else self.snapshot())
        for _plugin, _section, plugin_findings in self._plugin_sections():
            found.extend(plugin_findings)
        return found

    def _plugin_sections(self) -> list[tuple[Monitor, Any, list[Finding]]]:
        """Each opt-in monitor with its section (frozen records) and findings."""
        sections: list[tuple[Monitor, Any, list[Finding]]] = []
        for plugin in self.plugins:
            try:
                section = plugin.snapshot()
                sections.append((plugin, section, plugin.findings(section)))
            except Exception as exc:  # noqa: BLE001  # the rest of the report still counts
                internal_error(f"{type(plugin).__name__}: snapshot", exc)
        return sections

    def report(self, *, program: dict[str, Any] | None = None) -> dict[str, Any]:
        """Return the JSON report (schema ``taskscope.report/1``) as a dict."""
        from .analysis import find_problems
        from .reports import build_report
        from .reports._json import to_jsonable

        snapshot = self.snapshot()
        findings = find_problems(snapshot)
        sections: dict[str, Any] = {}
        for plugin, section, plugin_findings in self._plugin_sections():
            findings.extend(plugin_findings)
            sections[plugin.section] = to_jsonable(section)
        report = build_report(snapshot, findings, program=program)
        report.update(sections)
        return report

    def write_report(
        self, path: str | PathLike[str], *, program: dict[str, Any] | None = None
    ) -> None:
        """Write the JSON report to `path` (atomically: a partial file never appears)."""
        from .reports import write_json

        write_json(self.report(program=program), path)

    def print_summary(self, file: IO[str] | None = None) -> None:
        """Print a short human summary (to stderr by default)."""
        from .reports import print_summary

        print_summary(self.report(), file=file if file is not None else sys.stderr)


def current_session() -> Session | None:
    """Return the installed session, or None."""
    return _active


def install(
    *,
    history_size: int = 10_000,
    max_sites: int = 10_000,
    clock: Any = None,
    instruments: Iterable[Instrument] = (),
    block_threshold: float = 0.1,
    spin_threshold: float = 1.0,
    lag_interval: float = 0.05,
    system_interval: float = 1.0,
    dump_signal: int | str | None = None,
    locks: bool = False,
    lock_hold_threshold: float = 1.0,
    resources: bool = False,
    scopes: bool = False,
    scope_notes: bool = False,
) -> Session:
    """Start observing every asyncio and trio task in this process.

    Args:
        history_size: finished tasks kept individually; older ones remain in the
            per-creation-site aggregates.
        max_sites: creation sites aggregated individually.
        clock: a monotonic clock returning seconds (tests inject a `MockClock`).
        instruments: `Instrument` objects whose hooks are called for task events.
        block_threshold: seconds a loop may stay inside one task step or callback
            before it is reported as blocked (seen while it lasts, from a watchdog
            thread).
        spin_threshold: seconds a task may keep rescheduling itself without waiting
            for I/O or time before it is reported as spinning.
        lag_interval: how often each event loop's scheduling lag is measured (at most
            half of `block_threshold` is used).
        system_interval: how often the process's CPU, memory, threads, files and GC
            are sampled (0 turns the system monitor off).
        dump_signal: a signal (``signal.SIGUSR1`` or ``"SIGUSR1"``) that writes an
            emergency dump of every thread and task to stderr; main thread only.
        locks: track locks, semaphores, conditions, events and queues: holders,
            waiters, contention, held-too-long, never-released, deadlocks (opt-in).
        lock_hold_threshold: seconds a lock may be held before `lock-held-too-long`.
        resources: track transports, servers, subprocesses and HTTP client sessions
            for `resource-unclosed` (opt-in).
        scopes: track cancel scopes, task groups and timeouts, and explain
            cross-task and misnested exits (opt-in).
        scope_notes: with `scopes`, add a note (``BaseException.add_note``) naming the
            task and line that entered the scope to the library's own cross-task or
            misnesting ``RuntimeError``; off by default, as it changes the exception's
            printed form.

    Returns:
        The active `Session`; call `Session.uninstall` to remove every hook.

    Raises:
        RuntimeError: a session is already installed.
        ValueError: an option is out of range.
    """
    global _active  # noqa: PLW0603  # the one process-wide session slot
    options = Options(
        history_size=history_size,
        max_sites=max_sites,
        clock=clock or default_clock,
        block_threshold=block_threshold,
        spin_threshold=spin_threshold,
        lag_interval=lag_interval,
        system_interval=system_interval,
        dump_signal=dump_signal,  # type: ignore[arg-type]  # normalised to int by Options
        locks=locks,
        lock_hold_threshold=lock_hold_threshold,
        resources=resources,
        scopes=scopes,
        scope_notes=scope_notes,
    )
    with _active_lock:
        if _active is not None:
            raise RuntimeError(
                "taskscope is already installed in this process; use "
                "taskscope.current_session() or call session.uninstall() first"
            )
        session = Session(options, instruments)
        try:
            session._install()
        except BaseException:
            session._teardown()  # all or nothing: no hook stays in without a session
            raise
        _active = session
    return session


@contextmanager
def monitor(**options: Any) -> Iterator[Session]:
    """Install taskscope for the duration of a ``with`` block.

    Takes the same keyword options as `install`.
    """
    session = install(**options)
    try:
        yield session
    finally:
        session.uninstall()
