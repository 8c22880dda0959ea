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
from ..checks import Addition
from ..errors import ErrorCode
from ..graph import HealReport, LeafRepair, ParentRepair, SessionGraph, heal_graph
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
    Origin,
    Reparent,
    SessionCommit,
    SessionStamp,
    StoredSession,
)
from ..state import (
    MachineState,
    OpenContext,
    Pending,
    Phase,
    Purpose,
    SessionState,
    WarmSession,
)

__all__ = [
    "additions",
    "commits",
    "corrupt_graphs",
    "effects",
    "events",
    "graphs",
    "heal_reports",
    "json_values",
    "machine_states",
    "node_ids",
    "nodes",
    "open_contexts",
    "parked_sessions",
    "pending_requests",
    "policies",
    "session_states",
    "stored_sessions",
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

#: Writer ids (empty: commits carry no id).
writers = st.just("") | st.sampled_from(["w1", "worker-ü:7"])

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
    st.none() | st.integers(1, 100),
)


_kinds = st.sampled_from(NodeKind)
_frame_ids = st.none() | st.sampled_from(["f1", "s1:frame:initial", "frame ü"])

#: What a check proposes to append (any body, any kind).
additions = st.builds(Addition, json_values, _kinds)


def nodes(
    ids: st.SearchStrategy[str] = small_ids, parents: st.SearchStrategy[str | None] | None = None
) -> st.SearchStrategy[SessionNode]:
    """Single nodes; parents drawn from ``parents`` (default: ids or None)."""
    return st.builds(
        SessionNode,
        ids,
        parents if parents is not None else st.none() | ids,
        _kinds,
        json_values,
        _frame_ids,
        times,
    )


@st.composite
def well_formed_graphs(draw: st.DrawFn, max_nodes: int = 30) -> SessionGraph:
    """Trees grown by appending: unique ids, parents earlier, a valid leaf."""
    count = draw(st.integers(0, max_nodes))
    graph = SessionGraph.empty()
    for i in range(count):
        # Module-level strategies only: building strategies per node would
        # cost more than the drawing.
        parent = None if i == 0 or draw(st.booleans()) else f"n{draw(st.integers(0, i - 1))}"
        node = SessionNode(
            f"n{i}", parent, draw(_kinds), draw(json_values), draw(_frame_ids), draw(times)
        )
        graph = graph.append(node)
    leaf = None if count == 0 or draw(st.booleans()) else f"n{draw(st.integers(0, count - 1))}"
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


@st.composite
def _frames(draw: st.DrawFn, session_id: str, policy: SessionPolicy) -> tuple[AgentFrame, ...]:
    """The initial frame, then sub-agent frames, each under an earlier one."""
    frames = [AgentFrame(f"{session_id}:frame:initial", None, "initial", policy, draw(times))]
    for i in range(draw(st.integers(0, 2))):
        parent = draw(st.sampled_from(frames)).frame_id
        reason = draw(st.sampled_from(["sub-agent", "tool call", "review ü"]))
        sub_policy = draw(policies | st.just(policy))
        frame_id = f"{session_id}:frame:{i}"
        frames.append(AgentFrame(frame_id, parent, reason, sub_policy, draw(times)))
    return tuple(frames)


#: Parent repairs: a node of ``ids`` made a root, or pointed elsewhere.
def _repairs(ids: list[str]) -> st.SearchStrategy[tuple[Reparent, ...]]:
    if not ids:
        return st.just(())
    repair = st.builds(Reparent, st.sampled_from(ids), st.none() | st.sampled_from(ids))
    return st.lists(repair, max_size=3, unique_by=lambda r: r.node_id).map(tuple)


