"""Build a small lash-machine database of schema version 2, the layout of
every release before the first migration, to test upgrades from.

    python scripts/make_v2_fixture.py                  # tests/fixtures/schema-v2.sqlite3
    python scripts/make_v2_fixture.py --sqlite PATH    # another SQLite file
    python scripts/make_v2_fixture.py --dsn URL        # the same schema and rows in PostgreSQL

The version-2 tables are written out here, as they stood when version 2
was current, so the fixture can be rebuilt after the stores have moved on.
The committed SQLite file was made by this script while version 2 was
still the stores' own schema, and that store read every row of it back
(see tests/test_migrations.py for what is checked after an upgrade).

The rows cover what an upgrade must carry over: a linear session, a
branching one with orphans, a tombstoned node, a parent repair already
written (a root in the middle), snapshots, a host checkpoint, a sub-agent
frame, committed and uncommitted attachment intents, a held lease, and the
lease row of a session deleted earlier (lease rows outlive deletes).
"""

from __future__ import annotations

import argparse
import json
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT = ROOT / "tests" / "fixtures" / "schema-v2.sqlite3"

SQLITE_V2 = (
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
    """CREATE TABLE lash_leases (
        session_id TEXT NOT NULL PRIMARY KEY,
        owner TEXT,
        token INTEGER NOT NULL,
        expires_at REAL NOT NULL
    ) WITHOUT ROWID""",
)

POSTGRES_V2 = (
    "CREATE TABLE lash_schema (version integer NOT NULL)",
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
    """CREATE TABLE lash_leases (
        session_id text PRIMARY KEY,
        owner text,
        token bigint NOT NULL,
        expires_at double precision NOT NULL
    )""",
    "INSERT INTO lash_schema (version) VALUES (2)",
)


def _policy(model: str) -> dict[str, Any]:
    return {
        "model": {"id": model, "context_window": 128000},
        "provider_id": "openai",
        "max_turns": None,
    }


def _frame(frame_id: str, parent: str | None, reason: str, model: str, at: float) -> dict[str, Any]:
    return {
        "frame_id": frame_id,
        "parent_frame_id": parent,
        "reason": reason,
        "policy": _policy(model),
        "created_at": at,
    }


