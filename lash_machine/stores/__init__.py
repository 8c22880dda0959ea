"""Stores: where sessions live between requests.

:class:`MemoryStore` (the reference, nothing durable), :class:`SQLiteStore`
(one file, stdlib only) and :class:`PostgresStore` (psycopg 3; install the
``postgres`` extra). Importing this package never imports psycopg: the
Postgres store loads on first use of its name.

All three grant session execution leases (:class:`LeaseStore`): one writer
per session among many workers, fenced by a token on every commit (see
:mod:`lash_machine.stores.leases`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import migrations
from .base import SCHEMA_VERSION, SessionStore
from .leases import Lease, LeaseStore
from .memory import MemoryStore
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from .postgres import PostgresStore

__all__ = [
    "SCHEMA_VERSION",
    "Lease",
    "LeaseStore",
    "MemoryStore",
    "PostgresStore",
    "SQLiteStore",
    "SessionStore",
    "migrations",
]


def __getattr__(name: str) -> Any:
    # Lazy: psycopg is an optional dependency.
    if name == "PostgresStore":
        from .postgres import PostgresStore

        return PostgresStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
