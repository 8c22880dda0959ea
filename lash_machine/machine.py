"""The reducer: ``step(state, event) -> (state, effects)``.

Rules of this file:

1. :data:`TRANSITIONS` is the whole lifecycle: a pair (phase, event type)
   that is not in it raises :class:`~lash_machine.errors.ProtocolError`.
2. Handlers are pure. They read the state and the event, validate *first*,
   and build the new state with ``attrs.evolve``; an error leaves the
   caller's state untouched because nothing is ever mutated.
3. Everything non-deterministic (time, fresh ids, IO results) comes in an
   event. Every IO effect carries a fresh ``request_id`` from the state's
   counter; a result is accepted only for a request still outstanding.
4. No commit deletes or overwrites a node that is not resident: deltas only
   append nodes and rewrite parents of resident nodes.
5. What enters is checked where it enters: node ids, kinds, times and
   bodies on ``Append`` (:mod:`~lash_machine.content`), session ids and
   times on ``Open``, ``Restore`` and ``Resume``. A refused event changes
   nothing.
6. A commit whose outcome is unknown is sent again once, with the same
   commit id; if that fails too, the session is *in doubt*: edits wait
   until a save or park sends that same commit again and the store
   answers it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

import immutables

from . import effects as fx
from . import events as ev
from ._records import evolve
from .checks import addition_nodes
from .compaction import Summary, read_summary, summary_body
from .content import id_problem, json_problem, node_problem, time_problem
from .errors import (
    CommitOutcomeUnknown,
    ErrorCode,
    HeadRevisionConflict,
    InvalidEvent,
    ModelSpecMissing,
    ProtocolError,
    ResidencyRequiresStore,
    SessionNotFound,
    StaleResult,
    failure_of,
)
from .graph import CLEAN_REPORT, HealReport, SessionGraph, heal_graph, is_chain
from .model import (
    AgentFrame,
    NodeKind,
    ParkedSession,
    PluginSnapshot,
    Residency,
    SessionNode,
    SessionPolicy,
    ToolSnapshot,
    initial_frame_id,
)
from .persisted import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    GraphDelta,
    ReadScope,
    Reparent,
    SessionCommit,
    StoredSession,
)
from .state import (
    COMMITS,
    MUTATING,
    MachineState,
    OpenContext,
    Pending,
    Phase,
    Purpose,
    SessionState,
)

__all__ = ["TRANSITIONS", "mermaid", "step"]

Effects: TypeAlias = list[fx.Effect]
Handler: TypeAlias = Callable[[MachineState, Any], tuple[MachineState, Effects]]


def step(state: MachineState, event: ev.Event) -> tuple[MachineState, Effects]:
    """Feed one event to the machine; return the new state and the effects
    to carry out, in order.

    Raises :class:`~lash_machine.errors.ProtocolError` (or a subclass) when
    the event does not fit; ``state`` is never modified.
    """
    row = TRANSITIONS.get((state.phase, type(event)))
    if row is None:
        raise ProtocolError(state.phase.value, type(event).__name__)
    return row[0](state, event)


# ---- small helpers ----------------------------------------------------------------


def _refuse(state: MachineState, event: object, reason: str) -> InvalidEvent:
    return InvalidEvent(state.phase.value, type(event).__name__, reason)


def _request(
    state: MachineState, pending: Callable[[int], Pending], **changes: Any
) -> tuple[MachineState, int]:
    """Allocate a request id and record what it is for (and make the
    other ``changes`` to the state in the same copy)."""
    request_id = state.next_request_id
    outstanding = state.outstanding.set(request_id, pending(request_id))
    changes.update(outstanding=outstanding, next_request_id=request_id + 1)
    return evolve(state, **changes), request_id


def _take(
    state: MachineState, event: Any, purposes: frozenset[Purpose]
) -> tuple[MachineState, Pending]:
    """Claim the outstanding request a result answers, or refuse the result."""
    pending, outstanding = _claim(state, event, purposes)
    return evolve(state, outstanding=outstanding), pending


def _claim(
    state: MachineState, event: Any, purposes: frozenset[Purpose]
) -> tuple[Pending, immutables.Map[int, Pending]]:
    """The request a result answers and the outstanding table without it
    (for a handler that makes one copy of the state), or the refusal."""
    pending = state.outstanding.get(event.request_id)
    if pending is None or pending.purpose not in purposes:
        raise StaleResult(state.phase.value, type(event).__name__, event.request_id)
    return pending, state.outstanding.delete(event.request_id)


def _session(state: MachineState) -> SessionState:
    assert state.session is not None, "an active machine always holds a session"
    return state.session


def _updated(session: SessionState) -> fx.ReplyUpdated:
    generation = session.tool_snapshot.generation if session.tool_snapshot else 0
    return fx.ReplyUpdated(session.graph.leaf_id, generation)


def _with_session(state: MachineState, session: SessionState) -> MachineState:
    return evolve(state, session=session)


def _check(state: MachineState, event: object, problem: str | None) -> None:
    if problem is not None:
        raise _refuse(state, event, problem)


def _check_settled(state: MachineState, event: object) -> None:
    """Refuse an edit while a commit is in doubt (rule 6)."""
    commit_id = _session(state).in_doubt
    if commit_id is not None:
        raise _refuse(
            state,
            event,
            f"commit {commit_id!r} may or may not have been applied: save or park to settle it"
            " first (or close with discard=True and resume)",
        )


def _failed(operation: str, error: BaseException) -> fx.ReplyFailed:
    code, message, detail = failure_of(error)
    return fx.ReplyFailed(operation, code, message, detail)


# ---- building a session ---------------------------------------------------------


def _fresh_session(session_id: str, policy: SessionPolicy) -> SessionState:
    return SessionState(
        session_id=session_id,
        policy=policy,
        frames=(),
        current_frame_id="",
        graph=SessionGraph.empty(),
    )


def _from_store(read: StoredSession) -> SessionState:
    return SessionState(
        session_id=read.session_id,
        policy=read.policy,
        frames=read.frames,
        current_frame_id=read.current_frame_id,
        graph=SessionGraph.from_nodes(read.nodes, read.leaf_id),
        head_revision=read.head_revision,
        tool_snapshot=read.tool_snapshot,
        plugin_snapshot=read.plugin_snapshot,
        host_checkpoint=read.host_checkpoint,
        saved_nodes=len(read.nodes),
        generation=read.generation,
        created_by=read.created_by,
    )


def _settle_graph(
    session: SessionState, graph: SessionGraph, saved: int, residency: Residency
) -> tuple[SessionState, HealReport]:
    """Heal ``graph`` (whose first ``saved`` nodes are stored) against every
    resident node, *then* trim it to the residency.

    Trimming keeps the active path, every unsaved node and its ancestors,
    so nothing uncommitted is dropped or left dangling; parent repairs are
    kept only for nodes that stay resident (rule 4).
    """
    if saved >= len(graph):
        return _settle_stored(session, graph, residency)
    saved_ids = {node.node_id for _, node in zip(range(saved), graph, strict=False)}
    healed, report = heal_graph(graph)
    if residency is Residency.ACTIVE_PATH_ONLY:
        keep = set(healed.active_path_ids())
        for node in healed:
            # An unsaved node stays, and so do its ancestors: its parent
            # pointer must resolve among the resident nodes.
            current = None if node.node_id in saved_ids else node.node_id
            while current is not None and current not in keep:
                keep.add(current)
                resident = healed.get(current)
                current = None if resident is None else resident.parent_id
        if len(keep) != len(healed):
            healed = SessionGraph.from_nodes(
                (node for node in healed if node.node_id in keep), healed.leaf_id
            )
    saved_count = 0
    for node in healed:
        if node.node_id not in saved_ids:
            break
        saved_count += 1
    cut = {repair.node_id for repair in report.parents_cut}
    repairs = dict((r.node_id, r) for r in session.repairs)
    for node in healed:
        if node.node_id in cut and (node.node_id in saved_ids or node.node_id in repairs):
            repairs[node.node_id] = Reparent(node.node_id, None)
    resident_repairs = tuple(r for r in repairs.values() if r.node_id in healed)
    session = evolve(
        session,
        graph=healed,
        saved_nodes=saved_count,
        repairs=resident_repairs,
        dirty=session.dirty or not report.is_clean,
    )
    return session, report


def _settle_stored(
    session: SessionState, graph: SessionGraph, residency: Residency
) -> tuple[SessionState, HealReport]:
    """:func:`_settle_graph` of a graph whose every node is stored (a graph
    as read): no unsaved node to keep, so the trim keeps the active path
    alone, and every resident node stays counted as saved."""
    healed, report = heal_graph(graph)
    if residency is Residency.ACTIVE_PATH_ONLY and not healed.is_path():
        # Root first, as a store reads a path: in insertion order a summary
        # stands after the nodes a compaction hung under it.
        healed = SessionGraph.from_nodes(healed.active_path(), healed.leaf_id)
    repairs = {r.node_id: r for r in session.repairs}
    if report.parents_cut:
        cut = {repair.node_id for repair in report.parents_cut}
        for node in healed:
            if node.node_id in cut:
                repairs[node.node_id] = Reparent(node.node_id, None)
    resident_repairs = tuple(r for r in repairs.values() if r.node_id in healed)
    session = evolve(
        session,
        graph=healed,
        saved_nodes=len(healed),
        repairs=resident_repairs,
        dirty=session.dirty or not report.is_clean,
    )
    return session, report


def _build(
    session: SessionState,
    policy: SessionPolicy,
    now: float,
    residency: Residency,
    *,
    settled: bool = False,
) -> tuple[SessionState, HealReport]:
    """The state-building order: policy fill-in, frames, model check, heal
    then trim (skipped for a ``settled`` graph: one this machine built and
    kept well-formed, at this residency). Raises :class:`ModelSpecMissing`."""
    if session.policy.is_unconfigured:
        session = evolve(session, policy=policy)
    frames = session.frames
    current_id = session.current_frame_id
    if not frames:
        initial = initial_frame_id(session.session_id)
        frames = (AgentFrame(initial, None, "initial", session.policy, now),)
        current_id = initial
    elif current_id not in {frame.frame_id for frame in frames}:
        current_id = frames[0].frame_id
    frames = tuple(
        evolve(frame, policy=session.policy)
        if frame.frame_id == current_id and frame.policy.is_unconfigured
        else frame
        for frame in frames
    )
    if frames != session.frames or current_id != session.current_frame_id:
        session = evolve(session, frames=frames, current_frame_id=current_id)
    effective = session.current_frame.policy
    if not effective.model.id.strip():
        raise ModelSpecMissing(session.session_id)
    if effective is not session.policy:
        session = evolve(session, policy=effective)
    if settled:
        return session, CLEAN_REPORT
    return _settle_graph(session, session.graph, session.saved_nodes, residency)


def _activate(
    state: MachineState,
    session: SessionState,
    report: HealReport,
    *,
    residency: Residency,
    persistent: bool,
    fresh: bool,
) -> tuple[MachineState, Effects]:
    """Enter the active phase and announce it (tools, plugins, lifecycle)."""
    view = session.view(residency)
    out: Effects = []
    if session.tool_snapshot is not None:
        out.append(fx.RestoreToolSurface(session.session_id, session.tool_snapshot))
    if session.plugin_snapshot is not None:
        out.append(fx.RestorePlugins(session.session_id, session.plugin_snapshot))
    if not report.is_clean:
        out.append(fx.EmitLifecycle(fx.SessionHealed(session.session_id, report)))
    announce = fx.SessionOpened(view) if fresh else fx.SessionRestored(view)
    out += [fx.EmitLifecycle(announce), fx.ReplyReady(view)]
    new = evolve(
        state,
        phase=Phase.ACTIVE,
        session=session,
        parked=None,
        opening=None,
        persistent=persistent,
        residency=residency,
    )
    return new, out


def _check_residency(
    state: MachineState, event: object, residency: Residency, persistent: bool
) -> None:
    if residency is Residency.ACTIVE_PATH_ONLY and not persistent:
        raise ResidencyRequiresStore(
            state.phase.value,
            type(event).__name__,
            "ACTIVE_PATH_ONLY requires a persistent store: trimmed nodes could never be reloaded",
        )


def _scope(residency: Residency) -> ReadScope:
    return ActivePath() if residency is Residency.ACTIVE_PATH_ONLY else FullGraph()


def _load(
    state: MachineState, context: OpenContext, purpose: Purpose, scope: ReadScope
) -> tuple[MachineState, Effects]:
    state, request_id = _request(state, lambda rid: Pending(rid, purpose))
    state = evolve(state, phase=Phase.OPENING, opening=context)
    return state, [fx.LoadGraph(request_id, context.session_id, scope)]


# ---- closed / parked ----------------------------------------------------------------


def _open(state: MachineState, event: ev.Open) -> tuple[MachineState, Effects]:
    session_id = event.session_id or event.fresh_id
    if not session_id:
        raise _refuse(state, event, "give a session_id, or a fresh_id for a new session")
    _check(state, event, id_problem(session_id, "session id"))
    _check(state, event, time_problem(event.now, "now"))
    _check_residency(state, event, event.residency, event.persistent)
    state = evolve(state, writer=event.writer)
    if not event.persistent:
        session, report = _build(
            _fresh_session(session_id, event.policy), event.policy, event.now, event.residency
        )
        return _activate(
            state, session, report, residency=event.residency, persistent=False, fresh=True
        )
    context = OpenContext(session_id, event.policy, event.now, event.residency, state.phase)
    return _load(state, context, Purpose.OPEN, _scope(event.residency))


def _restore(state: MachineState, event: ev.Restore) -> tuple[MachineState, Effects]:
    _check_residency(state, event, event.residency, event.persistent)
    _check(state, event, time_problem(event.now, "now"))
    session = event.state
    if not session.session_id:
        if not event.fresh_id:
            raise _refuse(state, event, "the state has no session id and no fresh_id was given")
        session = evolve(session, session_id=event.fresh_id)
    _check(state, event, id_problem(session.session_id, "session id"))
    if session.head_revision is None and session.saved_nodes:
        # Nothing of a never-committed state is stored, whatever it claims.
        session = evolve(session, saved_nodes=0, dirty=True)
    for node in session.graph.since(session.saved_nodes):
        # What the next commit writes must be storable (rule 5).
        _check(state, event, node_problem(node))
    for repair in session.repairs:
        # The parents a commit rewrites are those memory holds (rule 4).
        held_node = session.graph.get(repair.node_id)
        if held_node is None or held_node.parent_id != repair.parent_id:
            held = "no such node" if held_node is None else f"its parent is {held_node.parent_id!r}"
            raise _refuse(
                state, event, f"the state's repair {repair} disagrees with its graph: {held}"
            )
    state = evolve(state, writer=event.writer)
    built, report = _build(session, event.policy, event.now, event.residency)
    return _activate(
        state, built, report, residency=event.residency, persistent=event.persistent, fresh=False
    )


def _resume(state: MachineState, event: ev.Resume) -> tuple[MachineState, Effects]:
    parked = event.parked
    _check(state, event, id_problem(parked.session_id, "session id"))
    _check(state, event, time_problem(event.now, "now"))
    residency = event.residency or parked.residency
    warm = event.warm
    usable = (
        warm is not None
        and warm.session.session_id == parked.session_id
        and warm.session.stamp is not None
        # A session made by a commit without an id (an import, a raw store
        # call) is not told apart from one made again under its id.
        and warm.session.created_by is not None
        # A copy kept under ACTIVE_PATH_ONLY holds only its path.
        and (warm.residency is Residency.KEEP_ALL or residency is Residency.ACTIVE_PATH_ONLY)
    )
    context = OpenContext(
        parked.session_id,
        parked.policy,
        event.now,
        residency,
        state.phase,
        state.parked,
        expect_stored=parked.head_revision is not None,
        warm=warm.session if usable and warm is not None else None,
    )
    state = evolve(state, writer=event.writer)
    if context.warm is not None:
        state, request_id = _request(state, lambda rid: Pending(rid, Purpose.STAMP))
        state = evolve(state, phase=Phase.OPENING, opening=context)
        return state, [fx.ReadStamp(request_id, parked.session_id)]
    return _load(state, context, Purpose.OPEN, _scope(residency))


def _close_parked(state: MachineState, event: ev.Close) -> tuple[MachineState, Effects]:
    assert state.parked is not None
    session_id = state.parked.session_id
    return evolve(state, phase=Phase.CLOSED, parked=None), [fx.ReplyClosed(session_id)]


def _park_parked(state: MachineState, event: ev.Park) -> tuple[MachineState, Effects]:
    """A park retried after the first one finished (its reply was lost to a
    cancellation, or the lease release after it failed): the same handle."""
    assert state.parked is not None
    return state, [fx.ReplyParked(state.parked)]


def _close_closed(state: MachineState, event: ev.Close) -> tuple[MachineState, Effects]:
    """A close retried after the first one finished: nothing more to do."""
    return state, [fx.ReplyClosed("")]


# ---- opening ----------------------------------------------------------------------------


def _path_resolves(read: StoredSession, leaf_id: str | None = None) -> bool:
    """True when the read's nodes hold the whole chain from the leaf (the
    stored one, or ``leaf_id``) to a root."""
    nodes = read.nodes
    current = read.leaf_id if leaf_id is None else leaf_id
    if nodes and nodes[-1].node_id == current and is_chain(nodes):
        return True  # the read is the path itself, root first (as stores read it)
    parents = {node.node_id: node.parent_id for node in nodes}
    seen: set[str] = set()
    while current is not None:
        if current not in parents or current in seen:
            return False
        seen.add(current)
        current = parents[current]
    return True


def _opening_loaded(state: MachineState, event: ev.GraphLoaded) -> tuple[MachineState, Effects]:
    state, pending = _take(state, event, frozenset({Purpose.OPEN, Purpose.OPEN_FULL}))
    context = state.opening
    assert context is not None
    read = event.session
    if read is not None and read.session_id != context.session_id:
        raise _refuse(
            state, event, f"loaded session {read.session_id!r}, asked for {context.session_id!r}"
        )
    base = None if read is None else _from_store(read)
    if (
        read is not None
        and base is not None
        and pending.purpose is Purpose.OPEN
        and context.residency is Residency.ACTIVE_PATH_ONLY
        # The graph built from a path read knows whether it is that path.
        and not (base.graph.is_path() or _path_resolves(read))
    ):
        # The stored path is broken: heal against the full graph, then trim.
        return _load(state, context, Purpose.OPEN_FULL, FullGraph())
    back = evolve(state, phase=context.return_to, opening=None, parked=context.parked)
    if base is None and context.expect_stored:
        # The handle was committed: its session was deleted, or this is
        # another store. Never start it afresh under the handle's id.
        return back, [_failed("resume", SessionNotFound(context.session_id))]
    if base is None:
        base = _fresh_session(context.session_id, context.policy)
    try:
        session, report = _build(base, context.policy, context.now, context.residency)
    except ModelSpecMissing as error:
        return back, [_failed("open", error)]
    return _activate(
        state, session, report, residency=context.residency, persistent=True, fresh=read is None
    )


def _stamp_read(state: MachineState, event: ev.StampRead) -> tuple[MachineState, Effects]:
    """A warm resume: the kept session is reused when the store still holds
    exactly that state; anything else reads the session as usual."""
    state, _ = _take(state, event, frozenset({Purpose.STAMP}))
    context = state.opening
    assert context is not None and context.warm is not None
    warm = context.warm
    context = evolve(context, warm=None)
    if event.stamp is None or event.stamp != warm.stamp:
        return _load(state, context, Purpose.OPEN, _scope(context.residency))
    state = evolve(state, opening=context)
    # A session kept for a KEEP_ALL resume was kept under KEEP_ALL (see
    # _resume): the graph it parked with is healed and whole already, so
    # the resume costs no pass over it. One kept under ACTIVE_PATH_ONLY may
    # be trimmed from a KEEP_ALL copy, and is settled as a read would be.
    settled = context.residency is Residency.KEEP_ALL
    try:
        session, report = _build(
            warm, context.policy, context.now, context.residency, settled=settled
        )
    except ModelSpecMissing as error:
        back = evolve(state, phase=context.return_to, opening=None, parked=context.parked)
        return back, [_failed("open", error)]
    return _activate(
        state, session, report, residency=context.residency, persistent=True, fresh=False
    )


def _opening_failed(state: MachineState, event: ev.EffectFailed) -> tuple[MachineState, Effects]:
    state, _ = _take(state, event, frozenset({Purpose.OPEN, Purpose.OPEN_FULL, Purpose.STAMP}))
    context = state.opening
    assert context is not None
    back = evolve(state, phase=context.return_to, opening=None, parked=context.parked)
    return back, [fx.ReplyFailed("open", event.error, event.message, event.detail)]


# ---- active: edits ------------------------------------------------------------------------


def _append(state: MachineState, event: ev.Append) -> tuple[MachineState, Effects]:
    _check_settled(state, event)
    if not event.nodes:
        raise _refuse(state, event, "nothing to append")
    before = _session(state)
    session = _append_nodes(state, event, event.nodes)
    if not _on_the_leaf(before.graph.leaf_id, event.nodes):
        # The path may now run up to another root (a summary undone, say).
        session = _recompacted(state, before, session)
    return evolve(state, session=session), [_updated(session)]


def _on_the_leaf(leaf_id: str | None, nodes: Sequence[SessionNode]) -> bool:
    """Whether ``nodes`` are one chain hung on ``leaf_id``: the path then
    keeps its root."""
    parent = leaf_id
    for node in nodes:
        if node.parent_id != parent:
            return False
        parent = node.node_id
    return True


def _append_nodes(state: MachineState, event: object, nodes: Sequence[SessionNode]) -> SessionState:
    """The session with ``nodes`` appended (the last becomes the leaf), or
    the refusal: each node must be storable (rule 5), its id new, its
    parent ``None``, resident, or an earlier node of ``nodes``."""
    session = _session(state)
    graph = session.graph
    added: list[SessionNode] = []
    ids: set[str] = set()
    for node in nodes:
        _check(state, event, node_problem(node))
        if not isinstance(node.kind, NodeKind):
            node = evolve(node, kind=NodeKind(node.kind))  # noqa: PLW2901
        if node.node_id in graph or node.node_id in ids:
            raise _refuse(state, event, f"node id {node.node_id!r} is already in the session")
        parent = node.parent_id
        if parent is not None and parent not in graph and parent not in ids:
            raise _refuse(
                state,
                event,
                f"parent {parent!r} of node {node.node_id!r} is not a resident node",
            )
        added.append(node)
        ids.add(node.node_id)
    graph = graph.extended(added, added[-1].node_id)
    return evolve(session, graph=graph, dirty=True)


def _repair(state: MachineState, event: ev.Repair) -> tuple[MachineState, Effects]:
    """A check's additions, appended in a chain from the leaf (they only
    append: no stored node is touched, rule 4)."""
    session = _session(state)
    _check_settled(state, event)
    _check(state, event, id_problem(event.check, "check name"))
    _check(state, event, time_problem(event.now, "now"))
    if not event.additions:
        raise _refuse(state, event, f"check {event.check!r} proposed nothing to append")
    if len(event.node_ids) != len(event.additions):
        raise _refuse(
            state,
            event,
            f"{len(event.additions)} additions need as many node ids, got {len(event.node_ids)}",
        )
    frame_id = session.current_frame_id or None
    nodes = addition_nodes(
        event.additions, event.node_ids, session.graph.leaf_id, frame_id, event.now
    )
    session = _append_nodes(state, event, nodes)
    repaired = fx.SessionRepaired(session.session_id, event.check, event.node_ids)
    return evolve(state, session=session), [fx.EmitLifecycle(repaired), _updated(session)]


def _branch_to(state: MachineState, event: ev.BranchTo) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    if event.node_id in session.graph:
        if session.graph.leaf_id == event.node_id:
            return state, [_updated(session)]
        branched = evolve(
            session, graph=session.graph.with_leaf(event.node_id), dirty=True, branched=True
        )
        session = _recompacted(state, session, branched)
        return _with_session(state, session), [_updated(session)]
    if not (state.persistent and state.residency is Residency.ACTIVE_PATH_ONLY):
        raise _refuse(state, event, f"no node {event.node_id!r} in the session")
    state, request_id = _request(state, lambda rid: Pending(rid, Purpose.BRANCH, event.node_id))
    return state, [fx.LoadGraph(request_id, session.session_id, ActivePath(event.node_id))]


def _branch_loaded(
    state: MachineState, pending: Pending, read: StoredSession | None
) -> tuple[MachineState, Effects]:
    target = pending.subject
    assert target is not None
    merged = _merge_path(state, pending, read, target, command="BranchTo", full=Purpose.BRANCH_FULL)
    if isinstance(merged, tuple):
        return merged
    session, out = _merged(_session(state), merged, target)
    session = _recompacted(state, _session(state), session)
    return _with_session(state, session), [*out, _updated(session)]


def _recompacted(state: MachineState, before: SessionState, after: SessionState) -> SessionState:
    """``after`` (a branch of ``before``), pinning what a summary replaced
    when the branch puts that summary at the root of the active path again
    (after an uncompact, say): a summary on the path always keeps its
    history from prune, whichever way it got there."""
    if not state.persistent or not after.graph.summaries:
        return after
    root = after.graph.path_root()
    summary = read_summary(root) if root is not None and root.kind is NodeKind.SUMMARY else None
    if summary is None:
        return after
    old = before.graph.path_root()
    if old is not None and old.node_id == summary.node_id:
        return after  # the same compaction as before: its pin is in place
    return evolve(after, pin_changes=_pin_change(after, summary.through, True))


def _merge_path(
    state: MachineState,
    pending: Pending,
    read: StoredSession | None,
    target: str,
    *,
    command: str,
    full: Purpose,
) -> StoredSession | tuple[MachineState, Effects]:
    """The read of ``target``'s stored path, to merge with :func:`_merged`;
    or what to do instead: fail when the node is not in the store, or read
    the full graph (purpose ``full``) when the stored path is broken (a
    loop, a missing parent), so that healing cuts it as an open does,
    whatever the residency."""
    session = _session(state)
    loaded = {} if read is None else {node.node_id: node for node in read.nodes}
    if target not in loaded:
        missing = InvalidEvent(state.phase.value, command, f"no node {target!r} in the session")
        return state, [_failed(_operation(pending.purpose), missing)]
    assert read is not None
    if pending.purpose is not full and not _path_resolves(read, target):
        state, request_id = _request(
            state, lambda rid: Pending(rid, full, pending.subject, pending.node_ids)
        )
        return state, [fx.LoadGraph(request_id, session.session_id, FullGraph())]
    return read


def _merged(
    session: SessionState, read: StoredSession, leaf_id: str | None
) -> tuple[SessionState, Effects]:
    """The session with the nodes of ``read`` it lacks added to its stored
    prefix (everything resident stays: unsaved nodes may hang off the old
    branch), healed, with ``leaf_id`` as its leaf."""
    nodes = session.graph.nodes
    stored = list(nodes[: session.saved_nodes])
    stored += [node for node in read.nodes if node.node_id not in session.graph]
    graph = SessionGraph.from_nodes(stored + list(nodes[session.saved_nodes :]), leaf_id)
    session = evolve(session, dirty=True, branched=True)
    session, report = _settle_graph(session, graph, len(stored), Residency.KEEP_ALL)
    out: Effects = []
    if not report.is_clean:
        out.append(fx.EmitLifecycle(fx.SessionHealed(session.session_id, report)))
    return session, out


def _pin(state: MachineState, event: ev.Pin | ev.Unpin) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    _check(state, event, id_problem(event.node_id, "node id"))
    if not state.persistent:
        raise _refuse(state, event, "pins are kept by a store: the session has none")
    known = event.node_id in session.graph
    if not known and state.residency is Residency.KEEP_ALL:
        raise _refuse(state, event, f"no node {event.node_id!r} in the session")
    # Not resident under ACTIVE_PATH_ONLY: the store checks the node at commit.
    if isinstance(event, ev.Unpin):
        holder = _compaction_of(session.graph, event.node_id)
        if holder is not None:
            raise _refuse(
                state,
                event,
                f"node {event.node_id!r} is kept by compaction {holder!r}: uncompact it instead",
            )
    changes = _pin_change(session, event.node_id, isinstance(event, ev.Pin))
    session = evolve(session, pin_changes=changes, dirty=True)
    return _with_session(state, session), [_updated(session)]


def _compaction_of(graph: SessionGraph, node_id: str) -> str | None:
    """The resident summary still in effect (the leaf, or a parent) whose
    pin keeps what it replaced, up to ``node_id``; ``None`` when there is
    none. Its pin is the compaction's: only :class:`~.events.Uncompact`
    takes it back, or prune could hide the replaced history."""
    summaries: dict[str, Summary] = {}
    for node in graph:
        found = read_summary(node) if node.kind is NodeKind.SUMMARY else None
        if found is not None and found.through == node_id:
            summaries[node.node_id] = found
    if not summaries:
        return None
    if graph.leaf_id in summaries:
        return graph.leaf_id
    return next((n.parent_id for n in graph if n.parent_id in summaries), None)


def _fork(state: MachineState, event: ev.Fork) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check(state, event, id_problem(event.new_session_id, "new session id"))
    _check(state, event, time_problem(event.now, "now"))
    if not state.persistent:
        raise _refuse(state, event, "a copy is made by the store: the session has none")
    if event.new_session_id == session.session_id:
        raise _refuse(state, event, "a copy needs an id of its own")
    node_id = event.node_id if event.node_id is not None else session.graph.leaf_id
    position = None if node_id is None else session.graph.position(node_id)
    if position is not None and (position >= session.saved_nodes or session.head_revision is None):
        raise _refuse(state, event, f"node {node_id!r} is not committed yet: save first")
    if node_id is not None and position is None and state.residency is Residency.KEEP_ALL:
        raise _refuse(state, event, f"no node {node_id!r} in the session")
    new_id = event.new_session_id
    state, request_id = _request(state, lambda rid: Pending(rid, Purpose.FORK, new_id))
    return state, [fx.ForkSession(request_id, session.session_id, node_id, new_id, event.now)]


def _forked(state: MachineState, event: ev.Forked) -> tuple[MachineState, Effects]:
    state, pending = _take(state, event, frozenset({Purpose.FORK}))
    assert pending.subject is not None
    policy = _session(state).policy
    parked = ParkedSession(pending.subject, policy, event.head_revision, state.residency)
    return state, [fx.ReplyForked(parked)]


# ---- active: compaction (the layout: see compaction.py) -------------------------------


def _compact(state: MachineState, event: ev.Compact) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    _check(state, event, id_problem(event.through, "through"))
    _check(state, event, time_problem(event.now, "now"))
    _check(state, event, json_problem(event.summary, "summary"))
    graph = session.graph
    path = graph.active_path()
    at = next((i for i, node in enumerate(path) if node.node_id == event.through), None)
    if at is None:
        raise _refuse(state, event, f"node {event.through!r} is not on the active path")
    kept = path[at + 1] if at + 1 < len(path) else None
    summary = SessionNode(
        node_id=event.node_id,
        parent_id=None,
        kind=NodeKind.SUMMARY,
        body=summary_body(event.summary, event.through, None if kept is None else kept.node_id),
        frame_id=session.current_frame_id or None,
        created_at=event.now,
    )
    _check(state, event, node_problem(summary))
    if event.node_id in graph:
        raise _refuse(state, event, f"node id {event.node_id!r} is taken")
    graph = graph.append(summary)
    changes: dict[str, Any] = {}
    if kept is None:
        graph = graph.with_leaf(summary.node_id)
    else:
        graph, changes["repairs"] = _moved(session, graph, kept.node_id, summary.node_id)
    if state.persistent:
        changes["pin_changes"] = _pin_change(session, event.through, True)
    session = evolve(session, graph=graph, dirty=True, branched=True, **changes)
    return _with_session(state, session), [_updated(session)]


def _uncompact(state: MachineState, event: ev.Uncompact) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    _check(state, event, id_problem(event.summary_id, "summary id"))
    summary = _summary(state, event, session, event.summary_id)
    if summary.through in session.graph:
        return _restore_compacted(state, session, summary)
    if not (state.persistent and state.residency is Residency.ACTIVE_PATH_ONLY):
        raise _refuse(
            state,
            event,
            f"node {summary.through!r}, which summary {summary.node_id!r} replaced, is not in the"
            " session",
        )
    state, request_id = _request(
        state, lambda rid: Pending(rid, Purpose.UNCOMPACT, summary.node_id, (summary.through,))
    )
    return state, [fx.LoadGraph(request_id, session.session_id, ActivePath(summary.through))]


def _summary(state: MachineState, event: object, session: SessionState, summary_id: str) -> Summary:
    """The resident summary node ``summary_id``, or the refusal."""
    node = session.graph.get(summary_id)
    if node is None:
        where = "in the session"
        if state.residency is Residency.ACTIVE_PATH_ONLY:
            where = "resident: branch to its tail first"
        raise _refuse(state, event, f"summary {summary_id!r} is not {where}")
    summary = read_summary(node)
    if summary is None:
        raise _refuse(state, event, f"node {summary_id!r} is not a summary made by a compaction")
    return summary


def _uncompact_loaded(
    state: MachineState, pending: Pending, read: StoredSession | None
) -> tuple[MachineState, Effects]:
    (through,) = pending.node_ids
    merged = _merge_path(
        state, pending, read, through, command="Uncompact", full=Purpose.UNCOMPACT_FULL
    )
    if isinstance(merged, tuple):
        return merged
    session, out = _merged(_session(state), merged, _session(state).graph.leaf_id)
    summary = None if pending.subject is None else session.graph.get(pending.subject)
    found = None if summary is None else read_summary(summary)
    if found is None or through not in session.graph:
        gone = InvalidEvent(
            state.phase.value, "Uncompact", f"summary {pending.subject!r} was healed away"
        )
        return state, [*out, _failed("uncompact", gone)]
    state, restored = _restore_compacted(state, session, found)
    return state, [*out, *restored]


def _restore_compacted(
    state: MachineState, session: SessionState, summary: Summary
) -> tuple[MachineState, Effects]:
    """Hang the summary's resident children back under ``through``."""
    graph = session.graph
    repairs = session.repairs
    for child in [node.node_id for node in graph if node.parent_id == summary.node_id]:
        graph, repairs = _moved(evolve(session, repairs=repairs), graph, child, summary.through)
    if graph.leaf_id == summary.node_id:
        graph = graph.with_leaf(summary.through)
    changes: dict[str, Any] = {"repairs": repairs}
    holder = _compaction_of(graph, summary.through)
    if state.persistent and holder in (None, summary.node_id):
        # Another compaction in effect through the same node keeps the pin.
        changes["pin_changes"] = _pin_change(session, summary.through, False)
    session = evolve(session, graph=graph, dirty=True, branched=True, **changes)
    return _with_session(state, session), [_updated(session)]


