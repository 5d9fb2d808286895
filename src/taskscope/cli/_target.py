"""The program to run: checked before it starts, then executed as python would.

``python SCRIPT`` runs the file in a fresh ``__main__`` module with an absolute
``__file__`` while ``sys.argv[0]`` stays as typed; ``runpy.run_path`` would set both to
the same value, so plain source files are executed here the way python does, and
directories, zip files and ``.pyc`` files go through ``runpy.run_path``. ``-m MODULE``
goes through ``runpy.run_module(alter_sys=True)``, which sets ``sys.argv[0]`` to the
module's file as python does.
"""

from __future__ import annotations

import builtins
import importlib.machinery
import importlib.util
import io
import os
import runpy
import sys
import types
import zipfile
from typing import Any

from ._args import RunRequest, UsageError


def _set_path0(entry: str | None) -> None:
    """Replace taskscope's own ``sys.path[0]`` with the program's (None: remove it).

    Under ``python -P`` (``sys.flags.safe_path``) python adds no entry, and neither do we.
    """
    if sys.flags.safe_path or not sys.path:
        return
    if entry is None:
        del sys.path[0]
    else:
        sys.path[0] = entry


def _is_runpy_path(path: str) -> bool:
    """Return True for what only ``runpy.run_path`` runs: directories, zips, ``.pyc``."""
    return os.path.isdir(path) or path.endswith((".pyc", ".pyo")) or zipfile.is_zipfile(path)


class Target:
    """A script or module, resolved before the program starts (bad input is status 2)."""

    def __init__(self, request: RunRequest) -> None:
        #: The script path as typed ("" when running a module).
        self.script = request.script or ""
        self.module = request.module
        self.args = list(request.args)
        #: ``sys.argv`` as the program sees it (``argv[0]`` is the module's file for -m).
        self.argv: list[str] = []
        #: An error raised by the program's own code while the module was being found
        #: (a parent package failing to import): re-raised as the program's failure.
        self._deferred: BaseException | None = None

    # -- before the program starts ------------------------------------------------------

    def check_script(self) -> None:
        """Check that the script can be opened, and set ``sys.path[0]`` for it.

        Raises:
            UsageError: the script does not exist, cannot be read, or is a directory
                without ``__main__.py``.
        """
        path = self.script
        if os.path.isdir(path):
            if not any(
                os.path.isfile(os.path.join(path, name)) for name in ("__main__.py", "__main__.pyc")
            ):
                raise UsageError(f"cannot run directory {path!r}: it has no __main__.py")
        else:
            try:
                with open(path, "rb"):
                    pass
            except OSError as exc:
                raise UsageError(f"cannot open script {path!r}: {exc.strerror}") from None
        self.argv = [path, *self.args]
        # A directory or zip goes on sys.path itself (runpy.run_path inserts it); a
        # file's real directory does (python resolves symlinks to the script).
        _set_path0(None if _is_runpy_path(path) else os.path.dirname(os.path.realpath(path)))

    def check_module(self) -> None:
        """Find the module (importing its parent packages, as python does).

        Raises:
            UsageError: the module, or the ``__main__`` of a package, cannot be found.
        """
        name = self.module or ""
        _set_path0(os.getcwd())
        spec = self._find(name)
        if spec is not None and spec.submodule_search_locations is not None:
            spec = self._find(f"{name}.__main__")
            if spec is None and self._deferred is None:
                raise UsageError(
                    f"cannot run module {name!r}: it is a package without a __main__ module"
                )
        elif spec is None and self._deferred is None:
            raise UsageError(f"cannot find module {name!r}: No module named {name!r}")
        origin = spec.origin if spec is not None and spec.origin else name
        self.argv = [origin, *self.args]

    def _find(self, name: str) -> importlib.machinery.ModuleSpec | None:
        try:
            return importlib.util.find_spec(name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if missing and (name == missing or name.startswith(f"{missing}.")):
                raise UsageError(
                    f"cannot find module {self.module!r}: No module named {missing!r}"
                ) from None
            self._deferred = exc
        except ValueError as exc:  # an empty or relative name
            raise UsageError(f"cannot run module {name!r}: {exc}") from None
        except BaseException as exc:  # noqa: BLE001  # the program's own package failed
            self._deferred = exc
        return None

    # -- running ------------------------------------------------------------------------

    def execute(self) -> None:
        """Run the program in this process; its exceptions propagate unchanged."""
        if self._deferred is not None:
            raise self._deferred
        if self.module is not None:
            sys.argv = ["-m", *self.args]  # what python shows while it searches
            runpy.run_module(self.module, run_name="__main__", alter_sys=True)
            return
        path = self.script
        sys.argv = list(self.argv)
        if _is_runpy_path(path):
            runpy.run_path(path, run_name="__main__")
        else:
            _run_source_file(path)


def _run_source_file(path: str) -> None:
    """Execute a source file as python's ``__main__``: absolute ``__file__``,
    ``SourceFileLoader``, no spec, and code compiled with the absolute file name."""
    filename = os.path.abspath(path)
    with io.open_code(filename) as source_file:
        source = source_file.read()
    module = types.ModuleType("__main__")
    namespace: dict[str, Any] = module.__dict__
    namespace.update(
        __file__=filename,
        __cached__=None,
        __loader__=importlib.machinery.SourceFileLoader("__main__", filename),
        __builtins__=builtins,
    )
    if sys.version_info < (3, 14):
        namespace["__annotations__"] = {}
    # Like python, the program's module stays ``__main__`` until the interpreter exits
    # (atexit handlers and multiprocessing's spawn look it up there).
    sys.modules["__main__"] = module
    code = compile(source, filename, "exec", dont_inherit=True)
    exec(code, namespace)  # noqa: S102  # running the user's program is the point
