"""Worker threads for the async drivers' store calls, the last idle first.

A store keeps one connection per thread (SQLite), or hands one out from a
pool (PostgreSQL). :class:`concurrent.futures.ThreadPoolExecutor` wakes its
idle workers in turn, so consecutive calls of one session run on different
threads, and on SQLite each one finds its connection's page cache stale
(another connection wrote since) and reads the pages again. Here the worker
that went idle last takes the next call: while calls come one at a time they
all run on one thread with a hot connection, and more threads start only
when calls overlap (trio's thread cache picks the same way).

:meth:`LastIdleFirst.call` is the driver's way in: the worker runs the call
and hands its outcome to a callback, which wakes the loop once. Going
through a :class:`concurrent.futures.Future` and
``loop.run_in_executor`` (or ``trio.to_thread.run_sync``) costs about three
times that thread hop, more than a whole SQLite commit, and the threads
contend for the GIL meanwhile, which slows the store call itself;
:meth:`submit` is kept for the rest of the executor API.
"""

from __future__ import annotations

import contextvars
import functools
import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, ClassVar, Protocol, TypeVar

from ._base import DriverBase
from ._lifecycle import LifecycleStreamBase
from .hooks import Hooks

__all__ = ["LastIdleFirst", "ThreadedDriver"]

T = TypeVar("T")

#: A call and what hears its outcome: ``done(result, None)`` or
#: ``done(None, error)``, on the worker's thread.
Done = Callable[[Any, "BaseException | None"], None]
_Item = tuple[Callable[[], Any], Done]


class LastIdleFirst(Executor):
    """An executor of at most ``max_workers`` daemon threads; a worker idle
    for ``idle_seconds`` ends."""

    def __init__(self, max_workers: int | None = None, idle_seconds: float = 10.0) -> None:
        self._max = max_workers or min(32, (os.cpu_count() or 1) + 4)
        self._idle_seconds = idle_seconds
        self._lock = threading.Lock()
        self._idle: list[queue.SimpleQueue[_Item | None]] = []
        self._backlog: deque[_Item] = deque()  # calls waiting for a worker
        self._workers = 0
        self._shutdown = False

    def call(self, fn: Callable[[], Any], done: Done) -> None:
        """Run ``fn()`` in a worker, in a copy of the caller's context
        variables (as :func:`asyncio.to_thread`), then ``done`` with its
        result or the exception it raised (a ``BaseException`` too: the
        caller's to see)."""
        item: _Item = (functools.partial(contextvars.copy_context().run, fn), done)
        with self._lock:
            if self._idle:
                self._idle.pop().put(item)
                return
            if self._workers >= self._max:
                self._backlog.append(item)
                return
            self._workers += 1
        inbox: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        inbox.put(item)
        threading.Thread(
            target=self._work, args=(inbox,), name="lash-machine-store", daemon=True
        ).start()

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()

        def run() -> T | None:
            return fn(*args, **kwargs) if future.set_running_or_notify_cancel() else None

        def settle(result: Any, error: BaseException | None) -> None:
            if future.cancelled():
                return
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

        self.call(run, settle)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the idle workers; from now on a worker ends once it has
        nothing to do. Calls still come in (a call the driver was in the
        middle of must finish) and still run. ``wait`` and
        ``cancel_futures`` are ignored: nothing here is joined, and a call
        already handed over runs (a cancelled future's call does nothing)."""
        with self._lock:
            self._shutdown = True
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _work(self, inbox: queue.SimpleQueue[_Item | None]) -> None:
        while True:
            try:
                item = inbox.get(timeout=self._idle_seconds)
            except queue.Empty:
                with self._lock:
                    if inbox in self._idle:
                        self._idle.remove(inbox)
                        self._workers -= 1
                        return
                continue  # a call was handed over just as the wait ran out
            while item is not None:
                fn, done = item
                try:
                    result, error = fn(), None
                except BaseException as raised:  # the caller's to see, through done
                    result, error = None, raised
                with self._lock:
                    item = self._backlog.popleft() if self._backlog else None
                    if item is None and not self._shutdown:
                        # Idle before the caller hears back: its next call
                        # comes to this thread again.
                        self._idle.append(inbox)
                done(result, error)
                del error
            if self._shutdown:  # None from shutdown(), or nothing left after it
                with self._lock:
                    self._workers -= 1
                return


class _MakesStreams(Protocol):
    """A driver's lifecycle stream class: made from the hooks alone (each
    knows its own loop)."""

    def __call__(self, hooks: Hooks) -> LifecycleStreamBase: ...


class ThreadedDriver(DriverBase):
    """What the async drivers share.

    ``Driver(store)`` runs store calls against ``store`` in worker threads
    of its own (made at the first call, ended once idle when the driver
    closes); ``Driver(runner=...)`` hands them to an effect runner;
    ``Driver()`` keeps sessions in memory only (the arguments: see
    :class:`~._base.DriverBase`). Register host hooks on :attr:`hooks`, or
    iterate :meth:`lifecycle` (a stream of the driver's loop, ``_stream``).
    """

    _stream: ClassVar[_MakesStreams]

    @functools.cached_property
    def _threads(self) -> LastIdleFirst:
        return LastIdleFirst()

    def close(self) -> None:
        """End the driver (see :class:`~._base.DriverBase`) and its idle threads."""
        super().close()
        if "_threads" in self.__dict__:
            self._threads.shutdown(wait=False)

    def lifecycle(self) -> LifecycleStreamBase:
        """Lifecycle events of every session of this driver, from now on::

        with driver.lifecycle() as events:
            async for event in events: ...
        """
        return self._stream(self.hooks)
