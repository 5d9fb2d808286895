"""Cancel-scope tracking: statistics, scope stacks, cross-task and misnested exits."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
import trio

import taskscope
from taskscope._backends import _compat_anyio
from taskscope._core._exceptions import real_errors
from taskscope.monitors._scopes import ScopeMonitor
from tests.conftest import line_of

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

    from taskscope.monitors._scopes_records import ScopesSection

BACKENDS = [pytest.param("asyncio", id="asyncio"), pytest.param("trio", id="trio")]
HERE = os.path.realpath(__file__)


@pytest.fixture
def monitor() -> Iterator[ScopeMonitor]:
    """A session with a ScopeMonitor installed, always uninstalled."""
    session = taskscope.install()
    scopes = ScopeMonitor(exception_notes=False)
    scopes.install(session.registry)
    try:
        yield scopes
    finally:
        scopes.uninstall()
        session.uninstall()


def run(backend: str, main: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run `main` with AnyIO on `backend`."""
    return anyio.run(main, backend=backend)


def outcome(fn: Callable[[], Any]) -> tuple[str, str]:
    """Return (exception type, message) raised by `fn` ('', '' if none)."""
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001  # compared, not handled
        errors = real_errors(exc) or [exc]
        message = str(errors[0]).split("\n")[0]
        # Object ids and task numbers differ from run to run.
        return type(errors[0]).__qualname__, re.sub(
            r"0x[0-9a-f]+|[0-9a-f]{9,}|Task-\d+", "#", message
        )
    return "", ""


# -- the real patterns ---------------------------------------------------------------


async def _streaming() -> AsyncIterator[int]:
    async with anyio.create_task_group():  # gen-tg
        yield 1
        yield 2


async def abandoned_generator() -> None:
    """Consume one item of an async generator that yields inside a task group, then
    drop it: the event loop's finalizer closes it in another task."""
    agen = _streaming()
    async for _ in agen:
        break
    del agen
    gc.collect()
    await asyncio.sleep(0.05)


async def exit_stack_in_background() -> None:
    """Enter a task group on an AsyncExitStack in a background task, close it in main."""
    stack = contextlib.AsyncExitStack()

    async def opener() -> None:
        await stack.enter_async_context(anyio.create_task_group())  # stack-enter

    await asyncio.create_task(opener())
    await stack.aclose()  # stack-close


class Client:
    """An SDK-style client holding a task group between __aenter__ and __aexit__."""

    def __init__(self) -> None:
        self._group = anyio.create_task_group()

    async def __aenter__(self) -> Client:
        await self._group.__aenter__()  # client-enter
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self._group.__aexit__(*exc_info)  # client-exit


async def clients_out_of_order() -> None:
    """Open two clients and close the first one first."""
    first = await Client().__aenter__()
    second = await Client().__aenter__()
    try:
        await first.__aexit__(None, None, None)
    finally:
        with contextlib.suppress(RuntimeError):
            await second.__aexit__(None, None, None)


async def fixture_like() -> None:
    """An async fixture holding a task group across ``yield``, set up in one task and
    torn down in another (what pytest-asyncio does with differently scoped loops)."""

    async def fixture() -> AsyncIterator[None]:
        async with anyio.create_task_group():  # fixture-tg
            yield

    agen = fixture()
    await asyncio.create_task(agen.__anext__())  # type: ignore[arg-type]
    await asyncio.create_task(agen.__anext__())  # type: ignore[arg-type]  # fixture-teardown


