"""The embedded store: one SQLite file in WAL mode, stdlib ``sqlite3`` only.

Each thread gets its own connection (WAL lets readers run beside the one
writer), and several processes may open the same file: every write is a
``BEGIN IMMEDIATE`` transaction that waits up to ``timeout`` seconds for the
write lock, and the compare-and-set of a commit happens inside it.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import (
    HeadRevisionConflict,
    LeaseLost,
    ParentTombstoned,
    SchemaVersionMismatch,
    StoreError,
    TombstoneRefused,
)
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
from ._rows import (
    LEAF_REASON,
    built_on,
    check_session_id,
    decode_node,
    decode_session,
    encode_intent,
    encode_node,
    encode_session,
    fold_repairs,
    orphan_reason,
    path_root_first,
)
from .base import SCHEMA_VERSION
from .leases import Lease, check_claim, check_fence, claim_verdict

__all__ = ["SQLiteStore"]

_SCHEMA = (
    # next_seq numbers the session's nodes in insertion order; live_nodes
    # keeps list_sessions from counting every node of every session.
    """CREATE TABLE lash_sessions (
        session_id TEXT NOT NULL PRIMARY KEY,
        head_revision INTEGER NOT NULL,
        next_seq INTEGER NOT NULL,
        live_nodes INTEGER NOT NULL,
        leaf_id TEXT,
        policy TEXT NOT NULL,
        frames TEXT NOT NULL,
        current_frame_id TEXT NOT NULL,
        tool_snapshot TEXT,
        plugin_snapshot TEXT,
        host_checkpoint TEXT NOT NULL,
        updated_at REAL NOT NULL
    ) WITHOUT ROWID""",
    # Clustered on (session_id, node_id): each step of an active-path walk
    # is one primary-key lookup, whatever the size of the session.
    """CREATE TABLE lash_nodes (
        session_id TEXT NOT NULL,
        node_id TEXT NOT NULL,
        seq INTEGER NOT NULL,
        parent_id TEXT,
        kind TEXT NOT NULL,
        frame_id TEXT,
        created_at REAL NOT NULL,
        body TEXT NOT NULL,
        tombstoned INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, node_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX lash_nodes_by_seq ON lash_nodes (session_id, seq)",
    # Partial: only tombstoned rows pay for it, and vacuum finds them fast.
    "CREATE INDEX lash_nodes_tombstoned ON lash_nodes (session_id) WHERE tombstoned = 1",
    """CREATE TABLE lash_attachment_intents (
        session_id TEXT NOT NULL,
        attachment_id TEXT NOT NULL,
        uri TEXT NOT NULL,
        created_at REAL NOT NULL,
        committed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, attachment_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX lash_intents_uncommitted ON lash_attachment_intents (created_at)"
    " WHERE committed = 0",
    # One row per session ever leased, kept after release and after the
    # session is deleted: its token only grows. owner is NULL once released.
    """CREATE TABLE lash_leases (
        session_id TEXT NOT NULL PRIMARY KEY,
        owner TEXT,
        token INTEGER NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
)

_NODE_COLUMNS = "node_id, parent_id, kind, frame_id, created_at, body"
_SESSION_COLUMNS = (
    "head_revision, leaf_id, policy, frames, current_frame_id,"
    " tool_snapshot, plugin_snapshot, host_checkpoint"
)

_SELECT_SESSION = f"SELECT {_SESSION_COLUMNS} FROM lash_sessions WHERE session_id = ?"
_SELECT_FULL = (
    f"SELECT {_NODE_COLUMNS} FROM lash_nodes WHERE session_id = ? AND tombstoned = 0 ORDER BY seq"
)
# The walk carries only keys, so UNION's duplicate check (which ends a
# parent cycle) compares ids, not bodies; the rows are joined back after.
# The result is a set: path_root_first orders it.
_SELECT_PATH = f"""
WITH RECURSIVE path(node_id, parent_id) AS (
    SELECT node_id, parent_id FROM lash_nodes
     WHERE session_id = ?1 AND node_id = ?2 AND tombstoned = 0
    UNION
    SELECT n.node_id, n.parent_id FROM path
      JOIN lash_nodes AS n ON n.session_id = ?1 AND n.node_id = path.parent_id
     WHERE n.tombstoned = 0
)
SELECT {", ".join("n." + c for c in _NODE_COLUMNS.split(", "))} FROM path
  JOIN lash_nodes AS n ON n.session_id = ?1 AND n.node_id = path.node_id
"""
_SELECT_NODE = (
    f"SELECT {_NODE_COLUMNS} FROM lash_nodes"
    " WHERE session_id = ? AND node_id = ? AND tombstoned = 0"
)
_SELECT_HEAD = "SELECT head_revision, next_seq, leaf_id FROM lash_sessions WHERE session_id = ?"
#: How many ids one statement binds (SQLite's oldest default limit is 999).
_CHUNK = 500
_INSERT_SESSION = """
INSERT INTO lash_sessions (session_id, head_revision, next_seq, live_nodes, leaf_id, policy,
    frames, current_frame_id, tool_snapshot, plugin_snapshot, host_checkpoint, updated_at)
VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_UPDATE_SESSION = """
UPDATE lash_sessions SET head_revision = head_revision + 1, next_seq = ?,
    live_nodes = live_nodes + ?, leaf_id = ?, policy = ?, frames = ?, current_frame_id = ?,
    tool_snapshot = ?, plugin_snapshot = ?, host_checkpoint = ?, updated_at = ?
WHERE session_id = ?
"""
_INSERT_NODE = f"""
INSERT INTO lash_nodes (session_id, seq, {_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT_LEASE = "SELECT owner, token, expires_at FROM lash_leases WHERE session_id = ?"
_UPSERT_LEASE = """
INSERT INTO lash_leases (session_id, owner, token, expires_at) VALUES (?, ?, ?, ?)
ON CONFLICT (session_id) DO UPDATE SET
    owner = excluded.owner, token = excluded.token, expires_at = excluded.expires_at
"""
# Tombstoned rows go, except one a live node still names as its parent (a
# row tombstoned before the subtree rule existed): its child must never lose
# it. The subquery is read once, over the sessions that have tombstones.
_VACUUM = """
DELETE FROM lash_nodes WHERE tombstoned = 1 AND (session_id, node_id) NOT IN (
    SELECT session_id, parent_id FROM lash_nodes
     WHERE tombstoned = 0 AND parent_id IS NOT NULL
       AND session_id IN (SELECT session_id FROM lash_nodes WHERE tombstoned = 1)
)
"""
# Replacing an intent never un-commits it: a commit may have adopted the id
# (a retried record, or a content-addressed id).
_RECORD_INTENT = """
INSERT INTO lash_attachment_intents (session_id, attachment_id, uri, created_at, committed)
VALUES (?, ?, ?, ?, ?)
ON CONFLICT (session_id, attachment_id) DO UPDATE SET
    uri = excluded.uri, created_at = excluded.created_at,
    committed = committed OR excluded.committed
"""
#: The errors of a taken primary key (a duplicate node id).
_KEY_VIOLATIONS = frozenset({"SQLITE_CONSTRAINT_PRIMARYKEY", "SQLITE_CONSTRAINT_UNIQUE"})
_REPARENT = "UPDATE lash_nodes SET parent_id = ? WHERE session_id = ? AND node_id = ?"
_ADOPT = (
    "UPDATE lash_attachment_intents SET committed = 1 WHERE session_id = ? AND attachment_id = ?"
)


class SQLiteStore:
    """A :class:`~lash_machine.stores.base.SessionStore` in one SQLite file.

    Safe to share between threads (a connection per thread, kept until
    :meth:`close`) and to open from several processes at once (open one
    store per process; connections do not survive a fork). ``timeout`` is how long a write waits
    for another writer's lock before failing with :class:`StoreError`.
    ``synchronous`` is SQLite's durability setting: ``"FULL"`` survives
    power loss; ``"NORMAL"`` is faster and only loses the newest commits.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 30.0, synchronous: str = "FULL"
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"unknown synchronous setting {synchronous!r}")
        self.path = os.fspath(path)
        self._timeout = timeout
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        self._closed = False
        try:
            self._open_schema(self._connection())
        except BaseException:
            self.close()
            raise

    # -- connections and transactions ---------------------------------

    def _connection(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            return conn
        with self._lock:
            if self._closed:
                raise StoreError(f"{self.path}: the store is closed")
            try:
                # isolation_level=None: we issue BEGIN/COMMIT ourselves, so a
                # write transaction starts IMMEDIATE and reads see one snapshot.
                conn = sqlite3.connect(
                    self.path, timeout=self._timeout, isolation_level=None, check_same_thread=False
                )
                conn.execute(f"PRAGMA busy_timeout = {int(self._timeout * 1000)}")
                conn.execute(f"PRAGMA synchronous = {self._synchronous}")
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot open: {exc}") from exc
            self._connections.append(conn)
        self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _transaction(self, begin: str) -> Iterator[sqlite3.Connection]:
        """Run the block in one transaction; any error rolls it back. SQLite
        errors come out as :class:`StoreError`."""
        if self._closed:
            raise StoreError(f"{self.path}: the store is closed")
        conn = self._connection()
        try:
            conn.execute(begin)
            try:
                yield conn
            except BaseException:
                conn.rollback()
                raise
            conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.rollback()
            raise StoreError(f"{self.path}: {exc}") from exc
        except UnicodeEncodeError as exc:
            # A lone surrogate in an id cannot be bound as UTF-8 text.
            raise StoreError(f"{self.path}: text the database cannot hold: {exc}") from exc

    def _open_schema(self, conn: sqlite3.Connection) -> None:
        # Switching a new file to WAL takes an exclusive lock that SQLite does
        # not wait for through the busy handler: two processes opening one
        # new file at once see "database is locked". Retry until the timeout.
        deadline = time.monotonic() + self._timeout
        while True:
            try:
                conn.execute("PRAGMA journal_mode = WAL")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise StoreError(f"{self.path}: cannot open: {exc}") from exc
                time.sleep(0.01)
            except sqlite3.Error as exc:
                raise StoreError(f"{self.path}: cannot open: {exc}") from exc
        # A database of this schema opens without the write lock, so that
        # reading commands never wait behind a writer.
        version = self._user_version(conn)
        if version == SCHEMA_VERSION:
            return
        if version != 0:
            raise SchemaVersionMismatch(self.path, version, SCHEMA_VERSION)
        with self._transaction("BEGIN IMMEDIATE"):
            # Read again under the write lock: a concurrent opener of a new
            # file either created the schema already or waits for us to.
            version = self._user_version(conn)
            if version == SCHEMA_VERSION:
                return
            if version != 0:
                raise SchemaVersionMismatch(self.path, version, SCHEMA_VERSION)
            if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
                # Tables but no version: not a database we wrote.
                raise SchemaVersionMismatch(self.path, 0, SCHEMA_VERSION)
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    def _user_version(self, conn: sqlite3.Connection) -> int:
        try:
            return int(conn.execute("PRAGMA user_version").fetchone()[0])
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: cannot open: {exc}") from exc

    # -- reads ----------------------------------------------------------

    def load_graph(self, session_id: str, scope: ReadScope) -> StoredSession | None:
        """The session with the nodes of ``scope``, or ``None``."""
        with self._transaction("BEGIN") as conn:
            row = conn.execute(_SELECT_SESSION, (session_id,)).fetchone()
            if row is None:
                return None
            rows: list[Any]
            if isinstance(scope, FullGraph):
                rows = conn.execute(_SELECT_FULL, (session_id,)).fetchall()
            elif isinstance(scope, ActivePath):
                leaf = scope.leaf_id if scope.leaf_id is not None else row[1]
                rows = [] if leaf is None else self._path(conn, session_id, leaf)
            else:
                raise StoreError(f"unknown read scope {scope!r}")
        nodes = tuple(decode_node(session_id, r) for r in rows)
        return decode_session(session_id, row[0], row[1:], nodes)

    @staticmethod
    def _path(conn: sqlite3.Connection, session_id: str, leaf: object) -> list[Any]:
        found = conn.execute(_SELECT_PATH, (session_id, leaf)).fetchall()
        by_id = {r[0]: r for r in found}
        return path_root_first(by_id.get, lambda r: r[1], str(leaf))

    def load_node(self, session_id: str, node_id: str) -> SessionNode | None:
        """One live node of the session, or ``None``."""
        with self._transaction("BEGIN") as conn:
            row = conn.execute(_SELECT_NODE, (session_id, node_id)).fetchone()
        return None if row is None else decode_node(session_id, row)

    # -- the commit -----------------------------------------------------

    def commit(self, commit: SessionCommit) -> int:
        """Apply ``commit`` when the stored head equals its expected head
        and it builds only on live nodes, in one ``BEGIN IMMEDIATE``
        transaction."""
        sid = commit.session_id
        session = encode_session(commit)
        rows, repairs = fold_repairs(
            [encode_node(sid, n) for n in commit.delta.appended], commit.delta
        )
        refs = built_on(rows, repairs, commit.delta.leaf_id)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            # The write lock is held from here on: no claim, tombstone or
            # vacuum can come between these checks and the writes.
            now = time.time()
            check_fence(sid, commit.fencing_token, _lease_row(conn, sid), now)
            found = conn.execute(_SELECT_HEAD, (sid,)).fetchone()
            actual = None if found is None else found[0]
            if actual != commit.expected_head:
                raise HeadRevisionConflict(sid, commit.expected_head, actual)
            if found is not None:
                dead = _not_live(conn, sid, [r for r in refs if r != found[2]])
                if dead:
                    raise ParentTombstoned(sid, dead[0])
            first_seq = 0 if found is None else found[1]
            columns = (
                session.leaf_id,
                session.policy,
                session.frames,
                session.current_frame_id,
                session.tool_snapshot,
                session.plugin_snapshot,
                session.host_checkpoint,
                now,
            )
            next_seq = first_seq + len(rows)
            if found is None:
                conn.execute(_INSERT_SESSION, (sid, next_seq, len(rows), *columns))
            else:
                conn.execute(_UPDATE_SESSION, (next_seq, len(rows), *columns, sid))
            try:
                conn.executemany(
                    _INSERT_NODE, [(sid, first_seq + i, *row) for i, row in enumerate(rows)]
                )
            except sqlite3.IntegrityError as exc:
                # Only a key violation is a taken id; anything else (a NOT
                # NULL column, say) is reported as it is.
                if exc.sqlite_errorname not in _KEY_VIOLATIONS:
                    raise
                raise _duplicate_node(conn, sid, [row[0] for row in rows]) from None
            if repairs:
                conn.executemany(_REPARENT, [(p, sid, n) for n, p in repairs.items()])
            if commit.adopt_attachments:
                conn.executemany(_ADOPT, [(sid, a) for a in commit.adopt_attachments])
            return actual + 1 if actual is not None else 1

    # -- maintenance ----------------------------------------------------

    def tombstone_nodes(self, session_id: str, node_ids: Sequence[str]) -> int:
        """Hide live nodes of the session; return how many were hidden.
        Refused when one is the stored leaf or the parent of a live node
        not hidden with it."""
        ids = list(dict.fromkeys(node_ids))
        with self._transaction("BEGIN IMMEDIATE") as conn:
            found = conn.execute(
                "SELECT leaf_id FROM lash_sessions WHERE session_id = ?", (session_id,)
            ).fetchone()
            if found is None:
                return 0
            targets = set(_live(conn, session_id, ids))
            if not targets:
                return 0
            if found[0] in targets:
                raise TombstoneRefused(session_id, found[0], LEAF_REASON)
            orphan = _first_orphan(conn, session_id, targets)
            if orphan is not None:
                raise TombstoneRefused(session_id, orphan[1], orphan_reason(orphan[0]))
            conn.executemany(
                "UPDATE lash_nodes SET tombstoned = 1 WHERE session_id = ? AND node_id = ?",
                [(session_id, node_id) for node_id in targets],
            )
            conn.execute(
                "UPDATE lash_sessions SET live_nodes = live_nodes - ? WHERE session_id = ?",
                (len(targets), session_id),
            )
            return len(targets)

    def vacuum(self) -> VacuumReport:
        """Delete tombstoned nodes for good, except one a live node still
        names as its parent (:meth:`forget` already deletes intents, so
        none are left to remove)."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            removed = conn.execute(_VACUUM).rowcount
        return VacuumReport(nodes_removed=removed)

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, ordered by id, with its live node count."""
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                "SELECT session_id, head_revision, live_nodes, updated_at"
                " FROM lash_sessions ORDER BY session_id"
            ).fetchall()
        return [SessionInfo(r[0], r[1], r[2], r[3]) for r in rows]

    def delete_session(self, session_id: str) -> bool:
        """Remove the session, its nodes and its intents."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            conn.execute("DELETE FROM lash_nodes WHERE session_id = ?", (session_id,))
            conn.execute("DELETE FROM lash_attachment_intents WHERE session_id = ?", (session_id,))
            deleted = conn.execute(
                "DELETE FROM lash_sessions WHERE session_id = ?", (session_id,)
            ).rowcount
        return deleted > 0

    # -- attachment manifest ----------------------------------------------

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Record (or replace) the intent of one attachment; an intent a
        commit adopted stays committed."""
        row = encode_intent(intent)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            conn.execute(_RECORD_INTENT, (*row, int(bool(intent.committed))))

    def list_uncommitted(self, older_than: float) -> list[AttachmentIntent]:
        """Unadopted intents created before ``older_than``, oldest first."""
        with self._transaction("BEGIN") as conn:
            rows = conn.execute(
                "SELECT session_id, attachment_id, uri, created_at FROM lash_attachment_intents"
                " WHERE committed = 0 AND created_at < ?"
                " ORDER BY created_at, session_id, attachment_id",
                (older_than,),
            ).fetchall()
        return [AttachmentIntent(r[0], r[1], r[2], r[3]) for r in rows]

    def forget(self, session_id: str, attachment_id: str) -> bool:
        """Delete one uncommitted intent; ``False`` (and nothing deleted)
        when there is none or a commit adopted it."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            deleted = conn.execute(
                "DELETE FROM lash_attachment_intents"
                " WHERE session_id = ? AND attachment_id = ? AND committed = 0",
                (session_id, attachment_id),
            ).rowcount
        return deleted > 0

    # -- execution leases ---------------------------------------------------

    def claim_lease(
        self, session_id: str, owner: str, ttl: float, now: float | None = None
    ) -> Lease:
        """Claim the session for ``owner`` (see
        :class:`~lash_machine.stores.leases.LeaseStore`)."""
        check_claim(owner, ttl)
        check_session_id(session_id)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            # "now" once the write lock is ours: a claim that waited for it
            # still runs for its whole time-to-live.
            at = time.time() if now is None else now
            token = claim_verdict(session_id, owner, _lease_row(conn, session_id), at)
            conn.execute(_UPSERT_LEASE, (session_id, owner, token, at + ttl))
        return Lease(session_id, owner, token, at + ttl)

    def renew_lease(self, lease: Lease, ttl: float, now: float | None = None) -> Lease:
        """Extend a current lease; :class:`LeaseLost` when it is not."""
        check_claim(lease.owner, ttl)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            expires_at = (time.time() if now is None else now) + ttl
            renewed = conn.execute(
                "UPDATE lash_leases SET expires_at = ?"
                " WHERE session_id = ? AND owner = ? AND token = ?",
                (expires_at, lease.session_id, lease.owner, lease.token),
            ).rowcount
            if not renewed:
                held = _lease_row(conn, lease.session_id)
                raise LeaseLost(lease.session_id, lease.token, None if held is None else held[1])
        return Lease(lease.session_id, lease.owner, lease.token, expires_at)

    def release_lease(self, lease: Lease) -> bool:
        """Give the session up; ``False`` when the lease was not current."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            released = conn.execute(
                "UPDATE lash_leases SET owner = NULL"
                " WHERE session_id = ? AND owner = ? AND token = ?",
                (lease.session_id, lease.owner, lease.token),
            ).rowcount
        return released > 0

    def current_lease(self, session_id: str, now: float | None = None) -> Lease | None:
        """The live lease of the session, if any."""
        at = time.time() if now is None else now
        with self._transaction("BEGIN") as conn:
            held = _lease_row(conn, session_id)
        if held is None or held[0] is None or held[2] <= at:
            return None
        return Lease(session_id, held[0], held[1], held[2])

    def close(self) -> None:
        """Close every thread's connection. Call it once no other thread is
        inside a store method; later calls raise :class:`StoreError`."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()


def _lease_row(conn: sqlite3.Connection, session_id: str) -> tuple[str | None, int, float] | None:
    row = conn.execute(_SELECT_LEASE, (session_id,)).fetchone()
    return None if row is None else (row[0], row[1], row[2])


def _chunks(ids: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(ids), _CHUNK):
        yield ids[start : start + _CHUNK]


def _placeholders(count: int) -> str:
    return ", ".join("?" * count)


def _not_live(conn: sqlite3.Connection, session_id: str, ids: Sequence[str]) -> list[str]:
    """Those of ``ids`` that are not live nodes of the session, in order."""
    live = set(_live(conn, session_id, ids))
    return [i for i in ids if i not in live]


def _live(conn: sqlite3.Connection, session_id: str, ids: Sequence[str]) -> list[str]:
    """Those of ``ids`` that are live nodes of the session."""
    found: list[str] = []
    for chunk in _chunks(ids):
        found.extend(
            r[0]
            for r in conn.execute(
                "SELECT node_id FROM lash_nodes WHERE session_id = ? AND tombstoned = 0"
                f" AND node_id IN ({_placeholders(len(chunk))})",
                (session_id, *chunk),
            )
        )
    return found


def _first_orphan(
    conn: sqlite3.Connection, session_id: str, targets: set[str]
) -> tuple[str, str] | None:
    """The first live node (in insertion order) outside ``targets`` whose
    parent is one of them, as ``(node_id, parent_id)``; ``None`` if none."""
    first: tuple[int, str, str] | None = None
    ordered = sorted(targets)
    for chunk in _chunks(ordered):
        # No index on parent_id (commits would pay for it): one scan of
        # the session's rows per chunk.
        for node_id, parent_id, seq in conn.execute(
            "SELECT node_id, parent_id, seq FROM lash_nodes WHERE session_id = ?"
            f" AND tombstoned = 0 AND parent_id IN ({_placeholders(len(chunk))})",
            (session_id, *chunk),
        ):
            if node_id not in targets and (first is None or seq < first[0]):
                first = (seq, node_id, parent_id)
    return None if first is None else (first[1], first[2])


def _duplicate_node(conn: sqlite3.Connection, session_id: str, node_ids: list[str]) -> StoreError:
    """The error for appended nodes whose ids are taken. Rolls the failed
    transaction back first, so only ids stored before this commit count."""
    conn.rollback()
    seen: set[str] = set()
    for node_id in node_ids:
        if node_id in seen:
            return StoreError(f"session {session_id!r}: node {node_id!r} appended twice")
        seen.add(node_id)
    for node_id in node_ids:
        taken = conn.execute(
            "SELECT 1 FROM lash_nodes WHERE session_id = ? AND node_id = ?", (session_id, node_id)
        ).fetchone()
        if taken is not None:
            return StoreError(f"session {session_id!r}: node {node_id!r} is already stored")
    return StoreError(f"session {session_id!r}: appended nodes collide with stored ones")