def _text(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


# (session_id, head_revision, leaf_id, policy, frames, current frame, tool
# snapshot, plugin snapshot, host checkpoint, updated_at, nodes). Each node:
# (node_id, parent_id, kind, frame_id, created_at, body, tombstoned).
Node = tuple[str, str | None, str, str | None, float, Any, bool]
SESSIONS: list[tuple[Any, ...]] = [
    (
        "linear",
        1,
        "l3",
        _policy("gpt-4o"),
        [_frame("linear:frame:initial", None, "initial", "gpt-4o", 1000.0)],
        "linear:frame:initial",
        None,
        None,
        None,
        1003.0,
        [
            (
                "l1",
                None,
                "message",
                "linear:frame:initial",
                1001.0,
                {"role": "user", "content": "Plan a weekend in Lisbon."},
                False,
            ),
            (
                "l2",
                "l1",
                "message",
                "linear:frame:initial",
                1002.0,
                {"role": "assistant", "content": "Day 1: Alfama. Day 2: Belem."},
                False,
            ),
            (
                "l3",
                "l2",
                "event",
                "linear:frame:initial",
                1003.0,
                {"type": "turn_end", "tokens": 41},
                False,
            ),
        ],
    ),
    (
        "branchy",
        4,
        "b6",
        _policy("gpt-4o"),
        [
            _frame("branchy:frame:initial", None, "initial", "gpt-4o", 2000.0),
            _frame(
                "branchy:frame:tools", "branchy:frame:initial", "sub-agent", "gpt-4o-mini", 2004.0
            ),
        ],
        "branchy:frame:initial",
        {"generation": 3, "data": {"tools": ["search", "calc"]}},
        {"revision": 2, "data": {"memory": {"city": "Lisbon"}}},
        {"step": 7, "cursor": "b6"},
        2010.0,
        [
            (
                "b1",
                None,
                "message",
                "branchy:frame:initial",
                2001.0,
                {"role": "user", "content": "Find me a hotel."},
                False,
            ),
            (
                "b2",
                "b1",
                "message",
                "branchy:frame:initial",
                2002.0,
                {"role": "assistant", "content": "Which part of town?"},
                False,
            ),
            # An orphan branch, and a tombstoned orphan under it.
            (
                "b3",
                "b2",
                "message",
                "branchy:frame:initial",
                2003.0,
                {"role": "user", "content": "Near the river."},
                False,
            ),
            (
                "b3x",
                "b3",
                "message",
                "branchy:frame:initial",
                2003.5,
                {"role": "assistant", "content": "A hidden answer."},
                True,
            ),
            (
                "b4",
                "b2",
                "message",
                "branchy:frame:initial",
                2004.0,
                {"role": "user", "content": "Near the castle, under 150 euros."},
                False,
            ),
            (
                "b5",
                "b4",
                "plugin",
                "branchy:frame:tools",
                2005.0,
                {"plugin": "search", "query": "hotel castle lisbon", "hits": [1, 2.5, None, True]},
                False,
            ),
            (
                "b6",
                "b5",
                "message",
                "branchy:frame:initial",
                2006.0,
                {
                    "role": "assistant",
                    "content": "Casa do Castelo, 120 euros a night.",
                    "unicode": "caf\u00e9 \u2603 \U0001f600",
                },
                False,
            ),
            # A root in the middle: its parent pointer was cut by a repair.
            (
                "b7",
                None,
                "message",
                "branchy:frame:initial",
                2007.0,
                {"role": "user", "content": "(repaired: its parent was lost)"},
                False,
            ),
        ],
    ),
    (
        "empty",
        1,
        None,
        _policy("o3"),
        [_frame("empty:frame:initial", None, "initial", "o3", 3000.0)],
        "empty:frame:initial",
        None,
        None,
        [1, "two", {"three": 3}],
        3000.0,
        [],
    ),
]

#: (session_id, attachment_id, uri, created_at, committed)
INTENTS = [
    ("branchy", "att-committed", "s3://bucket/hotel.pdf", 2005.5, True),
    ("branchy", "att-pending", "s3://bucket/draft.png", 2009.0, False),
]

#: (session_id, owner, token, expires_at): one held far into the future, one
#: released, one left by a session deleted since.
LEASES = [
    ("linear", "worker-1", 3, 4102444800.0),
    ("branchy", None, 5, 2011.0),
    ("deleted-long-ago", None, 2, 1500.0),
]


def rows() -> Iterable[tuple[str, Sequence[Any]]]:
    """(table, row) for every row of the fixture, in insertion order."""
    for sid, head, leaf, policy, frames, frame, tools, plugins, checkpoint, at, nodes in SESSIONS:
        live = sum(1 for node in nodes if not node[6])
        yield (
            "lash_sessions",
            (
                sid,
                head,
                len(nodes),
                live,
                leaf,
                _text(policy),
                _text(frames),
                frame,
                None if tools is None else _text(tools),
                None if plugins is None else _text(plugins),
                _text(checkpoint),
                at,
            ),
        )
        for seq, (nid, parent, kind, frame_id, created, body, hidden) in enumerate(nodes):
            yield (
                "lash_nodes",
                (sid, nid, seq, parent, kind, frame_id, created, _text(body), hidden),
            )
    for intent in INTENTS:
        yield "lash_attachment_intents", intent
    for lease in LEASES:
        yield "lash_leases", lease


_COLUMNS = {
    "lash_sessions": "session_id, head_revision, next_seq, live_nodes, leaf_id, policy, frames,"
    " current_frame_id, tool_snapshot, plugin_snapshot, host_checkpoint, updated_at",
    "lash_nodes": "session_id, node_id, seq, parent_id, kind, frame_id, created_at, body,"
    " tombstoned",
    "lash_attachment_intents": "session_id, attachment_id, uri, created_at, committed",
    "lash_leases": "session_id, owner, token, expires_at",
}


def _fill(execute: Callable[[str, Sequence[Any]], object], placeholder: str) -> None:
    for table, row in rows():
        marks = ", ".join([placeholder] * len(row))
        execute(f"INSERT INTO {table} ({_COLUMNS[table]}) VALUES ({marks})", row)


def build_sqlite(path: Path) -> None:
    """Write the fixture into a new SQLite file at ``path``."""
    if path.exists():
        path.unlink()
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("BEGIN IMMEDIATE")
        for statement in SQLITE_V2:
            conn.execute(statement)
        _fill(
            lambda sql, row: conn.execute(sql, [int(v) if isinstance(v, bool) else v for v in row]),
            "?",
        )
        conn.execute("PRAGMA user_version = 2")
        conn.execute("COMMIT")
        # One self-contained file: no -wal or -shm beside it.
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.execute("PRAGMA journal_mode = DELETE")
    finally:
        conn.close()


def build_postgres(dsn: str) -> None:
    """Create the version-2 tables and rows in the (empty) database at ``dsn``."""
    import psycopg

    with psycopg.connect(dsn) as conn, conn.transaction():
        for statement in POSTGRES_V2:
            conn.execute(statement)
        _fill(lambda sql, row: conn.execute(sql, row), "%s")  # type: ignore[arg-type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sqlite", type=Path, default=None, help=f"default: {DEFAULT}")
    parser.add_argument("--dsn", help="build in this PostgreSQL database instead")
    args = parser.parse_args()
    if args.dsn:
        build_postgres(args.dsn)
        print("built the version-2 schema and rows in PostgreSQL")
        return
    path = args.sqlite or DEFAULT
    path.parent.mkdir(parents=True, exist_ok=True)
    build_sqlite(path)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
