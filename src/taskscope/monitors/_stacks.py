"""Sampling another thread's stack, and naming the blocking call it is stuck in.

Runs on the watchdog thread only. Frames are kept as ``(code, line)`` pairs and
formatted when reported, so a sample never keeps a frame (and its locals) alive.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
from typing import TYPE_CHECKING, Final

from ._records import BlockingCall

if TYPE_CHECKING:
    from .._core._location import LocationFilter, RawLocation

#: Frames kept per sample (innermost first): deep enough for the user's code under a
#: framework's stack, small enough for a report.
MAX_FRAMES: Final = 48

_SEP: Final = os.sep
#: Library modules whose frames name a blocking call: (path fragment, module, category).
_MODULES: Final = (
    (f"{_SEP}http{_SEP}client.py", "http.client", "http"),
    (f"{_SEP}urllib{_SEP}request.py", "urllib.request", "http"),
    (f"{_SEP}requests{_SEP}", "requests", "http"),
    (f"{_SEP}urllib3{_SEP}", "urllib3", "http"),
    (f"{_SEP}httpx{_SEP}", "httpx", "http"),
    (f"{_SEP}ssl.py", "ssl", "ssl"),
    (f"{_SEP}socket.py", "socket", "socket"),
    (f"{_SEP}selectors.py", "selectors", "socket"),
    (f"{_SEP}subprocess.py", "subprocess", "subprocess"),
    (f"{_SEP}threading.py", "threading", "lock"),
    (f"{_SEP}queue.py", "queue", "lock"),
    (f"{_SEP}concurrent{_SEP}futures{_SEP}", "concurrent.futures", "lock"),
)
#: For modules that also have fast functions: the ones that block (a wait of some kind).
_BLOCKING_ONLY: Final = {
    "threading": frozenset({"wait", "acquire", "join", "_wait_for_tstate_lock", "wait_for"}),
    "queue": frozenset({"get", "put", "join"}),
    "concurrent.futures": frozenset({"result", "exception", "wait", "as_completed"}),
    "selectors": frozenset({"select"}),
}
_DNS_FUNCTIONS: Final = frozenset(
    {"getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr", "getfqdn"}
)

#: Patterns for a C function called from the user's line (innermost Python frame):
#: (regex over the source line, function name or None for the matched text, category).
_LINE_PATTERNS: Final[tuple[tuple[re.Pattern[str], str | None, str], ...]] = tuple(
    (re.compile(pattern), name, category)
    for pattern, name, category in (
        (r"\btime\.sleep\s*\(", "time.sleep", "sleep"),
        (r"(?<![\w.])sleep\s*\(", "time.sleep", "sleep"),
        (r"\b(?:socket\.)?(getaddrinfo|gethostbyname(?:_ex)?|gethostbyaddr)\s*\(", None, "dns"),
        (r"\b(?:requests|httpx|urllib3)\.\w+", None, "http"),
        (r"\burlopen\s*\(", "urllib.request.urlopen", "http"),
        (r"\bsubprocess\.\w+", None, "subprocess"),
        (r"\bos\.(?:system|popen|waitpid|wait)\b", None, "subprocess"),
        (
            r"[\w.]*\.(?:recv|recv_into|recvfrom|recvfrom_into|accept|connect|sendall|sendto)\s*\(",
            None,
            "socket",
        ),
        (r"[\w.]*\.(?:acquire|join|wait|result)\s*\(", None, "lock"),
        (r"(?<![\w.])input\s*\(", "input", "stdin"),
        (r"\bos\.(?:read|write|fsync)\s*\(", None, "file"),
        (r"(?<![\w.])open\s*\(", "open", "file"),
        (r"[\w.]*\.(?:read|readline|readlines|write|flush)\s*\(", None, "file"),
    )
)


def sample_stack(thread_id: int, limit: int = MAX_FRAMES) -> list[RawLocation] | None:
    """Return the stack of thread `thread_id`, innermost first, or None if it is gone."""
    frame = sys._current_frames().get(thread_id)
    if frame is None:
        return None
    frames: list[RawLocation] = []
    while frame is not None and len(frames) < limit:
        frames.append((frame.f_code, frame.f_lineno))
        frame = frame.f_back
    del frame
    return frames


def thread_holds_frame(thread_id: int, target: object, limit: int = 256) -> bool:
    """Return True if `target` (a frame) is on the stack of thread `thread_id`."""
    frame = sys._current_frames().get(thread_id)
    while frame is not None and limit > 0:
        if frame is target:
            return True
        frame = frame.f_back
        limit -= 1
    return False


def innermost_user(
    frames: list[RawLocation], locations: LocationFilter
) -> tuple[int, RawLocation] | None:
    """Return (index, frame) of the innermost user frame of `frames` (innermost first)."""
    is_library = locations.is_library
    for index, raw in enumerate(frames):
        if not is_library(raw[0]):
            return index, raw
    return None


def _module_of(filename: str) -> tuple[str, str] | None:
    for fragment, module, category in _MODULES:
        if fragment in filename:
            return module, category
    return None


def classify(frames: list[RawLocation], user_index: int | None) -> BlockingCall | None:
    """Name the blocking call of a sample (`frames` innermost first).

    Library frames between the top of the stack and the user's frame tell first (the
    one nearest the user's code is what the user called: ``requests.get``, not
    ``socket.recv_into``); otherwise, when the user's frame is the innermost Python
    frame, it called a C function, named from its source line (``time.sleep(...)``).
    """
    library = frames if user_index is None else frames[:user_index]
    found: BlockingCall | None = None
    for code, _line in library:
        known = _module_of(code.co_filename)
        if known is None:
            continue
        module, category = known
        name = code.co_name
        blocking_names = _BLOCKING_ONLY.get(module)
        if blocking_names is not None and name not in blocking_names:
            continue
        if module == "socket" and name in _DNS_FUNCTIONS:
            category = "dns"
        if found is None or found.category != "http" or category == "http":
            found = BlockingCall(function=f"{module}.{code.co_qualname}", category=category)
    if found is not None or user_index is None or user_index != 0:
        return found
    code, line = frames[0]
    if not line:  # no line number (f_lineno is None mid-instruction on 3.12+)
        return None
    text = linecache.getline(code.co_filename, line).strip()
    if not text or text.startswith("#"):
        return None
    text = text.split("#", 1)[0]
    for pattern, known_name, line_category in _LINE_PATTERNS:
        match = pattern.search(text)
        if match is not None:
            called = known_name or match.group(0).rstrip("( \t").lstrip(".")
            return BlockingCall(function=called, category=line_category)
    return None
