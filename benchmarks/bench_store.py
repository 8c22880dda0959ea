"""Store benchmarks: each store operation beside the raw driver doing the
same rows.

* commit: append 10 nodes (one commit) to sessions of 1k and 100k nodes.
  Raw: one transaction with the same compare-and-set ``UPDATE`` of the
  session row and an ``executemany`` of the same node rows.
* active path: load a 100-node path from sessions where 0% and 99% of the
  nodes are off that path. Raw: the session row and one recursive query.

Goals: commit within 1.3x of raw and flat in session size; active-path
load flat in off-path nodes (within 1.5x).

Run::

    python -m benchmarks.bench_store [--repeats 200] [--synchronous FULL]

(``python -m benchmarks`` runs these and every other workload, and writes
``benchmarks/RESULTS.md``.) PostgreSQL runs against
``LASH_MACHINE_BENCH_DSN`` when set, else against a throwaway local server
when the server binaries are installed (``fsync=on`` there: a commit is
durable, as with SQLite's ``synchronous=FULL``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lash_machine.model import NodeKind, SessionNode
from lash_machine.persisted import ActivePath
from lash_machine.stores.base import SessionStore
from lash_machine.stores.sqlite import SQLiteStore
from lash_machine.testing.records import make_commit

try:
    from ._pg import fresh_schema, postgres_dsn
except ImportError:  # run as a script: python benchmarks/bench_store.py
    from _pg import fresh_schema, postgres_dsn  # type: ignore[no-redef]

BODY = {"role": "assistant", "text": "lorem ipsum dolor sit amet " * 8}
PATH_LENGTH = 100
APPEND = 10

Row = dict[str, Any]


def node(node_id: str, parent_id: str | None) -> SessionNode:
    return SessionNode(node_id, parent_id, NodeKind.MESSAGE, BODY, None, 1.0)


def median_us(samples: list[float]) -> float:
    return statistics.median(samples) * 1e6


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def alternate(
    repeat: int, store_call: Callable[[], object], raw_call: Callable[[], object]
) -> tuple[float, float]:
    """Time both calls, taking turns at going first, so neither side always
    pays for (or profits from) what the other left behind: a WAL
    checkpoint, a warm cache."""
    if repeat % 2:
        raw_t = timed(raw_call)
        return timed(store_call), raw_t
    store_t = timed(store_call)
    return store_t, timed(raw_call)


# -- building sessions through the store ---------------------------------------


def build_chain(store: SessionStore, session_id: str, size: int, batch: int = 2000) -> int:
    """A session of ``size`` nodes in one chain; returns its head."""
    head: int | None = None
    parent: str | None = None
    for start in range(0, size, batch):
        nodes = []
        for i in range(start, min(size, start + batch)):
            nodes.append(node(f"n{i}", parent))
            parent = f"n{i}"
        head = store.commit(make_commit(session_id, head, nodes))
    assert head is not None
    return head


def build_path_session(store: SessionStore, session_id: str, off_per_path_node: int) -> None:
    """A 100-node path; after each path node, ``off_per_path_node`` nodes on
    side branches hanging off it (interleaved in insertion order)."""
    head: int | None = None
    nodes: list[SessionNode] = []
    for i in range(PATH_LENGTH):
        nodes.append(node(f"p{i}", f"p{i - 1}" if i else None))
        parent = f"p{i}"
        for j in range(off_per_path_node):
            nodes.append(node(f"o{i}.{j}", parent))
            parent = f"o{i}.{j}"
        if len(nodes) >= 2000 or i == PATH_LENGTH - 1:
            head = store.commit(make_commit(session_id, head, nodes, leaf_id=f"p{i}"))
            nodes = []


# -- the raw side ----------------------------------------------------------------

RAW_ADVANCE_QMARK = """
UPDATE lash_sessions SET head_revision = head_revision + 1, next_seq = next_seq + ?,
    live_nodes = live_nodes + ?, leaf_id = ?, policy = ?, frames = ?, current_frame_id = ?,
    tool_snapshot = ?, plugin_snapshot = ?, host_checkpoint = ?, updated_at = ?
