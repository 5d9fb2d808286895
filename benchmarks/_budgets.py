"""The budgets of DESIGN.md ("Budgets"), mirrored as data and checked against a run.

Keep this table in step with DESIGN.md: each row names the figure it reads from the
results, so a changed budget is a one-line change here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final, Literal

#: "ratio": median wall time of `config` over plain of the same flavour.
#: "per-task": (config - plain) of a memory metric, divided by the workload's first size
#: (its tasks, or for ``mem-locks`` its locks).
#: "delta": (config - plain) of a memory metric, in bytes.
Measure = Literal["ratio", "per-task", "delta"]

#: Configurations the budgets hold for unless a row says otherwise: taskscope as users
#: leave it on.
CHECKED_CONFIGS: Final = ("taskscope",)
#: The lock monitor's budgets (issue 4) hold with it on.
_LOCKS: Final = ("taskscope-locks",)


@dataclass(frozen=True, slots=True)
class Budget:
    """One limit from DESIGN.md.

    Attributes:
        workload: the workload whose results it reads.
        measure: how the figure is derived (see `Measure`).
        allowed: the largest acceptable figure.
        metric: for memory budgets, the worker metric compared.
        unit: how the figure is printed ("x", "B/task", "B/lock", "MB").
        configs: the configurations it is checked for.
    """

    workload: str
    measure: Measure
    allowed: float
    metric: str = ""
    unit: str = "x"
    configs: tuple[str, ...] = CHECKED_CONFIGS


_MB: Final = 1024 * 1024

BUDGETS: Final[tuple[Budget, ...]] = (
    Budget("spawn", "ratio", 1.25),
    Budget("echo", "ratio", 1.05),
    Budget("lock", "ratio", 1.3),
    Budget("spawn-uvloop", "ratio", 1.25),
    Budget("echo-uvloop", "ratio", 1.05),
    Budget("lock-uvloop", "ratio", 1.3),
    Budget("spawn-trio", "ratio", 1.25),
    Budget("echo-trio", "ratio", 1.05),
    Budget("lock-trio", "ratio", 1.3),
    Budget("mem-live-traced", "per-task", 1024, metric="bytes", unit="B/task"),
    Budget("mem-live", "per-task", 1024, metric="bytes", unit="B/task"),
    Budget("mem-finished", "delta", 50 * _MB, metric="rss_after", unit="MB"),
    # Issue 5: a tracked AnyIO CancelScope, and spawning under AnyIO task groups (each
    # task enters a scope), with the cancel-scope monitor on.
    *(
        Budget(f"cancel-scope{suffix}", "ratio", 1.5, configs=("taskscope-scopes",))
        for suffix in ("", "-uvloop", "-trio")
    ),
    *(
        Budget(f"anyio-spawn{suffix}", "ratio", 1.25, configs=("taskscope-scopes",))
        for suffix in ("", "-uvloop", "-trio")
    ),
    # Issue 4: the lock monitor (uncontended asyncio.Lock, the contended lock workload,
    # and the memory of one tracked primitive).
    Budget("lock-uncontended", "ratio", 1.5, configs=_LOCKS),
    Budget("lock", "ratio", 1.3, configs=_LOCKS),
    Budget("mem-locks", "per-task", 1024, metric="bytes", unit="B/lock", configs=_LOCKS),
)


@dataclass(frozen=True, slots=True)
class Verdict:
    """A budget applied to one configuration of one run.

    Attributes:
        budget: the budget.
        config: the configuration measured.
        measured: the figure (None when the cell is missing or failed).
        ok: True when within budget; None when the budget could not be evaluated.
        note: why it could not be evaluated, if so.
    """

    budget: Budget
    config: str
    measured: float | None
    ok: bool | None
    note: str = ""

    def describe(self) -> str:
        """Return one line: the budget, the figure and the verdict."""
        budget = self.budget
        label = f"{budget.workload} [{self.config}]"
        allowed = _format(budget.allowed, budget.unit)
        if self.measured is None:
            return f"{label}: {self.note} (allowed {allowed})"
        state = "ok" if self.ok else "EXCEEDED"
        return f"{label}: {_format(self.measured, budget.unit)} vs allowed {allowed}: {state}"

    def to_json(self) -> dict[str, Any]:
        """Return the verdict as a JSON-ready dict."""
        return {
            "workload": self.budget.workload,
            "config": self.config,
            "measure": self.budget.measure,
            "metric": self.budget.metric or "seconds",
            "unit": self.budget.unit,
            "allowed": self.budget.allowed,
            "measured": self.measured,
            "ok": self.ok,
            "note": self.note,
        }


def _format(value: float, unit: str) -> str:
    if unit == "MB":
        return f"{value / _MB:+.1f} MB"
    if unit.startswith("B/"):
        return f"{value:.0f} {unit}"
    return f"{value:.2f}x"


def evaluate(results: dict[str, dict[str, Any]]) -> list[Verdict]:
    """Apply every budget whose workload is in `results` (cells as `_harness` builds them)."""
    verdicts: list[Verdict] = []
    for budget in BUDGETS:
        cells = results.get(budget.workload)
        if cells is None:
            continue  # not selected for this run
        for config in budget.configs:
            if config not in cells:
                continue
            verdicts.append(_verdict(budget, config, cells))
    return verdicts


def _verdict(budget: Budget, config: str, cells: dict[str, Any]) -> Verdict:
    cell = cells[config]
    base = cells.get("plain")
    if cell.get("status") != "ok":
        return Verdict(budget, config, None, False, f"not measured: {cell.get('status')}")
    if base is None or base.get("status") != "ok":
        return Verdict(budget, config, None, None, "no plain baseline in this run")
    if budget.measure == "ratio":
        measured = float(cell["ratio"])
    else:
        value = float(cell["metrics"][budget.metric])
        delta = value - float(base["metrics"][budget.metric])
        measured = delta / cell["sizes"][0] if budget.measure == "per-task" else delta
    return Verdict(budget, config, measured, measured <= budget.allowed)
