"""The server store: PostgreSQL through psycopg 3 and a connection pool.

A commit is one SQL statement (so one transaction and one round trip)
whose first part is the compare-and-set: a conditional
``UPDATE ... WHERE head_revision = %s`` (or, for a session's first commit,
``INSERT ... ON CONFLICT DO NOTHING``). The row lock it takes orders
concurrent committers; for the loser it matches no row, and every other
write of the statement reads from it, so nothing of the loser is written.
A read is one pipelined round trip.

Every writer of a session takes the session row first, then node rows (a
tombstone, a delete and a vacuum run their statements in a transaction
after locking it), so writers of one session serialise without deadlock
and each sees what the one before committed. A deadlock or serialization
failure the server still reports is a :class:`TransientStoreError`.

After a server restart the pool's idle connections are dead; each is
found (the server said goodbye on it) and replaced before a call uses it.

PostgreSQL ``text`` cannot hold NUL characters: writing an id (or URI) with
one raises :class:`StoreError`; reads of such ids find nothing. Text that
is not valid Unicode (a lone surrogate) cannot be sent at all: any call
with it raises :class:`StoreError`, as in SQLite.

A DSN's password never appears in what the store raises or shows: errors
and :attr:`PostgresStore.dsn` carry the DSN with its password as ``***``.
A malformed DSN, a refused password or an unreachable server is reported
at once, with libpq's reason.
"""

from __future__ import annotations

import contextlib
import math
import re
import select
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import psycopg
from psycopg import errors as pg_errors
from psycopg.pq import TransactionStatus
from psycopg_pool import ConnectionPool, PoolTimeout

from ..errors import (
    HeadRevisionConflict,
    LeaseHeld,
    LeaseLost,
    ParentTombstoned,
    SchemaVersionMismatch,
    SessionDeleted,
    SessionNotFound,
    StoreError,
    TombstoneRefused,
    TransientStoreError,
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
from ._dsn import redact, scrub
from ._rows import (
    LEAF_REASON,
    PIN_REASON,
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
    first_missing,
    fold_repairs,
    orphan_reason,
    path_root_first,
    ranges_of,
)
from .base import SCHEMA_VERSION, check_expiry
from .leases import Lease, check_claim, check_fence

__all__ = ["PostgresStore"]

#: Key of the transaction-scoped advisory lock that serialises schema setup
#: (the bytes of "lashschm"), so concurrent openers of a new database do not race.
_SCHEMA_LOCK = 0x6C61736873636D6D

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
        updated_at double precision NOT NULL,
        created_at double precision NOT NULL,
        created_by text,
        generation bigint NOT NULL DEFAULT 0,
        last_commit_id text,
        path_hint jsonb,
        origin_session text,
        origin_node text
    )""",
    # Expiry finds the idle sessions, oldest first.
    "CREATE INDEX lash_sessions_idle ON lash_sessions (updated_at, session_id)",
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
        pinned boolean NOT NULL DEFAULT false,
        PRIMARY KEY (session_id, node_id)
    )""",
    "CREATE INDEX lash_nodes_by_seq ON lash_nodes (session_id, seq)",
    # Partial: only tombstoned (pinned) rows pay for them, and vacuum (a read
    # of the pins) finds them fast.
    "CREATE INDEX lash_nodes_tombstoned ON lash_nodes (session_id) WHERE tombstoned",
    "CREATE INDEX lash_nodes_pinned ON lash_nodes (session_id) WHERE pinned",
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
    # One row per session ever leased, kept after release and after the
    # session is deleted: its token only grows. owner is NULL once released.
    """CREATE TABLE lash_leases (
        session_id text PRIMARY KEY,
        owner text,
        token bigint NOT NULL,
        expires_at double precision NOT NULL
    )""",
    # The ids of deleted sessions: never made again (until purged).
    """CREATE TABLE lash_deleted (
        session_id text PRIMARY KEY,
        deleted_at double precision NOT NULL
    )""",
)

_NODE_COLUMNS = "node_id, parent_id, kind, frame_id, created_at, body"
_SESSION_COLUMNS = (
    "head_revision, leaf_id, policy, frames, current_frame_id,"
    " tool_snapshot, plugin_snapshot, host_checkpoint"
)

_SELECT_SESSION = (
    f"SELECT {_SESSION_COLUMNS}, generation, created_at, created_by, origin_session, origin_node"
    " FROM lash_sessions WHERE session_id = %s"
)
_SELECT_PINNED = (
    "SELECT node_id FROM lash_nodes WHERE session_id = %s AND pinned AND NOT tombstoned"
)
_SELECT_DELETED = "SELECT deleted_at FROM lash_deleted WHERE session_id = %s"
_SELECT_STAMP = """
SELECT s.head_revision, s.generation, s.created_by,
       (SELECT deleted_at FROM lash_deleted WHERE session_id = %(sid)s)
  FROM (SELECT 1) AS one LEFT JOIN lash_sessions AS s ON s.session_id = %(sid)s
"""
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
# The live rows of one hinted range ``r``, by an ordered index scan.
_RANGE_ROWS = f"""LATERAL (
    SELECT {_NODE_COLUMNS} FROM lash_nodes AS m
     WHERE m.session_id = %(sid)s
       AND m.seq BETWEEN (r.range ->> 0)::bigint AND (r.range ->> 1)::bigint
       AND NOT m.tombstoned
     ORDER BY m.seq
     LIMIT greatest((r.range ->> 1)::bigint - (r.range ->> 0)::bigint + 1, 0)
) AS n"""
# One step of a walk up the path: the live parent, by a key probe.
_PARENT_STEP = f"""SELECT parent.* FROM path, LATERAL (
    SELECT {_NODE_COLUMNS} FROM lash_nodes AS n
     WHERE n.session_id = %(sid)s AND n.node_id = path.parent_id AND NOT n.tombstoned
     LIMIT 1
) AS parent"""
_SELECT_PATH = f"""
WITH RECURSIVE session AS MATERIALIZED (
    SELECT leaf_id, path_hint FROM lash_sessions WHERE session_id = %(sid)s
),
leaf AS MATERIALIZED (
    SELECT coalesce(%(leaf)s::text, (SELECT leaf_id FROM session)) AS node_id
),
-- The hint (see stores/_rows.py) holds the stored leaf's path only: for
-- another leaf, or without a hint, the walk below does the work.
-- Each range is read by its own ordered index scan: the LATERAL subquery
-- with ORDER BY and a LIMIT cannot be flattened into a join, so the plan
-- is right without statistics too (a plain join, planned on a table never
-- analyzed, read every row of the session once per read and filtered).
hinted AS MATERIALIZED (
    SELECT {", ".join("n." + c for c in _NODE_COLUMNS.split(", "))}
      FROM session, leaf, jsonb_array_elements(session.path_hint) AS r(range),
           {_RANGE_ROWS}
     WHERE leaf.node_id = session.leaf_id
),
path AS (
    SELECT {_NODE_COLUMNS} FROM lash_nodes
     WHERE session_id = %(sid)s AND NOT tombstoned
       AND node_id = (SELECT node_id FROM leaf)
       AND NOT EXISTS (SELECT 1 FROM hinted)
    UNION
    {_PARENT_STEP}
)
SELECT {_NODE_COLUMNS} FROM hinted
UNION ALL
SELECT {_NODE_COLUMNS} FROM path
"""
# The rows of the stored leaf's hinted ranges, as ``hinted`` above, in
# order, without the walk: a statement this small costs a new connection's
# first read much less to plan and run (most resumes read through a fresh
# pooled connection). When they are not the whole path (no hint, or a row
# gone since), load_graph walks the rest with _SELECT_WALK.
_SELECT_HINTED = f"""
SELECT {", ".join("n." + c for c in _NODE_COLUMNS.split(", "))}
  FROM lash_sessions AS s, jsonb_array_elements(s.path_hint) AS r(range),
       {_RANGE_ROWS}
 WHERE s.session_id = %(sid)s
"""
# A path by the walk alone, from the node asked for or (NULL) the stored
# leaf, read in the same statement: the rest of a path a hint fell short
# of, or a whole path read again in one snapshot.
_SELECT_WALK = f"""
WITH RECURSIVE path AS (
    SELECT {_NODE_COLUMNS} FROM lash_nodes
     WHERE session_id = %(sid)s AND NOT tombstoned
       AND node_id = coalesce(
           %(leaf)s::text, (SELECT leaf_id FROM lash_sessions WHERE session_id = %(sid)s))
    UNION
    {_PARENT_STEP}
)
SELECT {_NODE_COLUMNS} FROM path
"""
_SELECT_NODE = (
    f"SELECT {_NODE_COLUMNS} FROM lash_nodes"
    " WHERE session_id = %s AND node_id = %s AND NOT tombstoned"
)
# What a commit that did not go through learns next: the head, the id of
# the commit that made it, and the session's deletion marker.
_SELECT_HEAD = """
SELECT s.head_revision, s.last_commit_id,
       (SELECT deleted_at FROM lash_deleted WHERE session_id = %(sid)s)
  FROM (SELECT 1) AS one LEFT JOIN lash_sessions AS s ON s.session_id = %(sid)s
"""

