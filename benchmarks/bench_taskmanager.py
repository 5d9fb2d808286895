"""Benchmark the task manager against hand-written AnyIO code.

Run ``python benchmarks/bench_taskmanager.py`` (``--help`` for sizes). Budgets (issue 7):

* ``add_task`` throughput >= 0.7x raw ``TaskGroup.start_soon`` (ratio of wall times
  <= 1/0.7 = 1.43).
* ``gather_with_concurrency`` over 100k items with limit 100 <= 1.3x a hand-written
  semaphore loop.
* Memory of a fan-out independent of the number of items (peak tracemalloc for 10k vs
  100k items, measured on the streaming variant, which keeps no result list, and on
  ``gather_with_concurrency`` minus its result list).

Repetitions are interleaved (baseline, candidate, baseline, ...) and medians compared,
so machine noise hits both sides alike. ``main()`` returns the numbers as a dict so a
harness can call it.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import tracemalloc
from typing import TYPE_CHECKING, Any

import anyio

from taskscope.taskmanager import (
    TaskManager,
    as_completed_with_concurrency,
    gather_with_concurrency,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

ADD_TASK_BUDGET = 1 / 0.7
GATHER_BUDGET = 1.3


async def _noop() -> None:
    await anyio.lowlevel.checkpoint()


async def _echo(item: int) -> int:
    await anyio.lowlevel.checkpoint()
    return item


# ------------------------------------------------------------------ spawn workloads


async def _raw_start_soon(n: int) -> None:
    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(_noop)


async def _manager_add_task(n: int) -> None:
    # Every task gets a slot at once, as with raw start_soon (no backlog).
    async with TaskManager(max_concurrency=n, max_queue=1, history_size=1000) as manager:
        for i in range(n):
            manager.add_task(str(i), _noop)
        await manager.join()


# ------------------------------------------------------------------ gather workloads


async def _semaphore_loop(n: int, limit: int) -> list[Any]:
    semaphore = anyio.Semaphore(limit)
    results: list[Any] = [None] * n

    async def one(index: int, item: int) -> None:
        async with semaphore:
            results[index] = await _echo(item)

    async with anyio.create_task_group() as tg:
        for index, item in enumerate(range(n)):
            tg.start_soon(one, index, item)
    return results


async def _gather(n: int, limit: int) -> list[Any]:
    return await gather_with_concurrency(_echo, range(n), limit=limit)


async def _none(_: int) -> None:
    await anyio.lowlevel.checkpoint()


async def _gather_none(n: int, limit: int) -> int:
    return len(await gather_with_concurrency(_none, iter(range(n)), limit=limit))


async def _stream(n: int, limit: int) -> int:
    count = 0
    async with as_completed_with_concurrency(_none, iter(range(n)), limit=limit) as results:
        async for _ in results:
            count += 1
    return count


# ------------------------------------------------------------------ measurement


def _time(backend: str, func: Callable[..., Awaitable[Any]], *args: Any) -> float:
    gc.collect()
    start = time.perf_counter()
    anyio.run(func, *args, backend=backend)
    return time.perf_counter() - start


def _interleaved(
    backend: str, repeat: int, pair: tuple[Callable[..., Awaitable[Any]], ...], *args: Any
) -> tuple[float, float]:
    base: list[float] = []
    cand: list[float] = []
    for _ in range(repeat):
        base.append(_time(backend, pair[0], *args))
        cand.append(_time(backend, pair[1], *args))
    return statistics.median(base), statistics.median(cand)


def _peak(backend: str, func: Callable[..., Awaitable[Any]], *args: Any) -> int:
    gc.collect()
    tracemalloc.start()
    try:
        anyio.run(func, *args, backend=backend)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _lines(results: dict[str, Any]) -> Iterator[str]:
    for backend, r in results["backends"].items():
        yield f"[{backend}]"
        yield (
            f"  add_task  {r['spawn_n']:>7} tasks: start_soon {r['start_soon_s']:.3f}s  "
            f"add_task {r['add_task_s']:.3f}s  throughput ratio {r['add_task_throughput']:.2f}x "
            f"(budget >= 0.70x) {'OK' if r['add_task_ok'] else 'MISSED'}"
        )
        yield (
            f"  gather    {r['gather_n']:>7} items, limit {r['limit']}: semaphore loop "
            f"{r['semaphore_s']:.3f}s  gather {r['gather_s']:.3f}s  time ratio "
            f"{r['gather_ratio']:.2f}x (budget <= 1.30x) {'OK' if r['gather_ok'] else 'MISSED'}"
        )
        for name, peaks in r["peak_bytes"].items():
            sizes = ", ".join(f"{n} items: {b / 1024:.0f} KiB" for n, b in peaks.items())
            per_item = r["peak_bytes_per_extra_item"][name]
            yield f"  peak memory {name}: {sizes} ({per_item:.1f} bytes per extra item)"
        yield "  (gather's extra bytes per item are its result list: one 8-byte slot per item)"


def main(
    *,
    spawn_n: int = 100_000,
    gather_n: int = 100_000,
    limit: int = 100,
    memory_sizes: tuple[int, int] = (10_000, 100_000),
    repeat: int = 5,
    backends: tuple[str, ...] = ("asyncio", "trio"),
) -> dict[str, Any]:
    """Run every workload on every backend and return the measurements."""
    out: dict[str, Any] = {"python": sys.version.split()[0], "backends": {}}
    for backend in backends:
        start_soon_s, add_task_s = _interleaved(
            backend, repeat, (_raw_start_soon, _manager_add_task), spawn_n
        )
        semaphore_s, gather_s = _interleaved(
            backend, repeat, (_semaphore_loop, _gather), gather_n, limit
        )
        peaks: dict[str, dict[int, int]] = {"as_completed": {}, "gather": {}}
        for n in memory_sizes:
            peaks["as_completed"][n] = _peak(backend, _stream, n, limit)
            peaks["gather"][n] = _peak(backend, _gather_none, n, limit)
        small, large = memory_sizes
        per_item = {name: (p[large] - p[small]) / (large - small) for name, p in peaks.items()}
        throughput = start_soon_s / add_task_s
        ratio = gather_s / semaphore_s
        out["backends"][backend] = {
            "spawn_n": spawn_n,
            "start_soon_s": start_soon_s,
            "add_task_s": add_task_s,
            "add_task_throughput": throughput,
            "add_task_ok": throughput >= 1 / ADD_TASK_BUDGET,
            "gather_n": gather_n,
            "limit": limit,
            "semaphore_s": semaphore_s,
            "gather_s": gather_s,
            "gather_ratio": ratio,
            "gather_ok": ratio <= GATHER_BUDGET,
            "peak_bytes": peaks,
            "peak_bytes_per_extra_item": per_item,
        }
    return out


def _cli() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spawn", type=int, default=100_000, help="tasks for add_task")
    parser.add_argument("--items", type=int, default=100_000, help="items for gather")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--backend", action="append", help="asyncio and/or trio (repeatable)")
    parser.add_argument("--json", action="store_true", help="print the raw numbers as JSON")
    args = parser.parse_args()
    results = main(
        spawn_n=args.spawn,
        gather_n=args.items,
        limit=args.limit,
        repeat=args.repeat,
        backends=tuple(args.backend or ("asyncio", "trio")),
    )
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print("\n".join(_lines(results)))
    ok = all(r["add_task_ok"] and r["gather_ok"] for r in results["backends"].values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(_cli())
