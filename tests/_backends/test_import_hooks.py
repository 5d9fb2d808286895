"""Post-import hooks: a watched module is seen however it is loaded."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from typing import TYPE_CHECKING

import pytest

from taskscope._backends import _compat

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path
    from types import ModuleType


class _FrontFinder(importlib.abc.MetaPathFinder):
    """Loads one module itself, as pytest's assertion rewriter loads a plugin's modules."""

    def __init__(self, name: str, path: Path) -> None:
        self.name = name
        self.path = path
        self.found: list[str] = []

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        self.found.append(fullname)
        return importlib.util.spec_from_file_location(fullname, self.path)


@pytest.fixture
def module_file(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A module on disk (and a second one, ``<name>_other``), never imported before, and
    forgotten afterwards."""
    name = f"taskscope_hook_probe_{id(tmp_path)}"
    path = tmp_path / f"{name}.py"
    path.write_text("VALUE = 42\n", encoding="utf-8")
    (tmp_path / f"{name}_other.py").write_text("", encoding="utf-8")
    sys.path.insert(0, str(tmp_path))
    try:
        yield name, path
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
        sys.modules.pop(f"{name}_other", None)
        _compat.cancel_import_callbacks()


class TestWhenImported:
    """`when_imported` callbacks run right after the module's import."""

    def test_finder_inserted_in_front(self, module_file: tuple[str, Path]) -> None:
        """A finder put in front of taskscope's later (pytest's rewriter) still loads the
        module, and the callback still runs."""
        name, path = module_file
        seen: list[int] = []
        _compat.when_imported(name, lambda module: seen.append(module.VALUE))
        front = _FrontFinder(name, path)
        sys.meta_path.insert(0, front)
        try:
            importlib.import_module(f"{name}_other")  # any import: taskscope moves first
            module = importlib.import_module(name)
        finally:
            sys.meta_path.remove(front)
        assert front.found == [name]  # the front finder still loaded it
        assert module.VALUE == 42
        assert seen == [42]

    def test_order_of_other_finders_kept(self, module_file: tuple[str, Path]) -> None:
        """Moving taskscope's finder first keeps every other finder, in order."""
        name, _path = module_file
        _compat.when_imported(name, lambda module: None)
        others = [finder for finder in sys.meta_path if finder is not _compat._finder]
        sys.meta_path.remove(_compat._finder)
        sys.meta_path.insert(1, _compat._finder)
        importlib.import_module(f"{name}_other")
        assert sys.meta_path[0] is _compat._finder
        assert [finder for finder in sys.meta_path if finder is not _compat._finder] == others
