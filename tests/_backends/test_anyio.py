"""AnyIO programs are recorded the same way on asyncio, asyncio+uvloop and trio."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest

from tests.conftest import ANYIO_BACKENDS, line_of
from tests.reportcheck import assert_valid_report

if TYPE_CHECKING:
    from taskscope import Session, TaskInfo


@pytest.fixture(params=ANYIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """The AnyIO backend (and its options) a test program runs on."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend


def run(backend: tuple[str, dict[str, Any]], func: Any) -> Any:
    name, options = backend
    return anyio.run(func, backend=name, backend_options=options)


def named(session: Session, name: str) -> TaskInfo:
    matches = [t for t in session.snapshot().tasks if t.name == name]
    assert len(matches) == 1, sorted(t.name for t in session.snapshot().tasks)
    return matches[0]


async def worker(steps: int) -> None:
    for _ in range(steps):
        await anyio.sleep(0)


async def broken() -> None:
    raise LookupError("missing")  # broken-raise


class TestTaskGroups:
    """Task group children are recorded with their spawn line, parent and steps."""

    def test_children_are_recorded(
        self, session: Session, anyio_backend: tuple[str, dict[str, Any]]
    ) -> None:
        """start_soon and start record the user's line, the parent task and the steps."""

        async def starter(*, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
            task_status.started()
            await worker(1)

        async def main() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(worker, 3, name="soon")  # start-soon
                await group.start(starter, name="started")  # start-call

        run(anyio_backend, main)
        soon = named(session, "soon")
        assert soon.created_at is not None
        assert soon.created_at.file == __file__
        assert soon.created_at.line == line_of("start-soon")
        assert soon.coroutine == "worker"
        assert soon.state == "completed"
        assert soon.steps >= 3
        assert soon.busy > 0
        assert soon.backend == ("trio" if anyio_backend[0] == "trio" else "asyncio")
        started = named(session, "started")
        assert started.created_at is not None
        assert started.created_at.line == line_of("start-call")
        assert started.parent_id is not None
        assert started.parent_id == soon.parent_id

    def test_failure_is_recorded_and_not_unretrieved(
        self, session: Session, anyio_backend: tuple[str, dict[str, Any]]
    ) -> None:
        """A failing child is failed with its exception; the group retrieves it."""

        async def main() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(broken, name="broken")

        with pytest.raises(BaseExceptionGroup) as caught:
            run(anyio_backend, main)
        assert caught.group_contains(LookupError)
        task = named(session, "broken")
        assert task.state == "failed"
        assert task.exception is not None
        assert task.exception.type == "LookupError"
        assert task.exception.location is not None
        assert task.exception.location.line == line_of("broken-raise")
        session.end_of_program()
        assert [f.kind for f in session.findings()] == []

    def test_cancelled_children_are_cancelled(
        self, session: Session, anyio_backend: tuple[str, dict[str, Any]]
    ) -> None:
        """Children cancelled by their group's scope end as cancelled."""

        async def main() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep_forever, name="sleeper")
                await anyio.sleep(0)
                group.cancel_scope.cancel()

        run(anyio_backend, main)
        sleeper = named(session, "sleeper")
        assert sleeper.state == "cancelled"
        assert sleeper.cancellation is not None
        assert sleeper.cancellation.cause == "cancel-scope"
        assert_valid_report(session.report())

    def test_a_clean_program_has_no_findings(
        self, session: Session, anyio_backend: tuple[str, dict[str, Any]]
    ) -> None:
        """Structured AnyIO code leaves nothing behind."""

        async def main() -> None:
            async with anyio.create_task_group() as group:
                for n in range(20):
                    group.start_soon(worker, n)

        run(anyio_backend, main)
        session.end_of_program()
        assert session.findings() == []
        assert sum(1 for t in session.snapshot().tasks if t.coroutine == "worker") == 20
