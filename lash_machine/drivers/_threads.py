"""Worker threads for the asyncio driver's store calls, the last idle first.

A store keeps one connection per thread (SQLite), or hands one out from a
pool (PostgreSQL). :class:`concurrent.futures.ThreadPoolExecutor` wakes its
idle workers in turn, so consecutive calls of one session run on different
threads, and on SQLite each one finds its connection's page cache stale
(another connection wrote since) and reads the pages again. Here the worker
that went idle last takes the next call: while calls come one at a time they
all run on one thread with a hot connection, and more threads start only
when calls overlap (trio's thread cache picks the same way).
"""

from __future__ import annotations

import os
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

__all__ = ["LastIdleFirst"]

T = TypeVar("T")

_Item = tuple["Future[Any]", Callable[..., Any], tuple[Any, ...], dict[str, Any]]


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

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        future: Future[T] = Future()
        item: _Item = (future, fn, args, kwargs)
        with self._lock:
            if self._idle:
                self._idle.pop().put(item)
            elif self._workers < self._max:
                self._workers += 1
                inbox: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
                inbox.put(item)
                threading.Thread(
                    target=self._work, args=(inbox,), name="lash-machine-store", daemon=True
                ).start()
            else:
                self._backlog.append(item)
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """End the idle workers; from now on a worker ends once it has
        nothing to do. Calls still come in (a call the driver was in the
        middle of must finish) and still run. ``wait`` is ignored: nothing
        here is joined."""
        with self._lock:
            self._shutdown = True
            idle, self._idle = self._idle, []
            if cancel_futures:
                for future, *_ in self._backlog:
                    future.cancel()
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
                future, fn, args, kwargs = item
                ran = future.set_running_or_notify_cancel()
                try:
                    result, error = (fn(*args, **kwargs) if ran else None), None
                except BaseException as raised:  # the caller's to see, through the future
                    result, error = None, raised
                with self._lock:
                    item = self._backlog.popleft() if self._backlog else None
                    if item is None and not self._shutdown:
                        # Idle before the caller hears back: its next call
                        # comes to this thread again.
                        self._idle.append(inbox)
                if ran:
                    _settle(future, result, error)
                del error
            if self._shutdown:  # None from shutdown(), or nothing left after it
                with self._lock:
                    self._workers -= 1
                return


def _settle(future: Future[Any], result: object, error: BaseException | None) -> None:
    if error is None:
        future.set_result(result)
    else:
        future.set_exception(error)
