"""One measurement in a fresh process: ``python -m benchmarks.worker WORKLOAD CONFIG SIZE...``.

Sets up the configuration, times only the workload with ``time.perf_counter`` and prints
one JSON line on stdout: ``{"status": "ok", "seconds": ..., "metrics": {...}}``, or
``{"status": "not installed", ...}`` when the configuration's package is missing.
Anything a workload or a peer prints goes to stderr, so stdout stays one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Final

from ._catalog import CONFIGS_BY_NAME, WORKLOADS_BY_NAME, Config, Workload

#: Options that make `taskscope-all` "every monitor on": the single place to extend as
#: monitors land (e.g. ``"locks": True``). Every boolean keyword option of
#: `taskscope.install` not named here is switched on automatically, so a new monitor
#: flag is benchmarked even before it is listed.
EVERY_MONITOR: Final[dict[str, Any]] = {
    # The history is the only size that grows per task today: keep it at its default so
    # the memory budget (history must be bounded) is measured as users run it.
    "history_size": 10_000,
}

#: `taskscope.install` options of the configurations that turn one monitor on.
CONFIG_OPTIONS: Final[dict[str, dict[str, Any]]] = {
    "taskscope-locks": {"locks": True},
    "taskscope-scopes": {"scopes": True},
}

Program = Callable[..., Awaitable[Any]]
Metrics = dict[str, float]

# ---------------------------------------------------------------- asyncio workloads


async def _trivial() -> None:
    pass


async def spawn_asyncio(total: int, batch: int) -> None:
    """Create `total` trivial tasks, `batch` at a time, and wait for each batch."""
    create_task = asyncio.create_task
    for _ in range(total // batch):
        await asyncio.gather(*[create_task(_trivial()) for _ in range(batch)])


def _backlog(clients: int) -> int:
    """A listen backlog that holds every client connecting at once."""
    return max(128, 2 * clients)


async def echo_asyncio(clients: int, rounds: int) -> None:
    """Run a loopback TCP echo server and `clients` clients doing `rounds` round trips."""
    message = b"x" * 64

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
        writer.close()

    async def client(port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for _ in range(rounds):
            writer.write(message)
            await reader.readexactly(len(message))
        writer.close()
        await writer.wait_closed()

    # A backlog for every client at once: with asyncio's default of 100, the connection
    # burst overflowed it on the default loop and the kernel's retransmissions (~0.2 s
    # and up) dominated whichever run connected fastest (plain looked 2x slower).
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=_backlog(clients))
    port = server.sockets[0].getsockname()[1]
    async with server:
        await asyncio.gather(*[client(port) for _ in range(clients)])


async def lock_asyncio(total: int, tasks: int) -> None:
    """Acquire and release one `asyncio.Lock` `total` times across `tasks` tasks.

    Each holder yields once while holding the lock, so every other task queues on it and
    each release hands the lock to a waiter: the contended path.
    """
    lock = asyncio.Lock()
    per_task = total // tasks

    async def worker() -> None:
        for _ in range(per_task):
            async with lock:
                await asyncio.sleep(0)

    await asyncio.gather(*[worker() for _ in range(tasks)])


async def lock_uncontended_asyncio(total: int) -> None:
    """Acquire and release one `asyncio.Lock` `total` times in one task: never contended."""
    lock = asyncio.Lock()
    for _ in range(total):
        async with lock:
            pass


# ---------------------------------------------------------------- trio workloads


async def spawn_trio(total: int, batch: int) -> None:
    """Start `total` trivial tasks, `batch` per nursery."""
    import trio

    for _ in range(total // batch):
        async with trio.open_nursery() as nursery:
            for _ in range(batch):
                nursery.start_soon(_trivial)


async def echo_trio(clients: int, rounds: int) -> None:
    """Run a loopback TCP echo server and `clients` clients doing `rounds` round trips."""
    import trio

    message = b"x" * 64

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

    async def client(port: int) -> None:
        async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
            for _ in range(rounds):
                await stream.send_all(message)
                received = 0
                while received < len(message):
                    received += len(await stream.receive_some(len(message) - received))

    async with trio.open_nursery() as server_nursery:
        serve = functools.partial(
            trio.serve_tcp, handle, 0, host="127.0.0.1", backlog=_backlog(clients)
        )
        listeners = await server_nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            for _ in range(clients):
                nursery.start_soon(client, port)
        server_nursery.cancel_scope.cancel()


async def lock_trio(total: int, tasks: int) -> None:
    """Acquire and release one `trio.Lock` `total` times across `tasks` tasks."""
    import trio

    lock = trio.Lock()
    per_task = total // tasks

    async def worker() -> None:
        for _ in range(per_task):
            async with lock:
                await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        for _ in range(tasks):
            nursery.start_soon(worker)


async def lock_uncontended_trio(total: int) -> None:
    """Acquire and release one `trio.Lock` `total` times in one task: never contended."""
    import trio

    lock = trio.Lock()
    for _ in range(total):
        async with lock:
            pass


# ---------------------------------------------------------------- AnyIO workloads (any loop)


async def anyio_spawn(total: int, batch: int) -> None:
    """Start `total` trivial tasks through AnyIO task groups of `batch`."""
    import anyio

    for _ in range(total // batch):
        async with anyio.create_task_group() as tg:
            for _ in range(batch):
                tg.start_soon(_trivial)


async def cancel_scope(total: int) -> None:
    """Enter and exit `total` AnyIO cancel scopes."""
    import anyio

    cancel_scope_type = anyio.CancelScope
    for _ in range(total):
        with cancel_scope_type():
            pass


# ---------------------------------------------------------------- memory workloads


def _rss() -> int:
    """Return this process's resident set size in bytes."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _peak_rss() -> int:
    """Return this process's peak resident set size in bytes (Linux: KiB units)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


async def _live_tasks(count: int, measure: Callable[[], int]) -> Metrics:
    """Measure `measure()` before and with `count` pending tasks waiting on one event."""
    event = asyncio.Event()
    gc.collect()
    before = measure()
    tasks = [asyncio.create_task(event.wait()) for _ in range(count)]
    await asyncio.sleep(0)  # every task runs its first step and blocks
    gc.collect()
    during = measure()
    event.set()
    await asyncio.gather(*tasks)
    return {"bytes": float(during - before), "bytes_per_task": (during - before) / count}


async def mem_live(count: int) -> Metrics:
    """RSS growth with `count` pending tasks."""
    return await _live_tasks(count, _rss)


async def mem_live_traced(count: int) -> Metrics:
    """tracemalloc-traced growth with `count` pending tasks."""
    import tracemalloc

    tracemalloc.start()
    try:
        return await _live_tasks(count, lambda: tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()


async def mem_locks(count: int) -> Metrics:
    """tracemalloc-traced growth per `asyncio.Lock` that was acquired once uncontended
    and once contended (two long-lived tasks take every lock in turn, so no task is
    created per lock and the figure is the locks' own)."""
    import tracemalloc

    tracemalloc.start()
    try:
        gc.collect()
        before = tracemalloc.get_traced_memory()[0]
        locks = [asyncio.Lock() for _ in range(count)]
        for lock in locks:
            async with lock:
                pass

        async def take_all() -> None:
            for lock in locks:
                async with lock:
                    await asyncio.sleep(0)  # the other task queues on this lock

        await asyncio.gather(take_all(), take_all())
        gc.collect()
        during = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {"bytes": float(during - before), "bytes_per_lock": (during - before) / count}


async def mem_finished(total: int, batch: int) -> Metrics:
    """RSS after `total` tasks have finished (the history must stay bounded)."""
    gc.collect()
    before = _rss()
    await spawn_asyncio(total, batch)
    gc.collect()
    after = _rss()
    return {"rss_before": float(before), "rss_after": float(after), "peak_rss": _peak_rss()}


PROGRAMS: Final[dict[tuple[str, str], Program]] = {
    ("spawn", "asyncio"): spawn_asyncio,
    ("spawn", "trio"): spawn_trio,
    ("echo", "asyncio"): echo_asyncio,
    ("echo", "trio"): echo_trio,
    ("lock", "asyncio"): lock_asyncio,
    ("lock", "trio"): lock_trio,
    ("lock-uncontended", "asyncio"): lock_uncontended_asyncio,
    ("lock-uncontended", "trio"): lock_uncontended_trio,
    ("anyio-spawn", "asyncio"): anyio_spawn,
    ("anyio-spawn", "trio"): anyio_spawn,
    ("cancel-scope", "asyncio"): cancel_scope,
    ("cancel-scope", "trio"): cancel_scope,
    ("mem-live", "asyncio"): mem_live,
    ("mem-live-traced", "asyncio"): mem_live_traced,
    ("mem-locks", "asyncio"): mem_locks,
    ("mem-finished", "asyncio"): mem_finished,
}


def program_for(workload: Workload) -> Program:
    """Return the coroutine function that runs `workload` (uvloop runs the asyncio one)."""
    flavour = "trio" if workload.flavour == "trio" else "asyncio"
    return PROGRAMS[workload.program, flavour]


# ---------------------------------------------------------------- configurations


class NotInstalledError(Exception):
    """The package a configuration needs cannot be imported."""


def every_monitor_options() -> dict[str, Any]:
    """Return `taskscope.install` keywords for "every monitor on" (see `EVERY_MONITOR`)."""
    import inspect

    import taskscope

    options: dict[str, Any] = {}
    for name, parameter in inspect.signature(taskscope.install).parameters.items():
        if parameter.kind is parameter.KEYWORD_ONLY and isinstance(parameter.default, bool):
            options[name] = True
    options.update(EVERY_MONITOR)
    return options


@contextlib.contextmanager
def _process_wide(config: Config, details: dict[str, Any]) -> Iterator[None]:
    """Install what a configuration hooks process-wide (before any loop exists)."""
    if config.name in ("taskscope", "taskscope-all", "taskscope-locks", "taskscope-scopes"):
        import taskscope

        options = CONFIG_OPTIONS.get(config.name) or (
            every_monitor_options() if config.name == "taskscope-all" else {}
        )
        details["options"] = {key: repr(value) for key, value in options.items()}
        session = taskscope.install(**options)
        try:
            yield
        finally:
            registry = getattr(session, "registry", None)
            # Proof that the hooks saw the workload (0 means nothing was tracked).
            details["tasks_tracked"] = getattr(registry, "created", None)
            session.uninstall()
    elif config.name == "otel":
        try:
            from opentelemetry.instrumentation.asyncio import AsyncioInstrumentor
        except ImportError as exc:
            raise NotInstalledError(str(exc)) from exc
        kwargs: dict[str, Any] = {}
        try:
            # With the SDK, metrics are really recorded (into memory, never exported);
            # with the API alone every record is a no-op.
            from opentelemetry.sdk.metrics import MeterProvider
            from opentelemetry.sdk.metrics.export import InMemoryMetricReader

            kwargs["meter_provider"] = MeterProvider(metric_readers=[InMemoryMetricReader()])
            details["provider"] = "opentelemetry-sdk MeterProvider(InMemoryMetricReader)"
        except ImportError:
            details["provider"] = "API only (no-op)"
        instrumentor = AsyncioInstrumentor()
        instrumentor.instrument(**kwargs)
        try:
            yield
        finally:
            instrumentor.uninstrument()
    else:
        yield


@contextlib.contextmanager
def _on_loop(config: Config, loop: asyncio.AbstractEventLoop) -> Iterator[None]:
    """Attach what a configuration hooks per loop (after the loop exists)."""
    if config.name == "aiomonitor":
        try:
            import aiomonitor
        except ImportError as exc:
            raise NotInstalledError(str(exc)) from exc
        # Port 0: never collide with another process; the UI is not used.
        with aiomonitor.start_monitor(
            loop, hook_task_factory=True, port=0, webui_port=0, console_enabled=False
        ):
            yield
    else:
        yield


def _loop_factory(workload: Workload) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if workload.flavour == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return None


def _settle_malloc() -> None:
    """Put glibc's dynamic mmap threshold in the same state in every configuration.

    asyncio's socket transports ``recv`` into a fresh 256 KiB buffer per read. glibc
    serves blocks that large with mmap (a page fault per page, ~20 us per read) until a
    large mmapped block has been freed, which raises the threshold for the rest of the
    process. Whether that has happened depended on what the configuration imported
    (importing taskscope does it), so plain asyncio measured 2-2.5x slower than
    taskscope on the echo workload. One 1 MiB allocation and free settles it for all.
    """
    block = bytearray(1 << 20)
    del block


def measure(workload: Workload, config: Config, sizes: tuple[int, ...]) -> dict[str, Any]:
    """Run `workload` once under `config`; return the JSON-ready result."""
    _settle_malloc()
    program = program_for(workload)
    details: dict[str, Any] = {}
    result: Any = None
    elapsed = 0.0

    async def timed() -> None:
        nonlocal result, elapsed
        start = time.perf_counter()
        result = await program(*sizes)
        elapsed = time.perf_counter() - start

    if workload.flavour == "trio":
        import trio

        with _process_wide(config, details):
            trio.run(timed)
    else:
        loop_factory = _loop_factory(workload)
        with _process_wide(config, details):
            debug = config.name == "asyncio-debug"
            runner = asyncio.Runner(debug=debug, loop_factory=loop_factory)
            with runner, _on_loop(config, runner.get_loop()):
                runner.run(timed())
    metrics = {key: float(value) for key, value in (result or {}).items()}
    return {"status": "ok", "seconds": elapsed, "metrics": metrics, "details": details}


def _measure_if_installed(
    workload: Workload, config: Config, sizes: tuple[int, ...]
) -> dict[str, Any]:
    not_installed = {"status": "not installed", "reason": f"No module named {config.module!r}"}
    if not config.installed():
        return not_installed
    try:
        return measure(workload, config, sizes)
    except NotInstalledError as exc:
        return {**not_installed, "reason": str(exc)}


def main(argv: list[str] | None = None) -> int:
    """Parse ``WORKLOAD CONFIG SIZE...``, measure once, print one JSON line."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print("usage: python -m benchmarks.worker WORKLOAD CONFIG [SIZE...]", file=sys.stderr)
        return 2
    workload = WORKLOADS_BY_NAME.get(args[0])
    config = CONFIGS_BY_NAME.get(args[1])
    if workload is None or config is None:
        print(f"unknown workload or configuration: {args[0]!r} {args[1]!r}", file=sys.stderr)
        return 2
    sizes = tuple(int(size) for size in args[2:]) or workload.sizes
    real_stdout = sys.stdout
    # Peers may print (aiomonitor logs its ports): keep stdout for the one result line.
    sys.stdout = sys.stderr
    try:
        output = _measure_if_installed(workload, config, sizes)
    finally:
        sys.stdout = real_stdout
    output.update(workload=workload.name, config=config.name, sizes=list(sizes))
    print(json.dumps(output), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
