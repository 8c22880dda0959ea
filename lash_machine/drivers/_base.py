"""What every driver shares besides the session loop: where effects go (a
store, a runner, or nowhere), the hooks, the sources of time and fresh
ids, leases, and the commands that start a session."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable

from .. import events as ev
from ..checks import GraphCheck
from ..content import id_problem
from ..errors import DriverClosed
from ..model import ParkedSession, Residency, SessionPolicy
from ..state import SessionState
from ..stores.base import SessionStore
from ..stores.leases import LeaseStore, check_claim
from ._lease import LeaseKeeper
from ._loop import SessionLoop
from ._warm import WarmCache
from .hooks import Hooks
from .store_effects import EffectRunner, StoreRunner

__all__ = ["DriverBase", "new_id"]

#: How a session starts: its first command, and the session whose lease it
#: claims first.
Start = tuple[ev.Command, str]


def new_id() -> str:
    """A fresh random id (uuid4, 32 hex digits) for sessions and nodes."""
    # What uuid.uuid4().hex gives, without building a UUID object.
    bits = int.from_bytes(os.urandom(16)) & _UUID4_CLEAR | _UUID4_SET
    return f"{bits:032x}"


# The version (4) and variant (RFC 4122) bits of a uuid4.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


class DriverBase:
    """Configuration every driver takes.

    ``store``: a :class:`~lash_machine.stores.base.SessionStore`.
    ``runner``: instead of a store, an
    :class:`~lash_machine.drivers.store_effects.EffectRunner` that carries
    store effects out elsewhere (see :mod:`lash_machine.transport`).
    Neither: sessions live in memory only (``Save`` and ``Park`` are
    refused, ``ACTIVE_PATH_ONLY`` too). ``hooks``: where host effects go
    (a fresh :class:`Hooks` by default). ``clock`` and ``ids`` supply
    ``now`` and fresh session and node ids (each incarnation's writer id,
    which names its commits, is always a fresh uuid).

    ``lease_owner``: turn on execution leases (off by default; nothing
    changes without them). Each session then claims its lease for this
    owner (a worker id, unique among the workers sharing the store) before
    it opens, resumes or restores, raising
    :class:`~lash_machine.errors.LeaseHeld` when another live worker holds
    it; fences each commit with the lease's token, renewing the lease first
    once half of ``lease_ttl`` seconds has passed; and releases it once
    parked or closed (also after an open or resume that failed). A worker
    that stalls past ``lease_ttl`` may lose the session to another: its
    next commit raises :class:`~lash_machine.errors.LeaseLost` and nothing
    is written; close it with ``discard=True``. Renew explicitly
    (``session.renew_lease()``) to hold an idle session longer. Leases need
    a ``store`` in this process that grants them
    (:class:`~lash_machine.stores.leases.LeaseStore`).

    ``warm_cache``: how many bytes (estimated) of parked sessions to keep
    for warm resumes (0: none; see :mod:`._warm`). A resume of a kept
    session reads one small row instead of every node when nothing changed
    in the store since it parked, and reads as usual otherwise.

    ``checks``: the host's :class:`~lash_machine.checks.GraphCheck` s (such
    as :data:`~lash_machine.checks.OPENAI_TOOL_CALLS`), run in order on the
    active path after every open, restore and resume. What a check proposes
    is appended at once (one :class:`~lash_machine.events.Repair` each,
    heard as :class:`~lash_machine.effects.SessionRepaired`) and, like the
    repairs healing makes, written by the session's next save or park: the
    open itself writes nothing, so it cannot conflict, and a session that is
    only looked at is closed with ``discard=True`` (the next open proposes
    the same repair again). A check that raises, or proposes what the
    machine refuses, closes the session unsaved and raises
    :class:`~lash_machine.errors.CheckFailed`.

    :meth:`close` ends the driver: every later call of it or of its
    sessions raises :class:`~lash_machine.errors.DriverClosed`.
    """

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        runner: EffectRunner | None = None,
        hooks: Hooks | None = None,
        clock: Callable[[], float] = time.time,
        ids: Callable[[], str] = new_id,
        lease_owner: str | None = None,
        lease_ttl: float = 30.0,
        warm_cache: int = 64 * 1024 * 1024,
        checks: Iterable[GraphCheck] = (),
    ) -> None:
        if store is not None and runner is not None:
            raise ValueError("give a store or a runner, not both")
        #: The checks run after every open, restore and resume, in order.
        self.checks = _checked(checks)
        self._leases: LeaseStore | None = None
        if lease_owner is not None:
            if not isinstance(store, LeaseStore):
                raise ValueError(
                    "leases need a store in this process that grants them (a LeaseStore);"
                    f" got {type(store).__name__ if store is not None else 'no store'}"
                )
            check_claim(lease_owner, lease_ttl)
            self._leases = store
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
        #: The owner id sessions claim leases for (``None``: no leases).
        self.lease_owner = lease_owner
        #: The time-to-live of each claim and renewal, in seconds.
        self.lease_ttl = lease_ttl
        #: The parked sessions kept for warm resumes.
        self.warm_cache = WarmCache(warm_cache)
        self._closed = False

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """End the driver: later calls raise
        :class:`~lash_machine.errors.DriverClosed`. The store is not closed
        (it is the caller's)."""
        self._closed = True

    def _new_loop(self) -> SessionLoop:
        keeper = None
        if self._leases is not None and self.lease_owner is not None:
            keeper = LeaseKeeper(self._leases, self.lease_owner, self.lease_ttl)
        return SessionLoop(
            self.runner,
            self.hooks,
            self._clock,
            self._ids,
            lease=keeper,
            closed=lambda: self._closed,
            warm=self.warm_cache if self.runner is not None else None,
            checks=self.checks,
        )

    def _local_store(self, what: str) -> SessionStore:
        if self._closed:
            raise DriverClosed(what)
        if self.store is None:
            raise RuntimeError("store maintenance needs a driver made with a store in this process")
        return self.store

    # The id of a session is settled before its first command, so that its
    # lease can be claimed before anything is read.

    def _opening(self, policy: SessionPolicy, session_id: str, residency: Residency) -> Start:
        fresh = "" if session_id else self._ids()
        command = ev.Open(
            policy,
            self._clock(),
            session_id=session_id,
            fresh_id=fresh,
            residency=residency,
            persistent=self.runner is not None,
            writer=new_id(),
        )
        return command, session_id or fresh

    def _restoring(self, state: SessionState, policy: SessionPolicy, residency: Residency) -> Start:
        fresh = "" if state.session_id else self._ids()
        command = ev.Restore(
            state,
            policy,
            self._clock(),
            residency=residency,
            persistent=self.runner is not None,
            fresh_id=fresh,
            writer=new_id(),
        )
        return command, state.session_id or fresh

    def _resuming(self, parked: ParkedSession, residency: Residency | None) -> Start:
        warm = self.warm_cache.get(parked.session_id)
        command = ev.Resume(parked, self._clock(), residency, writer=new_id(), warm=warm)
        return command, parked.session_id


def _checked(checks: Iterable[GraphCheck]) -> tuple[GraphCheck, ...]:
    """``checks`` as a tuple, each a check with a usable, unique name."""
    if isinstance(checks, GraphCheck):
        checks = (checks,)  # one check where a list was meant: a common slip
    found: dict[str, GraphCheck] = {}
    for check in checks:
        if not isinstance(check, GraphCheck):
            raise TypeError(
                f"checks must be GraphChecks (name, problems, repairs), got {type(check).__name__}"
            )
        problem = id_problem(check.name, "a check's name")
        if problem is not None:
            raise ValueError(problem)
        if check.name in found:
            raise ValueError(f"two checks are named {check.name!r}")
        found[check.name] = check
    return tuple(found.values())
