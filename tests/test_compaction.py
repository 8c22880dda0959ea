"""Compaction (Compact, Uncompact) through the blocking driver on real
stores: what is stored after each step, the way back, and what happens when
a compaction meets another writer, an operator, a copy, the wire and a
deleted session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_drivers_support import POLICY, STORES, StoreFactory
from test_drivers_support import store_factory as _store_factory

from lash_machine import (
    HeadRevisionConflict,
    InvalidEvent,
    NodeKind,
    Residency,
    SessionDeleted,
    SessionNode,
    wire,
)
from lash_machine.compaction import read_summary
from lash_machine.drivers.blocking import Driver, Session
from lash_machine.errors import TombstoneRefused
from lash_machine.graph import SessionGraph, heal_graph
from lash_machine.persisted import ActivePath, FullGraph
from lash_machine.state import SessionState
from lash_machine.stores import MemoryStore
from lash_machine.stores.base import SessionStore

RESIDENCIES = [Residency.KEEP_ALL, Residency.ACTIVE_PATH_ONLY]


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from _store_factory(request, tmp_path)


def _chat(session: Session, turns: int) -> list[str]:
    ids = []
    for turn in range(turns):
        ids.append(session.append({"role": "user", "text": f"question {turn}"}).node_id)
        ids.append(session.append({"role": "assistant", "text": f"answer {turn}"}).node_id)
    return ids


def _stored_path(store: SessionStore, session_id: str) -> list[str]:
    """The stored active path, read as a path and checked against the full
    graph read (both must agree, and the stored graph needs no repair)."""
    path = store.load_graph(session_id, ActivePath())
    full = store.load_graph(session_id, FullGraph())
    assert path is not None and full is not None
    graph = SessionGraph.from_nodes(full.nodes, full.leaf_id)
    _, report = heal_graph(graph)
    assert report.is_clean, report
    ids = [node.node_id for node in path.nodes]
    assert ids == [node.node_id for node in graph.active_path()]
    return ids


def _memory_path(session: Session) -> list[str]:
    state = session.state
    assert state is not None
    return [node.node_id for node in state.graph.active_path()]


# ---- the round trip, on every store and residency --------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("residency", RESIDENCIES)
def test_compact_park_resume_uncompact(open_store: StoreFactory, residency: Residency) -> None:
    store = open_store()
    driver = Driver(store)
    session = driver.open(POLICY, residency=residency)
    original = _chat(session, 10)
    session.save()

    summary = session.compact(original[14], {"text": "turns 0-7, summarised"})
    assert summary.kind is NodeKind.SUMMARY and summary.parent_id is None
    found = read_summary(summary)
    assert found is not None and (found.through, found.kept) == (original[14], original[15])
    assert _memory_path(session) == [summary.node_id, *original[15:]]
    session.save()
    assert _stored_path(store, session.session_id) == [summary.node_id, *original[15:]]
    full = store.load_graph(session.session_id, FullGraph())
    assert full is not None and original[14] in full.pinned

    parked = session.park()
    resumed = driver.resume(wire.loads(wire.dumps(parked)))
    view = resumed.view
    assert view is not None and view.leaf_id == original[-1]
    assert _memory_path(resumed) == [summary.node_id, *original[15:]]
    if residency is Residency.ACTIVE_PATH_ONLY:
        assert view.resident_nodes == 6  # the summary and the kept tail, nothing more
    else:
        assert view.resident_nodes == 21
    first = resumed.load_node(original[0])
    assert first is not None and first.body == {"role": "user", "text": "question 0"}
    assert set(resumed.list_orphans()) == set(original[:15])
    assert resumed.tombstone_orphans() == 0  # the originals are pinned
    driver.vacuum()
    assert resumed.load_node(original[0]) is not None

    resumed.uncompact(summary.node_id)
    assert _memory_path(resumed) == original
    resumed.save()
    assert _stored_path(store, session.session_id) == original
    full = store.load_graph(session.session_id, FullGraph())
    assert full is not None and full.pinned == ()
    assert set(resumed.list_orphans()) == {summary.node_id}
    resumed.close()
    driver.close()


@pytest.mark.parametrize("residency", RESIDENCIES)
def test_compacting_twice_keeps_both_layers(tmp_path: Path, residency: Residency) -> None:
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY, residency=residency)
    original = _chat(session, 6)
    session.save()
    first = session.compact(original[3], "early turns")
    session.save()
    second = session.compact(original[7], "middle turns")
    session.save()
    assert _stored_path(store, session.session_id) == [second.node_id, *original[8:]]
    session = driver.resume(session.park())
    session.uncompact(second.node_id)
    session.save()
    assert _stored_path(store, session.session_id) == [first.node_id, *original[4:]]
    session.uncompact(first.node_id)
    session.save()
    assert _stored_path(store, session.session_id) == original


def test_compacting_through_the_leaf_leaves_the_summary_alone() -> None:
    driver = Driver(MemoryStore())
    session = driver.open(POLICY)
    original = _chat(session, 2)
    summary = session.compact(original[-1], "everything so far")  # nothing saved yet
    assert read_summary(summary) is not None and read_summary(summary).kept is None  # type: ignore[union-attr]
    assert _memory_path(session) == [summary.node_id]
    nxt = session.append({"role": "user", "text": "go on"})
    assert nxt.parent_id == summary.node_id
    session.save()
    session.uncompact(summary.node_id)
    assert _memory_path(session) == [*original, nxt.node_id]
    session.save()


# ---- what the machine refuses -----------------------------------------------------------


def test_refusals_name_what_is_wrong() -> None:
    driver = Driver(MemoryStore())
    session = driver.open(POLICY)
    original = _chat(session, 3)
    session.branch(original[1])
    off = session.append({"role": "user", "text": "another way"}).node_id
    session.branch(original[-1])
    with pytest.raises(InvalidEvent, match="not on the active path"):
        session.compact(off, "x")
    with pytest.raises(InvalidEvent, match="not on the active path"):
        session.compact("no-such-node", "x")
    with pytest.raises(InvalidEvent, match="not a summary"):
        session.uncompact(original[0])
    with pytest.raises(InvalidEvent, match="summary 'nope' is not"):
        session.uncompact("nope")
    with pytest.raises(InvalidEvent, match="summary"):
        session.compact(original[2], {"bad": float("nan")})
    assert _memory_path(session) == original  # nothing changed by a refusal


def test_a_copy_of_a_compacted_session_cannot_uncompact(tmp_path: Path) -> None:
    # The copy's history is the summary and the tail; the originals stayed
    # with the source session, so the way back is refused, not half-done.
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY)
    original = _chat(session, 4)
    summary = session.compact(original[3], "the start")
    session.save()
    copy = driver.resume(session.fork())
    assert _memory_path(copy) == [summary.node_id, *original[4:]]
    with pytest.raises(InvalidEvent, match=f"{original[3]!r}, which summary"):
        copy.uncompact(summary.node_id)


def test_uncompact_under_active_path_only_reads_the_replaced_path() -> None:
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY, residency=Residency.ACTIVE_PATH_ONLY)
    original = _chat(session, 5)
    summary = session.compact(original[5], "the start")
    session.save()
    session = driver.resume(session.park())
    assert session.view is not None and session.view.resident_nodes == 5
    session.uncompact(summary.node_id)
    assert _memory_path(session) == original
    session.save()
    assert _stored_path(store, session.session_id) == original
    session = driver.resume(session.park())
    assert session.view is not None and session.view.resident_nodes == 10


# ---- where compaction meets other writers and operators ---------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("compactor_first", [True, False])
def test_a_concurrent_writer_never_sees_half_a_compaction(
    open_store: StoreFactory, compactor_first: bool
) -> None:
    store = open_store()
    driver, other = Driver(store), Driver(open_store())
    session = driver.open(POLICY)
    original = _chat(session, 5)
    parked = session.park()
    compactor = driver.resume(parked)
    writer = other.resume(parked, residency=Residency.ACTIVE_PATH_ONLY)
    summary = compactor.compact(original[5], "the start")
    late = writer.append({"role": "user", "text": "meanwhile"}).node_id
    first, second = (compactor, writer) if compactor_first else (writer, compactor)
    first.save()
    with pytest.raises(HeadRevisionConflict):
        second.save()
    stored = _stored_path(store, session.session_id)
    if compactor_first:
        assert stored == [summary.node_id, *original[6:]]
    else:
        assert stored == [*original, late]
        full = store.load_graph(session.session_id, FullGraph())
        assert full is not None and full.pinned == ()
        assert summary.node_id not in {node.node_id for node in full.nodes}
    # The loser resumes the store's head and goes on from there.
    second.close(discard=True)
    again = driver.resume(parked)
    assert _memory_path(again) == stored


@pytest.mark.parametrize("open_store", ["sqlite", "postgres"], indirect=True)
def test_an_operator_prune_and_vacuum_keep_what_a_summary_replaced(
    open_store: StoreFactory,
) -> None:
    store, operator = open_store(), open_store()
    driver = Driver(store)
    session = driver.open(POLICY, residency=Residency.ACTIVE_PATH_ONLY)
    original = _chat(session, 4)
    summary = session.compact(original[3], "the start")
    session.save()
    parked = session.park()
    # An operator, on a connection of its own, hides what it may and vacuums.
    with pytest.raises(TombstoneRefused, match="pinned"):
        operator.tombstone_nodes(parked.session_id, original[:4])
    assert Driver(operator).resume(parked).tombstone_orphans() == 0
    operator.vacuum()
    full = store.load_graph(parked.session_id, FullGraph())
    assert full is not None and set(original) <= {node.node_id for node in full.nodes}
    resumed = driver.resume(parked)
    resumed.uncompact(summary.node_id)
    resumed.save()
    assert _stored_path(store, parked.session_id) == original


def test_a_compaction_of_a_deleted_session_is_not_written(tmp_path: Path) -> None:
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY)
    original = _chat(session, 3)
    session.save()
    session.compact(original[1], "the start")
    store.delete_session(session.session_id)
    with pytest.raises(SessionDeleted):
        session.save()
    with pytest.raises(SessionDeleted):  # the marker stays; no summary was written
        store.load_graph(session.session_id, FullGraph())


@pytest.mark.parametrize("residency", RESIDENCIES)
def test_an_unsaved_compaction_survives_the_wire(residency: Residency) -> None:
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY, residency=residency)
    original = _chat(session, 4)
    session.save()
    summary = session.compact(original[3], "the start")
    state = session.state
    assert state is not None
    session.close(discard=True)
    carried: object = wire.loads(wire.dumps(state))
    assert isinstance(carried, SessionState)
    assert carried == state
    restored = driver.restore(carried, POLICY, residency=residency)
    restored.save()
    assert _stored_path(store, session.session_id) == [summary.node_id, *original[4:]]
    restored.uncompact(summary.node_id)
    restored.save()
    assert _stored_path(store, session.session_id) == original


# ---- the property: memory and store agree, and the way back is exact --------------------


@settings(max_examples=40)
@given(
    saved_turns=st.integers(0, 8),
    unsaved_turns=st.integers(0, 4),
    through=st.integers(0, 23),
    save_between=st.booleans(),
    park_between=st.booleans(),
    residency=st.sampled_from(RESIDENCIES),
)
def test_compaction_stores_what_memory_holds_and_undoes_exactly(  # noqa: PLR0917
    saved_turns: int,
    unsaved_turns: int,
    through: int,
    save_between: bool,
    park_between: bool,
    residency: Residency,
) -> None:
    # The kept node may be stored (a parent repair at commit) or not yet
    # (written whole under the summary): both must store what memory holds.
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY, residency=residency)
    original = _chat(session, saved_turns)
    if original:
        session.save()
    original += _chat(session, unsaved_turns)
    original.append(session.append({"role": "user", "text": "last"}).node_id)
    through = min(through, len(original) - 1)
    summary = session.compact(original[through], {"n": through})
    compacted = [summary.node_id, *original[through + 1 :]]
    assert _memory_path(session) == compacted
    if save_between:
        session.save()
        assert _stored_path(store, session.session_id) == compacted
        if park_between:
            session = driver.resume(session.park())
            assert _memory_path(session) == compacted
    session.uncompact(summary.node_id)
    assert _memory_path(session) == original
    session.save()
    assert _stored_path(store, session.session_id) == original
    session = driver.resume(session.park())
    assert _memory_path(session) == original


@pytest.mark.parametrize("residency", RESIDENCIES)
def test_a_branch_back_onto_an_undone_summary_pins_its_history_again(residency: Residency) -> None:
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY, residency=residency)
    original = _chat(session, 3)
    summary = session.compact(original[3], "the start")
    session.save()
    session.uncompact(summary.node_id)
    session.save()
    full = store.load_graph(session.session_id, FullGraph())
    assert full is not None and full.pinned == ()
    session.branch(summary.node_id)  # the compacted path, once more
    session.save()
    full = store.load_graph(session.session_id, FullGraph())
    assert full is not None and full.pinned == (original[3],)
    # The summary alone is the path now (the tail went back under the
    # originals): prune hides that old tail, never what the summary replaced.
    assert _stored_path(store, session.session_id) == [summary.node_id]
    assert session.tombstone_orphans() == 2
    for node_id in original[:4]:
        assert session.load_node(node_id) is not None


@pytest.mark.parametrize("residency", RESIDENCIES)
def test_an_append_under_an_undone_summary_pins_its_history_again(residency: Residency) -> None:
    # As a branch back does: the appended node puts the summary at the root
    # of the active path again (found by the machine's stateful test).
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY, residency=residency)
    original = _chat(session, 1)
    summary = session.compact(original[-1], "the start")
    session.uncompact(summary.node_id)
    child = SessionNode("child", summary.node_id, NodeKind.MESSAGE, {"n": 1}, None, 0.0)
    session.append_nodes([child])
    session.save()
    full = store.load_graph(session.session_id, FullGraph())
    assert full is not None and full.pinned == (original[-1],)
    assert _stored_path(store, session.session_id) == [summary.node_id, "child"]
    # An append at the leaf beneath it changes nothing more.
    session.append({"n": 2})
    session.save()
    full = store.load_graph(session.session_id, FullGraph())
    assert full is not None and full.pinned == (original[-1],)


def test_undoing_a_stale_summary_keeps_the_pin_of_the_one_in_effect() -> None:
    store = MemoryStore()
    driver = Driver(store)
    session = driver.open(POLICY)
    original = _chat(session, 2)
    stale = session.compact(original[-1], "first try")
    session.branch(original[-1])
    current = session.compact(original[-1], "second try")
    session.uncompact(stale.node_id)  # the first summary, now off the path
    session.save()
    full = store.load_graph(session.session_id, FullGraph())
    assert full is not None and full.pinned == (original[-1],)
    assert _stored_path(store, session.session_id) == [current.node_id]


@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_node_moved_and_pinned_in_one_commit_keeps_both(open_store: StoreFactory) -> None:
    # Compacting twice before a save: the first compaction moves the stored
    # node `second` under its summary, the second pins it (it is what the
    # second summary replaced). One commit writes both changes to one row.
    store = open_store()
    driver = Driver(store)
    session = driver.open(POLICY)
    first = session.append({"n": 1}).node_id
    second = session.append({"n": 2}).node_id
    session.save()
    session.compact(first, "the first")
    outer = session.compact(second, "the first two")
    session.save()
    full = store.load_graph(session.session_id, FullGraph())
    assert full is not None and set(full.pinned) == {first, second}
    assert _stored_path(store, session.session_id) == [outer.node_id]


@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_copy_after_a_branch_back_under_a_summary_holds_the_summary(
    open_store: StoreFactory,
) -> None:
    # The compaction moves the kept node under its summary, a later row: a
    # path hint cut at a node below the summary (a branch back) lists rows
    # up to that node's seq, so it misses the summary. A fork copied what
    # the hint listed, without the summary at the root.
    store = open_store()
    driver = Driver(store)
    session = driver.open(POLICY)
    original = _chat(session, 2)
    session.save()
    summary = session.compact(original[0], "the first question")
    session.save()
    session.append({"text": "more"})
    session.save()  # a hint worked out from the stored graph
    session.branch(original[2])
    session.append({"text": "again"})
    session.save()  # that hint cut at original[2]
    path = _stored_path(store, session.session_id)
    assert path[0] == summary.node_id
    copy = driver.resume(session.fork())
    assert _stored_path(store, copy.session_id) == path
    stored = store.load_graph(copy.session_id, FullGraph())
    assert stored is not None and [n.node_id for n in stored.nodes] == path
    driver.close()
