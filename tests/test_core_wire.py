"""The wire codec: every message round-trips, to a copy that behaves as
the original does; malformed input is a WireError with a path."""

from __future__ import annotations

import json
from collections import deque
from typing import Any

import attrs
import immutables
import pytest
from hypothesis import given
from hypothesis import strategies as st
from machine_helpers import POLICY, node, request_of, run

from lash_machine import (
    FullGraph,
    MachineState,
    NodeKind,
    ParkedSession,
    Phase,
    Residency,
    SessionGraph,
    SessionNode,
    WireError,
    events,
    step,
    wire,
)
from lash_machine import effects as fx
from lash_machine.drivers.store_effects import carry_out
from lash_machine.state import Purpose
from lash_machine.stores import MemoryStore
from lash_machine.testing.strategies import effects, machine_states
from lash_machine.testing.strategies import events as all_events

RESULTS = (
    events.GraphLoaded,
    events.LoadNodeResult,
    events.Committed,
    events.CommitConflicted,
    events.Tombstoned,
    events.IntentRecorded,
    events.EffectFailed,
)


def same(a: Any, b: Any) -> bool:
    """Equal, and of the same types all the way down: a decoded copy must
    hold enum members where the original does (a StrEnum member equals its
    text, but the reducer compares members with ``is``)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, SessionGraph):
        return a.leaf_id == b.leaf_id and same(a.nodes, b.nodes)
    if attrs.has(type(a)):
        return all(same(getattr(a, f.name), getattr(b, f.name)) for f in attrs.fields(type(a)))
    if isinstance(a, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict | immutables.Map):
        return set(a.keys()) == set(b.keys()) and all(same(a[k], b[k]) for k in a)
    return bool(a == b)


def round_trip(message: Any) -> Any:
    return wire.loads(wire.dumps(message))


@given(all_events())
def test_events_round_trip(event: Any) -> None:
    text = wire.dumps(event)
    assert same(wire.loads(text), event)
    assert json.loads(text)["format"] == wire.WIRE_FORMAT


@given(effects())
def test_effects_round_trip(effect: Any) -> None:
    assert same(round_trip(effect), effect)


@given(machine_states())
def test_machine_states_round_trip(state: MachineState) -> None:
    decoded = wire.loads(wire.dumps(state), MachineState)
    assert decoded == state and same(decoded, state)


# ---- behaviour: the decoded copy steps as the original does ------------------------


@st.composite
def states_and_events(draw: st.DrawFn) -> tuple[MachineState, Any]:
    """A machine state and an event for it: any event, or (half the time
    when the state waits for something) a result for a request it waits for."""
    state = draw(machine_states())
    if state.outstanding and draw(st.booleans()):
        request_id = draw(st.sampled_from(sorted(state.outstanding)))
        result = draw(all_events(*RESULTS))
        return state, attrs.evolve(result, request_id=request_id)
    return state, draw(all_events())


def outcome(state: MachineState, event: Any) -> Any:
    """What step does: the new state and effects, or the exception's type."""
    try:
        return step(state, event)
    except Exception as error:  # compared by type: original vs decoded copy
        return type(error)


@given(states_and_events())
def test_decoded_states_and_events_step_as_the_originals_do(pair: Any) -> None:
    state, event = pair
    decoded_state = wire.loads(wire.dumps(state), MachineState)
    decoded_event = round_trip(event)
    expected = outcome(state, event)
    got = outcome(decoded_state, decoded_event)
    assert same(got, expected), f"{event!r:.200} on a decoded {state.phase.value} state"


# ---- enums decode to their members ---------------------------------------------------


def drive(store: MemoryStore, state: MachineState, *commands: Any) -> tuple[MachineState, list]:  # type: ignore[type-arg]
    """Step the commands, carrying every store effect out against ``store``."""
    out: list[fx.Effect] = []
    for command in commands:
        state, effects_ = step(state, command)
        queue = deque(effects_)
        while queue:
            effect = queue.popleft()
            out.append(effect)
            if isinstance(effect, fx.StoreRequest):
                state, more = step(state, carry_out(store, effect).result)
                queue.extend(more)
    return state, out


def test_a_decoded_active_path_handle_resumes_with_only_the_path_resident() -> None:
    store = MemoryStore()
    lean = events.Open(POLICY, 1.0, "s52", residency=Residency.ACTIVE_PATH_ONLY)
    side = tuple(node(f"o{i}", "r") for i in range(50))
    state, out = drive(
        store,
        MachineState.initial(),
        lean,
        events.Append((node("r", None), *side)),
        events.Append((node("a", "r"),)),
        events.Park(),
    )
    parked = request_of(out, fx.ReplyParked).parked
    stored = store.load_graph("s52", FullGraph())
    assert stored is not None and len(stored.nodes) == 52

    decoded = wire.loads(wire.dumps(parked), ParkedSession)
    assert decoded.residency is Residency.ACTIVE_PATH_ONLY
    state, out = drive(store, MachineState.initial(), events.Resume(decoded, 2.0))
    assert state.phase is Phase.ACTIVE and state.session is not None
    assert [n.node_id for n in state.session.graph] == ["r", "a"]
    assert request_of(out, fx.ReplyReady).view.resident_nodes == 2


