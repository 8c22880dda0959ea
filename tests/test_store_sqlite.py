"""SQLiteStore: the conformance suite on a real file, plus what only SQLite
has (file handling, PRAGMA user_version, locking across processes)."""

from __future__ import annotations

import functools
import sqlite3
import threading
from pathlib import Path

import pytest

from lash_machine.errors import CorruptRow, SchemaVersionMismatch, StoreError
from lash_machine.persisted import ActivePath, FullGraph
from lash_machine.stores.base import SCHEMA_VERSION, SessionStore
from lash_machine.stores.sqlite import SQLiteStore
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


def _raw(path: str, query: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


class TestSQLiteStore(StoreConformance):
    def make_store(self, tmp_path: Path) -> SessionStore:
        return SQLiteStore(tmp_path / "store.db")

    def corrupt_node(
        self, store: SessionStore, session_id: str, node_id: str, column: str, value: object
    ) -> None:
        assert isinstance(store, SQLiteStore)
        assert column in {"body", "kind", "created_at"}
        _raw(
            store.path,
            f"UPDATE lash_nodes SET {column} = ? WHERE session_id = ? AND node_id = ?",
            (value, session_id, node_id),
        )

    def hide_raw(self, store: SessionStore, session_id: str, node_id: str) -> None:
        assert isinstance(store, SQLiteStore)
        _raw(
            store.path,
            "UPDATE lash_nodes SET tombstoned = 1 WHERE session_id = ? AND node_id = ?",
            (session_id, node_id),
        )
        _raw(
            store.path,
            "UPDATE lash_sessions SET live_nodes = live_nodes - 1 WHERE session_id = ?",
            (session_id,),
        )

    def corrupt_session(
        self, store: SessionStore, session_id: str, column: str, value: str
    ) -> None:
        assert isinstance(store, SQLiteStore)
        assert column == "policy"
        _raw(
            store.path,
            "UPDATE lash_sessions SET policy = ? WHERE session_id = ?",
            (value, session_id),
        )

    def set_schema_version(self, store: SessionStore, version: int) -> None:
        assert isinstance(store, SQLiteStore)
        _raw(store.path, f"PRAGMA user_version = {int(version)}")


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "store.db")


def test_a_new_file_gets_wal_and_the_schema_version(db: str) -> None:
    SQLiteStore(db).close()
    assert _raw(db, "PRAGMA journal_mode") == [("wal",)]
    assert _raw(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError):
        SQLiteStore(path)


def test_a_foreign_database_is_refused(db: str) -> None:
    _raw(db, "CREATE TABLE something_else (x)")
    with pytest.raises(SchemaVersionMismatch) as caught:
        SQLiteStore(db)
    assert caught.value.found == 0
    assert _raw(db, "SELECT name FROM sqlite_master") == [("something_else",)]


def test_concurrent_openers_of_a_new_file_create_the_schema_once(db: str) -> None:
    def open_and_commit(i: int) -> int:
        store = SQLiteStore(db)
        try:
            return store.commit(make_commit(f"s{i}", None, [make_node("a")]))
        finally:
            store.close()

    assert run_threads(8, open_and_commit) == [1] * 8


def test_a_mistyped_column_is_a_corrupt_row(db: str) -> None:
    # SQLite columns take any type; a text timestamp is corruption, not a value.
    store = SQLiteStore(db)
    store.commit(make_commit("s", None, chain("n", 2)))
    _raw(db, "UPDATE lash_nodes SET created_at = 'noon' WHERE node_id = 'n1'")
    with pytest.raises(CorruptRow) as caught:
        store.load_graph("s", FullGraph())
    assert (caught.value.session_id, caught.value.node_id) == ("s", "n1")
    _raw(db, "UPDATE lash_sessions SET head_revision = 'x'")
    with pytest.raises(CorruptRow):
        store.load_graph("s", ActivePath("n0"))
    store.close()


def test_a_held_write_lock_times_out_as_a_store_error(db: str) -> None:
    store = SQLiteStore(db, timeout=0.2)
    store.commit(make_commit("s", None, [make_node("a")]))
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            store.commit(make_commit("s", 1, [make_node("b", "a")]))
        # Readers are not blocked by a writer under WAL.
        assert store.load_node("s", "a") is not None
    finally:
        blocker.rollback()
        blocker.close()
    assert store.commit(make_commit("s", 1, [make_node("b", "a")])) == 2
    store.close()


def test_threads_with_their_own_stores_race_one_winner_per_revision(db: str) -> None:
    setup = SQLiteStore(db)
    contenders, rounds = 8, 3
    prepare_race(setup, contenders, rounds)
    outcomes: list[RaceOutcome] = []
    barrier = threading.Barrier(contenders)
    opener = functools.partial(SQLiteStore, db)

    def contend(i: int) -> None:
        race_contender(opener, i, rounds, barrier, outcomes.append)

    assert run_threads(contenders, contend) == [None] * contenders
    check_race(setup, outcomes, contenders, rounds)
    setup.close()


