"""Lifecycle events as an async iterator, written once for asyncio and trio."""

from __future__ import annotations

import abc
import contextlib
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from .. import effects as fx
from .hooks import Hooks

__all__ = ["LifecycleStreamBase"]


class LifecycleStreamBase(abc.ABC):
    """Lifecycle events as an async iterator. Subscribed from creation
    until :meth:`close` (or the end of a ``with`` block); events emitted
    meanwhile are buffered, then iteration ends.

    The stream belongs to the loop it was made on; a session of the same
    driver on another loop (in another thread) emits there, so its events
    are handed over by ``soon`` (the loop's thread-safe way to run a
    function: a queue of one loop is not to be touched from another)."""

    def __init__(self, hooks: Hooks, soon: Callable[..., Any]) -> None:
        self._home, self._soon, self._closed = threading.get_ident(), soon, False
        self._unsubscribe = hooks.on_lifecycle(self._heard)

    def _heard(self, event: fx.LifecycleEvent) -> None:
        if threading.get_ident() == self._home:
            self._put(event)
            return
        with contextlib.suppress(RuntimeError):  # the stream's loop is gone: nobody listens
            self._soon(self._arrived, event)

    def _arrived(self, event: fx.LifecycleEvent) -> None:
        if not self._closed:  # handed over, but the stream was closed meanwhile
            self._put(event)

    @abc.abstractmethod
    def _put(self, event: fx.LifecycleEvent) -> None: ...

    @abc.abstractmethod
    def _end(self) -> None: ...

    @abc.abstractmethod
    async def __anext__(self) -> fx.LifecycleEvent: ...

    def __aiter__(self) -> LifecycleStreamBase:
        return self

    def close(self) -> None:
        """Stop listening; iteration ends after the buffered events."""
        self._unsubscribe()
        self._closed = True
        self._end()

    def __enter__(self) -> LifecycleStreamBase:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
