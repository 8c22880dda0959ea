"""PostgresStore against a real server: the conformance suite, plus what
only PostgreSQL has (schema setup under an advisory lock, the pool, NUL)."""

from __future__ import annotations

import functools
import json
import math
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql

from lash_machine.errors import SchemaVersionMismatch, SessionDeleted, StoreError
from lash_machine.persisted import ActivePath, FullGraph, Reparent
from lash_machine.stores.base import SCHEMA_VERSION, SessionStore
from lash_machine.stores.postgres import _SELECT_PATH, PostgresStore, _array, _Native
from lash_machine.testing.conformance import StoreConformance
from lash_machine.testing.races import (
    RaceOutcome,
    check_race,
    prepare_race,
    race_contender,
    race_in_processes,
    run_threads,
)
from lash_machine.testing.records import chain, make_commit, make_node

pytestmark = pytest.mark.postgres


@pytest.fixture
def dsn(postgres_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh, empty schema, dropped afterwards:
    tests stay isolated without paying for a database each."""
    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(postgres_dsn, options=f"-c search_path={name}")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def _raw(dsn: str, query: str, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(query, params)


class TestPostgresStore(StoreConformance):
    supports_nul = False

    @pytest.fixture(autouse=True)
    def _dsn(self, dsn: str) -> None:
        self.dsn = dsn

    def make_store(self, tmp_path: Path) -> SessionStore:
        return PostgresStore(self.dsn, max_size=self.threads + 2)

    def corrupt_node(
        self, store: SessionStore, session_id: str, node_id: str, column: str, value: object
    ) -> None:
        assert column in {"body", "kind", "created_at"}
        _raw(
            self.dsn,
            f"UPDATE lash_nodes SET {column} = %s WHERE session_id = %s AND node_id = %s",
            (value, session_id, node_id),
        )

    def hide_raw(self, store: SessionStore, session_id: str, node_id: str) -> None:
        _raw(
            self.dsn,
            "UPDATE lash_nodes SET tombstoned = true WHERE session_id = %s AND node_id = %s",
            (session_id, node_id),
        )
        _raw(
            self.dsn,
            "UPDATE lash_sessions SET live_nodes = live_nodes - 1 WHERE session_id = %s",
            (session_id,),
        )

    def corrupt_session(
        self, store: SessionStore, session_id: str, column: str, value: str
    ) -> None:
        assert column == "policy"
        _raw(
            self.dsn,
            "UPDATE lash_sessions SET policy = %s WHERE session_id = %s",
            (value, session_id),
        )

    def set_schema_version(self, store: SessionStore, version: int) -> None:
        _raw(self.dsn, "UPDATE lash_schema SET version = %s", (version,))


def test_the_schema_version_is_stored(dsn: str) -> None:
    PostgresStore(dsn).close()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT version FROM lash_schema").fetchall() == [(SCHEMA_VERSION,)]


def test_concurrent_openers_of_an_empty_database_create_the_schema_once(dsn: str) -> None:
    def open_and_commit(i: int) -> int:
        store = PostgresStore(dsn)
        try:
            return store.commit(make_commit(f"s{i}", None, [make_node("a")]))
        finally:
            store.close()

    assert run_threads(8, open_and_commit) == [1] * 8
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT count(*) FROM lash_schema").fetchone() == (1,)


def test_tables_without_a_version_row_are_refused(dsn: str) -> None:
    _raw(dsn, "CREATE TABLE lash_sessions (x int)")
    with pytest.raises(SchemaVersionMismatch) as caught:
        PostgresStore(dsn)
    assert caught.value.found == 0


def test_an_unreachable_server_is_a_store_error() -> None:
    with pytest.raises(StoreError):
        PostgresStore("postgresql://nobody@127.0.0.1:1/none?connect_timeout=1", timeout=1.0)


def test_active_path_plans_probe_the_primary_key_even_when_generic(dsn: str) -> None:
    # A session of 50k nodes, 50 of them on the path. Whether planned for
    # these values or generically (as a prepared statement may be), the
    # path query probes the primary key and never scans the session.
    store = PostgresStore(dsn)
    store.commit(make_commit("s", None, chain("n", 50)))
    _raw(
        dsn,
        "INSERT INTO lash_nodes (session_id, node_id, seq, parent_id, kind, created_at, body)"
        " SELECT 's', 'off' || i, 100 + i, 'n0', 'message', 1.0, '{}'"
        " FROM generate_series(1, 50000) AS i",
    )
    _raw(dsn, "ANALYZE lash_nodes")
    loaded = store.load_graph("s", ActivePath())
    assert loaded is not None
    assert [n.node_id for n in loaded.nodes] == [f"n{i}" for i in range(50)]
    store.close()
    query = _SELECT_PATH.replace("%(sid)s", "$1").replace("%(leaf)s", "$2")
    for mode in ("force_custom_plan", "force_generic_plan"):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"SET plan_cache_mode = {mode}")
            conn.execute(f"PREPARE path_query (text, text) AS {query}")
            plan = "\n".join(
                row[0] for row in conn.execute("EXPLAIN EXECUTE path_query ('s', NULL)")
            )
        assert "Index Scan using lash_nodes_pkey" in plan, plan
        assert "Seq Scan on lash_nodes" not in plan, plan


def _rows_examined(plan: dict[str, Any], table: str) -> int:
    """Rows the plan's scans of ``table`` read (returned or filtered out)."""
    own = 0
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        own = plan["Actual Rows"] * plan["Actual Loops"]
        own += plan.get("Rows Removed by Filter", 0) + plan.get("Rows Removed by Index Recheck", 0)
    return own + sum(_rows_examined(child, table) for child in plan.get("Plans", ()))


def test_a_commit_reads_only_the_rows_it_names_on_a_fresh_table(dsn: str) -> None:
    # The commit statement runs as a generic plan, made once per connection
    # (see _configure). On a table not yet analyzed, that plan reached the
    # pin and repair updates by the session's seq index and filtered every
    # row of the session, even with nothing to pin or repair: 1 ms a commit
    # at 2,000 nodes, growing with the session.
    store = PostgresStore(dsn, min_size=1, max_size=1)
    nodes = chain("n", 2000)
    store.commit(make_commit("s", None, nodes))
    leaf = nodes[-1].node_id
    for head in range(1, 8):  # past psycopg's threshold: the statement is prepared
        store.commit(make_commit("s", head, [make_node(f"a{head}", leaf)]))
        leaf = f"a{head}"
    plans: list[str] = []
    with store._connection() as conn:
        conn.add_notice_handler(lambda diagnostic: plans.append(diagnostic.message_primary or ""))
        for setting in (
            "LOAD 'auto_explain'",
            "SET auto_explain.log_min_duration = 0",
            "SET auto_explain.log_analyze = on",
            "SET auto_explain.log_format = json",
            "SET auto_explain.log_level = notice",
        ):
            conn.execute(setting)
    # At the leaf, then a branch back (the path hint is cut at its parent):
    # the parent's liveness and its seq are primary-key probes; nothing
    # else of the session is read.
    for head, node in ((8, make_node("last", leaf)), (9, make_node("again", "n1500"))):
        plans.clear()
        assert store.commit(make_commit("s", head, [node])) == head + 1
        (logged,) = [text for text in plans if "lash_nodes" in text]
        plan = json.loads(logged[logged.index("{") :])["Plan"]
        assert _rows_examined(plan, "lash_nodes") <= 2, logged
    # A pin and a repair: one probe of each named node (and of the row it
    # finds), not a walk of the session.
    plans.clear()
    commit = make_commit("s", 10, [make_node("more", "again")], reparented=[Reparent("n10", None)])
    commit = attrs.evolve(commit, delta=attrs.evolve(commit.delta, pinned=("n5",)))
    assert store.commit(commit) == 11
    (logged,) = [text for text in plans if "lash_nodes" in text]
    plan = json.loads(logged[logged.index("{") :])["Plan"]
    assert _rows_examined(plan, "lash_nodes") <= 5, logged
    stored = store.load_graph("s", FullGraph())
    assert stored is not None
    assert "n5" in stored.pinned
    assert {n.node_id: n.parent_id for n in stored.nodes}["n10"] is None
    store.close()


def test_threads_with_their_own_stores_race_one_winner_per_revision(dsn: str) -> None:
    setup = PostgresStore(dsn)
    contenders, rounds = 8, 3
    prepare_race(setup, contenders, rounds)
    outcomes: list[RaceOutcome] = []
    barrier = threading.Barrier(contenders)
    opener = functools.partial(PostgresStore, dsn, max_size=2)

    def contend(i: int) -> None:
        race_contender(opener, i, rounds, barrier, outcomes.append)

    assert run_threads(contenders, contend) == [None] * contenders
    check_race(setup, outcomes, contenders, rounds)
    setup.close()


def test_processes_race_one_winner_per_revision(dsn: str) -> None:
    setup = PostgresStore(dsn)
    contenders, rounds = 4, 3
    prepare_race(setup, contenders, rounds)
    outcomes = race_in_processes(
        functools.partial(PostgresStore, dsn, max_size=2), contenders, rounds
    )
    check_race(setup, outcomes, contenders, rounds)
    setup.close()


def test_a_native_query_numbers_each_name_once_and_refuses_a_bare_percent() -> None:
    native = _Native.of("SELECT %(a)s, %(b)s::text, %(a)s")
    assert native.text == "SELECT $1, $2::text, $1"
    assert native.names == ("a", "b")
    for query in ("SELECT %s", "SELECT 100%% FROM t", "SELECT '%' || %(a)s"):
        with pytest.raises(ValueError, match="placeholders"):
            _Native.of(query)


def test_a_native_query_runs_with_its_named_parameters(dsn: str) -> None:
    native = _Native.of("SELECT %(b)s::int - %(a)s::int, %(a)s::int")
    with psycopg.connect(dsn) as conn:
        assert native.run(conn, {"a": 2, "b": 7}) == (5, 2)


_TEXT = st.text(st.characters(blacklist_characters="\x00", blacklist_categories=["Cs"]))


def test_an_array_parameter_reads_back_as_the_list_it_was_made_from(dsn: str) -> None:
    """The commit sends its arrays as array text; every value a node can
    carry (any text but NUL, every finite float, true, false, NULL) must
    come back as it went, or stored ids, bodies and times would change."""
    with psycopg.connect(dsn) as conn:

        @settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
        @given(
            texts=st.lists(st.one_of(st.none(), _TEXT, st.sampled_from(_AWKWARD))),
            floats=st.lists(st.floats(allow_nan=False, allow_infinity=False)),
            flags=st.lists(st.one_of(st.none(), st.booleans())),
        )
        def read_back(
            texts: list[str | None], floats: list[float], flags: list[bool | None]
        ) -> None:
            row = _Native.of("SELECT %(t)s::text[], %(f)s::float8[], %(b)s::bool[]").run(
                conn, {"t": _array(texts), "f": _array(floats), "b": _array(flags)}
            )
            assert row == (texts, floats, flags)
            assert [math.copysign(1, f) for f in row[1]] == [math.copysign(1, f) for f in floats]

        read_back()


#: Text that means something inside an array's text form.
_AWKWARD = ['"', "\\", "{", "}", ",", " ", "", "NULL", "null", '\\"', "a b", "{}", "\t\n"]


def test_awkward_text_is_stored_exactly_through_every_part_of_a_commit(dsn: str) -> None:
    """Ids, parents, bodies, pins and repairs each travel in one array of
    the commit statement: text with quotes, backslashes, braces, commas,
    blanks or the word NULL is stored as it was sent."""
    store = PostgresStore(dsn)
    try:
        ids = [f"n{i}{text}" for i, text in enumerate(_AWKWARD)]
        bodies = [{"text": text, text: [text]} for text in _AWKWARD]
        nodes = [
            make_node(node_id, ids[i - 1] if i else None, body, created_at=5e-324 * (i + 1))
            for i, (node_id, body) in enumerate(zip(ids, bodies, strict=True))
        ]
        store.commit(make_commit("s", None, nodes))
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None
        assert list(loaded.nodes) == nodes
        # A repair and a pin of stored nodes with such ids, and an append
        # that builds on one of them.
        child = make_node('tail "\\', ids[3], {"x": '"{,}"'})
        commit = make_commit("s", 1, [child], reparented=[Reparent(ids[5], ids[1])])
        store.commit(attrs.evolve(commit, delta=attrs.evolve(commit.delta, pinned=(ids[2],))))
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None
        by_id = {n.node_id: n for n in loaded.nodes}
        assert by_id[child.node_id] == child
        assert by_id[ids[5]].parent_id == ids[1]
        assert loaded.pinned == (ids[2],)
    finally:
        store.close()


class _Interleaved(PostgresStore):
    """A real store that lets another writer in between the two reads of
    an active path whose hint falls short."""

    between: Callable[[], object] | None = None
    walks = 0

    def _walk_rest(self, session_id: str, start: object) -> tuple[tuple[Any, Any], list[Any]]:
        self.walks += 1
        between, self.between = self.between, None
        if between is not None:
            between()
        return super()._walk_rest(session_id, start)


@pytest.mark.parametrize("change", ["reparent", "tombstone", "delete"])
def test_a_path_read_in_two_parts_never_mixes_two_states(dsn: str, change: str) -> None:
    writer = PostgresStore(dsn)
    reader = _Interleaved(dsn)
    nodes = [make_node("r"), make_node("a", "r"), make_node("b", "a"), make_node("x", "a")]
    writer.commit(make_commit("s", None, nodes, leaf_id="b"))
    _raw(dsn, "UPDATE lash_sessions SET path_hint = NULL")  # the read must walk

    def meanwhile() -> None:
        if change == "reparent":  # the path loses its root
            writer.commit(make_commit("s", 1, [], leaf_id="b", reparented=[Reparent("a", None)]))
        elif change == "tombstone":  # the generation moves, not the head
            writer.tombstone_nodes("s", ["x"])
        else:
            writer.delete_session("s")

    reader.between = meanwhile
    if change == "delete":
        with pytest.raises(SessionDeleted):
            reader.load_graph("s", ActivePath())
    else:
        read = reader.load_graph("s", ActivePath())
        assert read is not None
        states = {(1, 0): ["r", "a", "b"], (2, 0): ["a", "b"], (1, 1): ["r", "a", "b"]}
        assert [n.node_id for n in read.nodes] == states[(read.head_revision, read.generation)]
    # Read again in one snapshot by the walk alone: however busy the
    # session, a read takes two reads at most.
    assert reader.walks == 1
    writer.close()
    reader.close()
