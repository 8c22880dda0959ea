"""The command line: ``lash-machine COMMAND [options]``, stdlib argparse.

``--db``/``--dsn`` may come before or after the command
(``lash-machine --db x.sqlite3 sessions`` or ``lash-machine sessions --db
x.sqlite3``).
"""

from __future__ import annotations

import argparse
import datetime
import re
import time
from collections.abc import Callable

from .. import __version__
from ..checks import CHECKS, GraphCheck, checks_named
from . import maintain, reading, retention, transfer, upgrade
from .demo import run_demo
from .exits import EXIT_CODES_HELP, EXIT_CODES_POINTER

__all__ = [
    "build_parser",
    "check_names",
    "duration",
    "duration_seconds",
    "positive",
    "since",
    "since_time",
]

_DESCRIPTION = """\
Look after lash-machine sessions stored in SQLite or PostgreSQL, or watch one
session's lifecycle with `lash-machine demo`.

Operator commands name the database with --db PATH (an existing SQLite file)
or --dsn URL (PostgreSQL, e.g. postgresql://user@host/db; the tables live in
the first schema of its search_path; prefer PGPASSWORD or ~/.pgpass to a
password in the URL). They never create a database, except import --create.
A SESSION may be given by a unique prefix of its id (delete asks for the
whole id: it cannot be undone).
"""

Command = Callable[[argparse.Namespace], int]

_SESSION = "a session id, or a prefix that names one session"


def _where(parser: argparse.ArgumentParser, default: object) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--db", metavar="PATH", default=default, help="a SQLite database file")
    group.add_argument("--dsn", metavar="URL", default=default, help="a PostgreSQL database")


