"""The maintenance commands: ``prune``, ``vacuum`` and ``heal``.

Each writes through the store's own guarded operations: heal's repair is a
commit with compare-and-set on the head revision; prune tombstones while
holding the session's lease. Neither ever deletes a row (only ``vacuum``
does, and only rows already tombstoned).
"""

from __future__ import annotations

import argparse

from ..errors import HeadRevisionConflict, TombstoneRefused
from ..graph import SessionGraph, heal_graph
from ..persisted import GraphDelta, Reparent, SessionCommit
from .exits import CliError, Exit
from .lookup import exclusive, find_session, plural, stored_graph, target_of
from .progress import Progress
from .render import printable, repair_lines, short_ids
from .target import open_store

__all__ = ["heal", "prune", "vacuum"]


def prune(args: argparse.Namespace) -> int:
    """``prune SESSION``: tombstone every orphan that is not pinned nor
    above a pinned node (``vacuum`` then removes them for good). Refused
    while the graph needs repair (which nodes are orphans is only
    meaningful on a well-formed graph) and while a worker
    holds the session's lease (tombstones are not fenced: a worker could
    branch back onto a node being hidden). A commit that was already in
    flight when the lease was claimed can still land between the read and
    the tombstone; the store then refuses the tombstone (it never hides a
    node the stored graph still needs) and prune reports a conflict."""
    target = target_of(args)
    with open_store(target) as store:
        session_id = find_session(store, target, args.session).session_id
        sid = printable(session_id)
        # Read under the lease: no commit can move the leaf between the
        # read and the tombstones.
        with exclusive(store, session_id):
            stored = find_session(store, target, session_id)
            graph = stored_graph(stored)
            if not heal_graph(graph)[1].is_clean:
                raise CliError(
                    f"session {sid} needs repair before pruning:"
                    f" run `lash-machine heal {sid} --apply` first",
                    Exit.PROBLEMS,
                )
            orphan_ids = _prunable(graph, stored.pinned)
            try:
                hidden = store.tombstone_nodes(session_id, orphan_ids) if orphan_ids else 0
            except TombstoneRefused:
                raise CliError(
                    f"session {sid} changed while pruning; run prune again", Exit.CONFLICT
                ) from None
    if not orphan_ids:
        print(f"session {sid}: no orphans to prune")
        return Exit.OK
    print(
        f"session {sid}: tombstoned {plural(hidden, 'orphan')}"
        " (hidden from every read; `lash-machine vacuum` removes them for good)"
    )
    return Exit.OK


def _prunable(graph: SessionGraph, pinned: tuple[str, ...]) -> tuple[str, ...]:
    """The orphans prune hides: a pinned node stays, and so does every
    ancestor of one (the store refuses to hide them, so asking would fail
    the whole prune; a compaction pins what it replaced)."""
    keep: set[str] = set()
    for node_id in pinned:
        current: str | None = node_id
        while current is not None and current not in keep:
            keep.add(current)
            node = graph.get(current)
            current = None if node is None else node.parent_id
    return tuple(node_id for node_id in graph.orphan_ids() if node_id not in keep)


def vacuum(args: argparse.Namespace) -> int:
    """``vacuum``: physically remove every tombstoned node of the database."""
    progress = Progress("vacuum")
    try:
        with open_store(target_of(args)) as store:
            progress.say("removing tombstoned nodes")
            report = store.vacuum()
    finally:
        progress.done()
    removed = plural(report.nodes_removed, "tombstoned node")
    if report.intents_removed:
        removed += f" and {plural(report.intents_removed, 'attachment intent')}"
    print(f"vacuum: removed {removed}")
    return Exit.OK


def heal(args: argparse.Namespace) -> int:
    """``heal SESSION [--apply]``: show the repairs healing would make to the
    stored graph; with ``--apply``, commit them (a compare-and-set on the
    head revision, so a concurrent writer is never overwritten)."""
    target = target_of(args)
    with open_store(target) as store:
        stored = find_session(store, target, args.session)
        sid = printable(stored.session_id)
        healed, report = heal_graph(stored_graph(stored))
        lines = repair_lines(report, short_ids(node.node_id for node in stored.nodes))
        if not lines:
            print(f"session {sid}: nothing to repair")
            return Exit.OK
        repairs = plural(len(lines), "repair")
        print(f"session {sid} at head revision {stored.head_revision}: {repairs}")
        for line in lines:
            print(f"  {line}")
        if not args.apply:
            print("dry run: nothing written; run again with --apply to commit these repairs")
            return Exit.PROBLEMS
        if report.duplicates_dropped:
            # A commit cannot drop a stored row; SQL stores never hold duplicates.
            raise CliError(
                f"session {sid}: duplicate node rows cannot be repaired by a commit", Exit.STORE
            )
        commit = SessionCommit(
            session_id=stored.session_id,
            expected_head=stored.head_revision,
            policy=stored.policy,
            frames=stored.frames,
            current_frame_id=stored.current_frame_id,
            delta=GraphDelta(
                leaf_id=healed.leaf_id,
                reparented=tuple(Reparent(cut.node_id, None) for cut in report.parents_cut),
            ),
            tool_snapshot=stored.tool_snapshot,
            plugin_snapshot=stored.plugin_snapshot,
            host_checkpoint=stored.host_checkpoint,
        )
        try:
            head = store.commit(commit)
        except HeadRevisionConflict as error:
            raise CliError(
                f"session {sid}: another writer committed first (head revision is now"
                f" {error.actual}); nothing was written: run heal again",
                Exit.CONFLICT,
            ) from None
    print(f"committed the repairs: head revision {stored.head_revision} -> {head}")
    return Exit.OK