def _moved(
    session: SessionState, graph: SessionGraph, node_id: str, parent_id: str
) -> tuple[SessionGraph, tuple[Reparent, ...]]:
    """``graph`` with one node re-parented, and the repairs the next commit
    writes (a stored node's new parent; an unsaved node is written whole)."""
    repairs = tuple(r for r in session.repairs if r.node_id != node_id)
    position = graph.position(node_id)
    assert position is not None
    if position < session.saved_nodes:
        repairs = (*repairs, Reparent(node_id, parent_id))
    return graph.with_parent(node_id, parent_id), repairs


def _pin_change(session: SessionState, node_id: str, pinned: bool) -> tuple[tuple[str, bool], ...]:
    changes = tuple(c for c in session.pin_changes if c[0] != node_id)
    return (*changes, (node_id, pinned))


def _apply_tool_state(
    state: MachineState, event: ev.ApplyToolState
) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    _check(state, event, json_problem(event.data, "data"))
    current = session.tool_snapshot.generation if session.tool_snapshot else 0
    if event.base_generation != current:
        raise _refuse(
            state,
            event,
            f"tool state delta is based on generation {event.base_generation}, "
            f"the session is at generation {current}",
        )
    snapshot = ToolSnapshot(current + 1, event.data)
    session = evolve(session, tool_snapshot=snapshot, dirty=True)
    return _with_session(state, session), [_updated(session)]