class TestPatterns:
    """The cross-task error, explained from the real patterns."""

    def test_abandoned_async_generator(self, monitor: ScopeMonitor) -> None:
        """A task group in an async generator closed by the loop's finalizer is a
        cross-task finding pointing at the generator, owned by the finalizer."""
        kind, _ = outcome(lambda: asyncio.run(abandoned_generator()))
        section = monitor.snapshot()
        (error,) = section.errors
        assert error.kind == "cancel-scope-cross-task"
        assert error.owner == "asyncgen_finalizer"
        assert error.owner_name is not None
        assert error.owner_name.endswith("_streaming")
        assert error.scope.entered_at is not None
        assert (error.scope.entered_at.file, error.scope.entered_at.line) == (
            HERE,
            line_of("gen-tg"),
        )
        assert error.still_active
        assert error.raised == "RuntimeError"
        assert error.scope.task is not None
        assert error.exited_by is not None
        assert error.scope.task.id != error.exited_by.id
        (finding,) = monitor.findings(section)
        assert finding.location == error.scope.entered_at
        assert finding.details["entered_at"]["location"] == error.scope.entered_at
        assert finding.details["exited_at"]["task"] == error.exited_by
        assert "aclosing" in finding.details["hint"]
        # The scope stays active and cancels the main task: AnyIO's own behaviour.
        assert kind == "CancelledError"

    def test_exit_stack_closed_in_another_task(self, monitor: ScopeMonitor) -> None:
        """An AsyncExitStack entered in a background task and closed in main."""
        kind, message = outcome(lambda: asyncio.run(exit_stack_in_background()))
        assert kind == "RuntimeError"
        assert "different task" in message
        (error,) = monitor.snapshot().errors
        assert error.owner == "exit_stack"
        assert error.exited_at is not None
        assert error.scope.entered_at is not None
        assert error.exited_at.line == line_of("stack-close")
        assert error.scope.entered_at.line == line_of("stack-enter")
        assert any(loc.line == line_of("stack-close") for loc in error.exited_stack)

    def test_fixture_holding_task_group_across_yield(self, monitor: ScopeMonitor) -> None:
        """An async fixture's task group torn down in another task names the fixture."""
        kind, _ = outcome(lambda: asyncio.run(fixture_like()))
        assert kind == "RuntimeError"
        (error,) = monitor.snapshot().errors
        assert error.owner == "asyncgen"
        assert error.owner_name is not None
        assert error.owner_name.endswith("fixture")
        assert error.scope.entered_at is not None
        assert error.scope.entered_at.line == line_of("fixture-tg")

    def test_clients_closed_out_of_order(self, monitor: ScopeMonitor) -> None:
        """Closing the first of two clients first is a misnesting in one task."""
        kind, _ = outcome(lambda: asyncio.run(clients_out_of_order()))
        assert kind == "RuntimeError"
        errors = monitor.snapshot().errors
        assert errors[0].kind == "cancel-scope-misnested"
        assert errors[0].innermost is not None
        assert errors[0].scope.entered_at is not None
        assert errors[0].scope.entered_at.line == line_of("client-enter")
        assert errors[0].exited_at is not None
        assert errors[0].exited_at.line == line_of("client-exit")
        finding = monitor.findings(monitor.snapshot())[0]
        assert finding.kind == "cancel-scope-misnested"
        assert "reverse order" in finding.details["hint"]

    def test_exception_note_is_opt_in(self) -> None:
        """With exception_notes=True AnyIO's error gets a note naming the entry line."""
        session = taskscope.install()
        scopes = ScopeMonitor(exception_notes=True)
        scopes.install(session.registry)
        try:
            with pytest.raises(RuntimeError) as caught:
                asyncio.run(exit_stack_in_background())
        finally:
            scopes.uninstall()
            session.uninstall()
        notes = getattr(caught.value, "__notes__", [])
        assert any(f"{HERE}:{line_of('stack-enter')}" in note for note in notes)


class TestTransparency:
    """AnyIO raises exactly the same with and without the monitor."""

    @pytest.mark.parametrize(
        "program",
        [
            pytest.param(abandoned_generator, id="abandoned-generator"),
            pytest.param(exit_stack_in_background, id="exit-stack"),
            pytest.param(clients_out_of_order, id="out-of-order"),
            pytest.param(fixture_like, id="fixture"),
        ],
    )
    def test_same_exceptions(self, program: Callable[[], Coroutine[Any, Any, None]]) -> None:
        """Each pattern raises the same exception type and message either way."""
        plain = outcome(lambda: asyncio.run(program()))
        session = taskscope.install()
        scopes = ScopeMonitor()
        scopes.install(session.registry)
        try:
            tracked = outcome(lambda: asyncio.run(program()))
        finally:
            scopes.uninstall()
            session.uninstall()
        assert tracked == plain

    def test_uninstall_restores_methods(self) -> None:
        """Every wrapped method is restored exactly."""
        from anyio._backends import _asyncio as anyio_asyncio

        originals = {
            (cls, name): vars(cls)[name]
            for cls, names in (
                (anyio_asyncio.CancelScope, ("__enter__", "__exit__", "cancel")),
                (trio.CancelScope, ("__enter__", "_close", "_cancel")),
                (asyncio.TaskGroup, ("__aenter__", "__aexit__", "_abort")),
            )
            for name in names
        }
        session = taskscope.install()
        scopes = ScopeMonitor()
        scopes.install(session.registry)
        assert (
            vars(anyio_asyncio.CancelScope)["__enter__"]
            is not (originals[anyio_asyncio.CancelScope, "__enter__"])
        )
        scopes.uninstall()
        session.uninstall()
        for (cls, name), original in originals.items():
            assert vars(cls)[name] is original

    def test_second_monitor_refused(self, monitor: ScopeMonitor) -> None:
        """Only one ScopeMonitor per process: the second says what to do."""
        session = taskscope.current_session()
        assert session is not None
        with pytest.raises(RuntimeError, match="uninstall"):
            ScopeMonitor().install(session.registry)


