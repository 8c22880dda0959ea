"""The blocking driver: the same session API without an event loop, for
scripts and the CLI. Store calls run inline, on the caller's thread.

An interrupt (``KeyboardInterrupt``, or another signal handler's exception)
behaves like a cancellation in the async drivers:

* a **read** is abandoned: the interrupt lands in the store call, the
  machine is told, and the session is back where it was;
* a **write** (commit, tombstone, attachment intent, lease call) is never
  interrupted half-way: on the main thread, signals are held back while it
  runs and until its real outcome is fed to the machine (and what the call
  still owes, such as a lease release, is done); then the interrupt is
  raised. The session always agrees with the store. A hung store delays
  the interrupt until the store's own timeout.

Use the driver as a context manager (or call :meth:`Driver.close`): later
calls raise :class:`~lash_machine.errors.DriverClosed`.
"""

from __future__ import annotations

import importlib
import signal
import threading
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar

from ._blocking_api import BlockingDriver, BlockingSession
from ._loop import Job, SessionLoop

__all__ = ["Driver", "Session"]

T = TypeVar("T")

# The C function: signal.pthread_sigmask turns every mask it returns into
# enum members, which costs more than the store call it guards. Platforms
# without it hold nothing back.
_sigmask: Callable[[int, Iterable[int]], Iterable[int]] | None = getattr(
    importlib.import_module("_signal"), "pthread_sigmask", None
)

#: Signals whose handlers may raise (every one but the faults a process
#: raises on itself, which must never be held back).
_HELD = (
    frozenset(signal.valid_signals())
    - {signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT}
    - {signal.SIGKILL, signal.SIGSTOP}
    if _sigmask is not None
    else frozenset()
)


def _hold_signals() -> Iterable[int] | None:
    """Hold signals back until :func:`_let_signals_go`; a signal that
    comes meanwhile is handled (its handler may raise) then. Python runs
    handlers on the main thread only, so elsewhere there is nothing to do.
    Returns the mask to restore (``None``: nothing was held)."""
    if _sigmask is None or threading.current_thread() is not _MAIN:
        return None
    return _sigmask(signal.SIG_BLOCK, _HELD)


def _let_signals_go(previous: Iterable[int] | None) -> None:
    if previous is not None and _sigmask is not None:
        _sigmask(signal.SIG_SETMASK, previous)


_MAIN = threading.main_thread()


class Session(BlockingSession):
    """One session, driven by blocking calls (see
    :class:`~._blocking_api.BlockingSession`). Calls on one session are
    serialized (a lock; do not call back into the same session from a hook)."""

    def __init__(self, core: SessionLoop) -> None:
        super().__init__(core, threading.Lock())

    def _drive(self, job: Job | None) -> Any:
        core, interrupted = self._core, None
        while job is not None:
            if job.write or interrupted is not None:
                following, held = None, _hold_signals()
                try:
                    try:
                        outcome = job.run()
                    except BaseException as error:  # the store call's own: the machine must hear
                        interrupted = interrupted or error
                        following = core.raised(job, error)
                    else:
                        following = core.done(job, outcome, stopping=interrupted is not None)
                    finally:
                        _let_signals_go(held)
                except BaseException as error:  # a signal's exception, now that the write is fed
                    interrupted = interrupted or error
                job = following
                while interrupted is not None and job is not None and not job.write:
                    job = core.abandon(job, "interrupted")  # start nothing new
                continue
            try:
                outcome = job.run()
            except BaseException as error:  # interrupted: the machine must not keep waiting
                interrupted = error
                job = core.abandon(job, "interrupted")
                continue
            job = core.done(job, outcome)
        if interrupted is not None:
            raise interrupted
        return core.answer()


class Driver(BlockingDriver[Session]):
    """Opens sessions with blocking calls (see :class:`~._base.DriverBase`
    for the arguments).

    As with the async drivers, two session objects on the same session id
    are two writers: the one that commits second gets
    :class:`~lash_machine.errors.HeadRevisionConflict`.
    """

    def _session(self, core: SessionLoop) -> Session:
        return Session(core)

    def _in_thread(self, call: Callable[[], T]) -> T:
        return call()

    def __enter__(self) -> Driver:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
