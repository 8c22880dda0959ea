"""Hypothesis strategies for session data, events, effects and states.

Public API: use them to test your own hosts, stores and transports, e.g.
``@given(corrupt_graphs())`` with
:func:`lash_machine.testing.healing.check_healing`.
"""

from __future__ import annotations

from typing import Any

import immutables
from hypothesis import strategies as st

from .. import effects as fx
from .. import events as ev
from ..errors import ErrorCode
from ..graph import SessionGraph, heal_graph
from ..model import (
    AgentFrame,
    ModelSpec,
    NodeKind,
    ParkedSession,
    PluginSnapshot,
    Residency,
    SessionNode,
    SessionPolicy,
    SessionView,
    ToolSnapshot,
)
from ..persisted import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    GraphDelta,
    Reparent,
    SessionCommit,
    StoredSession,
)
from ..state import MachineState, OpenContext, Pending, Phase, Purpose, SessionState

__all__ = [
    "corrupt_graphs",
    "effects",
    "events",
    "graphs",
    "json_values",
    "machine_states",
    "node_ids",
    "nodes",
    "policies",
    "session_states",
    "well_formed_graphs",
]

#: Ids with the characters that break careless code: quotes, percent
#: signs, backslashes, unicode.
node_ids = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="\x00"),
    min_size=1,
    max_size=12,
)
small_ids = st.sampled_from([f"n{i}" for i in range(12)] + ["'", '"q"', "%s", "ü", "a b"])
times = st.floats(min_value=0, max_value=4e9, allow_nan=False, allow_infinity=False)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)

#: The fields a failure travels with (see lash_machine.errors.failure_of).
details = st.dictionaries(
    st.text(max_size=8), st.none() | st.integers(-9, 99) | st.text(max_size=8), max_size=3
)

model_specs = st.builds(ModelSpec, st.text(max_size=10), st.none() | st.integers(1, 2**20))
policies = st.builds(
    SessionPolicy,
    model_specs,
    st.sampled_from(["", "openai", "anthropic"]),
    st.none() | st.integers(1, 100),
)
configured_policies = st.builds(
    SessionPolicy,
    st.builds(ModelSpec, st.sampled_from(["gpt-x", "claude-y"]), st.none() | st.integers(1, 2**20)),
    st.sampled_from(["openai", "anthropic"]),
)


def nodes(
    ids: st.SearchStrategy[str] = small_ids, parents: st.SearchStrategy[str | None] | None = None
) -> st.SearchStrategy[SessionNode]:
    """Single nodes; parents drawn from ``parents`` (default: ids or None)."""
    return st.builds(
        SessionNode,
        ids,
        parents if parents is not None else st.none() | ids,
        st.sampled_from(NodeKind),
        json_values,
        st.none() | st.just("f1"),
        times,
    )


@st.composite
def well_formed_graphs(draw: st.DrawFn, max_nodes: int = 30) -> SessionGraph:
    """Trees grown by appending: unique ids, parents earlier, a valid leaf."""
    count = draw(st.integers(0, max_nodes))
    graph = SessionGraph.empty()
    for i in range(count):
        existing = [n.node_id for n in graph]
        parent = draw(st.none() | st.sampled_from(existing)) if existing else None
        node = draw(nodes(st.just(f"n{i}"), st.just(parent)))
        graph = graph.append(node)
    ids = [n.node_id for n in graph]
    leaf = draw(st.none() | st.sampled_from(ids)) if ids else None
    return graph.with_leaf(leaf)


@st.composite
def corrupt_graphs(draw: st.DrawFn, max_nodes: int = 30) -> SessionGraph:
    """Arbitrary graphs: duplicate ids, dangling and cyclic parents, a leaf
    that may name no node; plus well-formed graphs deliberately damaged."""
    if draw(st.booleans()):
        base = draw(well_formed_graphs(max_nodes))
        damaged = list(base)
        if damaged:
            for _ in range(draw(st.integers(1, 3))):
                i = draw(st.integers(0, len(damaged) - 1))
                how = draw(st.sampled_from(["dangle", "cycle", "dup", "self"]))
                node = damaged[i]
                if how == "dangle":
                    damaged[i] = SessionNode(
                        node.node_id,
                        "missing",
                        node.kind,
                        node.body,
                        node.frame_id,
                        node.created_at,
                    )
                elif how == "self":
                    damaged[i] = SessionNode(
                        node.node_id,
                        node.node_id,
                        node.kind,
                        node.body,
                        node.frame_id,
                        node.created_at,
                    )
                elif how == "cycle":
                    j = draw(st.integers(0, len(damaged) - 1))
                    damaged[i] = SessionNode(
                        node.node_id,
                        damaged[j].node_id,
                        node.kind,
                        node.body,
                        node.frame_id,
                        node.created_at,
                    )
                else:
                    damaged.insert(
                        draw(st.integers(0, len(damaged))), draw(nodes(st.just(node.node_id)))
                    )
        leaf = draw(st.sampled_from([base.leaf_id, "gone", None]))
        return SessionGraph.from_nodes(damaged, leaf)
    raw = draw(st.lists(nodes(), max_size=max_nodes))
    leaf = draw(st.none() | small_ids)
    return SessionGraph.from_nodes(raw, leaf)


