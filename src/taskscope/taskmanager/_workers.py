"""The manager's own pool of worker processes for ``run_in_process``.

Not ``anyio.to_process``: AnyIO (4.x) starts a worker and waits for it to report ready
without any cleanup if it is cancelled meanwhile. A timeout or cancellation that lands
while a worker starts (a fraction of a second, much longer on a loaded machine) leaves
that process running, its pipes open and unowned: it is neither killed nor in AnyIO's
pool, so nothing reaps it. Trio then reports the unclosed pidfd and pipes as
``ResourceWarning``; uvloop waits for the live child handle for ever when its loop closes.

Here the pool owns every worker from the moment it is spawned (the spawn itself is
shielded, it is one fork/exec), and any exception or cancellation after that kills the
worker, closes its pipes and reaps it, shielded, before it propagates. With
``cancellable=False`` start-up and call are shielded as one: the call runs to completion.
Idle workers are reused and stopped when the manager closes.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from typing import TYPE_CHECKING, TypeVar, cast

import anyio
from anyio.streams.buffered import BufferedByteReceiveStream

if TYPE_CHECKING:
    from collections.abc import Callable

    from anyio.abc import ByteReceiveStream, ByteSendStream, Process

__all__ = ["ProcessPool", "worker_command"]

T = TypeVar("T")

_HEADER = 8  # bytes of big-endian length before each pickle; see _worker.py
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")


def worker_command() -> list[str]:
    """The command that starts one worker (a function, so tests can replace it)."""
    return [sys.executable, "-P", "-u", _WORKER]


class _Worker:
    __slots__ = ("process", "replies", "requests")

    def __init__(self, process: Process) -> None:
        self.process = process
        self.requests = cast("ByteSendStream", process.stdin)
        self.replies = BufferedByteReceiveStream(cast("ByteReceiveStream", process.stdout))

    async def exchange(self, request: bytes) -> tuple[bool, object]:
        """Send one pickled request and return the unpickled ``(ok, value)`` reply."""
        await self.requests.send(len(request).to_bytes(_HEADER, "big") + request)
        size = int.from_bytes(await self.replies.receive_exactly(_HEADER), "big")
        body = await self.replies.receive_exactly(size)
        reply: tuple[bool, object] = pickle.loads(body)  # noqa: S301 -- our own worker
        return reply

    async def stop(self) -> None:
        """Kill the worker, close its pipes and reap it; shielded, so it always finishes."""
        with anyio.CancelScope(shield=True):
            try:
                self.process.kill()
            except ProcessLookupError:
                pass
            await self.process.aclose()


class ProcessPool:
    """Worker processes for one manager: each runs one call at a time.

    The caller's limiter bounds how many calls (so how many workers) there are.
    """

    def __init__(self) -> None:
        self._idle: list[_Worker] = []
        self._closed = False

    async def run(
        self,
        func: Callable[..., T],
        args: tuple[object, ...],
        *,
        limiter: anyio.CapacityLimiter,
        cancellable: bool,
    ) -> T:
        """Run ``func(*args)`` in a worker under ``limiter``.

        Raises:
            BrokenWorkerProcess: The worker could not be started or died mid-call.
        """
        request = pickle.dumps(("run", func, args), pickle.HIGHEST_PROTOCOL)
        async with limiter:
            with anyio.CancelScope(shield=not cancellable):
                worker = await self._checkout()
                ok, value = await self._call(worker, request)
                # A worker that raised SystemExit (or worse) exits: never reuse it.
                if self._closed or not (ok or isinstance(value, Exception)):
                    await worker.stop()
                else:
                    self._idle.append(worker)
        if not ok:
            raise cast("BaseException", value)
        return cast("T", value)

    async def aclose(self) -> None:
        """Stop the idle workers; a worker still busy is stopped when its call returns."""
        self._closed = True
        idle, self._idle = self._idle, []
        for worker in idle:
            await worker.stop()

    async def _checkout(self) -> _Worker:
        while self._idle:
            worker = self._idle.pop()
            if worker.process.returncode is None:
                return worker
            await worker.stop()  # died while idle: close its pipes, reap it
        return await self._start()

    async def _start(self) -> _Worker:
        with anyio.CancelScope(shield=True):
            process = await anyio.open_process(
                worker_command(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=None
            )
        worker = _Worker(process)
        init = pickle.dumps(
            ("init", sys.path, getattr(sys.modules["__main__"], "__file__", None)),
            pickle.HIGHEST_PROTOCOL,
        )
        ok, value = await self._call(worker, init)
        if not ok:
            await worker.stop()
            raise anyio.BrokenWorkerProcess(
                "a worker process failed to load the main module"
            ) from cast("BaseException", value)
        return worker

    @staticmethod
    async def _call(worker: _Worker, request: bytes) -> tuple[bool, object]:
        try:
            return await worker.exchange(request)
        except BaseException as exc:
            await worker.stop()
            if not isinstance(exc, Exception):  # cancellation, KeyboardInterrupt, ...
                raise
            raise anyio.BrokenWorkerProcess(
                f"worker process {worker.process.pid} broke off: {exc!r}"
            ) from exc
