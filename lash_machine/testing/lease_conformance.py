"""A reusable pytest suite for stores that grant execution leases
(:class:`~lash_machine.stores.leases.LeaseStore`).

Subclass :class:`LeaseConformance` like
:class:`~lash_machine.testing.conformance.StoreConformance` (the same
``make_store`` contract)::

    class TestMyStoreLeases(LeaseConformance):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "db")

Expired leases are made without sleeping: a claim with ``now`` far in the
past has already expired by the store's clock.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar

import attrs
import pytest

from ..errors import HeadRevisionConflict, LeaseHeld, LeaseLost, StoreError
from ..persisted import ActivePath, AttachmentIntent, FullGraph, SessionCommit
from ..stores.base import SessionStore
from ..stores.leases import Lease, LeaseStore
from .conformance import chain, ids, make_commit, make_node, run_threads

__all__ = ["LeaseConformance", "takeover_round"]

#: Long enough that no lease of a test expires by itself.
TTL = 600.0
#: A ``now`` so far back that a lease claimed at it has expired.
LONG_AGO = 1_000_000.0


def _head(store: SessionStore, session_id: str) -> int | None:
    loaded = store.load_graph(session_id, ActivePath())
    return None if loaded is None else loaded.head_revision


class LeaseConformance(abc.ABC):
    """The lease contract as tests. Subclass it and implement
    :meth:`make_store`; the store must implement both
    :class:`~lash_machine.stores.base.SessionStore` and
    :class:`~lash_machine.stores.leases.LeaseStore`."""

    #: Whether the store keeps its data across close and reopen.
    persistent: ClassVar[bool] = True
    #: Whether ids may contain NUL characters (PostgreSQL text cannot).
    supports_nul: ClassVar[bool] = True
    #: Threads racing in the concurrency tests.
    threads: ClassVar[int] = 8
    #: Rounds of the takeover race (the window it probes is narrow: raise
    #: it to hunt for a store whose lease check and commit can interleave).
    takeover_rounds: ClassVar[int] = 5

    @abc.abstractmethod
    def make_store(self, tmp_path: Path) -> Any:
        """Open the store under test (a ``SessionStore`` and ``LeaseStore``)."""

    def hold_lease_locks(
        self, store: Any, session_ids: Sequence[str]
    ) -> contextlib.AbstractContextManager[None]:
        """A context manager that holds, from another connection (or
        thread), the lock a claim or renewal of those sessions waits for:
        the write lock of a file, the lease rows of a server. Override it;
        the default skips the test that needs it."""
        pytest.skip(f"{type(self).__name__} does not implement hold_lease_locks")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Any]:
        """A fresh store, closed after the test."""
        opened = self.make_store(tmp_path)
        yield opened
        opened.close()

    # -- claims ---------------------------------------------------------------

    def test_the_store_grants_leases(self, store: Any) -> None:
        assert isinstance(store, LeaseStore)
        assert isinstance(store, SessionStore)

    def test_a_claim_needs_no_session_and_is_live(self, store: Any) -> None:
        before = time.time()
        lease = store.claim_lease("s", "w1", 30.0)
        assert (lease.session_id, lease.owner, lease.token) == ("s", "w1", 1)
        assert before + 29 <= lease.expires_at <= time.time() + 31
        assert store.current_lease("s") == lease
        assert store.current_lease("other") is None
        # A lease is not a session.
        assert store.load_graph("s", FullGraph()) is None
        assert store.list_sessions() == []

    def test_explicit_now_sets_the_expiry(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", 10.0, now=5000.0)
        assert lease.expires_at == 5010.0
        assert store.current_lease("s", now=5009.0) == lease
        assert store.current_lease("s", now=5010.0) is None

    def test_a_live_lease_of_another_owner_is_held(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", 10.0, now=5000.0)
        with pytest.raises(LeaseHeld) as caught:
            store.claim_lease("s", "w2", 10.0, now=5009.0)
        assert (caught.value.session_id, caught.value.owner) == ("s", "w1")
        assert caught.value.expires_at == 5010.0
        assert "w1" in str(caught.value)
        # Once it expired, another owner takes over with a larger token.
        taken = store.claim_lease("s", "w2", 10.0, now=5010.0)
        assert (taken.owner, taken.token) == ("w2", lease.token + 1)

    def test_tokens_strictly_increase_across_claims(self, store: Any) -> None:
        tokens = [store.claim_lease("s", "w1", TTL).token]
        tokens.append(store.claim_lease("s", "w1", TTL).token)  # the owner again
        lease = store.claim_lease("s", "w1", TTL)
        tokens.append(lease.token)
        assert store.release_lease(lease) is True
        tokens.append(store.claim_lease("s", "w2", TTL).token)  # after a release
        tokens.append(store.claim_lease("s", "w3", TTL, now=time.time() + 2 * TTL).token)
        assert tokens == sorted(set(tokens)), tokens
        assert tokens[0] == 1

    def test_tokens_outlive_the_session(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", TTL)
        store.commit(make_commit("s", None, [make_node("a")], fencing_token=lease.token))
        assert store.delete_session("s") is True
        again = store.claim_lease("s", "w1", TTL)
        assert again.token > lease.token
        # The old token stays stale for the new incarnation of the session.
        with pytest.raises(LeaseLost):
            store.commit(make_commit("s", None, [make_node("a")], fencing_token=lease.token))
        assert store.commit(make_commit("s", None, [make_node("b")], fencing_token=again.token))

    def test_leases_are_per_session(self, store: Any) -> None:
        for session_id in ("s", "s%", "S", "s_", "s' OR '1'='1"):
            assert store.claim_lease(session_id, f"owner of {session_id}", TTL).token == 1
        lease = store.current_lease("s%")
        assert lease is not None
        assert lease.owner == "owner of s%"

    def test_bad_owners_and_ttls_are_refused(self, store: Any) -> None:
        for owner, ttl in (("", 1.0), ("w", 0.0), ("w", -1.0), ("w", float("nan"))):
            with pytest.raises(ValueError):
                store.claim_lease("s", owner, ttl)
        assert store.current_lease("s") is None

    def test_a_claim_that_waited_for_a_lock_runs_its_whole_ttl(self, store: Any) -> None:
        # Another writer holds the lock longer than the time-to-live: the
        # lease must run for its TTL from when it is granted, not from when
        # the claim (or renewal) began to wait.
        ttl = 1.0
        store.release_lease(store.claim_lease("s", "w0", TTL))  # a released lease row
        held = store.claim_lease("r", "w1", ttl)
        with ThreadPoolExecutor(2) as pool:
            with self.hold_lease_locks(store, ["s", "r"]):
                claim = pool.submit(store.claim_lease, "s", "w2", ttl)
                renew = pool.submit(store.renew_lease, held, ttl)
                time.sleep(ttl * 1.5)
            claimed = claim.result(timeout=60)
            renewed = renew.result(timeout=60)
        assert store.current_lease("s") == claimed
        assert store.current_lease("r") == renewed

    # -- renew and release -------------------------------------------------------

    def test_renew_extends_a_current_lease(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", 10.0, now=5000.0)
        renewed = store.renew_lease(lease, 10.0, now=5008.0)
        assert (renewed.token, renewed.expires_at) == (lease.token, 5018.0)
        with pytest.raises(LeaseHeld):
            store.claim_lease("s", "w2", 10.0, now=5015.0)

    def test_an_expired_lease_nobody_claimed_renews(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", 1.0, now=LONG_AGO)
        assert store.current_lease("s") is None
        renewed = store.renew_lease(lease, TTL)
        assert renewed.token == lease.token
        assert store.current_lease("s") == renewed

    def test_renewing_a_lease_another_owner_claimed_is_lost(self, store: Any) -> None:
        old = store.claim_lease("s", "w1", 1.0, now=LONG_AGO)
        new = store.claim_lease("s", "w2", TTL)
        with pytest.raises(LeaseLost) as caught:
            store.renew_lease(old, TTL)
        assert (caught.value.token, caught.value.current) == (old.token, new.token)
        assert store.current_lease("s") == new

    def test_release_frees_the_session_at_once(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", TTL)
        assert store.release_lease(lease) is True
        assert store.current_lease("s") is None
        assert store.release_lease(lease) is False
        with pytest.raises(LeaseLost):
            store.renew_lease(lease, TTL)
        assert store.claim_lease("s", "w2", TTL).token == lease.token + 1

    def test_releasing_a_stale_lease_leaves_the_new_holder(self, store: Any) -> None:
        old = store.claim_lease("s", "w1", 1.0, now=LONG_AGO)
        new = store.claim_lease("s", "w2", TTL)
        assert store.release_lease(old) is False
        assert store.current_lease("s") == new
        # Even a forged lease naming the current token but another owner.
        forged = Lease("s", "w1", new.token, new.expires_at)
        assert store.release_lease(forged) is False
        assert store.current_lease("s") == new

    # -- fenced commits --------------------------------------------------------

    def _applied_nothing(self, store: Any, before: object, node_id: str) -> None:
        assert store.load_graph("s", FullGraph()) == before
        assert store.load_node("s", node_id) is None
        assert [i.attachment_id for i in store.list_uncommitted(1e12)] == ["att"]

    def test_a_commit_with_the_current_token_applies(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", TTL)
        assert store.commit(make_commit("s", None, chain("n", 2), fencing_token=lease.token)) == 1
        assert store.commit(make_commit("s", 1, [make_node("x", "n1")], fencing_token=1)) == 2
        assert ids(store.load_graph("s", ActivePath())) == ["n0", "n1", "x"]

    def test_a_stale_token_is_refused_with_nothing_applied(self, store: Any) -> None:
        old = store.claim_lease("s", "w1", 1.0, now=LONG_AGO)
        store.commit(make_commit("s", None, [make_node("a")], fencing_token=old.token))
        new = store.claim_lease("s", "w2", TTL)
        store.record_intent(AttachmentIntent("s", "att", "file:///x", 1.0))
        before = store.load_graph("s", FullGraph())
        stale = make_commit(
            "s", 1, [make_node("b", "a")], adopt=["att"], host_checkpoint={"by": "w1"}
        )
        for token in (old.token, new.token + 1, 0, -5):
            with pytest.raises(LeaseLost) as caught:
                store.commit(_with_token(stale, token))
            assert (caught.value.session_id, caught.value.current) == ("s", new.token)
            self._applied_nothing(store, before, "b")
        assert store.commit(_with_token(stale, new.token)) == 2

    def test_the_lease_is_checked_before_the_head(self, store: Any) -> None:
        old = store.claim_lease("s", "w1", 1.0, now=LONG_AGO)
        store.commit(make_commit("s", None, [make_node("a")], fencing_token=old.token))
        store.claim_lease("s", "w2", TTL)
        with pytest.raises(LeaseLost):
            store.commit(make_commit("s", 7, [make_node("b")], fencing_token=old.token))
        with pytest.raises(LeaseLost):
            store.commit(make_commit("t", None, [make_node("b")], fencing_token=old.token))

    def test_a_token_of_a_released_lease_is_refused(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", TTL)
        store.commit(make_commit("s", None, [make_node("a")], fencing_token=lease.token))
        store.release_lease(lease)
        with pytest.raises(LeaseLost):
            store.commit(make_commit("s", 1, [make_node("b", "a")], fencing_token=lease.token))
        assert _head(store, "s") == 1

    def test_an_expired_holder_commits_until_someone_claims(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", 1.0, now=LONG_AGO)
        assert store.commit(make_commit("s", None, [make_node("a")], fencing_token=lease.token))
        store.claim_lease("s", "w2", TTL)
        with pytest.raises(LeaseLost):
            store.commit(make_commit("s", 1, [make_node("b", "a")], fencing_token=lease.token))

    def test_a_token_for_a_session_never_leased_is_refused(self, store: Any) -> None:
        with pytest.raises(LeaseLost) as caught:
            store.commit(make_commit("s", None, [make_node("a")], fencing_token=1))
        assert caught.value.current is None
        assert store.load_graph("s", FullGraph()) is None

    def test_a_lease_of_one_session_does_not_fence_another(self, store: Any) -> None:
        lease = store.claim_lease("s", "w1", TTL)
        with pytest.raises(LeaseLost):
            store.commit(make_commit("t", None, [make_node("a")], fencing_token=lease.token))
        assert store.commit(make_commit("t", None, [make_node("a")])) == 1

    # -- unfenced commits ------------------------------------------------------

    def test_an_unfenced_commit_on_a_held_session_is_refused(self, store: Any) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        lease = store.claim_lease("s", "w1", TTL)
        store.record_intent(AttachmentIntent("s", "att", "file:///x", 1.0))
        before = store.load_graph("s", FullGraph())
        with pytest.raises(LeaseHeld) as caught:
            store.commit(make_commit("s", 1, [make_node("b", "a")], adopt=["att"]))
        assert (caught.value.owner, caught.value.expires_at) == ("w1", lease.expires_at)
        self._applied_nothing(store, before, "b")

    def test_an_unfenced_commit_applies_once_the_lease_is_gone(self, store: Any) -> None:
        released = store.claim_lease("s", "w1", TTL)
        store.release_lease(released)
        assert store.commit(make_commit("s", None, [make_node("a")])) == 1
        store.claim_lease("s", "w1", 1.0, now=LONG_AGO)  # expired at once
        assert store.commit(make_commit("s", 1, [make_node("b", "a")])) == 2

    def test_sessions_without_leases_commit_unfenced(self, store: Any) -> None:
        store.claim_lease("other", "w1", TTL)
        assert store.commit(make_commit("s", None, [make_node("a")])) == 1
        with pytest.raises(HeadRevisionConflict):
            store.commit(make_commit("s", None, [make_node("b")]))

    # -- ids, persistence ------------------------------------------------------

    def test_awkward_session_ids_lease_apart(self, store: Any) -> None:
        awkward = ["quote'\"`", "per%cent_", "ünïcødé 会话 🧵", "", "\u200b"]
        if self.supports_nul:
            awkward.append("nul\x00s")
        for number, session_id in enumerate(awkward):
            lease = store.claim_lease(session_id, f"w{number}", TTL)
            assert lease.token == 1
            store.commit(make_commit(session_id, None, [make_node("a")], fencing_token=1))
        for number, session_id in enumerate(awkward):
            current = store.current_lease(session_id)
            assert current is not None
            assert current.owner == f"w{number}"
        if not self.supports_nul:
            with pytest.raises(StoreError, match="NUL"):
                store.claim_lease("nul\x00s", "w", TTL)
            assert store.current_lease("nul\x00s") is None
        with pytest.raises(ValueError, match="NUL"):
            store.claim_lease("s", "owner\x00", TTL)

    def test_leases_survive_reopen(self, store: Any, tmp_path: Path) -> None:
        if not self.persistent:
            pytest.skip(f"{type(self).__name__} keeps nothing across close by design")
        lease = store.claim_lease("s", "w1", TTL)
        store.close()
        reopened = self.make_store(tmp_path)
        try:
            assert reopened.current_lease("s") == lease
            with pytest.raises(LeaseHeld):
                reopened.claim_lease("s", "w2", TTL)
            assert reopened.claim_lease("s", "w1", TTL).token == lease.token + 1
        finally:
            reopened.close()

    # -- concurrency -----------------------------------------------------------

    def test_concurrent_claims_have_one_winner(self, store: Any) -> None:
        results = run_threads(self.threads, lambda i: store.claim_lease("s", f"w{i}", TTL))
        won = [r for r in results if isinstance(r, Lease)]
        assert len(won) == 1, results
        assert all(isinstance(r, LeaseHeld) for r in results if r not in won), results
        assert store.current_lease("s") == won[0]

    def test_concurrent_takeovers_hand_out_distinct_tokens(self, store: Any) -> None:
        # Every claimant sees an expired lease; claims serialize, so each
        # either takes over with a token of its own or finds it held.
        store.claim_lease("s", "w0", 1.0, now=LONG_AGO)
        results = run_threads(self.threads, lambda i: store.claim_lease("s", "w", TTL))
        tokens = [r.token for r in results if isinstance(r, Lease)]
        assert all(isinstance(r, Lease) for r in results), results
        assert sorted(tokens) == list(range(2, 2 + self.threads))

    def test_a_takeover_fences_every_later_commit_of_the_old_holder(self, store: Any) -> None:
        # The old holder commits in a loop while the new holder claims,
        # loads the head and commits on it. The lease check and the
        # compare-and-set are one transaction, so the old holder's commits
        # land before the claim (the new holder sees them) or are refused:
        # the new holder never meets a conflict.
        for round_no in range(self.takeover_rounds):
            takeover_round(store, f"takeover-{round_no}")


def takeover_round(store: Any, session_id: str) -> None:
    """One round of the takeover race on ``session_id`` (see
    :meth:`LeaseConformance.test_a_takeover_fences_every_later_commit_of_the_old_holder`):
    raises ``AssertionError`` when the new holder met a commit of the old
    one it could not see."""
    old = store.claim_lease(session_id, "old", 1.0, now=LONG_AGO)
    store.commit(make_commit(session_id, None, [make_node("n0")], fencing_token=old.token))
    acknowledged: list[str] = []
    lost = threading.Event()
    started = threading.Event()

    def hammer() -> None:
        head, step = 1, 1
        while True:
            node = make_node(f"n{step}", f"n{step - 1}")
            try:
                head = store.commit(make_commit(session_id, head, [node], fencing_token=old.token))
            except LeaseLost:
                lost.set()
                return
            acknowledged.append(node.node_id)
            step += 1
            started.set()

    thread = threading.Thread(target=hammer)
    thread.start()
    try:
        assert started.wait(30)
        new = store.claim_lease(session_id, "new", TTL)
        loaded = store.load_graph(session_id, ActivePath())
        assert loaded is not None
        assert loaded.leaf_id is not None
        revision = store.commit(
            make_commit(
                session_id,
                loaded.head_revision,
                [make_node("new", loaded.leaf_id)],
                fencing_token=new.token,
            )
        )
    finally:
        thread.join(30)
    assert lost.is_set()
    assert revision == loaded.head_revision + 1
    assert ids(store.load_graph(session_id, ActivePath())) == ["n0", *acknowledged, "new"]


def _with_token(commit: SessionCommit, token: int) -> SessionCommit:
    return attrs.evolve(commit, fencing_token=token)
