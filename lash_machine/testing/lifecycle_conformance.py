"""The cases of the store contract that schema version 3 added: deletes
that stay deleted, retried commits, the session stamp, pins, session copies
and expiry. :class:`~lash_machine.testing.conformance.StoreConformance`
includes them; they use its ``store`` fixture."""

from __future__ import annotations

import time

import attrs
import pytest

from ..errors import (
    HeadRevisionConflict,
    ParentTombstoned,
    SessionDeleted,
    SessionNotFound,
    TombstoneRefused,
)
from ..persisted import ActivePath, ExpireReport, FullGraph, GraphDelta, Origin, SessionCommit
from ..stores.base import SessionStore
from ..stores.leases import LeaseStore
from .records import chain, ids, make_commit, make_node

__all__ = ["LifecycleCases"]


def _with_id(commit: SessionCommit, commit_id: str) -> SessionCommit:
    return attrs.evolve(commit, commit_id=commit_id)


def _pins(
    session_id: str,
    head: int,
    leaf: str,
    pinned: tuple[str, ...] = (),
    unpinned: tuple[str, ...] = (),
) -> SessionCommit:
    commit = make_commit(session_id, head, [], leaf_id=leaf)
    return attrs.evolve(commit, delta=GraphDelta(leaf, pinned=pinned, unpinned=unpinned))