def _record_plugin_state(
    state: MachineState, event: ev.RecordPluginState
) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    _check(state, event, json_problem(event.data, "data"))
    revision = session.plugin_snapshot.revision + 1 if session.plugin_snapshot else 1
    session = evolve(session, plugin_snapshot=PluginSnapshot(revision, event.data), dirty=True)
    return _with_session(state, session), [_updated(session)]


def _set_checkpoint(state: MachineState, event: ev.SetCheckpoint) -> tuple[MachineState, Effects]:
    _check_settled(state, event)
    _check(state, event, json_problem(event.data, "data"))
    session = evolve(_session(state), host_checkpoint=event.data, dirty=True)
    return _with_session(state, session), [_updated(session)]


def _record_attachment(
    state: MachineState, event: ev.RecordAttachment
) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    _check(state, event, id_problem(event.attachment_id, "attachment id"))
    _check(state, event, time_problem(event.now, "now"))
    if not state.persistent:
        return state, [fx.ReplyAttachment(event.attachment_id)]
    intent = AttachmentIntent(session.session_id, event.attachment_id, event.uri, event.now)
    state, request_id = _request(
        state, lambda rid: Pending(rid, Purpose.INTENT, event.attachment_id)
    )
    return state, [fx.RecordAttachmentIntent(request_id, intent)]


