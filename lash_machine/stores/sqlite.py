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
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from ..errors import (
    HeadRevisionConflict,
    LeaseLost,
    ParentTombstoned,
    SchemaVersionMismatch,
    SessionDeleted,
    SessionNotFound,
    StoreError,
    TombstoneRefused,
)
from ..model import SessionNode
from ..persisted import (
    ActivePath,
    AttachmentIntent,
    ExpireReport,
    FullGraph,
    ReadScope,
    SessionCommit,
    SessionInfo,
    SessionStamp,
    StoredSession,
    VacuumReport,
)
from . import migrations
from ._rows import (
    LEAF_REASON,
    PIN_REASON,
    NodeRow,
    Ranges,
    appended_chain,
    built_on,
    chained,
    check_session_id,
    decode_node,
    decode_nodes,
    decode_session,
    dump_hint,
    encode_intent,
    encode_node,
    encode_session,
    extended_hint,
    first_missing,
    fold_repairs,
    joined,
    orphan_reason,
    parse_hint,
    path_root_first,
    ranges_of,
    truncated,
)
from .base import SCHEMA_VERSION, check_expiry
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
        updated_at REAL NOT NULL,
        created_at REAL NOT NULL,
        created_by TEXT,
        generation INTEGER NOT NULL DEFAULT 0,
        last_commit_id TEXT,
        path_hint TEXT,
        origin_session TEXT,
        origin_node TEXT
    ) WITHOUT ROWID""",
    # Expiry finds the idle sessions, oldest first.
    "CREATE INDEX lash_sessions_idle ON lash_sessions (updated_at, session_id)",
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
        pinned INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (session_id, node_id)
    ) WITHOUT ROWID""",
    "CREATE INDEX lash_nodes_by_seq ON lash_nodes (session_id, seq)",
    # Partial: only tombstoned (pinned) rows pay for them, and vacuum (a read
    # of the pins) finds them fast.
    "CREATE INDEX lash_nodes_tombstoned ON lash_nodes (session_id) WHERE tombstoned = 1",
    "CREATE INDEX lash_nodes_pinned ON lash_nodes (session_id) WHERE pinned = 1",
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
    # The ids of deleted sessions: never made again (until purged).
    """CREATE TABLE lash_deleted (
        session_id TEXT NOT NULL PRIMARY KEY,
        deleted_at REAL NOT NULL
    ) WITHOUT ROWID""",
)

_NODE_COLUMNS = "node_id, parent_id, kind, frame_id, created_at, body"
_SESSION_COLUMNS = (
    "head_revision, leaf_id, policy, frames, current_frame_id,"
    " tool_snapshot, plugin_snapshot, host_checkpoint"
)