# Every writer of a session's rows takes its locks in one order: the lease
# row (shared, commits only; claims lock nothing else, so no writer ever
# waits for a lease row while holding more), then the session row, then node
# rows. The session row is the session's lock: a commit, a tombstone, a
# delete and a vacuum of one session serialise on it, whatever its lease
# history (a session that was never leased has no lease row to lock).
_LOCK_SESSION = "SELECT 1 FROM lash_sessions WHERE session_id = %s FOR UPDATE"

# A commit is ONE statement, so it is atomic without BEGIN/COMMIT and costs
# one round trip. The compare-and-set ``cas`` gates every write: every other
# part reads from it, so when it matches no row (another writer won, or a
# check refused) nothing else is written. All data-modifying CTEs share one
# snapshot: reparents of nodes appended by the same commit are folded into
# the inserted rows beforehand.
#: The server's clock, in seconds since the epoch: every lease expiry is
#: judged by it (unless the caller passes ``now``), so workers' clocks may drift.
_CLOCK = "extract(epoch from clock_timestamp())::float8"

# The lease check comes first. FOR SHARE locks the session's lease row (when
# it has one) for the rest of the statement: a claim, which updates that
# row, waits for this commit to finish, and a commit that waited for a claim
# re-reads the row and sees the new token. So no claim lands between the
# check and the compare-and-set, and a worker that claimed the session sees
# every commit fenced by an older token. ``fence`` is one row saying whether
# the lease lets this commit through; the compare-and-set requires it.
_FENCE = f"""
lease AS MATERIALIZED (
    SELECT owner, token, expires_at FROM lash_leases WHERE session_id = %(sid)s FOR SHARE
),
fence AS MATERIALIZED (
    SELECT CASE WHEN %(token)s::bigint IS NULL
        THEN NOT EXISTS (SELECT 1 FROM lease WHERE owner IS NOT NULL AND expires_at > {_CLOCK})
        ELSE EXISTS (SELECT 1 FROM lease WHERE owner IS NOT NULL AND token = %(token)s::bigint)
    END AS ok
),
"""
# The nodes the commit builds on (``refs``: see _rows.built_on) must be live
# nodes of the session. The statement's snapshot predates any wait for the
# session row, so a tombstone or vacuum that committed during the wait is
# invisible to plain reads. So the session row is locked first (``locked``;
# it reads ``fence`` so that the lease row is locked before it, in the one
# order), then the row of each ref (``probe``): a locking read returns the
# newest version of a row, and none for a row deleted meanwhile. Each probe
# is a primary-key lookup (LATERAL keeps the planner from turning them into
# a scan of the session). The stored leaf is left out: an append that
# continues from the leaf (the usual commit) locks and probes nothing more.
_GUARD = """
refs AS MATERIALIZED (
    SELECT r.node_id, r.ord FROM unnest(%(refs)s::text[]) WITH ORDINALITY AS r(node_id, ord)
     WHERE r.node_id IS DISTINCT FROM
           (SELECT leaf_id FROM lash_sessions WHERE session_id = %(sid)s)
),
locked AS MATERIALIZED (
    SELECT 1 FROM fence, lash_sessions AS s
     WHERE s.session_id = %(sid)s AND EXISTS (SELECT 1 FROM refs)
       FOR UPDATE OF s
),
probe AS MATERIALIZED (
    SELECT refs.node_id, refs.ord, h.tombstoned
      FROM locked, refs LEFT JOIN LATERAL (
           SELECT n.tombstoned FROM lash_nodes AS n
            WHERE n.session_id = %(sid)s AND n.node_id = refs.node_id FOR SHARE
      ) AS h ON true
),
dead AS MATERIALIZED (
    SELECT node_id FROM probe WHERE tombstoned IS DISTINCT FROM false ORDER BY ord LIMIT 1
),
"""
# A deleted session's id is never made again (until its marker is purged).
# The hint of the path the commit leaves (see stores/_rows.py): the path
# through its appended rows (``chain``, seq offsets from the first appended
# row) on top of the path of the stored node they continue from (``above``):
# the old hint when that node is the old leaf (an append at the leaf), the
# old hint cut at it when it lies on that path, else a walk of the stored
# graph. A commit with repairs leaves no hint (the next one works it out).
# The session row read here may predate a concurrent commit; then the
# compare-and-set fails and none of this is written.
_HINT = """
hint_row AS MATERIALIZED (
    SELECT leaf_id, path_hint, next_seq FROM lash_sessions WHERE session_id = %(sid)s
),
hint_base AS MATERIALIZED (
    SELECT CASE
        WHEN NOT %(hint_ok)s THEN NULL
        WHEN %(above)s::text IS NULL THEN '[]'::jsonb
        WHEN r.path_hint IS NOT NULL AND r.leaf_id = %(above)s THEN r.path_hint
        ELSE coalesce(
            (SELECT CASE WHEN bool_or((e ->> 0)::bigint <= x.seq AND x.seq <= (e ->> 1)::bigint)
                    THEN jsonb_agg(jsonb_build_array((e ->> 0)::bigint,
                                                     least((e ->> 1)::bigint, x.seq)) ORDER BY o)
                         FILTER (WHERE (e ->> 0)::bigint <= x.seq)
                    END
               FROM jsonb_array_elements(r.path_hint) WITH ORDINALITY AS t(e, o),
                    (SELECT seq FROM lash_nodes
                      WHERE session_id = %(sid)s AND node_id = %(above)s AND NOT tombstoned) AS x
              WHERE r.path_hint IS NOT NULL),
            (WITH RECURSIVE walk AS (
                 SELECT node_id, parent_id, seq FROM lash_nodes
                  WHERE session_id = %(sid)s AND node_id = %(above)s AND NOT tombstoned
                 UNION
                 SELECT p.* FROM walk, LATERAL (
                     SELECT n.node_id, n.parent_id, n.seq FROM lash_nodes AS n
                      WHERE n.session_id = %(sid)s AND n.node_id = walk.parent_id
                        AND NOT n.tombstoned
                      LIMIT 1
                 ) AS p
             )
             SELECT jsonb_agg(jsonb_build_array(lo, hi) ORDER BY lo)
               FROM (SELECT min(seq) AS lo, max(seq) AS hi
                       FROM (SELECT seq, seq - row_number() OVER (ORDER BY seq) AS run
                               FROM walk) AS runs
                      GROUP BY run) AS ranges)
        )
    END AS ranges,
    coalesce(r.next_seq, 0) AS first_seq
      FROM (SELECT 1) AS one LEFT JOIN hint_row AS r ON true
),
hint_chain AS MATERIALIZED (
    SELECT coalesce(jsonb_agg(jsonb_build_array(b.first_seq + (e ->> 0)::bigint,
                                                b.first_seq + (e ->> 1)::bigint) ORDER BY o),
                    '[]'::jsonb) AS ranges
      FROM hint_base AS b, jsonb_array_elements(%(chain)s::jsonb) WITH ORDINALITY AS t(e, o)
),
hint AS MATERIALIZED (
    SELECT CASE
        WHEN b.ranges IS NULL THEN NULL
        WHEN jsonb_array_length(b.ranges) > 0 AND jsonb_array_length(c.ranges) > 0
         AND (b.ranges -> -1 ->> 1)::bigint + 1 = (c.ranges -> 0 ->> 0)::bigint
            THEN (b.ranges - (-1))
                 || jsonb_build_array(jsonb_build_array(b.ranges -> -1 -> 0, c.ranges -> 0 -> 1))
                 || (c.ranges - 0)
        ELSE b.ranges || c.ranges
    END AS ranges
      FROM hint_base AS b, hint_chain AS c
),
"""
_CAS_CREATE = """
INSERT INTO lash_sessions (session_id, head_revision, next_seq, live_nodes, leaf_id, policy,
    frames, current_frame_id, tool_snapshot, plugin_snapshot, host_checkpoint, updated_at,
    created_at, last_commit_id, created_by, path_hint)
SELECT %(sid)s, 1, %(count)s, %(count)s, %(leaf)s, %(policy)s, %(frames)s, %(frame)s,
    %(tools)s, %(plugins)s, %(checkpoint)s, %(now)s, %(now)s, %(commit_id)s, %(commit_id)s,
    (SELECT ranges FROM hint)
  FROM fence WHERE fence.ok
   AND NOT EXISTS (SELECT 1 FROM lash_deleted WHERE session_id = %(sid)s)
ON CONFLICT (session_id) DO NOTHING
RETURNING 0::bigint AS first_seq
"""
_CAS_ADVANCE = """
UPDATE lash_sessions SET head_revision = head_revision + 1, next_seq = next_seq + %(count)s,
    live_nodes = live_nodes + %(count)s, leaf_id = %(leaf)s, policy = %(policy)s,
    frames = %(frames)s, current_frame_id = %(frame)s, tool_snapshot = %(tools)s,
    plugin_snapshot = %(plugins)s, host_checkpoint = %(checkpoint)s, updated_at = %(now)s,
    last_commit_id = %(commit_id)s, path_hint = (SELECT ranges FROM hint)
WHERE session_id = %(sid)s AND head_revision = %(expected)s AND (SELECT ok FROM fence)
  AND NOT EXISTS (SELECT 1 FROM dead)
RETURNING next_seq - %(count)s AS first_seq
"""
_COMMIT_APPEND = """,
appended AS (
    INSERT INTO lash_nodes (session_id, seq, node_id, parent_id, kind, frame_id, created_at, body,
                            pinned)
    SELECT %(sid)s, cas.first_seq + r.ord - 1, r.node_id, r.parent_id, r.kind, r.frame_id,
           r.created_at, r.body, r.pinned
      FROM cas, unnest(%(ids)s::text[], %(parents)s::text[], %(kinds)s::text[],
                       %(frames_of)s::text[], %(times)s::float8[], %(bodies)s::text[],
                       %(pinned_of)s::bool[])
           WITH ORDINALITY AS r(node_id, parent_id, kind, frame_id, created_at, body, pinned, ord)
)
"""
# What a commit changes in rows already stored: pins, repairs, adopted
# attachments. Most commits change none, and the statement is prepared
# without this part for them: the server sets up every part of a plan on
# each run, used or not (three more updates of two tables and their
# indexes cost about a third of the statement's time).
_COMMIT_EDITS = """,
-- A generic plan made on a table not yet analyzed believes a session has
-- two rows, and reached these rows by walking the session's seq index
-- (0.5 ms each at 2,000 nodes, on every commit). So each named node is
-- found by a primary-key probe (a LATERAL ... LIMIT 1, which the planner
-- cannot turn into a join over the session) and its row updated by ctid;
-- and the cardinality conditions name no row, so the plan tests them once
-- and skips the update when there is nothing to pin or repair. (A node row
-- that a transaction this one waited for changed has a new ctid and is
-- left alone: outside a commit, which the head check already refuses,
-- only a tombstone changes a node row; a pin of a node tombstoned so is
-- refused by the liveness check, and a repair of one no read ever sees.)
pins AS (
    UPDATE lash_nodes AS n SET pinned = r.pinned
      FROM cas, unnest(%(pin_ids)s::text[], %(pin_flags)s::bool[]) AS r(node_id, pinned),
           LATERAL (SELECT k.ctid FROM lash_nodes AS k
                     WHERE k.session_id = %(sid)s AND k.node_id = r.node_id LIMIT 1) AS hit
     WHERE cardinality(%(pin_ids)s::text[]) > 0 AND n.ctid = hit.ctid AND NOT n.tombstoned
),
reparented AS (
    -- A node both re-parented and pinned (a compaction's kept node, say)
    -- gets both here: two UPDATEs of one row in one statement keep one.
    UPDATE lash_nodes AS n SET parent_id = r.parent_id, pinned = COALESCE(r.pinned, n.pinned)
      FROM cas, unnest(%(moved)s::text[], %(new_parents)s::text[], %(moved_pins)s::bool[])
           AS r(node_id, parent_id, pinned),
           LATERAL (SELECT k.ctid FROM lash_nodes AS k
                     WHERE k.session_id = %(sid)s AND k.node_id = r.node_id LIMIT 1) AS hit
     WHERE cardinality(%(moved)s::text[]) > 0 AND n.ctid = hit.ctid
),
adopted AS (
    UPDATE lash_attachment_intents AS i SET committed = true
      FROM cas
     WHERE cardinality(%(adopt)s::text[]) > 0
       AND i.session_id = %(sid)s AND i.attachment_id = ANY(%(adopt)s::text[])
)
"""
_COMMIT_ANSWER = """
SELECT (SELECT first_seq FROM cas), fence.ok,
       (SELECT owner FROM lease), (SELECT token FROM lease), (SELECT expires_at FROM lease),
       {dead}
  FROM fence
"""
# A first commit builds on nothing stored: no guard.
_COMMIT_CREATE = f"WITH {_FENCE} {_HINT} cas AS ({_CAS_CREATE}) {_COMMIT_APPEND}"
_COMMIT_ADVANCE = f"WITH {_FENCE} {_GUARD} {_HINT} cas AS ({_CAS_ADVANCE}) {_COMMIT_APPEND}"
_CREATE_ANSWER = _COMMIT_ANSWER.format(dead="NULL::text")
_ADVANCE_ANSWER = _COMMIT_ANSWER.format(dead="(SELECT node_id FROM dead)")


