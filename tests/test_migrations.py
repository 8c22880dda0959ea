"""The first real migration: a version-2 database (the committed SQLite
fixture, and the same rows built in PostgreSQL by the script that made it)
upgraded in place to version 3, with every row carried over, the schema of
a new database, healing clean, idempotent, refused unless asked for."""

from __future__ import annotations

import importlib.util
import multiprocessing
import shutil
import sqlite3
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import psycopg
import pytest
from psycopg import sql

from lash_machine import SchemaVersionMismatch, SessionGraph, heal_graph
from lash_machine.persisted import FullGraph
from lash_machine.stores import SCHEMA_VERSION, SessionStore, SQLiteStore, migrations
from lash_machine.stores.postgres import PostgresStore

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "schema-v2.sqlite3"


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_v2_fixture", ROOT / "scripts/make_v2_fixture.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


FIXTURE_SCRIPT = _script()


@pytest.fixture
def v2_file(tmp_path: Path) -> Path:
    path = tmp_path / "old.sqlite3"
    shutil.copy(FIXTURE, path)
    return path


def _expected_sessions() -> dict[str, Any]:
    """What the fixture script wrote, by session id."""
    return {entry[0]: entry for entry in FIXTURE_SCRIPT.SESSIONS}


def _check_carried_over(store: SessionStore) -> None:
    """Every session, node, intent and lease of the fixture reads back as
    the fixture wrote it, and every graph heals clean."""
    expected = _expected_sessions()
    infos = store.list_sessions()
    assert sorted(i.session_id for i in infos) == sorted(expected)
    for info in infos:
        sid, head, leaf, _, frames, frame, tools, plugins, checkpoint, updated, nodes = expected[
            info.session_id
        ]
        loaded = store.load_graph(sid, FullGraph())
        assert loaded is not None
        assert (loaded.head_revision, loaded.leaf_id, loaded.current_frame_id) == (
            head,
            leaf,
            frame,
        )
        assert [f.frame_id for f in loaded.frames] == [f["frame_id"] for f in frames]
        live = [n for n in nodes if not n[6]]
        assert [(n.node_id, n.parent_id, n.kind.value, n.body) for n in loaded.nodes] == [
            (n[0], n[1], n[2], n[5]) for n in live
        ]
        assert (loaded.tool_snapshot is None) == (tools is None)
        assert (loaded.plugin_snapshot is None) == (plugins is None)
        assert loaded.host_checkpoint == checkpoint
        # The best creation time a version-2 row knows: its last update.
        assert loaded.created_at == updated and info.updated_at == updated
        assert (loaded.generation, loaded.pinned, loaded.origin) == (0, (), None)
        assert heal_graph(SessionGraph.from_nodes(loaded.nodes, loaded.leaf_id))[1].is_clean
    hidden = store.load_node("branchy", "b3x")
    assert hidden is None  # still tombstoned
    assert [i.attachment_id for i in store.list_uncommitted(1e12)] == ["att-pending"]
    assert store.current_lease("linear").token == 3  # type: ignore[attr-defined]


def _columns_sqlite(path: Path) -> dict[str, list[tuple[str, str, int]]]:
    conn = sqlite3.connect(path)
    try:
        tables = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {
            table: [(r[1], r[2], r[3]) for r in conn.execute(f"PRAGMA table_info({table})")]
            for table in sorted(tables)
        }
    finally:
        conn.close()


def _indexes_sqlite(path: Path) -> set[str]:
    conn = sqlite3.connect(path)
    try:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()


# ---- SQLite --------------------------------------------------------------------------


def test_the_fixture_is_version_2() -> None:
    conn = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 2
    finally:
        conn.close()


def test_an_old_database_is_refused_with_the_command_to_upgrade_it(v2_file: Path) -> None:
    before = v2_file.read_bytes()
    with pytest.raises(SchemaVersionMismatch, match="lash-machine migrate") as refused:
        SQLiteStore(v2_file)
    assert (refused.value.found, refused.value.expected) == (2, SCHEMA_VERSION)
    assert v2_file.read_bytes() == before  # nothing written


