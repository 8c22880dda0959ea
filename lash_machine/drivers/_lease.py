"""A session's execution lease, as the drivers keep it.

The machine knows nothing of leases: they are an IO concern. A driver made
with ``lease_owner`` gives each session a :class:`LeaseKeeper`, and the
session loop (:mod:`._loop`) consults it at three points, and only there:
it claims the lease before an open, resume or restore; it passes every
store request through :meth:`LeaseKeeper.fenced`, which renews the lease
when half its time-to-live has passed and stamps its fencing token on every
commit; and it releases the lease once the session is parked or closed.
The store refuses a commit whose token is stale, so a worker that lost its
lease (it stalled past the time-to-live and another worker claimed the
session) can never overwrite the new holder's work.

Tombstones carry no token (the store contract has none for them), so the
lease is renewed right before each one: a worker that lost the
session is refused, and after a renewal no other worker can claim the
session for a whole time-to-live, far longer than the tombstone takes.

Claims, renewals and releases are blocking store calls: drivers run them
as they run store requests, and wait for them through cancellations.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import attrs

from .. import effects as fx
from ..stores.leases import Lease, LeaseStore, check_claim

__all__ = ["LeaseKeeper"]


class LeaseKeeper:
    """The lease of one session: claims, renews and releases it, and knows
    its fencing token.

    Not thread-safe by itself: the session's lock serializes its calls.
    ``timer`` (monotonic seconds) schedules renewals; expiry itself is the
    store's business.
    """

    def __init__(
        self,
        store: LeaseStore,
        owner: str,
        ttl: float,
        timer: Callable[[], float] = time.monotonic,
    ) -> None:
        check_claim(owner, ttl)
        self.store = store
        self.owner = owner
        self.ttl = ttl
        self._timer = timer
        #: The lease held, or ``None``. A lease lost to another worker stays
        #: here until released: its stale token keeps the store refusing
        #: this session's commits.
        self.lease: Lease | None = None
        self._renew_at = 0.0

    def claim(self, session_id: str) -> Lease:
        """Claim ``session_id`` (raises :class:`~lash_machine.errors.LeaseHeld`
        when another worker holds it)."""
        if self.lease is not None and self.lease.session_id != session_id:
            raise RuntimeError(
                f"this session holds the lease of {self.lease.session_id!r}, not {session_id!r}"
            )
        self._renew_at = self._timer() + self.ttl / 2
        self.lease = self.store.claim_lease(session_id, self.owner, self.ttl)
        return self.lease

    def renew(self) -> Lease:
        """Extend the lease by its time-to-live from now (raises
        :class:`~lash_machine.errors.LeaseLost` when it is no longer current)."""
        if self.lease is None:
            raise RuntimeError("the session holds no lease: open or resume it first")
        self._renew_at = self._timer() + self.ttl / 2
        self.lease = self.store.renew_lease(self.lease, self.ttl)
        return self.lease

    def renew_if_due(self) -> None:
        """Renew when half the time-to-live has passed since the last claim
        or renewal."""
        if self.lease is not None and self._timer() >= self._renew_at:
            self.renew()

    def release(self) -> bool:
        """Give the lease up; ``False`` when it was lost already."""
        if self.lease is None:
            return False
        released = self.store.release_lease(self.lease)
        self.lease = None
        return released

    def fenced(self, request: fx.StoreRequest) -> fx.StoreRequest:
        """``request`` as the session may send it under its lease: a commit
        renews the lease when due and carries its fencing token; a
        tombstone (which carries no token) renews the lease first, always.
        Raises what a failed renewal raises
        (:class:`~lash_machine.errors.LeaseLost` when the lease is gone)."""
        if isinstance(request, fx.TombstoneNodes):
            self.renew()
            return request
        if not isinstance(request, fx.Commit):
            return request
        self.renew_if_due()
        if self.lease is None:
            raise RuntimeError("a leased session commits only while it holds its lease")
        commit = attrs.evolve(request.commit, fencing_token=self.lease.token)
        return attrs.evolve(request, commit=commit)
