"""``python -m benchmarks.instructions``: CPU instructions per operation, noise-free.

Wall-time ratios (``python -m benchmarks``) are what the budgets judge, but on a shared
machine they move by tens of percent between runs, too much to see a change of 5%. This
counts the instructions a workload executes under valgrind's callgrind, which is the same
on every run: each cell runs the worker twice, at the chosen size and with the scaled
count set to zero, so interpreter start-up and imports cancel out, and prints the
instructions per operation (per task for spawn, per acquire/release for lock, per round
trip for echo) and the ratio to plain. Callgrind runs a program ~50x slower, hence the
small default size. Instructions are not time (a cache miss costs more than an add),
so use this to find and compare costs, and the wall-time suite to judge budgets.

``--cache`` runs cachegrind's cache simulation instead and adds the first-level data
cache misses per operation (reads and writes; simulated, so as stable as the count):
the memory traffic that makes a wall-time ratio larger than the instruction ratio.

Exit status: 0; 2 for bad arguments or when valgrind is missing.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ._catalog import BASELINE, CONFIGS_BY_NAME, WORKLOADS_BY_NAME
from ._cli import UsageError, select
from ._harness import ROOT

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ._catalog import Config, Workload

#: Operations counted per workload at the default --count (callgrind is slow).
DEFAULT_COUNT: Final = 20_000
_COLLECTED: Final = re.compile(r"Collected\s*:\s*(\d+)")
_CACHE_REFS: Final = re.compile(r"I\s+refs:\s*([\d,]+)")
_CACHE_D1_MISSES: Final = re.compile(r"D1\s+misses:\s*([\d,]+)")


@dataclass(frozen=True, slots=True)
class Counts:
    """What one run under valgrind executed."""

    instructions: int
    d1_misses: int | None = None  # with --cache only

    def __sub__(self, other: Counts) -> Counts:
        misses = None
        if self.d1_misses is not None and other.d1_misses is not None:
            misses = self.d1_misses - other.d1_misses
        return Counts(self.instructions - other.instructions, misses)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.instructions",
        description="Count CPU instructions per operation under callgrind (deterministic).",
    )
    parser.add_argument(
        "--workloads",
        default="spawn,lock",
        help="comma-separated time workloads (default: spawn,lock)",
    )
    parser.add_argument(
        "--configs",
        default="taskscope",
        help="comma-separated configurations besides plain (default: taskscope)",
    )
    parser.add_argument(
        "--count",
        type=int,
        default=DEFAULT_COUNT,
        help=f"operations per run (default {DEFAULT_COUNT:,})",
    )
    parser.add_argument(
        "--cache",
        action="store_true",
        help="simulate the caches (cachegrind) and add D1 data-cache misses per operation",
    )
    return parser


def _sizes(workload: Workload, count: int) -> tuple[int, ...]:
    sizes = list(workload.sizes)
    sizes[workload.scaled] = count
    return tuple(sizes)


def count_instructions(
    valgrind: str,
    workload: Workload,
    config: Config,
    sizes: Sequence[int],
    *,
    cache: bool = False,
) -> Counts:
    """Run one worker under callgrind (cachegrind with `cache`) and return its counts."""
    tool = ["--tool=cachegrind", "--cache-sim=yes", "--cachegrind-out-file=/dev/null"]
    if not cache:
        tool = ["--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command = [
        valgrind,
        *tool,
        sys.executable,
        "-m",
        "benchmarks.worker",
        workload.name,
        config.name,
        *map(str, sizes),
    ]
    completed = subprocess.run(
        command, cwd=ROOT, capture_output=True, text=True, check=False, env=os.environ.copy()
    )
    found = (_CACHE_REFS if cache else _COLLECTED).search(completed.stderr)
    misses = _CACHE_D1_MISSES.search(completed.stderr) if cache else None
    if (
        completed.returncode != 0
        or found is None
        or (cache and misses is None)
        or '"status": "ok"' not in completed.stdout
    ):
        tail = (completed.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"{workload.name} [{config.name}] failed: {tail}")
    return Counts(
        int(found.group(1).replace(",", "")),
        int(misses.group(1).replace(",", "")) if misses is not None else None,
    )


def per_operation(
    valgrind: str, workload: Workload, config: Config, count: int, *, cache: bool = False
) -> Counts:
    """Counts per operation: the run at `count` minus the run at zero, over `count`.

    The fields of the result are per operation (rounded down to whole units)."""
    full = count_instructions(valgrind, workload, config, _sizes(workload, count), cache=cache)
    empty = count_instructions(valgrind, workload, config, _sizes(workload, 0), cache=cache)
    difference = full - empty
    misses = difference.d1_misses
    return Counts(difference.instructions // count, None if misses is None else misses // count)


def _plan(args: argparse.Namespace) -> tuple[list[str], list[str], str]:
    """Validate the command line: (workloads, configurations with plain first, valgrind)."""
    time_workloads = [name for name, w in WORKLOADS_BY_NAME.items() if w.kind == "time"]
    workloads = select(args.workloads, time_workloads, "workload")
    others = select(args.configs, CONFIGS_BY_NAME, "configuration")
    configs = [BASELINE, *(name for name in others if name != BASELINE)]
    if args.count <= 0:
        raise UsageError(f"--count must be a positive number of operations, not {args.count}")
    valgrind = shutil.which("valgrind")
    if valgrind is None:
        raise UsageError("valgrind is not installed; install it (apt install valgrind)")
    return workloads, configs, valgrind


def _ratio(value: int, plain: int | None) -> str:
    return f"{value / plain:6.2f}x" if plain else "      -"


def main(argv: list[str] | None = None) -> int:
    """Print instructions per operation and the ratio to plain, one line per cell."""
    args = _parser().parse_args(argv)
    try:
        workloads, configs, valgrind = _plan(args)
    except UsageError as exc:
        print(f"python -m benchmarks.instructions: {exc}", file=sys.stderr)
        return 2
    header = f"{'workload':<14} {'configuration':<15} {'instructions/op':>16} {'ratio':>7}"
    print(header + (f" {'D1 misses/op':>13} {'ratio':>7}" if args.cache else ""))
    for workload_name in workloads:
        workload = WORKLOADS_BY_NAME[workload_name]
        plain: Counts | None = None
        for config_name in configs:
            config = CONFIGS_BY_NAME[config_name]
            if workload.flavour not in config.flavours:
                continue
            try:
                value = per_operation(valgrind, workload, config, args.count, cache=args.cache)
            except RuntimeError as exc:
                print(f"{workload.name:<14} {config.name:<15} {'failed':>16}  {exc}")
                continue
            if config.name == BASELINE:
                plain = value
            line = f"{workload.name:<14} {config.name:<15} {value.instructions:16,} "
            line += _ratio(value.instructions, plain.instructions if plain else None)
            if value.d1_misses is not None:
                line += f" {value.d1_misses:13,} "
                line += _ratio(value.d1_misses, plain.d1_misses if plain else None)
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