_SELECT_SESSION = (
    f"SELECT {_SESSION_COLUMNS}, generation, created_at, created_by, origin_session, origin_node,"
    " path_hint"
    " FROM lash_sessions WHERE session_id = ?"
)
# By the partial index of pinned rows: without statistics SQLite would
# take the key and scan the whole session.
_SELECT_PINNED = (
    "SELECT node_id FROM lash_nodes INDEXED BY lash_nodes_pinned"
    " WHERE session_id = ? AND pinned = 1 AND tombstoned = 0"
)
_SELECT_DELETED = "SELECT deleted_at FROM lash_deleted WHERE session_id = ?"
_SELECT_STAMP = (
    "SELECT head_revision, generation, created_by FROM lash_sessions WHERE session_id = ?"
)
# The walk carries only keys, so UNION's duplicate check (which ends a
# parent cycle) compares ids, not bodies; the rows are joined back after.
# The result is a set, each row with its seq last: path_root_first walks it.
_WALK_KEYS = """
WITH RECURSIVE path(node_id, parent_id) AS (
    SELECT node_id, parent_id FROM lash_nodes
     WHERE session_id = ?1 AND node_id = ?2 AND tombstoned = 0
    UNION
    SELECT n.node_id, n.parent_id FROM path
      JOIN lash_nodes AS n ON n.session_id = ?1 AND n.node_id = path.parent_id
     WHERE n.tombstoned = 0
)"""
_SELECT_PATH = f"""{_WALK_KEYS}
SELECT {", ".join("n." + c for c in _NODE_COLUMNS.split(", "))}, n.seq FROM path
  JOIN lash_nodes AS n ON n.session_id = ?1 AND n.node_id = path.node_id
"""
# What load_graph reads: the node columns, then whether the node is pinned
# (so the pins come with the rows: no second pass over the session's rows).
_READ_COLUMNS = ", ".join(f"n.{c}" for c in [*_NODE_COLUMNS.split(", "), "pinned"])
_READ_FULL = (
    f"SELECT {_READ_COLUMNS} FROM lash_nodes AS n"
    " WHERE n.session_id = ? AND n.tombstoned = 0 ORDER BY n.seq"
)
_READ_PATH = f"""{_WALK_KEYS}
SELECT {_READ_COLUMNS} FROM path
  JOIN lash_nodes AS n ON n.session_id = ?1 AND n.node_id = path.node_id
"""
# The rows of the hinted seq ranges (a JSON array of [first, last]): one
# index range scan each. Text that is not JSON reads as no ranges, and an
# item that is not an array matches no row: a hint is only tried.
_READ_RANGES = f"""
SELECT {_READ_COLUMNS}
  FROM json_each(CASE WHEN json_valid(?2) THEN ?2 ELSE '[]' END) AS r
 CROSS JOIN lash_nodes AS n
 WHERE n.session_id = ?1 AND n.tombstoned = 0
   AND n.seq BETWEEN (CASE WHEN r.type = 'array' THEN r.value ->> 0 END)
                 AND (CASE WHEN r.type = 'array' THEN r.value ->> 1 END)
"""
# The usual hint (a conversation that never went back) is one range: a
# plain range scan, which a new connection also prepares in a fraction of
# the time the query above takes (a cold resume prepares every statement;
# that difference made ACTIVE_PATH_ONLY slower than KEEP_ALL with nothing
# off the path).
_READ_RANGE = (
    f"SELECT {_READ_COLUMNS} FROM lash_nodes AS n"
    " WHERE n.session_id = ? AND n.tombstoned = 0 AND n.seq BETWEEN ? AND ? ORDER BY n.seq"
)
# CROSS JOIN keeps the ranges as the outer loop (SQLite never reorders it):
# left to the planner, it scans every node of the session and tries each
# range against each, whatever share of them is off the path.
_SEQ_OF = "SELECT seq FROM lash_nodes WHERE session_id = ? AND node_id = ? AND tombstoned = 0"
_SELECT_NODE = (
    f"SELECT {_NODE_COLUMNS} FROM lash_nodes"
    " WHERE session_id = ? AND node_id = ? AND tombstoned = 0"
)
_SELECT_HEAD = """
SELECT head_revision, next_seq, leaf_id, last_commit_id, path_hint
  FROM lash_sessions WHERE session_id = ?
"""
#: How many ids one statement binds (SQLite's oldest default limit is 999).
_CHUNK = 500
_INSERT_SESSION = """
INSERT INTO lash_sessions (session_id, head_revision, next_seq, live_nodes, leaf_id, policy,
    frames, current_frame_id, tool_snapshot, plugin_snapshot, host_checkpoint, updated_at,
    last_commit_id, created_at, created_by, path_hint)
VALUES (?, 1, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_UPDATE_SESSION = """
UPDATE lash_sessions SET head_revision = head_revision + 1, next_seq = ?,
    live_nodes = live_nodes + ?, leaf_id = ?, policy = ?, frames = ?, current_frame_id = ?,
    tool_snapshot = ?, plugin_snapshot = ?, host_checkpoint = ?, updated_at = ?,
    last_commit_id = ?, path_hint = ?
WHERE session_id = ?
"""
# Keyset pages of idle sessions, oldest first, each with its live node
# count and whether a worker holds its lease (kept, never expired).
_IDLE = """
SELECT s.session_id, s.updated_at, s.live_nodes, EXISTS (
    SELECT 1 FROM lash_leases AS l
     WHERE l.session_id = s.session_id AND l.owner IS NOT NULL AND l.expires_at > ?5
)
  FROM lash_sessions AS s
 WHERE s.updated_at < ?1 AND (s.updated_at, s.session_id) > (?2, ?3)
 ORDER BY s.updated_at, s.session_id
 LIMIT ?4
