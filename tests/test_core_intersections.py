"""The machine where its features meet: a committed handle whose session is
gone, content that cannot be stored, residency after a commit, a repair of
a node tombstoned meanwhile, retried parks and closes, orphans tombstoned
around uncommitted nodes, and commits whose outcome is unknown."""

from __future__ import annotations

import datetime
import math
from typing import Any

import attrs
import pytest
from machine_helpers import POLICY, active, node, parked, request_of, run

from lash_machine import (
    ErrorCode,
    InvalidEvent,
    MachineState,
    NodeKind,
    ParkedSession,
    Phase,
    Residency,
    ResidencyRequiresStore,
    SessionNode,
    step,
)
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.content import MAX_ID_LENGTH
from lash_machine.persisted import FullGraph, Reparent, StoredSession


def _body_node(body: Any, **changes: Any) -> SessionNode:
    return attrs.evolve(SessionNode("z", "b", NodeKind.MESSAGE, body, None, 2.0), **changes)


# ---- a committed handle whose session is not in the store ------------------------


@pytest.mark.parametrize("start", ["parked", "closed"])
def test_resuming_a_committed_handle_of_a_missing_session_fails_and_creates_nothing(
    start: str,
) -> None:
    state = parked() if start == "parked" else MachineState.initial()
    handle = ParkedSession("s1", POLICY, 2, Residency.ACTIVE_PATH_ONLY)
    state, out = run(state, ev.Resume(handle, 3.0))
    load = request_of(out, fx.LoadGraph)
    after, out = step(state, ev.GraphLoaded(load.request_id, None))
    failed = request_of(out, fx.ReplyFailed)
    assert failed.error is ErrorCode.SESSION_NOT_FOUND
    assert after.phase is (Phase.PARKED if start == "parked" else Phase.CLOSED)
    assert after.session is None
    assert not any(isinstance(e, fx.ReplyReady | fx.Commit) for e in out)


def test_resuming_a_handle_that_was_never_committed_still_starts_afresh() -> None:
    handle = ParkedSession("s1", POLICY, None, Residency.KEEP_ALL)
    state, out = run(MachineState.initial(), ev.Resume(handle, 3.0))
    state, out = step(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, None))
    assert state.phase is Phase.ACTIVE and state.session is not None


# ---- what a session may hold -----------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "named"),
    [
        (_body_node({1: "a"}), "int key"),
        (_body_node({"at": datetime.datetime(2026, 1, 1)}), "datetime"),
        (_body_node({"x": b"bytes"}), "bytes"),
        (_body_node({"x": {1, 2}}), "set"),
        (_body_node({"x": (1, 2)}), "tuple"),
        (_body_node({"x": math.nan}), "nan"),
        (_body_node({"x": [math.inf]}), "inf"),
        (_body_node({}, kind="tool"), "unknown node kind"),
        (_body_node({}, created_at=math.nan), "created_at"),
        (_body_node({}, created_at=math.inf), "created_at"),
        (_body_node({}, node_id="x" * (MAX_ID_LENGTH + 1)), "limit"),
        (_body_node({}, node_id=""), "empty"),
        (_body_node({}, node_id=7), "text"),
    ],
)
def test_append_refuses_what_no_store_can_hold_and_changes_nothing(
    bad: SessionNode, named: str
) -> None:
    state = active()
    with pytest.raises(InvalidEvent, match=named):
        step(state, ev.Append((node("ok", "b"), bad)))
    # The good edits before it are still there to save.
    state, out = run(state, ev.Append((node("ok", "b"),)), ev.Save())
    assert [n.node_id for n in request_of(out, fx.Commit).commit.delta.appended] == ["ok"]


def test_a_kind_given_as_text_is_stored_as_the_kind() -> None:
    state, _ = run(active(), ev.Append((_body_node({}, kind="event"),)))
    assert state.session is not None
    stored = state.session.graph.get("z")
    assert stored is not None and stored.kind is NodeKind.EVENT


