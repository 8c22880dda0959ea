"""Reading node rows back: the stores' bulk decoder gives, row by row,
exactly what the one-row decoder gives (the same nodes, or the same
error naming the same node), for rows as stores write them and for rows
written behind a store's back."""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from lash_machine import CorruptRow, wire
from lash_machine.model import AgentFrame, SessionPolicy
from lash_machine.stores._rows import chained, decode_node, decode_nodes
from lash_machine.testing.strategies import json_values, policies, small_ids, times

_good = st.tuples(
    small_ids,
    st.none() | small_ids,
    st.sampled_from(["message", "event", "plugin", "summary"]),
    st.none() | st.sampled_from(["f1", "frame ü"]),
    st.floats(-1e12, 1e12) | st.integers(-(2**40), 2**40),
    json_values.map(lambda v: json.dumps(v, separators=(",", ":"))),
)
#: Values a store never writes in each column (or writes only rarely: an
#: integer time), for rows written behind its back.
_odd = (
    st.sampled_from([1, b"a", None, 1.5]),
    st.sampled_from([1, b"a", 1.5]),
    st.sampled_from(["", "bogus", 1, None]),
    st.sampled_from([1, b"a", 1.5]),
    st.sampled_from([math.inf, -math.inf, math.nan, True, 2**70, "1", None]),
    st.sampled_from(["", "{", " 1", "1 ", "1x", "{}{}", "NaN", "1e999", "[1,]", None, 1]),
)


@st.composite
def _rows(draw: st.DrawFn) -> tuple[Any, ...]:
    """A row as a store reads it (node columns, pinned, seq), with at most
    one column odd."""
    row = list(draw(_good))
    odd = draw(st.integers(-1, 5))
    if odd >= 0:
        row[odd] = draw(_odd[odd])
    return (*row, draw(st.integers(0, 1)), draw(st.integers(0, 99)))


def _one_by_one(rows: list[tuple[Any, ...]]) -> tuple[Any, ...] | str:
    try:
        return tuple(decode_node("s", row[:6]) for row in rows)
    except CorruptRow as exc:
        return f"{type(exc).__name__}: {exc}"


@given(st.lists(_rows(), max_size=6))
def test_decoding_rows_in_bulk_is_decoding_them_one_by_one(rows: list[tuple[Any, ...]]) -> None:
    try:
        bulk: tuple[Any, ...] | str = decode_nodes("s", rows)
    except CorruptRow as exc:
        bulk = f"{type(exc).__name__}: {exc}"
    assert bulk == _one_by_one(rows)


def test_a_corrupt_body_is_named_in_bulk_too() -> None:
    good = ("a", None, "message", None, 1.0, "{}")
    bad = ("b", "a", "message", None, 2.0, "{nope")
    assert [n.node_id for n in decode_nodes("s", [good])] == ["a"]
    with pytest.raises(CorruptRow, match="'b'"):
        decode_nodes("s", [good, bad])


def test_a_chain_is_a_root_then_each_row_a_child_of_the_one_before() -> None:
    assert chained([("a", None), ("b", "a"), ("c", "b")])
    assert not chained([])
    assert not chained([("b", "a"), ("c", "b")])  # no root first
    assert not chained([("a", None), ("c", "b"), ("b", "a")])  # out of order
    assert not chained([("a", None), ("b", "a"), ("c", "a")])  # a branch


_ODD_CASES = [
    (column, value)
    for column, values in enumerate(
        [
            [1, b"a", None, 1.5],
            [1, b"a", 1.5],
            ["", "bogus", 1, None],
            [1, b"a", 1.5],
            [math.inf, -math.inf, math.nan, True, 2**70, "1", None, 7],
            ["", "{", " 1", "1 ", "1x", "{}{}", "NaN", "1e999", "[1,]", None, 1],
        ]
    )
    for value in values
]