@st.composite
def session_states(draw: st.DrawFn, healed: bool = True, max_nodes: int = 30) -> SessionState:
    """Session states, with healed graphs unless ``healed`` is false."""
    session_id = draw(st.sampled_from(["s1", "s2", "sess-ü"]))
    policy = draw(configured_policies)
    graph = draw(well_formed_graphs(max_nodes) if healed else corrupt_graphs(max_nodes))
    if not healed:
        graph = heal_graph(graph)[0] if draw(st.booleans()) else graph
    saved = draw(st.integers(0, len(graph)))
    frames = draw(_frames(session_id, policy))
    ids = [node.node_id for node in graph]
    return SessionState(
        session_id=session_id,
        policy=policy,
        frames=frames,
        current_frame_id=draw(st.sampled_from([frame.frame_id for frame in frames])),
        graph=graph,
        head_revision=draw(st.none() | st.integers(1, 50)),
        tool_snapshot=draw(st.none() | st.builds(ToolSnapshot, st.integers(0, 9), json_values)),
        plugin_snapshot=draw(st.none() | st.builds(PluginSnapshot, st.integers(0, 9), json_values)),
        host_checkpoint=draw(json_values),
        pending_attachments=tuple(draw(st.lists(node_ids, max_size=3, unique=True))),
        saved_nodes=saved,
        repairs=draw(_repairs([node.node_id for node in graph.nodes[:saved]])),
        dirty=draw(st.booleans()),
        branched=draw(st.booleans()),
        in_doubt=draw(st.none() | node_ids),
        pin_changes=tuple(
            draw(
                st.lists(
                    st.tuples(st.sampled_from(ids) if ids else node_ids, st.booleans()),
                    max_size=3,
                    unique_by=lambda change: change[0],
                )
            )
        ),
        generation=draw(st.integers(0, 9)),
        created_by=draw(st.none() | node_ids),
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
def stored_sessions(draw: st.DrawFn, max_nodes: int = 30) -> StoredSession:
    """What a store's read returns (from a generated session state)."""
    state = draw(session_states(max_nodes=max_nodes))
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
        pinned=tuple(
            draw(st.lists(st.sampled_from([n.node_id for n in state.graph] or ["p"]), unique=True))
        ),
        generation=draw(st.integers(0, 9)),
        created_at=draw(times),
        created_by=draw(st.none() | node_ids),
        origin=draw(st.none() | st.builds(Origin, node_ids, st.none() | node_ids)),
    )


#: The stamps of stored sessions.
stamps = st.builds(SessionStamp, st.integers(1, 99), st.integers(0, 9), st.none() | node_ids)


@st.composite
def warm_sessions(draw: st.DrawFn, max_nodes: int = 30) -> WarmSession:
    """Sessions as a driver keeps them after a park (committed)."""
    state = draw(session_states(max_nodes=max_nodes))
    return WarmSession(state, draw(st.sampled_from(Residency)))


@st.composite
def commits(draw: st.DrawFn, max_nodes: int = 30) -> SessionCommit:
    """Commits of every delta shape, with or without a fencing token."""
    state = draw(session_states(max_nodes=max_nodes))
    delta = GraphDelta(
        state.graph.leaf_id,
        state.graph.nodes,
        tuple(draw(st.lists(st.builds(Reparent, node_ids, st.none() | node_ids), max_size=3))),
        tuple(draw(st.lists(node_ids, max_size=2, unique=True))),
        tuple(draw(st.lists(node_ids, max_size=2, unique=True))),
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
        draw(st.none() | node_ids),
    )


#: Reports of real healing, and made-up ones with every kind of repair.
heal_reports = corrupt_graphs(8).map(lambda graph: heal_graph(graph)[1]) | st.builds(
    HealReport,
    st.lists(small_ids, max_size=3).map(tuple),
    st.lists(
        st.builds(ParentRepair, small_ids, small_ids, st.sampled_from(["dangling", "cycle"])),
        max_size=3,
    ).map(tuple),
    st.none() | st.builds(LeafRepair, small_ids, st.none() | small_ids),
)

#: Graphs inside events and effects stay small: the codec and the reducer
#: see every shape at this size, and each example costs a fraction.
_NESTED = 10