class LifecycleCases:
    """Mixed into :class:`~lash_machine.testing.conformance.StoreConformance`."""

    # -- a retried commit -----------------------------------------------------

    def test_a_retried_commit_is_answered_and_applied_once(self, store: SessionStore) -> None:
        first = _with_id(make_commit("s", None, [make_node("a")]), "w:1")
        assert store.commit(first) == 1
        assert store.commit(first) == 1  # the answer was lost: the retry is answered
        second = _with_id(make_commit("s", 1, [make_node("b", "a")]), "w:2")
        assert store.commit(second) == 2
        assert store.commit(second) == 2
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None and loaded.head_revision == 2 and ids(loaded) == ["a", "b"]
        # An older commit, or the last one once another writer moved on, is a conflict.
        with pytest.raises(HeadRevisionConflict):
            store.commit(first)
        theirs = _with_id(make_commit("s", 2, [make_node("c", "b")]), "other:1")
        assert store.commit(theirs) == 3
        with pytest.raises(HeadRevisionConflict) as conflict:
            store.commit(second)
        assert conflict.value.actual == 3
        # Without an id nothing is recognised.
        with pytest.raises(HeadRevisionConflict):
            store.commit(make_commit("s", 2, [make_node("d", "b")]))

    # -- deletes that stay deleted ----------------------------------------------

    def test_a_deleted_session_is_never_made_again(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, chain("n", 3)))
        store.commit(make_commit("other", None, [make_node("o")]))
        assert store.delete_session("s", now=500.0) is True
        for commit in (
            make_commit("s", None, [make_node("x")]),
            make_commit("s", 1, [make_node("x", "n2")]),
        ):
            with pytest.raises(SessionDeleted) as refused:
                store.commit(commit)
            assert refused.value.deleted_at == 500.0
        with pytest.raises(SessionDeleted):
            store.load_graph("s", ActivePath())
        with pytest.raises(SessionDeleted):
            store.fork_session("s", None, "copy")
        with pytest.raises(SessionDeleted):
            store.fork_session("other", None, "s")
        assert store.tombstone_nodes("s", ["n1"]) == 0
        assert store.delete_session("s") is False
        assert [i.session_id for i in store.list_sessions()] == ["other"]
        # SessionDeleted is a SessionNotFound: callers that only know the
        # older error still see a missing session.
        assert issubclass(SessionDeleted, SessionNotFound)

    def test_purge_forgets_only_old_markers(self, store: SessionStore) -> None:
        for sid, at in (("old", 100.0), ("new", 900.0)):
            store.commit(make_commit(sid, None, [make_node("a")]))
            store.delete_session(sid, now=at)
        assert store.purge_deleted(older_than=500.0) == 1
        assert store.load_graph("old", FullGraph()) is None
        with pytest.raises(SessionDeleted):
            store.load_graph("new", FullGraph())
        assert store.purge_deleted(older_than=500.0) == 0

    # -- the session stamp ----------------------------------------------------------

    def test_the_stamp_moves_with_commits_and_tombstones(self, store: SessionStore) -> None:
        assert store.session_stamp("s") is None
        store.commit(make_commit("s", None, [make_node("r"), make_node("x", "r")], leaf_id="r"))
        first = store.session_stamp("s")
        assert first is not None and (first.head_revision, first.generation) == (1, 0)
        store.commit(make_commit("s", 1, [make_node("a", "r")]))
        second = store.session_stamp("s")
        assert second is not None and second.head_revision == 2
        assert second.generation == 0 and second.created_by == first.created_by
        assert store.tombstone_nodes("s", ["x"]) == 1
        third = store.session_stamp("s")
        assert third is not None and (third.head_revision, third.generation) == (2, 1)
        assert store.tombstone_nodes("s", ["x"]) == 0  # nothing hidden: nothing moves
        assert store.session_stamp("s") == third
        for scope in (FullGraph(), ActivePath()):
            loaded = store.load_graph("s", scope)
            assert loaded is not None and loaded.stamp == third

    def test_a_session_made_again_under_an_id_has_another_stamp(self, store: SessionStore) -> None:
        store.commit(_with_id(make_commit("s", None, [make_node("a")]), "w1:1"))
        before = store.session_stamp("s")
        assert before is not None and before.created_by == "w1:1"
        store.delete_session("s")
        store.purge_deleted(float("inf"))
        store.commit(_with_id(make_commit("s", None, [make_node("a")]), "w2:1"))
        after = store.session_stamp("s")
        assert after is not None and after.head_revision == before.head_revision
        assert after != before and after.created_by == "w2:1"
        # A copy gets an origin of its own.
        store.fork_session("s", None, "t")
        copied = store.session_stamp("t")
        assert copied is not None and copied.created_by not in (None, "w2:1")

    # -- pins ----------------------------------------------------------------------

    def test_pins_keep_a_node_and_its_ancestors(self, store: SessionStore) -> None:
        # r - a (leaf); r - x - y, an orphan branch.
        store.commit(
            make_commit(
                "s",
                None,
                [make_node("r"), make_node("a", "r"), make_node("x", "r"), make_node("y", "x")],
                leaf_id="a",
            )
        )
        assert store.commit(_pins("s", 1, "a", pinned=("y",))) == 2
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None and loaded.pinned == ("y",)
        path = store.load_graph("s", ActivePath())
        assert path is not None and path.pinned == ()  # only the pins among the nodes read
        with pytest.raises(TombstoneRefused) as refused:
            store.tombstone_nodes("s", ["x", "y"])
        assert refused.value.node_id == "y"
        with pytest.raises(TombstoneRefused):
            store.tombstone_nodes("s", ["x"])  # y would lose its parent
        assert store.commit(_pins("s", 2, "a", unpinned=("y",))) == 3
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None and loaded.pinned == ()
        assert store.tombstone_nodes("s", ["x", "y"]) == 2

    def test_a_commit_pins_what_it_appends(self, store: SessionStore) -> None:
        commit = make_commit("s", None, [make_node("r"), make_node("a", "r")])
        store.commit(attrs.evolve(commit, delta=attrs.evolve(commit.delta, pinned=("r", "a"))))
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None and loaded.pinned == ("r", "a")

    def test_a_pin_of_a_node_that_is_not_live_is_refused(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("r"), make_node("x", "r")], leaf_id="r"))
        store.tombstone_nodes("s", ["x"])
        for missing in ("x", "never-stored"):
            with pytest.raises(ParentTombstoned) as refused:
                store.commit(_pins("s", 1, "r", pinned=(missing,)))
            assert refused.value.node_id == missing
        assert store.session_stamp("s").head_revision == 1  # type: ignore[union-attr]

    # -- session copies --------------------------------------------------------------

    def _branchy_source(self, store: SessionStore) -> None:
        # r - a - b (leaf); r - a - x, an orphan.
        nodes = [make_node("r"), make_node("a", "r"), make_node("x", "a"), make_node("b", "a")]
        store.commit(make_commit("src", None, nodes, leaf_id="b"))

    def test_a_fork_copies_the_path_up_to_a_node(self, store: SessionStore) -> None:
        self._branchy_source(store)
        assert store.fork_session("src", "x", "copy", now=123.0) == 1
        copy = store.load_graph("copy", FullGraph())
        assert copy is not None
        assert ids(copy) == ["r", "a", "x"] and copy.leaf_id == "x"
        assert copy.head_revision == 1 and copy.origin == Origin("src", "x")
        assert copy.created_at == 123.0
        assert [n.body for n in copy.nodes] == [{"text": "r"}, {"text": "a"}, {"text": "x"}]
        source = store.load_graph("src", FullGraph())
        assert source is not None and ids(source) == ["r", "a", "x", "b"] and source.origin is None
        # The copy lives on its own.
        store.commit(make_commit("copy", 1, [make_node("y", "x")]))
        assert store.load_node("src", "y") is None
        assert store.fork_session("src", None, "at-leaf") == 1
        assert ids(store.load_graph("at-leaf", ActivePath())) == ["r", "a", "b"]

    def test_a_fork_is_refused_when_it_cannot_copy(self, store: SessionStore) -> None:
        self._branchy_source(store)
        with pytest.raises(SessionNotFound):
            store.fork_session("nope", None, "copy")
        store.tombstone_nodes("src", ["x"])
        for dead in ("x", "never-stored"):
            with pytest.raises(ParentTombstoned):
                store.fork_session("src", dead, "copy")
        store.commit(make_commit("taken", None, [make_node("t")]))
        with pytest.raises(HeadRevisionConflict):
            store.fork_session("src", None, "taken")
        assert [i.session_id for i in store.list_sessions()] == ["src", "taken"]

    # -- expiry -----------------------------------------------------------------------

    def _idle_and_fresh(self, store: SessionStore) -> float:
        """Sessions i0..i3 committed before the returned moment, f0 after."""
        for number in range(4):
            store.commit(make_commit(f"i{number}", None, chain(f"i{number}-", number + 1)))
        time.sleep(0.02)
        mark = time.time()
        time.sleep(0.02)
        store.commit(make_commit("f0", None, [make_node("f")]))
        return mark

    def test_expire_removes_idle_sessions_and_keeps_leased_ones(self, store: SessionStore) -> None:
        mark = self._idle_and_fresh(store)
        if isinstance(store, LeaseStore):
            store.claim_lease("i1", "busy-worker", ttl=600.0)
        seen: list[ExpireReport] = []
        dry = store.expire(0.0, now=mark, dry_run=True)
        leased = {"i1"} if isinstance(store, LeaseStore) else set()
        assert set(dry.expired) == {"i0", "i1", "i2", "i3"} - leased and dry.dry_run
        assert [i.session_id for i in store.list_sessions()] == ["f0", "i0", "i1", "i2", "i3"]
        report = store.expire(0.0, now=mark, batch_size=1, progress=seen.append)
        assert set(report.expired) == set(dry.expired) and not report.dry_run
        assert report.kept_leased == len(leased)
        assert report.nodes_removed == sum(n + 1 for n in range(4) if f"i{n}" not in leased)
        assert len(seen) >= 4 and seen[-1] == report  # a report after every batch
        remaining = {i.session_id for i in store.list_sessions()}
        assert remaining == {"f0"} | leased
        for sid in report.expired:
            with pytest.raises(SessionDeleted):
                store.load_graph(sid, FullGraph())
        # Nothing more is idle by then.
        assert store.expire(0.0, now=mark).expired == ()

    def test_expire_pages_through_sessions_written_at_one_instant(
        self, store: SessionStore, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Pages are keyed by (last write, session id): sessions that share
        their last write time are each listed once, whatever the batch
        size, and all expire."""
        monkeypatch.setattr(time, "time", lambda: 1000.0)
        names = [f"tie{n}" for n in range(7)]
        for name in names:
            store.commit(make_commit(name, None, [make_node(f"{name}-n")]))
        monkeypatch.undo()
        for batch in (1, 2, 3, 7, 8):
            pages: list[ExpireReport] = []
            dry = store.expire(
                0.0, now=2000.0, dry_run=True, batch_size=batch, progress=pages.append
            )
            assert sorted(dry.expired) == names and len(set(dry.expired)) == len(names), batch
            assert len(pages) >= -(-len(names) // batch), batch  # a report per batch
        report = store.expire(0.0, now=2000.0, batch_size=2)
        assert sorted(report.expired) == names and report.nodes_removed == len(names)
        assert store.list_sessions() == []

    def test_expire_checks_its_arguments(self, store: SessionStore) -> None:
        for idle, batch in ((-1.0, 10), (float("nan"), 10), (1.0, 0), (1.0, True)):
            with pytest.raises(ValueError):
                store.expire(idle, batch_size=batch)
