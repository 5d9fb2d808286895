"""Managed tasks appear in taskscope's own records under their task id, with status."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from taskscope.taskmanager import TaskManager
from tests.conftest import ANYIO_BACKENDS

if TYPE_CHECKING:
    from taskscope import Session


async def succeed() -> str:
    await anyio.sleep(0)
    return "ok"


async def explode() -> None:
    await anyio.sleep(0)
    raise KeyError("gone")


async def forever() -> None:
    await anyio.sleep_forever()


class TestObservedByTaskscope:
    """The manager's tasks are ordinary tasks to taskscope, named by their task id."""

    @pytest.mark.parametrize("backend", ANYIO_BACKENDS)
    def test_task_ids_and_outcomes_in_the_records(
        self, session: Session, backend: tuple[str, dict[str, Any]]
    ) -> None:
        """Completed, failed and cancelled managed tasks are recorded by id and state."""

        async def main() -> None:
            async with TaskManager() as manager:
                manager.add_task("order-1", succeed)
                manager.add_task("order-2", explode)
                manager.add_task("order-3", forever)
                await manager.wait("order-1")
                await manager.wait("order-2")
                manager.cancel_task("order-3")
                await manager.join()

        anyio.run(main, backend=backend[0], backend_options=backend[1])
        managed = {t.name: t for t in session.snapshot().tasks if t.name.startswith("order-")}
        statuses = {name: task.annotations["status"] for name, task in managed.items()}
        assert statuses == {"order-1": "completed", "order-2": "failed", "order-3": "cancelled"}
        assert all(task.annotations["task_id"] == name for name, task in managed.items())
        assert managed["order-1"].coroutine == "succeed"  # the user's function, not _run
        session.end_of_program()
        assert [f.kind for f in session.findings()] == []