def positive(text: str) -> int:
    """An argparse type: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def check_names(text: str) -> tuple[GraphCheck, ...]:
    """An argparse type: shipped checks by name, separated by commas."""
    try:
        return checks_named(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


#: Seconds per unit of a duration (``30d``).
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"(?:\d+(?:\.\d+)?[smhdw])+")
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def duration_seconds(text: str) -> float:
    """The seconds a duration spells (``30d``, ``1h30m``, ``1.5s``; units
    s m h d w). Raises ValueError naming the form."""
    spelled = text.strip()
    if not _DURATION.fullmatch(spelled):
        raise ValueError(f"not a duration (30d, 12h, 1h30m; units s m h d w): {text!r}")
    return sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(spelled))


def duration(text: str) -> float:
    """An argparse type: :func:`duration_seconds`."""
    try:
        return duration_seconds(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def since_time(text: str, now: float) -> float:
    """The moment ``text`` names, in seconds since the epoch: an ISO 8601
    date or time (UTC unless it carries an offset), or a duration back from
    ``now`` (``30d``, ``1h30m``). Raises ValueError naming both forms."""
    spelled = text.strip()
    if _DURATION.fullmatch(spelled):
        return now - duration_seconds(spelled)
    try:
        moment = datetime.datetime.fromisoformat(spelled)
    except ValueError:
        raise ValueError(
            f"not an ISO 8601 time (2024-05-01T12:00Z) nor a duration (30d, 12h): {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def since(text: str) -> float:
    """An argparse type: :func:`since_time` from the current time."""
    try:
        return since_time(text, time.time())
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``lash-machine``; each command sets ``run`` to the
    function that carries it out."""
    parser = argparse.ArgumentParser(
        prog="lash-machine",
        description=_DESCRIPTION,
        epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _where(parser, None)
    # SUPPRESS: an option given after the command must not be reset by the
    # command's parser when it was given before the command.
    where = argparse.ArgumentParser(add_help=False)
    _where(where, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def command(
        name: str, run: Command, summary: str, *, database: bool = True, more: str = ""
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(
            name,
            parents=[where] if database else [],
            help=summary,
            description=f"{summary}.\n\n{more}" if more else f"{summary}.",
            epilog=EXIT_CODES_POINTER,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.set_defaults(run=run)
        return sub

    demo = command(
        "demo",
        run_demo,
        "run a narrated session on a new SQLite file: open, append, branch, park,"
        " resume, load history, prune, vacuum",
        database=False,
        more="Each step prints what the machine emitted (store requests, lifecycle\n"
        "events, host requests) and how long it took; it ends with the session's\n"
        "tree. The file is kept, to try the other commands on.",
    )
    demo.add_argument(
        "--db",
        metavar="PATH",
        default=argparse.SUPPRESS,
        help="the new file to create (default: lash-demo-<id>.sqlite3 here);"
        " an existing file is refused, never overwritten or reused",
    )

    sessions = command(
        "sessions",
        reading.sessions,
        "list the stored sessions",
        more="Sessions are listed by id. --json prints an array of objects with\n"
        "session_id, head_revision, node_count (live nodes) and updated_at (seconds\n"
        "since the epoch, UTC).",
    )
    sessions.add_argument(
        "--since",
        metavar="TIME",
        type=since,
        help="only sessions updated at or after TIME: an ISO 8601 date or time"
        " (2024-05-01, 2024-05-01T12:00Z; UTC unless it says otherwise), or a"
        " duration back from now (30d, 12h, 1h30m; units s m h d w) meaning"
        " updated within it",
    )
    sessions.add_argument(
        "--limit", metavar="N", type=positive, help="list at most N sessions (the first by id)"
    )
    sessions.add_argument("--json", action="store_true", help="print JSON for scripts")

    show = command(
        "show",
        reading.show,
        "draw a session's graph as a tree",
        more="The margin marks the active path (*), orphans (o, off the active path) and\n"
        "the originals a compaction replaced (c, off the active path, kept by the\n"
        "compaction's pin). A summary node says what it replaced ([summary of N\n"
        "nodes through ID]); a pinned node is noted (pinned); the header says where\n"
        "a copied session came from. A chain stays in its column; a fork indents.\n"
        "Node ids are shortened to a unique prefix of at least 8 characters.\n\n"
        "--json prints one object: session_id, head_revision, policy,\n"
        "current_frame_id, leaf_id, lease (null, or owner, token and expires_at),\n"
        "origin (null, or the session_id and node_id a copy was made from),\n"
        "active_path (node ids, root first), orphans (node ids), pinned (node ids),\n"
        "kept_orphans (the orphans a pin keeps from prune), summaries (node_id,\n"
        "through, kept, and replaces: the ids of the path it replaced, root first),\n"
        "compacted (the replaced originals off the active path), repairs (one\n"
        "sentence per repair the graph needs; empty when it is sound) and nodes\n"
        "(every live node: node_id, parent_id, kind, body, frame_id, created_at).",
    )
    show.add_argument("session", metavar="SESSION", help=_SESSION)
    show.add_argument("--full-ids", action="store_true", help="print whole node ids")
    show.add_argument("--json", action="store_true", help="print JSON for scripts")

    orphans = command(
        "orphans",
        reading.orphans,
        "list a session's nodes off the active path",
        more="Each orphan says what keeps it from prune, if anything: a pin on it, or on\n"
        "a node under it (a pinned node's ancestors stay too); and the summary that\n"
        "replaced it, when a compaction did.\n\n"
        "--json prints an array of nodes, each an object with node_id, parent_id,\n"
        "kind, body, frame_id, created_at (seconds since the epoch), pinned (true or\n"
        "false), kept_by_pin (the pinned node that keeps it, or null) and\n"
        "compacted_into (the summary node that replaced it, or null).",
    )
    orphans.add_argument("session", metavar="SESSION", help=_SESSION)
    orphans.add_argument("--json", action="store_true", help="print the nodes as JSON")

    prune = command(
        "prune",
        maintain.prune,
        "tombstone a session's orphans (vacuum removes them)",
        more="Tombstoned nodes are hidden from every read at once and deleted by the next\n"
        "vacuum. Pinned nodes and their ancestors are kept (so are the originals a\n"
        "compaction replaced), and prune says how many. Refused while the session's\n"
        "graph needs repair (exit 1) and while a worker holds the session's lease\n"
        "(exit 6); prune takes the lease itself for the moment it works, so no\n"
        "commit moves the leaf meanwhile.",
    )
    prune.add_argument("session", metavar="SESSION", help=_SESSION)

    command("vacuum", maintain.vacuum, "remove every tombstoned node of the database for good")

    check = command(
        "check",
        reading.check,
        "scan sessions for graphs that need repair and corrupt rows (writes nothing)",
        more="Reads every session (or one) in full, decodes every row and heals each\n"
        "graph in memory. Exit 1 when any session needs repair or has a corrupt row.\n\n"
        "--json prints an array of objects with session_id, status (ok,\n"
        "needs_repair or corrupt), nodes (the live node count; null when corrupt)\n"
        "and problems (one sentence each).\n\n"
        "--checks NAME[,NAME] also runs content checks on each (healed) active\n"
        "path: a session whose path fails one has the status fails_check, and\n"
        "exit 1. The checks are: " + ", ".join(sorted(CHECKS)) + " (tool calls\n"
        "left without a result). A driver given the same checks appends their\n"
        "repairs when it opens the session; this command only reports.",
    )
    check.add_argument("session", metavar="SESSION", nargs="?", help="only this session")
    check.add_argument("--json", action="store_true", help="print JSON for scripts")
    check.add_argument(
        "--checks",
        metavar="NAME[,NAME]",
        type=check_names,
        default=(),
        help="content checks to run on each active path (" + ", ".join(sorted(CHECKS)) + ")",
    )

    heal = command(
        "heal",
        maintain.heal,
        "show (or, with --apply, commit) a session's repairs",
        more="Without --apply nothing is written, and the exit code is 1 when there are\n"
        "repairs to make. --apply commits them as one commit (a compare-and-set on\n"
        "the head revision: a concurrent writer is never overwritten).",
    )
    heal.add_argument("session", metavar="SESSION", help=_SESSION)
    heal.add_argument("--apply", action="store_true", help="commit the repairs")

    export = command(
        "export",
        transfer.export,
        "write a session as wire-format JSON",
        more="One lash_machine.wire message (a StoredSession with its live nodes), to\n"
        "stdout or a file; `import` reads it back.",
    )
    export.add_argument("session", metavar="SESSION", help=_SESSION)
    export.add_argument(
        "-o",
        "--output",
        metavar="FILE",
        help="write to FILE, not stdout: whole or not at all (an existing FILE is"
        " refused with exit 6, unless --force)",
    )
    export.add_argument("--force", action="store_true", help="replace an existing FILE")

    import_ = command(
        "import",
        transfer.import_,
        "create a session from a wire-format export",
        more="Everything in the file is checked before the database is opened (ids,\n"
        "node kinds, finite times and numbers, JSON bodies): bad input is exit 5,\n"
        "naming the node and what is wrong. The session is created by one first\n"
        "commit, at head revision 1; an existing session of that id is never\n"
        "touched (exit 6).",
    )
    import_.add_argument("file", metavar="FILE", help="the export to read ('-' for stdin)")
    import_.add_argument(
        "--create",
        action="store_true",
        help="create the database (or its tables) when missing",
    )

    _lifecycle(command)
    return parser


def _lifecycle(command: Callable[..., argparse.ArgumentParser]) -> None:
    """The commands of a session's data lifecycle: delete, purge, expire,
    copy, and migrate for the database itself."""
    delete = command(
        "delete",
        retention.delete,
        "delete a session and all its rows for good",
        more="Takes the whole session id (no prefix: a delete cannot be undone) and\n"
        "reads the session back to confirm that nothing is left. The id is kept as\n"
        "a deletion marker: a worker still holding the session cannot write it or\n"
        "make it again (its store raises SessionDeleted), and `import` and `copy\n"
        "--as` refuse it, until `purge` forgets the marker. Refused while a worker\n"
        "holds the session's lease (exit 6); a deleted or unknown id is exit 3.",
    )
    delete.add_argument("session", metavar="SESSION", help="the whole session id")

    purge = command(
        "purge",
        retention.purge,
        "forget the deletion markers older than an age (their ids may be used again)",
        more="A marker keeps a deleted (or expired) session's id from being written\n"
        "again. Forget one only when no worker can still hold the session: give\n"
        "the markers longer than any worker lives.",
    )
    purge.add_argument(
        "--older-than",
        metavar="AGE",
        type=since,
        required=True,
        help="forget markers of deletes before AGE ago (a duration: 30d, 12h, 1h30m;"
        " units s m h d w; 0s forgets all) or before an ISO 8601 time",
    )

    expire = command(
        "expire",
        retention.expire,
        "delete the sessions nobody committed to for a while, never a leased one",
        more="Each expired session is deleted as `delete` does (a marker is kept). A\n"
        "session whose lease a worker holds is kept, however idle, and counted. The\n"
        "store works in write transactions of --batch-size sessions, so a large\n"
        "database is never locked for long; on a terminal, stderr shows the count\n"
        "so far. --dry-run removes nothing and reports the same.\n\n"
        "--json prints one object: dry_run, idle_for (seconds), cutoff (seconds\n"
        "since the epoch: sessions last committed to before it are idle), expired\n"
        "(session ids), nodes_removed, kept_leased (idle sessions kept for their\n"
        "lease) and longest_batch (the longest write transaction, in seconds).",
    )
    expire.add_argument(
        "--idle",
        metavar="DURATION",
        type=duration,
        required=True,
        help="how long without a commit makes a session idle (30d, 12h, 1h30m; units s m h d w)",
    )
    expire.add_argument("--dry-run", action="store_true", help="only report what would be expired")
    expire.add_argument(
        "--batch-size",
        metavar="N",
        type=positive,
        default=200,
        help="sessions per write transaction (default: 200)",
    )
    expire.add_argument("--json", action="store_true", help="print the report as JSON")

    copy = command(
        "copy",
        transfer.copy,
        "copy a session's history (up to a node) into a new session",
        more="The new session holds the path from the root to NODE (the stored leaf by\n"
        "default), with the source's policy, frames and snapshots, made in one\n"
        "transaction; it records where it came from (`show` says so). Prints the\n"
        "new session's id and nothing else. An existing or deleted --as id is\n"
        "refused (exit 6).",
    )
    copy.add_argument("session", metavar="SESSION", help=_SESSION)
    copy.add_argument(
        "--at",
        metavar="NODE",
        help="copy the path up to this node (an id, or a prefix that names one node)",
    )
    copy.add_argument(
        "--as",
        dest="as_",
        metavar="NEW",
        help="the new session's id (default: a fresh random one)",
    )

    migrate = command(
        "migrate",
        upgrade.migrate,
        "upgrade a database of an older schema version in place",
        more="Runs the whole upgrade in one transaction, under the lock every opener\n"
        "of the database takes: a failed run leaves the database as it was, and two\n"
        "migrators never both run it. A database already current is left alone, so\n"
        "migrating twice is harmless. Every other command refuses an older database\n"
        "(exit 4) until it is migrated. Back the database up first all the same.\n\n"
        "--json prints one object: found_version, target_version, dry_run, migrated\n"
        "(whether this run upgraded it) and statements (the plan; empty when current).",
    )
    migrate.add_argument(
        "--dry-run",
        action="store_true",
        help="print the version found and the statements an upgrade would run; write nothing",
    )
    migrate.add_argument("--json", action="store_true", help="print JSON for scripts")
