"""``taskscope report FILE``: validate a saved report and print it."""

from __future__ import annotations

import json
import sys

from ..reports import print_summary, report_problems
from ._args import ReportRequest, UsageError


def show_report(request: ReportRequest) -> int:
    """Print the summary (or the normalised JSON) of a saved report on stdout.

    Raises:
        UsageError: the file cannot be read, is not JSON, or is not a valid report.
    """
    path = request.file
    try:
        with open(path, encoding="utf-8") as file:
            report = json.load(file)
    except OSError as exc:
        raise UsageError(f"cannot open report {path!r}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{path!r} is not a taskscope report: invalid JSON ({exc})") from None
    problems = report_problems(report)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise UsageError(f"{path!r} is not a valid taskscope report: {problems[0]}{more}")
    if request.format == "json":
        json.dump(report, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print_summary(report, file=sys.stdout, report_path=path)
    return 0
