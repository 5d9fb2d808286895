"""gather_with_concurrency and as_completed_with_concurrency."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

from taskscope.taskmanager import (
    TaskManager,
    as_completed_with_concurrency,
    gather_with_concurrency,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

pytestmark = pytest.mark.anyio


async def double(x: int) -> int:
    await anyio.lowlevel.checkpoint()
    return 2 * x


async def reverse_delay(x: int) -> int:
    """Finish later items first, so completion order differs from input order."""
    await anyio.sleep(0.001 * (10 - x))
    return x


class Counted:
    """A lazy source that records how far it has been pulled."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.pulled = 0
        self.completed = 0
        self.max_ahead = 0

    def __iter__(self) -> Iterator[int]:
        for i in range(self.n):
            self.pulled += 1
            self.max_ahead = max(self.max_ahead, self.pulled - self.completed)
            yield i

    async def work(self, item: int) -> None:
        await anyio.lowlevel.checkpoint()
        self.completed += 1


async def agen(n: int) -> AsyncIterator[int]:
    for i in range(n):
        await anyio.lowlevel.checkpoint()
        yield i


class TestGather:
    async def test_results_in_input_order(self) -> None:
        """Results come back in input order whatever the completion order."""
        assert await gather_with_concurrency(reverse_delay, range(10), limit=4) == list(range(10))

    async def test_empty_input(self) -> None:
        """An empty input gives an empty list."""
        assert await gather_with_concurrency(double, [], limit=3) == []

    async def test_async_iterable(self) -> None:
        """An async generator is consumed by several workers without overlap."""
        assert await gather_with_concurrency(double, agen(50), limit=8) == [
            2 * i for i in range(50)
        ]

    async def test_limit_bounds_concurrency(self) -> None:
        """No more than limit calls run at once, and the limit is reached."""
        running = peak = 0

        async def track(_: int) -> None:
            nonlocal running, peak
            running += 1
            peak = max(peak, running)
            await anyio.sleep(0.001)
            running -= 1

        await gather_with_concurrency(track, range(40), limit=5)
        assert peak == 5

    async def test_lazy_input_memory_is_bounded(self) -> None:
        """200k lazy items: never more than limit items pulled ahead of completion."""
        # 200k rather than 1M keeps this under a second per backend; the property
        # checked (items in flight <= limit) does not depend on the length.
        source = Counted(200_000)
        results = await gather_with_concurrency(source.work, source, limit=50)
        assert len(results) == 200_000
        assert source.completed == 200_000
        assert source.max_ahead <= 50 + 1

    async def test_first_error_propagates_and_cancels_the_rest(self) -> None:
        """Without return_exceptions the first error is raised as is; others are cancelled."""
        cancelled: list[int] = []
        waiting: list[int] = []
        all_waiting = anyio.Event()

        async def work(x: int) -> int:
            if x == 0:
                await all_waiting.wait()
                raise KeyError("first")
            try:
                waiting.append(x)
                if len(waiting) == 3:
                    all_waiting.set()
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled.append(x)
                raise
            return x  # pragma: no cover

        with pytest.raises(KeyError, match="first"):
            await gather_with_concurrency(work, range(4), limit=4)
        assert sorted(cancelled) == [1, 2, 3]

    async def test_return_exceptions(self) -> None:
        """With return_exceptions, exceptions take the failing items' places."""

        async def odd_fails(x: int) -> int:
            await anyio.lowlevel.checkpoint()
            if x % 2:
                raise ValueError(x)
            return x

        results = await gather_with_concurrency(
            odd_fails, range(4), limit=2, return_exceptions=True
        )
        assert results[0::2] == [0, 2]
        assert all(isinstance(r, ValueError) for r in results[1::2])

    async def test_task_timeout_returned(self) -> None:
        """A call over task_timeout becomes a TimeoutError in its place."""

        async def slow_one(x: int) -> int:
            if x == 1:
                await anyio.sleep_forever()
            return x

        results = await gather_with_concurrency(
            slow_one, range(3), limit=3, task_timeout=0.01, return_exceptions=True
        )
        assert results[0] == 0
        assert results[2] == 2
        assert isinstance(results[1], TimeoutError)

    async def test_task_timeout_raised(self) -> None:
        """Without return_exceptions a per-call timeout is raised as TimeoutError."""
        with pytest.raises(TimeoutError, match="task_timeout"):
            await gather_with_concurrency(
                lambda _: anyio.sleep_forever(), range(3), limit=3, task_timeout=0.01
            )

    async def test_global_timeout(self) -> None:
        """The whole gather raises TimeoutError once timeout expires."""
        with pytest.raises(TimeoutError, match=r"timeout=0\.02"):
            await gather_with_concurrency(
                lambda _: anyio.sleep_forever(), range(3), limit=3, timeout=0.02
            )

    async def test_progress(self) -> None:
        """on_progress gets (completed, total), total None for an unsized input."""
        sized: list[tuple[int, int | None]] = []
        unsized: list[tuple[int, int | None]] = []
        await gather_with_concurrency(
            double, [1, 2, 3], limit=2, on_progress=lambda c, t: sized.append((c, t))
        )
        await gather_with_concurrency(
            double, iter([1, 2]), limit=2, on_progress=lambda c, t: unsized.append((c, t))
        )
        assert sized == [(1, 3), (2, 3), (3, 3)]
        assert unsized == [(1, None), (2, None)]

    async def test_progress_error_propagates(self) -> None:
        """An exception from on_progress is raised by the gather."""

        def bad(completed: int, total: int | None) -> None:
            raise RuntimeError("progress")

        with pytest.raises(RuntimeError, match="progress"):
            await gather_with_concurrency(double, range(5), limit=2, on_progress=bad)

    async def test_jitter(self) -> None:
        """With jitter every item is still processed, in order."""
        assert await gather_with_concurrency(double, range(5), limit=2, jitter=0.002) == [
            0,
            2,
            4,
            6,
            8,
        ]

    async def test_input_error_propagates(self) -> None:
        """An exception raised by the input iterator is raised by the gather."""

        def broken() -> Iterator[int]:
            yield 1
            raise OSError("source")

        with pytest.raises(OSError, match="source"):
            await gather_with_concurrency(double, broken(), limit=2)

    async def test_cancelling_the_caller_cancels_everything(self) -> None:
        """Cancelling the caller cancels every call in flight before returning."""
        started = 0
        cancelled = 0
        all_started = anyio.Event()

        async def work(_: int) -> None:
            nonlocal started, cancelled
            started += 1
            if started == 3:
                all_started.set()
            try:
                await anyio.sleep_forever()
            except anyio.get_cancelled_exc_class():
                cancelled += 1
                raise

        async with anyio.create_task_group() as tg:

            async def caller() -> None:
                await gather_with_concurrency(work, range(1000), limit=3)

            tg.start_soon(caller)
            await all_started.wait()
            tg.cancel_scope.cancel()
        assert (started, cancelled) == (3, 3)

    @pytest.mark.parametrize(
        ("kwargs", "error", "match"),
        [
            pytest.param({"limit": 0}, ValueError, "limit", id="zero-limit"),
            pytest.param({"limit": 2.5}, TypeError, "limit", id="float-limit"),
            pytest.param({"limit": 2, "task_timeout": 0}, ValueError, "task_timeout", id="tt"),
            pytest.param({"limit": 2, "timeout": -1}, ValueError, "timeout", id="timeout"),
            pytest.param({"limit": 2, "jitter": -1}, ValueError, "jitter", id="jitter"),
            pytest.param({"limit": 2, "on_progress": 3}, TypeError, "on_progress", id="progress"),
            pytest.param(
                {"limit": 2, "return_exceptions": 1}, TypeError, "return_exceptions", id="re"
            ),
        ],
    )
    async def test_bad_arguments(
        self, kwargs: dict[str, Any], error: type[Exception], match: str
    ) -> None:
        """Bad options raise a clear error naming the argument."""
        with pytest.raises(error, match=match):
            await gather_with_concurrency(double, range(3), **kwargs)

    async def test_bad_func_and_items(self) -> None:
        """A non-callable func or a non-iterable input is rejected by name."""
        with pytest.raises(TypeError, match="func"):
            await gather_with_concurrency(3, range(3), limit=2)  # type: ignore[call-overload]
        with pytest.raises(TypeError, match="items"):
            await gather_with_concurrency(double, 3, limit=2)  # type: ignore[call-overload]


