"""The trio driver: sessions in trio tasks, store effects in worker threads
(``trio.to_thread.run_sync``).

Cancellation in the middle of a call:

* a **read** (loading the graph or a node) is abandoned at once
  (``abandon_on_cancel=True``): the machine is told
  (``EffectFailed(..., "cancelled")``) and returns to where it was; the
  thread's late result is dropped, never fed;
* a **write** (commit, tombstone, attachment intent) may already be applied
  by the store and a thread cannot be stopped, so it is not abandoned: trio
  waits for the thread, the machine gets the real result, and the call
  returns it (trio delivers the cancellation at the caller's next
  checkpoint, as it does for any operation that completed). The session
  thus always agrees with the store. A hung store delays the cancellation
  until the store's own timeout.
* a cancellation that arrives before the thread started cancels the
  request in the machine like a read.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TypeVar

import trio

from .. import effects as fx
from ._async import AsyncDriver, AsyncSession, LifecycleStreamBase
from ._core import Exchange, SessionCore
from .hooks import Hooks
from .store_effects import WRITES

__all__ = ["Driver", "LifecycleStream", "Session"]

T = TypeVar("T")


class Session(AsyncSession):
    """A session in trio (see :class:`~._async.AsyncSession`)."""

    def _new_lock(self) -> trio.Lock:
        return trio.Lock()

    async def _carry_out(self, exchange: Exchange) -> None:
        request, runner = exchange.request, self._core.runner
        assert request is not None and runner is not None
        write = isinstance(request, WRITES)
        try:
            outcome = await trio.to_thread.run_sync(runner, request, abandon_on_cancel=not write)
        except BaseException:  # a read abandoned, or cancelled before the thread started
            exchange.cancel()
            raise
        exchange.feed(outcome)

    async def _lease_call(self, call: Callable[[], T]) -> T:
        # Shielded: the store may apply the call whatever happens here, so
        # the session waits for its outcome; a cancellation lands at the
        # next checkpoint.
        with trio.CancelScope(shield=True):
            result = await trio.to_thread.run_sync(call)
        return result


class LifecycleStream(LifecycleStreamBase):
    """Lifecycle events as an async iterator in trio."""

    def __init__(self, hooks: Hooks) -> None:
        self._send, self._receive = trio.open_memory_channel[fx.LifecycleEvent](math.inf)
        super().__init__(hooks)

    def _put(self, event: fx.LifecycleEvent) -> None:
        self._send.send_nowait(event)

    def _end(self) -> None:
        self._send.close()

    async def __anext__(self) -> fx.LifecycleEvent:
        try:
            return await self._receive.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None


class Driver(AsyncDriver[Session]):
    """Opens sessions in trio.

    ``Driver(store)`` runs store effects against ``store`` in worker threads;
    ``Driver(runner=...)`` hands them to an effect runner;
    ``Driver()`` keeps sessions in memory only. Register host hooks on
    :attr:`hooks`, or iterate :meth:`lifecycle`.
    """

    @property
    def _session_class(self) -> Callable[[SessionCore], Session]:
        return Session

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(call)

    def lifecycle(self) -> LifecycleStream:
        """Lifecycle events of every session of this driver, from now on::

        with driver.lifecycle() as events:
            async for event in events: ...
        """
        return LifecycleStream(self.hooks)