"""
_FORK_SESSION = """
INSERT INTO lash_sessions (session_id, head_revision, next_seq, live_nodes, leaf_id, policy,
    frames, current_frame_id, tool_snapshot, plugin_snapshot, host_checkpoint, updated_at,
    created_at, created_by, origin_session, origin_node)
SELECT ?, 1, ?, ?, ?, policy, frames, current_frame_id, tool_snapshot, plugin_snapshot,
    host_checkpoint, ?, ?, ?, ?, ?
  FROM lash_sessions WHERE session_id = ?
"""
_PIN = "UPDATE lash_nodes SET pinned = ? WHERE session_id = ? AND node_id = ? AND tombstoned = 0"
_MARK_DELETED = "INSERT OR IGNORE INTO lash_deleted (session_id, deleted_at) VALUES (?, ?)"
_INSERT_NODE = f"""
INSERT INTO lash_nodes (session_id, seq, {_NODE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
_SELECT_LEASE = "SELECT owner, token, expires_at FROM lash_leases WHERE session_id = ?"
#: A commit's first read, in one statement: the session row's head (its
#: columns as in _SELECT_HEAD, all NULL for a new session) and the lease row.
_SELECT_HEAD_AND_LEASE = """
SELECT s.head_revision, s.next_seq, s.leaf_id, s.last_commit_id, s.path_hint,
       l.session_id IS NOT NULL, l.owner, l.token, l.expires_at
  FROM (SELECT ? AS id) AS wanted
  LEFT JOIN lash_sessions AS s ON s.session_id = wanted.id
  LEFT JOIN lash_leases AS l ON l.session_id = wanted.id
"""
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
    ``migrate``: upgrade a database of an older schema version in place
    (one transaction under the write lock; see
    :mod:`lash_machine.stores.migrations`); without it such a database is
    refused with :class:`SchemaVersionMismatch`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        timeout: float = 30.0,
        synchronous: str = "FULL",
        migrate: bool = False,
    ) -> None:
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"unknown synchronous setting {synchronous!r}")
        self.path = os.fspath(path)
        self._timeout = timeout
        self._synchronous = synchronous.upper()
        self._local = threading.local()
        self._lock = threading.Lock()
        self._connections: list[sqlite3.Connection] = []
        # Connections inside a transaction right now: close() leaves them to
        # their thread, since closing a connection another thread is using
        # can crash the interpreter (a read abandoned by a cancelled call
        # may still be running when its store is closed).
        self._busy: set[sqlite3.Connection] = set()
        self._closed = False
        self._migrate = migrate
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
    def _transaction(self, begin: str | None) -> Iterator[sqlite3.Connection]:
        """Run the block in one transaction; any error rolls it back. SQLite
        errors come out as :class:`StoreError`. ``begin=None``: no
        transaction of our own, for a block of one statement."""
        conn = self._connection()
        with self._lock:
            if self._closed:
                raise StoreError(f"{self.path}: the store is closed")
            self._busy.add(conn)
        try:
            if begin is None:
                yield conn
            else:
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
        finally:
            with self._lock:
                self._busy.discard(conn)
                closed = self._closed
            if closed:  # closed meanwhile: this thread closes its own connection
                conn.close()

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
        if version != 0 and not (self._migrate and version in migrations.SQLITE):
            raise SchemaVersionMismatch(self.path, version, SCHEMA_VERSION)
        with self._transaction("BEGIN IMMEDIATE"):
            # Read again under the write lock: a concurrent opener of a new
            # file either created (or upgraded) the schema already or waits
            # for us to.
            version = self._user_version(conn)
            if version == SCHEMA_VERSION:
                return
            if version != 0:
                if not (self._migrate and version in migrations.SQLITE):
                    raise SchemaVersionMismatch(self.path, version, SCHEMA_VERSION)
                for statement in migrations.sqlite_plan(version):
                    conn.execute(statement)
                return
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
        """The session with the nodes of ``scope``, or ``None`` (a deleted
        one raises :class:`SessionDeleted`)."""
        with self._transaction("BEGIN") as conn:
            row = conn.execute(_SELECT_SESSION, (session_id,)).fetchone()
            if row is None:
                _refuse_deleted(conn, session_id)
                return None
            rows: list[Any]
            if isinstance(scope, FullGraph):
                rows = conn.execute(_READ_FULL, (session_id,)).fetchall()
            elif isinstance(scope, ActivePath):
                leaf = scope.leaf_id if scope.leaf_id is not None else row[1]
                # The hint is of the stored leaf's path only.
                hint = row[13] if leaf == row[1] else None
                rows = [] if leaf is None else _read_path(conn, session_id, leaf, hint)
            else:
                raise StoreError(f"unknown read scope {scope!r}")
        return decode_session(
            session_id,
            row[0],
            row[1:8],
            decode_nodes(session_id, rows),
            pinned=[r[0] for r in rows if r[6]],
            generation=row[8],
            created_at=row[9],
            created_by=row[10],
            origin=(row[11], row[12]),
        )

    def session_stamp(self, session_id: str) -> SessionStamp | None:
        """The session's head revision, generation and creation time: one
        small row (a deleted session raises :class:`SessionDeleted`)."""
        # One statement: its own read transaction is snapshot enough (a
        # warm resume makes this call, so it saves the BEGIN and COMMIT).
        with self._transaction(None) as conn:
            row = conn.execute(_SELECT_STAMP, (session_id,)).fetchone()
            if row is None:
                _refuse_deleted(conn, session_id)
                return None
        return SessionStamp(row[0], row[1], row[2])

    @staticmethod
    def _path(
        conn: sqlite3.Connection, session_id: str, leaf: object, hint: object = None
    ) -> list[Any]:
        """The chain from ``leaf`` to a root, root first, each row without
        its seq: the hinted ranges first (see _rows), the recursive walk from
        wherever they fall short."""
        return [r[:6] for r in _read_path(conn, session_id, leaf, hint)]

    def load_node(self, session_id: str, node_id: str) -> SessionNode | None:
        """One live node of the session, or ``None``."""
        with self._transaction(None) as conn:  # one statement
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
        refs = built_on(rows, repairs, commit.delta.leaf_id, commit.delta.pinned)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            # The write lock is held from here on: no claim, tombstone or
            # vacuum can come between these checks and the writes.
            now = time.time()
            row = conn.execute(_SELECT_HEAD_AND_LEASE, (sid,)).fetchone()
            found = None if row[0] is None else row[:5]
            actual = None if found is None else found[0]
            if found is not None and _applied_before(commit, found[0], found[3]):
                return int(found[0])  # a retry of the commit that made this head
            if found is None:
                _refuse_deleted(conn, sid)
            check_fence(sid, commit.fencing_token, tuple(row[6:9]) if row[5] else None, now)
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
            hint = None
            if not repairs:  # a repair may move the path: the next commit works it out
                hint = _next_hint(conn, sid, found, rows, first_seq=first_seq, leaf=session.leaf_id)
            if found is None:
                conn.execute(
                    _INSERT_SESSION,
                    (
                        sid,
                        next_seq,
                        len(rows),
                        *columns,
                        commit.commit_id,
                        now,
                        commit.commit_id,
                        hint,
                    ),
                )
            else:
                conn.execute(
                    _UPDATE_SESSION, (next_seq, len(rows), *columns, commit.commit_id, hint, sid)
                )
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
            pins = [(0, sid, n) for n in commit.delta.unpinned]
            pins += [(1, sid, n) for n in commit.delta.pinned]
            if pins:
                conn.executemany(_PIN, pins)
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
            pinned = _first_pinned(conn, session_id, targets)
            if pinned is not None:
                raise TombstoneRefused(session_id, pinned, PIN_REASON)
            orphan = _first_orphan(conn, session_id, targets)
            if orphan is not None:
                raise TombstoneRefused(session_id, orphan[1], orphan_reason(orphan[0]))
            conn.executemany(
                "UPDATE lash_nodes SET tombstoned = 1 WHERE session_id = ? AND node_id = ?",
                [(session_id, node_id) for node_id in targets],
            )
            conn.execute(
                "UPDATE lash_sessions SET live_nodes = live_nodes - ?, generation = generation + 1"
                " WHERE session_id = ?",
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

    def delete_session(self, session_id: str, now: float | None = None) -> bool:
        """Remove the session, its nodes and its intents, keeping a marker
        of its id."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            return _delete(conn, session_id, time.time() if now is None else now)

    def purge_deleted(self, older_than: float) -> int:
        """Forget the markers of sessions deleted before ``older_than``."""
        with self._transaction("BEGIN IMMEDIATE") as conn:
            return int(
                conn.execute(
                    "DELETE FROM lash_deleted WHERE deleted_at < ?", (older_than,)
                ).rowcount
            )

    def expire(
        self,
        idle_for: float,
        *,
        now: float | None = None,
        dry_run: bool = False,
        batch_size: int = 200,
        progress: Callable[[ExpireReport], None] | None = None,
    ) -> ExpireReport:
        """Delete (or, for a dry run, list) the sessions idle for
        ``idle_for`` seconds, except those whose lease is held, in write
        transactions of at most ``batch_size`` sessions each."""
        check_expiry(idle_for, batch_size)
        at = time.time() if now is None else now
        expired: list[str] = []
        nodes = kept = 0
        longest = 0.0
        after: tuple[float, str] = (float("-inf"), "")
        while True:
            started = time.perf_counter()
            with self._transaction("BEGIN" if dry_run else "BEGIN IMMEDIATE") as conn:
                rows = conn.execute(_IDLE, (at - idle_for, *after, batch_size, at)).fetchall()
                for session_id, updated_at, live, leased in rows:
                    after = (updated_at, session_id)
                    if leased:
                        kept += 1
                        continue
                    expired.append(session_id)
                    nodes += live
                    if not dry_run:
                        _delete(conn, session_id, at)
            if not dry_run:
                longest = max(longest, time.perf_counter() - started)
            report = ExpireReport(tuple(expired), nodes, kept, dry_run, longest)
            if progress is not None:
                progress(report)
            if len(rows) < batch_size:
                return report

    def fork_session(
        self, session_id: str, node_id: str | None, new_session_id: str, now: float | None = None
    ) -> int:
        """Copy the session's path up to ``node_id`` (its stored leaf when
        ``None``) into a new session, in one transaction; return 1."""
        check_session_id(new_session_id)
        with self._transaction("BEGIN IMMEDIATE") as conn:
            source = conn.execute(_SELECT_HEAD, (session_id,)).fetchone()
            if source is None:
                _refuse_deleted(conn, session_id)
                raise SessionNotFound(session_id)
            at = node_id if node_id is not None else source[2]
            rows = [] if at is None else self._path(conn, session_id, at)
            if at is not None and (not rows or rows[-1][0] != at):
                raise ParentTombstoned(session_id, at)
            _refuse_deleted(conn, new_session_id)
            taken = conn.execute(_SELECT_HEAD, (new_session_id,)).fetchone()
            if taken is not None:
                raise HeadRevisionConflict(new_session_id, None, taken[0])
            stamp = time.time() if now is None else now
            made_by = uuid.uuid4().hex
            copied = (
                new_session_id,
                len(rows),
                len(rows),
                at,
                stamp,
                stamp,
                made_by,
                session_id,
                at,
            )
            conn.execute(_FORK_SESSION, (*copied, session_id))
            conn.executemany(
                _INSERT_NODE, [(new_session_id, seq, *row) for seq, row in enumerate(rows)]
            )
        return 1

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
        """Close every thread's connection (one inside a transaction is
        closed by its thread when that ends); later calls raise
        :class:`StoreError`."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
            idle = [conn for conn in connections if conn not in self._busy]
        for conn in idle:
            conn.close()


