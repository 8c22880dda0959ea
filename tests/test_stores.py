"""The conformance suite against the in-memory reference store, and what
every store module promises on import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import attrs
import pytest

from lash_machine.stores import MemoryStore, SessionStore, SQLiteStore
from lash_machine.testing.conformance import StoreConformance


class TestMemoryStore(StoreConformance):
    persistent = False

    def make_store(self, tmp_path: Path) -> SessionStore:
        return MemoryStore()

    def corrupt_node(
        self, store: SessionStore, session_id: str, node_id: str, column: str, value: object
    ) -> None:
        assert isinstance(store, MemoryStore)
        node = store._sessions[session_id].nodes[node_id]
        index = {"kind": 2, "created_at": 4, "body": 5}[column]
        node.row = (*node.row[:index], value, *node.row[index + 1 :])  # type: ignore[assignment]

    def hide_raw(self, store: SessionStore, session_id: str, node_id: str) -> None:
        assert isinstance(store, MemoryStore)
        session = store._sessions[session_id]
        session.nodes[node_id].tombstoned = True
        session.live_nodes -= 1

    def corrupt_session(
        self, store: SessionStore, session_id: str, column: str, value: str
    ) -> None:
        assert isinstance(store, MemoryStore)
        session = store._sessions[session_id]
        session.row = attrs.evolve(session.row, **{column: value})

    def set_schema_version(self, store: SessionStore, version: int) -> None:
        pytest.skip("MemoryStore has no schema: nothing outlives the process")


def test_every_store_satisfies_the_protocol(tmp_path: Path) -> None:
    for store in (MemoryStore(), SQLiteStore(tmp_path / "s.db")):
        assert isinstance(store, SessionStore)
        store.close()


def test_importing_stores_does_not_import_psycopg() -> None:
    code = (
        "import sys, lash_machine.stores as s; "
        "assert 'psycopg' not in sys.modules, 'psycopg imported eagerly'; "
        "assert s.PostgresStore.__name__ == 'PostgresStore'; "
        "assert 'psycopg' in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attributes_of_the_package_raise() -> None:
    from lash_machine import stores

    with pytest.raises(AttributeError):
        _ = stores.NoSuchStore
