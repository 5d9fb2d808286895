"""Render a run: one text table (stdout) and the same figures as JSON."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from importlib import metadata
from typing import TYPE_CHECKING, Any, Final

from ._budgets import BUDGETS
from ._catalog import BASELINE, Workload
from ._harness import NOT_APPLICABLE, NOT_INSTALLED, ROOT, Plan

if TYPE_CHECKING:
    from pathlib import Path

    from ._budgets import Verdict

SCHEMA: Final = "taskscope.bench/1"
_MB: Final = 1024 * 1024
_PACKAGES: Final = (
    "taskscope",
    "anyio",
    "trio",
    "uvloop",
    "aiomonitor",
    "opentelemetry-instrumentation-asyncio",
    "opentelemetry-sdk",
)


def machine() -> dict[str, Any]:
    """Describe the machine, interpreter and package versions the run used."""
    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cpus": os.cpu_count(),
        "cpu_model": cpu,
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "packages": versions,
        "git_commit": _git_commit(),
    }


def _git_commit() -> str | None:
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "src"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return None
    if not head:
        return None
    return head + ("+dirty-src" if dirty else "")


def build(
    plan: Plan,
    results: dict[str, dict[str, Any]],
    verdicts: list[Verdict],
    *,
    started: str,
    duration: float,
) -> dict[str, Any]:
    """Return the JSON document of a run."""
    return {
        "schema": SCHEMA,
        "started": started,
        "duration_s": round(duration, 1),
        "machine": machine(),
        "settings": {
            "repeat": plan.repeat,
            "warmup": plan.warmup,
            "smoke": plan.smoke,
            "scale": plan.scale,
            "memory_repeat": min(plan.repeat, 3) if not plan.smoke else plan.repeat,
        },
        "configs": {
            config.name: {
                "description": config.description,
                "installed": config.installed(),
                "requirement": config.requirement,
            }
            for config in plan.configs
        },
        "workloads": {
            workload.name: {
                "description": workload.description,
                "flavour": workload.flavour,
                "kind": workload.kind,
                "sizes": list(plan.sizes(workload)),
                "baseline": BASELINE,
            }
            for workload in plan.workloads
        },
        "results": results,
        "budgets": [verdict.to_json() for verdict in verdicts],
    }


def write_json(document: dict[str, Any], path: Path) -> None:
    """Write `document` to `path` (parents created; replaced atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(path.suffix + ".tmp")
    temporary.write_text(json.dumps(document, indent=1, sort_keys=False) + "\n", "utf-8")
    temporary.replace(path)


# ---------------------------------------------------------------- text table


def _time_cell(cell: dict[str, Any], baseline: bool) -> str:
    status = cell.get("status")
    if status == NOT_APPLICABLE:
        return "n/a"
    if status == NOT_INSTALLED:
        return "not installed"
    if status != "ok":
        return "ERROR"
    spread = f"[{cell['min']:.2f}-{cell['max']:.2f}]"
    if baseline:
        return f"{cell['median']:.3f} s {spread}"
    return f"{cell['ratio']:.2f}x {spread}"


def _memory_cell(workload: Workload, cell: dict[str, Any], base: dict[str, Any] | None) -> str:
    status = cell.get("status")
    if status in (NOT_APPLICABLE, NOT_INSTALLED):
        return "n/a" if status == NOT_APPLICABLE else "not installed"
    if status != "ok":
        return "ERROR"
    metrics = cell["metrics"]
    if workload.program == "mem-finished":
        value = metrics["rss_after"]
        if base is None or cell is base:
            return f"{value / _MB:.1f} MB"
        return f"{(value - base['metrics']['rss_after']) / _MB:+.1f} MB"
    per_item = metrics["bytes"] / cell["sizes"][0]
    if base is None or cell is base:
        return f"{per_item:.0f} B/{workload.per}"
    delta = (metrics["bytes"] - base["metrics"]["bytes"]) / cell["sizes"][0]
    return f"{delta:+.0f} B/{workload.per}"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * width for width in widths))
    lines.extend(
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True))
        for row in rows
    )
    return [line.rstrip() for line in lines]