def _next_hint(
    conn: sqlite3.Connection,
    session_id: str,
    found: Sequence[Any] | None,
    rows: Sequence[NodeRow],
    *,
    first_seq: int,
    leaf: str | None,
) -> str | None:
    """The hint of the path a commit leaves (its repairs aside): the path
    through its appended rows, on top of the path of the stored node they
    continue from: the old hint extended when that node is the old leaf (an
    append at the leaf, the usual commit: its cost does not grow with the
    path), the old hint cut at it when it lies on that path (a branch
    back), else a walk of the stored graph."""
    seqs, above = appended_chain(rows, leaf, first_seq)
    chain = ranges_of(sorted(seqs))
    if above is None:
        return dump_hint(chain)
    if found is not None and above == found[2]:
        extended = extended_hint(found[4], chain)
        if extended is not None:
            return extended
    old = None if found is None else parse_hint(found[4])
    base: Ranges | None = None
    if old is not None and found is not None and above == found[2]:
        base = old
    elif old is not None:
        seq = conn.execute(_SEQ_OF, (session_id, above)).fetchone()
        base = None if seq is None else truncated(old, seq[0])
    if base is None:
        walked = conn.execute(_SELECT_PATH, (session_id, above)).fetchall()
        by_id = {r[0]: r for r in walked}
        base = ranges_of(sorted(r[6] for r in path_root_first(by_id.get, lambda r: r[1], above)))
    return dump_hint(joined(base, chain))