def _intent_recorded(state: MachineState, event: ev.IntentRecorded) -> tuple[MachineState, Effects]:
    state, pending = _take(state, event, frozenset({Purpose.INTENT}))
    session = _session(state)
    attachment_id = pending.subject
    assert attachment_id is not None
    if attachment_id not in session.pending_attachments:
        session = evolve(
            session,
            pending_attachments=(*session.pending_attachments, attachment_id),
            dirty=True,
        )
    return _with_session(state, session), [fx.ReplyAttachment(attachment_id)]


# ---- active: queries --------------------------------------------------------------------------


def _load_node(state: MachineState, event: ev.LoadNode) -> tuple[MachineState, Effects]:
    session = _session(state)
    node = session.graph.get(event.node_id)
    if node is not None or not state.persistent:
        return state, [fx.ReplyNode(event.node_id, node)]
    state, request_id = _request(state, lambda rid: Pending(rid, Purpose.LOAD_NODE, event.node_id))
    return state, [fx.LoadNode(request_id, session.session_id, event.node_id)]


def _node_loaded(state: MachineState, event: ev.LoadNodeResult) -> tuple[MachineState, Effects]:
    new, pending = _take(state, event, frozenset({Purpose.LOAD_NODE}))
    if event.node is not None and event.node.node_id != pending.subject:
        raise _refuse(
            state, event, f"asked for node {pending.subject!r}, got {event.node.node_id!r}"
        )
    assert pending.subject is not None
    return new, [fx.ReplyNode(pending.subject, event.node)]


