"""The databases a workload runs on: a fresh SQLite file and, when there is
a server, a fresh PostgreSQL schema; each with lash_machine's store and the
raw driver of ``bench_store`` on the same tables."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from lash_machine.stores.base import SessionStore
from lash_machine.stores.sqlite import SQLiteStore

from ._common import Config
from ._pg import checkpoint, temporary_schema, vacuum_analyze

__all__ = ["Backend", "open_backends"]

_files = itertools.count()


@dataclass
class Backend:
    """One database: ``name`` for the report, the store, the raw driver
    (``RawSQLite`` or ``RawPostgres``) and its placeholder ``mark``."""

    name: str
    store: SessionStore
    raw: Any
    mark: str
    dsn: str | None = None

    def settle(self) -> None:
        """After a bulk build, :func:`~._pg.vacuum_analyze` and a
        :func:`~._pg.checkpoint` (PostgreSQL; SQLite needs nothing): the
        build's writes, and the vacuum's, are on disk before the
        measurement starts, not flushed in the middle of it."""
        if self.dsn is not None:
            vacuum_analyze(self.dsn)
            checkpoint(self.dsn)


@contextlib.contextmanager
def open_backends(config: Config, label: str) -> Iterator[list[Backend]]:
    """SQLite always, PostgreSQL when the run has a server; closed after."""
    from .bench_store import RawPostgres, RawSQLite

    with contextlib.ExitStack() as stack:
        path = str(config.tmp / f"{label}-{next(_files)}.db")
        store = SQLiteStore(path, synchronous=config.synchronous)
        stack.callback(store.close)
        raw = RawSQLite(path, config.synchronous)
        stack.callback(raw.close)
        found = [Backend("SQLite", store, raw, "?")]
        if config.pg_dsn is not None:
            from lash_machine.stores.postgres import PostgresStore

            _, dsn = stack.enter_context(temporary_schema(config.pg_dsn, label))
            pg_store = PostgresStore(dsn)
            stack.callback(pg_store.close)
            pg_raw = RawPostgres(dsn)
            stack.callback(pg_raw.close)
            found.append(Backend("PostgreSQL", pg_store, pg_raw, "%s", dsn))
        yield found
