"""Run the plan: one fresh worker process per measurement, configurations interleaved.

Round r runs, for each workload, every configuration once (A B C A B C ...), so slow
drifts of a shared, noisy machine hit every configuration alike; round 0 is a warm-up
and is discarded. Cells are summarised by their median, with min and max kept so the
noise is visible.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ._catalog import BASELINE, Config, Workload

#: The repository root: workers run from here so ``-m benchmarks.worker`` resolves.
ROOT: Final = Path(__file__).resolve().parent.parent
#: A worker that takes longer than this is stopped and its cell marked as an error.
WORKER_TIMEOUT: Final = 900.0
#: Memory figures barely vary between runs; fewer repetitions keep the suite short.
MEMORY_MAX_REPEAT: Final = 3

NOT_INSTALLED: Final = "not installed"
NOT_APPLICABLE: Final = "not applicable"


@dataclass(frozen=True, slots=True)
class Plan:
    """What one invocation measures.

    Attributes:
        workloads: the workloads, in table order.
        configs: the configurations, in interleaving order (plain first).
        repeat: measured rounds (after the warm-up).
        warmup: discarded rounds before them.
        smoke: tiny sizes (never checked against budgets).
        scale: factor applied to the task counts of time workloads.
        jobs: workers run at once (more than 1 only for smoke runs).
    """

    workloads: tuple[Workload, ...]
    configs: tuple[Config, ...]
    repeat: int
    warmup: int
    smoke: bool
    scale: float = 1.0
    jobs: int = 1

    def sizes(self, workload: Workload) -> tuple[int, ...]:
        """Return the worker arguments for `workload` in this plan."""
        if self.smoke:
            return workload.smoke_sizes
        if self.scale == 1.0 or workload.kind != "time":
            # Memory budgets are defined at absolute sizes (100k live, 1M finished).
            return workload.sizes
        sizes = list(workload.sizes)
        sizes[workload.scaled] = max(1, round(sizes[workload.scaled] * self.scale))
        return tuple(sizes)

    def repeats(self, workload: Workload) -> int:
        """Return how many measured rounds `workload` gets."""
        if workload.kind == "memory" and not self.smoke:
            return min(self.repeat, MEMORY_MAX_REPEAT)
        return self.repeat


def run_worker(workload: Workload, config: Config, sizes: Sequence[int]) -> dict[str, Any]:
    """Measure once in a fresh process; never raises for a failing worker."""
    command = [sys.executable, "-m", "benchmarks.worker", workload.name, config.name]
    command += [str(size) for size in sizes]
    try:
        completed = subprocess.run(
            command,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WORKER_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return {"status": "error", "error": f"timed out after {WORKER_TIMEOUT:.0f} s"}
    lines = completed.stdout.strip().splitlines()
    if completed.returncode != 0 or not lines:
        tail = completed.stderr.strip().splitlines()[-3:]
        return {
            "status": "error",
            "error": f"exit status {completed.returncode}: " + " | ".join(tail),
        }
    try:
        result: dict[str, Any] = json.loads(lines[-1])
    except json.JSONDecodeError:
        return {"status": "error", "error": f"unreadable worker output: {lines[-1][:200]}"}
    return result


Progress = Callable[[str], None]


def execute(
    plan: Plan, progress: Progress, runner: Callable[..., dict[str, Any]] = run_worker
) -> dict[str, dict[str, Any]]:
    """Run every cell of `plan`; return ``results[workload][config]`` summaries."""
    raw: dict[tuple[str, str], list[dict[str, Any]]] = {}
    skipped: dict[tuple[str, str], dict[str, Any]] = {}
    for workload in plan.workloads:
        for config in plan.configs:
            key = (workload.name, config.name)
            if not config.applies_to(workload):
                skipped[key] = {"status": NOT_APPLICABLE}
            elif not config.installed():
                skipped[key] = {
                    "status": NOT_INSTALLED,
                    "reason": f"pip install '{config.requirement}'",
                }
            else:
                raw[key] = []
    total_rounds = plan.warmup + plan.repeat
    for round_index in range(total_rounds):
        warmup = round_index < plan.warmup
        label = "warm-up" if warmup else f"round {round_index - plan.warmup + 1}/{plan.repeat}"
        cells = [
            (workload, config)
            for workload in plan.workloads
            # Nothing to warm for memory figures: they do not depend on caches.
            if not (warmup and workload.kind == "memory")
            and (warmup or round_index - plan.warmup < plan.repeats(workload))
            for config in plan.configs
            if (workload.name, config.name) in raw
        ]

        def one(cell: tuple[Workload, Config], label: str = label) -> dict[str, Any]:
            workload, config = cell
            started = time.perf_counter()
            result = runner(workload, config, plan.sizes(workload))
            progress(_progress_line(label, workload, config, result, started))
            return result

        if plan.jobs > 1:
            # Only smoke runs measure concurrently: their timings are never compared.
            with ThreadPoolExecutor(max_workers=plan.jobs) as pool:
                outcomes = list(pool.map(one, cells))
        else:
            outcomes = [one(cell) for cell in cells]
        for (workload, config), result in zip(cells, outcomes, strict=True):
            key = (workload.name, config.name)
            if result.get("status") == NOT_INSTALLED:
                skipped[key] = {"status": NOT_INSTALLED, "reason": result.get("reason")}
                raw.pop(key, None)
            elif not warmup and key in raw:
                raw[key].append(result)
    return _summarise(plan, raw, skipped)


def _progress_line(
    label: str, workload: Workload, config: Config, result: dict[str, Any], started: float
) -> str:
    if result.get("status") == "ok":
        outcome = f"{result['seconds']:.3f} s"
    else:
        outcome = f"{result.get('status')}: {result.get('error', '')}"
    took = time.perf_counter() - started
    return f"[{label}] {workload.name:<20} {config.name:<14} {outcome} ({took:.1f} s)"


def _summarise(
    plan: Plan,
    raw: dict[tuple[str, str], list[dict[str, Any]]],
    skipped: dict[tuple[str, str], dict[str, Any]],
) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    for workload in plan.workloads:
        cells: dict[str, Any] = {}
        for config in plan.configs:
            key = (workload.name, config.name)
            if key in skipped:
                cells[config.name] = dict(skipped[key])
            else:
                cells[config.name] = _cell(raw.get(key, []), plan.sizes(workload))
        base = cells.get(BASELINE)
        if base is not None and base.get("status") == "ok":
            for cell in cells.values():
                if cell.get("status") == "ok":
                    cell["ratio"] = cell["median"] / base["median"]
        results[workload.name] = cells
    return results


def _cell(runs: list[dict[str, Any]], sizes: Sequence[int]) -> dict[str, Any]:
    failures = [run for run in runs if run.get("status") != "ok"]
    if failures or not runs:
        error = failures[0].get("error", "no run") if failures else "no run"
        return {"status": "error", "error": error, "sizes": list(sizes)}
    seconds = [float(run["seconds"]) for run in runs]
    metric_names = sorted({name for run in runs for name in run.get("metrics", {})})
    metrics = {
        name: statistics.median(float(run["metrics"][name]) for run in runs)
        for name in metric_names
    }
    return {
        "status": "ok",
        "sizes": list(sizes),
        "runs": seconds,
        "median": statistics.median(seconds),
        "min": min(seconds),
        "max": max(seconds),
        "metrics": metrics,
        "details": runs[-1].get("details", {}),
    }
