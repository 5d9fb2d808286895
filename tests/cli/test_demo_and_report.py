"""``taskscope demo`` finds its planted mistakes; ``taskscope report`` re-renders reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import taskscope.demo as demo_package
from taskscope.cli import main
from tests.reportcheck import assert_valid_report

from ._helpers import line_of, read_report, taskscope

SERVICE = Path(demo_package.__file__).with_name("_service.py").resolve()


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    """Run ``taskscope demo`` once for every test of the demo."""
    cwd = tmp_path_factory.mktemp("demo")
    return taskscope(cwd, "demo"), cwd / "taskscope-report.json"


class TestDemo:
    """The demo exits 0 and taskscope reports its three planted mistakes at their lines."""

    def test_runs_cleanly(self, demo_run: tuple[Any, Path]) -> None:
        """The service itself succeeds; the summary ends with the report path."""
        result, report_path = demo_run
        assert result.returncode == 0
        assert "processed 30 orders" in result.stdout
        assert result.stderr.endswith(f"report: {report_path}\n")

    @pytest.mark.parametrize(
        ("kind", "marker"),
        [
            pytest.param("task-exception-unretrieved", "planted: unretrieved", id="unretrieved"),
            pytest.param("task-pending-at-exit", "planted: pending", id="pending"),
            pytest.param("task-destroyed-pending", "planted: destroyed", id="destroyed"),
        ],
    )
    def test_planted_finding(self, demo_run: tuple[Any, Path], kind: str, marker: str) -> None:
        """Each planted mistake is found exactly once, at the demo's own line."""
        _, report_path = demo_run
        report = read_report(report_path)
        assert_valid_report(report)
        found = [f["location"] for f in report["findings"] if f["kind"] == kind]
        assert found == [
            {
                "file": str(SERVICE),
                "line": line_of(SERVICE, marker),
                "function": found[0]["function"],
            }
        ]

    def test_program_section(self, demo_run: tuple[Any, Path]) -> None:
        """The demo runs as ``-m taskscope.demo`` would, on asyncio (and AnyIO)."""
        _, report_path = demo_run
        program = read_report(report_path)["program"]
        assert program["argv"] == [str(Path(demo_package.__file__).with_name("__main__.py"))]
        assert program["exit_status"] == 0
        assert program["backends"] == ["asyncio"]


class TestReportCommand:
    """``taskscope report`` validates a saved report and prints its summary."""

    def test_text(self, demo_run: tuple[Any, Path]) -> None:
        """Through the real command line: the same summary as at the end of the run."""
        result, report_path = demo_run
        shown = taskscope(report_path.parent, "report", report_path.name)
        assert shown.returncode == 0
        assert shown.stderr == ""
        expected = result.stderr[result.stderr.index("taskscope: ") :]
        assert shown.stdout == expected.replace(str(report_path), report_path.name)

    def test_json(self, demo_run: tuple[Any, Path], capsys: pytest.CaptureFixture[str]) -> None:
        """``--format json`` prints the report itself."""
        _, report_path = demo_run
        assert main(["report", str(report_path), "--format", "json"]) == 0
        assert json.loads(capsys.readouterr().out) == read_report(report_path)

    @pytest.mark.parametrize(
        ("content", "message"),
        [
            pytest.param("{", "invalid JSON", id="not-json"),
            pytest.param('{"a": 1}', "not a taskscope report", id="not-a-report"),
            pytest.param(
                '{"schema": "taskscope.report/1", "program": {}}',
                "not a valid taskscope report",
                id="schema-violation",
            ),
        ],
    )
    def test_invalid(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
    ) -> None:
        """A file that is not a valid report is one error line and status 2."""
        path = tmp_path / "bad.json"
        path.write_text(content, encoding="utf-8")
        assert main(["report", str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith("taskscope: error: ")
        assert message in captured.err
        assert captured.err.count("\n") == 1
