"""Moving sessions between databases: ``export`` and ``import``, in the
wire format (:mod:`lash_machine.wire`), one ``StoredSession`` message."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from .. import wire
from ..errors import HeadRevisionConflict, WireError
from ..graph import heal_graph
from ..persisted import GraphDelta, SessionCommit, StoredSession
from .exits import CliError, Exit
from .lookup import find_session, plural, stored_graph, target_of
from .render import printable
from .target import open_store

__all__ = ["export", "import_"]


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
        f"exported session {printable(stored.session_id)} ({plural(len(stored.nodes), 'node')},"
        f" head revision {stored.head_revision}) to {args.output}"
    )
    return Exit.OK


def _read_input(name: str, read_stdin: Callable[[], str]) -> str:
    """The text of the file ``name`` (``-``: stdin)."""
    label = "stdin" if name == "-" else name
    try:
        if name == "-":
            return read_stdin()
        with open(name, encoding="utf-8") as file:
            return file.read()
    except FileNotFoundError:
        raise CliError(f"{name}: no such file", Exit.NOT_FOUND) from None
    except UnicodeDecodeError as exc:
        raise CliError(f"{label}: not UTF-8 text ({exc.reason})", Exit.BAD_INPUT) from None
    except OSError as exc:
        raise CliError(f"cannot read {label}: {exc.strerror}", Exit.STORE) from None


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
        f"imported session {sid} ({plural(len(stored.nodes), 'node')}) at head revision {head}"
        f" (it was exported at head revision {stored.head_revision})"
    )
    if not heal_graph(stored_graph(stored))[1].is_clean:
        print(f"the imported graph needs repair: see `lash-machine heal {sid}`")
    return Exit.OK
