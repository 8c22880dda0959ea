"""The lease conformance suite on every store: MemoryStore, SQLiteStore on
a real file, PostgresStore on a real server (a fresh schema per test)."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from lash_machine.stores import MemoryStore, SQLiteStore
from lash_machine.testing.conformance import LeaseConformance


class TestMemoryLeases(LeaseConformance):
    persistent = False

    def make_store(self, tmp_path: Path) -> Any:
        return MemoryStore()

    @contextmanager
    def hold_lease_locks(self, store: Any, session_ids: Sequence[str]) -> Iterator[None]:
        with store._lock:
            yield


class TestSQLiteLeases(LeaseConformance):
    def make_store(self, tmp_path: Path) -> Any:
        return SQLiteStore(tmp_path / "leases.db")

    @contextmanager
    def hold_lease_locks(self, store: Any, session_ids: Sequence[str]) -> Iterator[None]:
        blocker = sqlite3.connect(store.path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            blocker.rollback()
            blocker.close()


@pytest.fixture
def fresh_schema_dsn(postgres_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh schema, dropped afterwards."""
    name = f"lease_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(postgres_dsn, options=f"-c search_path={name}")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.postgres
class TestPostgresLeases(LeaseConformance):
    supports_nul = False

    @pytest.fixture(autouse=True)
    def _dsn(self, fresh_schema_dsn: str) -> None:
        self.dsn = fresh_schema_dsn

    def make_store(self, tmp_path: Path) -> Any:
        from lash_machine.stores import PostgresStore

        return PostgresStore(self.dsn, max_size=self.threads + 2)

    @contextmanager
    def hold_lease_locks(self, store: Any, session_ids: Sequence[str]) -> Iterator[None]:
        with psycopg.connect(self.dsn) as blocker:
            locked = blocker.execute(
                "SELECT session_id FROM lash_leases WHERE session_id = ANY(%s) FOR UPDATE",
                (list(session_ids),),
            ).fetchall()
            assert len(locked) == len(session_ids)
            yield
            blocker.rollback()