@attrs.frozen
class _Native:
    """A query whose ``%(name)s`` placeholders were turned, once, into
    PostgreSQL's own ``$n`` ones, to run on a :class:`psycopg.RawCursor`.
    psycopg caches its own rewriting only for queries up to 4 kB; the
    commit statement is longer, and rewriting it on every commit cost more
    than the rest of the commit's Python."""

    text: str
    names: tuple[str, ...]

    @classmethod
    def of(cls, query: str) -> _Native:
        if "%%" in query or re.search(r"%(?!\(\w+\)s)", query):
            raise ValueError("only %(name)s placeholders can be made native")
        names: dict[str, int] = {}
        text = re.sub(
            r"%\((\w+)\)s",
            lambda m: f"${names.setdefault(m[1], len(names) + 1)}",
            query,
        )
        return cls(text, tuple(names))

    def run(self, conn: psycopg.Connection[Any], params: Mapping[str, object]) -> Any:
        """The first row of the query run with ``params``."""
        with psycopg.RawCursor(conn) as cursor:
            return cursor.execute(self.text, [params[name] for name in self.names]).fetchone()


#: The commit statement by (first commit?, edits stored rows?).
_NATIVE_COMMITS = {
    (True, False): _Native.of(_COMMIT_CREATE + _CREATE_ANSWER),
    (True, True): _Native.of(_COMMIT_CREATE + _COMMIT_EDITS + _CREATE_ANSWER),
    (False, False): _Native.of(_COMMIT_ADVANCE + _ADVANCE_ANSWER),
    (False, True): _Native.of(_COMMIT_ADVANCE + _COMMIT_EDITS + _ADVANCE_ANSWER),
}