WHERE session_id = ? AND head_revision = ?
RETURNING next_seq - ?
"""
RAW_INSERT_QMARK = """
INSERT INTO lash_nodes (session_id, seq, node_id, parent_id, kind, frame_id, created_at, body)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
"""
RAW_PATH_QMARK = """
WITH RECURSIVE path(node_id, parent_id, kind, frame_id, created_at, body, depth) AS (
    SELECT node_id, parent_id, kind, frame_id, created_at, body, 0 FROM lash_nodes
     WHERE session_id = ?1 AND node_id = ?2 AND NOT tombstoned
    UNION ALL
    SELECT n.node_id, n.parent_id, n.kind, n.frame_id, n.created_at, n.body, path.depth + 1
      FROM path JOIN lash_nodes AS n ON n.session_id = ?1 AND n.node_id = path.parent_id
     WHERE NOT n.tombstoned
)
SELECT node_id, parent_id, kind, frame_id, created_at, body FROM path ORDER BY depth DESC
"""
# PostgreSQL's planner may turn the plain join above into a hash join over
# every node of the session; a LATERAL probe with LIMIT 1 keeps each step of
# the walk one primary-key lookup, as a careful hand-written query would.
RAW_PATH_POSTGRES = """
WITH RECURSIVE path AS (
    SELECT node_id, parent_id, kind, frame_id, created_at, body, 0 AS depth FROM lash_nodes
     WHERE session_id = %(sid)s AND node_id = %(leaf)s AND NOT tombstoned
    UNION ALL
    SELECT parent.*, path.depth + 1 FROM path, LATERAL (
        SELECT node_id, parent_id, kind, frame_id, created_at, body FROM lash_nodes AS n
         WHERE n.session_id = %(sid)s AND n.node_id = path.parent_id AND NOT n.tombstoned
         LIMIT 1
    ) AS parent
)
SELECT node_id, parent_id, kind, frame_id, created_at, body FROM path ORDER BY depth DESC
"""
RAW_ALL_QMARK = """
SELECT node_id, parent_id, kind, frame_id, created_at, body FROM lash_nodes
 WHERE session_id = ? AND NOT tombstoned ORDER BY seq
"""
SESSION_QMARK = (
    "SELECT head_revision, leaf_id, policy, frames, current_frame_id, tool_snapshot,"
    " plugin_snapshot, host_checkpoint FROM lash_sessions WHERE session_id = ?"
)


def to_pyformat(query: str) -> str:
    """The qmark queries above in psycopg's placeholder style."""
    return query.replace("?1", "%(sid)s").replace("?2", "%(leaf)s").replace("?", "%s")


def session_columns(conn: Any, session_id: str, mark: str) -> tuple[Any, ...]:
    """The stored session columns a raw commit rewrites (pre-encoded: a raw
    caller keeps its own representation of policy and frames)."""
    query = (
        "SELECT leaf_id, policy, frames, current_frame_id, tool_snapshot, plugin_snapshot,"
        f" host_checkpoint FROM lash_sessions WHERE session_id = {mark}"
    )
    row = conn.execute(query, (session_id,)).fetchone()
    return tuple(row)


def raw_rows(session_id: str, first_seq: int, nodes: list[SessionNode]) -> list[tuple[Any, ...]]:
    return [
        (
            session_id,
            first_seq + i,
            n.node_id,
            n.parent_id,
            n.kind.value,
            n.frame_id,
            n.created_at,
            json.dumps(n.body, separators=(",", ":")),
        )
        for i, n in enumerate(nodes)
    ]


