"""Transparency: programs behave exactly the same under ``taskscope run`` as without it.

DESIGN.md, principle 1: "Real third-party test suites are the proof." The slow test runs
a large slice of AnyIO's own test suite (fetched from its sdist, for the installed AnyIO
version) twice, with plain python and under ``taskscope run``, and requires the same
outcome for every test. The fast tests run small asyncio programs both ways and compare
their output byte for byte. docs/transparency.md says what runs, how long it takes and
what it found.
"""

from __future__ import annotations

import asyncio
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

import taskscope

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
#: Git-ignored (``.cache/`` in .gitignore) and excluded from ruff.
SDIST_CACHE: Final = REPO_ROOT / ".cache" / "anyio-sdist"
REPORT_SCHEMA: Final = "taskscope.report/1"

# -- AnyIO's suite: the slice ----------------------------------------------------------

#: AnyIO's test files that run; together ~2,500 tests, each on asyncio, asyncio+uvloop
#: and trio (plus asyncio+eager on 3.12+). Left out: test_pytest_plugin.py (70 s of
#: nested pytest runs through pytester), test_to_process.py (worker processes, not
#: tasks), test_functools.py/test_itertools.py/test_tempfile.py (little task traffic).
ANYIO_TEST_PATHS: Final = (
    "tests/test_taskgroups.py",
    "tests/test_synchronization.py",
    "tests/test_to_thread.py",
    "tests/test_from_thread.py",
    "tests/test_debugging.py",
    "tests/test_lowlevel.py",
    "tests/test_eventloop.py",
    "tests/test_contextmanagers.py",
    "tests/test_futures.py",
    "tests/test_concurrency_utils.py",
    "tests/test_subprocesses.py",
    "tests/test_signals.py",
    "tests/test_fileio.py",
    "tests/streams",
    "tests/test_sockets.py",
)

#: Deselected in BOTH runs, each for a reason that has nothing to do with taskscope.
ANYIO_SELECTION: Final = (
    # Tests that need the Internet (AnyIO's own marker): DNS answers vary between runs.
    "-m",
    "not network",
    # IPv6 variants of the socket tests: where "localhost" does not resolve to ::1 (no
    # such line in /etc/hosts, as in many containers) their fixture fails after
    # creating a socket, which is then garbage-collected at an arbitrary point; pytest
    # reports that ResourceWarning as an unraisable exception at exit, so the exit
    # status depends on GC timing rather than on the program.
    "-k",
    "not ipv6",
)


#: The slice the opt-in monitors (locks, resources, scopes) are proven on: where AnyIO
#: exercises its locks, semaphores, capacity limiters, conditions, events and cancel
#: scopes hardest.
ANYIO_OPTIN_TEST_PATHS: Final = ("tests/test_synchronization.py", "tests/test_taskgroups.py")
#: ``taskscope run`` options that switch every opt-in monitor on.
OPTIN_MONITORS: Final = ("--locks", "--resources", "--scopes")


def anyio_pytest_args(junit_xml: Path, paths: tuple[str, ...] = ANYIO_TEST_PATHS) -> list[str]:
    """Return the arguments for pytest on AnyIO's slice (cwd: the sdist root).

    ``-c pyproject.toml --rootdir .`` make AnyIO's own configuration apply (its
    ``-p anyio``, ``anyio_mode``, 20 s timeout, ``xfail_strict`` and
    ``filterwarnings = ["error", ...]``), never ours.
    """
    return [
        "-c",
        "pyproject.toml",
        "--rootdir",
        ".",
        "-p",
        "no:cacheprovider",
        "-q",
        *ANYIO_SELECTION,
        f"--junitxml={junit_xml}",
        *paths,
    ]


# -- fetching the sdist ------------------------------------------------------------------


