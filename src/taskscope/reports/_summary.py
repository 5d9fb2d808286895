"""The console summary: what went wrong, where, and which creation sites were busiest.

`Summary` renders a report dict (so a saved report renders exactly like a live one):
with rich when it is installed (it is the ``cli`` extra), as plain text otherwise.
Both show the same lines in the same order.
"""

from __future__ import annotations

import os
import sys
import textwrap
from typing import IO, TYPE_CHECKING, Any, Final

from ._summary_scopes import cancellation_lines

if TYPE_CHECKING:
    from rich.console import Console, ConsoleOptions, RenderResult

#: How many creation sites the summary lists.
TOP_SITES: Final = 5
#: How many stalls the summary lists.
TOP_STALLS: Final = 3
#: Columns of the plain-text rendering (rich uses the console's width).
PLAIN_WIDTH: Final = 100
_INDENT: Final = 9
#: Plain-text widths of the site and coroutine columns (the numbers take 40).
_SITE_WIDTH: Final = 32
_COROUTINE_WIDTH: Final = 24
_SEVERITY_STYLES: Final = {"error": "bold red", "warning": "yellow", "info": "blue"}
_SITE_HEADERS: Final = ("creation site", "coroutine", "tasks", "alive", "failed", "busy", "longest")


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" if count == 1 else f"{count} {word}s"


def _milliseconds(seconds: float) -> str:
    if seconds >= 0.001:
        return f"{seconds * 1000:.1f} ms"
    return f"{seconds * 1_000_000:.0f} us"