def test_a_machine_decoded_mid_park_parks_when_the_commit_succeeds() -> None:
    state, _ = drive(MemoryStore(), MachineState.initial(), events.Open(POLICY, 1.0, "s1"))
    state, out = run(state, events.Append((node("a", None),)), events.Park())
    commit = request_of(out, fx.Commit)
    decoded = wire.loads(wire.dumps(state), MachineState)
    assert decoded.outstanding[commit.request_id].purpose is Purpose.COMMIT_PARK
    after, out = step(decoded, events.Committed(commit.request_id, 1))
    assert after.phase is Phase.PARKED
    assert [type(e) for e in out if isinstance(e, fx.ReplyParked | fx.ReplySaved)] == [
        fx.ReplyParked
    ]


@pytest.mark.parametrize(
    ("message", "path", "fragment"),
    [
        (
            ParkedSession("s", POLICY, 2, Residency.KEEP_ALL),
            ("residency",),
            "unknown value 'bogus' for Residency",
        ),
        (
            events.Append((SessionNode("a", None, NodeKind.MESSAGE, {}, None, 1.0),)),
            ("nodes", 0, "kind"),
            "unknown value 'bogus' for NodeKind",
        ),
        (
            events.Open(POLICY, 1.0, "s"),
            ("residency",),
            "unknown value 'bogus' for Residency",
        ),
    ],
)
def test_an_unknown_enum_value_is_a_wire_error_with_its_path(
    message: Any, path: tuple[Any, ...], fragment: str
) -> None:
    data = wire.to_json(message)
    target = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = "bogus"
    with pytest.raises(WireError) as info:
        wire.loads(json.dumps(data))
    where = "$" + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in path)
    assert f"{fragment} (one of" in str(info.value)
    assert any(error.endswith(f"@ {where}") for error in info.value.errors)


def test_machine_state_enums_are_checked() -> None:
    state, _ = run(MachineState.initial(), events.Open(POLICY, 1.0, "s1"))
    data = wire.to_json(state)
    for field, bad in (("phase", "asleep"), ("residency", "some")):
        broken = {**data, field: bad}
        with pytest.raises(WireError, match=rf"@ \$\.{field}"):
            wire.from_json(broken)
    data["outstanding"][0]["purpose"] = "gossip"
    with pytest.raises(WireError, match=r"for Purpose .* @ \$\.outstanding\[0\]\.purpose"):
        wire.from_json(data)


def test_bad_field_is_named_with_its_path() -> None:
    text = json.dumps(
        {
            "format": wire.WIRE_FORMAT,
            "type": "events.Append",
            "nodes": [
                {
                    "node_id": "a",
                    "parent_id": 7,
                    "kind": "message",
                    "body": {},
                    "frame_id": None,
                    "created_at": 1.0,
                }
            ],
        }
    )
    with pytest.raises(WireError) as info:
        wire.loads(text)
    assert any("$.nodes[0].parent_id" in error for error in info.value.errors)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("not json", "malformed JSON"),
        ("[1]", "expected an object"),
        ('{"type": "events.Save"}', "format"),
        ('{"format": 99, "type": "events.Save"}', "format"),
        ('{"format": 1, "type": "events.Nope"}', "no message type"),
        ('{"format": 1, "type": "events.Save", "extra": 1}', "extra"),
        ('{"format": 1, "type": "events.Close", "discard": 1}', "bool"),
        (
            '{"format": 1, "type": "events.Committed", "request_id": true, "head_revision": 1}',
            "int",
        ),
        ('{"format": true, "type": "events.Save"}', "format must be 1, got True"),
        ('{"format": 1.0, "type": "events.Save"}', "format must be 1, got 1.0"),
        ('{"format": 1, "type": "events.Tombstone", "node_ids": {}}', "expected an array"),
        ('{"format": 1, "type": "events.Tombstone", "node_ids": "ab"}', "expected an array"),
        ('{"format": 1, "type": "events.Append", "nodes": ["a"]}', "expected an object"),
        (
            '{"format": 1, "type": "effects.LoadGraph", "request_id": 1, "session_id": "s",'
            ' "scope": {"type": "persisted.Everything"}}',
            "no type 'persisted.Everything'",
        ),
        (
            '{"format": 1, "type": "events.Committed", "request_id": 18446744073709551616,'
            ' "head_revision": 1}',
            "64 bits",
        ),
    ],
)
def test_malformed_messages_raise_wire_error(text: str, fragment: str) -> None:
    with pytest.raises(WireError) as info:
        wire.loads(text)
    assert fragment in str(info.value)


