"""Opening the database an operator command works on.

``--db PATH`` is a SQLite file, ``--dsn URL`` a PostgreSQL database. Both
are checked *before* a store is built, because building one creates the
schema when it is missing: an operator command must never turn a mistyped
path into a new, empty database, nor write to a file that is not ours.

A DSN may hold a password. It is never printed: messages name a
PostgreSQL database by its :func:`~lash_machine.stores._dsn.redact`-ed DSN,
and ``main`` passes every error through
:func:`~lash_machine.stores._dsn.scrub` (a driver's error text may echo
parts of the connection string). Both are the stores' own functions.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import urllib.parse
from collections.abc import Iterator
from typing import Any

import attrs

from ..errors import SchemaVersionMismatch
from ..stores import migrations
from ..stores._dsn import redact
from ..stores.base import SCHEMA_VERSION, SessionStore
from ..stores.sqlite import SQLiteStore
from .exits import CliError, Exit

__all__ = ["CONNECT_TIMEOUT", "Target", "open_store", "stored_version"]

#: Seconds to wait for a PostgreSQL server before calling it unreachable.
CONNECT_TIMEOUT = 3

#: How to get a database, when an operator command finds none.
_CREATE_HINT = (
    "operator commands never create a database; `lash-machine demo` makes one to try them on"
)

#: The first 16 bytes of every SQLite 3 database file.
_SQLITE_HEADER = b"SQLite format 3\x00"


@attrs.frozen
class Target:
    """Where the sessions live, as the user named it on the command line.

    Exactly one of ``db`` (a SQLite path) and ``dsn`` (a PostgreSQL
    connection string) is set.
    """

    db: str | None = None
    dsn: str | None = None

    @property
    def label(self) -> str:
        """How messages name the database (a DSN's password hidden)."""
        if self.db is not None:
            return self.db
        assert self.dsn is not None
        return redact(self.dsn)


@contextlib.contextmanager
def open_store(
    target: Target, *, create: bool = False, create_hint: str = _CREATE_HINT, migrate: bool = False
) -> Iterator[SessionStore]:
    """The store ``target`` names, closed on exit.

    Without ``create`` the database must already hold lash-machine tables:
    a missing file, an empty one, or a database without our schema is a
    :class:`CliError` (exit 3), not a new database; ``create_hint`` tells
    the user how to get one. A database of an older schema version is
    refused (:class:`SchemaVersionMismatch`, naming ``lash-machine
    migrate``) unless ``migrate``, which upgrades it in place first.
    """
    if target.db is not None:
        store = _open_sqlite(target.db, create, create_hint, migrate)
    else:
        assert target.dsn is not None
        store = _open_postgres(target.dsn, create, target.label, create_hint, migrate)
    try:
        yield store
    finally:
        store.close()


# ---- SQLite ------------------------------------------------------------------------


def stored_version(target: Target) -> int:
    """The schema version of the lash-machine database ``target`` names,
    read without writing anything (``migrate --dry-run``). A missing or
    foreign database is a :class:`CliError`, as for :func:`open_store`."""
    if target.db is not None:
        _check_sqlite_path(target.db, _CREATE_HINT)
        return _sqlite_version(target.db, create=False)
    assert target.dsn is not None
    psycopg, dsn = _postgres_dsn(target.dsn)
    with _postgres_errors(target.label), psycopg.connect(dsn, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('lash_schema') IS NOT NULL").fetchone()
        if not (found and found[0]):
            raise _no_tables(target.label, _CREATE_HINT)
        versions = [row[0] for row in conn.execute("SELECT version FROM lash_schema")]
    # Several rows (or none) is not a table we wrote: version 0, as the store says.
    return int(versions[0]) if len(versions) == 1 else 0


def _check_sqlite_path(path: str, create_hint: str) -> None:
    if os.path.isdir(path):
        raise CliError(f"{path}: is a directory, not a SQLite database file", Exit.STORE)
    if not os.path.exists(path):
        raise CliError(f"{path}: no such file ({create_hint})", Exit.NOT_FOUND)


def _open_sqlite(path: str, create: bool, create_hint: str, migrate: bool) -> SessionStore:
    if create and (not os.path.exists(path) or os.path.getsize(path) == 0):
        # An empty file is what SQLite makes of a new database, too.
        return SQLiteStore(path)
    _check_sqlite_path(path, create_hint)
    version = _sqlite_version(path, create)
    if version not in (0, SCHEMA_VERSION) and not (migrate and version in migrations.SQLITE):
        raise SchemaVersionMismatch(path, version, SCHEMA_VERSION)
    return SQLiteStore(path, migrate=migrate)


def _sqlite_version(path: str, create: bool) -> int:
    """Check, without writing to it, that ``path`` is a lash-machine
    database, and return its schema version. Opening a store on a foreign file would switch
    it to WAL mode and, when it is empty, create our tables in it.

    With ``create``, a SQLite database without tables or version is new:
    it is what another process creating this database at the same moment
    has made so far (the store creates the schema under the write lock,
    so only one of them does).
    """
    try:
        with open(path, "rb") as file:
            header = file.read(len(_SQLITE_HEADER))
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror}", Exit.STORE) from None
    if not header:
        raise CliError(f"{path}: empty file, not a lash-machine database", Exit.NOT_FOUND)
    if header != _SQLITE_HEADER:
        raise CliError(f"{path}: not a SQLite database", Exit.STORE)
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=ro"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=5)
    except sqlite3.Error as exc:
        raise CliError(f"{path}: cannot open: {exc}", Exit.STORE) from None
    try:
        # One statement, so one snapshot: a concurrent creator's schema and
        # version (one transaction) are seen both or neither.
        version, tables = conn.execute(
            "SELECT (SELECT user_version FROM pragma_user_version),"
            " (SELECT count(*) FROM sqlite_master)"
        ).fetchone()
    except sqlite3.Error as exc:
        raise CliError(f"{path}: cannot read: {exc}", Exit.STORE) from None
    finally:
        conn.close()
    if version == 0 and not tables and create:
        return 0
    if version == 0:
        what = "a SQLite database of another application" if tables else "an empty SQLite database"
        raise CliError(f"{path}: {what}, not a lash-machine database", Exit.NOT_FOUND)
    return int(version)


# ---- PostgreSQL ----------------------------------------------------------------------


def _open_postgres(
    dsn: str, create: bool, label: str, create_hint: str, migrate: bool
) -> SessionStore:
    psycopg, dsn = _postgres_dsn(dsn)
    from ..stores.postgres import PostgresStore

    with _postgres_errors(label), psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT to_regclass('lash_schema') IS NOT NULL").fetchone()
    if not (row and row[0]) and not create:
        raise _no_tables(label, create_hint)
    # One connection is all a command needs; the store's own timeout bounds
    # every wait for it.
    return PostgresStore(dsn, min_size=1, max_size=2, timeout=10.0, migrate=migrate)


def _postgres_dsn(dsn: str) -> tuple[Any, str]:
    """psycopg, and ``dsn`` with a connect timeout."""
    try:
        import psycopg

        from ..stores import postgres  # noqa: F401  (it needs psycopg_pool too)
    except ImportError:
        raise CliError(
            "--dsn needs PostgreSQL support: pip install 'lash-machine[postgres]'", Exit.STORE
        ) from None
    try:
        params = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise CliError(f"--dsn is not a valid connection string: {exc}", Exit.USAGE) from None
    if "connect_timeout" not in params:
        # libpq waits forever by default; an operator wants an answer.
        dsn = psycopg.conninfo.make_conninfo(dsn, connect_timeout=CONNECT_TIMEOUT)
    return psycopg, dsn


@contextlib.contextmanager
def _postgres_errors(label: str) -> Iterator[None]:
    import psycopg

    try:
        yield
    except psycopg.Error as exc:
        # Only the first line: libpq adds per-host detail that repeats it.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CliError(f"cannot reach PostgreSQL at {label}: {reason}", Exit.STORE) from None


def _no_tables(label: str, create_hint: str) -> CliError:
    return CliError(
        f"{label}: no lash-machine tables here (no lash_schema table on the search_path;"
        f" {create_hint})",
        Exit.NOT_FOUND,
    )
