"""Command-line parsing.

``run`` needs python's own rule, which argparse cannot express: taskscope's options
end at the first argument that is not an option (the script) or at ``-m MODULE``, and
everything after belongs to the program, even when it looks like an option.
So the arguments are split by hand, and argparse parses only taskscope's part.
"""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import dataclass, field
from typing import Any, Final, NoReturn

from .._options import signal_number

#: The report file written when ``--report`` is not given, in the working directory.
DEFAULT_REPORT: Final = "taskscope-report.json"
#: Options of ``run`` that take a value as the next argument.
_VALUED: Final = frozenset(
    {
        "--report",
        "--history-size",
        "--block-threshold",
        "--spin-threshold",
        "--lag-interval",
        "--system-interval",
        "--dump-signal",
        "--lock-hold-threshold",
    }
)
#: Duration units accepted on the command line, in seconds.
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "us": 0.000_001}

USAGE: Final = """\
usage: taskscope run [OPTIONS] SCRIPT [ARGS...]
       taskscope run [OPTIONS] -m MODULE [ARGS...]
       taskscope demo [--report PATH] [--quiet]
       taskscope report FILE [--format text|json]

Run a Python program exactly as python would, record every asyncio, AnyIO and trio
task, and write a JSON report plus a summary of the problems found (on stderr).

commands:
  run      run SCRIPT (or -m MODULE) with ARGS under taskscope
  demo     run the built-in demo service, which has mistakes planted on purpose
  report   print the summary of a saved report

Run 'taskscope COMMAND --help' for a command's options.
"""


class UsageError(Exception):
    """Bad command-line input: reported as one line on stderr, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """An argparse parser whose errors are `UsageError`s (one line, status 2)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True, slots=True)
class RunRequest:
    """What ``taskscope run`` (or ``demo``) was asked to do."""

    #: The script path as given, or None with `module`.
    script: str | None
    #: The module name given to ``-m``, or None with `script`.
    module: str | None
    #: The program's arguments (``sys.argv[1:]`` as the program sees them).
    args: list[str] = field(default_factory=list)
    #: Absolute path of the JSON report.
    report: str = DEFAULT_REPORT
    quiet: bool = False
    #: Keyword options for `taskscope.install` (history size, thresholds in seconds,
    #: a signal number, opt-in monitors), as given on the command line.
    install_options: dict[str, Any] = field(default_factory=dict)

    @property
    def block_threshold(self) -> float:
        """The ``--block-threshold`` in seconds."""
        value: float = self.install_options.get("block_threshold", 0.1)
        return value


@dataclass(frozen=True, slots=True)
class ReportRequest:
    """What ``taskscope report`` was asked to do."""

    file: str
    format: str = "text"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def parse_duration(text: str, *, zero_allowed: bool = False) -> float:
    """Parse ``100ms``, ``0.1s``, ``0.1`` (seconds), ``2s``, ``1m`` or ``500us``.

    Raises:
        argparse.ArgumentTypeError: not a positive duration (or zero, if allowed).
    """
    cleaned = text.strip().lower()
    number, scale = cleaned, 1.0
    for unit in sorted(_UNITS, key=len, reverse=True):
        if cleaned.endswith(unit):
            number, scale = cleaned[: -len(unit)].strip(), _UNITS[unit]
            break
    try:
        seconds = float(number) * scale
    except ValueError:
        seconds = float("nan")
    if not math.isfinite(seconds) or seconds < 0 or (seconds == 0 and not zero_allowed):
        kind = "a non-negative" if zero_allowed else "a positive"
        raise argparse.ArgumentTypeError(
            f"expected {kind} duration such as 100ms, 0.5s or 2, got {text!r}"
        )
    return seconds


def _interval(text: str) -> float:
    return parse_duration(text, zero_allowed=True)


def _signal(text: str) -> int:
    try:
        return signal_number("--dump-signal", text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a signal name or number such as SIGUSR1, got {text!r}"
        ) from None


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--report",
        metavar="PATH",
        default=DEFAULT_REPORT,
        help=f"write the JSON report to PATH (default: {DEFAULT_REPORT} in the current "
        "directory); checked before the program starts",
    )
    parser.add_argument("--quiet", action="store_true", help="print no summary on stderr")
    parser.add_argument(
        "--history-size",
        metavar="N",
        type=_positive_int,
        default=10_000,
        help="finished tasks kept individually in the report (default: 10000); older "
        "ones remain in the per-creation-site aggregates",
    )
    parser.add_argument(
        "--block-threshold",
        metavar="DURATION",
        type=parse_duration,
        default=0.1,
        help="report the event loop as blocked when one step or callback runs longer "
        "(default: 100ms; e.g. 50ms, 0.5s, 2)",
    )
    parser.add_argument(
        "--spin-threshold",
        metavar="DURATION",
        type=parse_duration,
        default=1.0,
        help="report a task as spinning when it reschedules itself without waiting for "
        "this long (default: 1s)",
    )
    parser.add_argument(
        "--lag-interval",
        metavar="DURATION",
        type=parse_duration,
        default=0.05,
        help="how often the loops' scheduling lag is measured (default: 50ms)",
    )
    parser.add_argument(
        "--system-interval",
        metavar="DURATION",
        type=_interval,
        default=1.0,
        help="how often CPU, memory, threads, files and GC are sampled (default: 1s; "
        "0 turns it off)",
    )
    parser.add_argument(
        "--dump-signal",
        metavar="SIGNAL",
        type=_signal,
        default=None,
        help="write every thread's stack and every task to stderr on this signal (e.g. SIGUSR1)",
    )
    parser.add_argument(
        "--locks",
        action="store_true",
        help="track locks, semaphores, conditions, events and queues (opt-in)",
    )
    parser.add_argument(
        "--lock-hold-threshold",
        metavar="DURATION",
        type=parse_duration,
        default=1.0,
        help="with --locks: report a lock held longer than this (default: 1s)",
    )
    parser.add_argument(
        "--resources",
        action="store_true",
        help="track transports, servers, subprocesses and HTTP client sessions (opt-in)",
    )
    parser.add_argument(
        "--scopes",
        action="store_true",
        help="track cancel scopes, task groups and timeouts (opt-in)",
    )
    parser.add_argument(
        "--scope-notes",
        action="store_true",
        help="with --scopes: add where the scope was entered, as a note, to AnyIO's and "
        "trio's cross-task cancel-scope errors",
    )


