"""The server store: PostgreSQL through psycopg 3 and a connection pool.

Commits are one transaction whose first statement is the compare-and-set: a
conditional ``UPDATE ... WHERE head_revision = %s`` (or, for a session's first
commit, ``INSERT ... ON CONFLICT DO NOTHING``). The row lock it takes orders
concurrent committers; the loser's statement matches no row and its
transaction is rolled back. Statements are pipelined, so a commit costs two
round trips and a read one.

PostgreSQL ``text`` cannot hold NUL characters: writing an id (or URI) with
one raises :class:`StoreError`; reads of such ids find nothing.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg import errors as pg_errors
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import HeadRevisionConflict, SchemaVersionMismatch, StoreError
from ..model import SessionNode
from ..persisted import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    ReadScope,
    SessionCommit,
    SessionInfo,
    StoredSession,
    VacuumReport,
)
from ._rows import decode_node, decode_session, encode_node, encode_session, path_root_first
from .base import SCHEMA_VERSION

__all__ = ["PostgresStore"]

#: Key of the transaction-scoped advisory lock that serialises schema setup
#: (the bytes of "lashschm"), so concurrent openers of a new database do not race.
_SCHEMA_LOCK = 0x6C61736873636D6D

_TABLES = ("lash_sessions", "lash_nodes", "lash_attachment_intents")

_SCHEMA = (
    "CREATE TABLE lash_schema (version integer NOT NULL)",
    # next_seq numbers the session's nodes in insertion order; live_nodes
    # keeps list_sessions from counting every node of every session.
    """CREATE TABLE lash_sessions (
        session_id text PRIMARY KEY,
        head_revision bigint NOT NULL,
        next_seq bigint NOT NULL,
        live_nodes bigint NOT NULL,
        leaf_id text,
        policy text NOT NULL,
        frames text NOT NULL,
        current_frame_id text NOT NULL,
        tool_snapshot text,
        plugin_snapshot text,
        host_checkpoint text NOT NULL,
        updated_at double precision NOT NULL
    )""",
    # JSON lives in text, not jsonb: text keeps exactly what was written
    # (key order, duplicate keys, the \\u0000 escape jsonb refuses).
    """CREATE TABLE lash_nodes (
        session_id text NOT NULL,
        node_id text NOT NULL,
        seq bigint NOT NULL,
        parent_id text,
        kind text NOT NULL,
        frame_id text,
        created_at double precision NOT NULL,
        body text NOT NULL,
        tombstoned boolean NOT NULL DEFAULT false,
        PRIMARY KEY (session_id, node_id)
    )""",
    "CREATE INDEX lash_nodes_by_seq ON lash_nodes (session_id, seq)",
    # Partial: only tombstoned rows pay for it, and vacuum finds them fast.
    "CREATE INDEX lash_nodes_tombstoned ON lash_nodes (session_id) WHERE tombstoned",
    """CREATE TABLE lash_attachment_intents (
        session_id text NOT NULL,
        attachment_id text NOT NULL,
        uri text NOT NULL,
        created_at double precision NOT NULL,
        committed boolean NOT NULL DEFAULT false,
        PRIMARY KEY (session_id, attachment_id)
    )""",
    "CREATE INDEX lash_intents_uncommitted ON lash_attachment_intents (created_at)"
    " WHERE NOT committed",
)

_NODE_COLUMNS = "node_id, parent_id, kind, frame_id, created_at, body"
_SESSION_COLUMNS = (
    "head_revision, leaf_id, policy, frames, current_frame_id,"
    " tool_snapshot, plugin_snapshot, host_checkpoint"
)

_SELECT_SESSION = f"SELECT {_SESSION_COLUMNS} FROM lash_sessions WHERE session_id = %s"
_SELECT_FULL = (
    f"SELECT {_NODE_COLUMNS} FROM lash_nodes"
    " WHERE session_id = %(sid)s AND NOT tombstoned ORDER BY seq"
)
# One recursive query, each step a primary-key probe: the LATERAL ... LIMIT 1
# cannot be flattened into a join, so the planner never swaps the probe for
# a hash join over the session's nodes (which a generic plan for a big
# session could pick). UNION (not UNION ALL) drops a row already produced,
# which ends a parent cycle. The leaf is the one asked for or, when NULL,
# the stored one, read in the same statement. The result is a set:
# path_root_first orders it.
_SELECT_PATH = f"""
WITH RECURSIVE path AS (
    SELECT {_NODE_COLUMNS} FROM lash_nodes
     WHERE session_id = %(sid)s AND NOT tombstoned
       AND node_id = coalesce(
           %(leaf)s::text,
           (SELECT leaf_id FROM lash_sessions WHERE session_id = %(sid)s))
    UNION
    SELECT parent.* FROM path, LATERAL (
        SELECT {_NODE_COLUMNS} FROM lash_nodes AS n
         WHERE n.session_id = %(sid)s AND n.node_id = path.parent_id AND NOT n.tombstoned
         LIMIT 1
    ) AS parent
)
SELECT {_NODE_COLUMNS} FROM path
"""
_SELECT_NODE = (
    f"SELECT {_NODE_COLUMNS} FROM lash_nodes"
    " WHERE session_id = %s AND node_id = %s AND NOT tombstoned"
)
_SELECT_HEAD = "SELECT head_revision FROM lash_sessions WHERE session_id = %s"
_CREATE_SESSION = """
INSERT INTO lash_sessions (session_id, head_revision, next_seq, live_nodes, leaf_id, policy,
    frames, current_frame_id, tool_snapshot, plugin_snapshot, host_checkpoint, updated_at)
