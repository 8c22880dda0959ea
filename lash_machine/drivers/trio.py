"""The trio driver: sessions in trio tasks, store calls in worker threads
(``trio.to_thread.run_sync``).

Cancellation in the middle of a call:

* a **read** (loading the graph or a node) is abandoned at once
  (``abandon_on_cancel=True``): the machine is told and returns to where it
  was; the thread's late result is dropped;
* a **write** (commit, tombstone, attachment intent) may already be applied
  by the store and a thread cannot be stopped, so it is not abandoned: trio
  waits for the thread, the machine gets the real result, and the call
  returns it (trio delivers the cancellation at the caller's next
  checkpoint, as it does for any operation that completed). The session
  thus always agrees with the store. A hung store delays the cancellation
  until the store's own timeout;
* a write cancelled before its thread started is cancelled in the machine
  like a read; lease calls (claim, release) always run to their end.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from .. import effects as fx
from ._async_api import AsyncDriver, AsyncSession
from ._lifecycle import LifecycleStreamBase
from ._loop import Job, SessionLoop
from .hooks import Hooks

__all__ = ["Driver", "LifecycleStream", "Session"]

T = TypeVar("T")


class Session(AsyncSession):
    """A session in trio (see :class:`~._async_api.AsyncSession`)."""

    def __init__(self, core: SessionLoop) -> None:
        super().__init__(core, trio.Lock())

    async def _drive(self, job: Job | None) -> Any:
        cancelled: BaseException | None = None
        while job is not None:
            try:
                # Shielded: a lease call the store may apply whatever happens
                # here, and whatever a cancelled call still owes.
                with trio.CancelScope(shield=job.lease or cancelled is not None):
                    outcome = await trio.to_thread.run_sync(
                        job.run, abandon_on_cancel=not job.write
                    )
            except BaseException as error:  # a read abandoned, or cancelled before it started
                cancelled = error
                job = self._core.abandon(job)
                continue
            job = self._core.done(job, outcome, stopping=cancelled is not None)
        if cancelled is not None:
            raise cancelled
        return self._core.answer()


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

    ``Driver(store)`` runs store calls against ``store`` in worker threads;
    ``Driver(runner=...)`` hands them to an effect runner; ``Driver()``
    keeps sessions in memory only. Register host hooks on :attr:`hooks`,
    or iterate :meth:`lifecycle`.
    """

    def _session(self, core: SessionLoop) -> Session:
        return Session(core)

    async def _in_thread(self, call: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(call)

    def lifecycle(self) -> LifecycleStream:
        """Lifecycle events of every session of this driver, from now on::

        with driver.lifecycle() as events:
            async for event in events: ...
        """
        return LifecycleStream(self.hooks)
