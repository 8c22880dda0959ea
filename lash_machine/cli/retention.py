"""How long sessions are kept: ``delete``, ``purge`` and ``expire``.

A delete is for good, and it stays so: the store keeps a marker of the id,
so a worker still holding a handle of the session cannot write it, nor
make it again, until ``purge`` forgets markers old enough to trust that
no such worker is left. ``expire`` deletes the sessions nobody committed
to for a while, the same way, and never one a worker holds the lease of.
"""

from __future__ import annotations

import argparse
import json
import time

from ..errors import SessionDeleted
from ..persisted import ExpireReport, FullGraph, SessionInfo
from ..stores.base import SessionStore
from .exits import CliError, Exit
from .lookup import exclusive, plural, target_of
from .progress import Progress
from .render import iso_time, printable
from .target import open_store

__all__ = ["delete", "expire", "purge"]


def delete(args: argparse.Namespace) -> int:
    """``delete SESSION``: remove the session and all its rows, leaving a
    marker of its id, then read it back to confirm nothing is left.

    The whole id is asked for, never a prefix: a delete cannot be undone.
    Refused (exit 6) while a worker holds the session's lease; the delete
    itself runs under the lease, so no leased worker starts meanwhile. A
    worker without leases that commits afterwards is refused by the store
    (:class:`~lash_machine.errors.SessionDeleted`); one whose commit
    landed first has its nodes deleted with the rest."""
    target = target_of(args)
    session_id = args.session
    sid = printable(session_id)
    with open_store(target) as store:
        # A deleted one raises SessionDeleted (exit 3, "was deleted").
        if store.session_stamp(session_id) is None:
            raise CliError(
                _missing(store.list_sessions(), session_id, target.label), Exit.NOT_FOUND
            )
        with exclusive(store, session_id):
            stored = store.load_graph(session_id, FullGraph())
            removed = store.delete_session(session_id)
        before = [] if stored is None else [node.node_id for node in stored.nodes]
        _confirm_deleted(store, session_id, before)
    if not removed or stored is None:
        # Another delete (or an expiry) was first: nothing is left all the same.
        print(f"session {sid} was deleted meanwhile by someone else: nothing is left")
        return Exit.OK
    print(
        f"deleted session {sid} ({plural(len(stored.nodes), 'node')}); nothing is left but its"
        " deletion marker, which refuses any later write of the id until `lash-machine purge`"
        " forgets it"
    )
    return Exit.OK


def _confirm_deleted(store: SessionStore, session_id: str, node_ids: list[str]) -> None:
    """Read the session back: only its deletion marker may answer, and none
    of the nodes it had (the first and the last are asked for)."""
    sid = printable(session_id)
    try:
        left = store.session_stamp(session_id)
    except SessionDeleted:
        pass  # the marker: as it should be
    else:
        what = "keeps no deletion marker" if left is None else "still holds the session"
        raise CliError(f"session {sid}: after the delete the store {what}", Exit.STORE)
    for node_id in {*node_ids[:1], *node_ids[-1:]}:
        try:
            found = store.load_node(session_id, node_id)
        except SessionDeleted:
            found = None
        if found is not None:
            raise CliError(
                f"session {sid}: after the delete the store still holds node {printable(node_id)}",
                Exit.STORE,
            )


def _missing(infos: list[SessionInfo], session_id: str, label: str) -> str:
    message = f"no session {printable(session_id)!r} in {label}"
    starts = [info.session_id for info in infos if info.session_id.startswith(session_id)]
    if not session_id or not starts:
        return message
    hint = f"did you mean {printable(starts[0])}?" if len(starts) == 1 else ""
    hint = hint or f"{len(starts)} session ids start so"
    return f"{message} (delete takes a whole session id, not a prefix: {hint})"


def purge(args: argparse.Namespace) -> int:
    """``purge --older-than AGE``: forget the deletion markers older than
    AGE (a duration back from now, or an ISO 8601 time). Their ids may be
    used again: a worker still holding a handle of one could then write it
    anew, so give the markers longer than any worker may live."""
    cutoff: float = args.older_than
    with open_store(target_of(args)) as store:
        forgotten = store.purge_deleted(cutoff)
    markers = plural(forgotten, "deletion marker")
    print(
        f"purged {markers} older than {iso_time(cutoff)}"
        + (": those session ids may be used again" if forgotten else "")
    )
    return Exit.OK


def expire(args: argparse.Namespace) -> int:
    """``expire --idle DURATION [--dry-run] [--json]``: delete every session
    not committed to for DURATION (as ``delete`` does, marker and all),
    except one whose lease a worker holds; with ``--dry-run``, only report
    them. The store works in write transactions of ``--batch-size``
    sessions, so a big database is never locked for long; on a terminal,
    stderr shows the count so far."""
    idle: float = args.idle
    now = time.time()
    progress = Progress("expire")
    verb = "to expire" if args.dry_run else "expired"

    def heard(report: ExpireReport) -> None:
        progress.say(f"{plural(len(report.expired), 'session')} {verb} so far")

    try:
        with open_store(target_of(args)) as store:
            progress.say("looking for idle sessions")
            report = store.expire(
                idle, now=now, dry_run=args.dry_run, batch_size=args.batch_size, progress=heard
            )
    finally:
        progress.done()
    cutoff = now - idle
    if args.json:
        print(
            json.dumps(
                {
                    "dry_run": report.dry_run,
                    "idle_for": idle,
                    "cutoff": cutoff,
                    "expired": list(report.expired),
                    "nodes_removed": report.nodes_removed,
                    "kept_leased": report.kept_leased,
                    "longest_batch": report.longest_batch,
                },
                indent=2,
            )
        )
        return Exit.OK
    sessions = plural(len(report.expired), "session")
    nodes = plural(report.nodes_removed, "node")
    since = f"not committed to since {iso_time(cutoff)}"
    if args.dry_run:
        print(f"dry run: would expire {sessions} ({nodes}) {since}; nothing removed")
    else:
        print(f"expired {sessions} ({nodes}) {since}")
    for session_id in report.expired:
        print(f"  {printable(session_id)}")
    if report.kept_leased:
        idle_kept = plural(report.kept_leased, "idle session")
        print(f"kept {idle_kept} whose lease a worker holds")
    return Exit.OK