def _array(values: Iterable[str | float | bool | None]) -> str:
    """``values`` as the text of a PostgreSQL array, for a ``%(name)s::type[]``
    parameter. psycopg works out the type of a list's elements anew on every
    call, which cost a commit about 110 µs for its fourteen arrays; one
    text costs it almost nothing. Text is quoted (NUL was refused before);
    a float is finite (refused before otherwise) and ``repr`` spells it as
    PostgreSQL reads it."""
    return "{" + ",".join(map(_element, values)) + "}"


def _element(value: str | float | bool | None) -> str:
    if value is None:
        return "NULL"
    if value is True:
        return "t"
    if value is False:
        return "f"
    if isinstance(value, str):
        # (str.translate would look up every character in a dict.)
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(float(value))


# A tombstone runs after _LOCK_SESSION, in the same transaction, so it sees
# every commit that went before it. ``targets`` are the live nodes asked
# for; they are hidden only when none is the stored leaf (``leaf``) and no
# live node outside them has one as its parent (``orphan``, the first by
# insertion order). No index on parent_id (every commit would pay for it):
# the orphan check scans the session's rows.
_TOMBSTONE = """
WITH targets AS MATERIALIZED (
    SELECT n.node_id FROM lash_nodes AS n
     WHERE n.session_id = %(sid)s AND n.node_id = ANY(%(ids)s::text[]) AND NOT n.tombstoned
       AND EXISTS (SELECT 1 FROM lash_sessions WHERE session_id = %(sid)s)
),
leaf AS MATERIALIZED (
    SELECT s.leaf_id FROM lash_sessions AS s JOIN targets ON targets.node_id = s.leaf_id
     WHERE s.session_id = %(sid)s
),
pin AS MATERIALIZED (
    SELECT n.node_id FROM lash_nodes AS n JOIN targets ON targets.node_id = n.node_id
     WHERE n.session_id = %(sid)s AND n.pinned ORDER BY n.node_id COLLATE "C" LIMIT 1
),
orphan AS MATERIALIZED (
    SELECT c.node_id, c.parent_id FROM lash_nodes AS c
     WHERE c.session_id = %(sid)s AND NOT c.tombstoned
       AND c.parent_id IN (SELECT node_id FROM targets)
       AND c.node_id NOT IN (SELECT node_id FROM targets)
     ORDER BY c.seq LIMIT 1
),
hidden AS (
    UPDATE lash_nodes AS n SET tombstoned = true FROM targets
     WHERE n.session_id = %(sid)s AND n.node_id = targets.node_id
       AND NOT EXISTS (SELECT 1 FROM leaf) AND NOT EXISTS (SELECT 1 FROM orphan)
       AND NOT EXISTS (SELECT 1 FROM pin)
    RETURNING 1
),
counted AS (
    UPDATE lash_sessions SET live_nodes = live_nodes - (SELECT count(*) FROM hidden),
                             generation = generation + 1
     WHERE session_id = %(sid)s AND EXISTS (SELECT 1 FROM hidden)
)
SELECT (SELECT leaf_id FROM leaf), (SELECT node_id FROM orphan), (SELECT parent_id FROM orphan),
       (SELECT count(*) FROM hidden), (SELECT node_id FROM pin)
"""

# Vacuum locks the session rows of every session it cleans (in id order, so
# two vacuums never deadlock), then deletes their tombstoned rows, except
# one a live node still names as its parent (a row tombstoned before the
# subtree rule existed). Its snapshot may predate a lock wait; that only
# leaves rows tombstoned meanwhile for the next vacuum, since no commit
# builds on a tombstoned node.
_VACUUM = """
WITH locked AS MATERIALIZED (
    SELECT s.session_id FROM lash_sessions AS s
     WHERE EXISTS (SELECT 1 FROM lash_nodes AS n WHERE n.session_id = s.session_id AND n.tombstoned)
     ORDER BY s.session_id COLLATE "C" FOR UPDATE
)
DELETE FROM lash_nodes AS n USING locked
 WHERE n.session_id = locked.session_id AND n.tombstoned
   AND NOT EXISTS (
       SELECT 1 FROM lash_nodes AS c
        WHERE c.session_id = n.session_id AND c.parent_id = n.node_id AND NOT c.tombstoned)
"""

# A claim is one upsert. The stored lease is taken over when it was
# released, is the claimant's own, or has expired. The conflict branch runs
# once the stored row is locked, so it reads the clock again: the VALUES
# were computed before any wait, and a claim that waited would otherwise be
# granted already expired. No row back means another owner holds it.
_CLAIM = f"""
INSERT INTO lash_leases AS l (session_id, owner, token, expires_at)
VALUES (%(sid)s, %(owner)s, 1, coalesce(%(now)s::float8, {_CLOCK}) + %(ttl)s::float8)
ON CONFLICT (session_id) DO UPDATE
   SET owner = excluded.owner, token = l.token + 1,
       expires_at = coalesce(%(now)s::float8, {_CLOCK}) + %(ttl)s::float8
 WHERE l.owner IS NULL OR l.owner = excluded.owner
    OR l.expires_at <= coalesce(%(now)s::float8, {_CLOCK})
RETURNING token, expires_at
"""
# The row is locked first (``held``): the new expiry is computed from the
# rows the join returns, after any wait for that lock.
_RENEW = f"""
WITH held AS MATERIALIZED (
    SELECT session_id FROM lash_leases
     WHERE session_id = %(sid)s AND owner = %(owner)s AND token = %(token)s FOR UPDATE
)
UPDATE lash_leases AS l SET expires_at = coalesce(%(now)s::float8, {_CLOCK}) + %(ttl)s::float8
  FROM held WHERE l.session_id = held.session_id
RETURNING l.expires_at
"""
_SELECT_LEASE = "SELECT owner, token, expires_at FROM lash_leases WHERE session_id = %s"