def _list_orphans(state: MachineState, event: ev.ListOrphans) -> tuple[MachineState, Effects]:
    session = _session(state)
    if not state.persistent:
        return state, [fx.ReplyOrphans(session.graph.orphan_ids())]
    state, request_id = _request(state, lambda rid: Pending(rid, Purpose.LIST_ORPHANS))
    return state, [fx.LoadGraph(request_id, session.session_id, FullGraph())]


def _orphans(session: SessionState, read: StoredSession | None) -> tuple[str, ...]:
    """The ids of stored and resident nodes off the active path, stored ones
    first, each in insertion order."""
    on_path = session.graph.active_path_ids()
    stored = () if read is None else tuple(node.node_id for node in read.nodes)
    seen = set(stored)
    candidates = stored + tuple(node.node_id for node in session.graph if node.node_id not in seen)
    return tuple(node_id for node_id in candidates if node_id not in on_path)


def _graph_loaded(state: MachineState, event: ev.GraphLoaded) -> tuple[MachineState, Effects]:
    """A full-graph or path read answered while active (orphans or branch)."""
    new, pending = _take(
        state,
        event,
        frozenset(
            {
                Purpose.LIST_ORPHANS,
                Purpose.BRANCH,
                Purpose.BRANCH_FULL,
                Purpose.UNCOMPACT,
                Purpose.UNCOMPACT_FULL,
                Purpose.TOMBSTONE_ORPHANS,
            }
        ),
    )
    session = _session(state)
    if event.session is not None and event.session.session_id != session.session_id:
        raise _refuse(state, event, f"loaded session {event.session.session_id!r}")
    if pending.purpose in (Purpose.BRANCH, Purpose.BRANCH_FULL):
        return _branch_loaded(new, pending, event.session)
    if pending.purpose in (Purpose.UNCOMPACT, Purpose.UNCOMPACT_FULL):
        return _uncompact_loaded(new, pending, event.session)
    if pending.purpose is Purpose.TOMBSTONE_ORPHANS:
        return _orphans_to_tombstone(new, event.session)
    return new, [fx.ReplyOrphans(_orphans(session, event.session))]


