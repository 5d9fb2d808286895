"""The watchdog in whole processes: exits, SIGTERM during a hang, the command line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import pytest

from tests.cli._helpers import line_of, read_report, taskscope
from tests.reportcheck import assert_valid_report

if TYPE_CHECKING:
    from pathlib import Path

posix_only = pytest.mark.skipif(os.name != "posix", reason="POSIX signals")

HANG = textwrap.dedent(
    """\
    import asyncio, sys, taskscope

    def spin_forever():
        session = taskscope.current_session()
        count = 0
        said = False
        while True:
            count += 1  # hang-line
            if not said and count % 10000 == 0 and session.monitors.loop.current_stalls():
                said = True
                print("stalled", flush=True)

    async def worker():
        spin_forever()

    async def main():
        await asyncio.create_task(worker(), name="hung")  # create-hung

    asyncio.run(main())
    """
)


class TestProcess:
    """The watchdog never keeps a process alive and never loses a hang."""

    def test_program_ends_with_watchdog_running(self, tmp_path: Path) -> None:
        """A program that installs and never uninstalls still exits promptly."""
        script = tmp_path / "forgets.py"
        script.write_text(
            "import asyncio, taskscope\n"
            "taskscope.install(system_interval=0.01)\n"
            "asyncio.run(asyncio.sleep(0.05))\n"
            "print('done')\n"
        )
        result = subprocess.run(
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == "done\n"

    @posix_only
    def test_sigterm_during_a_hang_writes_the_ongoing_stall(self, tmp_path: Path) -> None:
        """SIGTERM while a task spins forever: the report holds the ongoing stall."""
        script = tmp_path / "hang.py"
        script.write_text(HANG)
        report = tmp_path / "report.json"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "taskscope",
                "run",
                "--report",
                str(report),
                "--block-threshold",
                "50ms",
                str(script),
            ],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            assert process.stdout.readline() == "stalled\n"
            process.send_signal(signal.SIGTERM)
            _out, err = process.communicate(timeout=30)
        finally:
            process.kill()
        assert process.returncode == -signal.SIGTERM, err
        data = read_report(report)
        assert_valid_report(data)
        assert data["program"]["exit_status"] == "SIGTERM"
        (stall,) = data["loop"]["stalls"]
        assert stall["ongoing"]
        assert stall["tasks"][0]["name"] == "hung"
        assert stall["tasks"][0]["created_at"]["line"] == line_of(script, "create-hung")
        assert stall["location"]["function"] == "spin_forever"
        (finding,) = [f for f in data["findings"] if f["kind"] == "loop-blocked"]
        assert finding["details"]["ongoing"]
        assert "loop-blocked" in err

    @posix_only
    def test_dump_signal(self, tmp_path: Path) -> None:
        """--dump-signal SIGUSR1 writes the tasks and threads to stderr, and the program
        goes on."""
        script = tmp_path / "dumped.py"
        script.write_text(
            textwrap.dedent(
                """\
                import asyncio, os, signal

                async def main():
                    await asyncio.sleep(0.01)
                    os.kill(os.getpid(), signal.SIGUSR1)
                    await asyncio.sleep(0.01)
                    print("after")

                asyncio.run(main())
                """
            )
        )
        result = taskscope(tmp_path, "run", "--dump-signal", "SIGUSR1", str(script))
        assert result.returncode == 0, result.stderr
        assert result.stdout == "after\n"
        assert "taskscope: emergency dump" in result.stderr
        assert "live tasks: 1" in result.stderr


class TestCommandLine:
    """Thresholds on the command line."""

    @pytest.mark.parametrize(
        "value",
        [
            pytest.param("0", id="zero"),
            pytest.param("-5ms", id="negative"),
            pytest.param("fast", id="garbage"),
            pytest.param("10parsecs", id="unit"),
        ],
    )
    def test_bad_block_threshold(self, tmp_path: Path, value: str) -> None:
        """A bad --block-threshold is one line on stderr and status 2."""
        script = tmp_path / "ok.py"
        script.write_text("print('never')\n")
        result = taskscope(tmp_path, "run", "--block-threshold", value, str(script))
        assert result.returncode == 2
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, result.stderr
        assert "--block-threshold" in lines[0]

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            pytest.param("100ms", 0.1, id="ms"),
            pytest.param("0.1s", 0.1, id="s"),
            pytest.param("0.1", 0.1, id="bare"),
            pytest.param("2s", 2.0, id="2s"),
        ],
    )
    def test_durations(self, text: str, seconds: float) -> None:
        """Durations accept ms, s or plain seconds."""
        from taskscope.cli._args import parse_run

        request = parse_run(["--block-threshold", text, "app.py"])
        assert request.block_threshold == pytest.approx(seconds)

    def test_bad_dump_signal(self, tmp_path: Path) -> None:
        """An unknown --dump-signal is one line and status 2."""
        result = taskscope(tmp_path, "run", "--dump-signal", "SIGNOPE", "app.py")
        assert result.returncode == 2
        assert len(result.stderr.strip().splitlines()) == 1
