"""Shared pieces of the ``lash-machine`` tests: the command run as users
run it (a subprocess), and the databases it runs on (a SQLite file, a fresh
PostgreSQL schema), each with a store and raw SQL to damage it."""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import attrs
import pytest

from lash_machine import ModelSpec, SessionPolicy
from lash_machine.drivers.blocking import Driver
from lash_machine.persisted import FullGraph, StoredSession
from lash_machine.stores import SQLiteStore
from lash_machine.stores.base import SessionStore

POLICY = SessionPolicy(ModelSpec("test-model"), provider_id="test")
ENV = {**os.environ, "COLUMNS": "100", "PYTHONIOENCODING": "utf-8"}

#: The databases a CLI test runs on: the fixture parameters.
DATABASES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


def cli(
    *args: str, cwd: Path | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m lash_machine ARGS``."""
    result = subprocess.run(
        [sys.executable, "-m", "lash_machine", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=ENV,
        input=stdin,
        check=False,
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


@attrs.frozen
class Db:
    """A database under test: the CLI arguments naming it, a store on it,
    and raw SQL (``?`` placeholders) to damage it."""

    kind: str
    args: tuple[str, ...]
    open: Callable[[], SessionStore]
    sql: Callable[[str, tuple[object, ...]], None]


def sqlite_db(path: Path) -> Db:
    def sql(query: str, params: tuple[object, ...]) -> None:
        with sqlite3.connect(path) as conn:
            conn.execute(query, params)
        conn.close()

    return Db("sqlite", ("--db", str(path)), lambda: SQLiteStore(path), sql)


@contextlib.contextmanager
def fresh_schema(postgres_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh, empty schema (dropped after)."""
    import psycopg
    from psycopg import sql

    name = f"cli_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(postgres_dsn, options=f"-c search_path={name}")
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def postgres_db(dsn: str) -> Db:
    import psycopg

    from lash_machine.stores.postgres import PostgresStore

    def sql(query: str, params: tuple[object, ...]) -> None:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(query.replace("?", "%s"), params)

    return Db("postgres", ("--dsn", dsn), lambda: PostgresStore(dsn, max_size=2), sql)


def empty_database(kind: str, tmp_path: Path, schema: Callable[[], str]) -> Db:
    """A database of ``kind`` with the lash-machine schema and no sessions;
    ``schema`` gives a fresh PostgreSQL schema's DSN when one is needed."""
    db = sqlite_db(tmp_path / "sessions.sqlite3") if kind == "sqlite" else postgres_db(schema())
    db.open().close()
    return db


def seed(db: Db) -> Db:
    """Two sessions. ``s-main``: n1 -> n2 -> n3, then a branch back to n2
    and n4, so n3 is an orphan and n4 the leaf. ``s-other``: one node."""
    counter = itertools.count(1)
    store = db.open()
    try:
        with Driver(store, ids=lambda: f"n{next(counter)}") as driver:
            session = driver.open(POLICY, "s-main")
            session.append({"role": "user", "content": "Plan a weekend in Lisbon."})
            answer = session.append({"role": "assistant", "content": "Alfama, then Belem."})
            session.append({"role": "user", "content": "Make it cheaper."})
            session.branch(answer.node_id)
            session.append({"role": "user", "content": "Swap day 2 for Sintra."})
            session.park()
            other = driver.open(POLICY, "s-other")
            other.append({"role": "user", "content": "hello"})
            other.park()
    finally:
        store.close()
    return db


def load(db: Db, session_id: str) -> StoredSession | None:
    """The stored session (full graph), read through a store."""
    store = db.open()
    try:
        return store.load_graph(session_id, FullGraph())
    finally:
        store.close()


def on_terminal(*args: str, stdin: str = "") -> tuple[subprocess.CompletedProcess[str], str]:
    """Run ``python -m lash_machine ARGS`` with stderr on a pseudo-terminal
    and stdout on a pipe: the result, and what reached the terminal."""
    master, slave = os.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lash_machine", *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=slave,
        env=ENV,
        text=True,
    )
    os.close(slave)
    seen: list[bytes] = []

    def drain() -> None:
        # Until the child closes the terminal (EIO on Linux).
        while True:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    try:
        out, _ = proc.communicate(stdin, timeout=60)
    finally:
        reader.join(timeout=60)
        os.close(master)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), b"".join(seen).decode()
