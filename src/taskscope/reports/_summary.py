"""The console summary: a few lines on stderr saying what went wrong and where."""

from __future__ import annotations

from typing import IO, Any


def print_summary(report: dict[str, Any], *, file: IO[str]) -> None:
    """Print the summary of a report dict (plain text; rich rendering when available)."""
    summary = report["summary"]
    counts = summary["findings"]
    file.write(
        f"taskscope: {summary['tasks_created']} tasks, "
        f"{counts['error']} errors, {counts['warning']} warnings\n"
    )
    for finding in report["findings"]:
        loc = finding["location"]
        where = f"{loc['file']}:{loc['line']} in {loc['function']}" if loc else "unknown location"
        file.write(f"  {finding['severity']:<7} {finding['kind']}: {where}\n")
