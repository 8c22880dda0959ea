"""Moving sessions: between databases with ``export`` and ``import``, in
the wire format (:mod:`lash_machine.wire`), one ``StoredSession`` message;
within one with ``copy``."""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import sys
import tempfile
import uuid
from collections.abc import Callable

from .. import wire
from ..content import id_problem, json_problem, node_problem, time_problem
from ..errors import HeadRevisionConflict, ParentTombstoned, SessionDeleted, WireError
from ..graph import heal_graph
from ..model import AgentFrame, SessionNode
from ..persisted import GraphDelta, SessionCommit, StoredSession
from .exits import CliError, Exit
from .lookup import find_session, plural, stored_graph, target_of
from .progress import Progress
from .render import printable
from .target import open_store

__all__ = ["copy", "export", "import_", "session_problem"]


def export(args: argparse.Namespace) -> int:
    """``export SESSION [-o FILE [--force]]``: the stored session (full
    graph) as one wire-format JSON message, to stdout or a file.

    A file is written whole or not at all (a temporary file in the same
    directory, renamed into place), and an existing one is replaced only
    with ``--force``."""
    target = target_of(args)
    if args.output is not None and not args.force:
        _refuse_existing(args.output)  # before the work; checked again at the end
    with open_store(target) as store:
        stored = find_session(store, target, args.session)
    text = wire.dumps(stored) + "\n"
    if args.output is None:
        sys.stdout.write(text)
        return Exit.OK
    _write_whole(args.output, text, replace=args.force)
    print(
        f"exported session {printable(stored.session_id)} ({plural(len(stored.nodes), 'node')},"
        f" head revision {stored.head_revision}) to {args.output}"
    )
    return Exit.OK


def _write_whole(path: str, text: str, *, replace: bool) -> None:
    """Write ``text`` to ``path`` atomically: readers see the old file (or
    none) until the new one is complete. Without ``replace`` an existing
    ``path`` is a :class:`CliError` (exit 6), checked atomically too."""
    if not replace:
        _refuse_existing(path)
    directory = os.path.dirname(path) or "."
    try:
        fd, temporary = tempfile.mkstemp(
            dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
        )
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}", Exit.STORE) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            # mkstemp makes the file private; give it the mode open() would.
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(temporary, 0o666 & ~umask)
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            _link_new(temporary, path)
    except FileExistsError:
        raise CliError(f"{path} exists: give --force to replace it", Exit.CONFLICT) from None
    except OSError as exc:
        raise CliError(f"cannot write {path}: {exc.strerror}", Exit.STORE) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)


def _refuse_existing(path: str) -> None:
    if os.path.lexists(path):
        raise CliError(f"{path} exists: give --force to replace it", Exit.CONFLICT)


def _link_new(temporary: str, path: str) -> None:
    """Give the complete ``temporary`` the name ``path``, never replacing a
    file: one created meanwhile by someone else is kept (FileExistsError)."""
    try:
        os.link(temporary, path)
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # A file system without hard links: check, then rename (a file
        # created between the two would be replaced).
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "File exists", path) from None
        os.rename(temporary, path)


