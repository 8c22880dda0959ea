"""A rule-based test: random event sequences through ``step``, with store
effects carried out against the reference MemoryStore (and, now and then, a
rival writer or a failing store). Invariants are checked after every step."""

from __future__ import annotations

import copy
from collections import deque
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from machine_helpers import POLICY

from lash_machine import (
    ErrorCode,
    LashMachineError,
    MachineState,
    ModelSpecMissing,
    NodeKind,
    Phase,
    ProtocolError,
    Residency,
    SessionNode,
    step,
    wire,
)
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.checks import OPENAI_TOOL_CALLS
from lash_machine.compaction import read_summary
from lash_machine.drivers.store_effects import carry_out
from lash_machine.persisted import FullGraph, GraphDelta, SessionCommit
from lash_machine.stores.memory import MemoryStore
from lash_machine.testing.healing import graph_problems
from lash_machine.testing.strategies import events as any_event

STORE_REQUESTS = (
    fx.LoadGraph,
    fx.LoadNode,
    fx.Commit,
    fx.TombstoneNodes,
    fx.RecordAttachmentIntent,
)


def through_the_wire(state: MachineState) -> MachineState:
    """The state as another process would get it: the machine goes on from
    the decoded copy, which must equal the original field for field."""
    decoded = wire.loads(wire.dumps(state), MachineState)
    assert decoded == state, "the machine state did not survive the wire"
    return decoded


