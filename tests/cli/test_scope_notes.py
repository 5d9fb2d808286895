"""``--scope-notes``: AnyIO's own cross-task error gains a note saying where its scope was
entered; the error, the exit status and everything else stay as without it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tests.cli._helpers import line_of, python, read_report, taskscope
from tests.reportcheck import assert_valid_report

if TYPE_CHECKING:
    from pathlib import Path

#: The classic: an async generator holding a task group across `yield`, started in one
#: task and closed (by its consumer) in another.
PROGRAM = """\
import anyio


async def numbers():
    async with anyio.create_task_group():  # entered
        yield 1


async def main():
    agen = numbers()

    async def first():
        await agen.__anext__()

    async with anyio.create_task_group() as group:
        group.start_soon(first)
    await agen.aclose()


anyio.run(main)
"""

ERROR = "Attempted to exit a cancel scope that isn't the current tasks's current cancel scope"


def test_note_names_the_entering_task_and_line(tmp_path: Path) -> None:
    script = tmp_path / "agen.py"
    script.write_text(PROGRAM, encoding="utf-8")
    entered = line_of(script, "entered")
    plain = python(tmp_path, str(script))
    report = tmp_path / "report.json"
    noted = taskscope(
        tmp_path, "run", "--quiet", "--scopes", "--scope-notes", "--report", str(report), "agen.py"
    )
    assert noted.returncode == plain.returncode == 1
    assert ERROR in plain.stderr
    assert ERROR in noted.stderr
    assert "taskscope: this task group was entered in task" not in plain.stderr
    note = (
        "taskscope: this task group was entered in task '__main__.main.<locals>.first' "
        f"at {script}:{entered} in numbers"
    )
    assert note in noted.stderr
    document = read_report(report)
    assert_valid_report(document)
    cross = [f for f in document["findings"] if f["kind"] == "cancel-scope-cross-task"]
    assert [f["location"]["line"] for f in cross] == [entered]


def test_without_notes_the_error_is_unchanged(tmp_path: Path) -> None:
    script = tmp_path / "agen.py"
    script.write_text(PROGRAM, encoding="utf-8")
    tracked = taskscope(tmp_path, "run", "--quiet", "--scopes", "agen.py")
    assert tracked.returncode == 1
    assert ERROR in tracked.stderr
    assert "taskscope: this" not in tracked.stderr


def test_notes_without_scopes_is_a_usage_error(tmp_path: Path) -> None:
    script = tmp_path / "agen.py"
    script.write_text(PROGRAM, encoding="utf-8")
    completed = taskscope(tmp_path, "run", "--scope-notes", "agen.py")
    assert completed.returncode == 2
    assert completed.stderr.splitlines() == [
        "taskscope: error: --scope-notes needs --scopes (the notes come from the scope monitor)"
    ]
    assert not (tmp_path / "taskscope-report.json").exists()
