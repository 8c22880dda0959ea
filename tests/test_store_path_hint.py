"""The active path's hint on SQLite and PostgreSQL: what commits leave in
it, that a read of the usual session uses it alone, and that a wrong or
broken hint never changes what a read returns (it only costs a walk)."""

from __future__ import annotations

import json
import re
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from lash_machine.persisted import ActivePath, FullGraph, Reparent
from lash_machine.stores import SQLiteStore
from lash_machine.stores._rows import dump_hint, extended_hint, joined, parse_hint, ranges_of
from lash_machine.stores.base import SessionStore
from lash_machine.testing.records import make_commit, make_node


class Raw:
    """Reads and writes a store's session row behind its back."""

    def __init__(self, kind: str, where: Any) -> None:
        self.kind, self.where = kind, where

    def hint(self, session_id: str) -> Any:
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.where)
            try:
                (text,) = conn.execute(
                    "SELECT path_hint FROM lash_sessions WHERE session_id = ?", (session_id,)
                ).fetchone()
            finally:
                conn.close()
            return None if text is None else json.loads(text)
        with psycopg.connect(self.where) as conn:
            row = conn.execute(
                "SELECT path_hint FROM lash_sessions WHERE session_id = %s", (session_id,)
            ).fetchone()
        assert row is not None
        return row[0]

    def set_hint_text(self, session_id: str, text: str) -> None:
        """SQLite only: any text as the hint."""
        conn = sqlite3.connect(self.where)
        with conn:
            conn.execute(
                "UPDATE lash_sessions SET path_hint = ? WHERE session_id = ?", (text, session_id)
            )
        conn.close()

    def set_hint(self, session_id: str, hint: Any) -> None:
        text = None if hint is None else json.dumps(hint)
        if self.kind == "sqlite":
            conn = sqlite3.connect(self.where)
            with conn:
                conn.execute(
                    "UPDATE lash_sessions SET path_hint = ? WHERE session_id = ?",
                    (text, session_id),
                )
            conn.close()
            return
        with psycopg.connect(self.where, autocommit=True) as conn:
            conn.execute(
                "UPDATE lash_sessions SET path_hint = %s::jsonb WHERE session_id = %s",
                (text, session_id),
            )