class TestTracking:
    """Statistics, kinds and each task's current scope stack."""

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_statistics_by_kind(self, monitor: ScopeMonitor, backend: str) -> None:
        """Task groups, move_on_after, fail_after and plain scopes are counted by kind."""

        async def main() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(anyio.sleep, 0)
            with anyio.move_on_after(0.01):
                await anyio.sleep(1)
            with contextlib.suppress(TimeoutError), anyio.fail_after(0.01):
                await anyio.sleep(1)
            with anyio.CancelScope():
                await anyio.sleep(0)

        run(backend, main)
        section = monitor.snapshot()
        kinds = section.by_kind
        assert kinds["task_group"].entered == 1
        assert kinds["move_on_after"].timed_out == 1
        assert kinds["move_on_after"].cancelled_caught == 1
        assert kinds["fail_after"].timed_out == 1
        assert kinds["cancel_scope"].entered >= 1
        assert section.statistics.errors == 0
        assert section.statistics.error_rate == 0.0
        assert section.statistics.active == 0
        assert section.available

    @pytest.mark.parametrize("backend", BACKENDS)
    def test_scope_stack_in_snapshot(self, monitor: ScopeMonitor, backend: str) -> None:
        """While a task is inside nested scopes, the snapshot lists them outermost first."""
        seen: list[ScopesSection] = []

        async def main() -> None:
            async with anyio.create_task_group():  # stack-outer
                with anyio.move_on_after(10):  # stack-inner
                    seen.append(monitor.snapshot())

        run(backend, main)
        section = seen[0]
        lines = {info.id: info.entered_at.line for info in section.active if info.entered_at}
        stacks = [
            [lines.get(sid) for sid in stack.scopes]
            for stack in section.task_stacks
            if len(stack.scopes) >= 2
        ]
        assert [line_of("stack-outer"), line_of("stack-inner")] in [s[-2:] for s in stacks]
        inner = next(
            i for i in section.active if i.entered_at and i.entered_at.line == lines[max(lines)]
        )
        assert inner.timeout is not None
        assert 9 < inner.timeout <= 10

    def test_asyncio_native_scopes(self, monitor: ScopeMonitor) -> None:
        """asyncio.timeout and asyncio.TaskGroup are tracked too."""

        async def main() -> None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.01):
                    await asyncio.sleep(1)
            async with asyncio.TaskGroup() as group:
                group.create_task(asyncio.sleep(0))

        asyncio.run(main())
        kinds = monitor.snapshot().by_kind
        assert kinds["asyncio.timeout"].timed_out == 1
        assert kinds["asyncio.TaskGroup"].exited == 1

    def test_trio_native_nursery(self, monitor: ScopeMonitor) -> None:
        """trio's own nurseries and move_on_after are tracked."""

        async def main() -> None:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(trio.sleep, 0)
            with trio.move_on_after(0.01):
                await trio.sleep(1)

        trio.run(main)
        kinds = monitor.snapshot().by_kind
        assert kinds["task_group"].exited == 1
        assert kinds["move_on_after"].timed_out == 1


