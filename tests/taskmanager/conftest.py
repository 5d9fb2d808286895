"""Fixtures for the task manager tests: every test runs on asyncio, uvloop and trio."""

from __future__ import annotations

import sys
from typing import Any

import pytest

BACKENDS = [
    pytest.param(("asyncio", {}), id="asyncio"),
    pytest.param(
        ("asyncio", {"use_uvloop": True}),
        id="asyncio+uvloop",
        marks=pytest.mark.skipif(sys.platform == "win32", reason="uvloop is POSIX-only"),
    ),
    pytest.param(("trio", {}), id="trio"),
]


@pytest.fixture(params=BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Run the test on one AnyIO backend (and loop flavour)."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend
