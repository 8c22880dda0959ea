"""The sessions a driver parked, kept for a warm resume.

When a session parks, the machine hands back the session as it left memory
(:attr:`~lash_machine.effects.ReplyParked.session`). A driver keeps the
newest such copy of each session, up to a budget of bytes, least recently
used first out. A resume of that session then asks the store only for its
stamp (one small row: head revision, generation, creating commit) and, when
the store still holds exactly that state, takes the copy instead of reading
every node; the machine decides (``Resume.warm``), so a copy is never used
once another writer committed, an operator pruned or healed, or the session
was deleted or made again.

Sizes are estimates: each node counts its body's JSON text plus a fixed
overhead, worked out once per node.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict

import attrs

from ..model import SessionNode
from ..state import WarmSession

__all__ = ["WarmCache"]

#: What a node costs beyond its body's text (the record, its ids, its slot
#: in the graph's vector and index), roughly.
NODE_OVERHEAD = 400


def _node_bytes(node: SessionNode) -> int:
    try:
        body = len(json.dumps(node.body, separators=(",", ":")))
    except (TypeError, ValueError, RecursionError):
        body = 0  # cannot happen for a committed node; count the overhead alone
    return NODE_OVERHEAD + body


@attrs.define
class _Entry:
    warm: WarmSession
    size: int
    counted: int  # how many of its nodes (from the front) ``size`` covers


class WarmCache:
    """Parked sessions by id, within ``max_bytes`` (0: keep nothing).
    Thread-safe: sessions of one driver may park on many threads."""

    def __init__(self, max_bytes: int) -> None:
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
            raise ValueError(
                f"warm_cache must be a number of bytes (an int, 0: none), not {max_bytes!r}"
            )
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        """The estimated bytes held."""
        return self._bytes

    def __len__(self) -> int:
        return len(self._entries)

    def keep(self, warm: WarmSession) -> None:
        """Keep ``warm`` as the newest copy of its session (dropping the
        least recently used ones while over budget)."""
        if not self.max_bytes:
            return
        graph = warm.session.graph
        session_id = warm.session.session_id
        with self._lock:
            old = self._entries.pop(session_id, None)
            if old is not None:
                self._bytes -= old.size
            if old is not None and old.counted <= len(graph) and _same_front(old.warm, warm):
                # The same history grown by a few nodes: count only those.
                size = old.size + sum(map(_node_bytes, graph.since(old.counted)))
            else:
                size = sum(map(_node_bytes, graph))
            if size > self.max_bytes:
                return
            self._entries[session_id] = _Entry(warm, size, len(graph))
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.size

    def get(self, session_id: str) -> WarmSession | None:
        """The kept copy of the session, if any (it stays kept)."""
        with self._lock:
            entry = self._entries.get(session_id)
            if entry is None:
                return None
            self._entries.move_to_end(session_id)
            return entry.warm

    def forget(self, session_id: str) -> None:
        """Drop the copy of the session."""
        with self._lock:
            entry = self._entries.pop(session_id, None)
            if entry is not None:
                self._bytes -= entry.size


def _same_front(old: WarmSession, new: WarmSession) -> bool:
    """Whether ``new`` starts with ``old``'s nodes: checked at both ends of
    the old part, which is enough for an estimate."""
    old_graph, new_graph = old.session.graph, new.session.graph
    if not len(old_graph):
        return True
    last = len(old_graph) - 1
    first_id = next(iter(old_graph)).node_id
    last_id = old_graph.since(last)[0].node_id
    return new_graph.position(first_id) == 0 and new_graph.position(last_id) == last