class Summary:
    """A renderable summary of one report dict.

    Args:
        report: a ``taskscope.report/1`` dict.
        report_path: where the report was written, shown on the last line.
        cwd: paths under this directory are shown relative to it (default: the
            current directory).
        top_sites: how many creation sites to list.
        import_roots: directories that other files are shown relative to (default:
            the absolute entries of ``sys.path``).
    """

    def __init__(
        self,
        report: dict[str, Any],
        *,
        report_path: str | None = None,
        cwd: str | None = None,
        top_sites: int = TOP_SITES,
        import_roots: list[str] | None = None,
    ) -> None:
        self.report = report
        self.report_path = report_path
        self.cwd = os.path.join(cwd if cwd is not None else os.getcwd(), "")
        self.top_sites = top_sites
        self.import_roots = tuple(
            os.path.join(entry, "")
            for entry in (sys.path if import_roots is None else import_roots)
            if entry and os.path.isabs(entry)
        )

    # -- content (shared by both renderings) ------------------------------------------

    def path(self, file: str) -> str:
        """Shorten `file`: relative to the working directory when it lies inside it,
        else to the longest ``sys.path`` entry holding it (``asyncio/tasks.py``)."""
        if file.startswith(self.cwd):
            return file[len(self.cwd) :]
        best = ""
        for entry in self.import_roots:
            if file.startswith(entry) and len(entry) > len(best):
                best = entry
        return file[len(best) :] if best else file

    def where(self, location: dict[str, Any] | None) -> str:
        """Format a location as ``file:line in function``."""
        if location is None:
            return "unknown location"
        return f"{self.path(location['file'])}:{location['line']} in {location['function']}"

    def wrap(self, message: str, width: int) -> list[str]:
        """Wrap a finding's message under its kind, indented."""
        indent = " " * _INDENT
        return textwrap.wrap(
            message, max(width, _INDENT + 20), initial_indent=indent, subsequent_indent=indent
        )

    def site(self, location: dict[str, Any] | None) -> str:
        """Format a creation site as ``file:line`` (the coroutine has its own column)."""
        if location is None:
            return "unknown"
        return f"{self.path(location['file'])}:{location['line']}"

    def header(self) -> str:
        """Return the first line: task counts and finding counts."""
        summary = self.report["summary"]
        counts = summary["findings"]
        problems = f"{_plural(counts['error'], 'error')}, {_plural(counts['warning'], 'warning')}"
        return (
            f"taskscope: {summary['tasks_created']} tasks created, "
            f"{summary['tasks_finished']} finished, {summary['tasks_alive']} alive; {problems}"
        )

    def findings(self) -> list[tuple[str, str, str, str, str | None]]:
        """Return (severity, kind, where, message, task) for every finding, in order."""
        rows: list[tuple[str, str, str, str, str | None]] = []
        for finding in self.report["findings"]:
            task = finding.get("task")
            # Name the task only where the message does not already.
            who = (
                f"task {task['name']!r} (#{task['id']})"
                if task and repr(task["name"]) not in finding["message"]
                else None
            )
            rows.append(
                (
                    finding["severity"],
                    finding["kind"],
                    self.where(finding.get("location")),
                    finding["message"],
                    who,
                )
            )
        return rows

    def sites(self) -> list[tuple[str, ...]]:
        """Return the table rows of the creation sites with the most busy time.

        Sites whose finished tasks were never busy are left out: they are not where the
        time went (and include asyncio's own shutdown tasks).
        """
        sites = sorted(
            (s for s in self.report.get("sites", ()) if s["busy"] > 0),
            key=lambda s: (-s["busy"], -s["created"]),
        )[: self.top_sites]
        return [
            (
                self.site(s["location"]),
                s["coroutine"],
                str(s["created"]),
                str(s["alive"]),
                str(s["failed"]),
                _milliseconds(s["busy"]),
                _milliseconds(s["longest_step"]),
            )
            for s in sites
        ]

    def loop_line(self) -> str | None:
        """Return the event-loop health line, when the report has a ``loop`` section."""
        loop = self.report.get("loop")
        if not loop:
            return None
        lag = loop["lag"]
        stalls = loop["stalls_total"]
        text = (
            f"event loop: {_plural(stalls, 'stall')}, "
            f"{_milliseconds(loop['blocked_time'])} blocked "
            f"({loop['blocked_fraction'] * 100:.1f}% of the run)"
        )
        if lag["count"]:
            text += f"; lag p50 {_milliseconds(lag['p50'])}, p99 {_milliseconds(lag['p99'])}"
            text += f", max {_milliseconds(lag['max'])}"
        return text

    def stalls(self) -> list[str]:
        """Return one line per worst stall: duration, task, blocking line and call."""
        loop = self.report.get("loop") or {}
        lines = []
        for stall in list(loop.get("stalls", ()))[:TOP_STALLS]:
            tasks = stall["tasks"]
            who = f"task {tasks[0]['name']!r} (#{tasks[0]['id']})" if tasks else "a callback"
            call = f" in {stall['blocking']['function']}" if stall.get("blocking") else ""
            still = " (ongoing)" if stall["ongoing"] else ""
            lines.append(
                f"  {_milliseconds(stall['duration'])}{still}  {who}{call}  "
                f"at {self.where(stall.get('location'))}"
            )
        return lines

    def locks_lines(self, width: int | None = None) -> list[str]:
        """Return the lines about locks, resources and sessions (see `_summary_locks`),
        wrapped at `width` columns when given."""
        from ._summary_locks import lock_lines, resource_lines, wrap_lines

        lines = lock_lines(self.report, self.where) + resource_lines(self.report, self.where)
        return lines if width is None else wrap_lines(lines, width)

    def footer(self) -> str | None:
        """Return the last line, naming the report file, if one was written."""
        return f"report: {self.report_path}" if self.report_path else None

    # -- rich -------------------------------------------------------------------------

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        """Render with rich: styled severities and a table of creation sites."""
        from rich import box
        from rich.table import Table
        from rich.text import Text

        yield Text(self.header(), style="bold")
        indent = " " * _INDENT
        findings = self.findings()
        for severity, kind, where, message, who in findings:
            yield Text.assemble(
                (f"{severity:<{_INDENT}}", _SEVERITY_STYLES.get(severity, "")),
                (kind, "bold"),
                "  ",
                (where, "cyan"),
            )
            for line in self.wrap(message, options.max_width):
                yield Text(line)
            if who is not None:
                yield Text(indent + who, style="dim")
        if not findings:
            yield Text("no problems found", style="green")
        for line in self.locks_lines(options.max_width):
            yield Text(line, style="" if line.startswith(" ") else "bold")
        loop_line = self.loop_line()
        if loop_line is not None:
            yield Text(loop_line, style="bold")
            for line in self.stalls():
                yield Text(line)
        for line in cancellation_lines(self.report, self.where):
            yield Text(line, style="" if line.startswith(" ") else "bold")
        sites = self.sites()
        if sites:
            yield Text("busiest creation sites", style="bold")
            table = Table(
                box=box.SIMPLE_HEAD,
                padding=(0, 1),
                collapse_padding=True,
                show_edge=False,
                pad_edge=False,
            )
            table.add_column(_SITE_HEADERS[0], overflow="fold", min_width=12)
            table.add_column(_SITE_HEADERS[1], overflow="fold", min_width=8)
            for name in _SITE_HEADERS[2:]:
                table.add_column(name, justify="right", no_wrap=True, min_width=len(name))
            for row in sites:
                table.add_row(*_clip_row(row))
            yield table
        footer = self.footer()
        if footer is not None:
            yield Text(footer)

    # -- plain text -------------------------------------------------------------------

    def plain(self, width: int = PLAIN_WIDTH) -> str:
        """Render as plain text lines of at most `width` columns (except long paths)."""
        lines = [self.header()]
        findings = self.findings()
        indent = " " * _INDENT
        for severity, kind, where, message, who in findings:
            lines.append(f"{severity:<{_INDENT}}{kind}  {where}")
            lines.extend(self.wrap(message, width))
            if who is not None:
                lines.append(indent + who)
        if not findings:
            lines.append("no problems found")
        lines.extend(self.locks_lines(width))
        loop_line = self.loop_line()
        if loop_line is not None:
            lines.append(loop_line)
            lines.extend(self.stalls())
        lines.extend(cancellation_lines(self.report, self.where))
        sites = self.sites()
        if sites:
            lines.append("busiest creation sites")
            rows = [_SITE_HEADERS, *(_clip_row(row) for row in sites)]
            widths = [max(len(row[i]) for row in rows) for i in range(len(_SITE_HEADERS))]
            for number, row in enumerate(rows):
                cells = [
                    cell.ljust(widths[i]) if i < 2 else cell.rjust(widths[i])
                    for i, cell in enumerate(row)
                ]
                lines.append("  ".join(cells).rstrip())
                if number == 0:
                    lines.append("  ".join("-" * w for w in widths))
        footer = self.footer()
        if footer is not None:
            lines.append(footer)
        return "\n".join(lines) + "\n"


