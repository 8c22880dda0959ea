"""Session execution leases: one writer per session among many workers.

A worker *claims* a session for a time-to-live and gets a :class:`Lease`
with a *fencing token*; it renews the lease while it works and releases it
when it parks. Every commit it sends carries the token
(:attr:`~lash_machine.persisted.SessionCommit.fencing_token`), and the store
checks it in the same transaction as the head compare-and-set:

* a commit with a token is applied only when that token is the session's
  newest and the lease was not released. A holder whose lease expired may
  still commit as long as nobody claimed the session since (no one else can
  have written); once another worker claims it, the old token is refused
  with :class:`~lash_machine.errors.LeaseLost`;
* a commit without a token (a writer that does not use leases) is refused
  with :class:`~lash_machine.errors.LeaseHeld` while another worker holds a
  live lease, and applied otherwise.

Tokens strictly increase per session across claims, including claims by
the same owner (a worker that restarts under the same owner id fences its
own earlier incarnation) and across :meth:`SessionStore.delete_session`:
lease rows are never deleted, so a token is never handed out twice.
Tombstones and attachment intents are not fenced.

Expiry times are seconds since the epoch in the store's clock (for
PostgreSQL, the server's clock, so workers' clocks may drift), unless the
caller passes ``now`` explicitly.
"""

from __future__ import annotations

import math
from typing import Protocol, runtime_checkable

import attrs

from ..errors import LeaseHeld, LeaseLost, StoreError

__all__ = ["Lease", "LeaseStore", "check_claim", "check_fence", "claim_verdict"]


@attrs.frozen
class Lease:
    """A worker's claim on one session until ``expires_at``.

    ``token`` is the fencing token: stamp it on every commit made under the
    lease (drivers do this for you).
    """

    session_id: str
    owner: str
    token: int
    expires_at: float


@runtime_checkable
class LeaseStore(Protocol):
    """A store that grants session execution leases. :class:`MemoryStore`,
    :class:`SQLiteStore` and :class:`PostgresStore` all do; the lease tests
    in :mod:`lash_machine.testing.conformance` check a store of your own."""

    def claim_lease(
        self, session_id: str, owner: str, ttl: float, now: float | None = None
    ) -> Lease:
        """Claim the session for ``owner`` for ``ttl`` seconds from ``now``
        (the store's clock when ``None``) with a new, larger token. The
        session need not exist yet. Raises
        :class:`~lash_machine.errors.LeaseHeld` while another owner holds a
        live lease; a claim by the current owner succeeds and fences its
        older token."""
        ...

    def renew_lease(self, lease: Lease, ttl: float, now: float | None = None) -> Lease:
        """Extend ``lease`` to ``ttl`` seconds from ``now``. Raises
        :class:`~lash_machine.errors.LeaseLost` when its token is no longer
        current (another claim, or a release, came in between). An expired
        lease nobody claimed since is renewed."""
        ...

    def release_lease(self, lease: Lease) -> bool:
        """Give the session up so another worker may claim it at once;
        ``False`` when the lease was no longer current (nothing to do)."""
        ...

    def current_lease(self, session_id: str, now: float | None = None) -> Lease | None:
        """The live (claimed, unexpired, unreleased) lease of the session."""
        ...


def check_claim(owner: str, ttl: float) -> None:
    """Refuse an owner or time-to-live no store should accept."""
    if not isinstance(owner, str) or not owner:
        raise ValueError("a lease owner must be a non-empty string")
    if "\x00" in owner:
        raise ValueError("a lease owner cannot contain NUL characters")
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not math.isfinite(ttl):
        raise ValueError(f"a lease time-to-live must be a finite number, not {ttl!r}")
    if ttl <= 0:
        raise ValueError(f"a lease time-to-live must be positive, not {ttl!r}")


def claim_verdict(
    session_id: str, owner: str, held: tuple[str | None, int, float] | None, now: float
) -> int:
    """The token a claim gets, given the stored ``(owner, token,
    expires_at)`` (``None``: never leased). Raises
    :class:`~lash_machine.errors.LeaseHeld` when another owner's lease is
    live."""
    if held is None:
        return 1
    holder, token, expires_at = held
    if holder is not None and holder != owner and expires_at > now:
        raise LeaseHeld(session_id, holder, expires_at)
    return token + 1


def check_fence(
    session_id: str,
    fencing_token: int | None,
    held: tuple[str | None, int, float] | None,
    now: float,
) -> None:
    """The lease check of a commit, given the stored ``(owner, token,
    expires_at)`` of its session (``None``: never leased). Raises
    :class:`~lash_machine.errors.LeaseLost` for a stale token and
    :class:`~lash_machine.errors.LeaseHeld` for an unfenced commit on a
    session another worker holds."""
    if fencing_token is None:
        if held is not None and held[0] is not None and held[2] > now:
            raise LeaseHeld(session_id, held[0], held[2])
        return
    if isinstance(fencing_token, bool) or not isinstance(fencing_token, int):
        raise StoreError(f"session {session_id!r}: fencing token must be an integer")
    if held is None or held[0] is None or held[1] != fencing_token:
        raise LeaseLost(session_id, fencing_token, None if held is None else held[1])
