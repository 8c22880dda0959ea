"""The session graph and the algorithms over it: active path, orphans, healing.

A :class:`SessionGraph` keeps its nodes in insertion order in a persistent
vector and indexes them by id in a persistent map, so appending to a graph of
100k nodes costs about what it costs on 1k: the old graph and the new one
share almost all of their structure.

A graph read from a store or from the wire may be corrupt (duplicate ids,
missing parents, parent cycles, a leaf that names no node);
:func:`heal_graph` returns a well-formed graph and a report of each repair.
"""

from __future__ import annotations

import itertools
import operator
from collections.abc import Iterable, Iterator, Sequence
from typing import Literal

import attrs
import immutables
from pyrsistent import pvector
from pyrsistent.typing import PVector

from ._records import evolve
from .model import NodeKind, SessionNode

_ID = operator.attrgetter("node_id")
_PARENT = operator.attrgetter("parent_id")
_KIND = operator.attrgetter("kind")

__all__ = [
    "HealReport",
    "LeafRepair",
    "ParentRepair",
    "SessionGraph",
    "heal_graph",
]


@attrs.frozen(eq=False)
class SessionGraph:
    """Nodes in insertion order plus the id of the leaf (the newest node of
    the active branch).

    Build one with :meth:`from_nodes` or :meth:`empty`; change one with
    :meth:`append`, :meth:`with_leaf` and :meth:`with_parent`, each of which
    returns a new graph sharing structure with the old.

    An unhealed graph may hold several nodes with one id; lookups then see
    the first of them.

    Every graph knows whether its nodes are *ordered*: their ids are
    unique and every parent stands before its child in insertion order (so
    no parent is missing and no chain of parents can loop).
    :meth:`from_nodes` finds out while it builds the index, and each edit
    keeps the answer up to date at the cost of one lookup, so
    :func:`heal_graph` answers an ordered graph whose leaf is a node at
    once. (An edit never works the answer out again: a graph whose nodes
    were out of order stays marked so until it is rebuilt.)
    """

    _nodes: PVector[SessionNode]
    _index: immutables.Map[str, int]
    leaf_id: str | None
    #: True only when the nodes are known to be ordered (see above).
    _ordered: bool = False
    #: True only when the nodes are also known to be one chain: the first a
    #: root, each next one a child of the one before (an active path read).
    _chain: bool = False
    #: How many of the nodes are summaries (so that a branch need not walk
    #: the path to learn that none can be at its root).
    summaries: int = 0
    # The active path, once worked out (the graph never changes, so neither
    # does its path); an append at the leaf hands it on grown.
    _path: tuple[SessionNode, ...] | None = attrs.field(
        default=None, init=False, eq=False, repr=False
    )

    @classmethod
    def empty(cls) -> SessionGraph:
        """A graph with no nodes and no leaf."""
        return cls(pvector(), immutables.Map(), None, True, True)

    @classmethod
    def from_nodes(cls, nodes: Iterable[SessionNode], leaf_id: str | None) -> SessionGraph:
        """A graph of ``nodes`` (in insertion order) with the given leaf."""
        vector = pvector(nodes)
        ids = list(map(_ID, vector))
        # Built back to front, so the first copy of a duplicate id wins.
        index = dict(zip(reversed(ids), range(len(ids) - 1, -1, -1), strict=True))
        order = _order(vector, ids, index)
        summaries = list(map(_KIND, vector)).count(NodeKind.SUMMARY)
        return cls(
            vector,
            immutables.Map(index),
            leaf_id,
            order >= _ORDERED,
            order == _CHAIN,
            summaries,
        )

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[SessionNode]:
        return iter(self._nodes)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SessionGraph):
            return NotImplemented
        return self.leaf_id == other.leaf_id and self._nodes == other._nodes

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SessionGraph(<{len(self)} nodes>, leaf_id={self.leaf_id!r})"

    @property
    def nodes(self) -> tuple[SessionNode, ...]:
        """Every node, in insertion order."""
        return tuple(self._nodes)

    def since(self, position: int) -> tuple[SessionNode, ...]:
        """The nodes inserted at ``position`` and after, in order; O(k)."""
        return tuple(self._nodes[i] for i in range(position, len(self._nodes)))

    def position(self, node_id: str) -> int | None:
        """Where the node stands in insertion order, or ``None``."""
        return self._index.get(node_id)

    def get(self, node_id: str) -> SessionNode | None:
        """The node with that id, or ``None``."""
        position = self._index.get(node_id)
        return None if position is None else self._nodes[position]

    def append(self, node: SessionNode) -> SessionGraph:
        """A graph with ``node`` added last (the leaf is unchanged).

        Raises ``ValueError`` when the id is taken: a graph built by edits
        never holds duplicates.
        """
        index = self._index
        if node.node_id in index:
            raise ValueError(f"node id {node.node_id!r} is already in the graph")
        # Every node already here stands before the new one.
        parent = node.parent_id
        ordered = self._ordered and (parent is None or parent in index)
        nodes = self._nodes
        chain = self._chain and parent == (nodes[-1].node_id if nodes else None)
        return SessionGraph(
            nodes.append(node),
            index.set(node.node_id, len(nodes)),
            self.leaf_id,
            ordered,
            chain,
            self.summaries + (node.kind == NodeKind.SUMMARY),
        )

    def extended(self, nodes: Iterable[SessionNode], leaf_id: str | None) -> SessionGraph:
        """A graph with ``nodes`` added last, in order, and ``leaf_id`` as
        its leaf: what appending each and then moving the leaf gives, made
        as one new graph. Raises ``ValueError`` when an id is taken."""
        vector, index, ordered, chain = self._nodes, self._index, self._ordered, self._chain
        last = vector[-1].node_id if vector else None
        summaries = self.summaries
        added: list[SessionNode] = []
        tip = self.leaf_id if self._path is not None else None
        chained = self._path is not None
        for node in nodes:
            if node.node_id in index:
                raise ValueError(f"node id {node.node_id!r} is already in the graph")
            parent = node.parent_id
            ordered = ordered and (parent is None or parent in index)
            chain = chain and parent == last
            last = node.node_id
            index = index.set(node.node_id, len(vector))
            vector = vector.append(node)
            summaries += node.kind == NodeKind.SUMMARY
            added.append(node)
            chained = chained and parent == tip
            tip = node.node_id
        graph = SessionGraph(vector, index, leaf_id, ordered, chain, summaries)
        if chained and added and tip == leaf_id and self._path is not None:
            # A chain on the leaf, ending at the new leaf: the walk from it
            # runs down the chain and on as the old one did.
            object.__setattr__(graph, "_path", self._path + tuple(added))
        return graph

    def with_leaf(self, leaf_id: str | None) -> SessionGraph:
        """The same nodes with another leaf."""
        return SessionGraph(
            self._nodes, self._index, leaf_id, self._ordered, self._chain, self.summaries
        )

    def with_parent(self, node_id: str, parent_id: str | None) -> SessionGraph:
        """The graph with one node's parent pointer changed."""
        index = self._index
        position = index[node_id]
        node = evolve(self._nodes[position], parent_id=parent_id)
        ordered = self._ordered and (parent_id is None or index.get(parent_id, position) < position)
        # Still a chain only if the pointer did not move (worked out again
        # on a rebuild, not here).
        chain = self._chain and parent_id == self._nodes[position].parent_id
        return SessionGraph(
            self._nodes.set(position, node), index, self.leaf_id, ordered, chain, self.summaries
        )

    def without(self, node_ids: Iterable[str]) -> SessionGraph:
        """The graph without those nodes (an O(n) rebuild, for rare edits).

        The leaf is kept even when it names a removed node; callers remove
        only nodes off the active path.
        """
        gone = set(node_ids)
        return SessionGraph.from_nodes(
            (node for node in self._nodes if node.node_id not in gone), self.leaf_id
        )

    # ---- the active path -------------------------------------------------

    def is_path(self) -> bool:
        """True when the nodes, in insertion order, are the active path
        itself: the first a root, each next one a child of the one before,
        the last the leaf (what an active-path read gives). One pass,
        without lookups."""
        nodes = self._nodes
        return self._chain and bool(nodes) and nodes[-1].node_id == self.leaf_id

    def active_path(self) -> tuple[SessionNode, ...]:
        """The chain of parents from the leaf up to a root, root first.

        The walk stops at a missing parent or at a node seen before, so it
        terminates on corrupt graphs too. Its cost follows the path length.
        """
        if self._path is not None:
            return self._path
        nodes, index, current = self._nodes, self._index, self.leaf_id
        position = index.get(current) if current is not None else None
        if position is None:
            found: tuple[SessionNode, ...] = ()
        elif self._chain:
            # Each node continues the one before: the path is the front.
            found = tuple(itertools.islice(nodes, position + 1))
        elif self._ordered:
            found = _ordered_path(nodes, index, position)
        else:
            found = _walked_path(nodes, index, position)
        object.__setattr__(self, "_path", found)
        return found

    def path_root(self) -> SessionNode | None:
        """The first node of :meth:`active_path` (``None`` when it is
        empty), found without building the path."""
        nodes, index = self._nodes, self._index
        root: SessionNode | None = None
        current = self.leaf_id
        for _ in range(len(nodes)):  # a path holds each node at most once
            position = index.get(current) if current is not None else None
            if position is None:
                return root
            root = nodes[position]
            current = root.parent_id
        if current is not None and current in index:  # the walk went round a loop
            return self.active_path()[0]
        return root

    def active_path_ids(self) -> frozenset[str]:
        """The ids of the nodes on the active path."""
        return frozenset(node.node_id for node in self.active_path())

    def orphan_ids(self) -> tuple[str, ...]:
        """Ids of the nodes not on the active path, in insertion order."""
        on_path = self.active_path_ids()
        return tuple(node.node_id for node in self._nodes if node.node_id not in on_path)


