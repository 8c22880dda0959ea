"""Scenarios of the reducer, fed by hand: the state-building order, commit
deltas, conflicts, residency, and refusals."""

from __future__ import annotations

import pytest
from machine_helpers import POLICY, active, node, request_of, run, stored

from lash_machine import (
    ActivePath,
    AgentFrame,
    FullGraph,
    InvalidEvent,
    MachineState,
    ModelSpec,
    ModelSpecMissing,
    Phase,
    PluginSnapshot,
    Reparent,
    Residency,
    ResidencyRequiresStore,
    SessionPolicy,
    StaleResult,
    StoredSession,
    ToolSnapshot,
    step,
)
from lash_machine import effects as fx
from lash_machine import events as ev

BLANK = SessionPolicy(ModelSpec(""))


def read(nodes: list, leaf: str | None, **kw: object) -> StoredSession:  # type: ignore[type-arg]
    fields: dict = {  # type: ignore[type-arg]
        "session_id": "s1",
        "head_revision": 3,
        "policy": POLICY,
        "frames": (),
        "current_frame_id": "",
        "nodes": tuple(nodes),
        "leaf_id": leaf,
    }
    fields.update(kw)
    return StoredSession(**fields)


def open_with(
    stored_session: StoredSession | None,
    residency: Residency = Residency.KEEP_ALL,
    policy: SessionPolicy = POLICY,
):  # type: ignore[no-untyped-def]
    state, out = run(MachineState.initial(), ev.Open(policy, 5.0, "s1", residency=residency))
    load = request_of(out, fx.LoadGraph)
    state, out = step(state, ev.GraphLoaded(load.request_id, stored_session))
    return state, out


def test_in_memory_session_opens_at_once_with_an_initial_frame() -> None:
    state, out = step(
        MachineState.initial(), ev.Open(POLICY, 5.0, fresh_id="new", persistent=False)
    )
    assert state.phase is Phase.ACTIVE
    assert state.session is not None
    assert state.session.current_frame_id == "new:frame:initial"
    assert state.session.current_frame.policy == POLICY
    assert [type(e) for e in out] == [fx.EmitLifecycle, fx.ReplyReady]
    assert isinstance(out[0], fx.EmitLifecycle) and isinstance(out[0].event, fx.SessionOpened)


def test_active_path_only_without_a_store_is_refused() -> None:
    with pytest.raises(ResidencyRequiresStore):
        step(
            MachineState.initial(),
            ev.Open(POLICY, 1.0, "s", residency=Residency.ACTIVE_PATH_ONLY, persistent=False),
        )


def test_blank_model_is_refused_for_a_fresh_in_memory_session() -> None:
    with pytest.raises(ModelSpecMissing):
        step(MachineState.initial(), ev.Open(BLANK, 1.0, "s", persistent=False))


def test_blank_model_on_load_fails_the_open_and_returns_to_closed() -> None:
    state, out = open_with(read([], None, policy=BLANK), policy=BLANK)
    assert state.phase is Phase.CLOSED
    failed = request_of(out, fx.ReplyFailed)
    assert failed.error == "model_spec_missing"


def test_unconfigured_stored_policy_takes_the_callers_and_frames_follow() -> None:
    frame = AgentFrame("f", None, "initial", BLANK, 0.0)
    state, _ = open_with(read([], None, policy=BLANK, frames=(frame,), current_frame_id="f"))
    assert state.session is not None
    assert state.session.policy == POLICY
    assert state.session.current_frame.policy == POLICY


def test_stored_frame_policy_is_the_effective_policy() -> None:
    other = SessionPolicy(ModelSpec("frame-model"), "p")
    frame = AgentFrame("f", None, "sub-agent", other, 0.0)
    state, _ = open_with(read([], None, frames=(frame,), current_frame_id="f"))
    assert state.session is not None and state.session.policy == other


