"""The trio driver: sessions in trio tasks, store calls in the driver's
worker threads (the last idle first, see :mod:`._threads`).

Cancellation in the middle of a call abandons a **read** (loading the graph
or a node) at once: the machine returns to where it was and the thread's
late result is dropped. A **write** (commit, tombstone, attachment intent)
may already be applied and a thread cannot be stopped, so trio waits for
it, the machine gets the real result and the call returns it (trio
delivers the cancellation at the caller's next checkpoint). The session
thus always agrees with the store; a hung store delays the cancellation
until its own timeout. A write cancelled before it is handed to a worker
is cancelled like a read; queued writes and lease calls run to their end.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import Any, TypeVar

import outcome
import trio

from .. import effects as fx
from ._async_api import AsyncDriver, AsyncSession
from ._lifecycle import LifecycleStreamBase
from ._loop import Job, SessionLoop
from ._threads import LastIdleFirst, ThreadedDriver
from .hooks import Hooks

__all__ = ["Driver", "LifecycleStream", "Session"]

T = TypeVar("T")


class Session(AsyncSession):
    """A session in trio (see :class:`~._async_api.AsyncSession`)."""

    def __init__(self, core: SessionLoop, threads: LastIdleFirst) -> None:
        super().__init__(core, trio.Lock())
        self._threads = threads

    async def _drive(self, job: Job | None) -> Any:
        cancelled: BaseException | None = None
        while job is not None:
            try:
                # A lease call, or what a cancelled call owes, runs whatever comes.
                owed = job.lease or cancelled is not None
                result = await _in_worker(self._threads, job.run, owed=owed, abandon=not job.write)
            except BaseException as error:  # abandoned, cancelled before it started, or raised
                cancelled = error
                job = self._core.raised(job, error, started=not isinstance(error, trio.Cancelled))
                continue
            job = self._core.done(job, result, stopping=cancelled is not None)
        if cancelled is not None:
            raise cancelled
        return self._core.answer()


async def _in_worker(
    threads: LastIdleFirst, call: Callable[[], T], *, owed: bool, abandon: bool
) -> T:
    """``call()`` in a worker thread, as ``trio.to_thread.run_sync``. ``owed``:
    it runs and is waited for whatever comes; else a cancellation before it
    starts raises, and one while it runs abandons it when ``abandon``."""
    if not owed:
        await trio.lowlevel.checkpoint_if_cancelled()
    task, token = trio.lowlevel.current_task(), trio.lowlevel.current_trio_token()
    waiting = [True]

    def back(value: Any, error: BaseException | None) -> None:
        if waiting[0]:
            result = outcome.Value(value) if error is None else outcome.Error(error)
            trio.lowlevel.reschedule(task, result)

    def done(value: Any, error: BaseException | None) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # trio has ended: nobody waits
            token.run_sync_soon(back, value, error)

    def abort(_: object) -> trio.lowlevel.Abort:
        if abandon and not owed:
            waiting[0] = False
            return trio.lowlevel.Abort.SUCCEEDED
        return trio.lowlevel.Abort.FAILED  # trio delivers the cancel at the next checkpoint

    threads.call(call, done)
    return await trio.lowlevel.wait_task_rescheduled(abort)  # type: ignore[no-any-return]


class LifecycleStream(LifecycleStreamBase):
    """Lifecycle events as an async iterator in trio."""

    def __init__(self, hooks: Hooks) -> None:
        self._send, self._receive = trio.open_memory_channel[fx.LifecycleEvent](math.inf)
        super().__init__(hooks, trio.lowlevel.current_trio_token().run_sync_soon)

    def _put(self, event: fx.LifecycleEvent) -> None:
        self._send.send_nowait(event)

    def _end(self) -> None:
        self._send.close()

    async def __anext__(self) -> fx.LifecycleEvent:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Driver(ThreadedDriver, AsyncDriver[Session]):
    """Opens sessions in trio (see :class:`~._threads.ThreadedDriver`)."""

    _stream = LifecycleStream

    def _session(self, core: SessionLoop) -> Session:
        return Session(core, self._threads)

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await _in_worker(self._threads, call, owed=False, abandon=False)
