"""Upgrading a database of an older schema version, in place.

Each step takes a database from one version to the next; a plan is the
steps from the version found to :data:`~lash_machine.stores.base.SCHEMA_VERSION`.
A store made with ``migrate=True`` (and ``lash-machine migrate``) runs the
plan in ONE transaction, under the lock every opener of the database takes
(SQLite's write lock, or PostgreSQL's schema advisory lock), after reading
the version again under it: two migrators never both run it, a failed one
leaves the database as it was, and a database already current is left
alone (migrating is idempotent). ``--dry-run`` prints the plan instead.

Nothing is ever migrated without being asked: opening an older database
without ``migrate`` raises :class:`~lash_machine.errors.SchemaVersionMismatch`,
which names the command.

Version 2 to 3 (every change adds; no row is rewritten but the new
``created_at``, set to the session's last update, the best time known):

* ``lash_sessions`` gains ``created_at``, ``created_by`` (the creating
  commit's id; unknown, so empty, for older rows), ``generation`` (bumped by each
  tombstone), ``last_commit_id`` (retried commits), ``path_hint`` (where
  the active path's rows lie) and ``origin_session``/``origin_node``
  (copies), and an index for expiry by last update;
* ``lash_nodes`` gains ``pinned``, with a partial index;
* ``lash_deleted`` keeps the ids of deleted sessions.
"""

from __future__ import annotations

from .base import SCHEMA_VERSION

__all__ = ["POSTGRES", "SQLITE", "postgres_plan", "sqlite_plan"]

#: SQLite: the statements that take a database from each version to the next.
SQLITE: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE lash_sessions ADD COLUMN created_at REAL NOT NULL DEFAULT 0",
        "UPDATE lash_sessions SET created_at = updated_at",
        "ALTER TABLE lash_sessions ADD COLUMN created_by TEXT",
        "ALTER TABLE lash_sessions ADD COLUMN generation INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE lash_sessions ADD COLUMN last_commit_id TEXT",
        "ALTER TABLE lash_sessions ADD COLUMN path_hint TEXT",
        "ALTER TABLE lash_sessions ADD COLUMN origin_session TEXT",
        "ALTER TABLE lash_sessions ADD COLUMN origin_node TEXT",
        "CREATE INDEX lash_sessions_idle ON lash_sessions (updated_at, session_id)",
        "ALTER TABLE lash_nodes ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0",
        "CREATE INDEX lash_nodes_pinned ON lash_nodes (session_id) WHERE pinned = 1",
        """CREATE TABLE lash_deleted (
        session_id TEXT NOT NULL PRIMARY KEY,
        deleted_at REAL NOT NULL
    ) WITHOUT ROWID""",
        "PRAGMA user_version = 3",
    ),
}

#: PostgreSQL: the statements that take a database from each version to the next.
POSTGRES: dict[int, tuple[str, ...]] = {
    2: (
        "ALTER TABLE lash_sessions ADD COLUMN created_at double precision NOT NULL DEFAULT 0",
        "UPDATE lash_sessions SET created_at = updated_at",
        "ALTER TABLE lash_sessions ALTER COLUMN created_at DROP DEFAULT",
        "ALTER TABLE lash_sessions ADD COLUMN created_by text",
        "ALTER TABLE lash_sessions ADD COLUMN generation bigint NOT NULL DEFAULT 0",
        "ALTER TABLE lash_sessions ADD COLUMN last_commit_id text",
        "ALTER TABLE lash_sessions ADD COLUMN path_hint jsonb",
        "ALTER TABLE lash_sessions ADD COLUMN origin_session text",
        "ALTER TABLE lash_sessions ADD COLUMN origin_node text",
        "CREATE INDEX lash_sessions_idle ON lash_sessions (updated_at, session_id)",
        "ALTER TABLE lash_nodes ADD COLUMN pinned boolean NOT NULL DEFAULT false",
        "CREATE INDEX lash_nodes_pinned ON lash_nodes (session_id) WHERE pinned",
        """CREATE TABLE lash_deleted (
        session_id text PRIMARY KEY,
        deleted_at double precision NOT NULL
    )""",
        "UPDATE lash_schema SET version = 3",
    ),
}


def _plan(steps: dict[int, tuple[str, ...]], version: int) -> list[str]:
    if version == SCHEMA_VERSION:
        return []
    plan: list[str] = []
    while version != SCHEMA_VERSION:
        if version not in steps:
            raise ValueError(f"no upgrade from schema version {version}")
        plan.extend(steps[version])
        version += 1
    return plan


def sqlite_plan(version: int) -> list[str]:
    """The statements that take a SQLite database from ``version`` to the
    current one (none when it is current). ``ValueError`` when there is no
    way up from ``version``."""
    return _plan(SQLITE, version)


def postgres_plan(version: int) -> list[str]:
    """As :func:`sqlite_plan`, for PostgreSQL."""
    return _plan(POSTGRES, version)
