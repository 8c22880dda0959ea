"""The asyncio driver: sessions on an asyncio loop, store calls in worker
threads (the loop's default executor).

Usage::

    driver = Driver(SQLiteStore("sessions.db"))
    session = await driver.open(policy)
    await session.append({"role": "user", "content": "hello"})
    parked = await session.park()
    session = await driver.resume(parked)

Cancellation (a task cancel, ``asyncio.timeout``) in the middle of a call:

* a **read** (loading the graph or a node) is abandoned at once: the machine
  is told and returns to where it was (an open or resume goes back to
  closed or parked); the worker thread's late result is dropped;
* a **write** (commit, tombstone, attachment intent, lease call) may
  already be applied by the store, and a thread cannot be stopped. So the
  call waits for the thread (further cancels are absorbed too), feeds the
  machine the real result, finishes what the call still owes (a lease
  release), and then raises ``CancelledError``. The session thus always
  agrees with the store. A hung store delays the cancellation until the
  store's own timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from typing import Any, TypeVar

from .. import effects as fx
from ._async_api import AsyncDriver, AsyncSession
from ._lifecycle import LifecycleStreamBase
from ._loop import Job, SessionLoop
from .hooks import Hooks

__all__ = ["Driver", "LifecycleStream", "Session"]

T = TypeVar("T")


class Session(AsyncSession):
    """A session on an asyncio loop (see :class:`~._async_api.AsyncSession`)."""

    def __init__(self, core: SessionLoop) -> None:
        super().__init__(core, asyncio.Lock())

    async def _drive(self, job: Job | None) -> Any:
        loop = asyncio.get_running_loop()
        cancelled: BaseException | None = None
        while job is not None:
            # Like asyncio.to_thread (context variables such as a tracing span
            # follow the call), but a future that a write can outlast.
            future = loop.run_in_executor(None, contextvars.copy_context().run, job.run)
            if job.write or cancelled is not None:
                while not future.done():
                    try:
                        await asyncio.wait([future])  # never cancels the future
                    except asyncio.CancelledError as error:
                        cancelled = cancelled or error
                outcome = future.result()
            else:
                try:
                    outcome = await future
                except BaseException as error:  # cancelled: the machine must not keep waiting
                    cancelled = error
                    job = self._core.abandon(job)
                    continue
            job = self._core.done(job, outcome, stopping=cancelled is not None)
        if cancelled is not None:
            raise cancelled
        return self._core.answer()


class LifecycleStream(LifecycleStreamBase):
    """Lifecycle events as an async iterator on an asyncio loop."""

    def __init__(self, hooks: Hooks) -> None:
        self._queue: asyncio.Queue[fx.LifecycleEvent | None] = asyncio.Queue()
        super().__init__(hooks)

    def _put(self, event: fx.LifecycleEvent) -> None:
        self._queue.put_nowait(event)

    def _end(self) -> None:
        self._queue.put_nowait(None)

    async def __anext__(self) -> fx.LifecycleEvent:
        event = await self._queue.get()
        if event is None:
            raise StopAsyncIteration
        return event


class Driver(AsyncDriver[Session]):
    """Opens sessions on an asyncio loop.

    ``Driver(store)`` runs store calls against ``store`` in worker threads;
    ``Driver(runner=...)`` hands them to an effect runner; ``Driver()``
    keeps sessions in memory only. Register host hooks on :attr:`hooks`,
    or iterate :meth:`lifecycle`.
    """

    def _session(self, core: SessionLoop) -> Session:
        return Session(core)

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.to_thread(call)

    def lifecycle(self) -> LifecycleStream:
        """Lifecycle events of every session of this driver, from now on::

        with driver.lifecycle() as events:
            async for event in events: ...
        """
        return LifecycleStream(self.hooks)
