"""Run a program under taskscope with python's own exits, then write the report.

How each ending is kept identical to plain python:

* normal end, ``SystemExit``: the same ``SystemExit`` is raised again from ``main``, so
  python itself prints its message and picks the status.
* uncaught exception: printed through ``sys.excepthook`` with taskscope's frames (and
  runpy's) cut from the top of the traceback; status 1.
* ``KeyboardInterrupt``: printed the same way; at the very end the process kills itself
  with SIGINT under the default handler, as python does, so the status is -2/130.
* SIGTERM: a handler (installed only while SIGTERM has its default disposition) writes
  the report, then the process kills itself with SIGTERM under the default handler.

The report is written from an ``atexit`` handler registered before the program starts:
it runs after python has waited for the program's non-daemon threads and after the
program's own ``atexit`` handlers, so it sees everything the program did. Nothing runs
after ``os._exit()`` or a SIGKILL: such programs leave no report.
"""

from __future__ import annotations

import atexit
import os
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Final

from .. import _session
from ..reports import check_writable, print_summary, write_json
from ._args import RunRequest, UsageError
from ._target import Target

if TYPE_CHECKING:
    from types import FrameType, TracebackType

#: Files whose frames are cut from the top of the program's tracebacks.
_OWN_DIR: Final = os.path.join(os.path.dirname(os.path.abspath(__file__)), "")
_OWN_MAIN: Final = os.path.join(os.path.dirname(_OWN_DIR.rstrip(os.sep)), "__main__.py")


def _is_own_frame(frame: FrameType) -> bool:
    filename = frame.f_code.co_filename
    return (
        filename.startswith(_OWN_DIR)
        or filename == _OWN_MAIN
        or frame.f_globals.get("__name__") == "runpy"
    )


def strip_own_frames(tb: TracebackType | None) -> TracebackType | None:
    """Drop the leading traceback entries that belong to taskscope's runner or runpy."""
    while tb is not None and _is_own_frame(tb.tb_frame):
        tb = tb.tb_next
    return tb


def print_exception(exc: BaseException) -> None:
    """Print an uncaught exception as python's top level does (via ``sys.excepthook``)."""
    tb = strip_own_frames(exc.__traceback__)
    # The default hook prints the exception's own __traceback__, not its argument.
    exc = exc.with_traceback(tb)
    sys.last_type, sys.last_value, sys.last_traceback = type(exc), exc, tb
    if sys.version_info >= (3, 12):
        sys.last_exc = exc
    try:
        sys.excepthook(type(exc), exc, tb)
    except BaseException as hook_error:  # noqa: BLE001  # as python: report both
        sys.stderr.write("Error in sys.excepthook:\n")
        sys.__excepthook__(type(hook_error), hook_error, hook_error.__traceback__)
        sys.stderr.write("\nOriginal exception was:\n")
        sys.__excepthook__(type(exc), exc, tb)
    sys.stderr.flush()


def _exit_status(code: object) -> int:
    """Return the process exit status python derives from ``SystemExit(code)``."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if os.name == "posix" else code
    return 1


class ProgramRun:
    """One ``taskscope run``: checks, session, program, exit, report."""

    def __init__(self, request: RunRequest) -> None:
        self.request = request
        self.target = Target(request)
        self.session: _session.Session | None = None
        #: The program's exit status: an int, or the name of the signal that ended it.
        self.status: int | str | None = None
        #: The signal to die by once the report is written (SIGINT or SIGTERM).
        self.die_by: int | None = None
        self.start = 0.0
        self._started = 0.0
        self._finishing = False

    # -- the whole run --------------------------------------------------------------

    def run(self) -> int:
        """Check the input, run the program, and return its exit status.

        Raises:
            UsageError: bad input, found before the program starts.
            SystemExit: the program's own ``SystemExit``, raised again unchanged.
        """
        request = self.request
        try:
            check_writable(request.report)
        except OSError as exc:
            raise UsageError(
                f"cannot write report {request.report!r}: {exc.strerror or exc}"
            ) from None
        if request.module is None:
            self.target.check_script()
        try:
            self.session = _session.install(**request.install_options)
        except (ValueError, TypeError) as exc:  # an option the parser let through
            raise UsageError(str(exc)) from None
        if request.module is not None:
            try:
                self.target.check_module()
            except UsageError:
                self.session.uninstall()
                raise
        atexit.register(self.finish)
        self._watch_sigterm()
        self.start = time.time()
        self._started = time.perf_counter()
        try:
            self.target.execute()
        except SystemExit as exc:
            self.status = _exit_status(exc.code)
            raise SystemExit(exc.code) from None
        except KeyboardInterrupt as exc:
            print_exception(exc)
            self.status = "SIGINT"
            self.die_by = signal.SIGINT
            return 128 + signal.SIGINT
        except BaseException as exc:  # noqa: BLE001  # the program's uncaught exception
            print_exception(exc)
            self.status = 1
            return 1
        self.status = 0
        return 0

    # -- the end ----------------------------------------------------------------------

    def _watch_sigterm(self) -> None:
        sigterm = getattr(signal, "SIGTERM", None)
        if sigterm is None or signal.getsignal(sigterm) is not signal.SIG_DFL:
            return  # an ignored (or already handled) SIGTERM stays as it is
        signal.signal(sigterm, self._on_sigterm)

    def _on_sigterm(self, signum: int, _frame: FrameType | None) -> None:
        self.status = signal.Signals(signum).name
        self.die_by = signum
        if self._finishing:
            return  # finish() is writing the report and dies by `die_by` afterwards
        self.finish()

    def program_info(self) -> dict[str, Any]:
        """Return the report's ``program`` fields that only the command line knows."""
        return {
            "argv": list(self.target.argv),
            "start": self.start,
            "duration": max(0.0, time.perf_counter() - self._started),
            "exit_status": self.status,
        }

    def finish(self) -> None:
        """Write the report and the summary, once; then die by a signal if one ended us."""
        if self._finishing or self.session is None:
            return
        self._finishing = True
        session = self.session
        path = self.request.report
        try:
            session.end_of_program()
            report = session.report(program=self.program_info())
            written = True
            try:
                write_json(report, path)
            except OSError as exc:
                written = False
                sys.stderr.write(
                    f"taskscope: error: cannot write report {path!r}: {exc.strerror or exc}\n"
                )
            if not self.request.quiet:
                print_summary(report, file=sys.stderr, report_path=path if written else None)
        except Exception as exc:  # noqa: BLE001  # never change the program's exit
            _warn(f"taskscope: error: could not write the report: {exc!r}")
        finally:
            session.uninstall()
        if self.die_by is not None:
            _die(self.die_by)


def _warn(line: str) -> None:
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except Exception:  # noqa: BLE001, S110  # stderr closed by the program: stay silent
        pass


def _die(signum: int) -> None:
    """End the process by `signum` under its default action, as python does."""
    if signum == signal.SIGINT:
        # Python flushes its streams before dying by SIGINT (it does not for SIGTERM).
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001, S110  # a closed stream: nothing to flush
                pass
    try:
        sys.stderr.flush()
    except Exception:  # noqa: BLE001, S110  # a closed stream: nothing to flush
        pass
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)
    # Where a signal cannot end the process (it is blocked, or not POSIX), exit with
    # the status a shell reports for it.
    time.sleep(0.1)
    os._exit(128 + signum)


def run_program(request: RunRequest) -> int:
    """Run ``taskscope run``/``demo``; see `ProgramRun.run`."""
    return ProgramRun(request).run()