def test_restore_effects_come_in_order_and_adopt_the_tool_generation() -> None:
    tools = ToolSnapshot(7, {"t": 1})
    plugins = PluginSnapshot(2, {"p": 1})
    state, out = open_with(
        read([node("a", None)], "a", tool_snapshot=tools, plugin_snapshot=plugins)
    )
    kinds = [type(e) for e in out]
    assert kinds == [fx.RestoreToolSurface, fx.RestorePlugins, fx.EmitLifecycle, fx.ReplyReady]
    assert out[0] == fx.RestoreToolSurface("s1", tools)
    # The next delta must be based on the adopted generation.
    with pytest.raises(InvalidEvent, match="generation 7"):
        step(state, ev.ApplyToolState(1, {}))
    state, out = step(state, ev.ApplyToolState(7, {"t": 2}))
    assert state.session is not None and state.session.tool_snapshot == ToolSnapshot(8, {"t": 2})


def test_heal_then_trim_under_active_path_only_with_full_load_fallback() -> None:
    # Leaf c's path is broken in the path read (b is missing) -> full load.
    state, out = run(
        MachineState.initial(), ev.Open(POLICY, 1.0, "s1", residency=Residency.ACTIVE_PATH_ONLY)
    )
    first = request_of(out, fx.LoadGraph)
    assert first.scope == ActivePath(None)
    state, out = step(state, ev.GraphLoaded(first.request_id, read([node("c", "b")], "c")))
    second = request_of(out, fx.LoadGraph)
    assert second.scope == FullGraph() and state.phase is Phase.OPENING
    full = [node("a", None), node("b", "gone"), node("c", "b"), node("x", "a")]
    state, out = step(state, ev.GraphLoaded(second.request_id, read(full, "c")))
    assert state.phase is Phase.ACTIVE and state.session is not None
    assert [n.node_id for n in state.session.graph] == ["b", "c"]  # x and a trimmed
    assert state.session.repairs == (Reparent("b", None),)
    healed = [
        e for e in out if isinstance(e, fx.EmitLifecycle) and isinstance(e.event, fx.SessionHealed)
    ]
    assert healed and healed[0].event.report.parents_cut[0].node_id == "b"  # type: ignore[union-attr]
    # The repair is committed, and only for the resident node.
    state, out = step(state, ev.Save())
    commit = request_of(out, fx.Commit).commit
    assert commit.delta.kind == "repair"
    assert commit.delta.reparented == (Reparent("b", None),)


def test_active_path_only_keeps_only_the_path() -> None:
    full = [node("a", None), node("b", "a"), node("c", "a")]
    state, out = open_with(read(full, "b"), Residency.ACTIVE_PATH_ONLY)
    # A complete path needs no fallback; whatever else a read holds is trimmed.
    assert state.phase is Phase.ACTIVE and state.session is not None
    assert [n.node_id for n in state.session.graph] == ["a", "b"]
    assert not any(isinstance(e, fx.LoadGraph) for e in out)


def test_commit_deltas_append_only_what_is_new() -> None:
    state = active()
    state, out = run(state, ev.Append((node("d", "b"),)), ev.Save())
    commit = request_of(out, fx.Commit).commit
    assert commit.expected_head == 1
    assert [n.node_id for n in commit.delta.appended] == ["d"]
    assert commit.delta.kind == "append"
    state, _ = step(state, ev.Committed(request_of(out, fx.Commit).request_id, 2))
    state, out = run(state, ev.BranchTo("c"), ev.Save())
    commit = request_of(out, fx.Commit).commit
    assert commit.delta.kind == "unchanged" and commit.delta.leaf_id == "c"


def test_clean_save_and_park_need_no_commit() -> None:
    state = active()
    _, out = step(state, ev.Save())
    assert out == [fx.ReplySaved(1)]
    parked, out = step(state, ev.Park())
    assert parked.phase is Phase.PARKED and parked.session is None
    assert not any(isinstance(e, fx.Commit) for e in out)
    assert parked.parked is not None and parked.parked.head_revision == 1


