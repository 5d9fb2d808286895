"""Find the user's line: the innermost frame that is not in a library we see through.

Capturing a full ``traceback.extract_stack()`` per task is what makes other task
trackers 10x slower, so the hot path keeps only a ``(code, lineno)`` pair and decides
"library or user?" once per code object. Formatting to file/line/function happens
later, off the hot path.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from types import CodeType, FrameType, TracebackType
from typing import Final

from ._exceptions import cancellation_count, real_errors
from ._records import Location

#: A raw location: a code object and a line number, formatted only when reported.
RawLocation = tuple[CodeType, int]

#: Packages whose frames are never "the user's line" (DESIGN.md, principle 4).
_LIBRARY_PACKAGES: Final = (
    "asyncio",
    "anyio",
    "trio",
    "sniffio",
    "outcome",
    "uvloop",
    "concurrent",
    "taskscope",
    # A test runner's frames are never the user's line: the test is.
    "_pytest",
    "pluggy",
)
#: Standard-library modules (single files) that are equally invisible.
_LIBRARY_MODULES: Final = ("contextlib", "threading", "selectors", "runpy", "functools")

#: Code shipped inside taskscope that *is* user code: the demo service points at its
#: own planted mistakes.
_USER_SUBPACKAGES: Final = ("taskscope.demo",)


def _package_dirs(names: tuple[str, ...]) -> list[str]:
    """Return each package's directory (or module file), as found and resolved.

    Both spellings are kept, because code objects carry the path the module was
    imported by, and resolving symlinks at lookup time would be file-system I/O on the
    event loop (which AnyIO's blockbuster, rightly, calls blocking).
    """
    dirs: list[str] = []
    for name in names:
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None:
            continue
        paths = list(spec.submodule_search_locations or ())
        if spec.origin and os.path.isabs(spec.origin) and not paths:
            paths.append(spec.origin)
            suffix = ""
        else:
            suffix = os.sep
        for path in paths:
            forms = {os.path.normpath(path), os.path.realpath(path)}
            dirs.extend(form + suffix if suffix else form for form in forms)
    return dirs


class LocationFilter:
    """Decides, once per code object, whether a frame belongs to a library."""

    __slots__ = ("_cache", "_cached_codes", "_library_prefixes", "_user_prefixes")

    def __init__(self) -> None:
        self._library_prefixes = tuple(_package_dirs(_LIBRARY_PACKAGES + _LIBRARY_MODULES))
        self._user_prefixes = tuple(_package_dirs(_USER_SUBPACKAGES))
        #: Verdicts by ``id()`` of the code object: hashing a code object hashes its
        #: bytecode and constants (~800 instructions), an int costs nothing, and this
        #: runs for several frames of every new task.
        self._cache: dict[int, bool] = {}
        #: Keeps every cached code object alive, so that its id() is never reused.
        self._cached_codes: list[CodeType] = []

    def is_library(self, code: CodeType) -> bool:
        """Return True when frames of `code` are to be looked through."""
        known = self._cache.get(id(code))
        if known is not None:
            return known
        filename = code.co_filename
        if filename.startswith("<frozen "):
            result = True
        elif not os.path.isabs(filename) and filename.split("/", 1)[0] in _LIBRARY_PACKAGES:
            # Compiled extensions (uvloop's Cython) name their source relative to the
            # package: "uvloop/loop.pyx".
            result = True
        else:
            # Pure string work: no file-system access on the event loop.
            path = os.path.normpath(filename) if os.path.isabs(filename) else filename
            result = path.startswith(self._library_prefixes) and not path.startswith(
                self._user_prefixes
            )
        # Code objects live as long as their module, so this cache is bounded by the
        # amount of code in the program, not by the number of tasks.
        self._cached_codes.append(code)
        self._cache[id(code)] = result
        return result

    def user_frame(
        self,
        frame: FrameType | None,
        *,
        limit: int = 64,
        stop_at: frozenset[CodeType] = frozenset(),
        entry_points: frozenset[CodeType] = frozenset(),
        direct_calls: frozenset[CodeType] = frozenset(),
    ) -> RawLocation | None:
        """Return the innermost user frame at or above `frame`, as a raw location.

        The walk stops (returning None) at a frame whose code is in `stop_at`: the
        event loop's own callback dispatch, above which lies code that did not cause
        this event. It also stops at an `entry_points` frame (``Runner.run``, which a
        C loop such as uvloop dispatches callbacks under), unless the frame it came
        from is one of `direct_calls`: then the entry point itself made the call (as
        ``asyncio.run`` creates the main task) and its caller is the user's line.
        """
        is_library = self.is_library
        previous: CodeType | None = None
        while frame is not None and limit > 0:
            code = frame.f_code
            if code in stop_at or (code in entry_points and previous not in direct_calls):
                return None
            if not is_library(code):
                return code, frame.f_lineno
            previous = code
            frame = frame.f_back
            limit -= 1
        return None

    def stack(self, frame: FrameType | None, *, limit: int = 32) -> list[RawLocation]:
        """Return up to `limit` frames from `frame` outwards, innermost first."""
        frames: list[RawLocation] = []
        while frame is not None and len(frames) < limit:
            frames.append((frame.f_code, frame.f_lineno))
            frame = frame.f_back
        return frames

    def traceback_frames(self, tb: TracebackType | None, *, limit: int = 32) -> list[RawLocation]:
        """Return the frames of a traceback, outermost first (as Python prints them)."""
        frames: list[RawLocation] = []
        while tb is not None:
            frames.append((tb.tb_frame.f_code, tb.tb_lineno))
            tb = tb.tb_next
        return frames[-limit:]

    def describe_exception(self, exc: BaseException) -> tuple[str, str, list[RawLocation]]:
        """Extract an exception's type, message and frames, keeping none of it alive."""
        try:
            message = str(exc)
        except Exception:  # noqa: BLE001  # a broken __str__ must not break the report
            message = f"<unprintable {type(exc).__qualname__}>"
        return type(exc).__qualname__, message, self.traceback_frames(exc.__traceback__)

    def describe_group(
        self, exc: BaseException
    ) -> tuple[list[tuple[str, str, list[RawLocation]]], int] | None:
        """For an exception group, describe its real errors (the leaves that are not
        cancellations, in order) and count its cancellations; None for other errors."""
        if not isinstance(exc, BaseExceptionGroup):
            return None
        errors = [self.describe_exception(error) for error in real_errors(exc)]
        return errors, cancellation_count(exc)

    def innermost_user(self, frames: list[RawLocation]) -> RawLocation | None:
        """Return the innermost user frame of a list ordered outermost first."""
        for code, line in reversed(frames):
            if not self.is_library(code):
                return code, line
        return None


_default_filter: LocationFilter | None = None


def default_filter() -> LocationFilter:
    """Return the process-wide filter (building it resolves package paths once)."""
    global _default_filter  # noqa: PLW0603  # a lazily built, process-wide cache
    if _default_filter is None:
        _default_filter = LocationFilter()
    return _default_filter


def to_location(raw: RawLocation | None) -> Location | None:
    """Format a raw location for reporting (slow path)."""
    if raw is None:
        return None
    code = raw[0]
    # A frame of compiled code (Cython) may have no line number (None, despite typing).
    line = raw[1] or code.co_firstlineno or 1
    filename = code.co_filename
    if os.path.isabs(filename):
        filename = os.path.normpath(filename)
    return Location(file=filename, line=line, function=code.co_qualname)


def code_location(code: CodeType | None) -> RawLocation | None:
    """Return where a function is defined, as a raw location."""
    if code is None:
        return None
    return code, code.co_firstlineno


def caller_frame(depth: int) -> FrameType | None:
    """Return the frame `depth` levels above the caller, or None if the stack is shorter."""
    try:
        return sys._getframe(depth + 1)
    except ValueError:
        return None
