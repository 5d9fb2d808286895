"""``python -m benchmarks.markdown [--short] [PATH]``: print a saved run as Markdown.

PATH defaults to benchmarks/results/latest.json; paste the output into
docs/benchmarks.md, and the ``--short`` table (budgeted workloads, ratios only) into
the README.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ._report import markdown


def main(argv: list[str] | None = None) -> int:
    """Print the Markdown tables of the run saved at the given path."""
    args = list(sys.argv[1:] if argv is None else argv)
    short = "--short" in args
    args = [arg for arg in args if arg != "--short"]
    default = Path(__file__).resolve().parent / "results" / "latest.json"
    path = Path(args[0]) if args else default
    document = json.loads(path.read_text("utf-8"))
    machine = document["machine"]
    print(
        f"Taken {document['started']} on {machine['cpus']} x {machine['cpu_model']}, "
        f"Python {machine['python']}, {machine['platform']}; "
        f"{document['settings']['repeat']} interleaved rounds after "
        f"{document['settings']['warmup']} warm-up, scale {document['settings']['scale']}."
    )
    print()
    print(markdown(document, short=short))
    return 0


if __name__ == "__main__":
    sys.exit(main())