def _safe_extract(archive: Path, into: Path) -> None:
    """Extract `archive` into `into`, refusing links and paths outside it."""
    with tarfile.open(archive) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(into, filter="data")
            return
        # Python 3.11.0-3.11.3 have no extraction filters: check every member ourselves.
        root = into.resolve()
        for member in tar.getmembers():
            target = (into / member.name).resolve()
            if not (member.isfile() or member.isdir()) or not target.is_relative_to(root):
                raise RuntimeError(f"refusing to extract {member.name!r} from {archive}")
        tar.extractall(into)  # every member checked just above


def fetch_anyio_sdist(version: str) -> Path:
    """Return the extracted AnyIO sdist for `version`, downloading it the first time.

    The tarball is fetched with pip (``--no-binary :all:`` so it is the sdist, with the
    tests) into ``.cache/anyio-sdist/<version>/`` and extracted next to it; a marker
    file says the extraction completed, so later runs reuse it.

    Raises:
        pytest.skip.Exception: pip cannot fetch it (offline, or no such release).
    """
    cache = SDIST_CACHE / version
    source = cache / f"anyio-{version}"
    marker = cache / ".extracted"
    if marker.is_file() and (source / "pyproject.toml").is_file():
        return source
    cache.mkdir(parents=True, exist_ok=True)
    archives = sorted(cache.glob("anyio-*.tar.gz"))
    if not archives:
        download = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--disable-pip-version-check",
                f"anyio=={version}",
                "-d",
                str(cache),
            ],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        archives = sorted(cache.glob("anyio-*.tar.gz"))
        if download.returncode != 0 or not archives:
            tail = "\n".join((download.stderr or download.stdout).strip().splitlines()[-5:])
            pytest.skip(
                f"cannot fetch AnyIO {version}'s sdist with pip (offline?); the "
                f"transparency test needs it. pip said:\n{tail}"
            )
    # Extract into a fresh directory and rename it into place: an interrupted run
    # never leaves a half-extracted tree that a later run would trust.
    staging = Path(tempfile.mkdtemp(prefix=".extracting-", dir=cache))
    try:
        _safe_extract(archives[-1], staging)
        extracted = staging / f"anyio-{version}"
        if not (extracted / "tests" / "conftest.py").is_file():
            raise RuntimeError(f"{archives[-1]} has no tests/conftest.py")
        shutil.rmtree(source, ignore_errors=True)
        extracted.rename(source)
        marker.write_text(f"{archives[-1].name}\n", encoding="utf-8")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return source


@pytest.fixture(scope="module")
def anyio_sdist() -> Path:
    """AnyIO's sdist for the installed AnyIO version, extracted (cached across runs)."""
    return fetch_anyio_sdist(importlib.metadata.version("anyio"))


# -- running programs both ways -----------------------------------------------------------


