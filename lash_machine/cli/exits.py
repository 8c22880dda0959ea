"""Exit codes of the ``lash-machine`` command, and the error that carries one.

The codes are part of the command's interface (scripts branch on them), so
they live in one table that ``--help`` prints.
"""

from __future__ import annotations

import enum

__all__ = ["EXIT_CODES_HELP", "EXIT_CODES_POINTER", "CliError", "Exit"]


class Exit(enum.IntEnum):
    """What a ``lash-machine`` run ended with."""

    OK = 0
    PROBLEMS = 1
    USAGE = 2
    NOT_FOUND = 3
    STORE = 4
    BAD_INPUT = 5
    CONFLICT = 6


#: The epilog of ``lash-machine --help``.
EXIT_CODES_HELP = """\
exit codes:
  0  success
  1  problems found: check found a session that needs repair or a corrupt
     row; heal without --apply has repairs to make; prune refused a graph
     that needs repair
  2  usage error (bad or missing arguments)
  3  not found: the database file, the lash-machine tables, the session
     (or one deleted: its marker stays until purge), a node (copy --at), or
     the file to import
  4  store or I/O error: the database is unreachable or unusable (not a
     lash-machine database, another schema version: `lash-machine migrate`
     upgrades an older one, a corrupt row, ...), or a file cannot be read
     or written
  5  bad input: the file to import is not a valid wire-format session
  6  conflict: the session already exists (import, copy --as) or was
     deleted (its id is kept until purge); another writer committed first
     or holds the session's lease (heal --apply, prune, delete); the
     demo's --db file exists
"""

#: The epilog of each command's ``--help``.
EXIT_CODES_POINTER = """\
exit codes: 0 ok, 1 problems found, 2 usage, 3 not found, 4 store or I/O
error, 5 bad input, 6 conflict (`lash-machine --help` says more)
"""


class CliError(Exception):
    """An expected failure: ``main`` prints ``message`` (one line, no
    traceback) and exits with ``code``."""

    def __init__(self, message: str, code: Exit) -> None:
        self.message = message
        self.code = code
        super().__init__(message)