def _ordered_path(
    nodes: PVector[SessionNode], index: immutables.Map[str, int], position: int
) -> tuple[SessionNode, ...]:
    """The path up from the node at ``position`` of an ordered graph: each
    parent stands before its child, so the walk cannot loop and needs no
    record of what it saw. A parent is most often the node inserted just
    before its child: looked at there before it is looked up."""
    path: list[SessionNode] = []
    append = path.append
    get = index.get
    while True:
        node = nodes[position]
        append(node)
        parent = node.parent_id
        if parent is None:
            break
        if position and nodes[position - 1].node_id == parent:
            position -= 1
            continue
        found = get(parent)
        if found is None:  # cannot happen in an ordered graph; stop as a walk would
            break
        position = found
    path.reverse()
    return tuple(path)


def _walked_path(
    nodes: PVector[SessionNode], index: immutables.Map[str, int], position: int | None
) -> tuple[SessionNode, ...]:
    """The path up from the node at ``position`` of any graph: it stops at
    a missing parent or at a node seen before."""
    path: list[SessionNode] = []
    seen: set[str] = set()
    while position is not None:
        node = nodes[position]
        if node.node_id in seen:
            break
        seen.add(node.node_id)
        path.append(node)
        if node.parent_id is None:
            break
        position = index.get(node.parent_id)
    path.reverse()
    return tuple(path)