def _event_strategies() -> dict[type, st.SearchStrategy[Any]]:
    return {
        ev.Open: st.builds(
            ev.Open,
            policies,
            times,
            node_ids,
            node_ids,
            st.sampled_from(Residency),
            st.booleans(),
            writers,
        ),
        ev.Restore: st.builds(
            ev.Restore,
            session_states(max_nodes=_NESTED),
            policies,
            times,
            st.sampled_from(Residency),
            st.booleans(),
            node_ids,
            writers,
        ),
        ev.Resume: st.builds(
            ev.Resume,
            parked_sessions,
            times,
            st.none() | st.sampled_from(Residency),
            writers,
            st.none() | warm_sessions(_NESTED),
        ),
        ev.Pin: st.builds(ev.Pin, node_ids),
        ev.Unpin: st.builds(ev.Unpin, node_ids),
        ev.Fork: st.builds(ev.Fork, node_ids, times, st.none() | node_ids),
        ev.Compact: st.builds(ev.Compact, node_ids, json_values, node_ids, times),
        ev.Uncompact: st.builds(ev.Uncompact, node_ids),
        ev.Append: st.builds(ev.Append, st.lists(nodes(), min_size=1, max_size=4).map(tuple)),
        ev.Repair: st.builds(
            ev.Repair,
            st.sampled_from(["openai-tool-calls", "anthropic-tool-use", "mine ü"]),
            st.lists(additions, min_size=1, max_size=3).map(tuple),
            st.lists(node_ids, min_size=1, max_size=3, unique=True).map(tuple),
            times,
        ),
        ev.BranchTo: st.builds(ev.BranchTo, node_ids),
        ev.Save: st.builds(ev.Save),
        ev.Park: st.builds(ev.Park),
        ev.LoadNode: st.builds(ev.LoadNode, node_ids),
        ev.ListOrphans: st.builds(ev.ListOrphans),
        ev.TombstoneOrphans: st.builds(ev.TombstoneOrphans),
        ev.Tombstone: st.builds(ev.Tombstone, st.lists(node_ids, max_size=3).map(tuple)),
        ev.ApplyToolState: st.builds(ev.ApplyToolState, st.integers(0, 9), json_values),
        ev.RecordPluginState: st.builds(ev.RecordPluginState, json_values),
        ev.SetCheckpoint: st.builds(ev.SetCheckpoint, json_values),
        ev.RecordAttachment: st.builds(ev.RecordAttachment, node_ids, st.text(max_size=20), times),
        ev.Close: st.builds(ev.Close, st.booleans()),
        ev.GraphLoaded: st.builds(
            ev.GraphLoaded, request_ids, st.none() | stored_sessions(_NESTED)
        ),
        ev.LoadNodeResult: st.builds(ev.LoadNodeResult, request_ids, st.none() | nodes()),
        ev.Committed: st.builds(ev.Committed, request_ids, st.integers(1, 99)),
        ev.CommitConflicted: st.builds(
            ev.CommitConflicted, request_ids, st.none() | st.integers(1, 99)
        ),
        ev.Tombstoned: st.builds(ev.Tombstoned, request_ids, st.integers(0, 9)),
        ev.IntentRecorded: st.builds(ev.IntentRecorded, request_ids),
        ev.StampRead: st.builds(ev.StampRead, request_ids, st.none() | stamps),
        ev.Forked: st.builds(ev.Forked, request_ids, st.integers(1, 9)),
        ev.EffectFailed: st.builds(
            ev.EffectFailed,
            request_ids,
            st.sampled_from(ErrorCode),
            st.text(max_size=20),
            details,
        ),
    }


def _chosen(
    alternatives: dict[type, st.SearchStrategy[Any]], kinds: tuple[type, ...], what: str
) -> st.SearchStrategy[Any]:
    unknown = [kind.__name__ for kind in kinds if kind not in alternatives]
    if unknown:
        raise ValueError(f"no {what} strategy for {', '.join(unknown)}")
    return st.one_of(*(alternatives[kind] for kind in kinds or tuple(alternatives)))


def events(*kinds: type) -> st.SearchStrategy[Any]:
    """Every kind of event (or only ``kinds``, e.g. ``events(Committed)``),
    with arbitrary (not necessarily valid) content."""
    return _chosen(_event_strategies(), kinds, "event")