def _clip(text: str, limit: int) -> str:
    """Keep the end of `text` (the file name and line) when it is too long."""
    return text if len(text) <= limit else "..." + text[len(text) - limit + 3 :]


def _clip_row(row: tuple[str, ...]) -> tuple[str, ...]:
    return (_clip(row[0], _SITE_WIDTH), _clip(row[1], _COROUTINE_WIDTH), *row[2:])


def _isatty(file: IO[str]) -> bool:
    try:
        return file.isatty()
    except (AttributeError, ValueError):
        return False


def rich_available() -> bool:
    """Return True when rich (the ``cli`` extra) can be imported."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return False
    return True


def print_summary(
    report: dict[str, Any],
    *,
    file: IO[str],
    report_path: str | None = None,
    use_rich: bool | None = None,
    width: int | None = None,
) -> None:
    """Print the summary of a report dict to `file`.

    Args:
        report: a ``taskscope.report/1`` dict.
        file: where to print (the command line uses stderr).
        report_path: where the report was written, named on the last line.
        use_rich: force (True) or avoid (False) rich; by default use it when installed.
        width: columns to render in; by default the terminal's, or 100 when `file` is
            not a terminal.
    """
    summary = Summary(report, report_path=report_path)
    if use_rich is None:
        use_rich = rich_available()
    if not use_rich:
        file.write(summary.plain(width or PLAIN_WIDTH))
        file.flush()
        return
    from rich.console import Console

    if width is None and not _isatty(file):
        width = PLAIN_WIDTH  # rich would assume 80 columns for a file or a pipe
    Console(file=file, width=width, highlight=False, soft_wrap=False).print(summary)
    file.flush()