def _read_path(conn: sqlite3.Connection, session_id: str, leaf: object, hint: object) -> list[Any]:
    """The rows (as :data:`_READ_COLUMNS`) of the chain from ``leaf`` to a
    root, root first: the hinted ranges first (see _rows), the recursive walk
    from wherever they fall short. Hinted rows that come back as the whole
    chain already (each row the parent of the next, from a root to the
    leaf: an intact hint) are taken as they are, without a walk."""
    by_id: dict[Any, Any] = {}
    start: object = leaf
    if type(hint) is str:
        ranges = parse_hint(hint)
        if (
            ranges is not None
            and len(ranges) == 1
            and -_INT64 <= ranges[0][0] <= ranges[0][1] < _INT64
        ):
            rows = conn.execute(_READ_RANGE, (session_id, *ranges[0])).fetchall()
        else:
            rows = conn.execute(_READ_RANGES, (session_id, hint)).fetchall()
        if rows and rows[-1][0] == leaf and chained(rows):
            return rows
        by_id = {r[0]: r for r in rows}
        start = first_missing(by_id, leaf)
    if start is not None:
        found = conn.execute(_READ_PATH, (session_id, start)).fetchall()
        by_id.update((r[0], r) for r in found)
    return path_root_first(by_id.get, _parent_of, str(leaf))


