"""Shared pieces of the reliability tests: how hard to push (reduced counts
by default, the full counts with ``LASH_MACHINE_STRESS=full``), store
openers for child processes, and a fresh PostgreSQL schema per test.

Full counts, all reliability tests (``scripts/stress.sh`` runs the same)::

    LASH_MACHINE_STRESS=full .venv/bin/python -m pytest -s tests/test_reliability_*.py

``-s`` shows the figures each test prints (``[name] key=value ...``).
"""

from __future__ import annotations

import functools
import os
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from lash_machine.stores import SQLiteStore
from lash_machine.stores.base import SessionStore
from lash_machine.testing.postgres_server import throwaway_server
from lash_machine.testing.stress import Opener

_MODE = os.environ.get("LASH_MACHINE_STRESS", "")
if _MODE not in {"", "ci", "full"}:
    raise RuntimeError(f"LASH_MACHINE_STRESS must be 'full' or 'ci' (or unset), not {_MODE!r}")

#: Whether this run uses the full counts.
FULL = _MODE == "full"


def count(ci: int, full: int) -> int:
    """The count for this run: ``ci`` by default, ``full`` under
    ``LASH_MACHINE_STRESS=full``."""
    return full if FULL else ci


@contextmanager
def fresh_schema(postgres_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh schema, dropped afterwards."""
    name = f"rel_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield psycopg.conninfo.make_conninfo(postgres_dsn, options=f"-c search_path={name}")
    finally:
        with psycopg.connect(postgres_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def sqlite_opener(path: Path) -> Opener:
    """A picklable opener of the SQLite file at ``path``."""
    return functools.partial(SQLiteStore, str(path))


def postgres_opener(dsn: str) -> Opener:
    """A picklable opener of a small PostgresStore pool."""
    from lash_machine.stores.postgres import PostgresStore

    return functools.partial(PostgresStore, dsn, min_size=1, max_size=2)


def report(name: str, **figures: object) -> None:
    """Print one line of figures (shown with ``pytest -s``; the full-count
    run records them)."""
    line = " ".join(f"{key}={value}" for key, value in figures.items())
    print(f"\n[{name}] {line}")


class Timer:
    """Seconds since it was made."""

    def __init__(self) -> None:
        self._start = time.perf_counter()

    def __call__(self) -> float:
        return round(time.perf_counter() - self._start, 2)


def close_all(*stores: SessionStore) -> None:
    """Close every store given."""
    for store in stores:
        store.close()


# ---- a throwaway PostgreSQL server that checks passwords -----------------------------


@contextmanager
def password_server(password: str) -> Iterator[tuple[str, int]]:
    """A PostgreSQL cluster of its own on loopback whose ``postgres`` user
    must give ``password`` (scram-sha-256); yields (host, port). The shared
    test server trusts every connection, so it cannot refuse a password."""
    with throwaway_server(fsync=False, password=password) as server:
        yield server.host, server.port