@pytest.mark.parametrize(
    "command",
    [
        ev.SetCheckpoint({"when": datetime.date(2026, 1, 1)}),
        ev.RecordPluginState({"n": math.inf}),
        ev.ApplyToolState(0, {1: "a"}),
        ev.RecordAttachment("a" * (MAX_ID_LENGTH + 1), "file:///x", 1.0),
        ev.RecordAttachment("att", "file:///x", math.nan),
    ],
)
def test_snapshots_checkpoints_and_attachments_are_checked_too(command: Any) -> None:
    with pytest.raises(InvalidEvent):
        step(active(), command)


@pytest.mark.parametrize(
    "command",
    [
        ev.Open(POLICY, 1.0, session_id="s" * (MAX_ID_LENGTH + 1)),
        ev.Open(POLICY, math.inf, session_id="s1"),
        ev.Resume(ParkedSession("s1", POLICY, 1, Residency.KEEP_ALL), math.nan),
    ],
)
def test_open_and_resume_check_their_ids_and_times(command: Any) -> None:
    with pytest.raises(InvalidEvent):
        step(MachineState.initial(), command)


def test_restore_checks_what_its_next_commit_would_write() -> None:
    session = active().session
    assert session is not None
    bad = SessionNode("z", "b", NodeKind.MESSAGE, {"x": {1}}, None, 1.0)
    graph = session.graph.append(bad)
    with pytest.raises(InvalidEvent, match="set"):
        step(MachineState.initial(), ev.Restore(attrs.evolve(session, graph=graph), POLICY, 1.0))


def test_restore_without_a_store_refuses_active_path_only() -> None:
    session = active().session
    assert session is not None
    with pytest.raises(ResidencyRequiresStore):
        step(
            MachineState.initial(),
            ev.Restore(
                session, POLICY, 1.0, residency=Residency.ACTIVE_PATH_ONLY, persistent=False
            ),
        )


# ---- residency after a commit -------------------------------------------------------------


def _lean(nodes: int) -> MachineState:
    """An ACTIVE_PATH_ONLY session whose stored path is a chain of ``nodes``."""
    chain = [node("n0", None)] + [node(f"n{i}", f"n{i - 1}") for i in range(1, nodes)]
    read = StoredSession("s1", 1, POLICY, (), "", tuple(chain), chain[-1].node_id)
    state, out = run(
        MachineState.initial(),
        ev.Open(POLICY, 1.0, session_id="s1", residency=Residency.ACTIVE_PATH_ONLY),
    )
    state, _ = step(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, read))
    return state


def test_active_path_only_trims_what_left_the_path_once_it_is_committed() -> None:
    state = _lean(50)
    state, out = run(state, ev.BranchTo("n0"), ev.Append((node("x", "n0"),)), ev.Save())
    assert state.session is not None and len(state.session.graph) == 51  # uncommitted: all stay
    state, _ = step(state, ev.Committed(request_of(out, fx.Commit).request_id, 2))
    assert state.session is not None
    assert [n.node_id for n in state.session.graph] == ["n0", "x"]
    assert state.session.saved_nodes == 2
    # Branching again and again stays within the path.
    state, out = run(state, ev.BranchTo("n0"), ev.Append((node("y", "n0"),)), ev.Save())
    state, _ = step(state, ev.Committed(request_of(out, fx.Commit).request_id, 3))
    assert state.session is not None
    assert [n.node_id for n in state.session.graph] == ["n0", "y"]


def test_keep_all_keeps_every_node_after_a_commit() -> None:
    state, out = run(active(), ev.BranchTo("a"), ev.Append((node("x", "a"),)), ev.Save())
    state, _ = step(state, ev.Committed(request_of(out, fx.Commit).request_id, 2))
    assert state.session is not None and len(state.session.graph) == 4


# ---- a repair of a node tombstoned meanwhile ----------------------------------------------


def test_a_repair_does_not_outlive_its_node_s_tombstone() -> None:
    # o's parent is gone in the store: healing cuts it, to be written by the next commit.
    nodes = (node("a", None), node("b", "a"), SessionNode("o", "gone", NodeKind.EVENT, {}, None, 1))
    read = StoredSession("s1", 1, POLICY, (), "", nodes, "b")
    state, out = run(MachineState.initial(), ev.Open(POLICY, 1.0, session_id="s1"))
    state, out = step(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, read))
    assert state.session is not None and state.session.repairs == (Reparent("o", None),)
    state, out = run(state, ev.Tombstone(("o",)))
    state, _ = step(state, ev.Tombstoned(request_of(out, fx.TombstoneNodes).request_id, 1))
    state, out = run(state, ev.Append((node("c", "b"),)), ev.Save())
    assert request_of(out, fx.Commit).commit.delta.reparented == ()