class TestCompat:
    """The AnyIO version check and its degrade path."""

    def test_installed_version_supported(self) -> None:
        """The installed AnyIO passes the version and structure checks."""
        from anyio._backends import _asyncio as anyio_asyncio

        version = importlib.metadata.version("anyio")
        assert _compat_anyio.anyio_problem(version, anyio_asyncio) is None

    @pytest.mark.parametrize("version", ["3.7.1", "4.13.0", "5.0.0", "", "garbage"])
    def test_unknown_version_refused(self, version: str) -> None:
        """Old, future-major or unreadable versions are not tracked, with a reason."""
        problem = _compat_anyio.anyio_problem(version, None)
        assert problem is not None
        assert "not supported" in problem

    def test_unknown_layout_degrades(
        self, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A layout the compat module does not know: one warning, AnyIO untouched."""
        from anyio._backends import _asyncio as anyio_asyncio

        original = vars(anyio_asyncio.CancelScope)["__enter__"]
        monkeypatch.setattr(_compat_anyio, "anyio_version", lambda: "4.0.0")
        session = taskscope.install()
        scopes = ScopeMonitor()
        try:
            with caplog.at_level("WARNING", logger="taskscope"):
                scopes.install(session.registry)
            assert vars(anyio_asyncio.CancelScope)["__enter__"] is original
            section = scopes.snapshot()
            assert not section.available
            assert section.unavailable_reason is not None
            warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
            assert len(warnings) == 1
        finally:
            scopes.uninstall()
            session.uninstall()


# -- AnyIO's own test suite under the monitor --------------------------------------------

SDIST_CACHES = (
    Path(__file__).resolve().parents[2] / ".cache" / "anyio-sdist",
    Path(__file__).resolve().parents[2] / ".cache" / "anyio-sdist-scopes",
)

BOOTSTRAP = textwrap.dedent(
    """
    import sys
    import pytest
    if sys.argv[1] == "tracked":
        import taskscope
        from taskscope.monitors._scopes import ScopeMonitor
        session = taskscope.install()
        ScopeMonitor().install(session.registry)
    sys.exit(pytest.main(sys.argv[2:]))
    """
)


def _anyio_sdist() -> Path:
    version = importlib.metadata.version("anyio")
    for cache in SDIST_CACHES:
        source = cache / version / f"anyio-{version}"
        if (source / "tests" / "test_taskgroups.py").is_file():
            return source
    target = SDIST_CACHES[1] / version
    target.mkdir(parents=True, exist_ok=True)
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
         "--disable-pip-version-check", f"anyio=={version}", "-d", str(target)],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    archives = sorted(target.glob("anyio-*.tar.gz"))
    if download.returncode != 0 or not archives:
        pytest.skip(f"cannot fetch AnyIO {version}'s sdist (offline?)")
    import tarfile

    with tarfile.open(archives[-1]) as tar:
        tar.extractall(target, filter="data")
    return target / f"anyio-{version}"


def _outcomes(sdist: Path, mode: str, tmp: Path) -> dict[str, str]:
    import xml.etree.ElementTree as ET  # our own junit file

    junit = tmp / f"{mode}.xml"
    script = tmp / "bootstrap.py"
    script.write_text(BOOTSTRAP, encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(Path(taskscope.__file__).parents[1]), str(Path(__file__).parents[2])]
    )
    subprocess.run(
        [sys.executable, str(script), mode, "-c", "pyproject.toml", "--rootdir", ".", "-p",
         "anyio", "-p", "no:cacheprovider", "-q", f"--junitxml={junit}",
         "tests/test_taskgroups.py"],
        cwd=sdist, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    results: dict[str, str] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        status = "passed"
        for child in case:
            if child.tag in {"failure", "error", "skipped"}:
                status = child.tag
        results[name] = status
    return results


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_anyio_taskgroup_suite_unchanged(tmp_path: Path) -> None:
    """AnyIO's own task-group and cancel-scope tests have the same outcomes with the
    monitor installed as without it."""
    sdist = _anyio_sdist()
    plain = _outcomes(sdist, "plain", tmp_path)
    tracked = _outcomes(sdist, "tracked", tmp_path)
    assert len(plain) > 100
    names = plain.keys() | tracked.keys()
    differences = {
        name: (plain.get(name), tracked.get(name))
        for name in names
        if plain.get(name) != tracked.get(name)
    }
    assert differences == {}


class TestSection:
    """The section is JSON-ready and matches its schema fragment."""

    def test_section_matches_schema_fragment(self, monitor: ScopeMonitor) -> None:
        """A section with an error validates against the report schema's ``scopes``."""
        import jsonschema  # type: ignore[import-untyped]  # no stubs in the venv

        from taskscope.reports._json import to_jsonable
        from taskscope.reports._schema import load_schema

        outcome(lambda: asyncio.run(exit_stack_in_background()))
        schema = load_schema()
        section_schema = {"$defs": schema["$defs"], **schema["properties"]["scopes"]}
        data = to_jsonable(monitor.snapshot())
        jsonschema.validate(data, section_schema)
        assert data["statistics"]["cross_task"] == 1


class TestBounds:
    """The tables stay bounded and cheap when more scopes are open than allowed."""

    def test_max_active_drops_oldest_and_counts(self) -> None:
        """Past max_active live scopes, the oldest are dropped (counted), not rescanned."""
        session = taskscope.install()
        scopes = ScopeMonitor(max_active=100)
        scopes.install(session.registry)
        try:

            async def main() -> None:
                with contextlib.ExitStack() as stack:
                    for _ in range(1_000):
                        stack.enter_context(anyio.CancelScope())
                    section = scopes.snapshot()
                    assert len(section.active) <= 100
                    assert section.dropped >= 900

            anyio.run(main)
        finally:
            scopes.uninstall()
            session.uninstall()
        assert scopes.snapshot().statistics.entered >= 1_000