def _effect_strategies() -> dict[type, st.SearchStrategy[Any]]:
    scopes = st.builds(FullGraph) | st.builds(ActivePath, st.none() | node_ids)
    lifecycle: dict[type, st.SearchStrategy[Any]] = {
        fx.SessionOpened: st.builds(fx.SessionOpened, views),
        fx.SessionRestored: st.builds(fx.SessionRestored, views),
        fx.SessionSaved: st.builds(fx.SessionSaved, node_ids, st.integers(1, 99)),
        fx.CommitConflict: st.builds(
            fx.CommitConflict,
            node_ids,
            st.none() | st.integers(1, 9),
            st.none() | st.integers(1, 9),
        ),
        fx.SessionParked: st.builds(fx.SessionParked, parked_sessions),
        fx.SessionClosed: st.builds(fx.SessionClosed, node_ids, st.booleans()),
        fx.SessionHealed: st.builds(fx.SessionHealed, node_ids, heal_reports),
        fx.SessionRepaired: st.builds(
            fx.SessionRepaired,
            node_ids,
            st.sampled_from(["openai-tool-calls", "anthropic-tool-use"]),
            st.lists(node_ids, min_size=1, max_size=3, unique=True).map(tuple),
        ),
    }
    intents = st.builds(
        AttachmentIntent, node_ids, node_ids, st.text(max_size=9), times, st.booleans()
    )
    return {
        fx.LoadGraph: st.builds(fx.LoadGraph, request_ids, node_ids, scopes),
        fx.LoadNode: st.builds(fx.LoadNode, request_ids, node_ids, node_ids),
        fx.Commit: st.builds(fx.Commit, request_ids, commits(_NESTED)),
        fx.TombstoneNodes: st.builds(
            fx.TombstoneNodes, request_ids, node_ids, st.lists(node_ids, max_size=3).map(tuple)
        ),
        fx.RecordAttachmentIntent: st.builds(fx.RecordAttachmentIntent, request_ids, intents),
        fx.ReadStamp: st.builds(fx.ReadStamp, request_ids, node_ids),
        fx.ForkSession: st.builds(
            fx.ForkSession, request_ids, node_ids, st.none() | node_ids, node_ids, times
        ),
        fx.RestoreToolSurface: st.builds(
            fx.RestoreToolSurface, node_ids, st.builds(ToolSnapshot, st.integers(0, 9), json_values)
        ),
        fx.RestorePlugins: st.builds(
            fx.RestorePlugins, node_ids, st.builds(PluginSnapshot, st.integers(0, 9), json_values)
        ),
        fx.UnregisterPluginSession: st.builds(fx.UnregisterPluginSession, node_ids),
        # Each lifecycle event is an alternative of its own, as likely as
        # any other effect (nested in one alternative, each would be rare).
        **{kind: event.map(fx.EmitLifecycle) for kind, event in lifecycle.items()},
        fx.ReplyReady: st.builds(fx.ReplyReady, views),
        fx.ReplySaved: st.builds(fx.ReplySaved, st.integers(1, 99)),
        fx.ReplyParked: st.builds(
            fx.ReplyParked, parked_sessions, st.none() | session_states(max_nodes=_NESTED)
        ),
        fx.ReplyForked: st.builds(fx.ReplyForked, parked_sessions),
        fx.ReplyNode: st.builds(fx.ReplyNode, node_ids, st.none() | nodes()),
        fx.ReplyOrphans: st.builds(fx.ReplyOrphans, st.lists(node_ids, max_size=3).map(tuple)),
        fx.ReplyTombstoned: st.builds(fx.ReplyTombstoned, st.integers(0, 9)),
        fx.ReplyAttachment: st.builds(fx.ReplyAttachment, node_ids),
        fx.ReplyUpdated: st.builds(fx.ReplyUpdated, st.none() | node_ids, st.integers(0, 9)),
        fx.ReplyClosed: st.builds(fx.ReplyClosed, node_ids),
        fx.ReplyFailed: st.builds(
            fx.ReplyFailed,
            st.text(max_size=9),
            st.sampled_from(ErrorCode),
            st.text(max_size=20),
            details,
        ),
    }


def effects(*kinds: type) -> st.SearchStrategy[Any]:
    """Every kind of effect (or only ``kinds``), with arbitrary content.
    An ``EmitLifecycle`` is chosen by its lifecycle event's type:
    ``effects(SessionHealed)``."""
    return _chosen(_effect_strategies(), kinds, "effect")


pending_requests = st.builds(
    Pending,
    request_ids,
    st.sampled_from(Purpose),
    st.none() | node_ids,
    st.lists(node_ids, max_size=3, unique=True).map(tuple),
    st.booleans(),
)


@st.composite
def open_contexts(draw: st.DrawFn) -> OpenContext:
    """Opens in flight: from a closed machine, or resuming a parked one
    (which it returns to on failure)."""
    parked = draw(st.none() | parked_sessions)
    return OpenContext(
        draw(node_ids),
        draw(configured_policies),
        draw(times),
        draw(st.sampled_from(Residency)),
        Phase.CLOSED if parked is None else Phase.PARKED,
        parked,
        parked is not None and parked.head_revision is not None,
        draw(st.none() | session_states(max_nodes=_NESTED)),
    )


@st.composite
def machine_states(draw: st.DrawFn) -> MachineState:
    """Machine states in every phase (structurally valid, for the codec):
    a session exactly when active or committing, an open in flight exactly
    when opening, a handle when parked (and when resuming from one),
    outstanding requests below ``next_request_id``."""
    phase = draw(st.sampled_from(Phase))
    session = draw(session_states()) if phase in (Phase.ACTIVE, Phase.COMMITTING) else None
    opening = draw(open_contexts()) if phase is Phase.OPENING else None
    parked: ParkedSession | None = None if opening is None else opening.parked
    if phase is Phase.PARKED:
        parked = draw(parked_sessions)
    pending = draw(st.lists(pending_requests, max_size=3, unique_by=lambda p: p.request_id))
    highest = max((p.request_id for p in pending), default=0)
    return MachineState(
        phase=phase,
        session=session,
        parked=parked,
        opening=opening,
        persistent=draw(st.booleans()),
        residency=draw(st.sampled_from(Residency)),
        outstanding=immutables.Map({p.request_id: p for p in pending}),
        next_request_id=highest + 1 + draw(st.integers(0, 3)),
        writer=draw(writers),
    )