# Keyset pages of idle sessions, oldest first, with their live node counts
# and whether a worker holds their lease (kept, never expired). The locking
# form skips a session a writer holds locked right now: it is not idle.
# ``updated_at >= after_at`` says nothing the next line does not, but it is
# what the idle index's scan starts from: without it every page scans the
# index from its start, past the entries of every session expired before.
_IDLE_PAGE = """
SELECT s.session_id, s.updated_at, s.live_nodes, EXISTS (
    SELECT 1 FROM lash_leases AS l
     WHERE l.session_id = s.session_id AND l.owner IS NOT NULL AND l.expires_at > %(now)s
)
  FROM lash_sessions AS s
 WHERE s.updated_at < %(cutoff)s AND s.updated_at >= %(after_at)s
   AND (s.updated_at > %(after_at)s
        OR (s.updated_at = %(after_at)s AND s.session_id COLLATE "C" > %(after_id)s))
 ORDER BY s.updated_at, s.session_id COLLATE "C"
 LIMIT %(limit)s
"""
_IDLE = _IDLE_PAGE
_IDLE_LOCKED = _IDLE_PAGE.rstrip() + " FOR UPDATE OF s SKIP LOCKED\n"

_FORK_SESSION = """
INSERT INTO lash_sessions (session_id, head_revision, next_seq, live_nodes, leaf_id, policy,
    frames, current_frame_id, tool_snapshot, plugin_snapshot, host_checkpoint, updated_at,
    created_at, created_by, origin_session, origin_node)
SELECT %(new)s, 1, %(count)s, %(count)s, %(leaf)s, policy, frames, current_frame_id,
    tool_snapshot, plugin_snapshot, host_checkpoint, %(now)s, %(now)s, %(made_by)s, %(source)s,
    %(leaf)s
  FROM lash_sessions WHERE session_id = %(source)s
ON CONFLICT (session_id) DO NOTHING
RETURNING 1
"""
_FORK_NODES = """
INSERT INTO lash_nodes (session_id, seq, node_id, parent_id, kind, frame_id, created_at, body)
SELECT %(new)s, r.ord - 1, r.node_id, r.parent_id, r.kind, r.frame_id, r.created_at, r.body
  FROM unnest(%(ids)s::text[], %(parents)s::text[], %(kinds)s::text[], %(frames_of)s::text[],
              %(times)s::float8[], %(bodies)s::text[])
       WITH ORDINALITY AS r(node_id, parent_id, kind, frame_id, created_at, body, ord)
"""