class RawSQLite:
    """Plain sqlite3 on the store's own file and tables."""

    def __init__(self, path: str, synchronous: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA busy_timeout = 30000")
        self.conn.execute(f"PRAGMA synchronous = {synchronous}")
        self._columns: dict[str, tuple[Any, ...]] = {}

    def commit(self, session_id: str, head: int, nodes: list[SessionNode]) -> int:
        conn = self.conn
        columns = self._columns[session_id]
        conn.execute("BEGIN IMMEDIATE")
        first = conn.execute(
            RAW_ADVANCE_QMARK,
            (
                len(nodes),
                len(nodes),
                nodes[-1].node_id,
                *columns[1:],
                time.time(),
                session_id,
                head,
                len(nodes),
            ),
        ).fetchone()[0]
        conn.executemany(RAW_INSERT_QMARK, raw_rows(session_id, first, nodes))
        conn.execute("COMMIT")
        return head + 1

    def prepare(self, session_id: str) -> None:
        self._columns[session_id] = session_columns(self.conn, session_id, "?")

    def load_path(self, session_id: str, leaf_id: str) -> list[Any]:
        conn = self.conn
        conn.execute("BEGIN")
        conn.execute(SESSION_QMARK, (session_id,)).fetchone()
        rows = conn.execute(RAW_PATH_QMARK, (session_id, leaf_id)).fetchall()
        conn.execute("COMMIT")
        return rows

    def load_all(self, session_id: str) -> list[Any]:
        """The session row and every live node, in insertion order."""
        conn = self.conn
        conn.execute("BEGIN")
        conn.execute(SESSION_QMARK, (session_id,)).fetchone()
        rows = conn.execute(RAW_ALL_QMARK, (session_id,)).fetchall()
        conn.execute("COMMIT")
        return rows

    def close(self) -> None:
        self.conn.close()


class RawPostgres:
    """Plain psycopg (one connection, no pool) on the store's own tables."""

    def __init__(self, dsn: str) -> None:
        import psycopg

        self.conn = psycopg.connect(dsn)
        self._columns: dict[str, tuple[Any, ...]] = {}

    def prepare(self, session_id: str) -> None:
        self._columns[session_id] = session_columns(self.conn, session_id, "%s")
        self.conn.commit()

    def commit(self, session_id: str, head: int, nodes: list[SessionNode]) -> int:
        conn = self.conn
        columns = self._columns[session_id]
        with conn.cursor() as cur:
            cur.execute(
                to_pyformat(RAW_ADVANCE_QMARK),
                (
                    len(nodes),
                    len(nodes),
                    nodes[-1].node_id,
                    *columns[1:],
                    time.time(),
                    session_id,
                    head,
                    len(nodes),
                ),
            )
            row = cur.fetchone()
            assert row is not None
            cur.executemany(to_pyformat(RAW_INSERT_QMARK), raw_rows(session_id, row[0], nodes))
        conn.commit()
        return head + 1

    def load_path(self, session_id: str, leaf_id: str) -> list[Any]:
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute(to_pyformat(SESSION_QMARK), (session_id,))
            cur.fetchone()
            cur.execute(RAW_PATH_POSTGRES, {"sid": session_id, "leaf": leaf_id})
            rows = cur.fetchall()
        conn.commit()
        return rows

    def load_all(self, session_id: str) -> list[Any]:
        """The session row and every live node, in insertion order."""
        conn = self.conn
        with conn.cursor() as cur:
            cur.execute(to_pyformat(SESSION_QMARK), (session_id,))
            cur.fetchone()
            cur.execute(to_pyformat(RAW_ALL_QMARK), (session_id,))
            rows = cur.fetchall()
        conn.commit()
        return rows

    def close(self) -> None:
        self.conn.close()


# -- the measurements ------------------------------------------------------------


def table_columns(conn: Any, mark: str, table: str) -> list[str]:
    """The table's column names, in order (SQLite with ``?``, else PostgreSQL)."""
    if mark == "?":
        return [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    return [row[0] for row in rows]


def clone_session(raw: Any, source: str, target: str, mark: str) -> None:
    """Copy a built session (row and nodes) under another id, so the raw
    side runs on an identical session without a second slow build."""
    for table in ("lash_sessions", "lash_nodes"):
        names = table_columns(raw.conn, mark, table)
        chosen = ", ".join(mark if name == "session_id" else name for name in names)
        raw.conn.execute(
            f"INSERT INTO {table} ({', '.join(names)}) SELECT {chosen}"
            f" FROM {table} WHERE session_id = {mark}",
            (target, source),
        )
    if mark == "%s":
        raw.conn.commit()


def bench_commit(
    store: SessionStore, raw: Any, mark: str, size: int, repeats: int, *, append: int = APPEND
) -> tuple[float, float]:
    """Median microseconds of a commit of ``append`` nodes to a chain of
    ``size`` nodes: through the store, and raw."""
    store_sid, raw_sid = f"store-{size}-{append}", f"raw-{size}-{append}"
    head = build_chain(store, store_sid, size)
    clone_session(raw, store_sid, raw_sid, mark)
    raw.prepare(raw_sid)
    raw_head = head
    store_times: list[float] = []
    raw_times: list[float] = []
    warmup = 10
    for r in range(repeats + warmup):
        nodes = [node(f"c{r}.{i}", f"c{r}.{i - 1}" if i else None) for i in range(append)]
        commit = make_commit(store_sid, head, nodes)
        store_t, raw_t = alternate(
            r,
            functools.partial(store.commit, commit),
            functools.partial(raw.commit, raw_sid, raw_head, nodes),
        )
        head += 1
        raw_head += 1
        if r >= warmup:
            store_times.append(store_t)
            raw_times.append(raw_t)
    return median_us(store_times), median_us(raw_times)


def bench_path(
    store: SessionStore, raw: Any, off_per_path_node: int, repeats: int
) -> tuple[float, float]:
    sid = f"path-{off_per_path_node}"
    build_path_session(store, sid, off_per_path_node)
    leaf = f"p{PATH_LENGTH - 1}"
    loaded = store.load_graph(sid, ActivePath())
    assert loaded is not None
    assert [n.node_id for n in loaded.nodes] == [f"p{i}" for i in range(PATH_LENGTH)]
    assert len(raw.load_path(sid, leaf)) == PATH_LENGTH
    store_times: list[float] = []
    raw_times: list[float] = []
    for r in range(repeats + 10):
        store_t, raw_t = alternate(
            r, lambda: store.load_graph(sid, ActivePath()), lambda: raw.load_path(sid, leaf)
        )
        if r >= 10:
            store_times.append(store_t)
            raw_times.append(raw_t)
    return median_us(store_times), median_us(raw_times)


def run_backend(
    name: str, store: SessionStore, raw: Any, mark: str, repeats: int
) -> list[tuple[str, str, float, float]]:
    results = []
    for size in (1_000, 100_000):
        started = time.perf_counter()
        store_us, raw_us = bench_commit(store, raw, mark, size, repeats)
        results.append((f"commit {APPEND} nodes", f"session of {size:,} nodes", store_us, raw_us))
        elapsed = time.perf_counter() - started
        print(f"  {name}: commit on {size:,} nodes done in {elapsed:.1f}s", file=sys.stderr)
    # 0% off path: the session is the path; 99%: 99 off-path nodes per path node.
    for off in (0, 99):
        store_us, raw_us = bench_path(store, raw, off, repeats)
        share = off / (off + 1)
        total = PATH_LENGTH * (off + 1)
        case = f"{share:.0%} off path ({total:,} nodes)"
        results.append((f"load {PATH_LENGTH}-node active path", case, store_us, raw_us))
        print(f"  {name}: active path with {share:.0%} off path done", file=sys.stderr)
    return results


# -- the report --------------------------------------------------------------------


def report(rows: list[tuple[str, str, str, float, float]]) -> None:
    print("| backend | operation | case | store median (µs) | raw median (µs) | store / raw |")
    print("|---|---|---|---:|---:|---:|")
    for backend, operation, case, store_us, raw_us in rows:
        ratio = store_us / raw_us
        print(
            f"| {backend} | {operation} | {case} | {store_us:,.0f} | {raw_us:,.0f} | {ratio:.2f}x |"
        )
    print()
    print("| backend | flatness | ratio | goal |")
    print("|---|---|---:|---|")
    for backend in dict.fromkeys(r[0] for r in rows):
        mine = [r for r in rows if r[0] == backend]
        commit_1k, commit_100k = mine[0][3], mine[1][3]
        path_0, path_99 = mine[2][3], mine[3][3]
        growth = commit_100k / commit_1k
        print(f"| {backend} | commit: 100k-node / 1k-node session | {growth:.2f}x | flat |")
        print(f"| {backend} | active path: 99% / 0% off path | {path_99 / path_0:.2f}x | <= 1.5x |")
        worst = max(r[3] / r[4] for r in mine[:2])
        print(f"| {backend} | commit: worst store / raw | {worst:.2f}x | <= 1.3x |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=200, help="timed repeats per case")
    parser.add_argument(
        "--synchronous", default="FULL", help="SQLite synchronous setting for store and raw"
    )
    parser.add_argument("--skip-postgres", action="store_true")
    args = parser.parse_args()
    rows: list[tuple[str, str, str, float, float]] = []

    with tempfile.TemporaryDirectory(prefix="lash-bench-") as tmp:
        path = str(Path(tmp) / "bench.db")
        store = SQLiteStore(path, synchronous=args.synchronous)
        raw = RawSQLite(path, args.synchronous)
        backend = f"SQLite ({args.synchronous})"
        print(f"{backend}: {path}", file=sys.stderr)
        rows += [(backend, *r) for r in run_backend(backend, store, raw, "?", args.repeats)]
        raw.close()
        store.close()

    if not args.skip_postgres:
        with postgres_dsn() as dsn:
            if dsn is None:
                print("PostgreSQL: no server (set LASH_MACHINE_BENCH_DSN)", file=sys.stderr)
            else:
                from lash_machine.stores.postgres import PostgresStore

                _, schema_dsn = fresh_schema(dsn)
                pg_store = PostgresStore(schema_dsn)
                pg_raw = RawPostgres(schema_dsn)
                print("PostgreSQL: running", file=sys.stderr)
                rows += [
                    ("PostgreSQL", *r)
                    for r in run_backend("PostgreSQL", pg_store, pg_raw, "%s", args.repeats)
                ]
                pg_raw.close()
                pg_store.close()

    report(rows)


if __name__ == "__main__":
    main()
