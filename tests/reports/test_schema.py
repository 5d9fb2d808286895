"""The JSON Schema accepts every report taskscope writes and rejects broken ones."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
from typing import TYPE_CHECKING, Any

import pytest

from taskscope.reports import SCHEMA_ID, report_problems
from tests.reportcheck import assert_valid_report

if TYPE_CHECKING:
    from taskscope import Session


async def _fails() -> None:
    raise ValueError("planted")


async def _forever() -> None:
    await asyncio.sleep(3600)


async def _orphan() -> None:
    await asyncio.get_running_loop().create_future()


async def _main() -> None:
    asyncio.create_task(_fails())  # noqa: RUF006  # planted: unretrieved
    background = asyncio.create_task(_forever())
    asyncio.create_task(_orphan())  # noqa: RUF006  # planted: destroyed
    await asyncio.sleep(0.01)
    gc.collect()
    del background


@pytest.fixture
def api_report(session: Session) -> dict[str, Any]:
    """A report from the Python API, with findings (an unretrieved exception at least)."""
    asyncio.run(_main())
    session.end_of_program()
    report = session.report()
    kinds = {finding["kind"] for finding in report["findings"]}
    assert "task-exception-unretrieved" in kinds
    return report


class TestValidReports:
    """Reports produced through the Python API match the schema."""

    def test_api_report_is_valid(self, api_report: dict[str, Any]) -> None:
        """A report with findings, failed, cancelled and destroyed tasks validates."""
        assert_valid_report(api_report)
        assert report_problems(api_report) == []

    def test_report_survives_json(self, api_report: dict[str, Any]) -> None:
        """The report is JSON as it is: a round trip changes nothing."""
        assert json.loads(json.dumps(api_report, allow_nan=False)) == api_report

    def test_empty_session_is_valid(self, session: Session) -> None:
        """A session that saw no task still writes a valid report."""
        report = session.report()
        assert_valid_report(report)
        assert report["schema"] == SCHEMA_ID
        assert report["program"]["loop"] is None

    def test_extra_sections_are_allowed(self, api_report: dict[str, Any]) -> None:
        """A later monitor's section, unknown to this schema version, is allowed."""
        api_report["queues"] = [{"name": "db"}]
        assert_valid_report(api_report)

    def test_known_sections_are_checked(self, api_report: dict[str, Any]) -> None:
        """A known section (``locks``) of the wrong shape is rejected."""
        api_report["locks"] = [{"name": "db"}]
        with pytest.raises(AssertionError):
            assert_valid_report(api_report)


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(report: dict[str, Any]) -> None:
        target: Any = report
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


def _delete(path: tuple[Any, ...]) -> Any:
    def change(report: dict[str, Any]) -> None:
        target: Any = report
        for key in path[:-1]:
            target = target[key]
        del target[path[-1]]

    return change


BROKEN = [
    pytest.param(_set(("schema",), "taskscope.report/2"), id="schema-id"),
    pytest.param(_delete(("tasks",)), id="missing-section"),
    pytest.param(_set(("findings", 0, "severity"), "fatal"), id="severity-enum"),
    pytest.param(_set(("findings", 0, "kind"), "task-oops"), id="kind-enum"),
    pytest.param(_set(("findings", 0, "location", "line"), "12"), id="line-type"),
    pytest.param(_set(("findings", 0, "location", "column"), 3), id="location-extra-field"),
    pytest.param(_delete(("findings", 0, "details", "exception")), id="unretrieved-details"),
    pytest.param(_set(("tasks", 0, "state"), "sleeping"), id="state-enum"),
    pytest.param(_delete(("tasks", 0, "created_at")), id="task-field-missing"),
    pytest.param(_set(("tasks", 0, "busy"), -1.0), id="negative-duration"),
    pytest.param(_set(("summary", "findings", "fatal"), 1), id="summary-extra-severity"),
    pytest.param(_set(("program", "exit_status"), 1.5), id="exit-status-type"),
    pytest.param(_set(("program", "loop"), "tokio"), id="loop-enum"),
]


class TestBrokenReports:
    """The schema is strict enough to catch mistakes."""

    @pytest.mark.parametrize("breakage", BROKEN)
    def test_broken_report_fails(self, api_report: dict[str, Any], breakage: Any) -> None:
        """Each broken field makes validation fail."""
        broken = copy.deepcopy(api_report)
        broken["findings"].sort(key=lambda f: f["kind"] != "task-exception-unretrieved")
        breakage(broken)
        with pytest.raises(AssertionError, match="does not match its schema"):
            assert_valid_report(broken)
        assert report_problems(broken)
