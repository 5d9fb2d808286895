"""The resource monitor: transports, servers, sessions and resource-unclosed."""

from __future__ import annotations

import asyncio
import gc
import sys
from typing import TYPE_CHECKING, Any

import pytest

from taskscope.monitors._resources import ResourceMonitor, track_resource, track_session
from tests.conftest import line_of, run_on

if TYPE_CHECKING:
    from collections.abc import Iterator

    from taskscope import Session


@pytest.fixture
def resources(session: Session) -> Iterator[ResourceMonitor]:
    """A resource monitor installed on the test's session."""
    monitor = ResourceMonitor()
    monitor.install(session.registry)
    try:
        yield monitor
    finally:
        monitor.uninstall()


class TestStreams:
    """asyncio streams and servers are tracked from open to close."""

    def test_open_and_close(self, resources: ResourceMonitor, loop_flavour: str) -> None:
        """A closed connection and server are not findings; open sites are the user's."""

        async def main() -> None:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)  # server
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection("127.0.0.1", port)  # client
            await reader.read()
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

        run_on(loop_flavour, main)
        resources.end_of_program()
        snapshot = resources.snapshot()
        lines = {r.kind: r.opened_at.line for r in snapshot.resources if r.opened_at}
        assert lines == {"server": line_of("server"), "transport": line_of("client")}
        assert resources.findings(snapshot) == []

    def test_unclosed_at_exit(self, resources: ResourceMonitor, loop_flavour: str) -> None:
        """A connection still open at the end is resource-unclosed at its open site."""
        kept: list[object] = []

        async def main() -> None:
            async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                writer.close()

            server = await asyncio.start_server(handle, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            kept.append(await asyncio.open_connection("127.0.0.1", port))  # leaked
            resources.end_of_program()
            findings = resources.findings(resources.snapshot())
            transports = [f for f in findings if f.details["kind"] == "transport"]
            assert [(f.kind, f.location.line) for f in transports if f.location] == [
                ("resource-unclosed", line_of("leaked"))
            ]
            writer = kept[0][1]  # type: ignore[index]
            writer.close()
            await writer.wait_closed()
            server.close()
            await server.wait_closed()

        run_on(loop_flavour, main)

    def test_subprocess(self, resources: ResourceMonitor, loop_flavour: str) -> None:
        """A subprocess waited for is closed (uvloop's transport has no weak references:
        it is held until seen closed, then let go)."""

        async def main() -> None:
            process = await asyncio.create_subprocess_exec(  # spawned
                sys.executable, "-c", "pass", stdout=asyncio.subprocess.DEVNULL
            )
            await process.wait()

        run_on(loop_flavour, main)
        resources.end_of_program()
        snapshot = resources.snapshot()
        spawned = [r for r in snapshot.resources if r.kind == "subprocess"]
        assert [(r.opened_at.line if r.opened_at else None) for r in spawned] == [
            line_of("spawned")
        ]
        assert spawned[0].closed is not None
        assert resources.findings(snapshot) == []
        assert all(r.strong is None for r in resources._open.values())


class TestExplicit:
    """track_resource and track_session."""

    def test_track_resource_collected_open(self, resources: ResourceMonitor) -> None:
        """A tracked object collected while open is reported; None is rejected."""

        class Conn:
            closed = False

        track_resource(Conn(), kind="db", name="primary")  # opened
        gc.collect()
        findings = resources.findings(resources.snapshot())
        assert [(f.kind, f.location.line) for f in findings if f.location] == [
            ("resource-unclosed", line_of("opened"))
        ]
        assert findings[0].details["reason"] == "collected-open"
        with pytest.raises(TypeError, match="None"):
            track_resource(None)

    def test_session_success_rate(self, resources: ResourceMonitor) -> None:
        """Sessions record statuses and outcomes; the section gives a success rate."""

        async def main() -> None:
            async with track_session("mcp") as handle:
                handle.status("ready")
            with pytest.raises(ValueError, match="boom"):
                async with track_session("mcp"):
                    raise ValueError("boom")

        asyncio.run(main())
        snapshot = resources.snapshot()
        (stats,) = snapshot.sessions
        assert (stats.count, stats.ok, stats.errors, stats.success_rate) == (2, 1, 1, 0.5)
        statuses = [s.status for r in snapshot.resources for s in r.statuses]
        assert statuses == ["ready"]


class _HttpServer:
    """A minimal HTTP/1.1 server on 127.0.0.1: keep-alive, every answer "ok"."""

    def __init__(self) -> None:
        self.handlers: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.url = ""

    async def start(self) -> None:
        """Listen on a free port."""
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.url = f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self.handlers.add(task)
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        writer.close()

    async def stop(self) -> None:
        """Stop listening and wait until every connection is closed by its client."""
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()
        if self.handlers:
            await asyncio.wait(self.handlers, timeout=5)


class TestHttpClients:
    """aiohttp.ClientSession and httpx.AsyncClient, against a local server."""

    def test_aiohttp_session(self, resources: ResourceMonitor, loop_flavour: str) -> None:
        """A session closed by ``async with`` is fine; one left open is reported at the
        line that made it."""
        import aiohttp

        async def main() -> None:
            server = _HttpServer()
            await server.start()
            async with (
                aiohttp.ClientSession() as session,
                session.get(server.url) as response,
            ):
                assert await response.text() == "ok"
            leaked = aiohttp.ClientSession()  # leaked session
            async with leaked.get(server.url) as response:
                assert await response.text() == "ok"
            resources.end_of_program()
            findings.extend(resources.findings(resources.snapshot()))
            await leaked.close()
            await server.stop()

        findings: list[Any] = []
        run_on(loop_flavour, main)
        sessions = [f for f in findings if f.details["kind"] == "http-session"]
        assert [(f.kind, f.location.line) for f in sessions if f.location] == [
            ("resource-unclosed", line_of("leaked session"))
        ]
        assert sessions[0].details["name"] == "ClientSession"

    def test_httpx_client(self, resources: ResourceMonitor, loop_flavour: str) -> None:
        """The same for httpx.AsyncClient; closed clients and their connections are not
        findings."""
        import httpx

        async def main() -> None:
            server = _HttpServer()
            await server.start()
            async with httpx.AsyncClient() as client:  # closed client
                assert (await client.get(server.url)).text == "ok"
            leaked = httpx.AsyncClient()  # leaked client
            assert (await leaked.get(server.url)).text == "ok"
            resources.end_of_program()
            findings.extend(resources.findings(resources.snapshot()))
            await leaked.aclose()
            await server.stop()

        findings: list[Any] = []
        run_on(loop_flavour, main)
        by_kind = sorted(
            (f.details["kind"], f.location.line if f.location else 0) for f in findings
        )
        assert ("http-session", line_of("leaked client")) in by_kind
        assert ("http-session", line_of("closed client")) not in by_kind
        # Also open at that point: the leaked client's pooled connection and the server.
        assert {kind for kind, _ in by_kind} == {"http-session", "transport", "server"}
