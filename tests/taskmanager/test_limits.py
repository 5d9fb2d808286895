"""Capacity limits: defaults from the CPU count, environment overrides, validation."""

from __future__ import annotations

import pytest

from taskscope.taskmanager import Limits, TaskManager, resolve_limits
from taskscope.taskmanager._limits import (
    default_global_limit,
    default_process_limit,
    default_thread_limit,
)


class TestDefaults:
    @pytest.mark.parametrize(
        ("cpus", "expected"),
        [
            pytest.param(1, (32, 21, 1), id="1-cpu"),
            pytest.param(4, (32, 21, 4), id="4-cpus"),
            pytest.param(16, (64, 42, 8), id="16-cpus"),
            pytest.param(128, (256, 128, 8), id="128-cpus"),
        ],
    )
    def test_formulas(self, cpus: int, expected: tuple[int, int, int]) -> None:
        """Defaults follow min(max(32, 4*CPU), 256), min(max(16, 2g//3), 128), max(1, min(CPU, 8))."""  # noqa: E501
        global_limit = default_global_limit(cpus)
        assert (
            global_limit,
            default_thread_limit(global_limit),
            default_process_limit(cpus),
        ) == expected

    def test_thread_floor(self) -> None:
        """The thread default never drops below 16, even for a tiny global limit."""
        assert default_thread_limit(2) == 16

    def test_resolved_from_nothing(self) -> None:
        """With no arguments and no environment the defaults apply."""
        limits = resolve_limits(env={})
        assert limits.max_concurrency == default_global_limit()
        assert limits.max_threads == default_thread_limit(limits.max_concurrency)
        assert limits.max_queue == 10_000


class TestOverrides:
    def test_environment(self) -> None:
        """Environment variables override the defaults."""
        env = {
            "TASKSCOPE_MAX_CONCURRENCY": "7",
            "TASKSCOPE_MAX_THREADS": " 3 ",
            "TASKSCOPE_MAX_PROCESSES": "2",
            "TASKSCOPE_MAX_QUEUE": "9",
        }
        assert resolve_limits(env=env) == Limits(7, 3, 2, 9)

    def test_arguments_beat_environment(self) -> None:
        """Explicit arguments win over environment variables."""
        env = {"TASKSCOPE_MAX_CONCURRENCY": "7"}
        assert resolve_limits(max_concurrency=5, env=env).max_concurrency == 5

    def test_thread_default_follows_effective_global(self) -> None:
        """The thread default is derived from the effective global limit."""
        assert resolve_limits(max_concurrency=120, env={}).max_threads == 80

    def test_empty_variable_is_ignored(self) -> None:
        """An empty variable counts as unset."""
        assert resolve_limits(env={"TASKSCOPE_MAX_QUEUE": ""}).max_queue == 10_000

    def test_manager_reads_os_environ(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """TaskManager() picks the limits up from os.environ."""
        monkeypatch.setenv("TASKSCOPE_MAX_CONCURRENCY", "11")
        assert TaskManager().limits.max_concurrency == 11

    @pytest.mark.parametrize(
        ("variable", "value"),
        [
            pytest.param("TASKSCOPE_MAX_CONCURRENCY", "many", id="word"),
            pytest.param("TASKSCOPE_MAX_THREADS", "0", id="zero"),
            pytest.param("TASKSCOPE_MAX_PROCESSES", "-2", id="negative"),
            pytest.param("TASKSCOPE_MAX_QUEUE", "1.5", id="float"),
        ],
    )
    def test_bad_environment_names_the_variable(self, variable: str, value: str) -> None:
        """A bad environment value raises ValueError naming the variable."""
        with pytest.raises(ValueError, match=variable):
            resolve_limits(env={variable: value})


class TestValidation:
    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            pytest.param({"max_concurrency": 0}, ValueError, "max_concurrency", id="zero"),
            pytest.param({"max_threads": -1}, ValueError, "max_threads", id="negative"),
            pytest.param({"max_processes": 1.5}, TypeError, "max_processes", id="float"),
            pytest.param({"max_queue": True}, TypeError, "max_queue", id="bool"),
            pytest.param({"history_size": 0}, ValueError, "history_size", id="history"),
            pytest.param({"default_timeout": 0}, ValueError, "default_timeout", id="timeout"),
            pytest.param(
                {"default_timeout": float("inf")}, ValueError, "default_timeout", id="inf"
            ),
            pytest.param({"shutdown_grace": -1}, ValueError, "shutdown_grace", id="grace"),
            pytest.param({"cancel_timeout": "1"}, TypeError, "cancel_timeout", id="cancel"),
            pytest.param({"clock": 1}, TypeError, "clock", id="clock"),
        ],
    )
    def test_bad_options(
        self, kwargs: dict[str, object], error: type[Exception], match: str
    ) -> None:
        """Bad constructor options raise a clear error naming the option."""
        with pytest.raises(error, match=match):
            TaskManager(**kwargs)  # type: ignore[arg-type]
