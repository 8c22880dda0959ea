"""Reaching each phase of the machine by real steps, for the core tests."""

from __future__ import annotations

from typing import Any

from lash_machine import MachineState, ModelSpec, NodeKind, Phase, SessionNode, SessionPolicy, step
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.persisted import StoredSession

POLICY = SessionPolicy(ModelSpec("model-x"), "provider-y")


def node(node_id: str, parent: str | None, kind: NodeKind = NodeKind.MESSAGE) -> SessionNode:
    return SessionNode(node_id, parent, kind, {"text": node_id}, None, 1.0)


def run(state: MachineState, *events: Any) -> tuple[MachineState, list[fx.Effect]]:
    """Step through events; return the last state and every effect."""
    out: list[fx.Effect] = []
    for event in events:
        state, effects = step(state, event)
        out += effects
    return state, out


def request_of(effects: list[fx.Effect], kind: type) -> Any:
    found = [e for e in effects if isinstance(e, kind)]
    assert found, f"no {kind.__name__} in {effects}"
    return found[-1]


def opening() -> MachineState:
    state, _ = run(MachineState.initial(), ev.Open(POLICY, 1.0, session_id="s1"))
    return state


def active() -> MachineState:
    """A persistent session with a committed branch a-b and an orphan c."""
    state = opening()
    state, _ = run(state, ev.GraphLoaded(1, None))
    state, _ = run(
        state, ev.Append((node("a", None), node("b", "a"))), ev.Append((node("c", "a"),))
    )
    state, _ = run(state, ev.BranchTo("b"))
    state, out = run(state, ev.Save())
    commit = request_of(out, fx.Commit)
    state, _ = run(state, ev.Committed(commit.request_id, 1))
    assert state.phase is Phase.ACTIVE
    return state


def committing() -> MachineState:
    state, _ = run(active(), ev.Append((node("d", "b"),)), ev.Save())
    assert state.phase is Phase.COMMITTING
    return state


def parked() -> MachineState:
    state, out = run(active(), ev.Append((node("d", "b"),)), ev.Park())
    commit = request_of(out, fx.Commit)
    state, _ = run(state, ev.Committed(commit.request_id, 2))
    assert state.phase is Phase.PARKED
    return state


PHASES = {
    Phase.CLOSED: MachineState.initial,
    Phase.OPENING: opening,
    Phase.ACTIVE: active,
    Phase.COMMITTING: committing,
    Phase.PARKED: parked,
}


def stored(state: MachineState) -> StoredSession:
    """What a store would return for the active session of ``state``."""
    session = state.session
    assert session is not None
    return StoredSession(
        session.session_id,
        session.head_revision or 1,
        session.policy,
        session.frames,
        session.current_frame_id,
        session.graph.nodes,
        session.graph.leaf_id,
    )
