"""``taskscope run`` behaves like python: argv, __main__, sys.path, streams, exits."""

from __future__ import annotations

import signal
import textwrap
from typing import TYPE_CHECKING

import pytest

from tests.reportcheck import assert_valid_report

from ._helpers import line_of, python, read_report, taskscope

if TYPE_CHECKING:
    from pathlib import Path

PROBE = """\
import sys
print(repr(sys.argv))
print(repr(sys.path[0]))
print(__name__, __file__, sys.modules["__main__"].__file__)
print(repr(globals().get("__spec__")))
sys.stdout.write(sys.stdin.read().upper())
"""

EXITS = """\
import asyncio, os, signal, sys, time

async def main(mode):
    await asyncio.sleep(0)
    if mode == "code":
        raise SystemExit(3)
    if mode == "message":
        sys.exit("goodbye")
    if mode == "exception":
        helper()
    if mode in ("SIGINT", "SIGTERM"):
        os.kill(os.getpid(), getattr(signal, mode))
        await asyncio.sleep(10)

def helper():
    raise ValueError("boom")

print("started", flush=True)
asyncio.run(main(sys.argv[1]))
"""

PLANTED = """\
import asyncio, gc

async def fails():
    raise ValueError("planted")

async def forever():
    await asyncio.sleep(3600)

async def waits_forever():
    await asyncio.get_running_loop().create_future()

async def main():
    asyncio.create_task(fails())  # unretrieved
    global background
    background = asyncio.create_task(forever())  # pending
    asyncio.create_task(waits_forever())  # destroyed
    await asyncio.sleep(0.01)
    gc.collect()

asyncio.run(main())
"""


def _write(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source), encoding="utf-8")
    return path


class TestPassthrough:
    """The program sees what it would see under plain python."""

    def test_script(self, tmp_path: Path) -> None:
        """argv, sys.path[0], __main__, __file__ and stdin/stdout match ``python SCRIPT``."""
        _write(tmp_path, "sub/probe.py", PROBE)
        args = ("sub/probe.py", "a", "--quiet", "-m", "x")
        plain = python(tmp_path, *args, stdin="hello\n")
        traced = taskscope(tmp_path, "run", "--report", "r.json", *args, stdin="hello\n")
        assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout)
        assert "HELLO" in traced.stdout
        assert_valid_report(read_report(tmp_path / "r.json"))

    def test_module(self, tmp_path: Path) -> None:
        """argv[0] is the module's file and sys.path[0] the cwd, as with ``python -m``."""
        _write(tmp_path, "pkg/__init__.py", "")
        _write(
            tmp_path, "pkg/probe.py", PROBE.replace('globals().get("__spec__")', "__spec__.name")
        )
        plain = python(tmp_path, "-m", "pkg.probe", "b", stdin="x\n")
        traced = taskscope(tmp_path, "run", "--quiet", "-m", "pkg.probe", "b", stdin="x\n")
        assert (traced.returncode, traced.stdout) == (plain.returncode, plain.stdout)
        assert traced.stderr == ""
        report = read_report(tmp_path / "taskscope-report.json")
        assert_valid_report(report)
        assert report["program"]["argv"] == [str(tmp_path / "pkg" / "probe.py"), "b"]


def _traceback(stderr: str) -> str:
    """The traceback python printed, without ``<frozen runpy>`` frames."""
    return "".join(
        line for line in stderr.splitlines(keepends=True) if "<frozen runpy>" not in line
    )


EXIT_CASES = [
    pytest.param("ok", 0, 0, id="normal"),
    pytest.param("code", 3, 3, id="SystemExit-3"),
    pytest.param("message", 1, 1, id="sys.exit-message"),
    pytest.param("exception", 1, 1, id="uncaught-exception"),
    pytest.param("SIGINT", -signal.SIGINT, "SIGINT", id="SIGINT"),
    pytest.param("SIGTERM", -signal.SIGTERM, "SIGTERM", id="SIGTERM"),
]


