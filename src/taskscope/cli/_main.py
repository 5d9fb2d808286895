"""``taskscope``'s entry point: dispatch to ``run``, ``demo`` or ``report``."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from ._args import USAGE, UsageError, parse_demo, parse_report, parse_run

if TYPE_CHECKING:
    from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``taskscope`` command line and return the exit status.

    ``run`` and ``demo`` return (or raise ``SystemExit`` with) the program's own status;
    bad input is one line on stderr and status 2.
    """
    try:
        return _dispatch(list(sys.argv[1:] if argv is None else argv))
    except UsageError as exc:
        sys.stderr.write(f"taskscope: error: {exc}\n")
        return 2


def _dispatch(args: list[str]) -> int:
    if not args:
        raise UsageError("missing command: run, demo or report (see 'taskscope --help')")
    command, rest = args[0], args[1:]
    if command in ("-h", "--help"):
        sys.stdout.write(USAGE)
        return 0
    if command == "--version":
        from .. import __version__

        sys.stdout.write(f"taskscope {__version__}\n")
        return 0
    if command == "report":
        from ._report import show_report

        return show_report(parse_report(rest))
    if command == "run":
        request = parse_run(rest)
    elif command == "demo":
        request = parse_demo(rest)
    else:
        raise UsageError(
            f"unknown command {command!r}: choose run, demo or report (see 'taskscope --help')"
        )
    from ._runner import run_program

    return run_program(request)
