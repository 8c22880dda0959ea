"""What every operator command starts with: the database the command line
names, the session it asks for, and (for writes outside the machine) the
session's execution lease."""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
from collections.abc import Iterator

from ..graph import SessionGraph
from ..persisted import FullGraph, StoredSession
from ..stores.base import SessionStore
from ..stores.leases import LeaseStore
from .exits import CliError, Exit
from .render import printable
from .target import Target

__all__ = ["exclusive", "find_session", "plural", "stored_graph", "target_of", "width"]


def target_of(args: argparse.Namespace) -> Target:
    """The database the command line names (``main`` checked there is one)."""
    return Target(db=args.db, dsn=args.dsn)


def width() -> int:
    """How wide lines may be: the terminal's width, at least 60 columns."""
    # Piped output is not squeezed to a terminal's width: 100 columns.
    return max(shutil.get_terminal_size((100, 24)).columns, 60)


def find_session(store: SessionStore, target: Target, wanted: str) -> StoredSession:
    """The stored session ``wanted`` (full graph): by its id, or by a prefix
    that names exactly one session (like git's short hashes)."""
    stored = store.load_graph(wanted, FullGraph())
    if stored is not None:
        return stored
    matches: list[str] = []
    if wanted:  # an empty prefix would name every session
        matches = [i.session_id for i in store.list_sessions() if i.session_id.startswith(wanted)]
    if len(matches) > 1:
        shown = ", ".join(printable(m) for m in matches[:5]) + (", ..." if len(matches) > 5 else "")
        raise CliError(
            f"{printable(wanted)!r} is the start of {len(matches)} session ids ({shown}):"
            " give more of it",
            Exit.NOT_FOUND,
        )
    stored = store.load_graph(matches[0], FullGraph()) if matches else None
    if stored is None:
        raise CliError(f"no session {printable(wanted)!r} in {target.label}", Exit.NOT_FOUND)
    return stored


def stored_graph(stored: StoredSession) -> SessionGraph:
    return SessionGraph.from_nodes(stored.nodes, stored.leaf_id)


@contextlib.contextmanager
def exclusive(store: SessionStore, session_id: str) -> Iterator[None]:
    """Hold the session's execution lease for the block, when the store
    grants leases: workers that use leases, and unfenced commits, are kept
    out meanwhile. Raises :class:`~lash_machine.errors.LeaseHeld` when a
    worker holds the session."""
    if not isinstance(store, LeaseStore):
        yield
        return
    owner = f"lash-machine operator (pid {os.getpid()} on {socket.gethostname()})"
    lease = store.claim_lease(session_id, owner, ttl=60.0)
    try:
        yield
    finally:
        store.release_lease(lease)


def plural(count: int, noun: str) -> str:
    """``1 node``, ``2 nodes``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