def is_chain(nodes: Sequence[SessionNode]) -> bool:
    """True when ``nodes`` are one chain in order: the first a root, each
    next one a child of the one before."""
    if not nodes or nodes[0].parent_id is not None:
        return False
    # Two lists compared in C: faster than a comparison per pair in Python.
    parents = list(map(_PARENT, itertools.islice(nodes, 1, None)))
    return parents == list(map(_ID, itertools.islice(nodes, len(nodes) - 1)))


# ---- healing -------------------------------------------------------------


@attrs.frozen
class ParentRepair:
    """A node whose parent pointer healing cut (it became a root).

    ``reason`` is ``"dangling"`` when the parent named no node of the graph,
    ``"cycle"`` when following parents led back to the node itself.
    """

    node_id: str
    old_parent_id: str
    reason: Literal["dangling", "cycle"]


@attrs.frozen
class LeafRepair:
    """The leaf named no node; healing moved it to the newest message node."""

    old_leaf_id: str
    new_leaf_id: str | None


@attrs.frozen
class HealReport:
    """Exactly the repairs :func:`heal_graph` made, in the order it made them.

    ``duplicates_dropped`` names one entry per later copy of an id that was
    dropped (the first copy is kept).
    """

    duplicates_dropped: tuple[str, ...] = ()
    parents_cut: tuple[ParentRepair, ...] = ()
    leaf: LeafRepair | None = None

    @property
    def is_clean(self) -> bool:
        """True when the graph needed no repair."""
        return not (self.duplicates_dropped or self.parents_cut or self.leaf)


CLEAN_REPORT = HealReport()


