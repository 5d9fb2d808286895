"""The public surface of taskscope.taskmanager."""

from __future__ import annotations

import dataclasses

import taskscope.taskmanager as tm


class TestPublicApi:
    def test_all_is_sorted(self) -> None:
        """__all__ is sorted, so additions are easy to review."""
        assert tm.__all__ == sorted(tm.__all__)

    def test_names_have_one_public_home(self) -> None:
        """Every public class reports taskscope.taskmanager as its module."""
        for name in tm.__all__:
            obj = getattr(tm, name)
            assert getattr(obj, "__module__", tm.__name__) == "taskscope.taskmanager", name

    def test_records_are_frozen_slotted_dataclasses(self) -> None:
        """Records are frozen dataclasses with slots."""
        for record in (tm.TaskInfo, tm.ManagerSnapshot, tm.LimiterStatistics, tm.Limits):
            params = getattr(record, "__dataclass_params__", None)
            assert params is not None, record
            assert params.frozen, record
            assert "__slots__" in vars(record), record
            assert dataclasses.is_dataclass(record)

    def test_errors_share_a_base(self) -> None:
        """Every manager error derives from TaskManagerError; state errors are RuntimeErrors."""
        for error in (
            tm.QueueFullError,
            tm.DuplicateTaskError,
            tm.UnknownTaskError,
            tm.ManagerStateError,
            tm.WrongTaskError,
        ):
            assert issubclass(error, tm.TaskManagerError)
        assert issubclass(tm.WrongTaskError, RuntimeError)
        assert issubclass(tm.ManagerStateError, RuntimeError)

    def test_statuses(self) -> None:
        """The six statuses have the documented string values."""
        assert [s.value for s in tm.TaskStatus] == [
            "pending",
            "running",
            "completed",
            "failed",
            "cancelled",
            "timeout",
        ]
        assert not tm.TaskStatus.RUNNING.is_final
        assert tm.TaskStatus.TIMEOUT.is_final