def _deletes(params: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The statements that delete the sessions ``params["ids"]`` (whose rows
    the caller has locked) and mark their ids deleted at ``params["now"]``;
    the last one answers how many sessions there were."""
    return [
        ("DELETE FROM lash_nodes WHERE session_id = ANY(%(ids)s::text[])", params),
        ("DELETE FROM lash_attachment_intents WHERE session_id = ANY(%(ids)s::text[])", params),
        (
            "WITH gone AS (DELETE FROM lash_sessions WHERE session_id = ANY(%(ids)s::text[])"
            " RETURNING session_id), marked AS (INSERT INTO lash_deleted (session_id, deleted_at)"
            " SELECT session_id, %(now)s FROM gone ON CONFLICT (session_id) DO NOTHING)"
            " SELECT count(*) FROM gone",
            params,
        ),
    ]


_OPEN_TRANSACTION = (TransactionStatus.INTRANS, TransactionStatus.INERROR)

_SELECT_HEAD_GENERATION = (
    "SELECT head_revision, generation FROM lash_sessions WHERE session_id = %(sid)s"
)


def _in_one_snapshot(
    conn: psycopg.Connection[Any], *statements: tuple[str, Any]
) -> list[psycopg.Cursor[Any]]:
    """Run read-only ``statements`` in one REPEATABLE READ transaction, in
    one round trip, and return their cursors. BEGIN and COMMIT are plain
    pipelined statements: conn.transaction() would add a sync of its own."""
    try:
        with conn.pipeline():
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursors = [conn.execute(query, params) for query, params in statements]
            conn.execute("COMMIT")
    finally:
        # A failed statement left the transaction open (a broken
        # connection reports UNKNOWN and is dropped by the pool).
        if conn.info.transaction_status in _OPEN_TRANSACTION:
            conn.execute("ROLLBACK")
    return cursors


def _probe(dsn: str, timeout: float) -> None:
    """Connect once before the pool does, so that a malformed DSN, a refused
    password or an unreachable server fails now with libpq's reason (the
    pool would only log it and time out), with the password scrubbed. The
    original exception is not chained: its text may quote the DSN."""
    failure = ""
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        failure = f"malformed PostgreSQL DSN {redact(dsn)!r}: {scrub(str(exc), dsn)}"
    else:
        probe = dsn
        if "connect_timeout" not in params:
            # libpq would wait forever for an unreachable host.
            probe = psycopg.conninfo.make_conninfo(dsn, connect_timeout=max(1, math.ceil(timeout)))
        try:
            psycopg.connect(probe).close()
        except psycopg.Error as exc:
            reason = scrub(str(exc).strip(), dsn) or type(exc).__name__
            failure = f"cannot connect to PostgreSQL at {redact(dsn)}: {reason}"
    if failure:
        raise StoreError(failure)


def _configure(conn: psycopg.Connection[Any]) -> None:
    """Set up a new pooled connection: generic plans for prepared statements.

    psycopg prepares a statement once a connection has run it a few times.
    Left to choose, the server replans the commit statement on every call
    (its generic estimate, made for arrays of unknown length, looks worse
    than a plan for the values at hand), and planning it costs more than
    running it. Every statement here is shaped by keys, not by the values
    bound to them (primary-key probes; see the path query's note), so a
    generic plan is as good as a custom one: plan once per connection."""
    conn.execute("SET plan_cache_mode = force_generic_plan")


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
    seconds for one. Safe to share between threads; open one store per
    process (a pool's connections do not survive a fork). ``migrate``:
    upgrade a database of an older schema version in place (one
    transaction under the schema lock; see
    :mod:`lash_machine.stores.migrations`); without it such a database is
    refused with :class:`SchemaVersionMismatch`.
    """

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        timeout: float = 30.0,
        migrate: bool = False,
    ) -> None:
        #: The DSN with its password hidden: safe to log.
        self.dsn = redact(dsn)
        self._max_size = max_size
        self._migrate = migrate
        _probe(dsn, timeout)
        # autocommit: no implicit BEGIN round trip. A commit is one
        # statement (its own transaction); a read pipelines BEGIN and COMMIT.
        self._pool = ConnectionPool(
            dsn,
            min_size=min_size,
            max_size=max_size,
            timeout=timeout,
            kwargs={"autocommit": True},
            configure=_configure,
            open=False,
            name="lash-machine",
        )
        try:
            self._pool.open(wait=True, timeout=timeout)
            self._open_schema()
        except PoolTimeout as exc:
            self._pool.close()
            raise StoreError(f"cannot connect to PostgreSQL at {self.dsn}: {exc}") from None
        except BaseException:
            self._pool.close()
            raise

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A pooled connection; database errors come out as :class:`StoreError`
        (a deadlock or serialization failure the server broke as
        :class:`TransientStoreError`)."""
        if self._pool.closed:
            raise StoreError("the store is closed")
        try:
            conn = self._checked_out()
            try:
                with conn:
                    yield conn
            finally:
                self._pool.putconn(conn)
        except PoolTimeout as exc:
            raise StoreError(f"no PostgreSQL connection available: {exc}") from exc
        except (pg_errors.DeadlockDetected, pg_errors.SerializationFailure) as exc:
            raise TransientStoreError(
                f"PostgreSQL aborted the transaction ({exc.diag.message_primary});"
                " nothing was applied: retry"
            ) from exc
        except psycopg.Error as exc:
            raise StoreError(f"PostgreSQL: {exc}") from exc
        except UnicodeEncodeError as exc:
            # A lone surrogate in an id cannot be sent as UTF-8 text.
            raise StoreError(f"PostgreSQL: text the database cannot hold: {exc}") from exc

    def _checked_out(self) -> psycopg.Connection[Any]:
        """A connection from the pool that the server has not hung up.

        After a server restart (or ``pg_terminate_backend``) every idle
        connection is dead, and the pool only learns so when a call fails
        on one. The server says goodbye before it closes a connection, so
        an idle connection with something to read is one it ended: each is
        closed and handed back (the pool opens a replacement) before anyone
        uses it. The test is a poll of the socket, not a round trip."""
        for _ in range(self._max_size):
            conn = self._pool.getconn()
            if not _hung_up(conn):
                return conn
            conn.close()
            self._pool.putconn(conn)
        return self._pool.getconn()

    def _locked(
        self,
        conn: psycopg.Connection[Any],
        lock: str,
        lock_params: Sequence[object],
        statements: Sequence[tuple[str, dict[str, Any]]],
    ) -> list[psycopg.Cursor[Any]]:
        """Run ``statements`` in one transaction after the locking query
        ``lock``, in one round trip (pipelined). Each statement reads what
        was committed before the lock was granted: in READ COMMITTED every
        statement takes its snapshot when it starts. Returns the cursors of
        ``statements``."""
        try:
            with conn.pipeline():
                conn.execute("BEGIN")
                conn.execute(lock, lock_params)
                cursors = [conn.execute(query, params) for query, params in statements]
                conn.execute("COMMIT")
        finally:
            # A failed statement left the transaction open (a broken
            # connection reports UNKNOWN and is dropped by the pool).
            if conn.info.transaction_status in _OPEN_TRANSACTION:
                conn.execute("ROLLBACK")
        return cursors

    def _open_schema(self) -> None:
        with self._connection() as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            found = conn.execute(
                "SELECT to_regclass('lash_schema') IS NOT NULL,"
                " to_regclass('lash_sessions') IS NOT NULL"
                " OR to_regclass('lash_nodes') IS NOT NULL"
                " OR to_regclass('lash_attachment_intents') IS NOT NULL"
                " OR to_regclass('lash_leases') IS NOT NULL"
            ).fetchone()
            assert found is not None
            has_version, has_tables = found
            if has_version:
                versions = [r[0] for r in conn.execute("SELECT version FROM lash_schema")]
                if versions == [SCHEMA_VERSION]:
                    return
                found = versions[0] if len(versions) == 1 else 0
                if not (self._migrate and found in migrations.POSTGRES):
                    raise SchemaVersionMismatch("PostgreSQL lash_schema", found, SCHEMA_VERSION)
                for statement in migrations.postgres_plan(found):
                    conn.execute(statement)
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
        elif isinstance(scope, ActivePath) and scope.leaf_id is None:
            # The stored leaf's path: its hinted ranges alone, the usual
            # read (a session without a hint is walked below).
            nodes_query = _SELECT_HINTED
        elif isinstance(scope, ActivePath):
            nodes_query = _SELECT_PATH
            params["leaf"] = scope.leaf_id
        else:
            raise StoreError(f"unknown read scope {scope!r}")
        if _has_nul(*params.values()):
            return None
        whole = False  # True: the nodes query reads the whole path in its snapshot
        while True:
            row, rows, pins, marker = self._read(session_id, nodes_query, params)
            if row is None:
                if marker is not None:
                    raise SessionDeleted(session_id, marker[0])
                return None
            if isinstance(scope, ActivePath):
                leaf = scope.leaf_id if scope.leaf_id is not None else row[1]
                if leaf is None:
                    rows = []
                elif whole:  # the walk's rows, as a set: put them in order
                    rows = path_root_first({r[0]: r for r in rows}.get, lambda r: r[1], leaf)
                elif not (rows and rows[-1][0] == leaf and chained(rows)):
                    # Not the whole chain in order already (an intact hint's
                    # ranges come back so): walk what was read, then the rest.
                    by_id = {r[0]: r for r in rows}
                    start = first_missing(by_id, leaf)
                    if start is not None:
                        stamp, rest = self._walk_rest(session_id, start)
                        if stamp != (row[0], row[8]):
                            # The session changed between the two reads:
                            # read it again by the walk alone, in one snapshot.
                            nodes_query, whole = _SELECT_WALK, True
                            params = {"sid": session_id, "leaf": scope.leaf_id}
                            continue
                        by_id.update((r[0], r) for r in rest)
                    rows = path_root_first(by_id.get, lambda r: r[1], leaf)
            nodes = decode_nodes(session_id, rows)
            return decode_session(
                session_id,
                row[0],
                row[1:8],
                nodes,
                pinned=[node.node_id for node in nodes if node.node_id in pins] if pins else (),
                generation=row[8],
                created_at=row[9],
                created_by=row[10],
                origin=(row[11], row[12]),
            )

    def _read(
        self, session_id: str, nodes_query: str, params: Mapping[str, object]
    ) -> tuple[Any, list[Any], set[str], Any]:
        """The session row, the rows of ``nodes_query``, the pinned ids and
        the deletion marker, from one snapshot."""
        with self._connection() as conn:
            session, nodes, pins, deleted = _in_one_snapshot(
                conn,
                (_SELECT_SESSION, (session_id,)),
                (nodes_query, params),
                (_SELECT_PINNED, (session_id,)),
                (_SELECT_DELETED, (session_id,)),
            )
            return (
                session.fetchone(),
                nodes.fetchall(),
                {r[0] for r in pins.fetchall()},
                deleted.fetchone(),
            )

    def _walk_rest(self, session_id: str, start: object) -> tuple[tuple[Any, Any], list[Any]]:
        """The stored path from ``start`` on, with the session's head and
        generation read in the same snapshot. The first read's snapshot is
        gone by now (keeping it open would cost every read a round trip):
        a caller whose stamp differs read two states and must read again."""
        with self._connection() as conn:
            stamp_cur, rest_cur = _in_one_snapshot(
                conn,
                (_SELECT_HEAD_GENERATION, {"sid": session_id}),
                (_SELECT_WALK, {"sid": session_id, "leaf": start}),
            )
            stamp = stamp_cur.fetchone()
            return (None, None) if stamp is None else (stamp[0], stamp[1]), rest_cur.fetchall()

    def session_stamp(self, session_id: str) -> SessionStamp | None:
        """The session's head revision, generation and creation time: one
        small row, one round trip (a deleted session raises
        :class:`SessionDeleted`)."""
        if _has_nul(session_id):
            return None
        with self._connection() as conn:
            found = conn.execute(_SELECT_STAMP, {"sid": session_id}).fetchone()
        assert found is not None, "the stamp query always answers one row"
        head, generation, created_by, deleted_at = found
        if head is None:
            if deleted_at is not None:
                raise SessionDeleted(session_id, deleted_at)
            return None
        return SessionStamp(int(head), int(generation), created_by)

    def load_node(self, session_id: str, node_id: str) -> SessionNode | None:
        """One live node of the session, or ``None``."""
        if _has_nul(session_id, node_id):
            return None
        with self._connection() as conn:
            row = conn.execute(_SELECT_NODE, (session_id, node_id)).fetchone()
        return None if row is None else decode_node(session_id, row)

    # -- the commit -----------------------------------------------------

    def commit(self, commit: SessionCommit) -> int:
        """Apply ``commit`` when the stored head equals its expected head
        and it builds only on live nodes, in one statement."""
        sid = commit.session_id
        session = encode_session(commit)
        # Reparents of nodes this commit appends are folded into their rows
        # (the UPDATE cannot see rows the same statement inserts).
        rows, repairs = fold_repairs(
            [encode_node(sid, n) for n in commit.delta.appended], commit.delta
        )
        chain, above = appended_chain(rows, commit.delta.leaf_id, 0)
        pins = {node_id: False for node_id in commit.delta.unpinned}
        pins.update((node_id, True) for node_id in commit.delta.pinned)
        _refuse_nul(
            f"session {sid!r}",
            sid,
            session.leaf_id,
            session.current_frame_id,
            *(value for row in rows for value in row[:4]),
            *(value for r in commit.delta.reparented for value in (r.node_id, r.parent_id)),
            *commit.adopt_attachments,
            *pins,
            commit.commit_id,
        )
        params = {
            "sid": sid,
            "expected": commit.expected_head,
            "count": len(rows),
            "leaf": session.leaf_id,
            "policy": session.policy,
            "frames": session.frames,
            "frame": session.current_frame_id,
            "tools": session.tool_snapshot,
            "plugins": session.plugin_snapshot,
            "checkpoint": session.host_checkpoint,
            "now": time.time(),
            "ids": _array(row[0] for row in rows),
            "parents": _array(row[1] for row in rows),
            "kinds": _array(row[2] for row in rows),
            "frames_of": _array(row[3] for row in rows),
            "times": _array(row[4] for row in rows),
            "bodies": _array(row[5] for row in rows),
            "moved": _array(repairs),
            "new_parents": _array(repairs.values()),
            "adopt": _array(commit.adopt_attachments),
            "token": commit.fencing_token,
            "refs": _array(built_on(rows, repairs, commit.delta.leaf_id, commit.delta.pinned)),
            "commit_id": commit.commit_id,
            "hint_ok": not repairs,
            "above": above,
            "chain": dump_hint(ranges_of(sorted(chain))),
            # Pins of nodes this commit appends go into their rows (the
            # UPDATE cannot see them); the last word on a node wins.
            "pinned_of": _array(pins.pop(row[0], False) for row in rows),
            "moved_pins": _array(pins.pop(node_id, None) for node_id in repairs),
            "pin_ids": _array(pins),
            "pin_flags": _array(pins.values()),
        }
        edits = bool(pins or repairs or commit.adopt_attachments)
        query = _NATIVE_COMMITS[commit.expected_head is None, edits]
        token = commit.fencing_token
        if token is not None and (isinstance(token, bool) or not isinstance(token, int)):
            raise StoreError(f"session {sid!r}: fencing token must be an integer")
        with self._connection() as conn:
            try:
                won = query.run(conn, params)
            except pg_errors.UniqueViolation as exc:
                raise _duplicate_node(conn, sid, [row[0] for row in rows], exc) from exc
            assert won is not None, "the commit statement always answers one row"
            first_seq, fenced_ok, owner, held_token, expires_at, dead = won
            if first_seq is not None:
                return (commit.expected_head or 0) + 1
            found = conn.execute(_SELECT_HEAD, {"sid": sid}).fetchone()
        assert found is not None, "the head query always answers one row"
        actual, last_commit_id, deleted_at = found
        made = (commit.expected_head or 0) + 1
        if commit.commit_id is not None and last_commit_id == commit.commit_id and actual == made:
            return made  # a retry of the commit that made this head: nothing applied twice
        if actual is None and deleted_at is not None:
            raise SessionDeleted(sid, deleted_at)
        if not fenced_ok:
            # Raises: the lease refused the commit, nothing was written.
            # The clock only matters for an unfenced commit, whose statement
            # already saw a live lease; judge it live.
            check_fence(sid, token, (owner, held_token, expires_at), float("-inf"))
            raise StoreError(f"session {sid!r}: the lease refused the commit")
        if dead is not None and actual == commit.expected_head:
            raise ParentTombstoned(sid, dead)
        raise HeadRevisionConflict(sid, commit.expected_head, actual)

    # -- maintenance ----------------------------------------------------

    def tombstone_nodes(self, session_id: str, node_ids: Sequence[str]) -> int:
        """Hide live nodes of the session; return how many were hidden.
        Refused when one is the stored leaf or the parent of a live node
        not hidden with it. The session row is locked first, so a commit
        and a tombstone of one session never interleave."""
        ids = [i for i in dict.fromkeys(node_ids) if not _has_nul(i)]
        if not ids or _has_nul(session_id):
            return 0
        with self._connection() as conn:
            (cursor,) = self._locked(
                conn, _LOCK_SESSION, (session_id,), [(_TOMBSTONE, {"sid": session_id, "ids": ids})]
            )
            row = cursor.fetchone()
        assert row is not None, "the tombstone statement always answers one row"
        leaf_id, orphan_id, parent_id, hidden, pinned = row
        if leaf_id is not None:
            raise TombstoneRefused(session_id, leaf_id, LEAF_REASON)
        if pinned is not None:
            raise TombstoneRefused(session_id, pinned, PIN_REASON)
        if orphan_id is not None:
            raise TombstoneRefused(session_id, parent_id, orphan_reason(orphan_id))
        return int(hidden)

    def vacuum(self) -> VacuumReport:
        """Delete tombstoned nodes for good, except one a live node still
        names as its parent (:meth:`forget` already deletes intents, so
        none are left to remove)."""
        with self._connection() as conn:
            removed = conn.execute(_VACUUM).rowcount
        return VacuumReport(nodes_removed=removed)

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, ordered by id, with its live node count."""
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT session_id, head_revision, live_nodes, updated_at"
                ' FROM lash_sessions ORDER BY session_id COLLATE "C"'
            ).fetchall()
        return [SessionInfo(r[0], r[1], r[2], r[3]) for r in rows]

    def delete_session(self, session_id: str, now: float | None = None) -> bool:
        """Remove the session, its nodes and its intents, keeping a marker
        of its id. The session row is locked first, so the node delete sees
        every commit that went before it: a racing commit lands before the
        delete (and is deleted with the rest) or finds the session deleted."""
        if _has_nul(session_id):
            return False
        params = {"ids": [session_id], "now": time.time() if now is None else now}
        with self._connection() as conn:
            *_, cursor = self._locked(conn, _LOCK_SESSION, (session_id,), _deletes(params))
            gone = cursor.fetchone()
        return bool(gone and gone[0])

    def purge_deleted(self, older_than: float) -> int:
        """Forget the markers of sessions deleted before ``older_than``."""
        with self._connection() as conn:
            purged = conn.execute("DELETE FROM lash_deleted WHERE deleted_at < %s", (older_than,))
            return int(purged.rowcount)

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
        ``idle_for`` seconds, except those whose lease is held, in
        transactions of at most ``batch_size`` sessions. A session a writer
        holds locked right now is skipped (it is not idle)."""
        check_expiry(idle_for, batch_size)
        at = time.time() if now is None else now
        expired: list[str] = []
        nodes = kept = 0
        longest = 0.0
        after: tuple[float, str] = (float("-inf"), "")
        while True:
            params = {
                "cutoff": at - idle_for,
                "after_at": after[0],
                "after_id": after[1],
                "limit": batch_size,
                "now": at,
            }
            with self._connection() as conn:
                # Timed from BEGIN: waiting for a pooled connection holds no lock.
                started = time.perf_counter()
                with conn.transaction():
                    rows = conn.execute(_IDLE if dry_run else _IDLE_LOCKED, params).fetchall()
                    batch = []
                    for session_id, updated_at, live, leased in rows:
                        after = (updated_at, session_id)
                        if leased:
                            kept += 1
                            continue
                        batch.append(session_id)
                        nodes += live
                    if batch and not dry_run:
                        for query, query_params in _deletes({"ids": batch, "now": at}):
                            conn.execute(query, query_params)
                if not dry_run:
                    longest = max(longest, time.perf_counter() - started)
            expired.extend(batch)
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
        _refuse_nul(f"session {new_session_id!r}", new_session_id, session_id, node_id)
        with self._connection() as conn, conn.transaction():
            source = conn.execute(
                "SELECT leaf_id FROM lash_sessions WHERE session_id = %s FOR SHARE", (session_id,)
            ).fetchone()
            if source is None:
                marker = conn.execute(_SELECT_DELETED, (session_id,)).fetchone()
                if marker is not None:
                    raise SessionDeleted(session_id, marker[0])
                raise SessionNotFound(session_id)
            at = node_id if node_id is not None else source[0]
            rows: list[Any] = []
            if at is not None:
                found = conn.execute(_SELECT_PATH, {"sid": session_id, "leaf": at}).fetchall()
                by_id = {r[0]: r for r in found}
                start = first_missing(by_id, at)
                if start is not None:
                    # The hinted ranges fell short (a hint cut at a branch
                    # point misses a summary a compaction put above older
                    # rows): walk the rest, or the copy loses its root.
                    rest = conn.execute(_SELECT_WALK, {"sid": session_id, "leaf": start})
                    by_id.update((r[0], r) for r in rest.fetchall())
                rows = path_root_first(by_id.get, lambda r: r[1], at)
                if not rows or rows[-1][0] != at:
                    raise ParentTombstoned(session_id, at)
            marker = conn.execute(_SELECT_DELETED, (new_session_id,)).fetchone()
            if marker is not None:
                raise SessionDeleted(new_session_id, marker[0])
            stamp = time.time() if now is None else now
            made = conn.execute(
                _FORK_SESSION,
                {
                    "new": new_session_id,
                    "source": session_id,
                    "count": len(rows),
                    "leaf": at,
                    "now": stamp,
                    "made_by": uuid.uuid4().hex,
                },
            ).fetchone()
            if made is None:
                taken = conn.execute(_SELECT_HEAD, {"sid": new_session_id}).fetchone()
                raise HeadRevisionConflict(
                    new_session_id, None, None if taken is None else taken[0]
                )
            conn.execute(
                _FORK_NODES,
                {
                    "new": new_session_id,
                    "ids": [r[0] for r in rows],
                    "parents": [r[1] for r in rows],
                    "kinds": [r[2] for r in rows],
                    "frames_of": [r[3] for r in rows],
                    "times": [r[4] for r in rows],
                    "bodies": [r[5] for r in rows],
                },
            )
        return 1

    # -- attachment manifest ----------------------------------------------

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Record (or replace) the intent of one attachment; an intent a
        commit adopted stays committed."""
        row = encode_intent(intent)
        _refuse_nul(f"attachment {intent.attachment_id!r}", *row[:3])
        with self._connection() as conn:
            # Replacing never un-commits: a commit may have adopted the id
            # (a retried record, or a content-addressed id).
            conn.execute(
                "INSERT INTO lash_attachment_intents AS i"
                " (session_id, attachment_id, uri, created_at, committed)"
                " VALUES (%s, %s, %s, %s, %s)"
                " ON CONFLICT (session_id, attachment_id) DO UPDATE SET uri = excluded.uri,"
                " created_at = excluded.created_at,"
                " committed = i.committed OR excluded.committed",
                (*row, bool(intent.committed)),
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
        """Delete one uncommitted intent; ``False`` (and nothing deleted)
        when there is none or a commit adopted it."""
        if _has_nul(session_id, attachment_id):
            return False
        with self._connection() as conn:
            deleted = conn.execute(
                "DELETE FROM lash_attachment_intents"
                " WHERE session_id = %s AND attachment_id = %s AND NOT committed",
                (session_id, attachment_id),
            ).rowcount
        return deleted > 0

    # -- execution leases ---------------------------------------------------

    def claim_lease(
        self, session_id: str, owner: str, ttl: float, now: float | None = None
    ) -> Lease:
        """Claim the session for ``owner`` (see
        :class:`~lash_machine.stores.leases.LeaseStore`); expiry follows the
        server's clock unless ``now`` is given."""
        check_claim(owner, ttl)
        check_session_id(session_id)
        _refuse_nul(f"session {session_id!r}", session_id)
        params = {"sid": session_id, "owner": owner, "ttl": float(ttl), "now": now}
        with self._connection() as conn:
            # A lease released between the refused upsert and the read of
            # its holder is free again: try once more before reporting.
            for _ in range(3):
                claimed = conn.execute(_CLAIM, params).fetchone()
                if claimed is not None:
                    return Lease(session_id, owner, int(claimed[0]), float(claimed[1]))
                held = conn.execute(_SELECT_LEASE, (session_id,)).fetchone()
                if held is not None and held[0] is not None:
                    raise LeaseHeld(session_id, held[0], float(held[2]))
        raise StoreError(f"session {session_id!r}: the lease changed hands during the claim")

    def renew_lease(self, lease: Lease, ttl: float, now: float | None = None) -> Lease:
        """Extend a current lease; :class:`LeaseLost` when it is not."""
        check_claim(lease.owner, ttl)
        _refuse_nul(f"session {lease.session_id!r}", lease.session_id)
        params = {
            "sid": lease.session_id,
            "owner": lease.owner,
            "token": lease.token,
            "ttl": float(ttl),
            "now": now,
        }
        with self._connection() as conn:
            renewed = conn.execute(_RENEW, params).fetchone()
            if renewed is None:
                held = conn.execute(_SELECT_LEASE, (lease.session_id,)).fetchone()
                raise LeaseLost(lease.session_id, lease.token, None if held is None else held[1])
        return attrs.evolve(lease, expires_at=float(renewed[0]))

    def release_lease(self, lease: Lease) -> bool:
        """Give the session up; ``False`` when the lease was not current."""
        if _has_nul(lease.session_id, lease.owner):
            return False
        with self._connection() as conn:
            released = conn.execute(
                "UPDATE lash_leases SET owner = NULL"
                " WHERE session_id = %s AND owner = %s AND token = %s",
                (lease.session_id, lease.owner, lease.token),
            ).rowcount
        return released > 0

    def current_lease(self, session_id: str, now: float | None = None) -> Lease | None:
        """The live lease of the session, if any (by the server's clock
        unless ``now`` is given)."""
        if _has_nul(session_id):
            return None
        with self._connection() as conn:
            held = conn.execute(
                "SELECT owner, token, expires_at FROM lash_leases"
                " WHERE session_id = %s AND owner IS NOT NULL"
                f" AND expires_at > coalesce(%s::float8, {_CLOCK})",
                (session_id, now),
            ).fetchone()
        return None if held is None else Lease(session_id, held[0], int(held[1]), float(held[2]))

    def close(self) -> None:
        """Close the pool; later calls raise :class:`StoreError`."""
        self._pool.close()


def _hung_up(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server ended this idle connection (see
    :meth:`PostgresStore._checked_out`): it is closed, or its socket has
    something to read although no query is running."""
    if conn.closed:
        return True
    try:
        fd = conn.fileno()
    except psycopg.Error:
        return True
    if hasattr(select, "poll"):
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(0))
    readable, _, _ = select.select([fd], [], [], 0)  # Windows has no poll
    return bool(readable)


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