# ---- active: store maintenance ------------------------------------------------------------------


def _tombstone(state: MachineState, event: ev.Tombstone) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    node_ids = tuple(dict.fromkeys(event.node_ids))
    if not node_ids:
        raise _refuse(state, event, "no node ids given")
    on_path = session.graph.active_path_ids()
    unsaved = {node.node_id for node in session.graph.since(session.saved_nodes)}
    for node_id in node_ids:
        if node_id in on_path:
            raise _refuse(state, event, f"node {node_id!r} is on the active path")
        if node_id in unsaved and state.persistent:
            raise _refuse(state, event, f"node {node_id!r} is not committed yet")
    gone = set(node_ids)
    for node in session.graph:
        if node.parent_id in gone and node.node_id not in gone:
            raise _refuse(
                state,
                event,
                f"node {node.node_id!r} would lose its parent {node.parent_id!r}: "
                "tombstone whole orphan subtrees",
            )
    return _send_tombstone(state, node_ids)


def _send_tombstone(state: MachineState, node_ids: tuple[str, ...]) -> tuple[MachineState, Effects]:
    """Hide ``node_ids`` (already checked against the resident graph; the
    store checks them against the stored one)."""
    if not state.persistent:
        return _drop_resident(state, node_ids)
    session_id = _session(state).session_id
    state, request_id = _request(
        state, lambda rid: Pending(rid, Purpose.TOMBSTONE, node_ids=node_ids)
    )
    return state, [fx.TombstoneNodes(request_id, session_id, node_ids)]


def _tombstone_orphans(
    state: MachineState, event: ev.TombstoneOrphans
) -> tuple[MachineState, Effects]:
    session = _session(state)
    _check_settled(state, event)
    if not state.persistent:
        return _orphans_to_tombstone(state, None)
    state, request_id = _request(state, lambda rid: Pending(rid, Purpose.TOMBSTONE_ORPHANS))
    return state, [fx.LoadGraph(request_id, session.session_id, FullGraph())]