def render(plan: Plan, results: dict[str, dict[str, Any]], verdicts: list[Verdict]) -> str:
    """Return the text report: time table, memory table, budgets."""
    configs = [config.name for config in plan.configs]
    out: list[str] = []
    timed = [workload for workload in plan.workloads if workload.kind == "time"]
    if timed:
        out.append(
            "Wall time: plain = median seconds; others = ratio of medians to plain on the "
            "same loop; [min-max] seconds."
        )
        rows = [
            [workload.name]
            + [_time_cell(results[workload.name][name], name == BASELINE) for name in configs]
            for workload in timed
        ]
        out.extend(_rows(["workload", *configs], rows))
    memory = [workload for workload in plan.workloads if workload.kind == "memory"]
    if memory:
        if out:
            out.append("")
        out.append("Memory: plain = absolute; others = difference from plain (medians).")
        rows = []
        for workload in memory:
            cells = results[workload.name]
            base = cells.get(BASELINE)
            base = base if base is not None and base.get("status") == "ok" else None
            rows.append(
                [workload.name] + [_memory_cell(workload, cells[name], base) for name in configs]
            )
        out.extend(_rows(["memory", *configs], rows))
    errors = [
        f"  {workload}/{config}: {cell.get('error')}"
        for workload, cells in results.items()
        for config, cell in cells.items()
        if cell.get("status") == "error"
    ]
    if errors:
        out += ["", "Errors:", *errors]
    missing = sorted(
        {
            f"  {config}: not installed ({cell.get('reason')})"
            for cells in results.values()
            for config, cell in cells.items()
            if cell.get("status") == NOT_INSTALLED
        }
    )
    if missing:
        out += ["", "Peers not measured:", *missing]
    if verdicts:
        out += ["", "Budgets (DESIGN.md):"]
        out += ["  " + verdict.describe() for verdict in verdicts]
    return "\n".join(out)


# ---------------------------------------------------------------- Markdown (docs, README)


def markdown(document: dict[str, Any], *, short: bool = False) -> str:
    """Return a saved run's tables as Markdown (what docs/benchmarks.md shows).

    With `short`, only the budgeted wall-time workloads and ratios (for the README).
    """
    configs = list(document["configs"])
    results = document["results"]
    workloads = document["workloads"]
    if short:
        budgeted = {budget.workload for budget in BUDGETS}
        workloads = {
            name: info
            for name, info in workloads.items()
            if name in budgeted and info["kind"] == "time"
        }
    out: list[str] = []
    timed = [name for name, info in workloads.items() if info["kind"] == "time"]
    if timed:
        out.append("| workload | " + " | ".join(configs) + " |")
        out.append("|---" * (len(configs) + 1) + "|")
        for name in timed:
            cells = [
                _time_cell(results[name][config], config == BASELINE).replace(" [", "<br>[")
                for config in configs
            ]
            if short:
                cells = [cell.split("<br>")[0].strip() for cell in cells]
            out.append(f"| {name} | " + " | ".join(cells) + " |")
    memory = [name for name, info in workloads.items() if info["kind"] == "memory"]
    if memory:
        shown = [
            config
            for config in configs
            if any(results[name][config].get("status") != NOT_APPLICABLE for name in memory)
        ]
        out += ["", "| memory | " + " | ".join(shown) + " |", "|---" * (len(shown) + 1) + "|"]
        for name in memory:
            cells = results[name]
            base = cells.get(BASELINE)
            base = base if base is not None and base.get("status") == "ok" else None
            workload = _memory_workload(name)
            texts = [_memory_cell(workload, cells[config], base) for config in shown]
            out.append(f"| {name} | " + " | ".join(texts) + " |")
    budgets = document.get("budgets") or []
    if budgets and not short:
        out += ["", "| budget | measured | allowed | status |", "|---|---|---|---|"]
        for budget in budgets:
            unit = budget["unit"]
            measured = budget["measured"]
            shown_value = "-" if measured is None else _budget_value(measured, unit)
            status = {True: "ok", False: "**exceeded**", None: "not evaluated"}[budget["ok"]]
            out.append(
                f"| {budget['workload']} [{budget['config']}] | {shown_value} | "
                f"{_budget_value(budget['allowed'], unit)} | {status} |"
            )
    return "\n".join(out)


def _memory_workload(name: str) -> Workload:
    from ._catalog import WORKLOADS_BY_NAME

    return WORKLOADS_BY_NAME[name]


def _budget_value(value: float, unit: str) -> str:
    if unit == "MB":
        return f"{value / _MB:+.1f} MB"
    if unit.startswith("B/"):
        return f"{value:.0f} {unit}"
    return f"{value:.2f}x"
