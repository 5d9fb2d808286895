"""The resource monitor: connections, servers, subprocesses and sessions, from open to close.

Automatic for asyncio transports and servers (``create_connection``, ``open_connection``,
``create_server``, ``start_server``, ``subprocess_exec``/``_shell``, on the default loop
and uvloop), ``aiohttp.ClientSession`` and ``httpx.AsyncClient``; explicit with
`track_resource` and `track_session`. A resource still open at the end of the program,
or garbage-collected open, is ``resource-unclosed``. See docs/locks.md.
"""

from __future__ import annotations

import itertools
import sys
import threading
import weakref
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .._backends import _compat, _compat_sync
from .._backends._patching import Patches
from .._core._current import current_task
from .._core._faults import internal_error
from .._core._location import to_location
from .._core._records import Location, TaskRef

if TYPE_CHECKING:
    from collections.abc import Callable
    from types import CodeType, FrameType, ModuleType, TracebackType

    from .._core._location import RawLocation
    from .._core._records import Finding
    from .._core._registry import Registry, TaskRecord

#: Closed resources kept individually for the report.
CLOSED_HISTORY: Final = 1_000
#: ``Py_TPFLAGS_IMMUTABLETYPE``: C classes (uvloop's transports) refuse new attributes.
_IMMUTABLE_TYPE: Final = 1 << 8
#: Kinds whose class ``close`` is wrapped to see closes as they happen.
_CLOSE_WATCHED_KINDS: Final = frozenset({"transport", "server", "subprocess"})
#: Status updates kept per resource (the newest).
MAX_STATUSES: Final = 16


@dataclass(frozen=True, slots=True)
class StatusChange:
    """A status a resource or session reported."""

    #: Seconds since the session started.
    at: float
    status: str


@dataclass(frozen=True, slots=True)
class ResourceInfo:
    """One resource's lifecycle."""

    #: taskscope's id for the resource (unique within a session).
    id: int
    #: ``transport``, ``server``, ``subprocess``, ``http-session``, ``session`` or the
    #: kind given to `track_resource`.
    kind: str
    #: The given name, else the type's name.
    name: str
    #: Qualified type name of the object.
    type: str
    #: Where it was opened (the user's line).
    opened_at: Location | None
    #: The task that opened it.
    opened_by: TaskRef | None
    #: When it was opened (seconds since the session started).
    opened: float
    #: When it was seen closed; None while open. For resources whose ``close`` cannot
    #: be observed directly (uvloop transports), the first snapshot that saw it closed.
    closed: float | None
    #: Open time so far, or until closed.
    duration: float
    #: True when it was garbage-collected without having been closed.
    collected_open: bool
    #: The newest status changes (`track_session` handles, `ResourceHandle.status`).
    statuses: tuple[StatusChange, ...]
    #: Sessions: ``ok``, ``error`` or ``cancelled`` once exited.
    outcome: str | None
    #: Sessions: the exception type that ended it.
    error: str | None


@dataclass(frozen=True, slots=True)
class SessionStatistics:
    """Outcomes of every `track_session` with one name."""

    name: str
    opened_at: Location | None
    count: int
    ok: int
    errors: int
    cancelled: int
    #: Sessions with this name still open.
    active: int
    #: ``ok / (ok + errors + cancelled)``; None before any finished.
    success_rate: float | None
    total: float
    max: float


@dataclass(frozen=True, slots=True)
class ResourcesSnapshot:
    """The ``resources`` report section."""

    program_ended: bool
    #: Resources open now.
    open: int
    #: Resources opened since install.
    opened: int
    #: Closed resources no longer listed individually.
    dropped: int
    #: Open resources, then the retained closed ones and those collected open.
    resources: tuple[ResourceInfo, ...]
    sessions: tuple[SessionStatistics, ...]


class _Resource:
    __slots__ = (
        "closed",
        "collected_open",
        "error",
        "id",
        "kind",
        "name",
        "observable",
        "opened",
        "opened_at",
        "opened_by",
        "outcome",
        "ref",
        "statuses",
        "strong",
        "type_name",
    )

    def __init__(  # noqa: PLR0917  # internal, positional on purpose
        self,
        resource_id: int,
        kind: str,
        name: str,
        type_name: str,
        opened_at: RawLocation | None,
        opened_by: TaskRecord | None,
        opened: float,
    ) -> None:
        self.id = resource_id
        self.kind = kind
        self.name = name
        self.type_name = type_name
        self.opened_at = opened_at
        self.opened_by = opened_by
        self.opened = opened
        self.closed: float | None = None
        self.collected_open = False
        self.statuses: deque[tuple[float, str]] | None = None
        self.outcome: str | None = None
        self.error: str | None = None
        self.ref: weakref.ref[Any] | None = None
        #: The object itself, only when it cannot be weakly referenced (uvloop's process
        #: transports): held until a poll sees it closed, or the end of the program.
        self.strong: Any = None
        #: False when a close could go unseen before collection (a C transport class
        #: whose ``close`` cannot be wrapped): then collection alone is no finding.
        self.observable = True


