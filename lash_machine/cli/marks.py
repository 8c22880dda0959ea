"""What a stored graph's pins and compactions mean for the nodes an
operator looks at: which orphans a pin keeps (prune leaves them), which
nodes are summaries, and which originals a summary replaced.

Pure (a graph and its pins in, facts out), so ``show``, ``orphans``,
``prune`` and the tree drawing all read the same facts. Every walk up the
parent pointers stops at a node it has seen, so a graph that needs repair
(a parent cycle) is described, not looped over.
"""

from __future__ import annotations

from collections.abc import Container, Iterable

import attrs

from ..compaction import read_summary
from ..graph import SessionGraph

__all__ = ["Compaction", "Marks", "marks_of"]


@attrs.frozen
class Compaction:
    """A summary node and what it stands for: the stored path it replaced
    (``replaced``, root first, up to and including ``through``; empty when
    ``through`` is not stored) and the first node it kept (``kept``)."""

    summary_id: str
    through: str
    kept: str | None
    replaced: tuple[str, ...]


@attrs.frozen
class Marks:
    """The facts of one graph.

    ``pinned``: the pinned nodes. ``held``: every node a pin keeps from
    tombstoning (a pinned node and each of its ancestors), mapped to the
    pinned node that holds it (the earliest stored one, when several do).
    ``summaries``: the compactions, by summary node id. ``compacted``: each
    original a summary replaced that is off the active path, mapped to the
    summary (an undone compaction puts its originals back on the path, and
    they are no longer compacted).
    """

    pinned: frozenset[str] = frozenset()
    held: dict[str, str] = attrs.field(factory=dict)
    summaries: dict[str, Compaction] = attrs.field(factory=dict)
    compacted: dict[str, str] = attrs.field(factory=dict)

    def kept_orphans(self, graph: SessionGraph) -> tuple[str, ...]:
        """The orphans of ``graph`` that prune keeps, in graph order."""
        return tuple(node_id for node_id in graph.orphan_ids() if node_id in self.held)


def marks_of(graph: SessionGraph, pinned: Iterable[str] = ()) -> Marks:
    """The :class:`Marks` of ``graph``, whose pinned nodes are ``pinned``
    (a stored session's :attr:`~lash_machine.persisted.StoredSession.pinned`)."""
    pins = frozenset(pinned)
    held: dict[str, str] = {}
    # Graph order, so that "the pin that holds it" does not depend on how
    # the store listed its pins.
    for node in graph:
        if node.node_id in pins:
            for ancestor in _up(graph, node.node_id, stop=held):
                held[ancestor] = node.node_id
    summaries: dict[str, Compaction] = {}
    compacted: dict[str, str] = {}
    on_path = graph.active_path_ids()
    for node in graph:
        summary = read_summary(node)
        if summary is None or node.node_id in summaries:
            continue
        replaced = tuple(reversed(_up(graph, summary.through))) if summary.through in graph else ()
        summaries[node.node_id] = Compaction(node.node_id, summary.through, summary.kept, replaced)
        for original in replaced:
            if original not in on_path:
                compacted.setdefault(original, node.node_id)
    return Marks(pins, held, summaries, compacted)


def _up(graph: SessionGraph, node_id: str, stop: Container[str] = ()) -> list[str]:
    """``node_id`` and its stored ancestors, nearest first, ending before a
    node in ``stop``, a node already walked (a cycle) or a missing parent."""
    seen: set[str] = set()
    walked: list[str] = []
    current: str | None = node_id
    while current is not None and current not in seen and current not in stop:
        node = graph.get(current)
        if node is None:
            break
        seen.add(current)
        walked.append(current)
        current = node.parent_id
    return walked
