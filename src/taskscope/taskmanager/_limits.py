"""Capacity limits: defaults, environment overrides and argument validation.

Precedence for every limit is: explicit argument, then environment variable, then the
default computed from the number of CPUs. The thread default is derived from the
*effective* global limit, so lowering the global limit also lowers the thread pool.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = [
    "ENV_MAX_CONCURRENCY",
    "ENV_MAX_PROCESSES",
    "ENV_MAX_QUEUE",
    "ENV_MAX_THREADS",
    "Limits",
    "check_callable",
    "check_positive_int",
    "check_timeout",
    "default_global_limit",
    "default_process_limit",
    "default_thread_limit",
    "resolve_limits",
]

ENV_MAX_CONCURRENCY = "TASKSCOPE_MAX_CONCURRENCY"
ENV_MAX_THREADS = "TASKSCOPE_MAX_THREADS"
ENV_MAX_PROCESSES = "TASKSCOPE_MAX_PROCESSES"
ENV_MAX_QUEUE = "TASKSCOPE_MAX_QUEUE"

DEFAULT_MAX_QUEUE = 10_000


def _cpus() -> int:
    return os.cpu_count() or 1


def default_global_limit(cpus: int | None = None) -> int:
    """Return the default global concurrency: ``min(max(32, 4 * CPU), 256)``."""
    cpus = _cpus() if cpus is None else cpus
    return min(max(32, 4 * cpus), 256)


def default_thread_limit(global_limit: int) -> int:
    """Return the default thread concurrency: ``min(max(16, 2 * global // 3), 128)``."""
    return min(max(16, (2 * global_limit) // 3), 128)


def default_process_limit(cpus: int | None = None) -> int:
    """Return the default process concurrency: ``max(1, min(CPU, 8))``."""
    cpus = _cpus() if cpus is None else cpus
    return max(1, min(cpus, 8))


@dataclass(frozen=True, slots=True)
class Limits:
    """The effective capacity limits of one :class:`TaskManager`.

    Attributes:
        max_concurrency: How many managed tasks may run at once (the global limiter).
        max_threads: How many :meth:`TaskManager.run_in_thread` calls may run at once.
        max_processes: How many :meth:`TaskManager.run_in_process` calls may run at once.
        max_queue: How many added tasks may wait for a global slot before
            :meth:`TaskManager.add_task` raises :class:`QueueFullError`.
    """

    max_concurrency: int
    max_threads: int
    max_processes: int
    max_queue: int


def check_positive_int(name: str, value: object) -> int:
    """Return ``value`` if it is an ``int`` of at least 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int of at least 1, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be at least 1, got {value!r}")
    return value


def check_timeout(name: str, value: object) -> float | None:
    """Return ``value`` as a float if it is a positive finite number or ``None``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds or None, got {value!r}")
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive, finite number of seconds, got {value!r}")
    return float(value)


def check_callable(name: str, value: object) -> None:
    """Raise ``TypeError`` naming ``name`` unless ``value`` is callable."""
    if not callable(value):
        raise TypeError(f"{name} must be callable, got {value!r} of type {type(value).__name__}")


def _from_env(env: Mapping[str, str], variable: str) -> int | None:
    raw = env.get(variable)
    if raw is None or not raw.strip():
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise ValueError(
            f"environment variable {variable} must be a whole number of at least 1, "
            f"got {raw!r}; fix or unset it"
        ) from None
    if value < 1:
        raise ValueError(
            f"environment variable {variable} must be at least 1, got {raw!r}; fix or unset it"
        )
    return value


def _pick(
    name: str,
    argument: int | None,
    env: Mapping[str, str],
    variable: str,
    default: Callable[[], int],
) -> int:
    if argument is not None:
        return check_positive_int(name, argument)
    from_env = _from_env(env, variable)
    return default() if from_env is None else from_env


def resolve_limits(
    *,
    max_concurrency: int | None = None,
    max_threads: int | None = None,
    max_processes: int | None = None,
    max_queue: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Limits:
    """Combine arguments, environment variables and defaults into :class:`Limits`.

    Args:
        max_concurrency: Global limit, or ``None`` for ``TASKSCOPE_MAX_CONCURRENCY`` or
            the default.
        max_threads: Thread limit, or ``None`` for ``TASKSCOPE_MAX_THREADS`` or the
            default.
        max_processes: Process limit, or ``None`` for ``TASKSCOPE_MAX_PROCESSES`` or the
            default.
        max_queue: Backlog bound, or ``None`` for ``TASKSCOPE_MAX_QUEUE`` or 10,000.
        env: The environment to read; ``os.environ`` when omitted.

    Returns:
        The effective limits.

    Raises:
        TypeError: An argument is not an int.
        ValueError: An argument or environment variable is not a whole number of at
            least 1; the message names it.
    """
    env = os.environ if env is None else env
    global_limit = _pick(
        "max_concurrency", max_concurrency, env, ENV_MAX_CONCURRENCY, default_global_limit
    )
    return Limits(
        max_concurrency=global_limit,
        max_threads=_pick(
            "max_threads",
            max_threads,
            env,
            ENV_MAX_THREADS,
            lambda: default_thread_limit(global_limit),
        ),
        max_processes=_pick(
            "max_processes", max_processes, env, ENV_MAX_PROCESSES, default_process_limit
        ),
        max_queue=_pick("max_queue", max_queue, env, ENV_MAX_QUEUE, lambda: DEFAULT_MAX_QUEUE),
    )