class Lifecycle(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.store = MemoryStore()
        self.state = MachineState.initial()
        self.counter = 0
        self.fail_next = False
        self.acked: dict[str, set[str]] = {}  # session -> node ids the store acknowledged
        self.last_effects: list[fx.Effect] = []

    # ---- carrying effects out ------------------------------------------------

    def _carry_out(self, effect: fx.Effect) -> ev.Event | None:
        if not isinstance(effect, STORE_REQUESTS):
            return None
        if self.fail_next:
            self.fail_next = False
            return ev.EffectFailed(effect.request_id, ErrorCode.STORE_ERROR, "injected failure")
        # As a driver would: a refusal of the store (a conflict, the stored
        # leaf asked to be tombstoned, ...) comes back as a result event.
        result = carry_out(self.store, effect).result
        if isinstance(effect, fx.Commit) and isinstance(result, ev.Committed):
            self.acked.setdefault(effect.commit.session_id, set()).update(
                n.node_id for n in effect.commit.delta.appended
            )
        if isinstance(effect, fx.TombstoneNodes) and isinstance(result, ev.Tombstoned):
            self.acked.get(effect.session_id, set()).difference_update(effect.node_ids)
        return result

    def feed(self, event: Any) -> None:
        # Compared directly, not through the wire: a field the encoder
        # dropped would look unchanged in its encoding.
        before = copy.deepcopy(self.state)
        try:
            state, effects = step(self.state, event)
        except (ProtocolError, ModelSpecMissing):
            assert self.state == before, "a refused event changed the state"
            return
        assert self.state == before, "step mutated its input"
        self._check_effects(state, effects)
        self.state = through_the_wire(state)
        queue = deque(effects)
        while queue:
            result = self._carry_out(queue.popleft())
            if result is not None:
                state, more = step(self.state, result)
                self._check_effects(state, more)
                self.state = through_the_wire(state)
                queue.extend(more)

    def _check_effects(self, state: MachineState, effects: list[fx.Effect]) -> None:
        self.last_effects = effects
        for effect in effects:
            if isinstance(effect, STORE_REQUESTS):
                assert effect.request_id in state.outstanding, (
                    f"{effect} has no outstanding request"
                )
            if isinstance(effect, fx.Commit):
                # Rule 4: a commit rewrites parents of resident nodes only,
                # and each to the parent the resident node has.
                assert state.session is not None
                graph = state.session.graph
                for repair in effect.commit.delta.reparented:
                    node = graph.get(repair.node_id)
                    assert node is not None, f"{repair} names a node that is not resident"
                    assert node.parent_id == repair.parent_id, f"{repair} is not what memory holds"

    def fresh(self) -> str:
        self.counter += 1
        return f"n{self.counter}"

    @property
    def acknowledged(self) -> set[str]:
        """Acknowledged node ids of the session in memory (or parked)."""
        held = self.state.session or self.state.parked
        return set() if held is None else self.acked.get(held.session_id, set())

    def resident(self) -> list[str]:
        return [] if self.state.session is None else [n.node_id for n in self.state.session.graph]

    # ---- rules -------------------------------------------------------------------

    @precondition(lambda self: self.state.phase is Phase.CLOSED)
    @rule(residency=st.sampled_from(Residency), persistent=st.booleans())
    def open(self, residency: Residency, persistent: bool) -> None:
        self.feed(ev.Open(POLICY, 1.0, "s1", residency=residency, persistent=persistent))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(data=st.data(), count=st.integers(1, 3), kind=st.sampled_from(NodeKind))
    def append(self, data: st.DataObject, count: int, kind: NodeKind) -> None:
        session = self.state.session
        assert session is not None
        parent = data.draw(st.sampled_from([session.graph.leaf_id, *self.resident()]))
        nodes = []
        for _ in range(count):
            node_id = self.fresh()
            nodes.append(SessionNode(node_id, parent, kind, {"i": node_id}, None, 2.0))
            parent = node_id
        self.feed(ev.Append(tuple(nodes)))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(calls=st.integers(1, 2))
    def tool_call(self, calls: int) -> None:
        """The model asks for tools; nobody answers (until a repair does)."""
        session = self.state.session
        assert session is not None
        node_id = self.fresh()
        asked = [{"id": f"{node_id}-{i}", "function": {"name": "t"}} for i in range(calls)]
        body = {"role": "assistant", "tool_calls": asked}
        node = SessionNode(node_id, session.graph.leaf_id, NodeKind.MESSAGE, body, None, 2.0)
        self.feed(ev.Append((node,)))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule()
    def repair(self) -> None:
        session = self.state.session
        assert session is not None
        additions = OPENAI_TOOL_CALLS.repairs(session.graph.active_path())
        if not additions:
            return
        before = {n.node_id: n for n in session.graph}
        node_ids = tuple(self.fresh() for _ in additions)
        self.feed(ev.Repair(OPENAI_TOOL_CALLS.name, additions, node_ids, 3.0))
        after = self.state.session
        assert after is not None
        if after.in_doubt is None:
            assert OPENAI_TOOL_CALLS.problems(after.graph.active_path()) == ()
            # Only appended: every node there before is there unchanged.
            assert all(after.graph.get(k) == n for k, n in before.items())

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(data=st.data())
    def branch(self, data: st.DataObject) -> None:
        choices = self.resident() + sorted(self.acknowledged) + ["unknown"]
        self.feed(ev.BranchTo(data.draw(st.sampled_from(choices))))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(fail=st.booleans())
    def save(self, fail: bool) -> None:
        self.fail_next = fail
        self.feed(ev.Save())
        self.fail_next = False

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule()
    def park(self) -> None:
        self.feed(ev.Park())

    @precondition(lambda self: self.state.phase in (Phase.PARKED, Phase.CLOSED))
    @rule(residency=st.none() | st.sampled_from(Residency), fail=st.booleans())
    def resume(self, residency: Residency | None, fail: bool) -> None:
        if self.state.parked is None:
            return
        self.fail_next = fail
        self.feed(ev.Resume(self.state.parked, 3.0, residency))
        self.fail_next = False

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(data=st.data())
    def load_node(self, data: st.DataObject) -> None:
        choices = self.resident() + sorted(self.acknowledged) + ["unknown"]
        self.feed(ev.LoadNode(data.draw(st.sampled_from(choices))))
        reply = [e for e in self.last_effects if isinstance(e, fx.ReplyNode)]
        if reply and self.state.persistent and reply[0].node_id in self.acknowledged:
            assert reply[0].node is not None, "an acknowledged node could not be loaded"

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        session = self.state.session
        assert session is not None
        path = [node.node_id for node in session.graph.active_path()]
        through = data.draw(st.sampled_from([*path, "unknown"]))
        self.feed(ev.Compact(through, {"through": through}, self.fresh(), 5.0))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(data=st.data())
    def uncompact(self, data: st.DataObject) -> None:
        session = self.state.session
        assert session is not None
        summaries = [n.node_id for n in session.graph if n.kind is NodeKind.SUMMARY]
        choices = summaries + sorted(self.acknowledged) + ["unknown"]
        self.feed(ev.Uncompact(data.draw(st.sampled_from(choices))))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule()
    def orphans(self) -> None:
        self.feed(ev.ListOrphans())

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(data=st.data())
    def tombstone(self, data: st.DataObject) -> None:
        session = self.state.session
        assert session is not None
        orphans = [i for i in session.graph.orphan_ids() if i in self.acknowledged]
        if orphans:
            self.feed(ev.Tombstone((data.draw(st.sampled_from(orphans)),)))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule(offset=st.integers(-1, 1))
    def tool_state(self, offset: int) -> None:
        session = self.state.session
        assert session is not None
        current = session.tool_snapshot.generation if session.tool_snapshot else 0
        self.feed(ev.ApplyToolState(current + offset, {"g": current}))

    @precondition(lambda self: self.state.phase is Phase.ACTIVE)
    @rule()
    def attachment(self) -> None:
        self.feed(ev.RecordAttachment(self.fresh(), "mem://x", 4.0))

    @precondition(lambda self: self.state.phase in (Phase.ACTIVE, Phase.PARKED))
    @rule(discard=st.booleans())
    def close(self, discard: bool) -> None:
        self.feed(ev.Close(discard))

    @rule()
    def rival_writer_commits(self) -> None:
        """Another worker advances the stored session: our next commit conflicts."""
        stored = self.store.load_graph("s1", FullGraph())
        if stored is None:
            return
        commit = SessionCommit(
            "s1",
            stored.head_revision,
            stored.policy,
            stored.frames,
            stored.current_frame_id,
            GraphDelta(stored.leaf_id),
        )
        self.store.commit(commit)

    @rule(event=any_event())
    def arbitrary_event(self, event: Any) -> None:
        decoded = wire.loads(wire.dumps(event))
        assert decoded == event, "an event did not survive the wire"
        self.feed(decoded)

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def phase_matches_contents(self) -> None:
        state = self.state
        if state.phase in (Phase.ACTIVE, Phase.COMMITTING):
            assert state.session is not None
        else:
            assert state.session is None
        assert (state.phase is Phase.PARKED) == (state.parked is not None)
        assert (state.phase is Phase.OPENING) == (state.opening is not None)
        assert all(rid < state.next_request_id for rid in state.outstanding)

    @invariant()
    def graph_is_healed_and_accounted(self) -> None:
        session = self.state.session
        if session is None:
            return
        assert graph_problems(session.graph) == []
        assert 0 <= session.saved_nodes <= len(session.graph)
        path = session.graph.active_path()
        if session.graph.leaf_id is not None:
            assert path and path[-1].node_id == session.graph.leaf_id

    @invariant()
    def a_clean_session_is_what_is_stored(self) -> None:
        """With nothing left to commit, the active path in memory is the
        stored one, node for node (a compaction, a branch or a repair the
        commit failed to write would show here)."""
        session = self.state.session
        if session is None or session.dirty or not self.state.persistent:
            return
        stored = self.store.load_graph(session.session_id, FullGraph())
        if stored is None or stored.head_revision != session.head_revision:
            return
        by_id = {node.node_id: node for node in stored.nodes}
        path: list[SessionNode] = []
        current = stored.leaf_id
        while current is not None and current in by_id and len(path) <= len(by_id):
            path.append(by_id[current])
            current = by_id[current].parent_id
        assert tuple(reversed(path)) == session.graph.active_path()

    @invariant()
    def compacted_history_is_kept(self) -> None:
        """What a committed summary on the stored active path replaced is
        still stored and pinned, so nothing can prune it."""
        stored = self.store.load_graph("s1", FullGraph())
        if stored is None:
            return
        by_id = {node.node_id: node for node in stored.nodes}
        current = stored.leaf_id
        seen: set[str] = set()
        while current is not None and current in by_id and current not in seen:
            seen.add(current)
            node = by_id[current]
            summary = read_summary(node)
            if summary is not None:
                assert summary.through in by_id, f"{summary} lost what it replaced"
                assert summary.through in stored.pinned, f"{summary} left it unpinned"
            current = node.parent_id

    @invariant()
    def parked_handle_is_small(self) -> None:
        if self.state.parked is not None:
            assert len(wire.dumps(self.state.parked)) < 400

    @invariant()
    def nothing_acknowledged_is_lost(self) -> None:
        for session_id, acknowledged in self.acked.items():
            stored = self.store.load_graph(session_id, FullGraph())
            stored_ids = set() if stored is None else {n.node_id for n in stored.nodes}
            assert acknowledged <= stored_ids


TestLifecycle = Lifecycle.TestCase
TestLifecycle.settings = settings(
    settings.default,
    max_examples=min(settings.default.max_examples, 150),
    stateful_step_count=30,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def test_lash_machine_error_is_the_base() -> None:
    assert issubclass(ProtocolError, LashMachineError)


def test_a_store_refusal_reaches_the_machine_as_a_failed_reply() -> None:
    """Found by the rule-based test: an orphan of the session in memory can
    still be the stored leaf (the new branch is not saved yet); the store
    refuses to tombstone it, and the harness feeds that back as a driver
    would, instead of raising out of the test."""
    lifecycle = Lifecycle()
    lifecycle.feed(ev.Open(POLICY, 1.0, "s1"))
    for node_id, parent in (("n1", None), ("n2", "n1")):
        lifecycle.feed(ev.Append((SessionNode(node_id, parent, NodeKind.MESSAGE, {}, None, 2.0),)))
    lifecycle.feed(ev.Park())
    assert lifecycle.state.parked is not None
    lifecycle.feed(ev.Resume(lifecycle.state.parked, 3.0))
    lifecycle.feed(ev.Append((SessionNode("n3", "n1", NodeKind.MESSAGE, {}, None, 4.0),)))
    lifecycle.feed(ev.Tombstone(("n2",)))
    [reply] = lifecycle.last_effects
    assert isinstance(reply, fx.ReplyFailed) and reply.error == "tombstone_refused"
    lifecycle.nothing_acknowledged_is_lost()