def test_conflict_keeps_every_edit_and_the_retry_sends_them_again() -> None:
    state, out = run(active(), ev.Append((node("d", "b"), node("e", "d"))), ev.Park())
    first = request_of(out, fx.Commit)
    state, out = step(state, ev.CommitConflicted(first.request_id, 4))
    assert state.phase is Phase.ACTIVE
    failed = request_of(out, fx.ReplyFailed)
    assert failed.error == "head_revision_conflict" and failed.detail["actual"] == 4
    state, out = step(state, ev.Save())
    retry = request_of(out, fx.Commit)
    assert retry.commit.delta == first.commit.delta
    assert retry.request_id != first.request_id


def test_results_for_requests_not_outstanding_are_refused() -> None:
    state, out = run(active(), ev.Append((node("d", "b"),)), ev.Save())
    commit = request_of(out, fx.Commit)
    with pytest.raises(StaleResult):
        step(state, ev.Committed(commit.request_id + 100, 2))  # forged
    done, _ = step(state, ev.Committed(commit.request_id, 2))
    # Duplicated, in a phase that takes a Committed (a second save is in
    # flight): only the outstanding-request check can tell it apart.
    again, out = run(done, ev.Append((node("e", "d"),)), ev.Save())
    assert again.phase is Phase.COMMITTING
    with pytest.raises(StaleResult) as info:
        step(again, ev.Committed(commit.request_id, 2))
    assert info.value.request_id == commit.request_id
    second = request_of(out, fx.Commit)
    settled, _ = step(again, ev.Committed(second.request_id, 3))
    assert settled.session is not None and settled.session.head_revision == 3
    # The same for a node read answered twice while active.
    reading, out = step(settled, ev.LoadNode("gone"))
    load = request_of(out, fx.LoadNode)
    answered, _ = step(reading, ev.LoadNodeResult(load.request_id, None))
    with pytest.raises(StaleResult):
        step(answered, ev.LoadNodeResult(load.request_id, None))
    # A result of the wrong kind for an outstanding id is refused too.
    with pytest.raises(StaleResult):
        step(state, ev.LoadNodeResult(commit.request_id, None))


def test_append_validates_ids_and_parents() -> None:
    state = active()
    with pytest.raises(InvalidEvent, match="already"):
        step(state, ev.Append((node("a", None),)))
    with pytest.raises(InvalidEvent, match="not a resident node"):
        step(state, ev.Append((node("z", "nowhere"),)))
    state, _ = step(state, ev.Append((node("y", "b"), node("z", "y"))))
    assert state.session is not None and state.session.graph.leaf_id == "z"


def test_close_refuses_to_drop_uncommitted_edits_unless_asked() -> None:
    state, _ = step(active(), ev.Append((node("d", "b"),)))
    with pytest.raises(InvalidEvent, match="uncommitted"):
        step(state, ev.Close())
    closed, out = step(state, ev.Close(discard=True))
    assert closed.phase is Phase.CLOSED
    lifecycle = request_of(out, fx.EmitLifecycle).event
    assert lifecycle == fx.SessionClosed("s1", discarded=True)


def test_orphans_union_stored_and_resident_nodes() -> None:
    state, out = run(active(), ev.Append((node("d", "a"),)), ev.BranchTo("b"), ev.ListOrphans())
    load = request_of(out, fx.LoadGraph)
    assert load.scope == FullGraph()
    stored_read = read([node("a", None), node("b", "a"), node("c", "a"), node("old", None)], "b")
    _, out = step(state, ev.GraphLoaded(load.request_id, stored_read))
    assert request_of(out, fx.ReplyOrphans).node_ids == ("c", "old", "d")


def test_tombstone_refuses_path_and_uncommitted_nodes() -> None:
    state, _ = step(active(), ev.Append((node("d", "a"),)))
    with pytest.raises(InvalidEvent, match="active path"):
        step(state, ev.Tombstone(("d",)))
    state, _ = step(state, ev.BranchTo("b"))
    with pytest.raises(InvalidEvent, match="not committed"):
        step(state, ev.Tombstone(("d",)))
    state, _ = step(state, ev.Append((node("e", "d"),)))
    state, out = step(state, ev.Save())
    state, _ = step(state, ev.Committed(request_of(out, fx.Commit).request_id, 2))
    state, _ = step(state, ev.BranchTo("b"))
    with pytest.raises(InvalidEvent, match="would lose its parent"):
        step(state, ev.Tombstone(("d",)))
    state, _ = step(state, ev.Append((node("f", "b"),)))  # stays uncommitted
    state, out = step(state, ev.Tombstone(("c",)))
    request = request_of(out, fx.TombstoneNodes)
    state, out = step(state, ev.Tombstoned(request.request_id, 1))
    assert state.session is not None and "c" not in state.session.graph
    assert [n.node_id for n in state.session.graph] == ["a", "b", "d", "e", "f"]
    assert state.session.saved_nodes == 4
    assert [n.node_id for n in state.session.graph.since(4)] == ["f"]