#: `taskscope.install` keywords filled from the command line, by argparse destination.
_INSTALL_OPTIONS: Final = (
    "history_size",
    "block_threshold",
    "spin_threshold",
    "lag_interval",
    "system_interval",
    "dump_signal",
    "locks",
    "lock_hold_threshold",
    "resources",
    "scopes",
    "scope_notes",
)


def _install_options(namespace: argparse.Namespace) -> dict[str, Any]:
    if namespace.scope_notes and not namespace.scopes:
        raise UsageError("--scope-notes needs --scopes (the notes come from the scope monitor)")
    return {name: getattr(namespace, name) for name in _INSTALL_OPTIONS}


def _run_parser(prog: str, usage: str) -> _Parser:
    parser = _Parser(prog=prog, usage=usage, allow_abbrev=False, add_help=True)
    _add_common(parser)
    return parser


def split_run_args(args: list[str]) -> tuple[list[str], str | None, str | None, list[str]]:
    """Split ``run``'s arguments like python does: (options, script, module, program args).

    Raises:
        UsageError: ``-m`` without a module name.
    """
    options: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg == "--":
            rest = args[index + 1 :]
            return options, (rest[0] if rest else None), None, rest[1:]
        if arg == "-m" or (arg.startswith("-m") and not arg.startswith("--")):
            module = arg[2:] or (args[index + 1] if index + 1 < len(args) else None)
            if module is None:
                raise UsageError("argument -m: expected a module name")
            return options, None, module, args[index + (1 if arg[2:] else 2) :]
        if arg.startswith("-") and arg != "-":
            options.append(arg)
            if arg in _VALUED and index + 1 < len(args):
                options.append(args[index + 1])
                index += 1
            index += 1
            continue
        return options, arg, None, args[index + 1 :]
    return options, None, None, []


def parse_run(args: list[str]) -> RunRequest:
    """Parse ``taskscope run`` arguments.

    Raises:
        UsageError: an unknown option, a bad value, or no SCRIPT and no ``-m MODULE``.
    """
    options, script, module, program_args = split_run_args(args)
    usage = "taskscope run [OPTIONS] SCRIPT [ARGS...] | -m MODULE [ARGS...]"
    namespace = _run_parser("taskscope run", usage).parse_args(options)
    if script is None and module is None:
        raise UsageError(f"missing SCRIPT or -m MODULE (usage: {usage})")
    if script == "-":
        raise UsageError("reading the program from stdin is not supported; save it to a file")
    return RunRequest(
        script=script,
        module=module,
        args=program_args,
        report=os.path.abspath(namespace.report),
        quiet=namespace.quiet,
        install_options=_install_options(namespace),
    )


def parse_demo(args: list[str]) -> RunRequest:
    """Parse ``taskscope demo`` arguments: the demo runs as ``run -m taskscope.demo``."""
    parser = _run_parser("taskscope demo", "taskscope demo [--report PATH] [--quiet]")
    namespace = parser.parse_args(args)
    return RunRequest(
        script=None,
        module="taskscope.demo",
        args=[],
        report=os.path.abspath(namespace.report),
        quiet=namespace.quiet,
        install_options=_install_options(namespace),
    )


def parse_report(args: list[str]) -> ReportRequest:
    """Parse ``taskscope report`` arguments."""
    parser = _Parser(
        prog="taskscope report",
        usage="taskscope report FILE [--format text|json]",
        allow_abbrev=False,
        description="Validate a saved report and print its summary (text) or the report "
        "itself, normalised (json), on stdout.",
    )
    parser.add_argument("file", metavar="FILE", help="a JSON report written by taskscope")
    parser.add_argument("--format", choices=("text", "json"), default="text")
    namespace = parser.parse_args(args)
    return ReportRequest(file=namespace.file, format=namespace.format)
