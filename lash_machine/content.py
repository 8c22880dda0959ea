"""What a session may hold, checked where it comes in.

Stores keep node bodies, snapshots and checkpoints as JSON text and read
them back with ``json.loads``, so a value is accepted only when that round
trip gives back an equal value: objects with string keys, arrays (lists),
strings, finite numbers, booleans and ``None``. Anything else (an int key,
a tuple, a set, bytes, a datetime, NaN or an infinity) would be refused at
commit, or worse, stored as something else than what memory holds; it is
refused when it enters (an ``Append``, an import, a wire message) instead.

Ids are text of at most :data:`MAX_ID_LENGTH` characters in every store:
PostgreSQL's index rows cannot hold much more, and one limit for every
store keeps a session portable between them.

Each check returns ``None`` when the value is fine, else one sentence that
names what is wrong and where (``"a tuple at $.tool_calls"``); callers wrap
it in the error their layer raises.
"""

from __future__ import annotations

import math
from typing import Any

from .model import NodeKind, SessionNode

__all__ = ["MAX_ID_LENGTH", "id_problem", "json_problem", "node_problem", "time_problem"]

#: The longest id (session, node, frame, attachment) any store accepts, in
#: characters.
MAX_ID_LENGTH = 256

#: How deep a JSON value may nest (json.loads itself gives up near 1000).
_MAX_DEPTH = 500

_SCALARS = (str, bool, type(None))

#: NodeKind members, and their values (a kind given as text is accepted;
#: the machine turns it into the member).
_KINDS = frozenset({*NodeKind, *(kind.value for kind in NodeKind)})


def id_problem(value: object, what: str, *, empty: bool = False) -> str | None:
    """Why ``value`` cannot be an id (``what`` names it: ``"node id"``);
    an empty one only when ``empty`` allows it."""
    if type(value) is not str:
        return f"{what} must be text, not {type(value).__name__}"
    if not value and not empty:
        return f"{what} is empty"
    if len(value) > MAX_ID_LENGTH:
        return f"{what} is {len(value)} characters long; the limit is {MAX_ID_LENGTH}"
    return None


def time_problem(value: object, what: str) -> str | None:
    """Why ``value`` cannot be a timestamp (seconds since the epoch)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"{what} must be a number, not {type(value).__name__}"
    if isinstance(value, float) and not math.isfinite(value):
        return f"{what} must be finite, not {value}"
    return None


def json_problem(value: Any, where: str = "$") -> str | None:
    """Why ``value`` is not JSON as the stores write and read it back.

    One walk over the value, stopping at the first problem; its cost is
    about that of encoding it. The path of the problem is only spelled out
    once one is found.
    """
    # Each entry: the value, a link (parent link, key) to spell its path
    # with, its depth.
    stack: list[tuple[Any, Any, int]] = [(value, None, 0)]
    while stack:
        item, link, depth = stack.pop()
        kind = type(item)
        if kind in _SCALARS or kind is int:
            continue
        if kind is float:
            if not math.isfinite(item):
                return f"{item} at {_path(where, link)} is not a finite number"
            continue
        if depth >= _MAX_DEPTH:
            return f"the value nests deeper than {_MAX_DEPTH} levels"
        if kind is dict:
            for key, child in item.items():
                if type(key) is not str:
                    shown = _short(key)
                    return (
                        f"a {type(key).__name__} key {shown} at {_path(where, link)}"
                        " (keys must be text)"
                    )
                stack.append((child, (link, key), depth + 1))
            continue
        if kind is list:
            stack.extend((child, (link, i), depth + 1) for i, child in enumerate(item))
            continue
        return f"a {kind.__name__} at {_path(where, link)} is not JSON"
    return None


def _path(where: str, link: Any) -> str:
    parts: list[str] = []
    while link is not None:
        link, key = link
        parts.append(f"[{key}]" if type(key) is int else f".{key}")
    parts.reverse()
    text = where + "".join(parts)
    return text if len(text) <= 80 else f"{text[:77]}..."


#: Nodes that passed :func:`node_problem`, by identity: a node the machine
#: checked as it came in is not walked again when a store encodes it. The
#: entries hold their nodes, so an id is never reused while it is here; a
#: hit takes its entry out (the store's check is a node's last), so what
#: stays is mostly nodes not yet committed, which their session holds anyway.
_PASSED: dict[int, SessionNode] = {}
_PASSED_MAX = 1024


def node_problem(node: SessionNode) -> str | None:
    """Why ``node`` cannot be stored: its ids, kind, time or body. A kind
    given as its text (``"message"``) is fine.

    A node is checked once: the same object passes again without a walk
    (nodes are frozen; a body changed in place after it was appended is
    the caller's bug, and a store still refuses what JSON cannot hold)."""
    if _PASSED.pop(id(node), None) is node:
        return None
    problem = _node_problem(node)
    if problem is None:
        if len(_PASSED) >= _PASSED_MAX:
            _PASSED.clear()
        _PASSED[id(node)] = node
    return problem


def _node_problem(node: SessionNode) -> str | None:
    problem = id_problem(node.node_id, "node id")
    if problem is None and node.parent_id is not None:
        problem = id_problem(node.parent_id, "parent id", empty=True)
    if problem is None and node.frame_id is not None:
        problem = id_problem(node.frame_id, "frame id", empty=True)
    if problem is None and node.kind not in _KINDS:
        problem = f"unknown node kind {_short(node.kind)}"
    if problem is None:
        problem = time_problem(node.created_at, "created_at")
    if problem is None:
        problem = json_problem(node.body, "body")
    if problem is None:
        return None
    shown = node.node_id if type(node.node_id) is str else "?"
    return f"node {_short(shown)}: {problem}"


def _short(value: object) -> str:
    """A short repr of untrusted input for a message."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    return text if len(text) <= 60 else f"{text[:57]}..."
