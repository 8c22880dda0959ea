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
from . import maintain, reading, transfer
from .demo import run_demo
from .exits import EXIT_CODES_HELP, EXIT_CODES_POINTER

__all__ = ["build_parser", "check_names", "positive", "since", "since_time"]

_DESCRIPTION = """\
Look after lash-machine sessions stored in SQLite or PostgreSQL, or watch one
session's lifecycle with `lash-machine demo`.

Operator commands name the database with --db PATH (an existing SQLite file)
or --dsn URL (PostgreSQL, e.g. postgresql://user@host/db; the tables live in
the first schema of its search_path; prefer PGPASSWORD or ~/.pgpass to a
password in the URL). They never create a database, except import --create.
A SESSION may be given by a unique prefix of its id.
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


def since_time(text: str, now: float) -> float:
    """The moment ``text`` names, in seconds since the epoch: an ISO 8601
    date or time (UTC unless it carries an offset), or a duration back from
    ``now`` (``30d``, ``1h30m``). Raises ValueError naming both forms."""
    spelled = text.strip()
    if _DURATION.fullmatch(spelled):
        back = sum(float(n) * _UNITS[unit] for n, unit in _DURATION_PART.findall(spelled))
        return now - back
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
        more="The margin marks the active path (*) and orphans (o, off the active path).\n"
        "A chain stays in its column; a fork indents. Node ids are shortened to a\n"
        "unique prefix of at least 8 characters.\n\n"
        "--json prints one object: session_id, head_revision, policy,\n"
        "current_frame_id, leaf_id, lease (null, or owner, token and expires_at),\n"
        "active_path (node ids, root first), orphans (node ids), repairs (one\n"
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
        more="--json prints an array of nodes, each an object with node_id, parent_id,\n"
        "kind, body, frame_id and created_at (seconds since the epoch).",
    )
    orphans.add_argument("session", metavar="SESSION", help=_SESSION)
    orphans.add_argument("--json", action="store_true", help="print the nodes as JSON")

    prune = command(
        "prune",
        maintain.prune,
        "tombstone a session's orphans (vacuum removes them)",
        more="Tombstoned nodes are hidden from every read at once and deleted by the next\n"
        "vacuum. Refused while the session's graph needs repair (exit 1) and while a\n"
        "worker holds the session's lease (exit 6); prune takes the lease itself\n"
        "for the moment it works, so no commit moves the leaf meanwhile.",
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
    return parser
