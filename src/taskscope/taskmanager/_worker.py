"""The worker process behind ``TaskManager.run_in_process``; run as a script, stdlib only.

It is started as ``python -P -u _worker.py`` (``-P``: this directory never goes on
``sys.path``), so it imports neither taskscope nor AnyIO. The protocol runs over the
inherited stdin and stdout pipes, which are moved to private descriptors first: fds 0
and 1 then point at ``os.devnull``, so nothing the called functions read or print can
corrupt it. Each message is an 8-byte big-endian length followed by a pickle:

* parent to worker: ``("init", sys.path, main_path)`` once, then ``("run", func, args)``
  any number of times;
* worker to parent: ``(True, result)`` or ``(False, exception)`` for each.

End of file on the request pipe ends the worker.
"""

from __future__ import annotations

import os
import pickle
import runpy
import sys
from types import ModuleType
from typing import IO, Any

_HEADER = 8


def _read_message(channel: IO[bytes]) -> bytes | None:
    header = channel.read(_HEADER)
    if len(header) < _HEADER:
        return None
    size = int.from_bytes(header, "big")
    body = channel.read(size)
    return body if len(body) == size else None


def _write_message(channel: IO[bytes], ok: bool, value: object) -> None:
    try:
        body = pickle.dumps((ok, value), pickle.HIGHEST_PROTOCOL)
    except BaseException as exc:  # noqa: BLE001 -- an unpicklable result or exception
        try:
            body = pickle.dumps((False, exc), pickle.HIGHEST_PROTOCOL)
        except BaseException:  # noqa: BLE001
            error = RuntimeError(f"the worker could not pickle {value!r}: {exc!r}")
            body = pickle.dumps((False, error), pickle.HIGHEST_PROTOCOL)
    channel.write(len(body).to_bytes(_HEADER, "big") + body)
    channel.flush()


def _load_main(main_path: str | None) -> None:
    """Load the parent's ``__main__`` as ``__mp_main__`` (as multiprocessing does).

    Functions defined in the parent's main script then unpickle; its
    ``if __name__ == "__main__":`` block does not run. Without a main script, an empty
    module stands in, so nothing resolves to this worker script.
    """
    main = ModuleType("__mp_main__")
    if main_path and os.path.isfile(main_path):
        main.__dict__.update(runpy.run_path(main_path, run_name="__mp_main__"))
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main


def _handle(command: str, args: list[Any]) -> object:
    if command == "run":
        func, func_args = args
        return func(*func_args)
    if command == "init":
        path, main_path = args
        sys.path[:] = path
        _load_main(main_path)
        return None
    raise ValueError(f"unknown worker command {command!r}")


def main() -> None:
    """Serve requests until the parent closes the request pipe."""
    requests = os.fdopen(os.dup(0), "rb")
    replies = os.fdopen(os.dup(1), "wb")
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    while (body := _read_message(requests)) is not None:
        try:
            command, *args = pickle.loads(body)  # noqa: S301 -- our own parent's request
            result = _handle(command, args)
        except BaseException as exc:  # reported to the caller
            _write_message(replies, ok=False, value=exc)
            if isinstance(exc, SystemExit):
                raise
        else:
            _write_message(replies, ok=True, value=result)


if __name__ == "__main__":
    main()
