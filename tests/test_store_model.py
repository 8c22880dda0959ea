"""Random operation sequences: SQLite and PostgreSQL must answer exactly as
the reference MemoryStore does, call for call and read for read."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import psycopg
import pytest
from hypothesis import given
from hypothesis import strategies as st
from psycopg import sql

from lash_machine.errors import HeadRevisionConflict, SessionDeleted, StoreError
from lash_machine.model import NodeKind, SessionNode
from lash_machine.persisted import ActivePath, AttachmentIntent, FullGraph, Reparent
from lash_machine.stores.base import SessionStore
from lash_machine.stores.memory import MemoryStore
from lash_machine.stores.sqlite import SQLiteStore
from lash_machine.testing.records import make_commit

SESSIONS = ["a", "b"]
NODE_IDS = [f"n{i}" for i in range(6)]
ATTACHMENTS = ["x", "y"]

node_ids = st.sampled_from(NODE_IDS)
maybe_node_id = st.none() | node_ids
sessions = st.sampled_from(SESSIONS)


@attrs.frozen
class Commit:
    session_id: str
    # None: the store's current head, else an explicit (maybe wrong) one.
    head: int | None
    create: bool
    appended: tuple[tuple[str, str | None], ...]
    reparented: tuple[tuple[str, str | None], ...]
    adopt: tuple[str, ...]
    leaf: str | None


@attrs.frozen
class Tombstone:
    session_id: str
    node_ids: tuple[str, ...]


@attrs.frozen
class Intent:
    session_id: str
    attachment_id: str
    created_at: float


@attrs.frozen
class Forget:
    session_id: str
    attachment_id: str


@attrs.frozen
class Delete:
    session_id: str
    purge: bool


@attrs.frozen
class Vacuum:
    pass


operations = st.one_of(
    st.builds(
        Commit,
        sessions,
        st.none() | st.integers(0, 4),
        st.booleans(),
        st.lists(st.tuples(node_ids, maybe_node_id), max_size=4).map(tuple),
        st.lists(st.tuples(node_ids, maybe_node_id), max_size=2).map(tuple),
        st.lists(st.sampled_from(ATTACHMENTS), max_size=2).map(tuple),
        maybe_node_id,
    ),
    st.builds(Tombstone, sessions, st.lists(node_ids, max_size=3).map(tuple)),
    st.builds(Intent, sessions, st.sampled_from(ATTACHMENTS), st.sampled_from([1.0, 5.0])),
    st.builds(Forget, sessions, st.sampled_from(ATTACHMENTS)),
    st.builds(Delete, sessions, st.booleans()),
    st.just(Vacuum()),
)


def apply(store: SessionStore, op: object) -> object:
    """Run one operation; its result, or the error it raised as plain data."""
    try:
        return _apply(store, op)
    except HeadRevisionConflict as exc:
        return ("conflict", exc.expected, exc.actual)
    except StoreError as exc:
        return ("store error", type(exc).__name__)


def _apply(store: SessionStore, op: object) -> object:
    if isinstance(op, Commit):
        head = op.head
        if head is None and not op.create:
            stored = store.load_graph(op.session_id, ActivePath())
            head = None if stored is None else stored.head_revision
        nodes = [SessionNode(n, p, NodeKind.MESSAGE, {"n": n}, None, 1.0) for n, p in op.appended]
        commit = make_commit(
            op.session_id,
            head,
            nodes,
            reparented=[Reparent(n, p) for n, p in op.reparented],
            adopt=op.adopt,
        )
        commit = attrs.evolve(commit, delta=attrs.evolve(commit.delta, leaf_id=op.leaf))
        return store.commit(commit)
    if isinstance(op, Tombstone):
        return store.tombstone_nodes(op.session_id, op.node_ids)
    if isinstance(op, Intent):
        store.record_intent(AttachmentIntent(op.session_id, op.attachment_id, "uri", op.created_at))
        return None
    if isinstance(op, Forget):
        return store.forget(op.session_id, op.attachment_id)
    if isinstance(op, Delete):
        deleted = store.delete_session(op.session_id)
        # Markers are forgotten at once now and then, so that ids are made
        # again too.
        if op.purge:
            store.purge_deleted(float("inf"))
        return deleted
    assert isinstance(op, Vacuum)
    return store.vacuum()


def _read(store: SessionStore, session_id: str, scope: object) -> object:
    """A read as plain data: a deleted session's error, or the session
    without its creation time (each store's own clock)."""
    try:
        loaded = store.load_graph(session_id, scope)  # type: ignore[arg-type]
    except SessionDeleted:
        return "deleted"
    return None if loaded is None else attrs.evolve(loaded, created_at=0.0)


def snapshot(store: SessionStore) -> object:
    """Everything a caller can read from the store."""
    reads: list[object] = [
        [(i.session_id, i.head_revision, i.node_count) for i in store.list_sessions()],
        store.list_uncommitted(float("inf")),
    ]
    for session_id in SESSIONS:
        reads.append(_read(store, session_id, FullGraph()))
        reads.append(_read(store, session_id, ActivePath()))
        for node_id in NODE_IDS:
            reads.append(_read(store, session_id, ActivePath(node_id)))
            reads.append(store.load_node(session_id, node_id))
    return reads


def agree(make_store: Callable[[], SessionStore], ops: list[object]) -> None:
    reference = MemoryStore()
    store = make_store()
    try:
        for number, op in enumerate(ops):
            expected = apply(reference, op)
            assert apply(store, op) == expected, (number, op)
            assert snapshot(store) == snapshot(reference), (number, op)
    finally:
        store.close()
        reference.close()


@given(st.lists(operations, max_size=20))
def test_sqlite_answers_like_the_reference(ops: list[object]) -> None:
    directory = tempfile.mkdtemp(prefix="lash-model-")
    try:
        agree(lambda: SQLiteStore(Path(directory) / "store.db"), ops)
    finally:
        shutil.rmtree(directory)


@pytest.fixture(scope="module")
def pg_dsn(postgres_dsn: str) -> Iterator[str]:
    name = f"model_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(postgres_dsn, options=f"-c search_path={name}")
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.postgres
def test_postgres_answers_like_the_reference(pg_dsn: str) -> None:
    from lash_machine.stores.postgres import PostgresStore

    # One store for every example (a pool per example would dominate the
    # run); the tables are emptied before each.
    store = PostgresStore(pg_dsn, max_size=2)

    class Reused:
        def __getattr__(self, name: str) -> Any:
            return getattr(store, name)

        def close(self) -> None:
            with psycopg.connect(pg_dsn, autocommit=True) as conn:
                conn.execute(
                    "TRUNCATE lash_sessions, lash_nodes, lash_attachment_intents, lash_deleted"
                )

    @given(st.lists(operations, max_size=20))
    def check(ops: list[object]) -> None:
        agree(Reused, ops)

    try:
        check()
    finally:
        store.close()