graphs = corrupt_graphs


def _frames(session_id: str, policy: SessionPolicy) -> st.SearchStrategy[tuple[AgentFrame, ...]]:
    initial = AgentFrame(f"{session_id}:frame:initial", None, "initial", policy, 0.0)
    return st.just((initial,))


@st.composite
def session_states(draw: st.DrawFn, healed: bool = True) -> SessionState:
    """Session states, with healed graphs unless ``healed`` is false."""
    session_id = draw(st.sampled_from(["s1", "s2", "sess-ü"]))
    policy = draw(configured_policies)
    graph = draw(well_formed_graphs() if healed else corrupt_graphs())
    if not healed:
        graph = heal_graph(graph)[0] if draw(st.booleans()) else graph
    saved = draw(st.integers(0, len(graph)))
    return SessionState(
        session_id=session_id,
        policy=policy,
        frames=draw(_frames(session_id, policy)),
        current_frame_id=f"{session_id}:frame:initial",
        graph=graph,
        head_revision=draw(st.none() | st.integers(1, 50)),
        tool_snapshot=draw(st.none() | st.builds(ToolSnapshot, st.integers(0, 9), json_values)),
        plugin_snapshot=draw(st.none() | st.builds(PluginSnapshot, st.integers(0, 9), json_values)),
        host_checkpoint=draw(json_values),
        pending_attachments=tuple(draw(st.lists(node_ids, max_size=3, unique=True))),
        saved_nodes=saved,
        repairs=(),
        dirty=draw(st.booleans()),
    )


parked_sessions = st.builds(
    ParkedSession,
    node_ids,
    configured_policies,
    st.none() | st.integers(1, 99),
    st.sampled_from(Residency),
)
views = st.builds(
    SessionView,
    node_ids,
    st.none() | st.integers(1, 99),
    policies,
    node_ids,
    st.none() | node_ids,
    st.integers(0, 10**6),
    st.sampled_from(Residency),
)
request_ids = st.integers(1, 2**31)


@st.composite
def stored_sessions(draw: st.DrawFn) -> StoredSession:
    state = draw(session_states())
    return StoredSession(
        session_id=state.session_id,
        head_revision=draw(st.integers(1, 99)),
        policy=state.policy,
        frames=state.frames,
        current_frame_id=state.current_frame_id,
        nodes=state.graph.nodes,
        leaf_id=state.graph.leaf_id,
        tool_snapshot=state.tool_snapshot,
        plugin_snapshot=state.plugin_snapshot,
        host_checkpoint=state.host_checkpoint,
    )


@st.composite
def commits(draw: st.DrawFn) -> SessionCommit:
    state = draw(session_states())
    delta = GraphDelta(
        state.graph.leaf_id,
        state.graph.nodes,
        tuple(draw(st.lists(st.builds(Reparent, node_ids, st.none() | node_ids), max_size=3))),
    )
    return SessionCommit(
        state.session_id,
        state.head_revision,
        state.policy,
        state.frames,
        state.current_frame_id,
        delta,
        state.tool_snapshot,
        state.plugin_snapshot,
        state.host_checkpoint,
        state.pending_attachments,
        draw(st.none() | st.integers(0, 99)),
    )


def events() -> st.SearchStrategy[Any]:
    """Every kind of event, with arbitrary (not necessarily valid) content."""
    return st.one_of(
        st.builds(
            ev.Open, policies, times, node_ids, node_ids, st.sampled_from(Residency), st.booleans()
        ),
        st.builds(
            ev.Restore,
            session_states(),
            policies,
            times,
            st.sampled_from(Residency),
            st.booleans(),
            node_ids,
        ),
        st.builds(ev.Resume, parked_sessions, times, st.none() | st.sampled_from(Residency)),
        st.builds(ev.Append, st.lists(nodes(), min_size=1, max_size=4).map(tuple)),
        st.builds(ev.BranchTo, node_ids),
        st.builds(ev.Save),
        st.builds(ev.Park),
        st.builds(ev.LoadNode, node_ids),
        st.builds(ev.ListOrphans),
        st.builds(ev.TombstoneOrphans),
        st.builds(ev.Tombstone, st.lists(node_ids, max_size=3).map(tuple)),
        st.builds(ev.ApplyToolState, st.integers(0, 9), json_values),
        st.builds(ev.RecordPluginState, json_values),
        st.builds(ev.SetCheckpoint, json_values),
        st.builds(ev.RecordAttachment, node_ids, st.text(max_size=20), times),
        st.builds(ev.Close, st.booleans()),
        st.builds(ev.GraphLoaded, request_ids, st.none() | stored_sessions()),
        st.builds(ev.LoadNodeResult, request_ids, st.none() | nodes()),
        st.builds(ev.Committed, request_ids, st.integers(1, 99)),
        st.builds(ev.CommitConflicted, request_ids, st.none() | st.integers(1, 99)),
        st.builds(ev.Tombstoned, request_ids, st.integers(0, 9)),
        st.builds(ev.IntentRecorded, request_ids),
        st.builds(
            ev.EffectFailed, request_ids, st.sampled_from(ErrorCode), st.text(max_size=20), details
        ),
    )


