"""Every (phase, event type) pair: valid ones transition, the rest raise
ProtocolError and leave the state as it was. Adding a row adds its test."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from machine_helpers import PHASES, POLICY, node, request_of, run, stored

from lash_machine import MachineState, Phase, ProtocolError, Residency, step, wire
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.checks import Addition
from lash_machine.machine import TRANSITIONS, mermaid
from lash_machine.state import Purpose, WarmSession

EVENT_TYPES: list[type] = sorted(
    {t for t in vars(ev).values() if isinstance(t, type) and t.__module__ == ev.__name__},
    key=lambda t: t.__name__,
)


def _pending(state: MachineState, purpose: Purpose) -> int:
    return next(p.request_id for p in state.outstanding.values() if p.purpose is purpose)


def _with_request(state: MachineState, command: Any, kind: type) -> tuple[MachineState, int]:
    state, out = run(state, command)
    return state, request_of(out, kind).request_id


# For each table row: (state in that phase) -> (prepared state, a valid event).
Prepare = Callable[[MachineState], tuple[MachineState, Any]]
VALID: dict[type, Prepare] = {
    ev.Open: lambda s: (s, ev.Open(POLICY, 2.0, session_id="s1")),
    ev.Restore: lambda s: (s, ev.Restore(PHASES[Phase.ACTIVE]().session, POLICY, 2.0)),  # type: ignore[arg-type]
    ev.Resume: lambda s: (s, ev.Resume(PHASES[Phase.PARKED]().parked, 3.0)),  # type: ignore[arg-type]
    ev.Append: lambda s: (s, ev.Append((node("z", "b"),))),
    ev.Repair: lambda s: (
        s,
        ev.Repair("a-check", (Addition({"role": "tool", "tool_call_id": "c1"}),), ("r1",), 2.0),
    ),
    ev.BranchTo: lambda s: (s, ev.BranchTo("c")),
    ev.ApplyToolState: lambda s: (s, ev.ApplyToolState(0, {"tools": []})),
    ev.RecordPluginState: lambda s: (s, ev.RecordPluginState({"p": 1})),
    ev.SetCheckpoint: lambda s: (s, ev.SetCheckpoint({"cp": 1})),
    ev.RecordAttachment: lambda s: (s, ev.RecordAttachment("att", "file:///x", 2.0)),
    ev.LoadNode: lambda s: (s, ev.LoadNode("elsewhere")),
    ev.ListOrphans: lambda s: (s, ev.ListOrphans()),
    ev.TombstoneOrphans: lambda s: (s, ev.TombstoneOrphans()),
    ev.Pin: lambda s: (s, ev.Pin("c")),
    ev.Unpin: lambda s: (s, ev.Unpin("c")),
    ev.Fork: lambda s: (s, ev.Fork("copy", 2.0, "b")),
    ev.Tombstone: lambda s: (s, ev.Tombstone(("c",))),
    ev.Compact: lambda s: (s, ev.Compact("a", {"summary": "a"}, "sum", 2.0)),
    ev.Uncompact: lambda s: (
        run(s, ev.Compact("a", {"summary": "a"}, "sum", 2.0))[0],
        ev.Uncompact("sum"),
    ),
    ev.Save: lambda s: (s, ev.Save()),
    ev.Park: lambda s: (s, ev.Park()),
    ev.Close: lambda s: (s, ev.Close(discard=True)),
}


def _result(state: MachineState, event_type: type) -> tuple[MachineState, Any]:
    phase = state.phase
    if phase is Phase.OPENING:
        rid = _pending(state, Purpose.OPEN)
        if event_type is ev.GraphLoaded:
            return state, ev.GraphLoaded(rid, None)
        return state, ev.EffectFailed(rid, "store_error", "disk on fire")
    if phase is Phase.COMMITTING:
        if event_type is ev.Committed:
            return state, ev.Committed(_pending(state, Purpose.COMMIT_SAVE), 2)
        if event_type is ev.CommitConflicted:
            return state, ev.CommitConflicted(_pending(state, Purpose.COMMIT_SAVE), 5)
        if event_type is ev.EffectFailed:
            return state, ev.EffectFailed(_pending(state, Purpose.COMMIT_SAVE), "store_error", "x")
    if event_type is ev.GraphLoaded:
        assert state.phase is Phase.ACTIVE or state.phase is Phase.COMMITTING
        read = stored(state)
        if phase is Phase.COMMITTING:
            return state, None  # prepared by _committing_query below
        state, rid = _with_request(state, ev.ListOrphans(), fx.LoadGraph)
        return state, ev.GraphLoaded(rid, read)
    if event_type is ev.LoadNodeResult:
        if phase is Phase.COMMITTING:
            return state, None
        state, rid = _with_request(state, ev.LoadNode("elsewhere"), fx.LoadNode)
        return state, ev.LoadNodeResult(rid, None)
    if event_type is ev.Tombstoned:
        state, rid = _with_request(state, ev.Tombstone(("c",)), fx.TombstoneNodes)
        return state, ev.Tombstoned(rid, 1)
    if event_type is ev.IntentRecorded:
        state, rid = _with_request(
            state, ev.RecordAttachment("a1", "u", 1.0), fx.RecordAttachmentIntent
        )
        return state, ev.IntentRecorded(rid)
    if event_type is ev.EffectFailed:
        state, rid = _with_request(state, ev.LoadNode("elsewhere"), fx.LoadNode)
        return state, ev.EffectFailed(rid, "store_error", "x")
    raise AssertionError(f"no valid {event_type.__name__} for {phase}")


def _warm_resume() -> tuple[MachineState, int]:
    """A parked machine resuming with the session it parked in hand."""
    active = PHASES[Phase.ACTIVE]()
    state, out = run(active, ev.Append((node("d", "b"),)), ev.Park())
    state, out = step(state, ev.Committed(request_of(out, fx.Commit).request_id, 2))
    parked = request_of(out, fx.ReplyParked)
    # Made by a commit with an id: a copy of one made without is never used.
    warm = WarmSession(attrs.evolve(parked.session, created_by="c1"), Residency.KEEP_ALL)
    state, out = step(state, ev.Resume(parked.parked, 3.0, warm=warm))
    return state, request_of(out, fx.ReadStamp).request_id


def _valid(phase: Phase, event_type: type) -> tuple[MachineState, Any]:
    if event_type is ev.StampRead:
        state, rid = _warm_resume()
        return state, ev.StampRead(rid, None)
    if event_type is ev.Forked:
        state, rid = _with_request(
            PHASES[Phase.ACTIVE](), ev.Fork("copy", 2.0, "b"), fx.ForkSession
        )
        if phase is Phase.COMMITTING:
            state, _ = run(state, ev.Append((node("q", "b"),)), ev.Save())
        return state, ev.Forked(rid, 1)
    if phase is Phase.COMMITTING and event_type in (ev.GraphLoaded, ev.LoadNodeResult):
        # Queries issued while active, answered while the commit is in flight.
        state = PHASES[Phase.ACTIVE]()
        if event_type is ev.GraphLoaded:
            state, rid = _with_request(state, ev.ListOrphans(), fx.LoadGraph)
            read = stored(state)
            state, _ = run(state, ev.Append((node("q", "b"),)), ev.Save())
            return state, ev.GraphLoaded(rid, read)
        state, rid = _with_request(state, ev.LoadNode("elsewhere"), fx.LoadNode)
        state, _ = run(state, ev.Append((node("q", "b"),)), ev.Save())
        return state, ev.LoadNodeResult(rid, None)
    state = PHASES[phase]()
    if event_type in VALID:
        return VALID[event_type](state)
    return _result(state, event_type)


def _any_instance(event_type: type) -> Any:
    for phase in PHASES:
        if (phase, event_type) in TRANSITIONS:
            return _valid(phase, event_type)[1]
    raise AssertionError(f"{event_type.__name__} is in no row of the table")


@pytest.mark.parametrize("phase", list(Phase), ids=lambda p: p.value)
@pytest.mark.parametrize("event_type", EVENT_TYPES, ids=lambda t: t.__name__)
def test_every_phase_event_pair(phase: Phase, event_type: type) -> None:
    if (phase, event_type) in TRANSITIONS:
        state, event = _valid(phase, event_type)
        assert state.phase is phase
        before = wire.dumps(state)
        new, effects = step(state, event)
        _, targets = TRANSITIONS[(phase, event_type)]
        assert new.phase in targets, f"{event_type.__name__} led to {new.phase}"
        assert wire.dumps(state) == before, "the input state was mutated"
        assert effects or new != state, "a valid transition did nothing"
    else:
        state = PHASES[phase]()
        event = _any_instance(event_type)
        before = wire.dumps(state)
        with pytest.raises(ProtocolError) as info:
            step(state, event)
        assert info.value.phase == phase.value
        assert info.value.event == event_type.__name__
        assert wire.dumps(state) == before


def test_every_event_type_has_a_row() -> None:
    assert {t for (_, t) in TRANSITIONS} == set(EVENT_TYPES)


def test_committed_diagram_is_drawn_from_the_table() -> None:
    doc = (Path(__file__).parent.parent / "docs" / "lifecycle.md").read_text()
    assert mermaid() in doc, "docs/lifecycle.md is stale: paste lash_machine.machine.mermaid()"