def test_sqlite_migrates_in_place_to_the_schema_of_a_new_database(
    v2_file: Path, tmp_path: Path
) -> None:
    store = SQLiteStore(v2_file, migrate=True)
    try:
        _check_carried_over(store)
        # The upgraded database works as a new one does.
        from lash_machine.testing.records import make_commit, make_node

        store.commit(make_commit("linear", 1, [make_node("l4", "l3")], fencing_token=3))
        assert store.delete_session("empty") is True
    finally:
        store.close()
    fresh = tmp_path / "fresh.sqlite3"
    SQLiteStore(fresh).close()
    assert _columns_sqlite(v2_file) == _columns_sqlite(fresh)
    assert _indexes_sqlite(v2_file) == _indexes_sqlite(fresh)
    # Idempotent: a current database is left alone.
    again = SQLiteStore(v2_file, migrate=True)
    again.close()


def test_a_failed_migration_leaves_the_database_as_it_was(
    v2_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = _columns_sqlite(v2_file)
    broken = (*migrations.SQLITE[2][:-1], "ALTER TABLE no_such_table ADD COLUMN x TEXT")
    monkeypatch.setitem(migrations.SQLITE, 2, (*broken, migrations.SQLITE[2][-1]))
    with pytest.raises(Exception, match="no_such_table"):
        SQLiteStore(v2_file, migrate=True)
    assert _columns_sqlite(v2_file) == before
    monkeypatch.undo()
    SQLiteStore(v2_file, migrate=True).close()


def _migrate_in_child(path: str, results: Any) -> None:
    try:
        SQLiteStore(path, migrate=True).close()
        results.put("ok")
    except Exception as error:  # reported to the parent
        results.put(repr(error))


def test_concurrent_migrators_upgrade_once(v2_file: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    results = ctx.Queue()
    children = [
        ctx.Process(target=_migrate_in_child, args=(str(v2_file), results)) for _ in range(4)
    ]
    for child in children:
        child.start()
    for child in children:
        child.join(60)
    assert sorted(results.get(timeout=5) for _ in children) == ["ok"] * 4
    store = SQLiteStore(v2_file)
    try:
        _check_carried_over(store)
    finally:
        store.close()


def test_the_plan_runs_from_version_2_and_is_empty_when_current() -> None:
    plan = migrations.sqlite_plan(2)
    assert plan[-1] == f"PRAGMA user_version = {SCHEMA_VERSION}"
    assert migrations.sqlite_plan(SCHEMA_VERSION) == []
    assert migrations.postgres_plan(2)[-1].endswith(f"version = {SCHEMA_VERSION}")
    with pytest.raises(ValueError, match="no upgrade from schema version 1"):
        migrations.sqlite_plan(1)


# ---- PostgreSQL, from the same script ---------------------------------------------------


@pytest.fixture
def pg_dsn(postgres_dsn: str) -> Iterator[str]:
    name = f"m_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(postgres_dsn, options=f"-c search_path={name}")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def _columns_postgres(dsn: str) -> dict[str, list[tuple[str, str, str]]]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name, data_type, is_nullable FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
        ).fetchall()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        ).fetchall()
    found: dict[str, list[tuple[str, str, str]]] = {}
    for table, column, kind, nullable in rows:
        found.setdefault(table, []).append((column, kind, nullable))
    found["indexes"] = sorted((r[0], "", "") for r in indexes)
    return found


@pytest.mark.postgres
def test_postgres_migrates_in_place(pg_dsn: str, postgres_dsn: str) -> None:
    FIXTURE_SCRIPT.build_postgres(pg_dsn)
    with pytest.raises(SchemaVersionMismatch, match="lash-machine migrate"):
        PostgresStore(pg_dsn)
    store = PostgresStore(pg_dsn, migrate=True)
    try:
        _check_carried_over(store)
    finally:
        store.close()
    PostgresStore(pg_dsn, migrate=True).close()  # idempotent
    name = f"f_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    fresh = psycopg.conninfo.make_conninfo(postgres_dsn, options=f"-c search_path={name}")
    try:
        PostgresStore(fresh).close()
        assert _columns_postgres(pg_dsn) == _columns_postgres(fresh)
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))