class TestExitStatus:
    """Every way a program ends gives python's status and output, and a valid report."""

    @pytest.mark.parametrize(("mode", "returncode", "reported"), EXIT_CASES)
    def test_exit(self, tmp_path: Path, mode: str, returncode: int, reported: int | str) -> None:
        """Status, stdout and stderr as under python; the report records the status."""
        _write(tmp_path, "exits.py", EXITS)
        traced = taskscope(tmp_path, "run", "--quiet", "exits.py", mode)
        assert traced.returncode == returncode
        assert traced.stdout == "started\n"
        if mode in ("message", "exception", "SIGINT"):
            plain = python(tmp_path, "exits.py", mode)
            assert plain.returncode == returncode
            assert traced.stderr == plain.stderr
            assert "taskscope" not in traced.stderr
        report = read_report(tmp_path / "taskscope-report.json")
        assert_valid_report(report)
        assert report["program"]["exit_status"] == reported
        assert report["program"]["argv"] == ["exits.py", mode]
        assert report["program"]["loop"] == "asyncio"

    def test_summary_on_stderr(self, tmp_path: Path) -> None:
        """Without --quiet the summary follows the program's traceback on stderr."""
        _write(tmp_path, "exits.py", EXITS)
        traced = taskscope(tmp_path, "run", "exits.py", "exception")
        assert traced.returncode == 1
        assert traced.stderr.startswith("Traceback (most recent call last):\n")
        assert "ValueError: boom\ntaskscope: " in traced.stderr
        assert traced.stderr.endswith(f"report: {tmp_path / 'taskscope-report.json'}\n")

    def test_import_error_in_module_is_the_programs(self, tmp_path: Path) -> None:
        """A module failing its own import is the program's error: status 1, traceback."""
        _write(tmp_path, "broken.py", "import not_a_module_anywhere\n")
        traced = taskscope(tmp_path, "run", "--quiet", "-m", "broken")
        plain = python(tmp_path, "-m", "broken")
        assert traced.returncode == plain.returncode == 1
        assert traced.stderr == _traceback(plain.stderr)
        assert_valid_report(read_report(tmp_path / "taskscope-report.json"))


class TestFindings:
    """A program with planted mistakes gets one finding each, at the planted lines."""

    def test_planted_program(self, tmp_path: Path) -> None:
        """Kinds, severities and the creating lines are reported."""
        script = _write(tmp_path, "planted.py", PLANTED)
        traced = taskscope(tmp_path, "run", "planted.py")
        assert traced.returncode == 0
        report = read_report(tmp_path / "taskscope-report.json")
        assert_valid_report(report)
        found = {
            (f["kind"], f["location"]["file"], f["location"]["line"]) for f in report["findings"]
        }
        path = str(script.resolve())
        assert ("task-exception-unretrieved", path, line_of(script, "unretrieved")) in found
        assert ("task-destroyed-pending", path, line_of(script, "destroyed")) in found
        assert "task-exception-unretrieved" in traced.stderr
        assert report["summary"]["findings"]["error"] >= 2


BAD_INPUT = [
    pytest.param(["run", "missing.py"], "cannot open script 'missing.py'", id="no-script"),
    pytest.param(["run", "-m", "no_such_mod"], "cannot find module 'no_such_mod'", id="no-module"),
    pytest.param(
        ["run", "--report", "nodir/r.json", "ok.py"], "cannot write report", id="report-dir"
    ),
    pytest.param(["run", "--frobnicate", "ok.py"], "unrecognized arguments", id="unknown-option"),
    pytest.param(["run", "--quiet"], "missing SCRIPT or -m MODULE", id="missing-script"),
    pytest.param(["run", "-m", "pkg"], "package without a __main__", id="package-no-main"),
    pytest.param(["launch"], "unknown command 'launch'", id="unknown-command"),
]


class TestBadInput:
    """Bad input is one line on stderr, status 2, and the program never runs."""

    @pytest.mark.parametrize(("args", "message"), BAD_INPUT)
    def test_bad_input(self, tmp_path: Path, args: list[str], message: str) -> None:
        """One ``taskscope: error:`` line, no traceback, no report, nothing run."""
        _write(tmp_path, "ok.py", "print('ran')\n")
        _write(tmp_path, "pkg/__init__.py", "print('imported')\n")
        traced = taskscope(tmp_path, *args)
        assert traced.returncode == 2
        assert traced.stdout in ("", "imported\n")
        assert traced.stderr.startswith("taskscope: error: ")
        assert message in traced.stderr
        assert traced.stderr.count("\n") == 1
        assert "Traceback" not in traced.stderr
        assert not (tmp_path / "taskscope-report.json").exists()

    def test_report_write_failure_keeps_status(self, tmp_path: Path) -> None:
        """A report that cannot be written at the end is one line; the status stays."""
        _write(
            tmp_path,
            "rm.py",
            "import os, shutil, sys\nshutil.rmtree('out')\nsys.exit(4)\n",
        )
        (tmp_path / "out").mkdir()
        traced = taskscope(tmp_path, "run", "--quiet", "--report", "out/r.json", "rm.py")
        assert traced.returncode == 4
        assert traced.stderr.startswith("taskscope: error: cannot write report")
        assert traced.stderr.count("\n") == 1
