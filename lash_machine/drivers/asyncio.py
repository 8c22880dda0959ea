"""The asyncio driver: sessions on an asyncio loop (``session = await
Driver(store).open(policy)``), store calls in the driver's threads (the
last idle one first, see :mod:`._threads`).

A cancellation (a task cancel, ``asyncio.timeout``) in the middle of a call
abandons a **read** (loading the graph or a node) at once: the machine goes
back to where it was (an open or resume to closed or parked) and the
thread's late result is dropped. A **write** (commit, tombstone, attachment
intent, lease call) may be applied by the store anyway, and a thread cannot
be stopped: the call waits for it (absorbing further cancels), feeds the
machine the real result, finishes what it still owes (a lease release), then
raises ``CancelledError``. So the session always agrees with the store; a
hung store delays the cancellation until the store's own timeout. A call
that raises in its thread is told to the machine, then raised.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any, TypeVar

from .. import effects as fx
from ._async_api import AsyncDriver, AsyncSession
from ._lifecycle import LifecycleStreamBase
from ._loop import Job, SessionLoop
from ._threads import LastIdleFirst, ThreadedDriver
from .hooks import Hooks

__all__ = ["Driver", "LifecycleStream", "Session"]

T = TypeVar("T")


class Session(AsyncSession):
    """A session on an asyncio loop (see :class:`~._async_api.AsyncSession`)."""

    def __init__(self, core: SessionLoop, threads: LastIdleFirst) -> None:
        super().__init__(core, asyncio.Lock())
        self._threads = threads

    async def _drive(self, job: Job | None) -> Any:
        loop = asyncio.get_running_loop()
        cancelled: BaseException | None = None
        while job is not None:
            future = _in_worker(loop, self._threads, job.run)
            try:
                while (job.write or cancelled is not None) and not future.done():
                    try:
                        await asyncio.shield(future)  # a cancel stops the wait, not the write
                    except asyncio.CancelledError as error:
                        cancelled = cancelled or error
                outcome = await future  # a read's wait ends with a cancel
            except BaseException as error:  # cancelled, or the call raised: the machine must hear
                cancelled = cancelled or error
                job = self._core.raised(job, error)
                continue
            job = self._core.done(job, outcome, stopping=cancelled is not None)
        if cancelled is not None:
            raise cancelled
        return self._core.answer()


def _in_worker(
    loop: asyncio.AbstractEventLoop, threads: LastIdleFirst, call: Callable[[], T]
) -> asyncio.Future[T]:
    """``call()`` in a worker thread, as a future of ``loop`` (one wakeup of
    the loop when it is done)."""
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: Any, error: BaseException | None) -> None:
        if future.cancelled():  # the caller stopped waiting for a read
            return
        if error is None:
            future.set_result(result)
        else:
            future.set_exception(error)

    def done(result: Any, error: BaseException | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is left to hear it
            loop.call_soon_threadsafe(settle, result, error)

    threads.call(call, done)
    return future


class LifecycleStream(LifecycleStreamBase):
    """Lifecycle events as an async iterator on an asyncio loop."""

    def __init__(self, hooks: Hooks) -> None:
        self._queue: asyncio.Queue[fx.LifecycleEvent | None] = asyncio.Queue()
        super().__init__(hooks, asyncio.get_running_loop().call_soon_threadsafe)

    def _put(self, event: fx.LifecycleEvent) -> None:
        self._queue.put_nowait(event)

    def _end(self) -> None:
        self._queue.put_nowait(None)

    async def __anext__(self) -> fx.LifecycleEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class Driver(ThreadedDriver, AsyncDriver[Session]):
    """Opens sessions on an asyncio loop (see :class:`~._threads.ThreadedDriver`)."""

    _stream = LifecycleStream

    def _session(self, core: SessionLoop) -> Session:
        return Session(core, self._threads)

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await _in_worker(asyncio.get_running_loop(), self._threads, call)
