"""What can be measured: workloads and configurations, as data (no imports of what they run).

The parent process reads only this module; the worker (`benchmarks.worker`) implements
each name. Adding a workload or a configuration means one entry here and one function
there.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Final, Literal

#: How a workload's event loop is run; ratios compare configurations of one flavour.
Flavour = Literal["asyncio", "uvloop", "trio"]
#: "time" workloads are judged by wall time; "memory" ones by the figures they report.
Kind = Literal["time", "memory"]

#: The configuration every other one is compared with, per flavour.
BASELINE: Final = "plain"


@dataclass(frozen=True, slots=True)
class Workload:
    """One program the suite times.

    Attributes:
        name: the name on the command line and in the results.
        program: the worker function that runs it (several flavours share one).
        flavour: the event loop it runs on.
        kind: what is compared ("time" or "memory").
        sizes: the arguments of a full run.
        smoke_sizes: tiny arguments that only prove the harness works.
        description: one line for the table and docs.
        scaled: which size ``--scale`` multiplies (the count of operations).
        per: what a memory workload's first size counts ("task", "lock").
    """

    name: str
    program: str
    flavour: Flavour
    kind: Kind
    sizes: tuple[int, ...]
    smoke_sizes: tuple[int, ...]
    description: str
    scaled: int = 0
    per: str = "task"


@dataclass(frozen=True, slots=True)
class Config:
    """One way of running a workload: bare, under taskscope, or under a peer.

    Attributes:
        name: the name on the command line and in the results.
        flavours: the loop flavours it applies to (others are "not applicable").
        kinds: the workload kinds it is measured on.
        module: a module that must be importable for it to run (None: always).
        requirement: the pip requirement that provides `module`, for the message.
        description: one line for the table and docs.
    """

    name: str
    flavours: frozenset[str]
    kinds: frozenset[str]
    module: str | None
    requirement: str | None
    description: str

    def applies_to(self, workload: Workload) -> bool:
        """Return True when this configuration is measured on `workload`."""
        return workload.flavour in self.flavours and workload.kind in self.kinds

    def installed(self) -> bool:
        """Return True when the package this configuration needs can be imported."""
        if self.module is None:
            return True
        try:
            return importlib.util.find_spec(self.module) is not None
        except (ImportError, ValueError):
            return False


_ASYNCIO_FLAVOURS: Final = ("asyncio", "uvloop")
_FLAVOUR_SUFFIX: Final[dict[Flavour, str]] = {"asyncio": "", "uvloop": "-uvloop", "trio": "-trio"}


def _family(
    program: str,
    flavours: tuple[Flavour, ...],
    sizes: tuple[int, ...],
    smoke_sizes: tuple[int, ...],
    description: str,
    *,
    scaled: int = 0,
) -> list[Workload]:
    return [
        Workload(
            name=program + _FLAVOUR_SUFFIX[flavour],
            program=program,
            flavour=flavour,
            kind="time",
            sizes=sizes,
            smoke_sizes=smoke_sizes,
            description=f"{description} ({flavour})",
            scaled=scaled,
        )
        for flavour in flavours
    ]


_ALL_FLAVOURS: Final[tuple[Flavour, ...]] = ("asyncio", "uvloop", "trio")

WORKLOADS: Final[tuple[Workload, ...]] = (
    *_family(
        "spawn",
        _ALL_FLAVOURS,
        (200_000, 1_000),
        (500, 100),
        "200k trivial tasks in batches of 1,000",
    ),
    *_family(
        "echo",
        _ALL_FLAVOURS,
        (100, 300),
        (2, 3),
        "loopback TCP echo, 100 clients x 300 round trips",
        scaled=1,  # fewer round trips per client, never fewer clients
    ),
    *_family(
        "lock",
        _ALL_FLAVOURS,
        (1_000_000, 100),
        (500, 10),
        "contended lock, 1M acquire/release across 100 tasks",
    ),
    *_family(
        "lock-uncontended",
        _ALL_FLAVOURS,
        (1_000_000,),
        (500,),
        "uncontended lock, 1M async with lock: pass in one task",
    ),
    *_family(
        "anyio-spawn",
        _ALL_FLAVOURS,
        (200_000, 1_000),
        (500, 100),
        "AnyIO task groups, 200k trivial tasks in groups of 1,000",
    ),
    *_family(
        "cancel-scope",
        _ALL_FLAVOURS,
        (1_000_000,),
        (500,),
        "enter/exit 1M anyio.CancelScope",
    ),
    Workload(
        name="mem-live",
        program="mem-live",
        flavour="asyncio",
        kind="memory",
        sizes=(100_000,),
        smoke_sizes=(500,),
        description="RSS with 100k pending tasks",
    ),
    Workload(
        name="mem-live-traced",
        program="mem-live-traced",
        flavour="asyncio",
        kind="memory",
        sizes=(100_000,),
        smoke_sizes=(500,),
        description="tracemalloc bytes with 100k pending tasks",
    ),
    Workload(
        name="mem-locks",
        program="mem-locks",
        flavour="asyncio",
        kind="memory",
        sizes=(10_000,),
        smoke_sizes=(200,),
        description="tracemalloc bytes per asyncio.Lock acquired, and contended, once",
        per="lock",
    ),
    Workload(
        name="mem-finished",
        program="mem-finished",
        flavour="asyncio",
        kind="memory",
        sizes=(1_000_000, 1_000),
        smoke_sizes=(2_000, 500),
        description="RSS after 1M finished tasks (batches of 1,000)",
    ),
)

_TIME: Final = frozenset({"time"})
_BOTH: Final = frozenset({"time", "memory"})

CONFIGS: Final[tuple[Config, ...]] = (
    Config(BASELINE, frozenset(_ALL_FLAVOURS), _BOTH, None, None, "no instrumentation"),
    Config(
        "taskscope",
        frozenset(_ALL_FLAVOURS),
        _BOTH,
        "taskscope",
        "taskscope",
        "taskscope.install() with default settings",
    ),
    Config(
        "taskscope-all",
        frozenset(_ALL_FLAVOURS),
        _BOTH,
        "taskscope",
        "taskscope",
        "taskscope.install() with every monitor on (benchmarks/worker.py: EVERY_MONITOR)",
    ),
    Config(
        "taskscope-scopes",
        frozenset(_ALL_FLAVOURS),
        _TIME,
        "taskscope",
        "taskscope",
        "taskscope.install(scopes=True): the cancel-scope monitor's own cost",
    ),
    Config(
        "taskscope-locks",
        frozenset(_ALL_FLAVOURS),
        _BOTH,
        "taskscope",
        "taskscope",
        "taskscope.install(locks=True): the lock monitor on (its budgets are checked here)",
    ),
    Config(
        "asyncio-debug",
        frozenset(_ASYNCIO_FLAVOURS),
        _TIME,
        None,
        None,
        "asyncio debug mode (loop.set_debug(True))",
    ),
    Config(
        "aiomonitor",
        frozenset(_ASYNCIO_FLAVOURS),
        _TIME,
        "aiomonitor",
        "aiomonitor>=0.7",
        "aiomonitor.start_monitor(loop, hook_task_factory=True)",
    ),
    Config(
        "otel",
        frozenset(_ASYNCIO_FLAVOURS),
        _TIME,
        "opentelemetry.instrumentation.asyncio",
        "opentelemetry-instrumentation-asyncio",
        "OpenTelemetry AsyncioInstrumentor().instrument() (API only: no-op providers)",
    ),
)

WORKLOADS_BY_NAME: Final = {workload.name: workload for workload in WORKLOADS}
CONFIGS_BY_NAME: Final = {config.name: config for config in CONFIGS}
