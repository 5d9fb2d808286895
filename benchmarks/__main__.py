"""``python -m benchmarks``: run the suite, print the table, write the JSON, check budgets.

Exit status: 0; 1 with ``--check`` when a budget is exceeded (or could not be measured
because a cell failed); 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from ._budgets import evaluate
from ._catalog import BASELINE, CONFIGS, CONFIGS_BY_NAME, WORKLOADS, WORKLOADS_BY_NAME
from ._cli import UsageError, select
from ._harness import ROOT, Plan, execute
from ._report import build, render, write_json

DEFAULT_JSON: Final = ROOT / "benchmarks" / "results" / "latest.json"
#: Smoke runs never overwrite the committed results.
SMOKE_JSON: Final = ROOT / "benchmarks" / "results" / "smoke.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure what taskscope costs next to plain asyncio/trio and its peers.",
    )
    parser.add_argument(
        "--workloads",
        help="comma-separated workloads (default: all): " + ", ".join(WORKLOADS_BY_NAME),
    )
    parser.add_argument(
        "--configs",
        help="comma-separated configurations (default: all; plain is always added): "
        + ", ".join(CONFIGS_BY_NAME),
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="measured rounds (default 5; smoke: 1)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="discarded rounds first (default 1; smoke: 0)"
    )
    parser.add_argument(
        "--scale",
        type=float,
        default=1.0,
        help="multiply the task counts of the wall-time workloads (memory sizes are fixed)",
    )
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one round, no check")
    parser.add_argument("--check", action="store_true", help="exit 1 when a budget is exceeded")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help=f"where to write the results (default {DEFAULT_JSON.relative_to(ROOT)}; "
        f"smoke: {SMOKE_JSON.relative_to(ROOT)})",
    )
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    """Validate the arguments into a `Plan`."""
    workloads = select(args.workloads, WORKLOADS_BY_NAME, "workload")
    configs = select(args.configs, CONFIGS_BY_NAME, "configuration")
    if BASELINE not in configs:
        configs.insert(0, BASELINE)  # every ratio needs it
    repeat = args.repeat if args.repeat is not None else (1 if args.smoke else 5)
    warmup = args.warmup if args.warmup is not None else (0 if args.smoke else 1)
    if repeat < 1 or warmup < 0:
        raise UsageError(f"--repeat must be >= 1 and --warmup >= 0, got {repeat} and {warmup}")
    if not args.scale > 0:
        raise UsageError(f"--scale must be positive, got {args.scale}")
    return Plan(
        workloads=tuple(w for w in WORKLOADS if w.name in workloads),
        configs=tuple(c for c in CONFIGS if c.name in configs),
        repeat=repeat,
        warmup=warmup,
        smoke=args.smoke,
        scale=args.scale,
        jobs=max(1, os.cpu_count() or 1) if args.smoke else 1,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the suite as the command line says; return the exit status."""
    args = _parser().parse_args(argv)
    try:
        plan = plan_from(args)
    except UsageError as exc:
        print(f"python -m benchmarks: error: {exc}", file=sys.stderr)
        return 2
    started = datetime.now(UTC).isoformat(timespec="seconds")
    clock = time.perf_counter()

    def progress(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    results = execute(plan, progress)
    verdicts = [] if plan.smoke else evaluate(results)
    document = build(plan, results, verdicts, started=started, duration=time.perf_counter() - clock)
    path = args.json if args.json is not None else (SMOKE_JSON if plan.smoke else DEFAULT_JSON)
    write_json(document, path)
    print(render(plan, results, verdicts))
    print(f"\nResults written to {path}")
    if not args.check:
        return 0
    if plan.smoke:
        print("Budgets are not checked in smoke mode.")
        return 0
    failed = [verdict for verdict in verdicts if verdict.ok is False]
    if failed:
        print(f"\n{len(failed)} budget(s) exceeded:", file=sys.stderr)
        for verdict in failed:
            print("  " + verdict.describe(), file=sys.stderr)
        return 1
    print("\nEvery measured budget holds.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
