"""The asyncio driver: sessions on an asyncio loop, store effects in
worker threads (the loop's default executor).

Usage::

    driver = Driver(SQLiteStore("sessions.db"))
    session = await driver.open(policy)
    await session.append({"role": "user", "content": "hello"})
    parked = await session.park()
    session = await driver.resume(parked)

Cancellation (a task cancel, ``asyncio.timeout``) in the middle of a call:

* a **read** (loading the graph or a node) is abandoned at once: the machine
  is told (``EffectFailed(..., "cancelled")``) and returns to where it was
  (an open or resume goes back to closed or parked); the worker thread's
  late result is dropped, never fed;
* a **write** (commit, tombstone, attachment intent) may already be applied
  by the store, and a thread cannot be stopped. So the call waits for the
  thread to finish (further cancels are absorbed too), feeds the machine
  the real result, and then raises ``CancelledError``. The session thus
  always agrees with the store: a park that completed leaves the session
  parked (``park()`` again returns the handle), a failed one leaves it
  active with its changes. A hung store delays the cancellation until the
  store's own timeout.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
from collections.abc import Callable
from typing import TypeVar

from .. import effects as fx
from ._async import AsyncDriver, AsyncSession, LifecycleStreamBase
from ._core import Exchange, SessionCore
from .hooks import Hooks
from .store_effects import WRITES, Outcome

__all__ = ["Driver", "LifecycleStream", "Session"]

T = TypeVar("T")


class Session(AsyncSession):
    """A session on an asyncio loop (see :class:`~._async.AsyncSession`)."""

    def _new_lock(self) -> asyncio.Lock:
        return asyncio.Lock()

    async def _carry_out(self, exchange: Exchange) -> None:
        request, runner = exchange.request, self._core.runner
        assert request is not None and runner is not None
        # Like asyncio.to_thread (context variables such as a tracing span
        # follow the call), but as a future that a write can outlast.
        call = functools.partial(contextvars.copy_context().run, runner, request)
        job = asyncio.get_running_loop().run_in_executor(None, call)
        if not isinstance(request, WRITES):
            try:
                outcome = await job
            except BaseException:  # cancelled: the machine must not keep waiting
                exchange.cancel()
                raise
            exchange.feed(outcome)
            return
        await _outlast(exchange, job)

    async def _lease_call(self, call: Callable[[], T]) -> T:
        job = asyncio.get_running_loop().run_in_executor(
            None, functools.partial(contextvars.copy_context().run, call)
        )
        cancelled: asyncio.CancelledError | None = None
        while not job.done():
            try:
                await asyncio.wait([job])
            except asyncio.CancelledError as error:  # the claim may be applied: wait it out
                cancelled = cancelled or error
        if cancelled is not None:
            if not job.cancelled():
                job.exception()  # retrieved: the cancellation takes its place
            raise cancelled
        return job.result()


async def _outlast(exchange: Exchange, job: asyncio.Future[Outcome]) -> None:
    """Wait for a write's thread even through cancellation, feed its real
    outcome, then let the cancellation through."""
    cancelled: asyncio.CancelledError | None = None
    while not job.done():
        try:
            # wait() never cancels ``job`` nor raises its exception.
            await asyncio.wait([job])
        except asyncio.CancelledError as error:
            cancelled = cancelled or error
    failure = asyncio.CancelledError() if job.cancelled() else job.exception()
    if failure is not None:
        # The runner itself broke (it should answer, never raise): the
        # outcome is unknown, so the machine is told the write was abandoned.
        exchange.cancel("the effect runner raised")
        raise cancelled or failure
    exchange.feed(job.result())
    if cancelled is not None:
        raise cancelled


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

    ``Driver(store)`` runs store effects against ``store`` in worker threads;
    ``Driver(runner=...)`` hands them to an effect runner;
    ``Driver()`` keeps sessions in memory only. Register host hooks on
    :attr:`hooks`, or iterate :meth:`lifecycle`.
    """

    @property
    def _session_class(self) -> Callable[[SessionCore], Session]:
        return Session

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await asyncio.to_thread(call)

    def lifecycle(self) -> LifecycleStream:
        """Lifecycle events of every session of this driver, from now on::

        with driver.lifecycle() as events:
            async for event in events: ...
        """
        return LifecycleStream(self.hooks)