def _orphans_to_tombstone(
    state: MachineState, read: StoredSession | None
) -> tuple[MachineState, Effects]:
    """Tombstone the orphans of the stored and resident graph, except what
    must stay: uncommitted nodes, pinned nodes, and every ancestor of one."""
    session = _session(state)
    orphans = _orphans(session, read)
    keep: set[str] = set()
    if state.persistent:
        parents = {node.node_id: node.parent_id for node in session.graph}
        if read is not None:
            for node in read.nodes:
                parents.setdefault(node.node_id, node.parent_id)
        # Pinned nodes stay (stored pins, and pins and unpins not yet
        # committed: the store still holds those), and so do the ancestors.
        kept = [node.node_id for node in session.graph.since(session.saved_nodes)]
        kept += [node_id for node_id, _ in session.pin_changes]
        kept += [] if read is None else list(read.pinned)
        for node_id in kept:
            current: str | None = node_id
            while current is not None and current not in keep:
                keep.add(current)
                current = parents.get(current)
    targets = tuple(node_id for node_id in orphans if node_id not in keep)
    if not targets:
        return state, [fx.ReplyTombstoned(0)]
    return _send_tombstone(state, targets)


def _drop_resident(
    state: MachineState, node_ids: Sequence[str], count: int | None = None
) -> tuple[MachineState, Effects]:
    session = _session(state)
    resident = [node_id for node_id in node_ids if node_id in session.graph]
    if resident:
        gone = set(resident)
        positions = (session.graph.position(node_id) for node_id in gone)
        saved = session.saved_nodes - sum(
            1 for p in positions if p is not None and p < session.saved_nodes
        )
        session = evolve(
            session,
            graph=session.graph.without(gone),
            saved_nodes=saved,
            # No commit touches a node that is not in memory (rule 4).
            repairs=tuple(r for r in session.repairs if r.node_id not in gone),
        )
        state = _with_session(state, session)
    return state, [fx.ReplyTombstoned(len(resident) if count is None else count)]


def _tombstoned(state: MachineState, event: ev.Tombstoned) -> tuple[MachineState, Effects]:
    state, pending = _take(state, event, frozenset({Purpose.TOMBSTONE}))
    return _drop_resident(state, pending.node_ids, event.count)


# ---- active: commit, park, close ----------------------------------------------


def _check_committable(state: MachineState, event: object) -> None:
    if not state.persistent:
        raise _refuse(state, event, "the session has no persistent store")
    busy = sorted(p.purpose.value for p in state.outstanding.values() if p.purpose in MUTATING)
    if busy:
        raise _refuse(state, event, f"wait for outstanding requests first: {', '.join(busy)}")


def _commit(
    state: MachineState, purpose: Purpose, *, retried: bool = False
) -> tuple[MachineState, Effects]:
    """Send the session's changes. A commit in doubt is sent again as it
    was, under its own id (no edit can have come in between: rule 6)."""
    session = _session(state)
    delta = GraphDelta(
        leaf_id=session.graph.leaf_id,
        appended=session.graph.since(session.saved_nodes),
        reparented=session.repairs,
        pinned=tuple(node_id for node_id, pinned in session.pin_changes if pinned)
        if session.pin_changes
        else (),
        unpinned=tuple(node_id for node_id, pinned in session.pin_changes if not pinned)
        if session.pin_changes
        else (),
    )
    commit_id = session.in_doubt
    if commit_id is None and state.writer:
        commit_id = f"{state.writer}:{state.next_request_id}"
    commit = SessionCommit(
        session_id=session.session_id,
        expected_head=session.head_revision,
        policy=session.policy,
        frames=session.frames,
        current_frame_id=session.current_frame_id,
        delta=delta,
        tool_snapshot=session.tool_snapshot,
        plugin_snapshot=session.plugin_snapshot,
        host_checkpoint=session.host_checkpoint,
        adopt_attachments=session.pending_attachments,
        commit_id=commit_id,
    )
    state, request_id = _request(
        state,
        lambda rid: Pending(rid, purpose, subject=commit_id, retried=retried),
        phase=Phase.COMMITTING,
    )
    return state, [fx.Commit(request_id, commit)]


def _save(state: MachineState, event: ev.Save) -> tuple[MachineState, Effects]:
    _check_committable(state, event)
    session = _session(state)
    if not session.dirty and session.head_revision is not None:
        return state, [fx.ReplySaved(session.head_revision)]
    return _commit(state, Purpose.COMMIT_SAVE)


def _park(state: MachineState, event: ev.Park) -> tuple[MachineState, Effects]:
    _check_committable(state, event)
    session = _session(state)
    if not session.dirty and session.head_revision is not None:
        return _enter_parked(state, session, session.head_revision, [])
    return _commit(state, Purpose.COMMIT_PARK)


def _enter_parked(
    state: MachineState, session: SessionState, head: int, out: Effects
) -> tuple[MachineState, Effects]:
    parked = ParkedSession(session.session_id, session.policy, head, state.residency)
    out += [
        fx.UnregisterPluginSession(session.session_id),
        fx.EmitLifecycle(fx.SessionParked(parked)),
        fx.ReplyParked(parked, session),
    ]
    new = evolve(
        state,
        phase=Phase.PARKED,
        session=None,
        parked=parked,
        outstanding=type(state.outstanding)(),
    )
    return new, out


def _committed(state: MachineState, event: ev.Committed) -> tuple[MachineState, Effects]:
    pending, outstanding = _claim(state, event, COMMITS)
    session = _session(state)
    graph = session.graph
    if state.residency is Residency.ACTIVE_PATH_ONLY and session.branched:
        # Everything is stored now: what left the active path leaves memory
        # (the residency's promise holds between parks too).
        path = graph.active_path()
        if len(path) != len(graph):
            graph = SessionGraph.from_nodes(path, graph.leaf_id)
    session = evolve(
        session,
        graph=graph,
        head_revision=event.head_revision,
        saved_nodes=len(graph),
        repairs=(),
        pending_attachments=(),
        dirty=False,
        branched=False,
        in_doubt=None,
        pin_changes=(),
        # A session this commit created is named by the commit's id.
        created_by=session.created_by if session.head_revision is not None else pending.subject,
    )
    saved: Effects = [fx.EmitLifecycle(fx.SessionSaved(session.session_id, event.head_revision))]
    if pending.purpose is Purpose.COMMIT_PARK:
        return _enter_parked(state, session, event.head_revision, saved)
    new = evolve(state, phase=Phase.ACTIVE, session=session, outstanding=outstanding)
    return new, [*saved, fx.ReplySaved(event.head_revision)]


def _operation(purpose: Purpose) -> str:
    return _OPERATIONS.get(purpose, purpose.value)


#: The operation a failed request reports, where it is not the purpose's name.
_OPERATIONS = {
    Purpose.COMMIT_SAVE: "save",
    Purpose.COMMIT_PARK: "park",
    Purpose.BRANCH_FULL: "branch",
    Purpose.UNCOMPACT_FULL: "uncompact",
}


def _commit_conflicted(
    state: MachineState, event: ev.CommitConflicted
) -> tuple[MachineState, Effects]:
    state, pending = _take(state, event, COMMITS)
    session = _session(state)
    conflict = fx.CommitConflict(session.session_id, session.head_revision, event.stored_head)
    error = HeadRevisionConflict(session.session_id, session.head_revision, event.stored_head)
    reply = _failed(_operation(pending.purpose), error)
    return evolve(state, phase=Phase.ACTIVE), [fx.EmitLifecycle(conflict), reply]