def test_branch_to_a_non_resident_node_loads_its_path() -> None:
    full = [node("a", None), node("b", "a"), node("c", "a")]
    state, _ = open_with(read(full[:2], "b"), Residency.ACTIVE_PATH_ONLY)
    state, out = step(state, ev.BranchTo("c"))
    load = request_of(out, fx.LoadGraph)
    assert load.scope == ActivePath("c")
    state, out = step(state, ev.GraphLoaded(load.request_id, read([full[0], full[2]], "b")))
    assert state.session is not None
    assert state.session.graph.leaf_id == "c" and "c" in state.session.graph
    assert state.session.saved_nodes == 3
    _, out = step(state, ev.BranchTo("nope"))
    miss = request_of(out, fx.LoadGraph)
    _, out = step(_, ev.GraphLoaded(miss.request_id, read([], "b")))
    assert request_of(out, fx.ReplyFailed).error == "invalid_event"


def test_attachment_intent_comes_first_and_the_next_commit_adopts_it() -> None:
    state, out = step(active(), ev.RecordAttachment("att-1", "s3://bucket/x", 9.0))
    intent = request_of(out, fx.RecordAttachmentIntent)
    assert intent.intent.attachment_id == "att-1" and intent.intent.session_id == "s1"
    with pytest.raises(InvalidEvent, match="outstanding"):
        step(state, ev.Save())  # the intent must be durable first
    state, out = step(state, ev.IntentRecorded(intent.request_id))
    assert request_of(out, fx.ReplyAttachment).attachment_id == "att-1"
    state, out = step(state, ev.Save())
    assert request_of(out, fx.Commit).commit.adopt_attachments == ("att-1",)
    state, _ = step(state, ev.Committed(request_of(out, fx.Commit).request_id, 2))
    assert state.session is not None and state.session.pending_attachments == ()


def test_load_node_answers_resident_nodes_at_once() -> None:
    state = active()
    _, out = step(state, ev.LoadNode("a"))
    assert out == [fx.ReplyNode("a", node("a", None))]
    state, out = step(state, ev.LoadNode("far"))
    request = request_of(out, fx.LoadNode)
    with pytest.raises(InvalidEvent, match="asked for node"):
        step(state, ev.LoadNodeResult(request.request_id, node("other", None)))
    _, out = step(state, ev.LoadNodeResult(request.request_id, node("far", None)))
    assert out == [fx.ReplyNode("far", node("far", None))]


def test_failed_load_returns_a_resume_to_parked_with_the_handle() -> None:
    from machine_helpers import parked

    state = parked()
    handle = state.parked
    assert handle is not None
    state, out = step(state, ev.Resume(handle, 9.0))
    load = request_of(out, fx.LoadGraph)
    state, out = step(state, ev.EffectFailed(load.request_id, "store_error", "down"))
    assert state.phase is Phase.PARKED and state.parked == handle
    assert request_of(out, fx.ReplyFailed).message == "down"


def test_restore_from_state_in_hand_needs_no_store_read() -> None:
    session = active().session
    assert session is not None
    state, out = step(MachineState.initial(), ev.Restore(session, POLICY, 2.0))
    assert state.phase is Phase.ACTIVE
    assert not any(isinstance(e, fx.LoadGraph) for e in out)
    assert isinstance(request_of(out, fx.EmitLifecycle).event, fx.SessionRestored)
    assert stored(state).nodes == stored(active()).nodes