def effects() -> st.SearchStrategy[Any]:
    """Every kind of effect, with arbitrary content."""
    scopes = st.builds(FullGraph) | st.builds(ActivePath, st.none() | node_ids)
    lifecycle = st.one_of(
        st.builds(fx.SessionOpened, views),
        st.builds(fx.SessionRestored, views),
        st.builds(fx.SessionSaved, node_ids, st.integers(1, 99)),
        st.builds(
            fx.CommitConflict,
            node_ids,
            st.none() | st.integers(1, 9),
            st.none() | st.integers(1, 9),
        ),
        st.builds(fx.SessionParked, parked_sessions),
        st.builds(fx.SessionClosed, node_ids, st.booleans()),
        corrupt_graphs(8).map(lambda g: fx.SessionHealed("s", heal_graph(g)[1])),
    )
    return st.one_of(
        st.builds(fx.LoadGraph, request_ids, node_ids, scopes),
        st.builds(fx.LoadNode, request_ids, node_ids, node_ids),
        st.builds(fx.Commit, request_ids, commits()),
        st.builds(
            fx.TombstoneNodes, request_ids, node_ids, st.lists(node_ids, max_size=3).map(tuple)
        ),
        st.builds(
            fx.RecordAttachmentIntent,
            request_ids,
            st.builds(
                AttachmentIntent, node_ids, node_ids, st.text(max_size=9), times, st.booleans()
            ),
        ),
        st.builds(
            fx.RestoreToolSurface, node_ids, st.builds(ToolSnapshot, st.integers(0, 9), json_values)
        ),
        st.builds(
            fx.RestorePlugins, node_ids, st.builds(PluginSnapshot, st.integers(0, 9), json_values)
        ),
        st.builds(fx.UnregisterPluginSession, node_ids),
        st.builds(fx.EmitLifecycle, lifecycle),
        st.builds(fx.ReplyReady, views),
        st.builds(fx.ReplySaved, st.integers(1, 99)),
        st.builds(fx.ReplyParked, parked_sessions),
        st.builds(fx.ReplyNode, node_ids, st.none() | nodes()),
        st.builds(fx.ReplyOrphans, st.lists(node_ids, max_size=3).map(tuple)),
        st.builds(fx.ReplyTombstoned, st.integers(0, 9)),
        st.builds(fx.ReplyAttachment, node_ids),
        st.builds(fx.ReplyUpdated, st.none() | node_ids, st.integers(0, 9)),
        st.builds(fx.ReplyClosed, node_ids),
        st.builds(
            fx.ReplyFailed,
            st.text(max_size=9),
            st.sampled_from(ErrorCode),
            st.text(max_size=20),
            details,
        ),
    )


@st.composite
def machine_states(draw: st.DrawFn) -> MachineState:
    """Machine states in every phase (structurally valid, for the codec)."""
    phase = draw(st.sampled_from(Phase))
    session = draw(session_states()) if phase in (Phase.ACTIVE, Phase.COMMITTING) else None
    parked = draw(parked_sessions) if phase is Phase.PARKED else None
    opening = (
        OpenContext(
            "s1",
            draw(configured_policies),
            draw(times),
            draw(st.sampled_from(Residency)),
            Phase.CLOSED,
        )
        if phase is Phase.OPENING
        else None
    )
    pending = draw(
        st.lists(
            st.builds(Pending, request_ids, st.sampled_from(Purpose), st.none() | node_ids),
            max_size=3,
            unique_by=lambda p: p.request_id,
        )
    )
    return MachineState(
        phase=phase,
        session=session,
        parked=parked,
        opening=opening,
        persistent=draw(st.booleans()),
        residency=draw(st.sampled_from(Residency)),
        outstanding=immutables.Map({p.request_id: p for p in pending}),
        next_request_id=max((p.request_id for p in pending), default=0) + 1,
    )
