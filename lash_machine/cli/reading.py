"""The reading commands: ``sessions``, ``show``, ``orphans`` and ``check``.

They work on the store directly, never through the machine: an operator
looks at what is stored, as it is stored (a graph that needs repair is
shown and reported as it is, not healed first). Nothing is written.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

import attrs

from .. import wire
from ..checks import GraphCheck
from ..errors import CorruptRow
from ..graph import SessionGraph, heal_graph
from ..persisted import FullGraph, StoredSession
from ..stores.base import SessionStore
from ..stores.leases import Lease, LeaseStore
from .exits import Exit
from .lookup import find_session, plural, stored_graph, target_of, width
from .marks import Marks, marks_of
from .progress import Progress
from .render import (
    glyphs_for,
    iso_time,
    legend,
    node_label,
    printable,
    repair_lines,
    short_ids,
    table,
    tree_lines,
)
from .target import open_store

__all__ = ["check", "orphans", "sessions", "show", "show_json"]


def sessions(args: argparse.Namespace) -> int:
    """``sessions [--since TIME] [--limit N]``: the stored sessions, by id,
    with their head revision, live node count and last update (``--json``
    for scripts). ``--since`` keeps those updated at or after a moment;
    ``--limit`` the first N of what is left."""
    target = target_of(args)
    with open_store(target) as store:
        infos = store.list_sessions()
    if args.since is not None:
        infos = [info for info in infos if info.updated_at >= args.since]
    hidden = 0
    if args.limit is not None and len(infos) > args.limit:
        hidden = len(infos) - args.limit
        infos = infos[: args.limit]
    if args.json:
        print(json.dumps([attrs.asdict(info) for info in infos], indent=2))
        return Exit.OK
    if not infos:
        since = "" if args.since is None else f" updated since {iso_time(args.since)}"
        print(f"no sessions{since} in {target.label}")
        return Exit.OK
    rows = [
        (printable(i.session_id), str(i.head_revision), str(i.node_count), iso_time(i.updated_at))
        for i in infos
    ]
    for line in table(("SESSION", "HEAD", "NODES", "UPDATED (UTC)"), rows, right={1, 2}):
        print(line)
    if hidden:
        print(f"... and {plural(hidden, 'more session')} (--limit {args.limit})")
    return Exit.OK


def show(args: argparse.Namespace) -> int:
    """``show SESSION``: the session's graph as a tree, the active path and
    the orphans marked (``--json``: see :func:`show_json`)."""
    target = target_of(args)
    with open_store(target) as store:
        stored = find_session(store, target, args.session)
        lease = store.current_lease(stored.session_id) if isinstance(store, LeaseStore) else None
    graph = stored_graph(stored)
    if args.json:
        print(json.dumps(show_json(stored, graph, lease), indent=2))
        return Exit.OK
    marks = marks_of(graph, stored.pinned)
    shorten = printable if args.full_ids else short_ids(node.node_id for node in graph)
    on_path = len(graph.active_path())
    policy = stored.policy
    model = printable(policy.model.id) + (
        f" (provider {printable(policy.provider_id)})" if policy.provider_id else ""
    )
    print(f"session {printable(stored.session_id)}")
    print(
        f"head revision {stored.head_revision}, {plural(len(graph), 'node')}"
        f" ({on_path} on the active path, {plural(len(graph) - on_path, 'orphan')}),"
        f" model {model}"
    )
    if stored.origin is not None:
        at = stored.origin.node_id
        where = "" if at is None else f" at node {printable(at)}"
        print(f"copied from session {printable(stored.origin.session_id)}{where}")
    for line in _pin_lines(graph, marks, shorten):
        print(line)
    if lease is not None:
        print(
            f"in use: {printable(lease.owner)} holds its lease until {iso_time(lease.expires_at)}"
        )
    print()
    if not len(graph):
        print("(no nodes)")
        return Exit.OK
    glyphs = glyphs_for(sys.stdout)
    print(legend(graph, marks))
    lines = tree_lines(graph, width=width(), glyphs=glyphs, full_ids=args.full_ids, marks=marks)
    for line in lines:
        print(line)
    _, report = heal_graph(graph)
    if not report.is_clean:
        print()
        print(
            f"this graph needs repair ({plural(len(repair_lines(report)), 'problem')}):"
            f" see `lash-machine heal {printable(stored.session_id)}`"
        )
    return Exit.OK


def _pin_lines(graph: SessionGraph, marks: Marks, shorten: Callable[[str], str]) -> list[str]:
    """What the header says of pins and compactions (nothing when none)."""
    lines = []
    if marks.pinned:
        pinned = [shorten(node.node_id) for node in graph if node.node_id in marks.pinned]
        kept = marks.kept_orphans(graph)
        line = f"pinned: {', '.join(pinned)}"
        if kept:
            line += f" (prune keeps {plural(len(kept), 'orphan')} for them)"
        lines.append(line)
    if marks.summaries:
        lines.append(
            f"compacted: {plural(len(marks.summaries), 'summary node')},"
            f" {plural(len(marks.compacted), 'original')} off the active path"
        )
    return lines


def show_json(stored: StoredSession, graph: SessionGraph, lease: Lease | None) -> dict[str, Any]:
    """What ``show --json`` prints: one object with ``session_id``,
    ``head_revision``, ``policy`` (as stored), ``current_frame_id``,
    ``leaf_id``, ``lease`` (``null`` or ``owner``, ``token`` and
    ``expires_at`` in seconds since the epoch), ``origin`` (``null``, or
    the ``session_id`` and ``node_id`` a copy was made from),
    ``active_path`` (node ids, root first), ``orphans`` (node ids off the
    active path), ``pinned`` (node ids), ``kept_orphans`` (the orphans a
    pin keeps from prune), ``summaries`` (one object per compaction:
    ``node_id``, ``through``, ``kept`` and ``replaces``, the ids of the
    stored path it replaced, root first), ``compacted`` (the replaced
    originals off the active path), ``repairs`` (one sentence per repair
    healing would make; empty for a sound graph) and ``nodes`` (every live
    node, as ``orphans --json`` prints them, without the orphans' marks)."""
    _, report = heal_graph(graph)
    marks = marks_of(graph, stored.pinned)
    origin = stored.origin
    return {
        "session_id": stored.session_id,
        "head_revision": stored.head_revision,
        "policy": wire.unstructure(stored.policy),
        "current_frame_id": stored.current_frame_id,
        "leaf_id": stored.leaf_id,
        "lease": None
        if lease is None
        else {"owner": lease.owner, "token": lease.token, "expires_at": lease.expires_at},
        "origin": None
        if origin is None
        else {"session_id": origin.session_id, "node_id": origin.node_id},
        "active_path": [node.node_id for node in graph.active_path()],
        "orphans": list(graph.orphan_ids()),
        "pinned": [node.node_id for node in graph if node.node_id in marks.pinned],
        "kept_orphans": list(marks.kept_orphans(graph)),
        "summaries": [
            {
                "node_id": c.summary_id,
                "through": c.through,
                "kept": c.kept,
                "replaces": list(c.replaced),
            }
            for c in marks.summaries.values()
        ],
        "compacted": [node.node_id for node in graph if node.node_id in marks.compacted],
        "repairs": repair_lines(report),
        "nodes": [wire.unstructure(node) for node in stored.nodes],
    }


def orphans(args: argparse.Namespace) -> int:
    """``orphans SESSION``: the nodes off the active path, each with what
    keeps it from prune (a pin on it, or on a node under it) and the
    summary that replaced it, when a compaction did."""
    target = target_of(args)
    with open_store(target) as store:
        stored = find_session(store, target, args.session)
    graph = stored_graph(stored)
    marks = marks_of(graph, stored.pinned)
    found = [node for node_id in graph.orphan_ids() if (node := graph.get(node_id)) is not None]
    if args.json:
        listed = [
            {
                **wire.unstructure(node),
                "pinned": node.node_id in marks.pinned,
                "kept_by_pin": marks.held.get(node.node_id),
                "compacted_into": marks.compacted.get(node.node_id),
            }
            for node in found
        ]
        print(json.dumps(listed, indent=2))
        return Exit.OK
    sid = printable(stored.session_id)
    if not found:
        print(f"session {sid}: no orphans")
        return Exit.OK
    print(f"session {sid}: {plural(len(found), 'orphan')} (off the active path)")
    for node in found:
        notes = _orphan_notes(node.node_id, marks)
        print(f"  {printable(node.node_id)}  {node_label(node)}{notes}")
    kept = marks.kept_orphans(graph)
    if kept:
        print(
            f"prune keeps {len(kept)} of them (a pin holds them) and tombstones"
            f" {len(found) - len(kept)}"
        )
    return Exit.OK


def _orphan_notes(node_id: str, marks: Marks) -> str:
    notes = []
    summary = marks.compacted.get(node_id)
    if summary is not None:
        notes.append(f"compacted into {printable(summary)}")
    pin = marks.held.get(node_id)
    if pin == node_id:
        notes.append("pinned: prune keeps it")
    elif pin is not None:
        notes.append(f"kept by the pin on {printable(pin)}")
    return f"  ({'; '.join(notes)})" if notes else ""


@attrs.frozen
class _Checked:
    session_id: str
    status: str  # "ok", "needs_repair", "fails_check" or "corrupt"
    nodes: int | None
    problems: tuple[str, ...]


def _check_one(
    store: SessionStore, session_id: str, checks: tuple[GraphCheck, ...]
) -> _Checked | None:
    try:
        stored = store.load_graph(session_id, FullGraph())
    except CorruptRow as error:
        return _Checked(session_id, "corrupt", None, (str(error),))
    if stored is None:  # deleted since it was listed
        return None
    graph = stored_graph(stored)
    healed, report = heal_graph(graph)
    # The checks see the path a driver would hand them: the healed one.
    path = healed.active_path() if checks else ()
    found = tuple(
        f"{problem.check}: {problem.message}"
        for check in checks
        for problem in check.problems(path)
    )
    if not report.is_clean:
        return _Checked(session_id, "needs_repair", len(graph), (*repair_lines(report), *found))
    if found:
        return _Checked(session_id, "fails_check", len(graph), found)
    return _Checked(session_id, "ok", len(graph), ())


def check(args: argparse.Namespace) -> int:
    """``check [SESSION] [--checks NAME,...]``: read every session (or one)
    in full, decode every row and heal every graph in memory, then run the
    content checks named on each healed active path; exit 1 when any needs
    repair, fails a check or holds a corrupt row. Nothing is written."""
    target = target_of(args)
    checks: tuple[GraphCheck, ...] = args.checks
    with open_store(target) as store:
        if args.session is not None:
            try:
                session_ids = [find_session(store, target, args.session).session_id]
            except CorruptRow as error:
                session_ids = [error.session_id]
        else:
            session_ids = [info.session_id for info in store.list_sessions()]
        progress = Progress("check")
        results = []
        try:
            for done, session_id in enumerate(session_ids):
                progress.count(done, len(session_ids), "sessions")
                checked = _check_one(store, session_id, checks)
                if checked is not None:
                    results.append(checked)
            progress.count(len(session_ids), len(session_ids), "sessions")
        finally:
            progress.done()
    bad = [r for r in results if r.status != "ok"]
    if args.json:
        print(json.dumps([attrs.asdict(r) for r in results], indent=2))
        return Exit.PROBLEMS if bad else Exit.OK
    labels = {"ok": "ok", "needs_repair": "REPAIR", "fails_check": "FAILS", "corrupt": "CORRUPT"}
    for r in results:
        nodes = "" if r.nodes is None else plural(r.nodes, "node")
        print(f"{labels[r.status]:<8} {printable(r.session_id)}  {nodes}".rstrip())
        for problem in r.problems:
            print(f"         {printable(problem)}")
    summary = f"checked {plural(len(results), 'session')}"
    if not bad:
        print(f"{summary}: all ok")
        return Exit.OK
    repair = sum(r.status == "needs_repair" for r in results)
    failing = sum(r.status == "fails_check" for r in results)
    corrupt = len(bad) - repair - failing
    verb = "needs" if repair == 1 else "need"
    fails = f", {failing} {'fails' if failing == 1 else 'fail'} a check" if checks else ""
    print(f"{summary}: {repair} {verb} repair{fails}, {corrupt} with corrupt rows")
    if repair:
        print("repair a graph with `lash-machine heal SESSION --apply`")
    if failing:
        print(
            "open or resume those sessions with a driver given the same checks"
            " (Driver(store, checks=[...])): it appends their repairs"
        )
    if corrupt:
        print("a corrupt row cannot be healed: fix or delete it by hand, or import an export")
    return Exit.PROBLEMS
