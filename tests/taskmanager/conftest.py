"""Fixtures for the task manager tests: every test runs on asyncio, uvloop and trio."""

from __future__ import annotations

from typing import Any

import pytest

from tests.conftest import ANYIO_BACKENDS


@pytest.fixture(params=ANYIO_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """Run the test on one AnyIO backend (and loop flavour)."""
    backend: tuple[str, dict[str, Any]] = request.param
    return backend