#: What os.link fails with where the file system has no hard links.
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS})


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
    first commit. Everything in it is checked before a store is opened
    (:func:`session_problem`): bad input is exit 5, naming the node and
    what is wrong with it. Refused when the session already exists (the
    commit's compare-and-set decides, so two imports cannot both win)."""
    target = target_of(args)
    name = "stdin" if args.file == "-" else args.file
    text = _read_input(args.file, sys.stdin.read)
    progress = Progress("import")
    try:
        progress.say("checking the export")
        stored = _checked(name, text)
        sid = printable(stored.session_id)
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
        progress.say(f"writing {plural(len(stored.nodes), 'node')} in one commit")
        with open_store(target, create=args.create, create_hint=hint) as store:
            try:
                head = store.commit(commit)
            except HeadRevisionConflict:
                raise CliError(
                    f"session {sid} already exists in {target.label}: nothing imported",
                    Exit.CONFLICT,
                ) from None
            except SessionDeleted:
                raise CliError(
                    f"session {sid} was deleted in {target.label}: its id is not used again"
                    " until `lash-machine purge` forgets the deletion; nothing imported",
                    Exit.CONFLICT,
                ) from None
    finally:
        progress.done()
    print(
        f"imported session {sid} ({plural(len(stored.nodes), 'node')}) at head revision {head}"
        f" (it was exported at head revision {stored.head_revision})"
    )
    if not heal_graph(stored_graph(stored))[1].is_clean:
        print(f"the imported graph needs repair: see `lash-machine heal {sid}`")
    return Exit.OK


#: Fields of an export that hold records, and the JSON shape each must have
#: (checked before decoding, so that the message says what was expected).
_RECORD_FIELDS = {
    "policy": (dict,),
    "frames": (list,),
    "nodes": (list,),
    "tool_snapshot": (dict, type(None)),
    "plugin_snapshot": (dict, type(None)),
}
_SHAPES = {dict: "an object", list: "an array", type(None): "null"}


def _checked(name: str, text: str) -> StoredSession:
    """The export ``text`` (from ``name``) decoded and checked: any problem
    is a :class:`CliError` (exit 5)."""
    try:
        stored = _decode(text)
    except WireError as error:
        raise CliError(
            f"{name}: not a wire-format session export: {error}", Exit.BAD_INPUT
        ) from None
    problem = session_problem(stored)
    if problem is not None:
        raise CliError(f"{name}: {printable(problem)}", Exit.BAD_INPUT)
    return stored


def _decode(text: str) -> StoredSession:
    """The export in ``text``; :class:`WireError` naming the first field of
    the wrong shape (``nodes`` must be an array of objects, ...)."""
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WireError("malformed JSON", [str(exc)]) from None
    if isinstance(data, dict):
        for field, allowed in _RECORD_FIELDS.items():
            if field in data and not isinstance(data[field], allowed):
                expected = " or ".join(_SHAPES[kind] for kind in allowed)
                raise WireError(
                    "malformed persisted.StoredSession",
                    [f"expected {expected}, got {_json_type(data[field])} @ $.{field}"],
                )
            if allowed == (list,) and field in data:
                for i, item in enumerate(data[field]):
                    if not isinstance(item, dict):
                        raise WireError(
                            "malformed persisted.StoredSession",
                            [f"expected an object, got {_json_type(item)} @ $.{field}[{i}]"],
                        )
    return wire.from_json(data, StoredSession)


def _json_type(value: object) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    return names.get(type(value), "a number")


def session_problem(stored: StoredSession) -> str | None:
    """Why ``stored`` cannot be imported into any store, or ``None``: the
    first problem found, in one sentence that names the node (or field).

    The checks are :mod:`lash_machine.content`'s (what a session may hold,
    the same for every store), plus what a database cannot hold as text (a
    lone surrogate in an id) and what one commit cannot create (a node id
    given twice).
    """
    problem = _id_problem(stored.session_id, "session id")
    if problem is None:
        problem = _id_problem(stored.current_frame_id, "current_frame_id", empty=True)
    if problem is None:
        problem = json_problem(wire.unstructure(stored.policy), "policy")
    for i, frame in enumerate(stored.frames):
        if problem is not None:
            break
        problem = _frame_problem(frame, f"frames[{i}]")
    seen: set[str] = set()
    for node in stored.nodes:
        if problem is not None:
            break
        problem = node_problem(node) or _node_text_problem(node)
        if problem is None and node.node_id in seen:
            problem = f"node {_short(node.node_id)} appears twice"
        seen.add(node.node_id)
    if problem is None and stored.leaf_id is not None:
        problem = _id_problem(stored.leaf_id, "leaf_id", empty=True)
    if problem is None and stored.tool_snapshot is not None:
        problem = json_problem(stored.tool_snapshot.data, "tool_snapshot.data")
    if problem is None and stored.plugin_snapshot is not None:
        problem = json_problem(stored.plugin_snapshot.data, "plugin_snapshot.data")
    if problem is None:
        problem = json_problem(stored.host_checkpoint, "host_checkpoint")
    return problem


def _frame_problem(frame: AgentFrame, where: str) -> str | None:
    problem = _id_problem(frame.frame_id, f"{where}: frame id")
    if problem is None and frame.parent_frame_id is not None:
        problem = _id_problem(frame.parent_frame_id, f"{where}: parent frame id", empty=True)
    if problem is None:
        problem = time_problem(frame.created_at, f"{where}: created_at")
    if problem is None:
        problem = json_problem(wire.unstructure(frame), where)
    return problem


def _id_problem(value: str, what: str, *, empty: bool = False) -> str | None:
    return id_problem(value, what, empty=empty) or _surrogate_problem(value, what)


def _node_text_problem(node: SessionNode) -> str | None:
    for value, what in (
        (node.node_id, "node id"),
        (node.parent_id, "parent id"),
        (node.frame_id, "frame id"),
    ):
        if value is not None and (problem := _surrogate_problem(value, what)):
            return f"node {_short(node.node_id)}: {problem}"
    return None


def _surrogate_problem(value: str, what: str) -> str | None:
    """Ids are stored as UTF-8 text, which a lone surrogate (``\\udc80``,
    possible in JSON) is not."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        surrogate = exc.object[exc.start]
        return f"{what} {_short(value)} holds {surrogate!r}, a lone surrogate (not text)"
    return None


def _short(text: str) -> str:
    shown = repr(text)
    return shown if len(shown) <= 60 else f"{shown[:57]}..."


def copy(args: argparse.Namespace) -> int:
    """``copy SESSION [--at NODE] [--as NEW]``: make a new session whose
    history is SESSION's path up to NODE (its stored leaf by default), in
    one transaction; the copy records where it came from. Prints the new
    session's id, and nothing else, for scripts."""
    target = target_of(args)
    with open_store(target) as store:
        source = find_session(store, target, args.session)
        sid = printable(source.session_id)
        node_id = None if args.at is None else _node_named(source, args.at)
        new_id: str = args.as_ if args.as_ is not None else uuid.uuid4().hex
        problem = id_problem(new_id, "--as")
        if problem is not None:
            raise CliError(problem, Exit.USAGE)
        try:
            store.fork_session(source.session_id, node_id, new_id)
        except ParentTombstoned as error:  # tombstoned since it was read
            raise CliError(
                f"session {sid}: node {printable(error.node_id)} is no longer live: nothing copied",
                Exit.NOT_FOUND,
            ) from None
        except HeadRevisionConflict:
            raise CliError(
                f"session {printable(new_id)} already exists in {target.label}: nothing copied",
                Exit.CONFLICT,
            ) from None
        except SessionDeleted as error:
            if error.session_id != new_id:
                raise  # the source, deleted meanwhile: exit 3
            raise CliError(
                f"session {printable(new_id)} was deleted in {target.label}: its id is not used"
                " again until `lash-machine purge` forgets the deletion; nothing copied",
                Exit.CONFLICT,
            ) from None
    print(new_id)
    return Exit.OK


def _node_named(stored: StoredSession, wanted: str) -> str:
    """The live node of ``stored`` that ``wanted`` names: its whole id, or a
    prefix of exactly one (``show`` prints ids shortened)."""
    ids = [node.node_id for node in stored.nodes]
    if wanted in ids:
        return wanted
    matches = sorted({node_id for node_id in ids if wanted and node_id.startswith(wanted)})
    sid = printable(stored.session_id)
    if not matches:
        raise CliError(f"session {sid} has no live node {printable(wanted)!r}", Exit.NOT_FOUND)
    if len(matches) > 1:
        raise CliError(
            f"{printable(wanted)!r} is the start of {len(matches)} node ids of session {sid}:"
            " give more of it",
            Exit.NOT_FOUND,
        )
    return matches[0]
