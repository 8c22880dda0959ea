"""The conformance suite against every store this package ships."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import attrs
import pytest

from lash_machine.stores.base import SessionStore
from lash_machine.stores.memory import MemoryStore
from lash_machine.stores.sqlite import SQLiteStore
from lash_machine.testing.conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    persistent = False

    def make_store(self, tmp_path: Path) -> SessionStore:
        return MemoryStore()

    def corrupt_node(
        self, store: SessionStore, session_id: str, node_id: str, column: str, value: str
    ) -> None:
        assert isinstance(store, MemoryStore)
        node = store._sessions[session_id].nodes[node_id]
        index = {"kind": 2, "body": 5}[column]
        node.row = (*node.row[:index], value, *node.row[index + 1 :])  # type: ignore[assignment]

    def corrupt_session(
        self, store: SessionStore, session_id: str, column: str, value: str
    ) -> None:
        assert isinstance(store, MemoryStore)
        session = store._sessions[session_id]
        session.row = attrs.evolve(session.row, **{column: value})

    def set_schema_version(self, store: SessionStore, version: int) -> None:
        pytest.skip("MemoryStore has no schema: nothing outlives the process")


class TestSQLiteStore(StoreConformance):
    def make_store(self, tmp_path: Path) -> SessionStore:
        return SQLiteStore(tmp_path / "store.db")

    def _raw(self, store: SessionStore, sql: str, params: tuple[object, ...]) -> None:
        assert isinstance(store, SQLiteStore)
        conn = sqlite3.connect(store.path, isolation_level=None)
        try:
            conn.execute(sql, params)
        finally:
            conn.close()

    def corrupt_node(
        self, store: SessionStore, session_id: str, node_id: str, column: str, value: str
    ) -> None:
        assert column in {"body", "kind"}
        self._raw(
            store,
            f"UPDATE lash_nodes SET {column} = ? WHERE session_id = ? AND node_id = ?",
            (value, session_id, node_id),
        )

    def corrupt_session(
        self, store: SessionStore, session_id: str, column: str, value: str
    ) -> None:
        assert column == "policy"
        self._raw(
            store, "UPDATE lash_sessions SET policy = ? WHERE session_id = ?", (value, session_id)
        )

    def set_schema_version(self, store: SessionStore, version: int) -> None:
        self._raw(store, f"PRAGMA user_version = {int(version)}", ())
