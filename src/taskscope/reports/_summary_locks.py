"""The console summary's lines about locks, resources and sessions (issue 4).

Rendered from the report's ``locks`` and ``resources`` sections, as plain strings: a
line that does not start with a space is a heading, the indented ones are its details.
`Summary` shows them the same way with and without rich.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

#: How many of the most contended primitives are listed.
TOP_CONTENDED: Final = 3
#: How many current holds and unclosed resources are listed (then "... and N more").
TOP_LISTED: Final = 5
_LABEL: Final = 16


def _duration(seconds: float) -> str:
    if seconds >= 1:
        return f"{seconds:.2f} s"
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1_000_000:.0f} us"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _name(primitive: dict[str, Any]) -> str:
    """A primitive's name, with its type when the name does not already say it."""
    name = str(primitive["name"])
    kind = str(primitive["type"])
    return name if name.startswith(kind) else f"{name} ({kind})"


def _task(task: dict[str, Any] | None) -> str:
    return f"task {task['name']!r} (#{task['id']})" if task else "a borrower that is not a task"


def _detail(label: str, text: str) -> str:
    return f"  {label:<{_LABEL}}{text}"


def _more(lines: list[str], total: int) -> list[str]:
    if total > TOP_LISTED:
        lines.append(_detail("", f"... and {total - TOP_LISTED} more (see the report)"))
    return lines


def lock_lines(report: dict[str, Any], where: Callable[[dict[str, Any] | None], str]) -> list[str]:
    """Return the ``locks`` lines: the most contended primitives (contention, wait p99)
    and everything held right now (holder, since when, acquire site)."""
    locks = report.get("locks")
    if not locks:
        return []
    primitives = list(locks.get("primitives", ()))
    used = [p for p in primitives if p.get("acquisitions") or p.get("waits")]
    # Most contended: the most acquisitions that had to wait, then the largest share.
    contended = sorted(
        (p for p in used if p.get("contention")),
        key=lambda p: (-p["waits"], -p["contention"]),
    )
    held = [(p, h) for p in primitives for h in p.get("holders", ())]
    held.sort(key=lambda pair: -pair[1]["held_for"])
    if not used and not held:
        return []
    lines = [
        (
            f"locks: {len(used)} used, {len(contended)} contended, "
            f"{_plural(len(held), 'hold')} still in progress"
        )
    ]
    lines.extend(
        _detail(
            "most contended",
            f"{_name(primitive)}: {primitive['contention'] * 100:.0f}% of "
            f"{_plural(primitive['acquisitions'], 'acquisition')} waited, "
            f"wait p99 {_duration(primitive['wait']['p99'])}",
        )
        for primitive in contended[:TOP_CONTENDED]
    )
    for primitive, hold in held[:TOP_LISTED]:
        ended = ", and its task has ended" if hold.get("task_ended") else ""
        lines.append(
            _detail(
                "still held",
                f"{_name(primitive)} by {_task(hold.get('task'))} for "
                f"{_duration(hold['held_for'])}{ended}; acquired at "
                f"{where(hold.get('acquired_at'))}",
            )
        )
    return _more(lines, len(held))


def resource_lines(
    report: dict[str, Any], where: Callable[[dict[str, Any] | None], str]
) -> list[str]:
    """Return the ``resources`` lines: unclosed resources with their open sites, and
    each session name's success rate."""
    resources = report.get("resources")
    if not resources:
        return []
    ended = bool(resources.get("program_ended"))
    unclosed = [
        r
        for r in resources.get("resources", ())
        if r.get("closed") is None and (r.get("collected_open") or ended)
    ]
    sessions = list(resources.get("sessions", ()))
    if not resources.get("opened") and not unclosed and not sessions:
        return []
    lines = [
        (
            f"resources: {resources.get('opened', 0)} opened, "
            f"{resources.get('open', 0)} open now, {len(unclosed)} unclosed"
        )
    ]
    for resource in unclosed[:TOP_LISTED]:
        how = "collected while open" if resource.get("collected_open") else "open at exit"
        lines.append(
            _detail(
                "unclosed",
                f"{resource['kind']} {resource['name']} ({how} after "
                f"{_duration(resource['duration'])}), opened at {where(resource.get('opened_at'))}",
            )
        )
    _more(lines, len(unclosed))
    for session in sessions:
        finished = session["ok"] + session["errors"] + session["cancelled"]
        rate = session.get("success_rate")
        shown = f"{rate * 100:.0f}%" if rate is not None else "none finished"
        lines.append(
            _detail(
                "session",
                f"{session['name']}: {session['ok']} of {finished} ok ({shown}), "
                f"{_plural(session['errors'], 'error')}, {session['cancelled']} cancelled, "
                f"{session['active']} open",
            )
        )
    return lines


def wrap_lines(lines: list[str], width: int) -> list[str]:
    """Wrap detail lines at `width` columns, continuing under their text."""
    indent = " " * (2 + _LABEL)
    wrapped: list[str] = []
    for line in lines:
        if len(line) <= width or not line.startswith(" "):
            wrapped.append(line)
            continue
        wrapped.extend(
            textwrap.wrap(
                line,
                max(width, len(indent) + 20),
                subsequent_indent=indent,
                break_long_words=False,
                break_on_hyphens=False,
            )
        )
    return wrapped