def heal_graph(graph: SessionGraph) -> tuple[SessionGraph, HealReport]:
    """Repair a possibly corrupt graph; O(n) in its size.

    The result has unique node ids (the first copy of an id wins), no parent
    cycles (each cycle is cut at its earliest inserted node), only parents
    that are nodes of the graph (others become roots), and a leaf that is a
    node of the graph or ``None`` (a dangling leaf falls back to the most
    recent message node). Every message node id of the input survives.

    A well-formed graph comes back as the very same object with a clean
    report, and healing a healed graph changes nothing.
    """
    if _well_formed(graph):
        return graph, CLEAN_REPORT
    return _repair(graph)


def _repair(graph: SessionGraph) -> tuple[SessionGraph, HealReport]:
    """The full algorithm of :func:`heal_graph`: three linear passes."""
    nodes: list[SessionNode] = []
    position: dict[str, int] = {}
    duplicates: list[str] = []
    for node in graph:
        if node.node_id in position:
            duplicates.append(node.node_id)
        else:
            position[node.node_id] = len(nodes)
            nodes.append(node)

    cuts: list[ParentRepair] = []
    for i, node in enumerate(nodes):
        if node.parent_id is not None and node.parent_id not in position:
            cuts.append(ParentRepair(node.node_id, node.parent_id, "dangling"))
            nodes[i] = evolve(node, parent_id=None)

    cuts.extend(_cut_cycles(nodes, position))

    leaf_repair = None
    leaf_id = graph.leaf_id
    if leaf_id is not None and leaf_id not in position:
        leaf_id = next((n.node_id for n in reversed(nodes) if n.kind is NodeKind.MESSAGE), None)
        leaf_repair = LeafRepair(graph.leaf_id, leaf_id)  # type: ignore[arg-type]

    if not (duplicates or cuts or leaf_repair):
        return graph, CLEAN_REPORT
    report = HealReport(tuple(duplicates), tuple(cuts), leaf_repair)
    return SessionGraph.from_nodes(nodes, leaf_id), report


def _well_formed(graph: SessionGraph) -> bool:
    """True when ``graph`` is known to need no repair: its nodes are ordered
    (see :class:`SessionGraph`) and its leaf is a node. Graphs built by
    edits and read back in insertion order always are; any other graph goes
    through the full algorithm, whose verdict on it is the same."""
    leaf = graph.leaf_id
    return graph._ordered and (leaf is None or leaf in graph._index)


_UNORDERED, _ORDERED, _CHAIN = 0, 1, 2


def _order(nodes: PVector[SessionNode], ids: list[str], index: dict[str, int]) -> int:
    """How ``nodes``, whose ids are ``ids`` (in order) with first positions
    ``index``, stand: unordered, ordered, or ordered as one chain (no node
    but the first is a root, and each continues the one before); one
    linear pass."""
    count = len(ids)
    if len(index) != count:
        return _UNORDERED  # a duplicate id
    if not count:
        return _CHAIN
    if nodes[0].parent_id is not None:
        return _UNORDERED  # the first node's parent cannot stand before it
    # Most nodes continue the node inserted just before them: compare each
    # parent with the id before it (no lookups, no list of parents made),
    # then look up only the others.
    follows_not = map(operator.ne, map(_PARENT, itertools.islice(nodes, 1, None)), ids)
    get = index.get
    order = _CHAIN
    for position in itertools.compress(range(1, count), follows_not):
        parent = nodes[position].parent_id
        if parent is not None and get(parent, count) >= position:
            return _UNORDERED
        order = _ORDERED
    return order


_UNSEEN, _ON_WALK, _DONE = 0, 1, 2


def _cut_cycles(nodes: list[SessionNode], position: dict[str, int]) -> list[ParentRepair]:
    """Cut every parent cycle in place; each node is walked over once."""
    colour = [_UNSEEN] * len(nodes)
    cuts: list[ParentRepair] = []
    for start in range(len(nodes)):
        walk: list[int] = []
        current: int | None = start
        while current is not None and colour[current] == _UNSEEN:
            colour[current] = _ON_WALK
            walk.append(current)
            parent = nodes[current].parent_id
            current = None if parent is None else position[parent]
        if current is not None and colour[current] == _ON_WALK:
            # The walk closed a loop: the loop is the walk's tail from
            # ``current``. Cutting at its earliest node makes the choice
            # independent of where the walk began.
            loop = walk[walk.index(current) :]
            victim = min(loop)
            node = nodes[victim]
            assert node.parent_id is not None
            cuts.append(ParentRepair(node.node_id, node.parent_id, "cycle"))
            nodes[victim] = evolve(node, parent_id=None)
        for index in walk:
            colour[index] = _DONE
    return cuts