# ---- retried parks and closes ---------------------------------------------------------------


def test_park_on_a_parked_session_answers_its_handle_again() -> None:
    state = parked()
    again, out = step(state, ev.Park())
    assert again is state
    assert out == [fx.ReplyParked(state.parked)]  # type: ignore[arg-type]


def test_close_on_a_closed_machine_does_nothing() -> None:
    state = MachineState.initial()
    again, out = step(state, ev.Close())
    assert again is state and isinstance(out[0], fx.ReplyClosed)


# ---- tombstoning orphans, as one command -----------------------------------------------------


def test_tombstone_orphans_keeps_uncommitted_nodes_and_their_ancestors() -> None:
    # active(): a-b committed on the path, c an orphan under a. Hang an
    # uncommitted d under c, then go back to b.
    state, _ = run(active(), ev.BranchTo("c"), ev.Append((node("d", "c"),)), ev.BranchTo("b"))
    state, out = run(state, ev.TombstoneOrphans())
    load = request_of(out, fx.LoadGraph)
    session = state.session
    assert session is not None
    stored_nodes = (*session.graph.nodes[: session.saved_nodes], node("e", "a"), node("f", "e"))
    read = StoredSession("s1", 1, POLICY, (), "", stored_nodes, "b")
    state, out = step(state, ev.GraphLoaded(load.request_id, read))
    tombstone = request_of(out, fx.TombstoneNodes)
    assert tombstone.node_ids == ("e", "f")  # c stays: the uncommitted d hangs under it


def test_tombstone_orphans_with_nothing_to_hide_answers_at_once() -> None:
    state, out = run(active(), ev.BranchTo("c"), ev.Append((node("d", "c"),)))
    state, out = run(state, ev.BranchTo("b"), ev.TombstoneOrphans())
    read = StoredSession("s1", 1, POLICY, (), "", (node("a", None), node("b", "a")), "b")
    state, out = step(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, read))
    assert out == [fx.ReplyTombstoned(0)]


# ---- commits whose outcome is unknown ---------------------------------------------------------


def _writer_session() -> MachineState:
    state, out = run(MachineState.initial(), ev.Open(POLICY, 1.0, session_id="s1", writer="w"))
    state, _ = step(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, None))
    state, _ = run(state, ev.Append((node("a", None),)))
    return state


def _unknown(request_id: int) -> ev.EffectFailed:
    return ev.EffectFailed(request_id, ErrorCode.COMMIT_OUTCOME_UNKNOWN, "connection lost")


def test_a_commit_whose_outcome_is_unknown_is_sent_again_once_with_its_id() -> None:
    state, out = run(_writer_session(), ev.Save())
    first = request_of(out, fx.Commit)
    assert first.commit.commit_id is not None and first.commit.commit_id.startswith("w:")
    state, out = step(state, _unknown(first.request_id))
    again = request_of(out, fx.Commit)
    assert again.request_id != first.request_id
    assert again.commit == first.commit  # the same commit, the same id
    assert state.phase is Phase.COMMITTING
    state, out = step(state, ev.Committed(again.request_id, 1))
    assert out[-1] == fx.ReplySaved(1)
    assert state.session is not None and state.session.in_doubt is None


def test_a_commit_in_doubt_holds_edits_until_a_save_settles_it() -> None:
    state, out = run(_writer_session(), ev.Save())
    first = request_of(out, fx.Commit)
    state, out = step(state, _unknown(first.request_id))
    state, out = step(state, _unknown(request_of(out, fx.Commit).request_id))
    failed = request_of(out, fx.ReplyFailed)
    assert failed.error is ErrorCode.COMMIT_OUTCOME_UNKNOWN and state.phase is Phase.ACTIVE
    for edit in (ev.Append((node("b", "a"),)), ev.BranchTo("a"), ev.SetCheckpoint(1)):
        with pytest.raises(InvalidEvent, match="settle"):
            step(state, edit)
    with pytest.raises(InvalidEvent, match="uncommitted"):
        step(state, ev.Close())
    state, out = run(state, ev.Save())
    settle = request_of(out, fx.Commit)
    assert settle.commit == first.commit
    state, out = step(state, ev.Committed(settle.request_id, 1))
    state, out = run(state, ev.Append((node("b", "a"),)), ev.Save())
    assert request_of(out, fx.Commit).commit.commit_id != first.commit.commit_id


