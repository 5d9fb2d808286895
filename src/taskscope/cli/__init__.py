"""The ``taskscope`` command line: ``run``, ``demo`` and ``report`` (docs/cli.md)."""

from ._main import main as main

__all__ = ["main"]
