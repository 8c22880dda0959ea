"""Records to rows and back, shared by the stores.

Stores keep node bodies, policies, frames, snapshots and host checkpoints as
JSON text (exactly what ``json.dumps`` wrote, so every JSON value round-trips
unchanged). Decoding a row that is not what a store wrote raises
:class:`~lash_machine.errors.CorruptRow` naming the session and node: a
corrupt row is reported, never skipped.
"""

from __future__ import annotations

import itertools
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from .. import wire
from ..content import id_problem, node_problem, time_problem
from ..errors import CorruptRow, StoreError, WireError
from ..model import (
    JSON,
    AgentFrame,
    ModelSpec,
    NodeKind,
    PluginSnapshot,
    SessionNode,
    SessionPolicy,
    ToolSnapshot,
)
from ..persisted import AttachmentIntent, GraphDelta, Origin, SessionCommit, StoredSession

__all__ = [
    "LEAF_REASON",
    "PIN_REASON",
    "IntentRow",
    "NodeRow",
    "SessionRow",
    "built_on",
    "chained",
    "check_session_id",
    "decode_node",
    "decode_nodes",
    "decode_session",
    "dump_json",
    "encode_intent",
    "encode_node",
    "encode_session",
    "extended_hint",
    "fold_repairs",
    "orphan_reason",
    "path_root_first",
    "with_parent",
]

T = TypeVar("T")

#: A node as the SQL stores bind it on insert:
#: (node_id, parent_id, kind, frame_id, created_at, body JSON text).
NodeRow = tuple[str, str | None, str, str | None, float, str]

#: An attachment intent as the SQL stores bind it:
#: (session_id, attachment_id, uri, created_at).
IntentRow = tuple[str, str, str, float]

_KINDS = {kind.value: kind for kind in NodeKind}


# Made once: json.dumps with options builds an encoder on every call. ASCII-only
# text: a lone surrogate in a string still round-trips (escaped).
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


