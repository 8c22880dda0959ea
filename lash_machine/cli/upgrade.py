"""``migrate``: upgrade a database of an older schema version in place.

The statements are the stores' own (:mod:`lash_machine.stores.migrations`),
and so is the run: a store opened with ``migrate=True`` reads the version
again under the lock every opener takes and runs the whole plan in one
transaction, so two migrators never both run it and a failed run leaves
the database as it was. ``--dry-run`` reads the version and prints the
plan without writing anything. Every other command refuses an older
database with :class:`~lash_machine.errors.SchemaVersionMismatch`, which
names this command.
"""

from __future__ import annotations

import argparse
import json

from ..errors import SchemaVersionMismatch
from ..stores import migrations
from ..stores.base import SCHEMA_VERSION
from .exits import CliError, Exit
from .lookup import plural, target_of
from .target import Target, open_store, stored_version

__all__ = ["migrate"]


def migrate(args: argparse.Namespace) -> int:
    """``migrate [--dry-run] [--json]``: upgrade the database to this
    release's schema version, or (dry run) print the statements that would.
    A database already current is left alone (exit 0: migrating twice is
    harmless); one of a newer version is refused (exit 4)."""
    target = target_of(args)
    found = stored_version(target)
    if found > SCHEMA_VERSION:
        raise SchemaVersionMismatch(target.label, found, SCHEMA_VERSION)
    plan = _plan(target, found)
    migrated = False
    if plan and not args.dry_run:
        with open_store(target, migrate=True):
            pass  # the store upgraded it while opening
        after = stored_version(target)
        if after != SCHEMA_VERSION:  # the store's promise, checked
            raise CliError(
                f"{target.label}: still at schema version {after} after the migration", Exit.STORE
            )
        migrated = True
    if args.json:
        print(
            json.dumps(
                {
                    "found_version": found,
                    "target_version": SCHEMA_VERSION,
                    "dry_run": args.dry_run,
                    "migrated": migrated,
                    "statements": plan,
                },
                indent=2,
            )
        )
        return Exit.OK
    if not plan:
        print(f"{target.label}: at schema version {found} already: nothing to migrate")
    elif args.dry_run:
        print(
            f"{target.label}: schema version {found}; migrating to {SCHEMA_VERSION} would run"
            f" {plural(len(plan), 'statement')} in one transaction (dry run: nothing written):"
        )
        for statement in plan:
            print("  " + " ".join(statement.split()) + ";")
    else:
        print(
            f"{target.label}: migrated from schema version {found} to {SCHEMA_VERSION}"
            f" ({plural(len(plan), 'statement')} in one transaction)"
        )
    return Exit.OK


def _plan(target: Target, found: int) -> list[str]:
    try:
        if target.db is not None:
            return migrations.sqlite_plan(found)
        return migrations.postgres_plan(found)
    except ValueError as error:  # no way up from that version
        raise CliError(f"{target.label}: {error}", Exit.STORE) from None