def test_expect_refuses_another_message_type() -> None:
    with pytest.raises(WireError, match="expected MachineState"):
        wire.loads(wire.dumps(events.Save()), MachineState)


def test_non_json_body_cannot_be_encoded() -> None:
    from lash_machine import NodeKind, SessionNode

    bad = events.Append((SessionNode("a", None, NodeKind.MESSAGE, {1, 2}, None, 0.0),))
    with pytest.raises(WireError):
        wire.dumps(bad)


# ---- fuzzing: mutated messages never crash the decoder -------------------------------------

_junk = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=5),
    st.just([]),
    st.just({}),
)


def _mutate(data: Any, draw: st.DrawFn) -> Any:
    if isinstance(data, dict) and data:
        key = draw(st.sampled_from(sorted(data)))
        action = draw(st.sampled_from(["drop", "junk", "recurse", "add"]))
        copy = dict(data)
        if action == "drop":
            del copy[key]
        elif action == "junk":
            copy[key] = draw(_junk)
        elif action == "add":
            copy[draw(st.text(max_size=4))] = draw(_junk)
        else:
            copy[key] = _mutate(copy[key], draw)
        return copy
    if isinstance(data, list) and data:
        i = draw(st.integers(0, len(data) - 1))
        copy = list(data)
        copy[i] = _mutate(copy[i], draw) if draw(st.booleans()) else draw(_junk)
        return copy
    return draw(_junk)


@given(st.data(), st.one_of(all_events(), effects(), machine_states()))
def test_mutated_messages_decode_or_raise_wire_error(data: st.DataObject, message: Any) -> None:
    mutated = _mutate(wire.to_json(message), data.draw)
    try:
        decoded = wire.from_json(mutated)
    except WireError:
        return
    # Whatever decodes is a real message that encodes again.
    wire.dumps(decoded)


# ---- strictness: what JSON text may carry, and what a field may hold ---------------


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
@pytest.mark.parametrize(
    "template",
    [
        '{"format": 1, "type": "events.SetCheckpoint", "data": {"deep": [1, %s]}}',
        '{"format": 1, "type": "events.RecordAttachment", "attachment_id": "a",'
        ' "uri": "u", "now": %s}',
        '{"format": 1, "type": "events.Save", "ignored": %s}',
    ],
)
def test_json_text_with_a_non_finite_number_is_refused_anywhere(token: str, template: str) -> None:
    with pytest.raises(WireError, match="malformed JSON"):
        wire.loads(template % token)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 10**400])
def test_float_fields_decoded_from_data_must_be_finite(bad: Any) -> None:
    data = wire.to_json(events.RecordAttachment("a", "file:///x", 1.0))
    data["now"] = bad
    with pytest.raises(WireError) as info:
        wire.from_json(data)
    assert info.value.errors[-1].endswith("@ $.now")
    assert "finite" in str(info.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), (1, 2), {1: "a"}, {"a"}, b"x"])
def test_json_payloads_decoded_from_data_must_be_json(bad: Any) -> None:
    data = wire.to_json(events.SetCheckpoint({"ok": True}))
    data["data"] = {"nested": [bad]}
    with pytest.raises(WireError, match=r"not JSON.* @ \$\.data"):
        wire.from_json(data)


def test_a_sequence_field_must_be_an_array() -> None:
    from lash_machine import StoredSession

    stored = StoredSession("s", 1, POLICY, (), "", (node("a", None),), "a")
    for bad, shown in (({}, "an object"), ({"a": 1}, "an object"), ("ab", "'ab'"), (3, "3")):
        data = wire.to_json(stored)
        data["nodes"] = bad
        with pytest.raises(WireError) as info:
            wire.loads(json.dumps(data), StoredSession)
        assert info.value.errors == (f"expected an array, got {shown} @ $.nodes",)


def test_a_duplicated_or_impossible_machine_state_is_refused() -> None:
    state, _ = run(MachineState.initial(), events.Open(POLICY, 1.0, "s1"))
    data = wire.to_json(state)
    with pytest.raises(WireError, match=r"outstanding twice @ \$\.outstanding"):
        wire.from_json({**data, "outstanding": data["outstanding"] * 2})
    with pytest.raises(WireError, match="below next_request_id"):
        wire.from_json({**data, "next_request_id": 1})
    with pytest.raises(WireError, match="'active' holds no session"):
        wire.from_json({**data, "phase": "active", "opening": None})


@pytest.mark.parametrize("depth", [900, 5000, 100_000])
def test_deep_nesting_is_a_wire_error_never_a_recursion_error(depth: int) -> None:
    body = "[" * depth + "]" * depth
    for text in (
        body,
        f'{{"format": 1, "type": "events.SetCheckpoint", "data": {body}}}',
        f'{{"format": 1, "type": "events.Append", "nodes": {body}}}',
    ):
        with pytest.raises(WireError):
            wire.loads(text)