class TestAsCompleted:
    async def test_yields_every_result_with_its_index(self) -> None:
        """Each (index, result) pair arrives once, in completion order."""
        done = [anyio.Event() for _ in range(11)]
        done[10].set()

        async def after_next(x: int) -> int:
            await done[x + 1].wait()  # item 9 finishes first, item 0 last
            done[x].set()
            return x * 10

        async with as_completed_with_concurrency(after_next, range(10), limit=10) as results:
            pairs = [pair async for pair in results]
        assert pairs == [(i, i * 10) for i in reversed(range(10))]

    async def test_leaving_early_cancels_the_rest(self) -> None:
        """Breaking out of the loop cancels the calls still in flight."""
        source = Counted(1_000_000)
        async with as_completed_with_concurrency(source.work, source, limit=4) as results:
            async for index, _ in results:
                if index >= 10:
                    break
        assert source.pulled <= 10 + 4 + 2

    async def test_error_propagates(self) -> None:
        """A failing call is raised from the block unless return_exceptions is set."""

        async def fail(x: int) -> int:
            await anyio.lowlevel.checkpoint()
            raise ValueError(x)

        async def consume_all() -> None:
            async with as_completed_with_concurrency(fail, range(1), limit=2) as results:
                async for _ in results:
                    pass  # pragma: no cover

        with pytest.raises(ValueError, match="0"):
            await consume_all()
        async with as_completed_with_concurrency(
            fail, range(3), limit=2, return_exceptions=True
        ) as results:
            values = [value async for _, value in results]
        assert all(isinstance(v, ValueError) for v in values)
        assert len(values) == 3

    async def test_bounded_when_consumer_is_slow(self) -> None:
        """A slow consumer holds workers back: pulled stays within limit of consumed."""
        source = Counted(10_000)
        consumed = 0
        async with as_completed_with_concurrency(source.work, source, limit=8) as results:
            async for _ in results:
                consumed += 1
                assert source.pulled - consumed <= 8 + 1
                await anyio.lowlevel.checkpoint()
        assert consumed == 10_000


class TestManagerGather:
    async def test_uses_the_global_limiter(self) -> None:
        """The manager's gather borrows global slots, visible in snapshots."""
        seen: list[int] = []
        async with TaskManager(max_concurrency=3) as manager:

            async def probe(x: int) -> int:
                seen.append(manager.snapshot().global_limiter.borrowed)
                await anyio.lowlevel.checkpoint()
                return x

            results = await manager.gather_with_concurrency(probe, range(10))
        assert results == list(range(10))
        assert max(seen) <= 3
        assert min(seen) >= 1