@pytest.fixture(params=["sqlite", "postgres"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[SessionStore, Raw]]:
    if request.param == "sqlite":
        path = tmp_path / "s.db"
        store: SessionStore = SQLiteStore(path)
        yield store, Raw("sqlite", path)
        store.close()
        return
    from lash_machine.stores.postgres import PostgresStore

    base = request.getfixturevalue("postgres_dsn")
    name = f"h_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(base, options=f"-c search_path={name}")
    store = PostgresStore(dsn, max_size=2)
    yield store, Raw("postgres", dsn)
    store.close()
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def _path(store: SessionStore, leaf: str | None = None) -> list[str]:
    loaded = store.load_graph("s", ActivePath(leaf))
    assert loaded is not None
    return [n.node_id for n in loaded.nodes]


def _walked(store: SessionStore) -> list[str]:
    """The path by the full graph's parent pointers (the truth)."""
    loaded = store.load_graph("s", FullGraph())
    assert loaded is not None
    parents = {n.node_id: n.parent_id for n in loaded.nodes}
    chain, current = [], loaded.leaf_id
    while current is not None and current in parents:
        chain.append(current)
        current = parents[current]
    return chain[::-1]


def test_commits_keep_the_hint(stores: tuple[SessionStore, Raw]) -> None:
    store, raw = stores
    # a0 a1 a2 (seq 0-2), appended turn by turn at the leaf.
    store.commit(make_commit("s", None, [make_node("a0")]))
    store.commit(make_commit("s", 1, [make_node("a1", "a0"), make_node("a2", "a1")]))
    assert raw.hint("s") == [[0, 2]]
    # Back to a0 and on (seq 3-4): the hint is cut at a0 and goes on.
    store.commit(make_commit("s", 2, [make_node("b3", "a0"), make_node("b4", "b3")]))
    assert raw.hint("s") == [[0, 0], [3, 4]]
    assert _path(store) == ["a0", "b3", "b4"] == _walked(store)
    # To the old branch's tip (an orphan now), no append: worked out again.
    store.commit(make_commit("s", 3, [], leaf_id="a2"))
    assert raw.hint("s") == [[0, 2]]
    # A repair leaves no hint; the next commit works it out again.
    store.commit(make_commit("s", 4, [], leaf_id="a2", reparented=[Reparent("a1", None)]))
    assert raw.hint("s") is None
    assert _path(store) == ["a1", "a2"] == _walked(store)
    store.commit(make_commit("s", 5, [make_node("c5", "a2")]))
    assert raw.hint("s") == [[1, 2], [5, 5]]
    assert _path(store) == ["a1", "a2", "c5"]


def test_a_wrong_or_broken_hint_never_changes_a_read(stores: tuple[SessionStore, Raw]) -> None:
    store, raw = stores
    nodes = [make_node("r")] + [
        make_node(f"n{i}", "r" if i == 1 else f"n{i - 1}") for i in range(1, 6)
    ]
    store.commit(make_commit("s", None, [*nodes, make_node("x", "r")], leaf_id="n5"))
    truth = _walked(store)
    for hint in ([[0, 6]], [[2, 3]], [[100, 200]], [], [[0, 0]], None):
        raw.set_hint("s", hint)
        assert _path(store) == truth, hint
    if raw.kind == "sqlite":  # PostgreSQL keeps it in jsonb: only JSON gets in
        raw.set_hint("s", "not ranges")
        assert _path(store) == truth
        # Text no release wrote, JSON or not: tried, never trusted.
        for text in [
            "[1,2]",
            '[["a","b"]]',
            '{"x":[0,5]}',
            '[[0,"x"]]',
            "[[3,1]]",
            "[[0,2],[1,3]]",
            "[[0,5],[0,5]]",
            "[[5,5],[0,4]]",
            "[[0,",
            "null",
            "",
            # One range (read by a plain range scan) beyond what SQLite
            # holds, or below any seq.
            "[[0,9223372036854775808]]",
            "[[-9223372036854775809,3]]",
            "[[-5,100]]",
        ]:
            raw.set_hint_text("s", text)
            assert _path(store) == truth, text
    # A node on the hinted path tombstoned behind the store's back: the path
    # stops there, as the walk does.
    raw.set_hint("s", [[0, 5]])
    assert _path(store) == truth
    # Another leaf than the stored one is walked, whatever the hint.
    assert _path(store, "x") == ["r", "x"]


def test_a_wrong_or_short_hint_never_changes_a_copy(stores: tuple[SessionStore, Raw]) -> None:
    # A fork reads the path as a read does: where the hinted ranges fall
    # short, it walks the rest (it copied only the hinted part, or refused).
    store, raw = stores
    nodes = [make_node("r")] + [
        make_node(f"n{i}", "r" if i == 1 else f"n{i - 1}") for i in range(1, 6)
    ]
    store.commit(make_commit("s", None, [*nodes, make_node("x", "r")], leaf_id="n5"))
    truth = _walked(store)
    for number, hint in enumerate(([[0, 6]], [[2, 5]], [[0, 0]], [[100, 200]], [], None)):
        raw.set_hint("s", hint)
        store.fork_session("s", None, f"copy{number}")
        copy = store.load_graph(f"copy{number}", FullGraph())
        assert copy is not None and [n.node_id for n in copy.nodes] == truth, hint


def test_the_usual_read_uses_the_hint_alone(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    store.commit(make_commit("s", None, [make_node("a0")]))
    for i in range(1, 40):
        store.commit(make_commit("s", i, [make_node(f"a{i}", f"a{i - 1}")]))
    seen: list[str] = []
    conn = store._connection()
    conn.set_trace_callback(seen.append)
    try:
        assert len(_path(store)) == 40
    finally:
        conn.set_trace_callback(None)
        store.close()
    assert not any("RECURSIVE" in statement for statement in seen), seen
    assert not any("json_each" in statement for statement in seen), seen


def test_a_hint_survives_tombstones_and_vacuum_off_the_path(
    stores: tuple[SessionStore, Raw],
) -> None:
    store, _ = stores
    store.commit(make_commit("s", None, [make_node("r"), make_node("x", "r"), make_node("a", "r")]))
    assert store.tombstone_nodes("s", ["x"]) == 1
    store.vacuum()
    assert _path(store) == ["r", "a"]
    store.commit(make_commit("s", 1, [make_node("b", "a")]))
    assert _path(store) == ["r", "a", "b"] == _walked(store)


def test_sqlite_reads_the_hinted_ranges_by_the_seq_index(tmp_path: Path) -> None:
    # The plan, not a timing: each range is one search of the seq index,
    # never a scan of every node of the session (which makes a path read
    # cost the whole session once many nodes are off the path).
    from lash_machine.stores import sqlite as sqlite_store

    SQLiteStore(tmp_path / "s.db").close()
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        plan = [
            row[3]
            for row in conn.execute(
                "EXPLAIN QUERY PLAN " + sqlite_store._READ_RANGES, ("s", "[[0, 3]]")
            )
        ]
    finally:
        conn.close()
    assert plan[0].startswith("SCAN r"), plan  # the ranges outside
    assert plan[1].startswith("SEARCH n USING INDEX lash_nodes_by_seq"), plan
    # The usual hint, one range, is read by a statement of its own.
    conn = sqlite3.connect(tmp_path / "s.db")
    try:
        plan = [
            row[3]
            for row in conn.execute("EXPLAIN QUERY PLAN " + sqlite_store._READ_RANGE, ("s", 0, 3))
        ]
    finally:
        conn.close()
    assert plan == ["SEARCH n USING INDEX lash_nodes_by_seq (session_id=? AND seq>? AND seq<?)"], (
        plan
    )


# ---- extending a hint from its text ---------------------------------------------------


def _ascending(steps: list[tuple[int, int]], start: int = 0) -> list[tuple[int, int]]:
    """Ranges made of (gap, length) steps: ascending, as a path's are."""
    out, at = [], start
    for gap, length in steps:
        first = at + gap
        out.append((first, first + length))
        at = first + length + 1
    return ranges_of([s for first, last in out for s in range(first, last + 1)])


_ranges = st.lists(st.tuples(st.integers(0, 40), st.integers(0, 3)), max_size=6).map(_ascending)


@given(base=_ranges, steps=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 3)), max_size=3))
def test_a_hint_extended_from_its_text_is_the_hint_joined_in_full(
    base: list[tuple[int, int]], steps: list[tuple[int, int]]
) -> None:
    chain = _ascending(steps, base[-1][1] + 1 if base else 0)
    text = dump_hint(base)
    extended = extended_hint(text, chain)
    assert extended == dump_hint(joined(base, chain))
    assert parse_hint(extended) == joined(base, chain)


