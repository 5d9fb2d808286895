"""The resource monitor: transports, servers, sessions and resource-unclosed."""

from __future__ import annotations

import asyncio
import gc
from typing import TYPE_CHECKING

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

    # uvloop: its C transports report closes only through polling; see docs/locks.md.
    def test_open_and_close(self, resources: ResourceMonitor) -> None:
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

        run_on("asyncio", main)
        resources.end_of_program()
        snapshot = resources.snapshot()
        lines = {r.kind: r.opened_at.line for r in snapshot.resources if r.opened_at}
        assert lines == {"server": line_of("server"), "transport": line_of("client")}
        assert resources.findings(snapshot) == []

    def test_unclosed_at_exit(self, resources: ResourceMonitor) -> None:
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

        asyncio.run(main())


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
