"""What every driver shares besides the machine round trip: where effects
go (a store, a runner, or nowhere), the hooks, and the sources of time
and fresh ids."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

from ..stores.base import SessionStore
from ._core import SessionCore
from .hooks import Hooks
from .store_effects import EffectRunner, StoreRunner

__all__ = ["DriverBase", "new_id"]


def new_id() -> str:
    """A fresh random id (uuid4, 32 hex digits) for sessions and nodes."""
    return uuid.uuid4().hex


class DriverBase:
    """Configuration every driver takes.

    ``store``: a :class:`~lash_machine.stores.base.SessionStore`; its
    effects run in worker threads. ``runner``: instead of a store, an
    :class:`~lash_machine.drivers.store_effects.EffectRunner` that carries
    store effects out elsewhere (see :mod:`lash_machine.transport`).
    Neither: sessions live in memory only (``Save`` and ``Park`` are
    refused, ``ACTIVE_PATH_ONLY`` too). ``hooks``: where host effects go
    (a fresh :class:`Hooks` by default). ``clock`` and ``ids`` supply
    ``now`` and fresh session and node ids.
    """

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        runner: EffectRunner | None = None,
        hooks: Hooks | None = None,
        clock: Callable[[], float] = time.time,
        ids: Callable[[], str] = new_id,
    ) -> None:
        if store is not None and runner is not None:
            raise ValueError("give a store or a runner, not both")
        if runner is None and store is not None:
            runner = StoreRunner(store)
        #: The store, when this driver has one in this process.
        self.store = store
        #: Where store effects are carried out (``None``: in memory only).
        self.runner = runner
        #: The host hooks every session of this driver reports to.
        self.hooks = hooks or Hooks()
        self._clock = clock
        self._ids = ids

    def _new_core(self) -> SessionCore:
        return SessionCore(self.runner, self.hooks, self._clock, self._ids)

    def _local_store(self) -> SessionStore:
        if self.store is None:
            raise RuntimeError("store maintenance needs a driver made with a store in this process")
        return self.store