def dump_json(value: JSON, what: str) -> str:
    """``value`` as compact JSON text; a value JSON cannot hold (NaN, a set,
    an object) is a :class:`StoreError` naming ``what``."""
    try:
        return _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise StoreError(f"{what} is not JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e999: a literal beyond float range
        raise ValueError(f"{text} is not a finite number")
    return value


# Stores write JSON with allow_nan=False, so NaN, Infinity or an overflowing
# literal in stored text is corruption: the decoder refuses them. raw_decode
# skips json.loads' argument checks and whitespace scan (text a store wrote
# has neither); anything else falls back to decode.
_decoder = json.JSONDecoder(parse_float=_finite_float, parse_constant=_refuse_constant)
_raw_decode = _decoder.raw_decode


def _load_json(text: object, session_id: str, node_id: str | None, what: str) -> Any:
    if type(text) is not str:
        raise CorruptRow(
            session_id, node_id, f"{what}: expected JSON text, got {type(text).__name__}"
        )
    try:
        value, end = _raw_decode(text)
        if end == len(text):
            return value
    except (ValueError, RecursionError):
        pass
    try:
        return _decoder.decode(text)
    except (ValueError, RecursionError) as exc:
        raise CorruptRow(session_id, node_id, f"{what}: bad JSON ({exc})") from None


def _record(data: Any, cls: type[T], session_id: str, what: str) -> T:
    # Every record a store keeps is a JSON object; anything else never
    # reaches the codec.
    if not isinstance(data, dict):
        raise CorruptRow(
            session_id, None, f"{what}: expected a JSON object, got {type(data).__name__}"
        )
    try:
        return wire.structure(data, cls)
    except WireError as exc:
        raise CorruptRow(session_id, None, f"{what}: {exc}") from None


_POLICY_KEYS = frozenset({"model", "provider_id", "max_turns"})
_MODEL_KEYS = frozenset({"id", "context_window"})
_FRAME_KEYS = frozenset({"frame_id", "parent_frame_id", "reason", "policy", "created_at"})
_INT_MIN, _INT_MAX = -(2**63), 2**63 - 1


def _small_int(value: object) -> bool:
    return type(value) is int and _INT_MIN <= value <= _INT_MAX


def _plain_policy(data: Any) -> SessionPolicy | None:
    """The policy of data exactly as stores write it (every field, plain
    types, nothing else), built directly; ``None`` for anything else, which
    the wire codec then judges. Equal to what the codec builds."""
    if type(data) is not dict or data.keys() != _POLICY_KEYS:
        return None
    model, provider_id, max_turns = data["model"], data["provider_id"], data["max_turns"]
    if type(model) is not dict or model.keys() != _MODEL_KEYS:
        return None
    model_id, window = model["id"], model["context_window"]
    if (
        type(model_id) is str
        and (window is None or _small_int(window))
        and type(provider_id) is str
        and (max_turns is None or _small_int(max_turns))
    ):
        return SessionPolicy(ModelSpec(model_id, window), provider_id, max_turns)
    return None


def _policy_of(data: Any, session_id: str, what: str) -> SessionPolicy:
    policy = _plain_policy(data)
    return _record(data, SessionPolicy, session_id, what) if policy is None else policy


def _frame_of(data: Any, session_id: str) -> AgentFrame:
    """A frame as :func:`_policy_of` builds a policy."""
    if type(data) is dict and data.keys() == _FRAME_KEYS:
        frame_id, parent, reason = data["frame_id"], data["parent_frame_id"], data["reason"]
        policy, created_at = _plain_policy(data["policy"]), data["created_at"]
        if (
            policy is not None
            and type(frame_id) is str
            and (parent is None or type(parent) is str)
            and type(reason) is str
            and type(created_at) is float
            and created_at - created_at == 0.0  # finite
        ):
            return AgentFrame(frame_id, parent, reason, policy, created_at)
    return _record(data, AgentFrame, session_id, "frames")


def check_session_id(session_id: object) -> None:
    """Refuse a session id no store could key a row by (not text, or
    longer than :data:`~lash_machine.content.MAX_ID_LENGTH`)."""
    problem = id_problem(session_id, "session id", empty=True)
    if problem is not None:
        raise StoreError(problem)


def encode_node(session_id: str, node: SessionNode) -> NodeRow:
    """The row of one appended node. A node no store could read back (an
    unknown kind, an id that is not text or too long, a time that is not
    finite, a body that is not JSON as stores write it) is refused here by
    :func:`~lash_machine.content.node_problem`, before anything is written,
    rather than stored and reported corrupt on every read."""
    problem = node_problem(node)
    if problem is not None:
        raise StoreError(f"session {session_id!r}: {problem}")
    try:
        created_at = float(node.created_at)
    except OverflowError:  # an int beyond float range
        raise StoreError(
            f"session {session_id!r}: node {node.node_id!r}: created_at is not a finite number"
        ) from None
    body = dump_json(node.body, f"session {session_id!r}, node {node.node_id!r}: body")
    kind = _KINDS[node.kind]
    return (node.node_id, node.parent_id, kind.value, node.frame_id, created_at, body)


def encode_intent(intent: AttachmentIntent) -> IntentRow:
    """The row of one attachment intent; ids, URI and time are checked as
    for nodes."""
    problem = id_problem(intent.session_id, "session id", empty=True) or id_problem(
        intent.attachment_id, "attachment id", empty=True
    )
    if problem is None and type(intent.uri) is not str:
        problem = f"uri must be text, not {type(intent.uri).__name__}"
    if problem is None:
        problem = time_problem(intent.created_at, "created_at")
    if problem is None:
        try:
            created_at = float(intent.created_at)
        except OverflowError:
            problem = "created_at is not a finite number"
    if problem is not None:
        raise StoreError(f"attachment intent: {problem}")
    return (intent.session_id, intent.attachment_id, intent.uri, created_at)


def fold_repairs(
    rows: Sequence[NodeRow], delta: GraphDelta
) -> tuple[list[NodeRow], dict[str, str | None]]:
    """The appended rows with the delta's repairs of those very nodes
    folded in, and the repairs left for stored nodes. The last repair of a
    node wins, as if the repairs were applied in order."""
    repairs = {r.node_id: r.parent_id for r in delta.reparented}
    folded = [with_parent(row, repairs.pop(row[0])) if row[0] in repairs else row for row in rows]
    return folded, repairs


def built_on(
    rows: Sequence[NodeRow],
    repairs: dict[str, str | None],
    leaf_id: str | None,
    pinned: Sequence[str] = (),
) -> list[str]:
    """The stored nodes a commit builds on, each once, in order: the parent
    each appended node ends up with, the new parent of each repaired stored
    node, the new leaf, then the nodes it pins. Ids the commit appends are
    left out (they are not stored yet). ``rows`` and ``repairs`` come from
    :func:`fold_repairs`.

    A store refuses a commit to an existing session with
    :class:`~lash_machine.errors.ParentTombstoned` when one of them is not
    a live node of the session: tombstoned, or gone (a tombstoned node that
    vacuum removed looks like one never stored). The stored leaf is left
    out of the check: ``tombstone_nodes`` never hides it, and a commit that
    keeps a leaf it found need not own it again.
    """
    appended = {row[0] for row in rows}
    wanted: Iterable[str | None] = (
        *(row[1] for row in rows),
        *repairs.values(),
        leaf_id,
        *pinned,
    )
    return list(dict.fromkeys(i for i in wanted if i is not None and i not in appended))


#: Why :meth:`~lash_machine.stores.base.SessionStore.tombstone_nodes`
#: refuses the stored leaf.
LEAF_REASON = "it is the session's stored leaf"

#: Why it refuses a pinned node.
PIN_REASON = "it is pinned (unpin it first)"


def orphan_reason(child_id: str) -> str:
    """Why ``tombstone_nodes`` refuses the parent of a live node it would
    not hide."""
    return f"its child {child_id!r} is live and not tombstoned with it (hide whole subtrees)"


def decode_node(session_id: str, row: Sequence[Any]) -> SessionNode:
    """A node from ``(node_id, parent_id, kind, frame_id, created_at, body)``."""
    node_id, parent_id, kind, frame_id, created_at, body = row
    node_kind = _KINDS.get(kind) if type(kind) is str else None
    # The common case in one test; exact types, since SQLite columns hold
    # any type and a bool is never a timestamp.
    if (
        type(node_id) is str
        and node_kind is not None
        and type(created_at) is float
        and created_at - created_at == 0.0  # finite: inf - inf and NaN are NaN
        and (parent_id is None or type(parent_id) is str)
        and (frame_id is None or type(frame_id) is str)
    ):
        return SessionNode(
            node_id=node_id,
            parent_id=parent_id,
            kind=node_kind,
            body=_load_json(body, session_id, node_id, "body"),
            frame_id=frame_id,
            created_at=created_at,
        )
    return _decode_odd_node(session_id, row)


def _node_maker() -> Callable[[str, str | None, NodeKind, JSON, str | None, float], SessionNode]:
    """A positional constructor of :class:`SessionNode` that fills the slots
    directly: the attrs ``__init__`` of a frozen class goes through
    ``object.__setattr__`` by name for every field, which is most of what
    building a decoded node costs. The record has no validator or converter
    to skip."""
    fields = [field.name for field in attrs.fields(SessionNode)]
    assert fields == ["node_id", "parent_id", "kind", "body", "frame_id", "created_at"]
    set_id, set_parent, set_kind, set_body, set_frame, set_time = (
        SessionNode.__dict__[name].__set__ for name in fields
    )
    new = object.__new__

    def make(  # noqa: PLR0917 (the record's own field order, as its __init__)
        node_id: str,
        parent_id: str | None,
        kind: NodeKind,
        body: JSON,
        frame_id: str | None,
        created_at: float,
    ) -> SessionNode:
        node: SessionNode = new(SessionNode)
        set_id(node, node_id)
        set_parent(node, parent_id)
        set_kind(node, kind)
        set_body(node, body)
        set_frame(node, frame_id)
        set_time(node, created_at)
        return node

    return make


_make_node = _node_maker()


def decode_nodes(session_id: str, rows: Iterable[Sequence[Any]]) -> tuple[SessionNode, ...]:
    """The nodes of rows whose first six columns are those of
    :func:`decode_node` (any columns after them are ignored), in order: what
    :func:`decode_node` gives for each, in one tight loop for the common
    case; any row off it goes through :func:`decode_node` itself."""
    nodes: list[SessionNode] = []
    append = nodes.append
    kinds = _KINDS
    raw_decode = _raw_decode
    make = _make_node
    for row in rows:
        node_id, parent_id, kind, frame_id, created_at, text = row[0:6]
        node_kind = kinds.get(kind) if type(kind) is str else None
        if (
            type(node_id) is str
            and node_kind is not None
            and type(created_at) is float
            and created_at - created_at == 0.0  # finite
            and (parent_id is None or type(parent_id) is str)
            and (frame_id is None or type(frame_id) is str)
            and type(text) is str
        ):
            try:
                body, end = raw_decode(text)
            except (ValueError, RecursionError):
                end = -1
            if end == len(text):
                append(make(node_id, parent_id, node_kind, body, frame_id, created_at))
                continue
        append(decode_node(session_id, row[0:6]))
    return tuple(nodes)


def _decode_odd_node(session_id: str, row: Sequence[Any]) -> SessionNode:
    """The slow path of :func:`decode_node`: say what is wrong, or accept an
    integer timestamp."""
    node_id, parent_id, kind, frame_id, created_at, body = row
    if not isinstance(node_id, str):
        raise CorruptRow(session_id, None, f"node id is {type(node_id).__name__}, not text")
    if parent_id is not None and not isinstance(parent_id, str):
        raise CorruptRow(session_id, node_id, f"parent id is {type(parent_id).__name__}")
    if frame_id is not None and not isinstance(frame_id, str):
        raise CorruptRow(session_id, node_id, f"frame id is {type(frame_id).__name__}")
    node_kind = _KINDS.get(kind) if isinstance(kind, str) else None
    if node_kind is None:
        raise CorruptRow(session_id, node_id, f"unknown node kind {kind!r}")
    if isinstance(created_at, bool) or not isinstance(created_at, int | float):
        raise CorruptRow(session_id, node_id, f"created_at is {created_at!r}, not a number")
    if not math.isfinite(created_at):
        raise CorruptRow(session_id, node_id, f"created_at is {created_at!r}, not a finite number")
    return SessionNode(
        node_id=node_id,
        parent_id=parent_id,
        kind=node_kind,
        body=_load_json(body, session_id, node_id, "body"),
        frame_id=frame_id,
        created_at=float(created_at),
    )


@attrs.frozen
class SessionRow:
    """The session columns a commit writes, already encoded as text."""

    leaf_id: str | None
    policy: str
    frames: str
    current_frame_id: str
    tool_snapshot: str | None
    plugin_snapshot: str | None
    host_checkpoint: str


#: The text of the policy and frames last encoded, by the identity of the
#: object (frozen records: a session hands every commit the same objects
#: until they change, so most commits encode neither again). By identity,
#: not equality: equal values may still be written differently (1 and 1.0).
_ENCODED: dict[int, tuple[object, str]] = {}
_ENCODED_MAX = 256


def _encoded(value: Any, what: str) -> str:
    key = id(value)
    held = _ENCODED.get(key)
    if held is not None and held[0] is value:
        return held[1]
    raw = [wire.unstructure(f) for f in value] if type(value) is tuple else wire.unstructure(value)
    text = dump_json(raw, what)
    if len(_ENCODED) >= _ENCODED_MAX:
        _ENCODED.clear()
    _ENCODED[key] = (value, text)  # holding the object keeps its id from being reused
    return text


def encode_session(commit: SessionCommit) -> SessionRow:
    """The session-row columns of ``commit`` (its session id checked by
    :func:`check_session_id`)."""
    check_session_id(commit.session_id)
    where = f"session {commit.session_id!r}"
    tool = commit.tool_snapshot
    plugin = commit.plugin_snapshot
    return SessionRow(
        leaf_id=commit.delta.leaf_id,
        policy=_encoded(commit.policy, f"{where}: policy"),
        frames=_encoded(tuple(commit.frames), f"{where}: frames"),
        current_frame_id=commit.current_frame_id,
        tool_snapshot=None
        if tool is None
        else dump_json(wire.unstructure(tool), f"{where}: tool snapshot"),
        plugin_snapshot=(
            None
            if plugin is None
            else dump_json(wire.unstructure(plugin), f"{where}: plugin snapshot")
        ),
        host_checkpoint=dump_json(commit.host_checkpoint, f"{where}: host checkpoint"),
    )


def decode_session(
    session_id: str,
    head_revision: object,
    columns: Sequence[Any],
    nodes: tuple[SessionNode, ...],
    *,
    pinned: Iterable[str] = (),
    generation: object = 0,
    created_at: object = 0.0,
    created_by: object = None,
    origin: tuple[object, object] | None = None,
) -> StoredSession:
    """A stored session from its encoded columns, in :class:`SessionRow`
    order, plus the nodes already read for the scope (and, from the
    columns of schema version 3, its pins, generation, creation time and
    origin)."""
    leaf_id, policy, frames, current_frame_id, tool, plugin, checkpoint = columns
    if isinstance(generation, bool) or not isinstance(generation, int):
        raise CorruptRow(session_id, None, f"generation is {generation!r}")
    if isinstance(created_at, bool) or not isinstance(created_at, int | float):
        raise CorruptRow(session_id, None, f"created_at is {created_at!r}")
    if created_by is not None and not isinstance(created_by, str):
        raise CorruptRow(session_id, None, f"created_by is {type(created_by).__name__}")
    came_from = None
    if origin is not None and origin[0] is not None:
        if not isinstance(origin[0], str) or not isinstance(origin[1], str | None):
            raise CorruptRow(session_id, None, "origin is not text")
        came_from = Origin(origin[0], origin[1])
    if isinstance(head_revision, bool) or not isinstance(head_revision, int):
        raise CorruptRow(session_id, None, f"head revision is {head_revision!r}")
    if leaf_id is not None and not isinstance(leaf_id, str):
        raise CorruptRow(session_id, None, f"leaf id is {type(leaf_id).__name__}")
    if not isinstance(current_frame_id, str):
        raise CorruptRow(session_id, None, f"current frame id is {type(current_frame_id).__name__}")
    frame_data = _load_json(frames, session_id, None, "frames")
    if not isinstance(frame_data, list):
        raise CorruptRow(session_id, None, "frames: expected a JSON array")
    return StoredSession(
        session_id=session_id,
        head_revision=head_revision,
        policy=_policy_of(_load_json(policy, session_id, None, "policy"), session_id, "policy"),
        frames=tuple(_frame_of(f, session_id) for f in frame_data),
        current_frame_id=current_frame_id,
        nodes=nodes,
        leaf_id=leaf_id,
        tool_snapshot=(
            None
            if tool is None
            else _record(
                _load_json(tool, session_id, None, "tool snapshot"),
                ToolSnapshot,
                session_id,
                "tool snapshot",
            )
        ),
        plugin_snapshot=(
            None
            if plugin is None
            else _record(
                _load_json(plugin, session_id, None, "plugin snapshot"),
                PluginSnapshot,
                session_id,
                "plugin snapshot",
            )
        ),
        host_checkpoint=_load_json(checkpoint, session_id, None, "host checkpoint"),
        pinned=tuple(pinned),
        generation=generation,
        created_at=float(created_at),
        created_by=created_by,
        origin=came_from,
    )


def path_root_first(
    lookup: Callable[[str], T | None], parent_of: Callable[[T], str | None], leaf_id: str
) -> list[T]:
    """The chain from ``leaf_id`` up through ``parent_of``, root first.

    The SQL stores read a path as an unordered set (a recursive ``UNION``
    that stops on a repeated row, so a parent cycle cannot loop forever) and
    order it here. The walk stops at a node it has already seen, at a
    parent ``lookup`` does not find (tombstoned or never stored) or at a
    root.
    """
    chain: list[T] = []
    seen: set[str] = set()
    current: str | None = leaf_id
    while current is not None and current not in seen:
        item = lookup(current)
        if item is None:
            break
        seen.add(current)
        chain.append(item)
        current = parent_of(item)
    chain.reverse()
    return chain


def chained(rows: Sequence[Sequence[Any]]) -> bool:
    """True when ``rows`` (``(node_id, parent_id, ...)``) are one chain
    in order: the first a root, each next one a child of the one before."""
    if not rows or rows[0][1] is not None:
        return False
    # Two lists compared in C: faster than a comparison per pair in Python.
    parents = list(map(operator.itemgetter(1), itertools.islice(rows, 1, None)))
    return parents == list(map(operator.itemgetter(0), itertools.islice(rows, len(rows) - 1)))


def with_parent(row: NodeRow, parent_id: str | None) -> NodeRow:
    """``row`` with its parent pointer replaced."""
    return (row[0], parent_id, row[2], row[3], row[4], row[5])


# ---- the active path's hint ---------------------------------------------------------
#
# A session row may carry a hint of where its active path's node rows lie:
# the seq ranges (inclusive, ascending) that hold the chain from the stored
# leaf to its root. A reader fetches those ranges with index range scans
# instead of walking parent by parent, then walks the fetched rows from the
# leaf; a parent it does not find there is read by the recursive walk, as
# without a hint. So a wrong hint costs time, never a wrong answer. Commits
# keep the hint: appending at the stored leaf extends it, anything else is
# worked out again from the stored graph.

#: Seq ranges of a path, ``(first, last)`` inclusive, ascending.
Ranges = list[tuple[int, int]]


def parse_hint(text: object) -> Ranges | None:
    """The ranges of a stored hint; ``None`` for none, or for text that is
    not a hint this release wrote (a hint is never trusted, only tried)."""
    if type(text) is not str:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    if not isinstance(data, list):
        return None
    ranges: Ranges = []
    for item in data:
        if (
            not isinstance(item, list)
            or len(item) != 2
            or not all(type(v) is int for v in item)
            or item[0] > item[1]
            or (ranges and item[0] <= ranges[-1][1])
        ):
            return None
        ranges.append((item[0], item[1]))
    return ranges


def dump_hint(ranges: Ranges | None) -> str | None:
    """The text of a hint (``None`` stays ``None``)."""
    return None if ranges is None else json.dumps(ranges, separators=(",", ":"))


#: The last range of a hint's text, as :func:`dump_hint` writes it.
_LAST_RANGE = re.compile(r"\[(\d+),(\d+)\]\]", re.ASCII)


def extended_hint(text: object, chain: Ranges) -> str | None:
    """The hint ``text`` with ``chain`` (ranges after it) joined on, made
    from its last range alone so that an append at the leaf costs the same
    however many ranges the path has. ``None`` when ``text`` does not end
    as a hint this release writes: the caller works the hint out anew."""
    if type(text) is not str:
        return None
    if not chain:
        return text
    if text == "[]":
        return dump_hint(chain)
    start = text.rfind("[", 0, len(text) - 1)
    tail = _LAST_RANGE.fullmatch(text, max(start, 0))
    if tail is None or not text.startswith("[[") or text[start - 1] not in "[,":
        return None
    first, last = int(tail[1]), int(tail[2])
    if last >= chain[0][0]:
        return None  # not ascending: not a hint this store wrote
    if last + 1 == chain[0][0]:
        head, more = f"{text[:start]}[{first},{chain[0][1]}]", chain[1:]
    else:
        head, more = text[:-1], chain
    return head + "".join(f",[{a},{b}]" for a, b in more) + "]"


def ranges_of(seqs: Iterable[int]) -> Ranges:
    """The fewest ranges that hold ``seqs`` (ascending, distinct)."""
    ranges: Ranges = []
    for seq in seqs:
        if ranges and ranges[-1][1] + 1 == seq:
            ranges[-1] = (ranges[-1][0], seq)
        else:
            ranges.append((seq, seq))
    return ranges


def joined(base: Ranges, more: Ranges) -> Ranges:
    """``base`` then ``more`` (which starts after it), adjacent ranges merged."""
    if base and more and base[-1][1] + 1 == more[0][0]:
        return [*base[:-1], (base[-1][0], more[0][1]), *more[1:]]
    return [*base, *more]


def truncated(ranges: Ranges, seq: int) -> Ranges | None:
    """The ranges up to and including ``seq``; ``None`` when no range holds
    it (the node is not on the hinted path)."""
    kept: Ranges = []
    for first, last in ranges:
        if seq < first:
            return None
        if seq <= last:
            kept.append((first, seq))
            return kept
        kept.append((first, last))
    return None


def appended_chain(
    rows: Sequence[NodeRow], leaf_id: str | None, first_seq: int
) -> tuple[list[int], str | None]:
    """Where the new leaf's path runs through a commit's appended rows: the
    seqs of those on it (ascending), and the stored node it then continues
    from (``None`` at a root). A leaf that is not appended continues from
    itself."""
    position = {row[0]: i for i, row in enumerate(rows)}
    seqs: list[int] = []
    current = leaf_id
    while current is not None and current in position:
        i = position.pop(current)  # popped: a loop among new rows ends here
        seqs.append(first_seq + i)
        current = rows[i][1]
    seqs.reverse()
    return seqs, current


def first_missing(by_id: Mapping[Any, Any], leaf: object) -> object:
    """Where a walk from ``leaf`` through ``by_id`` leaves it: the first
    parent not there (``None`` when the walk ends at a root or in a loop)."""
    seen: set[object] = set()
    current = leaf
    while current is not None and current not in seen:
        row = by_id.get(current)
        if row is None:
            return current
        seen.add(current)
        current = row[1]
    return None