def test_commit_ids_differ_between_writers_and_between_commits() -> None:
    ids = set()
    for writer in ("w1", "w2"):
        state, out = run(MachineState.initial(), ev.Open(POLICY, 1.0, "s1", writer=writer))
        state, _ = step(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, None))
        for name in ("a", "b"):
            parent = None if name == "a" else "a"
            state, out = run(state, ev.Append((node(name, parent),)), ev.Save())
            commit = request_of(out, fx.Commit)
            ids.add(commit.commit.commit_id)
            state, _ = step(state, ev.Committed(commit.request_id, 1 if name == "a" else 2))
    assert len(ids) == 4


def test_without_a_writer_commits_carry_no_id() -> None:
    state, out = run(MachineState.initial(), ev.Open(POLICY, 1.0, session_id="s1"))
    state, _ = step(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, None))
    state, out = run(state, ev.Append((node("a", None),)), ev.Save())
    assert request_of(out, fx.Commit).commit.commit_id is None


def test_a_commit_in_doubt_that_fails_again_otherwise_is_still_in_doubt() -> None:
    state, out = run(_writer_session(), ev.Save())
    first = request_of(out, fx.Commit)
    state, out = step(state, _unknown(first.request_id))
    again = request_of(out, fx.Commit)
    # The transport is broken now: the retry fails at once, as a transport error.
    state, out = step(
        state, ev.EffectFailed(again.request_id, ErrorCode.TRANSPORT_ERROR, "stream broken")
    )
    failed = request_of(out, fx.ReplyFailed)
    assert failed.error is ErrorCode.COMMIT_OUTCOME_UNKNOWN and "stream broken" in failed.message
    assert state.session is not None and state.session.in_doubt == first.commit.commit_id


# ---- a broken stored path under ACTIVE_PATH_ONLY ------------------------------------------


def test_a_branch_onto_a_looping_path_is_healed_as_the_whole_graph_is() -> None:
    """q <-> p loop (q inserted first), t under q: healing the whole graph
    cuts q; a branch to t under ACTIVE_PATH_ONLY must cut q too."""
    stored_nodes = (
        node("r", None),
        SessionNode("q", "p", NodeKind.MESSAGE, {}, None, 1.0),
        SessionNode("p", "q", NodeKind.MESSAGE, {}, None, 1.0),
        node("t", "q"),
    )
    from lash_machine import SessionGraph, heal_graph

    _, full_report = heal_graph(SessionGraph.from_nodes(stored_nodes, "r"))
    assert [cut.node_id for cut in full_report.parents_cut] == ["q"]
    state, out = run(
        MachineState.initial(),
        ev.Open(POLICY, 1.0, session_id="s1", residency=Residency.ACTIVE_PATH_ONLY),
    )
    read = StoredSession("s1", 1, POLICY, (), "", (stored_nodes[0],), "r")
    state, out = step(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, read))
    state, out = run(state, ev.BranchTo("t"))
    load = request_of(out, fx.LoadGraph)
    # The path read from t (walked: t, q, p) does not reach a root.
    path = StoredSession("s1", 1, POLICY, (), "", stored_nodes[1:][::-1], "r")
    state, out = step(state, ev.GraphLoaded(load.request_id, path))
    full = request_of(out, fx.LoadGraph)
    assert isinstance(full.scope, FullGraph)
    state, out = step(
        state, ev.GraphLoaded(full.request_id, attrs.evolve(read, nodes=stored_nodes))
    )
    healed = request_of(out, fx.EmitLifecycle).event.report
    assert [cut.node_id for cut in healed.parents_cut] == ["q"]
    state, out = run(state, ev.Save())
    assert request_of(out, fx.Commit).commit.delta.reparented == (Reparent("q", None),)