@pytest.mark.parametrize(("column", "value"), _ODD_CASES)
def test_each_odd_column_is_decoded_in_bulk_as_one_by_one(column: int, value: Any) -> None:
    root = ("r", None, "event", None, 1.0, "{}", 0, 0)
    child = ["b", "r", "message", "f1", 2.0, '{"k":[1]}', 1, 1]
    child[column] = value
    rows = [root, tuple(child)]
    try:
        bulk: tuple[Any, ...] | str = decode_nodes("s", rows)
    except CorruptRow as exc:
        bulk = f"{type(exc).__name__}: {exc}"
    assert bulk == _one_by_one(rows)


_ODD_VALUES = [None, True, 1, 2**64, 1.5, math.inf, "", "x", [], {}, {"id": "m"}, {"id": 1}]
_odd_values = st.sampled_from(_ODD_VALUES)


@st.composite
def _stored_records(draw: st.DrawFn) -> Any:
    """A policy or frame as stores write it, maybe with one value swapped,
    one key added or one key dropped (anywhere in it)."""
    policy = draw(policies)
    if draw(st.booleans()):
        record: Any = wire.unstructure(policy)
    else:
        frame = AgentFrame(
            draw(small_ids), draw(st.none() | small_ids), draw(small_ids), policy, draw(times)
        )
        record = wire.unstructure(frame)
    mapping = record
    while draw(st.booleans()):
        nested = [k for k, v in mapping.items() if isinstance(v, dict)]
        if not nested:
            break
        mapping = mapping[draw(st.sampled_from(nested))]
    how = draw(st.sampled_from(["none", "swap", "add", "drop"]))
    key = draw(st.sampled_from(sorted(mapping)))
    if how == "swap":
        mapping[key] = draw(_odd_values)
    elif how == "add":
        mapping["extra"] = 1
    elif how == "drop":
        del mapping[key]
    return record


def _judged(build: Any) -> Any:
    try:
        return build()
    except CorruptRow as exc:
        return f"CorruptRow: {exc}"


@given(_stored_records())
def test_policies_and_frames_read_back_as_the_codec_reads_them(data: Any) -> None:
    from lash_machine.stores._rows import _frame_of, _policy_of, _record

    if "frame_id" in data or "reason" in data:
        fast = _judged(lambda: _frame_of(copy.deepcopy(data), "s"))
        slow = _judged(lambda: _record(copy.deepcopy(data), AgentFrame, "s", "frames"))
    else:
        fast = _judged(lambda: _policy_of(copy.deepcopy(data), "s", "policy"))
        slow = _judged(lambda: _record(copy.deepcopy(data), SessionPolicy, "s", "policy"))
    assert fast == slow
    assert type(fast) is type(slow)


def _paths(record: dict[str, Any], at: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = []
    for key, value in record.items():
        found.append((*at, key))
        if isinstance(value, dict):
            found += _paths(value, (*at, key))
    return found


@pytest.mark.parametrize("kind", [SessionPolicy, AgentFrame])
def test_every_odd_value_anywhere_in_a_policy_or_frame_is_judged_as_the_codec_does(
    kind: type[Any],
) -> None:
    from lash_machine.stores._rows import _frame_of, _policy_of, _record
    from lash_machine.testing.records import POLICY

    base = wire.unstructure(
        POLICY if kind is SessionPolicy else AgentFrame("f", None, "initial", POLICY, 1.0)
    )

    def both(data: Any) -> tuple[Any, Any]:
        what = "policy" if kind is SessionPolicy else "frames"
        fast = (
            (lambda: _policy_of(data, "s", what))
            if kind is SessionPolicy
            else (lambda: _frame_of(data, "s"))
        )
        return _judged(fast), _judged(lambda: _record(copy.deepcopy(data), kind, "s", what))

    for path in _paths(base):
        for change in [*_ODD_VALUES, "drop", "add"]:
            data = copy.deepcopy(base)
            holder = data
            for key in path[:-1]:
                holder = holder[key]
            if change == "drop":
                del holder[path[-1]]
            elif change == "add":
                holder["extra"] = 1
            else:
                holder[path[-1]] = copy.deepcopy(change)
            fast, slow = both(data)
            assert fast == slow and type(fast) is type(slow), (path, change)
