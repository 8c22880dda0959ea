"""Lifecycle events as an async iterator, written once for asyncio and trio."""

from __future__ import annotations

import abc
from types import TracebackType

from .. import effects as fx
from .hooks import Hooks

__all__ = ["LifecycleStreamBase"]


class LifecycleStreamBase(abc.ABC):
    """Lifecycle events as an async iterator. Subscribed from creation
    until :meth:`close` (or the end of a ``with`` block); events emitted
    meanwhile are buffered, then iteration ends."""

    def __init__(self, hooks: Hooks) -> None:
        self._unsubscribe = hooks.on_lifecycle(self._put)

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
