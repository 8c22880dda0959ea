"""Wire fuzzing at volume: hypothesis generates valid messages (events,
effects, machine states, parked handles, stored sessions, commits), and
each one is mutated many times, both as a JSON structure (fields dropped,
replaced by hostile values, renamed, retagged, swapped, nested deep) and as
bytes (bits flipped, bytes inserted and cut, hostile tokens spliced in).

Every decode either gives a real message, which encodes again and decodes
to itself, or raises WireError; nothing else escapes. A decoded event fed
to the reducer raises nothing but the package's own errors.

CI: 100k decodes (about 200 messages x 500 mutations). Full
(``LASH_MACHINE_STRESS=full``): 1M.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_reliability_support import Timer, count, report

from lash_machine import (
    LashMachineError,
    MachineState,
    ModelSpec,
    SessionPolicy,
    WireError,
    step,
    wire,
)
from lash_machine import events as ev
from lash_machine.testing.strategies import (
    commits,
    effects,
    events,
    machine_states,
    stored_sessions,
)

POLICY = SessionPolicy(ModelSpec("fuzz-model"), provider_id="fuzz")
MESSAGES = count(200, 1000)
MUTATIONS = count(500, 1000)

#: Values that have broken decoders before: wrong types, edge numbers,
#: hostile strings, empty and deep containers.
HOSTILE: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    1,
    2**63,
    -(2**63) - 1,
    10**400,
    0.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "0",
    "1",
    "true",
    "null",
    "\x00",
    "\ud800",
    "\udfff lone",
    "é\u200b🧵",
    "x" * 10_000,
    "' OR '1'='1",
    "%s%n%x",
    [],
    [None],
    {},
    {"type": None},
    {"format": 1},
    {"": ""},
]

#: JSON fragments spliced into the text by the byte mutator.
TOKENS = [
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1e999",
    b"-0",
    b"null",
    b"true",
    b'"\\ud800"',
    b'"\\u0000"',
    b"[",
    b"]",
    b"{",
    b"}",
    b",",
    b":",
    b'"',
    b"\\",
    b"\xff",
    b"\xc3",
    b"[" * 2000,
    b"{}",
    b"[]",
]

MESSAGE_KINDS = st.one_of(
    events(),
    effects(),
    machine_states(),
    stored_sessions(),
    commits(),
)


# ---- structure mutations ---------------------------------------------------------------


def _children(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return list(value)
    if isinstance(value, list):
        return list(range(len(value)))
    return []


def _mutate_at(value: Any, rng: random.Random, depth: int = 0) -> Any:
    """A copy of ``value`` with one mutation somewhere inside; containers
    on the way down are copied, the rest is shared."""
    keys = _children(value)
    if keys and rng.random() < 0.75 and depth < 40:
        key = rng.choice(keys)
        copy: Any = dict(value) if isinstance(value, dict) else list(value)
        copy[key] = _mutate_at(copy[key], rng, depth + 1)
        if rng.random() < 0.25:
            return _mutate_container(copy, rng)
        return copy
    if keys and rng.random() < 0.5:
        return _mutate_container(value, rng)
    return _mutate_leaf(value, rng)


def _mutate_container(value: Any, rng: random.Random) -> Any:
    copy: Any = dict(value) if isinstance(value, dict) else list(value)
    keys = _children(copy)
    action = rng.randrange(6)
    if not keys:
        return rng.choice(HOSTILE)
    key = rng.choice(keys)
    if action == 0:  # drop a field or element
        del copy[key]
    elif action == 1 and isinstance(copy, dict):  # an unknown field
        copy[rng.choice(["extra", "Type", "type ", "__class__", str(key) + "_"])] = rng.choice(
            HOSTILE
        )
    elif action == 2 and isinstance(copy, dict):  # rename a field
        copy[str(key).upper() or "?"] = copy.pop(key)
    elif action == 3:  # swap two members
        other = rng.choice(keys)
        copy[key], copy[other] = copy[other], copy[key]
    elif action == 4 and isinstance(copy, list):  # duplicate or wrap
        copy.append(copy[key])
    else:
        copy[key] = [copy[key]] if rng.random() < 0.5 else {"type": "x", "value": copy[key]}
    return copy


def _mutate_leaf(value: Any, rng: random.Random) -> Any:
    roll = rng.random()
    if roll < 0.45:
        return rng.choice(HOSTILE)
    if isinstance(value, bool):
        return int(value) if roll < 0.7 else str(value).lower()
    if isinstance(value, int):
        near = float(value) if abs(value) < 2**1000 else 0.5
        return rng.choice([near, str(value), value + 1, -value, value * 10**30])
    if isinstance(value, float):
        return rng.choice([int(value) if math.isfinite(value) else 0, str(value), value * 1e300])
    if isinstance(value, str):
        tags = ["events.Append", "effects.Commit", "state.MachineState", "persisted.FullGraph"]
        return rng.choice([value[:-1], value + "\x00", value.upper(), *tags, "", value * 3])
    return _deep(rng.randrange(1, 3000))


def _deep(depth: int) -> Any:
    nested: Any = []
    for _ in range(depth):
        nested = [nested]
    return nested


# ---- byte mutations --------------------------------------------------------------------


def _mutate_bytes(text: bytes, rng: random.Random) -> bytes:
    data = bytearray(text)
    for _ in range(rng.randrange(1, 4)):
        if not data:
            data += rng.choice(TOKENS)
            continue
        at = rng.randrange(len(data))
        action = rng.randrange(6)
        if action == 0:
            data[at] ^= 1 << rng.randrange(8)
        elif action == 1:
            data.insert(at, rng.randrange(256))
        elif action == 2:
            del data[at : at + rng.randrange(1, 16)]
        elif action == 3:
            data[at:at] = rng.choice(TOKENS)
        elif action == 4:
            end = min(len(data), at + rng.randrange(1, 32))
            data[at:at] = data[at:end]
        else:
            del data[at:]
    return bytes(data)


# ---- the checks ------------------------------------------------------------------------


def _states() -> list[MachineState]:
    """States a decoded event is fed to (nothing but the package's errors
    may come out): closed, active in memory, and opening from a store (so a
    decoded result for request 1 is taken as the answer)."""
    closed = MachineState.initial()
    active, _ = step(closed, ev.Open(POLICY, 1.0, fresh_id="s", persistent=False))
    opening, _ = step(closed, ev.Open(POLICY, 1.0, session_id="s", persistent=True))
    return [closed, active, opening]


_STATES = _states()


def _decoded_ok(decode: Callable[[], Any]) -> bool:
    """Decode; a message must encode and decode to itself. Returns whether
    it decoded."""
    try:
        message = decode()
    except WireError:
        return False
    # What decodes encodes: a NaN, an infinity or a payload too deep for
    # JSON text is refused by the decoder, not left for the encoder.
    text = wire.dumps(message)
    assert wire.loads(text) == message, "a decoded message did not survive a round trip"
    if isinstance(message, ev.Event):
        for state in _STATES:
            with contextlib.suppress(LashMachineError):
                step(state, message)
    return True


def fuzz_message(message: Any, seed: int, mutations: int) -> tuple[int, int]:
    """Mutate ``message`` ``mutations`` times and decode each; return how
    many decodes ran and how many gave a message."""
    rng = random.Random(seed)
    data = wire.to_json(message)
    text = json.dumps(data).encode()
    decoded = 0
    for _ in range(mutations):
        if rng.random() < 0.5:
            mutated = data
            for _ in range(rng.randrange(1, 4)):
                mutated = _mutate_at(mutated, rng)
            ok = _decoded_ok(functools.partial(wire.from_json, mutated))
        else:
            ok = _decoded_ok(functools.partial(wire.loads, _mutate_bytes(text, rng)))
        decoded += ok
    return mutations, decoded


def test_mutated_wire_messages_only_ever_raise_wire_error() -> None:
    elapsed = Timer()
    totals = {"decodes": 0, "decoded": 0, "messages": 0}

    @settings(
        max_examples=MESSAGES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(MESSAGE_KINDS, st.integers(0, 2**32 - 1))
    def fuzz(message: Any, seed: int) -> None:
        runs, decoded = fuzz_message(message, seed, MUTATIONS)
        totals["decodes"] += runs
        totals["decoded"] += decoded
        totals["messages"] += 1

    fuzz()
    report("wire fuzz", seconds=elapsed(), **totals)
    assert totals["decodes"] >= MESSAGES * MUTATIONS
    # Most mutations break the message; some must survive, or the
    # mutator only ever produced junk and tested nothing past the parser.
    assert 0 < totals["decoded"] < totals["decodes"]


def test_what_the_fuzzer_found_stays_fixed() -> None:
    """Input that once escaped as RecursionError or ValueError (a repr of
    deeply nested or huge values in an error message; encoding a decoded
    message whose JSON payload nests too deeply)."""
    deep = _deep(5000)
    for bad in (
        {"format": 1, "type": deep},
        {"format": deep, "type": "events.Save"},
        {"format": 1, "type": 10**5000},
        {"format": 10**5000},
        {"format": 1, "type": "events.Open", "residency": deep},
    ):
        try:
            wire.from_json(bad)
        except WireError as error:
            assert len(str(error)) < 2000
        else:
            raise AssertionError(f"decoded {bad!r:.80}")
    # A payload nested deeper than the stores could write is refused where
    # it comes in (it once decoded, then failed to encode).
    try:
        wire.from_json({"format": 1, "type": "events.SetCheckpoint", "data": deep})
    except WireError as error:
        assert "nests deeper" in str(error)
    else:
        raise AssertionError("a 5000-deep payload was decoded")
