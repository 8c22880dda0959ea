"""Drivers: carry the machine's effects out against a store.

* :mod:`lash_machine.drivers.asyncio` and :mod:`lash_machine.drivers.trio`
  run sessions on an event loop, store calls in worker threads;
* :mod:`lash_machine.drivers.blocking` offers the same API without a loop,
  store calls inline.

They share everything but the loop: the session loop (``_loop.py``) feeds
the machine and hands out the store calls and lease calls each command
needs, :mod:`.store_effects` turns a store request into the result event the
machine expects, and :class:`Hooks` is where host effects go. Each driver
supplies ``now`` and fresh ids. To carry store effects out in another
process, see :mod:`lash_machine.transport`.

Every driver takes ``lease_owner`` (and ``lease_ttl``) to hold a session
execution lease while a session is open: one writer per session among
many workers, its commits fenced by the lease's token (off by default).
"""

from __future__ import annotations

from .hooks import Hooks
from .store_effects import EffectRunner, Outcome, StoreRunner, carry_out

__all__ = ["EffectRunner", "Hooks", "Outcome", "StoreRunner", "carry_out"]
