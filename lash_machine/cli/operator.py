"""The operator commands: look at stored sessions and look after them.

Each command opens the store named by ``--db``/``--dsn``, works on it
directly (no session is opened through the machine: an operator reads what
is stored, as it is stored), prints, and returns an exit code. Expected
failures raise :class:`~.exits.CliError`; store errors propagate to
``main``, which turns them into one-line messages.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import sys
from collections.abc import Callable, Iterator

import attrs

from .. import wire
from ..errors import CorruptRow, HeadRevisionConflict, WireError
from ..graph import SessionGraph, heal_graph
from ..persisted import FullGraph, GraphDelta, Reparent, SessionCommit, StoredSession
from ..stores.base import SessionStore
from ..stores.leases import LeaseStore
from .exits import CliError, Exit
from .render import (
    glyphs_for,
    iso_time,
    node_label,
    printable,
    repair_lines,
    short_ids,
    table,
    tree_lines,
)
from .target import Target, open_store

__all__ = [
    "check",
    "export",
    "heal",
    "import_",
    "orphans",
    "prune",
    "sessions",
    "show",
    "target_of",
    "vacuum",
]


def target_of(args: argparse.Namespace) -> Target:
    """The database the command line names (``main`` checked there is one)."""
    return Target(db=args.db, dsn=args.dsn)


def _width() -> int:
    # Piped output is not squeezed to a terminal's width: 100 columns.
    return max(shutil.get_terminal_size((100, 24)).columns, 60)


def find_session(store: SessionStore, target: Target, wanted: str) -> StoredSession:
    """The stored session ``wanted`` (full graph): by its id, or by a prefix
    that names exactly one session (like git's short hashes)."""
    stored = store.load_graph(wanted, FullGraph())
    if stored is not None:
        return stored
    matches = (
        []
        if not wanted
        else [
            info.session_id for info in store.list_sessions() if info.session_id.startswith(wanted)
        ]
    )
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


def _graph(stored: StoredSession) -> SessionGraph:
    return SessionGraph.from_nodes(stored.nodes, stored.leaf_id)


@contextlib.contextmanager
def _exclusive(store: SessionStore, session_id: str) -> Iterator[None]:
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


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


# ---- reading ---------------------------------------------------------------------


def sessions(args: argparse.Namespace) -> int:
    """``sessions``: every stored session with its head revision, live node
    count and last update (``--json`` for scripts)."""
    target = target_of(args)
    with open_store(target) as store:
        infos = store.list_sessions()
    if args.json:
        print(json.dumps([attrs.asdict(info) for info in infos], indent=2))
        return Exit.OK
    if not infos:
        print(f"no sessions in {target.label}")
        return Exit.OK
    rows = [
        (printable(i.session_id), str(i.head_revision), str(i.node_count), iso_time(i.updated_at))
        for i in infos
    ]
    for line in table(("SESSION", "HEAD", "NODES", "UPDATED (UTC)"), rows, right={1, 2}):
        print(line)
    return Exit.OK


def show(args: argparse.Namespace) -> int:
    """``show SESSION``: the session's graph as a tree, the active path and
    the orphans marked."""
    target = target_of(args)
    with open_store(target) as store:
        stored = find_session(store, target, args.session)
        lease = store.current_lease(stored.session_id) if isinstance(store, LeaseStore) else None
    graph = _graph(stored)
    on_path = len(graph.active_path())
    policy = stored.policy
    model = printable(policy.model.id) + (
        f" (provider {printable(policy.provider_id)})" if policy.provider_id else ""
    )
    print(f"session {printable(stored.session_id)}")
    print(
        f"head revision {stored.head_revision}, {_plural(len(graph), 'node')}"
        f" ({on_path} on the active path, {_plural(len(graph) - on_path, 'orphan')}),"
        f" model {model}"
    )
    if lease is not None:
        print(
            f"in use: {printable(lease.owner)} holds its lease until {iso_time(lease.expires_at)}"
        )
    print()
    if not len(graph):
        print("(no nodes)")
        return Exit.OK
    glyphs = glyphs_for(sys.stdout)
    print("* active path   o orphan (off the active path)")
    for line in tree_lines(graph, width=_width(), glyphs=glyphs, full_ids=args.full_ids):
        print(line)
    _, report = heal_graph(graph)
    if not report.is_clean:
        print()
        print(
            f"this graph needs repair ({_plural(len(repair_lines(report)), 'problem')}):"
            f" see `lash-machine heal {printable(stored.session_id)}`"
        )
    return Exit.OK


def orphans(args: argparse.Namespace) -> int:
    """``orphans SESSION``: the nodes off the active path."""
    target = target_of(args)
    with open_store(target) as store:
        stored = find_session(store, target, args.session)
    graph = _graph(stored)
    found = [node for node_id in graph.orphan_ids() if (node := graph.get(node_id)) is not None]
    if args.json:
        print(json.dumps([wire.unstructure(node) for node in found], indent=2))
        return Exit.OK
    sid = printable(stored.session_id)
    if not found:
        print(f"session {sid}: no orphans")
        return Exit.OK
    print(f"session {sid}: {_plural(len(found), 'orphan')} (off the active path)")
    for node in found:
        print(f"  {printable(node.node_id)}  {node_label(node)}")
    return Exit.OK


# ---- maintenance -----------------------------------------------------------------


def prune(args: argparse.Namespace) -> int:
    """``prune SESSION``: tombstone every orphan (``vacuum`` then removes
    them for good). Refused while the graph needs repair (which nodes are
    orphans is only meaningful on a well-formed graph) and while a worker
    holds the session's lease (tombstones are not fenced: a worker could
    branch back onto a node being hidden)."""
    target = target_of(args)
    with open_store(target) as store:
        session_id = find_session(store, target, args.session).session_id
        sid = printable(session_id)
        # Read under the lease: no commit can move the leaf between the
        # read and the tombstones.
        with _exclusive(store, session_id):
            graph = _graph(find_session(store, target, session_id))
            if not heal_graph(graph)[1].is_clean:
                raise CliError(
                    f"session {sid} needs repair before pruning:"
                    f" run `lash-machine heal {sid} --apply` first",
                    Exit.PROBLEMS,
                )
            orphan_ids = graph.orphan_ids()
            hidden = store.tombstone_nodes(session_id, orphan_ids) if orphan_ids else 0
    if not orphan_ids:
        print(f"session {sid}: no orphans to prune")
        return Exit.OK
    print(
        f"session {sid}: tombstoned {_plural(hidden, 'orphan')}"
        " (hidden from every read; `lash-machine vacuum` removes them for good)"
    )
    return Exit.OK


def vacuum(args: argparse.Namespace) -> int:
    """``vacuum``: physically remove every tombstoned node of the database."""
    with open_store(target_of(args)) as store:
        report = store.vacuum()
    removed = _plural(report.nodes_removed, "tombstoned node")
    if report.intents_removed:
        removed += f" and {_plural(report.intents_removed, 'attachment intent')}"
    print(f"vacuum: removed {removed}")
    return Exit.OK


@attrs.frozen
class _Checked:
    session_id: str
    status: str  # "ok", "needs_repair" or "corrupt"
    nodes: int | None
    problems: tuple[str, ...]


def _check_one(store: SessionStore, session_id: str) -> _Checked | None:
    try:
        stored = store.load_graph(session_id, FullGraph())
    except CorruptRow as error:
        return _Checked(session_id, "corrupt", None, (str(error),))
    if stored is None:  # deleted since it was listed
        return None
    graph = _graph(stored)
    report = heal_graph(graph)[1]
    if report.is_clean:
        return _Checked(session_id, "ok", len(graph), ())
    return _Checked(session_id, "needs_repair", len(graph), tuple(repair_lines(report)))


def check(args: argparse.Namespace) -> int:
    """``check [SESSION]``: read every session (or one) in full, decode every
    row and heal every graph in memory; exit 1 when any needs repair or
    holds a corrupt row. Nothing is written."""
    target = target_of(args)
    with open_store(target) as store:
        if args.session is not None:
            try:
                session_ids = [find_session(store, target, args.session).session_id]
            except CorruptRow as error:
                session_ids = [error.session_id]
        else:
            session_ids = [info.session_id for info in store.list_sessions()]
        results = [r for sid in session_ids if (r := _check_one(store, sid)) is not None]
    bad = [r for r in results if r.status != "ok"]
    if args.json:
        print(json.dumps([attrs.asdict(r) for r in results], indent=2))
        return Exit.PROBLEMS if bad else Exit.OK
    labels = {"ok": "ok", "needs_repair": "REPAIR", "corrupt": "CORRUPT"}
    for r in results:
        nodes = "" if r.nodes is None else _plural(r.nodes, "node")
        print(f"{labels[r.status]:<8} {printable(r.session_id)}  {nodes}".rstrip())
        for problem in r.problems:
            print(f"         {printable(problem)}")
    summary = f"checked {_plural(len(results), 'session')}"
    if not bad:
        print(f"{summary}: all ok")
        return Exit.OK
    repair = sum(r.status == "needs_repair" for r in results)
    corrupt = len(bad) - repair
    verb = "needs" if repair == 1 else "need"
    print(f"{summary}: {repair} {verb} repair, {corrupt} with corrupt rows")
    if repair:
        print("repair a graph with `lash-machine heal SESSION --apply`")
    if corrupt:
        print("a corrupt row cannot be healed: fix or delete it by hand, or import an export")
    return Exit.PROBLEMS


def heal(args: argparse.Namespace) -> int:
    """``heal SESSION [--apply]``: show the repairs healing would make to the
    stored graph; with ``--apply``, commit them (a compare-and-set on the
    head revision, so a concurrent writer is never overwritten)."""
    target = target_of(args)
    with open_store(target) as store:
        stored = find_session(store, target, args.session)
        sid = printable(stored.session_id)
        healed, report = heal_graph(_graph(stored))
        lines = repair_lines(report, short_ids(node.node_id for node in stored.nodes))
        if not lines:
            print(f"session {sid}: nothing to repair")
            return Exit.OK
        repairs = _plural(len(lines), "repair")
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


# ---- moving sessions -------------------------------------------------------------


def export(args: argparse.Namespace) -> int:
    """``export SESSION [-o FILE]``: the stored session (full graph) as one
    wire-format JSON message, to stdout or a file."""
    target = target_of(args)
    with open_store(target) as store:
        stored = find_session(store, target, args.session)
    text = wire.dumps(stored) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return Exit.OK
    try:
        with open(args.output, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        raise CliError(f"cannot write {args.output}: {exc.strerror}", Exit.STORE) from None
    print(
        f"exported session {printable(stored.session_id)} ({_plural(len(stored.nodes), 'node')},"
        f" head revision {stored.head_revision}) to {args.output}"
    )
    return Exit.OK


def _read_input(name: str, read_stdin: Callable[[], str]) -> str:
    if name == "-":
        return read_stdin()
    try:
        with open(name, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        raise CliError(f"{name}: no such file", Exit.NOT_FOUND) from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{name}: not UTF-8 text ({exc.reason})", Exit.BAD_INPUT) from None
    except OSError as exc:
        raise CliError(f"cannot read {name}: {exc.strerror}", Exit.STORE) from None


def import_(args: argparse.Namespace) -> int:
    """``import FILE``: create a session from a wire-format export, in one
    first commit. Refused when the session already exists (the commit's
    compare-and-set decides, so two imports cannot both win)."""
    target = target_of(args)
    name = "stdin" if args.file == "-" else args.file
    text = _read_input(args.file, sys.stdin.read)
    try:
        stored = wire.loads(text, StoredSession)
    except WireError as error:
        raise CliError(
            f"{name}: not a wire-format session export: {error}", Exit.BAD_INPUT
        ) from None
    sid = printable(stored.session_id)
    if not stored.session_id:
        raise CliError(f"{name}: the session id is empty", Exit.BAD_INPUT)
    seen: set[str] = set()
    for node in stored.nodes:
        if node.node_id in seen:
            raise CliError(
                f"{name}: node {printable(node.node_id)!r} appears twice", Exit.BAD_INPUT
            )
        seen.add(node.node_id)
    commit = SessionCommit(
        session_id=stored.session_id,
        expected_head=None,
        policy=stored.policy,
        frames=stored.frames,
        current_frame_id=stored.current_frame_id,
        delta=GraphDelta(leaf_id=stored.leaf_id, appended=stored.nodes),
        tool_snapshot=stored.tool_snapshot,
        plugin_snapshot=stored.plugin_snapshot,
        host_checkpoint=stored.host_checkpoint,
    )
    hint = "import --create makes a new one"
    with open_store(target, create=args.create, create_hint=hint) as store:
        try:
            head = store.commit(commit)
        except HeadRevisionConflict:
            raise CliError(
                f"session {sid} already exists in {target.label}: nothing imported", Exit.CONFLICT
            ) from None
    print(
        f"imported session {sid} ({_plural(len(stored.nodes), 'node')}) at head revision {head}"
        f" (it was exported at head revision {stored.head_revision})"
    )
    if not heal_graph(_graph(stored))[1].is_clean:
        print(f"the imported graph needs repair: see `lash-machine heal {sid}`")
    return Exit.OK