def test_processes_race_one_winner_per_revision(db: str) -> None:
    setup = SQLiteStore(db)
    contenders, rounds = 4, 3
    prepare_race(setup, contenders, rounds)
    outcomes = race_in_processes(functools.partial(SQLiteStore, db), contenders, rounds)
    check_race(setup, outcomes, contenders, rounds)
    setup.close()


def test_the_active_path_query_only_probes_the_primary_key(db: str) -> None:
    from lash_machine.stores.sqlite import _SELECT_PATH

    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    try:
        plan = [row[3] for row in conn.execute("EXPLAIN QUERY PLAN " + _SELECT_PATH, ("s", "x"))]
    finally:
        conn.close()
    lookups = [step for step in plan if "lash_nodes" in step or step.startswith("SEARCH n")]
    assert lookups, plan
    assert all("USING PRIMARY KEY (session_id=? AND node_id=?)" in step for step in lookups), plan


def test_opening_and_reading_never_wait_for_the_write_lock(db: str) -> None:
    # A long writer holds the write lock; read-only work (the CLI's
    # `sessions`, `check`) opens the store and reads at once. A store that
    # took the lock to open would fail here with "database is locked".
    store = SQLiteStore(db)
    store.commit(make_commit("s", None, chain("n", 2)))
    store.close()
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        reader = SQLiteStore(db, timeout=0.2)
        try:
            assert [i.session_id for i in reader.list_sessions()] == ["s"]
            loaded = reader.load_graph("s", FullGraph())
            assert loaded is not None
            assert [n.node_id for n in loaded.nodes] == ["n0", "n1"]
            with pytest.raises(StoreError, match="locked"):
                reader.commit(make_commit("s", 1, [make_node("n2", "n1")]))
        finally:
            reader.close()
    finally:
        blocker.rollback()
        blocker.close()


def test_a_new_file_gets_its_schema_under_the_write_lock(db: str) -> None:
    # Only a new (empty) file takes the lock, to create the schema: an
    # opener that finds another one creating it waits, then sees it made.
    blocker = sqlite3.connect(db, isolation_level=None)
    blocker.execute("PRAGMA journal_mode = WAL")
    blocker.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(StoreError, match="locked"):
            SQLiteStore(db, timeout=0.2)
    finally:
        blocker.rollback()
        blocker.close()
    SQLiteStore(db).close()
    assert _raw(db, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


def test_close_leaves_a_transaction_in_flight_to_its_thread(tmp_path: Path) -> None:
    # A read abandoned by a cancelled call may still be running when its
    # store is closed: its connection must not be closed under it (that
    # can crash the interpreter), but by its thread once it is done.
    store = SQLiteStore(tmp_path / "s.db")
    inside, closed = threading.Event(), threading.Event()
    seen: list[object] = []

    def read() -> None:
        with store._transaction("BEGIN") as conn:
            inside.set()
            assert closed.wait(10)
            seen.append(conn.execute("SELECT count(*) FROM lash_sessions").fetchone()[0])
        seen.append(conn)

    thread = threading.Thread(target=read)
    thread.start()
    assert inside.wait(10)
    store.close()
    closed.set()
    thread.join(10)
    assert seen[0] == 0  # the statement after close() still ran
    conn = seen[1]
    assert isinstance(conn, sqlite3.Connection)
    with pytest.raises(sqlite3.ProgrammingError):  # and its thread closed it
        conn.execute("SELECT 1")
    with pytest.raises(StoreError, match="closed"):
        store.load_node("s", "n")


def test_each_commit_stores_its_own_policy_and_frames(tmp_path: Path) -> None:
    # The encoded policy and frames are reused by the objects' identity;
    # a commit with other objects (even equal ones) writes its own.
    import attrs

    from lash_machine import ModelSpec, SessionPolicy

    store = SQLiteStore(tmp_path / "s.db")
    first = make_commit("s", None, [make_node("a", None, {})])
    store.commit(first)
    other = SessionPolicy(ModelSpec("another-model", context_window=10), provider_id="x")
    store.commit(attrs.evolve(make_commit("s", 1, [make_node("b", "a", {})]), policy=other))
    stored = store.load_graph("s", FullGraph())
    assert stored is not None and stored.policy == other
    store.commit(attrs.evolve(make_commit("s", 2, [make_node("c", "b", {})]), policy=first.policy))
    stored = store.load_graph("s", FullGraph())
    assert stored is not None and stored.policy == first.policy
    store.close()


def test_a_tombstone_finds_pinned_rows_by_their_index(tmp_path: Path) -> None:
    from lash_machine.stores.sqlite import _SELECT_PINNED

    path = tmp_path / "s.db"
    SQLiteStore(path).close()
    conn = sqlite3.connect(path)
    plan = conn.execute("EXPLAIN QUERY PLAN " + _SELECT_PINNED, ("s",)).fetchall()
    conn.close()
    assert any("lash_nodes_pinned" in row[3] for row in plan), plan