@given(text=st.one_of(st.none(), st.integers(), st.text(alphabet="[],0123456789 x-٣")))
def test_a_hint_text_not_written_here_is_never_extended_into_a_bad_one(text: object) -> None:
    extended = extended_hint(text, [(1000, 1001)])
    if extended is not None:  # only from text whose end is a hint's
        assert isinstance(text, str)
        assert text == "[]" or (text.endswith("]]") and text.startswith("[["))
        assert extended.endswith("[1000,1001]]") or extended.endswith(",1001]]")
        if parse_hint(text) is not None:
            assert parse_hint(extended) == joined(parse_hint(text) or [], [(1000, 1001)])


def test_a_sqlite_path_read_never_goes_over_the_whole_session(tmp_path: Path) -> None:
    # The plans, not a timing: every statement of an active-path load
    # (hinted or walked) finds its node rows by key or seq range; none of
    # them runs over every row of the session (a read of the pins that
    # did made the read cost the whole session once most of it is off
    # the path).
    path = tmp_path / "s.db"
    store = SQLiteStore(path)
    nodes = [make_node("r")]
    for i in range(1, 8):
        nodes += [make_node(f"n{i}", nodes[-1].node_id if i > 1 else "r")]
        nodes += [make_node(f"off{i}", f"n{i}")]
    store.commit(make_commit("s", None, nodes, leaf_id="n7"))
    pin = make_commit("s", 1, [], leaf_id="n7")
    store.commit(attrs.evolve(pin, delta=attrs.evolve(pin.delta, pinned=("n3",))))
    seen: list[str] = []
    conn = store._connection()
    conn.set_trace_callback(seen.append)
    try:
        hinted = store.load_graph("s", ActivePath())
        walked = store.load_graph("s", ActivePath("off4"))
    finally:
        conn.set_trace_callback(None)
        store.close()
    assert hinted is not None and hinted.pinned == ("n3",)
    assert walked is not None and [n.node_id for n in walked.nodes][-2:] == ["n4", "off4"]
    whole = re.compile(
        r"^(SCAN (lash_nodes|n)\b|SEARCH \w+ USING (PRIMARY KEY|INDEX \w+) \(session_id=\?\)$)"
    )
    reader = sqlite3.connect(path)
    try:
        for statement in seen:
            if not statement.lstrip().upper().startswith(("SELECT", "WITH")):
                continue
            plan = [row[3] for row in reader.execute("EXPLAIN QUERY PLAN " + statement)]
            assert not [
                step for step in plan if whole.match(step) and "lash_sessions" not in step
            ], (
                statement,
                plan,
            )
    finally:
        reader.close()
