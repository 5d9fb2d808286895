"""The opt-in monitors (--locks, --resources, --scopes) reach the report end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import TYPE_CHECKING

from tests.reportcheck import assert_valid_report

if TYPE_CHECKING:
    from pathlib import Path

PROGRAM = """\
import asyncio

import anyio

KEEP = []

async def hold(lock: asyncio.Lock) -> None:
    await lock.acquire()  # never released


async def leaves_stream_open() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    KEEP.append(await asyncio.open_connection("127.0.0.1", port))  # never closed
    # No wait_closed(): since 3.12 it waits for the connection left open on purpose.
    server.close()


async def main() -> None:
    lock = asyncio.Lock()
    await asyncio.create_task(hold(lock))
    await leaves_stream_open()
    with anyio.move_on_after(0.01):
        await anyio.sleep(1)


asyncio.run(main())
"""


class TestOptInMonitors:
    """Each opt-in flag adds its section and its findings to a valid report."""

    def test_sections_and_findings(self, tmp_path: Path) -> None:
        """--locks --resources --scopes give locks, resources and scopes sections."""
        (tmp_path / "app.py").write_text(PROGRAM, encoding="utf-8")
        report_path = tmp_path / "report.json"
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "taskscope",
                "run",
                "--quiet",
                "--report",
                str(report_path),
                "--locks",
                "--resources",
                "--scopes",
                "app.py",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        report = json.loads(report_path.read_text(encoding="utf-8"))
        assert_valid_report(report)
        kinds = {finding["kind"] for finding in report["findings"]}
        assert "lock-never-released" in kinds
        assert "resource-unclosed" in kinds
        assert report["scopes"]["statistics"]["entered"] >= 1
        assert report["locks"]["primitives"]

    def test_off_by_default(self, tmp_path: Path) -> None:
        """Without the flags the report has no such sections."""
        (tmp_path / "app.py").write_text("print('hi')\n", encoding="utf-8")
        report_path = tmp_path / "report.json"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "taskscope",
                "run",
                "--quiet",
                "--report",
                str(report_path),
                "app.py",
            ],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        report = json.loads(report_path.read_text(encoding="utf-8"))
        assert not {"locks", "resources", "scopes"} & set(report)

    def test_summary_lines(self, tmp_path: Path) -> None:
        """The console summary lists what is still held and what was left open, with the
        lines that acquired and opened them."""
        (tmp_path / "app.py").write_text(PROGRAM, encoding="utf-8")
        result = subprocess.run(
            [sys.executable, "-m", "taskscope", "run", "--locks", "--resources", "app.py"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        source = PROGRAM.splitlines()

        def line(text: str) -> int:
            return next(n for n, code in enumerate(source, start=1) if text in code)

        text = " ".join(result.stderr.split())  # the summary wraps at 100 columns
        assert (
            f"still held asyncio.Lock at app.py:{line('asyncio.Lock()')} by task 'Task-2'" in text
        ), result.stderr
        assert f"acquired at app.py:{line('never released')} in hold" in text, result.stderr
        opened = f"opened at app.py:{line('never closed')} in leaves_stream_open"
        assert "unclosed transport" in text, result.stderr
        assert opened in text, result.stderr
