"""The wire codec: every message round-trips; malformed input is a WireError."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lash_machine import MachineState, WireError, events, wire
from lash_machine.testing.strategies import effects, machine_states
from lash_machine.testing.strategies import events as all_events


@given(all_events())
def test_events_round_trip(event: Any) -> None:
    text = wire.dumps(event)
    assert wire.loads(text) == event
    assert json.loads(text)["format"] == wire.WIRE_FORMAT


@given(effects())
def test_effects_round_trip(effect: Any) -> None:
    assert wire.loads(wire.dumps(effect)) == effect


@given(machine_states())
def test_machine_states_round_trip(state: MachineState) -> None:
    assert wire.loads(wire.dumps(state), MachineState) == state


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