#: Past the largest integer SQLite holds (a hint this release wrote never is).
_INT64 = 2**63


def _parent_of(row: Any) -> Any:
    return row[1]


def _refuse_deleted(conn: sqlite3.Connection, session_id: str) -> None:
    """Raise :class:`SessionDeleted` when the id is a deleted session's."""
    marker = conn.execute(_SELECT_DELETED, (session_id,)).fetchone()
    if marker is not None:
        raise SessionDeleted(session_id, marker[0])


def _delete(conn: sqlite3.Connection, session_id: str, now: float) -> bool:
    conn.execute("DELETE FROM lash_nodes WHERE session_id = ?", (session_id,))
    conn.execute("DELETE FROM lash_attachment_intents WHERE session_id = ?", (session_id,))
    deleted = conn.execute("DELETE FROM lash_sessions WHERE session_id = ?", (session_id,))
    if deleted.rowcount == 0:
        return False
    conn.execute(_MARK_DELETED, (session_id, now))
    return True


def _applied_before(commit: SessionCommit, head: int, last_commit_id: str | None) -> bool:
    """Whether ``commit`` retries the commit that made the stored ``head``."""
    return (
        commit.commit_id is not None
        and last_commit_id == commit.commit_id
        and head == (commit.expected_head or 0) + 1
    )


def _first_pinned(conn: sqlite3.Connection, session_id: str, targets: set[str]) -> str | None:
    """The first of ``targets`` (by id) that is pinned, if any."""
    pinned = {r[0] for r in conn.execute(_SELECT_PINNED, (session_id,))}
    found = sorted(pinned & targets)
    return found[0] if found else None


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
