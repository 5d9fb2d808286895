"""The system monitor: a bounded time series, with or without psutil."""

from __future__ import annotations

import asyncio
import builtins
import logging
from typing import Any

import pytest

import taskscope
from taskscope.monitors import HealthSnapshot, _system
from tests.reportcheck import assert_valid_report


async def _until_lag_is_sampled(session: taskscope.Session) -> None:
    """Run the loop until the loop monitor has measured its lag at least once (on a
    loaded machine the first probe can take a while; no fixed sleep is long enough)."""
    for _ in range(2_000):
        await asyncio.sleep(0.005)
        loop = session.snapshot().loop
        if loop is not None and loop.lag.count > 0:
            return


class TestSystem:
    """Samples of CPU, memory, threads, files, GC and tasks."""

    def test_samples_in_snapshot_and_report(self) -> None:
        """With psutil, samples carry RSS, open files and context switches."""
        pytest.importorskip("psutil")
        session = taskscope.install(system_interval=0.01)
        try:
            asyncio.run(asyncio.sleep(0.1))
            snapshot = session.snapshot()
            assert isinstance(snapshot, HealthSnapshot)
            system = snapshot.system
            assert system is not None
            assert system.psutil
            last = system.samples[-1]
            assert last.rss is not None
            assert last.rss > 0
            assert last.open_files is not None
            assert last.threads >= 2  # this thread and the watchdog
            report = session.report()
            assert report["system"]["samples"]
            assert_valid_report(report)
        finally:
            session.uninstall()

    def test_off(self) -> None:
        """system_interval=0 turns the system monitor off."""
        with taskscope.monitor(system_interval=0) as session:
            snapshot = session.snapshot()
            assert isinstance(snapshot, HealthSnapshot)
            assert snapshot.system is None
            assert session.report()["system"] is None

    def test_without_psutil(
        self, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Without psutil the monitor says so once, and the rest still works."""
        real_import = builtins.__import__

        def no_psutil(name: str, *args: Any, **kwargs: Any) -> Any:
            if name == "psutil":
                raise ImportError("No module named 'psutil'")
            return real_import(name, *args, **kwargs)

        monkeypatch.setattr(builtins, "__import__", no_psutil)
        monkeypatch.setattr(_system, "_psutil_warned", False)
        with caplog.at_level(logging.WARNING, logger="taskscope"):
            for _ in range(2):
                with taskscope.monitor(system_interval=0.01) as session:
                    asyncio.run(_until_lag_is_sampled(session))
                    snapshot = session.snapshot()
                    assert isinstance(snapshot, HealthSnapshot)
                    system = snapshot.system
                    assert system is not None
                    assert not system.psutil
                    assert system.samples[-1].rss is None
                    assert system.samples[-1].cpu_user >= 0
                    assert snapshot.loop is not None
                    assert snapshot.loop.lag.count > 0
                    assert_valid_report(session.report())
        warnings = [r for r in caplog.records if "psutil is not installed" in r.getMessage()]
        assert len(warnings) == 1