class _SessionTotals:
    __slots__ = ("active", "cancelled", "count", "errors", "max", "ok", "opened_at", "total")

    def __init__(self, opened_at: RawLocation | None) -> None:
        self.opened_at = opened_at
        self.count = self.ok = self.errors = self.cancelled = self.active = 0
        self.total = self.max = 0.0


class ResourceMonitor:
    """Tracks resources and sessions (section ``resources``).

    Args:
        automatic: wrap asyncio's loop methods, aiohttp and httpx (False: only
            `track_resource` and `track_session`).
    """

    section = "resources"

    def __init__(self, *, automatic: bool = True) -> None:
        self.automatic = automatic
        self.registry: Registry | None = None
        self._patches = Patches()
        self._open: dict[int, _Resource] = {}
        self._ref_keys: dict[int, int] = {}
        self._closed: deque[_Resource] = deque(maxlen=CLOSED_HISTORY)
        self._collected: deque[_Resource] = deque(maxlen=CLOSED_HISTORY)
        self._sessions: dict[str, _SessionTotals] = {}
        self._ids = itertools.count(1)
        self._installed = False
        self._ended = False
        self._dropped = 0
        self._library: dict[CodeType, bool] = {}
        self._lock = threading.Lock()
        self._gone_callback = self._gone
        self._close_watched: set[type] = set()
        self._close_wrapped: set[type] = set()

    # -- lifecycle ------------------------------------------------------------------

    def install(self, registry: Registry) -> None:
        """Wrap asyncio's loop classes now, aiohttp and httpx when imported."""
        with self._lock:
            if self._installed:
                return
            self.registry = registry
            self._installed = True
        _active_monitors.append(self)
        if not self.automatic:
            return
        for cls in _compat.loop_classes():
            self._patch_loop(cls)
        _compat.when_imported("uvloop", self._on_uvloop)
        _compat.when_imported("aiohttp", self._on_aiohttp)
        _compat.when_imported("httpx", self._on_httpx)

    def uninstall(self) -> None:
        """Restore every wrapped method; the data stays readable."""
        with self._lock:
            if not self._installed:
                return
            self._installed = False
        self._patches.undo()
        self._release_strong()
        if self in _active_monitors:
            _active_monitors.remove(self)

    def end_of_program(self) -> None:
        """From now on, whatever is still open is ``resource-unclosed``."""
        self._poll()
        self._ended = True
        self._release_strong()

    def _release_strong(self) -> None:
        """Let go of the objects held only because they cannot be weakly referenced."""
        for resource in list(self._open.values()):
            resource.strong = None

    # -- wrappers -------------------------------------------------------------------

    def _patch_loop(self, cls: type) -> None:
        for name, kind in (
            ("create_connection", "transport"),
            ("create_unix_connection", "transport"),
            ("subprocess_exec", "subprocess"),
            ("subprocess_shell", "subprocess"),
        ):
            if hasattr(cls, name):
                self._patches.replace(cls, name, self._wrap_pair(getattr(cls, name), kind))
        for name in ("create_server", "create_unix_server"):
            if hasattr(cls, name):
                self._patches.replace(cls, name, self._wrap_server(getattr(cls, name)))

    def _wrap_pair(self, original: Callable[..., Any], kind: str) -> Callable[..., Any]:
        register = self.register

        async def opener(loop: Any, *args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            result = await original(loop, *args, **kwargs)
            try:
                register(result[0], kind, None, frame)
            except Exception as exc:  # noqa: BLE001
                internal_error("resource monitor: open", exc)
            return result

        return opener

    def _wrap_server(self, original: Callable[..., Any]) -> Callable[..., Any]:
        register = self.register

        async def create_server(loop: Any, *args: Any, **kwargs: Any) -> Any:
            frame = sys._getframe(1)
            server = await original(loop, *args, **kwargs)
            try:
                register(server, "server", None, frame)
            except Exception as exc:  # noqa: BLE001
                internal_error("resource monitor: open", exc)
            return server

        return create_server

    def _wrap_init(self, cls: type, kind: str) -> None:
        original = cls.__init__  # type: ignore[misc]
        register = self.register

        def __init__(obj: Any, *args: Any, **kwargs: Any) -> None:  # noqa: N807
            original(obj, *args, **kwargs)
            try:
                register(obj, kind, None, sys._getframe(1))
            except Exception as exc:  # noqa: BLE001
                internal_error("resource monitor: open", exc)

        self._patches.replace(cls, "__init__", __init__)

    def _guarded(self, what: str, patch: Callable[[], None]) -> None:
        if not self._installed:
            return
        try:
            patch()
        except Exception as exc:  # noqa: BLE001  # never break an import
            internal_error(f"resource monitor: patching {what}", exc)

    def _on_uvloop(self, module: ModuleType) -> None:
        loop = getattr(module, "Loop", None)
        if isinstance(loop, type):
            self._guarded("uvloop", lambda: self._patch_loop(loop))

    def _on_aiohttp(self, module: ModuleType) -> None:
        cls = getattr(module, "ClientSession", None)
        if isinstance(cls, type):
            self._guarded("aiohttp", lambda: self._wrap_init(cls, "http-session"))

    def _on_httpx(self, module: ModuleType) -> None:
        cls = getattr(module, "AsyncClient", None)
        if isinstance(cls, type):
            self._guarded("httpx", lambda: self._wrap_init(cls, "http-session"))

    # -- registration ---------------------------------------------------------------

    def _user_frame(self, frame: FrameType | None) -> RawLocation | None:
        assert self.registry is not None  # only called once installed
        library = self._library
        depth = 0
        while frame is not None and depth < 48:
            code = frame.f_code
            known = library.get(code)
            if known is None:
                known = library[code] = self.registry.locations.is_library(code)
            if not known:
                return code, frame.f_lineno
            frame = frame.f_back
            depth += 1
        return None

    def register(
        self, obj: Any, kind: str, name: str | None, frame: FrameType | None
    ) -> _Resource | None:
        """Start tracking `obj` (a second call only renames it)."""
        registry = self.registry
        if registry is None:
            return None
        key = id(obj)
        resource = self._open.get(key)
        if resource is not None:
            if name is not None:
                resource.name = name
            return resource
        resource = self._new(kind, name or type(obj).__qualname__, type(obj), frame)
        try:
            resource.ref = weakref.ref(obj, self._gone_callback)
        except TypeError:
            # uvloop's UVProcessTransport has no weak references: keep it until a poll
            # sees it closed (it closes itself once the process has exited and been
            # waited for), so its close is still seen.
            resource.strong = obj
            resource.observable = False
        else:
            self._ref_keys[id(resource.ref)] = key
        self._open[key] = resource
        if kind in _CLOSE_WATCHED_KINDS:
            self._watch_close(type(obj))
            resource.observable = type(obj) in self._close_wrapped
        return resource

    def _watch_close(self, cls: type) -> None:
        """Wrap the ``close`` of a transport or server class (once per class), so a
        close is seen when it happens rather than at the next snapshot."""
        if cls in self._close_watched:
            return
        self._close_watched.add(cls)
        original = getattr(cls, "close", None)
        if original is None or cls.__flags__ & _IMMUTABLE_TYPE or not hasattr(original, "__code__"):
            return  # a C class (uvloop): closes are seen by polling `is_closing`
        monitor = self

        def close(obj: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                resource = monitor._open.get(id(obj))
                if resource is not None and monitor.registry is not None:
                    monitor.mark_closed(id(obj), resource, monitor.registry.clock())
            except Exception as exc:  # noqa: BLE001
                internal_error("resource monitor: close", exc)
            return original(obj, *args, **kwargs)

        try:
            self._patches.replace(cls, "close", close)
            self._close_wrapped.add(cls)
        except (TypeError, AttributeError):
            pass  # an immutable class: polling only

    def _new(self, kind: str, name: str, cls: type, frame: FrameType | None) -> _Resource:
        assert self.registry is not None  # only called once installed
        opened_by = None
        task = current_task()
        if task is not None:
            opened_by = self.registry.live.get(id(task))
        return _Resource(
            next(self._ids),
            kind,
            name,
            f"{cls.__module__}.{cls.__qualname__}",
            self._user_frame(frame),
            opened_by,
            self.registry.clock(),
        )

    def _gone(self, ref: weakref.ref[Any]) -> None:
        key = self._ref_keys.pop(id(ref), None)
        if key is None or self.registry is None:
            return
        resource = self._open.get(key)
        if resource is None:
            return
        if resource.closed is None and resource.observable:
            del self._open[key]
            resource.collected_open = True
            self._collected.append(resource)
        else:
            # A close that could not be watched (a C transport: uvloop's) is assumed to
            # have happened by its collection: uvloop closes, and warns about, a
            # transport collected open. Without this it was reported open at exit.
            resource.ref = None
            self.mark_closed(key, resource, self.registry.clock())

    def _poll(self) -> None:
        """Move resources that report themselves closed out of the open table."""
        if self.registry is None:
            return
        now = self.registry.clock()
        for key, resource in list(self._open.items()):
            obj = resource.ref() if resource.ref is not None else resource.strong
            if obj is None:
                continue
            try:
                closed = _compat_sync.is_closed(obj)
            except Exception:  # noqa: BLE001  # a broken property: treat as unknown
                closed = None
            if closed:
                self.mark_closed(key, resource, now)

    def mark_closed(self, key: int, resource: _Resource, now: float) -> None:
        """Record that a resource was closed."""
        if resource.closed is None:
            resource.closed = now
        resource.strong = None
        if self._open.pop(key, None) is not None:
            if resource.ref is not None:
                self._ref_keys.pop(id(resource.ref), None)
                resource.ref = None
            if len(self._closed) == self._closed.maxlen:
                self._dropped += 1
            self._closed.append(resource)

    # -- sessions -------------------------------------------------------------------

    def session_started(self, name: str, kind: str, frame: FrameType | None) -> _Resource | None:
        """A `track_session` block was entered."""
        if self.registry is None:
            return None
        resource = self._new(kind, name, _SessionHandle, frame)
        resource.type_name = "taskscope.session"
        self._open[-resource.id] = resource  # negative keys: never an id() of an object
        totals = self._sessions.get(name)
        if totals is None:
            totals = self._sessions[name] = _SessionTotals(resource.opened_at)
        totals.active += 1
        return resource

    def session_ended(self, resource: _Resource, outcome: str, error: str | None) -> None:
        """A `track_session` block was exited with `outcome`."""
        if self.registry is None:
            return
        now = self.registry.clock()
        resource.outcome = outcome
        resource.error = error
        self.mark_closed(-resource.id, resource, now)
        totals = self._sessions.get(resource.name)
        if totals is None:
            return
        duration = now - resource.opened
        totals.active = max(0, totals.active - 1)
        totals.count += 1
        totals.total += duration
        totals.max = max(totals.max, duration)
        if outcome == "ok":
            totals.ok += 1
        elif outcome == "cancelled":
            totals.cancelled += 1
        else:
            totals.errors += 1

    def status(self, resource: _Resource, status: str) -> None:
        """Record a status change."""
        if self.registry is None:
            return
        if resource.statuses is None:
            resource.statuses = deque(maxlen=MAX_STATUSES)
        resource.statuses.append((self.registry.clock(), status))

    # -- reading --------------------------------------------------------------------

    def snapshot(self) -> ResourcesSnapshot:
        """Return the ``resources`` section as frozen records."""
        registry = self.registry
        if registry is None:
            return ResourcesSnapshot(False, 0, 0, 0, (), ())
        try:
            self._poll()
        except Exception as exc:  # noqa: BLE001
            internal_error("resource monitor: poll", exc)
        now = registry.clock()
        started = registry.started
        open_now = list(self._open.values())
        resources = tuple(
            _info(r, now, started) for r in open_now + list(self._collected) + list(self._closed)
        )
        sessions = tuple(
            SessionStatistics(
                name=name,
                opened_at=to_location(t.opened_at),
                count=t.count,
                ok=t.ok,
                errors=t.errors,
                cancelled=t.cancelled,
                active=t.active,
                success_rate=(t.ok / t.count) if t.count else None,
                total=t.total,
                max=t.max,
            )
            for name, t in list(self._sessions.items())
        )
        return ResourcesSnapshot(
            program_ended=self._ended,
            open=len(open_now),
            opened=next(self._ids) - 1,
            dropped=self._dropped,
            resources=resources,
            sessions=sessions,
        )

    def findings(self, snapshot: ResourcesSnapshot) -> list[Finding]:
        """Return ``resource-unclosed`` findings."""
        from ..analysis._locks import resource_findings

        return resource_findings(snapshot)


def _info(resource: _Resource, now: float, started: float) -> ResourceInfo:
    opened_by = resource.opened_by
    end = resource.closed if resource.closed is not None else now
    return ResourceInfo(
        id=resource.id,
        kind=resource.kind,
        name=resource.name,
        type=resource.type_name,
        opened_at=to_location(resource.opened_at),
        opened_by=TaskRef(opened_by.id, opened_by.current_name()) if opened_by else None,
        opened=resource.opened - started,
        closed=resource.closed - started if resource.closed is not None else None,
        duration=end - resource.opened,
        collected_open=resource.collected_open,
        statuses=tuple(StatusChange(at - started, s) for at, s in list(resource.statuses or ())),
        outcome=resource.outcome,
        error=resource.error,
    )


#: Installed resource monitors (the explicit API reports to the newest).
_active_monitors: list[ResourceMonitor] = []


# -- the explicit API ----------------------------------------------------------------------


def track_resource(obj: Any, *, kind: str = "resource", name: str | None = None) -> Any:
    """Track the lifecycle of a resource the monitor does not know by itself.

    It is closed once its ``is_closing()``, ``closed`` or ``is_closed`` says so; one
    garbage-collected before that, or still open at the end, is ``resource-unclosed``.
    Tracking the same object again only renames it. Without an installed resource
    monitor this does nothing.

    Args:
        obj: the resource (any object that supports weak references).
        kind: what it is (``db-connection``, ``file``, ...), shown in the report.
        name: a readable name (default: its type's name).

    Returns:
        `obj` itself.

    Raises:
        TypeError: `obj` is None or does not support weak references.
    """
    if obj is None:
        raise TypeError("track_resource needs the resource object, got None")
    kind_value: object = kind
    if not isinstance(kind_value, str) or not kind:
        raise TypeError(f"track_resource kind must be a non-empty string, got {kind!r}")
    try:
        weakref.ref(obj)
    except TypeError:
        raise TypeError(
            f"track_resource cannot track {type(obj).__qualname__} objects: they do not "
            "support weak references; wrap its use in 'async with track_session(...)' instead"
        ) from None
    if _active_monitors:
        _active_monitors[-1].register(obj, kind, name, sys._getframe(1))
    return obj


class _SessionHandle:
    """What ``async with track_session(...)`` yields: report status changes on it."""

    __slots__ = ("_monitor", "_resource")

    def __init__(self, monitor: ResourceMonitor | None, resource: _Resource | None) -> None:
        self._monitor = monitor
        self._resource = resource

    def status(self, status: str) -> None:
        """Record that the session is now in `status` (``connecting``, ``ready``...)."""
        if self._monitor is not None and self._resource is not None:
            try:
                self._monitor.status(self._resource, str(status))
            except Exception as exc:  # noqa: BLE001
                internal_error("track_session: status", exc)


class track_session:  # noqa: N801  # used like a function: async with track_session(...)
    """Record a session (a connection, a conversation, a job) from start to end.

    ``async with track_session("mcp", kind="client") as session: session.status("ready")``.
    The outcome is ``ok``, ``error`` (an exception left the block) or ``cancelled``;
    the ``resources`` section gives each name's count and success rate, and a session
    still open at the end is ``resource-unclosed``. Works (as a no-op) without a
    resource monitor.

    Args:
        name: sessions with the same name are aggregated.
        kind: shown as the resource kind (default ``session``).
    """

    __slots__ = ("_handle", "_kind", "_monitor", "_name", "_resource")

    def __init__(self, name: str, *, kind: str = "session") -> None:
        value: object = name
        if not isinstance(value, str) or not value:
            raise TypeError(f"track_session needs a non-empty name string, got {name!r}")
        self._name = name
        self._kind = kind
        self._monitor: ResourceMonitor | None = None
        self._resource: _Resource | None = None

    async def __aenter__(self) -> _SessionHandle:
        monitor = _active_monitors[-1] if _active_monitors else None
        resource = None
        if monitor is not None:
            try:
                resource = monitor.session_started(self._name, self._kind, sys._getframe(1))
            except Exception as exc:  # noqa: BLE001
                internal_error("track_session", exc)
        self._monitor, self._resource = monitor, resource
        return _SessionHandle(monitor, resource)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._monitor is None or self._resource is None:
            return
        if exc_type is None:
            outcome, error = "ok", None
        elif _is_cancellation(exc_type):
            outcome, error = "cancelled", None
        else:
            outcome, error = "error", exc_type.__qualname__
        try:
            self._monitor.session_ended(self._resource, outcome, error)
        except Exception as error_:  # noqa: BLE001
            internal_error("track_session", error_)


def _is_cancellation(exc_type: type[BaseException]) -> bool:
    import asyncio

    if issubclass(exc_type, asyncio.CancelledError):
        return True
    trio = sys.modules.get("trio")
    return trio is not None and issubclass(exc_type, trio.Cancelled)