def child_env() -> dict[str, str]:
    """Return the environment for child processes: ours, minus our pytest's traces."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PYTEST_", "COV_CORE_")) and key != "PYTHONWARNINGS"
    }
    env["PYTHONHASHSEED"] = "0"
    return env


def taskscope_run(report: Path, *program: str, options: tuple[str, ...] = ()) -> list[str]:
    """Return the command that runs `program` (python's own arguments) under taskscope."""
    return [
        sys.executable,
        "-m",
        "taskscope",
        "run",
        "--quiet",
        "--report",
        str(report),
        *options,
        *program,
    ]


@dataclass(frozen=True)
class Run:
    """One finished child process."""

    returncode: int
    stdout: bytes
    stderr: bytes
    seconds: float


def run_child(command: list[str], *, cwd: Path, timeout: float) -> Run:
    """Run `command` to completion and return its exit status, output and wall time."""
    start = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=cwd,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def require_cli() -> None:
    """Fail with a clear message when ``python -m taskscope`` does not exist yet."""
    if importlib.util.find_spec("taskscope.__main__") is None:
        pytest.fail("src/taskscope/__main__.py is missing: `python -m taskscope run` cannot work")


# -- junit outcomes ------------------------------------------------------------------------

_OUTCOME_TAGS: Final = {"failure": "failed", "error": "error", "skipped": "skipped"}


def junit_outcomes(path: Path) -> dict[str, str]:
    """Return ``{test id: outcome}`` from a pytest junit XML file.

    Outcomes are passed, failed, error, skipped, xfailed (pytest writes an xfail as a
    ``<skipped type="pytest.xfail">``), or several joined by ``+`` (a failure followed
    by a teardown error).
    """
    outcomes: dict[str, str] = {}
    for case in ET.parse(path).getroot().iter("testcase"):
        test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
        found = set()
        for child in case:
            outcome = _OUTCOME_TAGS.get(child.tag)
            if outcome == "skipped" and child.get("type") == "pytest.xfail":
                outcome = "xfailed"
            if outcome is not None:
                found.add(outcome)
        outcome = "+".join(sorted(found)) or "passed"
        # Report duplicate ids rather than silently keeping one of them.
        key, n = test_id, 1
        while key in outcomes:
            n += 1
            key = f"{test_id} (#{n})"
        outcomes[key] = outcome
    return outcomes


def outcome_diff(plain: Mapping[str, str], traced: Mapping[str, str], limit: int = 40) -> str:
    """Describe the test ids whose outcome differs between the two runs."""
    lines = [
        f"  {test_id}: plain={plain.get(test_id, 'missing')} "
        f"taskscope={traced.get(test_id, 'missing')}"
        for test_id in sorted(plain.keys() | traced.keys())
        if plain.get(test_id) != traced.get(test_id)
    ]
    more = f"\n  ... and {len(lines) - limit} more" if len(lines) > limit else ""
    return "\n".join(lines[:limit]) + more


def tail(data: bytes, lines: int = 30) -> str:
    """Return the last `lines` lines of a child's output, for failure messages."""
    return "\n".join(data.decode(errors="replace").splitlines()[-lines:])


# -- the report ----------------------------------------------------------------------------


def check_report(path: Path) -> dict[str, Any]:
    """Load a taskscope report and validate it (with tests.reportcheck when present)."""
    assert path.is_file(), f"taskscope wrote no report at {path}"
    report: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    try:
        reportcheck = importlib.import_module("tests.reportcheck")
    except ModuleNotFoundError:
        reportcheck = None
    if reportcheck is not None:
        assert_valid_report: Callable[[dict[str, Any]], None] = reportcheck.assert_valid_report
        assert_valid_report(report)
    assert report.get("schema") == REPORT_SCHEMA
    return report


def tasks_by_backend(report: Mapping[str, Any]) -> dict[str, int]:
    """Count the report's task records per backend."""
    counts: dict[str, int] = {}
    for task in report.get("tasks", []):
        backend = str(task.get("backend"))
        counts[backend] = counts.get(backend, 0) + 1
    return counts


# -- the slow test: AnyIO's own suite --------------------------------------------------------


def assert_same_outcomes(
    tmp_path: Path, plain: Run, traced: Run, timing: str, *, minimum: int
) -> None:
    """Both runs wrote their junit xml (``plain.xml``, ``traced.xml`` in `tmp_path`), at
    least `minimum` tests ran, and every test's outcome and the exit status are equal."""
    for name, run in (("plain", plain), ("traced", traced)):
        # A negative status is the signal that killed the run (-11: a segfault).
        assert (tmp_path / f"{name}.xml").is_file(), (
            f"{name} run (exit status {run.returncode}, plain {plain.returncode}) wrote no "
            f"junit xml:\n{tail(run.stdout)}\n{tail(run.stderr)}"
        )
    plain_outcomes = junit_outcomes(tmp_path / "plain.xml")
    traced_outcomes = junit_outcomes(tmp_path / "traced.xml")
    assert len(plain_outcomes) > minimum, (
        f"only {len(plain_outcomes)} AnyIO tests ran:\n{tail(plain.stdout)}\n{tail(plain.stderr)}"
    )
    assert traced_outcomes == plain_outcomes, (
        f"{len(plain_outcomes)} tests compared; outcomes differ under taskscope ({timing}):\n"
        f"{outcome_diff(plain_outcomes, traced_outcomes)}\n"
        f"--- taskscope run, end of output ---\n{tail(traced.stdout, 60)}\n{tail(traced.stderr)}"
    )
    assert traced.returncode == plain.returncode, (
        f"exit status {traced.returncode} under taskscope, {plain.returncode} without\n"
        f"{tail(traced.stderr)}"
    )


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_anyio_suite_same_outcomes(anyio_sdist: Path, tmp_path: Path) -> None:
    """AnyIO's test suite has the same outcome for every test under taskscope as without."""
    require_cli()
    pytest_cmd = [sys.executable, "-m", "pytest"]
    plain = run_child(
        [*pytest_cmd, *anyio_pytest_args(tmp_path / "plain.xml")], cwd=anyio_sdist, timeout=540
    )
    report_path = tmp_path / "report.json"
    traced = run_child(
        taskscope_run(report_path, "-m", "pytest", *anyio_pytest_args(tmp_path / "traced.xml")),
        cwd=anyio_sdist,
        timeout=540,
    )
    timing = (
        f"plain run {plain.seconds:.1f} s, taskscope run {traced.seconds:.1f} s "
        f"({traced.seconds / plain.seconds:.2f}x)"
    )
    print(timing)  # shown with -s / -rA: docs/transparency.md quotes it

    assert_same_outcomes(tmp_path, plain, traced, timing, minimum=2000)

    report = check_report(report_path)
    counts = tasks_by_backend(report)
    assert report["summary"]["tasks_created"] > 2000, report["summary"]
    assert counts.get("asyncio", 0) > 1000, counts
    assert counts.get("trio", 0) > 1000, counts
    # taskscope's own failures are disabled and counted, never raised; under a suite
    # this size any count means a hook misbehaved (and was silently switched off).
    assert report["summary"].get("internal_errors", {}) == {}, report["summary"]
    exit_status = report["program"].get("exit_status")
    assert exit_status in (None, plain.returncode), report["program"]


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_anyio_sync_suite_same_outcomes_with_optin_monitors(
    anyio_sdist: Path, tmp_path: Path
) -> None:
    """AnyIO's synchronisation and task-group tests have the same outcome for every test
    under ``taskscope run --locks --resources --scopes`` as without."""
    require_cli()
    pytest_cmd = [sys.executable, "-m", "pytest"]
    paths = ANYIO_OPTIN_TEST_PATHS
    plain = run_child(
        [*pytest_cmd, *anyio_pytest_args(tmp_path / "plain.xml", paths)],
        cwd=anyio_sdist,
        timeout=270,
    )
    report_path = tmp_path / "report.json"
    traced = run_child(
        taskscope_run(
            report_path,
            "-m",
            "pytest",
            *anyio_pytest_args(tmp_path / "traced.xml", paths),
            options=OPTIN_MONITORS,
        ),
        cwd=anyio_sdist,
        timeout=270,
    )
    timing = (
        f"plain run {plain.seconds:.1f} s, taskscope run {' '.join(OPTIN_MONITORS)} "
        f"{traced.seconds:.1f} s ({traced.seconds / plain.seconds:.2f}x)"
    )
    print(timing)  # shown with -s / -rA: docs/transparency.md quotes it
    assert_same_outcomes(tmp_path, plain, traced, timing, minimum=500)

    report = check_report(report_path)
    assert report["summary"].get("internal_errors", {}) == {}, report["summary"]
    # Proof that the monitors were on and saw the suite's primitives on both backends.
    types = {p["type"] for p in report["locks"]["primitives"]}
    assert {"anyio.Lock", "anyio.Semaphore", "anyio.CapacityLimiter", "anyio.Event"} <= types
    backends = {p["backend"] for p in report["locks"]["primitives"]}
    assert backends >= {"asyncio", "trio"}, backends
    assert "resources" in report
    assert "scopes" in report


# -- the fast tests: a small asyncio program, byte for byte -----------------------------------

#: A program that prints everything taskscope could disturb: task identity and types,
#: coroutine identity, names, scheduling order, ``all_tasks()``, exception groups,
#: task factories (chained), eager tasks (3.12+), uvloop, and how it ends.
PROGRAM: Final = textwrap.dedent(
    """
    import asyncio
    import gc
    import sys

    ENDING = sys.argv[1]
    events = []


    def show(*parts):
        print(*parts, flush=True)


    async def worker(label, rounds):
        for i in range(rounds):
            events.append(f"{label}{i}")
            await asyncio.sleep(0)
        return label


    async def fails(exc):
        await asyncio.sleep(0)
        raise exc


    async def identity():
        coro = worker("id", 1)
        task = asyncio.create_task(coro, name="identity-task")
        show("type", type(task).__module__, type(task).__qualname__)
        show("get_coro is coro", task.get_coro() is coro)
        show("name", task.get_name(), repr(task.get_coro().__qualname__))
        me = asyncio.current_task()
        show("current", me.get_name(), type(me).__qualname__, me.get_coro().__qualname__)
        show("result", await task, task.get_coro() is coro)


    async def scheduling():
        events.clear()
        tasks = [asyncio.create_task(worker(label, 3), name=label) for label in "abc"]
        names = sorted(t.get_name() for t in asyncio.all_tasks())
        show("all_tasks", len(names), names)
        await asyncio.gather(*tasks)
        show("order", " ".join(events))
        events.clear()
        async with asyncio.TaskGroup() as tg:
            for label in "xyz":
                tg.create_task(worker(label, 2), name=f"tg-{label}")
            events.append("body")
        show("taskgroup order", " ".join(events))


    async def exception_groups():
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(fails(ValueError("one")))
                tg.create_task(fails(KeyError("two")))
                tg.create_task(asyncio.sleep(10))
        except* ValueError as group:
            show("except* ValueError", repr(group), [repr(e) for e in group.exceptions])
        except* KeyError as group:
            show("except* KeyError", repr(group), [repr(e) for e in group.exceptions])
        try:
            async with asyncio.timeout(0.01):
                await asyncio.sleep(10)
        except TimeoutError as exc:
            show("timeout", repr(exc), type(exc.__cause__).__name__)
        task = asyncio.create_task(asyncio.sleep(10))
        await asyncio.sleep(0)
        task.cancel("why")
        try:
            await task
        except asyncio.CancelledError as exc:
            show("cancelled", exc.args, task.cancelled())


    async def factories():
        loop = asyncio.get_running_loop()
        calls = []

        class MyTask(asyncio.Task):
            pass

        def outer(loop, coro, **kwargs):
            calls.append(("outer", coro.__qualname__, sorted(kwargs)))
            return MyTask(coro, loop=loop, **kwargs)

        show("factory before", loop.get_task_factory())
        loop.set_task_factory(outer)
        show("factory is outer", loop.get_task_factory() is outer)
        previous = loop.get_task_factory()

        def chained(loop, coro, **kwargs):
            calls.append(("chained", coro.__qualname__))
            return previous(loop, coro, **kwargs)

        loop.set_task_factory(chained)
        coro = worker("f", 1)
        task = asyncio.create_task(coro, name="made-by-factory")
        show("factory task", type(task).__name__, task.get_name(), task.get_coro() is coro)
        await task
        show("factory calls", calls)
        loop.set_task_factory(None)
        show("factory after", loop.get_task_factory())


    async def eager():
        loop = asyncio.get_running_loop()
        loop.set_task_factory(asyncio.eager_task_factory)
        events.clear()
        done_now = asyncio.create_task(worker("e", 0))
        show("eager done at once", done_now.done(), done_now.result())
        later = asyncio.create_task(worker("g", 2))
        events.append("after-create")
        await later
        show("eager order", " ".join(events))
        loop.set_task_factory(None)


    async def main(flavour):
        show("== flavour", flavour, type(asyncio.get_running_loop()).__name__)
        await identity()
        await scheduling()
        await exception_groups()
        await factories()
        # uvloop's create_task does not take eager_start, which 3.13's eager factory
        # passes (a TypeError with or without taskscope): eager tasks on asyncio only.
        if sys.version_info >= (3, 12) and flavour == "asyncio":
            await eager()
        lost = asyncio.create_task(fails(RuntimeError("never retrieved")), name="lost")
        await asyncio.sleep(0.01)
        del lost
        gc.collect()
        return flavour


    show("argv", sys.argv[1:], __name__, __spec__)
    show("result", asyncio.run(main("asyncio")))
    try:
        import uvloop
    except ImportError:
        show("no uvloop")
    else:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            show("result", runner.run(main("uvloop")))
    sys.stderr.write("stderr line\\n")
    if ENDING == "exit-3":
        sys.exit(3)
    if ENDING == "uncaught":
        raise LookupError("uncaught at the end")
    """
)


@pytest.mark.parametrize("ending", ["return", "exit-3", "uncaught"])
def test_asyncio_program_same_output(tmp_path: Path, ending: str) -> None:
    """A small asyncio program prints, logs and exits byte for byte the same under taskscope."""
    require_cli()
    script = tmp_path / "program.py"
    script.write_text(PROGRAM, encoding="utf-8")
    plain = run_child([sys.executable, str(script), ending], cwd=tmp_path, timeout=50)
    report_path = tmp_path / "report.json"
    traced = run_child(taskscope_run(report_path, str(script), ending), cwd=tmp_path, timeout=50)
    assert b"== flavour asyncio" in plain.stdout, plain.stderr.decode(errors="replace")
    assert traced.stdout.decode() == plain.stdout.decode()
    assert traced.stderr.decode() == plain.stderr.decode()
    assert traced.returncode == plain.returncode
    report = check_report(report_path)
    assert tasks_by_backend(report).get("asyncio", 0) >= 20, tasks_by_backend(report)


# -- in-process: a task factory set before and after install ----------------------------------


class _FactoryTask(asyncio.Task[Any]):
    """A task class a user's factory makes: taskscope must hand it back unchanged."""


def _factory_scenario(install_at: str) -> list[tuple[object, ...]]:
    """Yield what a program observes about its task factories, installing taskscope at
    `install_at` ("never", "before-factory", "after-factory") through the run."""
    session: taskscope.Session | None = None
    observed: list[tuple[object, ...]] = []

    def install_if(point: str) -> None:
        nonlocal session
        if install_at == point:
            session = taskscope.install()

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Any, /, **kwargs: Any
    ) -> asyncio.Future[Any]:
        observed.append(("factory", getattr(coro, "__qualname__", "?"), sorted(kwargs)))
        return _FactoryTask(coro, loop=loop, **kwargs)

    async def child(label: str) -> str:
        observed.append(("child", label))
        await asyncio.sleep(0)
        observed.append(("child done", label))
        return label

    async def main() -> None:
        loop = asyncio.get_running_loop()
        install_if("before-factory")
        loop.set_task_factory(factory)
        install_if("after-factory")
        observed.append(("factory kept", loop.get_task_factory() is factory))
        coro = child("one")
        task = asyncio.create_task(coro, name="one")
        observed.append(("type", type(task).__name__, task.get_coro() is coro))
        async with asyncio.TaskGroup() as tg:
            tg.create_task(child("two"))
            tg.create_task(child("three"))
        observed.append(("result", await task))
        loop.set_task_factory(None)

    try:
        asyncio.run(main())
    finally:
        if session is not None:
            session.uninstall()
    observed.append(("installed", session is not None))
    return observed


@pytest.mark.parametrize("install_at", ["before-factory", "after-factory"])
def test_task_factory_chain_unchanged(install_at: str) -> None:
    """A task factory set before or after install is called and returned exactly as without."""
    plain = _factory_scenario("never")
    traced = _factory_scenario(install_at)
    assert plain[-1] == ("installed", False)
    assert traced[-1] == ("installed", True)
    assert traced[:-1] == plain[:-1]
