"""``lash-machine``: the operator command line (and ``python -m lash_machine``).

:func:`main` parses the command line, runs the command and turns every
*expected* failure (a missing file or session, an unreachable or foreign
database, a malformed import) into one line on stderr and an exit code
listed in ``--help``. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from ..errors import (
    CorruptRow,
    HeadRevisionConflict,
    LeaseHeld,
    SessionNotFound,
    StoreError,
    WireError,
)
from ..stores._dsn import scrub
from .exits import CliError, Exit
from .parser import build_parser
from .render import iso_time, printable

__all__ = ["main"]

#: The exit status of a process killed by SIGPIPE, as shells report it.
_BROKEN_PIPE = 141
_INTERRUPTED = 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``lash-machine`` with ``argv`` (default: ``sys.argv[1:]``);
    return the exit code. Usage errors exit through ``SystemExit(2)``."""
    # Stored text may hold characters the terminal's encoding lacks: print
    # them escaped rather than crash half-way through a listing.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "demo":
        if args.dsn is not None:
            parser.error("demo runs on a new SQLite file: give --db PATH, not --dsn")
    elif args.db is not None and args.dsn is not None:
        parser.error("give --db or --dsn, not both")
    elif args.db is None and args.dsn is None:
        parser.error(
            f"{args.command}: say where the sessions are: --db PATH (SQLite) or --dsn URL"
            " (PostgreSQL)"
        )
    dsn: str | None = getattr(args, "dsn", None)
    try:
        code: int = args.run(args)
    except CliError as error:
        return _fail(error.message, error.code, dsn)
    except LeaseHeld as error:
        message = (
            f"session {printable(error.session_id)!r} is in use: {printable(error.owner)!r}"
            f" holds its lease until {iso_time(error.expires_at)}; retry once it parks"
            " or the lease expires"
        )
        return _fail(message, Exit.CONFLICT, dsn)
    except HeadRevisionConflict as error:
        return _fail(str(error), Exit.CONFLICT, dsn)
    except CorruptRow as error:
        hint = " (`lash-machine check` scans the whole database)"
        return _fail(str(error) + hint, Exit.STORE, dsn)
    except SessionNotFound as error:  # deleted (or expired) meanwhile, say
        return _fail(str(error), Exit.NOT_FOUND, dsn)
    except StoreError as error:  # unreachable, foreign schema, I/O: the store said what
        return _fail(str(error), Exit.STORE, dsn)
    except WireError as error:
        return _fail(str(error), Exit.BAD_INPUT, dsn)
    except KeyboardInterrupt:
        print("lash-machine: interrupted", file=sys.stderr)
        return _INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head`): not an error worth a traceback.
        # Point stdout at devnull so the interpreter's final flush is quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return _BROKEN_PIPE
    return code


def _fail(message: str, code: Exit, dsn: str | None) -> int:
    # Whatever the message quotes (a driver's text may hold the password
    # in any spelling), the password never reaches the terminal.
    shown = message if dsn is None else scrub(message, dsn)
    print(f"lash-machine: error: {shown}", file=sys.stderr)
    return int(code)
