"""The summary's lines about cancellation: cancel-scope statistics and errors, why
tasks were cancelled (and by which lines), and the real errors of failed task groups.

Kept apart from `_summary` (which calls `cancellation_lines`) so each monitor's lines
live in their own module. Every line is plain text; rich prints them as they are.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Callable

#: How many scope errors, requester lines and failed groups are listed.
TOP: Final = 3


def _plural(count: int, word: str) -> str:
    return f"{count:,} {word}" if count == 1 else f"{count:,} {word}s"


def _who(task: dict[str, Any] | None) -> str:
    return f"task {task['name']!r} (#{task['id']})" if task else "an untracked task"


def scope_statistics_line(scopes: dict[str, Any]) -> str | None:
    """``cancel scopes: N entered, C cancelled (T timed out), E errors (rate r%)``."""
    if not scopes.get("available", True) and not scopes["statistics"]["entered"]:
        return f"cancel scopes: not tracked ({scopes.get('unavailable_reason')})"
    stats = scopes["statistics"]
    return (
        f"cancel scopes: {stats['entered']:,} entered, {stats['cancelled']:,} cancelled "
        f"({stats['timed_out']:,} timed out), {_plural(stats['errors'], 'error')} "
        f"(rate {stats['error_rate'] * 100:.2f}%)"
    )


def scope_error_lines(scopes: dict[str, Any], where: Callable[[Any], str]) -> list[str]:
    """Two lines per scope error: kind, entering task and line; exiting task and line."""
    lines = []
    for error in list(scopes.get("errors", ()))[:TOP]:
        scope = error["scope"]
        kind = "cross-task" if error["kind"].endswith("cross-task") else "misnested"
        owner = f" [{error['owner'].replace('_', ' ')}" + (
            f" {error['owner_name']}]" if error.get("owner_name") else "]"
        )
        lines.append(
            f"  {kind}: {scope['kind'].replace('_', ' ')} entered by {_who(scope['task'])} "
            f"at {where(scope['entered_at'])}"
        )
        lines.append(
            f"    -> exited by {_who(error['exited_by'])} at {where(error['exited_at'])}"
            f"{owner if error['owner'] != 'unknown' else ''}"
        )
    more = len(scopes.get("errors", ())) - TOP
    if more > 0:
        lines.append(f"  ... and {more} more (see the report's scopes.errors)")
    return lines


def cancelled_lines(tasks: list[dict[str, Any]], where: Callable[[Any], str]) -> list[str]:
    """Why tasks were cancelled: counts per cause, and the lines that asked most."""
    causes: Counter[str] = Counter()
    sites: Counter[str] = Counter()
    for task in tasks:
        cancellation = task.get("cancellation")
        if task.get("state") != "cancelled" or not cancellation or task.get("internal"):
            continue
        causes[cancellation["cause"]] += 1
        if cancellation.get("location"):
            sites[where(cancellation["location"])] += 1
    if not causes:
        return []
    total = sum(causes.values())
    by_cause = ", ".join(f"{cause} {count:,}" for cause, count in causes.most_common())
    lines = [f"cancelled tasks: {total:,} ({by_cause})"]
    lines.extend(f"  {count:,} cancelled from {site}" for site, count in sites.most_common(TOP))
    return lines


def failed_group_lines(tasks: list[dict[str, Any]], where: Callable[[Any], str]) -> list[str]:
    """Tasks that failed with an exception group: the real errors first, with lines."""
    lines = []
    for task in tasks:
        exc = task.get("exception") or {}
        errors = exc.get("real_errors") or ()
        if task.get("state") != "failed" or not errors:
            continue
        first = errors[0]
        extra = len(errors) - 1
        siblings = f", {exc.get('cancelled', 0)} cancelled" if exc.get("cancelled") else ""
        lines.append(
            f"  {_who(task)}: {first['type']}: {first['message']} at "
            f"{where(first['location'])}"
            + (f" (+{extra} more)" if extra > 0 else "")
            + f" [in {exc['type']}{siblings}]"
        )
    if not lines:
        return []
    return ["failed task groups (real errors first):", *lines[:TOP]] + (
        [f"  ... and {len(lines) - TOP} more"] if len(lines) > TOP else []
    )


def cancellation_lines(report: dict[str, Any], where: Callable[[Any], str]) -> list[str]:
    """Return every cancellation line of the summary, in order (empty when none)."""
    lines: list[str] = []
    scopes = report.get("scopes")
    if scopes:
        statistics = scope_statistics_line(scopes)
        if statistics is not None:
            lines.append(statistics)
        lines.extend(scope_error_lines(scopes, where))
    tasks = list(report.get("tasks", ()))
    lines.extend(cancelled_lines(tasks, where))
    lines.extend(failed_group_lines(tasks, where))
    return lines
