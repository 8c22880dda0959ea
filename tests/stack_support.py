"""Pieces of the whole-stack model test (tests/test_stack_stateful.py):
a real store whose commits can fail or lose their answer, where the
stores of one run live (a SQLite file, or a fresh PostgreSQL schema), what
the tables must look like whatever happened, and a lock holder that orders
concurrent PostgreSQL transactions.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from lash_machine.errors import CommitOutcomeUnknown, LashMachineError, TransientStoreError
from lash_machine.persisted import SessionCommit
from lash_machine.stores import SQLiteStore
from lash_machine.stores.base import SessionStore

#: The faults a commit can meet: refused before it reaches the store (the
#: connection broke on the way), lost on the way (never applied, but the
#: caller cannot tell), or applied and its answer lost.
FAULTS = ("fail", "lost-request", "lost-answer")


class FaultyStore:
    """A real store whose next commits meet the faults queued in
    :attr:`faults`, one each; everything else goes to the store as is."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.faults: list[str] = []
        #: What the store did with each commit that met a fault:
        #: (fault, applied).
        self.met: list[tuple[str, bool]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def commit(self, commit: SessionCommit) -> int:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "fail":
            self.met.append((fault, False))
            raise TransientStoreError(f"session {commit.session_id!r}: injected failure")
        if fault == "lost-request":
            self.met.append((fault, False))
            raise CommitOutcomeUnknown(f"session {commit.session_id!r}: request lost")
        head = self.inner.commit(commit)
        if fault == "lost-answer":
            self.met.append((fault, True))
            raise CommitOutcomeUnknown(f"session {commit.session_id!r}: answer lost")
        return head


class Place:
    """Where one test's stores live, and how to reach it: open a store,
    the command line's target arguments, raw SQL for the checks."""

    def __init__(self, kind: str, opener: Callable[[], SessionStore], target: list[str]) -> None:
        self.kind = kind
        self.open = opener
        self.target = target
        self.dsn = target[1] if kind == "postgres" else ""

    def rows(self, query: str) -> list[tuple[Any, ...]]:
        if self.kind == "sqlite":
            with contextlib.closing(sqlite3.connect(self.target[1])) as conn:
                return conn.execute(query).fetchall()
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            return conn.execute(query).fetchall()  # type: ignore[arg-type]


@contextmanager
def sqlite_place(directory: Path) -> Iterator[Place]:
    path = directory / "stack.db"
    SQLiteStore(str(path)).close()
    yield Place("sqlite", lambda: SQLiteStore(str(path)), ["--db", str(path)])


@contextmanager
def postgres_place(postgres_dsn: str) -> Iterator[Place]:
    """A fresh schema, and an application name of its own so that
    :class:`Stage` sees which of its connections wait for a lock."""
    from lash_machine.stores.postgres import PostgresStore

    name = f"stack_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(
        postgres_dsn, options=f"-c search_path={name}", application_name=name
    )
    try:
        yield Place("postgres", lambda: PostgresStore(dsn, min_size=1, max_size=3), ["--dsn", dsn])
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def table_problems(place: Place, prefix: str) -> list[str]:
    """What the tables must never hold, whatever ran: node rows of no
    session, live nodes under a tombstoned or vanished parent, a stored
    leaf that is not a live node, a live-node count that is off (among
    the sessions whose ids start with ``prefix``, a plain string)."""
    mine = f"LIKE '{prefix}%'"
    problems: list[str] = []
    queries = {
        "node rows outlived their session": (
            "SELECT n.session_id, n.node_id FROM lash_nodes AS n WHERE NOT EXISTS"
            " (SELECT 1 FROM lash_sessions AS s WHERE s.session_id = n.session_id)"
            f" AND n.session_id {mine}"
        ),
        "live nodes hang off a tombstoned or vanished parent": (
            "SELECT c.session_id, c.node_id, c.parent_id FROM lash_nodes AS c"
            " WHERE NOT c.tombstoned AND c.parent_id IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM lash_nodes AS p WHERE p.session_id = c.session_id"
            "  AND p.node_id = c.parent_id AND NOT p.tombstoned)"
            f" AND c.session_id {mine}"
        ),
        "a stored leaf is not a live node": (
            "SELECT s.session_id, s.leaf_id FROM lash_sessions AS s WHERE s.leaf_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM lash_nodes AS n WHERE n.session_id = s.session_id"
            " AND n.node_id = s.leaf_id AND NOT n.tombstoned)"
            f" AND s.session_id {mine}"
        ),
        "a live-node count is off": (
            "SELECT s.session_id, s.live_nodes, (SELECT count(*) FROM lash_nodes AS n"
            " WHERE n.session_id = s.session_id AND NOT n.tombstoned) AS live"
            " FROM lash_sessions AS s WHERE s.live_nodes <> (SELECT count(*) FROM lash_nodes AS n"
            " WHERE n.session_id = s.session_id AND NOT n.tombstoned)"
            f" AND s.session_id {mine}"
        ),
    }
    for problem, query in queries.items():
        found = place.rows(query)
        if found:
            problems.append(f"{problem}: {found}")
    return problems


#: How long a staged contender may take to start waiting for its lock.
_START = 30.0

LOCK_SESSION = "SELECT 1 FROM lash_sessions WHERE session_id = %s FOR UPDATE"


class Stage:
    """Holds a session row from a connection of its own and starts
    contenders in threads, each once the one before waits for a lock (or
    is done: a contender that needs no lock the holder has goes first)."""

    def __init__(self, dsn: str) -> None:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
        self.dsn = dsn
        self.app = str(info["application_name"])
        self.holder = psycopg.connect(dsn, application_name=f"{self.app}-holder")
        self.pool = ThreadPoolExecutor(3)
        self.waiting = 0

    def hold(self, session_id: str) -> None:
        self.holder.execute(LOCK_SESSION, (session_id,))

    def start(self, call: Callable[[], object]) -> Future[object]:
        future = self.pool.submit(call)
        deadline = time.monotonic() + _START
        with psycopg.connect(self.dsn, autocommit=True, application_name="observer") as watch:
            while not future.done():
                row = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = %s AND wait_event_type = 'Lock'",
                    (self.app,),
                ).fetchone()
                assert row is not None
                if row[0] > self.waiting:
                    self.waiting = row[0]
                    break
                assert time.monotonic() < deadline, "a contender never started waiting"
                time.sleep(0.005)
        return future

    def release(self) -> None:
        self.holder.rollback()

    def close(self) -> None:
        self.holder.close()
        self.pool.shutdown(wait=True)


def outcome(future: Future[object]) -> object:
    """A contender's result, or the typed error it raised (anything else
    raises here)."""
    try:
        return future.result(timeout=_START)
    except LashMachineError as error:
        return error