def _active_failed(state: MachineState, event: ev.EffectFailed) -> tuple[MachineState, Effects]:
    """Any store request failed: the session stays as it was before it,
    except that a commit whose outcome is unknown is sent again once, then
    held in doubt (rule 6)."""
    state, pending = _take(state, event, frozenset(Purpose) - {Purpose.OPEN, Purpose.OPEN_FULL})
    if pending.purpose in COMMITS:
        state = evolve(state, phase=Phase.ACTIVE)
        if event.error is ErrorCode.COMMIT_OUTCOME_UNKNOWN and pending.subject is not None:
            session = evolve(_session(state), in_doubt=pending.subject)
            state = _with_session(state, session)
            if not pending.retried:
                return _commit(state, pending.purpose, retried=True)
        in_doubt = _session(state).in_doubt
        if in_doubt is not None and event.error is not ErrorCode.COMMIT_OUTCOME_UNKNOWN:
            # The commit in doubt failed again for another reason (a broken
            # connection refused at once, say): whether its first attempt was
            # applied is still unknown, and that is what the caller hears.
            unknown = CommitOutcomeUnknown(
                f"session {_session(state).session_id!r}: commit {in_doubt!r} may or may not"
                f" have been applied; sending it again failed too ({event.message})"
            )
            return state, [_failed(_operation(pending.purpose), unknown)]
    reply = fx.ReplyFailed(_operation(pending.purpose), event.error, event.message, event.detail)
    return state, [reply]


def _close(state: MachineState, event: ev.Close) -> tuple[MachineState, Effects]:
    session = _session(state)
    unsaved = session.dirty or (
        state.persistent and session.head_revision is None and len(session.graph) > 0
    )
    if state.persistent and unsaved and not event.discard:
        raise _refuse(
            state,
            event,
            "the session has uncommitted changes: save, park, or close with discard=True",
        )
    new = evolve(state, phase=Phase.CLOSED, session=None, outstanding=type(state.outstanding)())
    return new, [
        fx.UnregisterPluginSession(session.session_id),
        fx.EmitLifecycle(
            fx.SessionClosed(session.session_id, discarded=unsaved and state.persistent)
        ),
        fx.ReplyClosed(session.session_id),
    ]


# ---- the table -------------------------------------------------------------------

CLOSED, OPENING, ACTIVE = Phase.CLOSED, Phase.OPENING, Phase.ACTIVE
COMMITTING, PARKED = Phase.COMMITTING, Phase.PARKED

#: (phase, event type) -> (handler, the phases it may lead to). Everything
#: that moves the machine is here; the README's diagram is drawn from it.
TRANSITIONS: dict[tuple[Phase, type], tuple[Handler, frozenset[Phase]]] = {
    (CLOSED, ev.Open): (_open, frozenset({OPENING, ACTIVE})),
    (CLOSED, ev.Restore): (_restore, frozenset({ACTIVE})),
    (CLOSED, ev.Resume): (_resume, frozenset({OPENING})),
    (CLOSED, ev.Close): (_close_closed, frozenset({CLOSED})),
    (PARKED, ev.Resume): (_resume, frozenset({OPENING})),
    (PARKED, ev.Park): (_park_parked, frozenset({PARKED})),
    (PARKED, ev.Close): (_close_parked, frozenset({CLOSED})),
    (OPENING, ev.GraphLoaded): (_opening_loaded, frozenset({OPENING, ACTIVE, CLOSED, PARKED})),
    (OPENING, ev.StampRead): (_stamp_read, frozenset({OPENING, ACTIVE, CLOSED, PARKED})),
    (OPENING, ev.EffectFailed): (_opening_failed, frozenset({CLOSED, PARKED})),
    (ACTIVE, ev.Append): (_append, frozenset({ACTIVE})),
    (ACTIVE, ev.Repair): (_repair, frozenset({ACTIVE})),
    (ACTIVE, ev.BranchTo): (_branch_to, frozenset({ACTIVE})),
    (ACTIVE, ev.ApplyToolState): (_apply_tool_state, frozenset({ACTIVE})),
    (ACTIVE, ev.RecordPluginState): (_record_plugin_state, frozenset({ACTIVE})),
    (ACTIVE, ev.SetCheckpoint): (_set_checkpoint, frozenset({ACTIVE})),
    (ACTIVE, ev.RecordAttachment): (_record_attachment, frozenset({ACTIVE})),
    (ACTIVE, ev.LoadNode): (_load_node, frozenset({ACTIVE})),
    (ACTIVE, ev.ListOrphans): (_list_orphans, frozenset({ACTIVE})),
    (ACTIVE, ev.Tombstone): (_tombstone, frozenset({ACTIVE})),
    (ACTIVE, ev.TombstoneOrphans): (_tombstone_orphans, frozenset({ACTIVE})),
    (ACTIVE, ev.Pin): (_pin, frozenset({ACTIVE})),
    (ACTIVE, ev.Unpin): (_pin, frozenset({ACTIVE})),
    (ACTIVE, ev.Fork): (_fork, frozenset({ACTIVE})),
    (ACTIVE, ev.Compact): (_compact, frozenset({ACTIVE})),
    (ACTIVE, ev.Uncompact): (_uncompact, frozenset({ACTIVE})),
    (ACTIVE, ev.Forked): (_forked, frozenset({ACTIVE})),
    (ACTIVE, ev.Save): (_save, frozenset({ACTIVE, COMMITTING})),
    (ACTIVE, ev.Park): (_park, frozenset({COMMITTING, PARKED})),
    (ACTIVE, ev.Close): (_close, frozenset({CLOSED})),
    (ACTIVE, ev.GraphLoaded): (_graph_loaded, frozenset({ACTIVE})),
    (ACTIVE, ev.LoadNodeResult): (_node_loaded, frozenset({ACTIVE})),
    (ACTIVE, ev.Tombstoned): (_tombstoned, frozenset({ACTIVE})),
    (ACTIVE, ev.IntentRecorded): (_intent_recorded, frozenset({ACTIVE})),
    (ACTIVE, ev.EffectFailed): (_active_failed, frozenset({ACTIVE})),
    (COMMITTING, ev.Committed): (_committed, frozenset({ACTIVE, PARKED})),
    (COMMITTING, ev.CommitConflicted): (_commit_conflicted, frozenset({ACTIVE})),
    (COMMITTING, ev.EffectFailed): (_active_failed, frozenset({ACTIVE, COMMITTING})),
    (COMMITTING, ev.GraphLoaded): (_graph_loaded, frozenset({COMMITTING})),
    (COMMITTING, ev.LoadNodeResult): (_node_loaded, frozenset({COMMITTING})),
    (COMMITTING, ev.Forked): (_forked, frozenset({COMMITTING})),
}


def mermaid() -> str:
    """The phase diagram, drawn from :data:`TRANSITIONS` (Mermaid text)."""
    edges: dict[tuple[Phase, Phase], list[str]] = {}
    for (phase, event_type), (_, targets) in TRANSITIONS.items():
        for target in sorted(targets):
            edges.setdefault((phase, target), []).append(event_type.__name__)
    lines = ["stateDiagram-v2", "    [*] --> closed"]
    for (phase, target), names in sorted(edges.items()):
        lines.append(f"    {phase.value} --> {target.value}: {', '.join(names)}")
    return "\n".join(lines) + "\n"