VALUES (%s, 1, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (session_id) DO NOTHING
RETURNING 0
"""
_ADVANCE_SESSION = """
UPDATE lash_sessions SET head_revision = head_revision + 1, next_seq = next_seq + %s,
    live_nodes = live_nodes + %s, leaf_id = %s, policy = %s, frames = %s,
    current_frame_id = %s, tool_snapshot = %s, plugin_snapshot = %s, host_checkpoint = %s,
    updated_at = %s
WHERE session_id = %s AND head_revision = %s
RETURNING next_seq - %s
"""
_INSERT_NODE = f"""
INSERT INTO lash_nodes (session_id, seq, {_NODE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
"""
_REPARENT = "UPDATE lash_nodes SET parent_id = %s WHERE session_id = %s AND node_id = %s"
_ADOPT = (
    "UPDATE lash_attachment_intents SET committed = true"
    " WHERE session_id = %s AND attachment_id = %s"
)


def _has_nul(*values: object) -> bool:
    return any(isinstance(v, str) and "\x00" in v for v in values)


def _refuse_nul(what: str, *values: object) -> None:
    if _has_nul(*values):
        raise StoreError(f"{what}: PostgreSQL text cannot hold NUL characters")


class PostgresStore:
    """A :class:`~lash_machine.stores.base.SessionStore` in PostgreSQL.

    ``dsn`` is a libpq connection string or URI; the tables live in the
    first schema of its ``search_path``. The store keeps a pool of
    ``min_size`` to ``max_size`` connections; a call waits up to ``timeout``
    seconds for one. Safe to share between threads and processes.
    """

    def __init__(
        self, dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 30.0
    ) -> None:
        self.dsn = dsn
        # autocommit: transactions are explicit (conn.transaction()), so a
        # read is one pipelined round trip with no implicit BEGIN.
        self._pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            open=False,
            name="lash-machine",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
            self._open_schema()
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        except BaseException:
            self._pool.close()
            raise

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; database errors come out as :class:`StoreError`."""
        if self._pool.closed:
            raise StoreError("the store is closed")
        try:
            with self._pool.connection() as conn:
                yield conn
        except PoolTimeout as exc:
            raise StoreError(f"no PostgreSQL connection available: {exc}") from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc

    def _open_schema(self) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            found = conn.execute(
                "SELECT to_regclass('lash_schema') IS NOT NULL,"
                " to_regclass('lash_sessions') IS NOT NULL"
                " OR to_regclass('lash_nodes') IS NOT NULL"
                " OR to_regclass('lash_attachment_intents') IS NOT NULL"
            ).fetchone()
            assert found is not None
            has_version, has_tables = found
            if has_version:
                versions = [r[0] for r in conn.execute("SELECT version FROM lash_schema")]
                if versions != [SCHEMA_VERSION]:
                    raise SchemaVersionMismatch(
                        "PostgreSQL lash_schema", versions[0] if versions else 0, SCHEMA_VERSION
                    )
                return
            if has_tables:
                # Our tables without a version row: not something we wrote.
                raise SchemaVersionMismatch("PostgreSQL lash_schema", 0, SCHEMA_VERSION)
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute("INSERT INTO lash_schema (version) VALUES (%s)", (SCHEMA_VERSION,))

    # -- reads ----------------------------------------------------------

    def load_graph(self, session_id: str, scope: ReadScope) -> StoredSession | None:
        """The session with the nodes of ``scope``, or ``None``."""
        params: dict[str, str | None] = {"sid": session_id}
        if isinstance(scope, FullGraph):
            nodes_query = _SELECT_FULL
        elif isinstance(scope, ActivePath):
            nodes_query = _SELECT_PATH
            params["leaf"] = scope.leaf_id
        else:
            raise StoreError(f"unknown read scope {scope!r}")
        if _has_nul(*params.values()):
            return None
        with self._connection() as conn:
            # One snapshot for the session row and its nodes, one round trip.
            with conn.pipeline(), conn.transaction():
                conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                session_cur = conn.execute(_SELECT_SESSION, (session_id,))
                nodes_cur = conn.execute(nodes_query, params)
            row = session_cur.fetchone()
            rows = nodes_cur.fetchall()
        if row is None:
            return None
        if isinstance(scope, ActivePath):
            leaf = scope.leaf_id if scope.leaf_id is not None else row[1]
            by_id = {r[0]: r for r in rows}
            rows = [] if leaf is None else path_root_first(by_id.get, lambda r: r[1], leaf)
        nodes = tuple(decode_node(session_id, r) for r in rows)
        return decode_session(session_id, row[0], row[1:], nodes)

    def load_node(self, session_id: str, node_id: str) -> SessionNode | None:
        """One live node of the session, or ``None``."""
        if _has_nul(session_id, node_id):
            return None
        with self._connection() as conn:
            row = conn.execute(_SELECT_NODE, (session_id, node_id)).fetchone()
        return None if row is None else decode_node(session_id, row)

    # -- the commit -----------------------------------------------------

    def commit(self, commit: SessionCommit) -> int:
        """Apply ``commit`` when the stored head equals its expected head,
        in one transaction opened by the compare-and-set."""
        sid = commit.session_id
        session = encode_session(commit)
        appended = [encode_node(sid, n) for n in commit.delta.appended]
        _refuse_nul(
            f"session {sid!r}",
            sid,
            session.leaf_id,
            session.current_frame_id,
            *(value for row in appended for value in row[:4]),
            *(value for r in commit.delta.reparented for value in (r.node_id, r.parent_id)),
            *commit.adopt_attachments,
        )
        columns = (
            session.leaf_id,
            session.policy,
            session.frames,
            session.current_frame_id,
            session.tool_snapshot,
            session.plugin_snapshot,
            session.host_checkpoint,
            time.time(),
        )
        count = len(appended)
        with self._connection() as conn:
            try:
                with conn.pipeline(), conn.transaction():
                    # The fencing token is checked here once sessions hold leases.
                    if commit.expected_head is None:
                        cas = conn.execute(_CREATE_SESSION, (sid, count, count, *columns))
                    else:
                        cas = conn.execute(
                            _ADVANCE_SESSION,
                            (count, count, *columns, sid, commit.expected_head, count),
                        )
                    won = cas.fetchone()  # waits for the compare-and-set
                    if won is None:
                        actual = conn.execute(_SELECT_HEAD, (sid,)).fetchone()
                        raise HeadRevisionConflict(
                            sid, commit.expected_head, None if actual is None else actual[0]
                        )
                    first_seq = won[0]
                    with conn.cursor() as cur:
                        if appended:
                            cur.executemany(
                                _INSERT_NODE,
                                [(sid, first_seq + i, *row) for i, row in enumerate(appended)],
                            )
                        if commit.delta.reparented:
                            cur.executemany(
                                _REPARENT,
                                [(r.parent_id, sid, r.node_id) for r in commit.delta.reparented],
                            )
                        if commit.adopt_attachments:
                            cur.executemany(_ADOPT, [(sid, a) for a in commit.adopt_attachments])
            except pg_errors.UniqueViolation as exc:
                raise _duplicate_node(conn, sid, [row[0] for row in appended], exc) from exc
        return (commit.expected_head or 0) + 1

    # -- maintenance ----------------------------------------------------

    def tombstone_nodes(self, session_id: str, node_ids: Sequence[str]) -> int:
        """Hide live nodes of the session; return how many were hidden."""
        ids = [i for i in dict.fromkeys(node_ids) if not _has_nul(i)]
        if not ids or _has_nul(session_id):
            return 0
        with self._connection() as conn, conn.transaction():
            hidden = conn.execute(
                "UPDATE lash_nodes SET tombstoned = true"
                " WHERE session_id = %s AND node_id = ANY(%s) AND NOT tombstoned",
                (session_id, ids),
            ).rowcount
            if hidden:
                conn.execute(
                    "UPDATE lash_sessions SET live_nodes = live_nodes - %s WHERE session_id = %s",
                    (hidden, session_id),
                )
        return hidden

    def vacuum(self) -> VacuumReport:
        """Delete tombstoned nodes for good (:meth:`forget` already deletes
        intents, so none are left to remove)."""
        with self._connection() as conn:
            removed = conn.execute("DELETE FROM lash_nodes WHERE tombstoned").rowcount
        return VacuumReport(nodes_removed=removed)

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, ordered by id, with its live node count."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT session_id, head_revision, live_nodes, updated_at"
                ' FROM lash_sessions ORDER BY session_id COLLATE "C"'
            ).fetchall()
        return [SessionInfo(r[0], r[1], r[2], r[3]) for r in rows]

    def delete_session(self, session_id: str) -> bool:
        """Remove the session, its nodes and its intents."""
        if _has_nul(session_id):
            return False
        with self._connection() as conn, conn.transaction():
            conn.execute("DELETE FROM lash_nodes WHERE session_id = %s", (session_id,))
            conn.execute("DELETE FROM lash_attachment_intents WHERE session_id = %s", (session_id,))
            deleted = conn.execute(
                "DELETE FROM lash_sessions WHERE session_id = %s", (session_id,)
            ).rowcount
        return deleted > 0

    # -- attachment manifest ----------------------------------------------

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Record (or replace) the intent of one attachment."""
        _refuse_nul(
            f"attachment {intent.attachment_id!r}",
            intent.session_id,
            intent.attachment_id,
            intent.uri,
        )
        with self._connection() as conn:
            conn.execute(
                "INSERT INTO lash_attachment_intents"
                " (session_id, attachment_id, uri, created_at, committed)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (session_id, attachment_id) DO UPDATE SET uri = excluded.uri,"
                " created_at = excluded.created_at, committed = excluded.committed",
                (
                    intent.session_id,
                    intent.attachment_id,
                    intent.uri,
                    float(intent.created_at),
                    intent.committed,
                ),
            )

    def list_uncommitted(self, older_than: float) -> list[AttachmentIntent]:
        """Unadopted intents created before ``older_than``, oldest first."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT session_id, attachment_id, uri, created_at FROM lash_attachment_intents"
                " WHERE NOT committed AND created_at < %s"
                ' ORDER BY created_at, session_id COLLATE "C", attachment_id COLLATE "C"',
                (older_than,),
            ).fetchall()
        return [AttachmentIntent(r[0], r[1], r[2], r[3]) for r in rows]

    def forget(self, session_id: str, attachment_id: str) -> bool:
        """Delete one intent; ``False`` when there was none."""
        if _has_nul(session_id, attachment_id):
            return False
        with self._connection() as conn:
            deleted = conn.execute(
                "DELETE FROM lash_attachment_intents WHERE session_id = %s AND attachment_id = %s",
                (session_id, attachment_id),
            ).rowcount
        return deleted > 0

    def close(self) -> None:
        """Close the pool; later calls raise :class:`StoreError`."""
        self._pool.close()


def _duplicate_node(
    conn: psycopg.Connection[Any], session_id: str, node_ids: list[str], exc: Exception
) -> StoreError:
    """The error for appended nodes whose ids are taken (the failed
    transaction is already rolled back, so only stored ids count)."""
    seen: set[str] = set()
    for node_id in node_ids:
        if node_id in seen:
            return StoreError(f"session {session_id!r}: node {node_id!r} appended twice")
        seen.add(node_id)
    taken = conn.execute(
        "SELECT node_id FROM lash_nodes WHERE session_id = %s AND node_id = ANY(%s) LIMIT 1",
        (session_id, node_ids),
    ).fetchone()
    if taken is not None:
        return StoreError(f"session {session_id!r}: node {taken[0]!r} is already stored")
    return StoreError(f"session {session_id!r}: appended nodes collide with stored ones ({exc})")
