"""SessionGraph's walks agree with each other on any graph, corrupt ones included."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lash_machine import NodeKind, SessionNode
from lash_machine.graph import SessionGraph
from lash_machine.testing.strategies import corrupt_graphs, well_formed_graphs


@given(st.one_of(corrupt_graphs(), well_formed_graphs()))
def test_the_path_root_is_the_first_node_of_the_active_path(graph: SessionGraph) -> None:
    path = graph.active_path()
    assert graph.path_root() == (path[0] if path else None)


def test_the_path_root_of_a_loop_is_where_the_walk_closes_it() -> None:
    def node(node_id: str, parent: str | None) -> SessionNode:
        return SessionNode(node_id, parent, NodeKind.MESSAGE, {}, None, 0.0)

    # x -> a -> b -> a, beside an unrelated c: the walk from x stops at b.
    graph = SessionGraph.from_nodes(
        [node("x", "a"), node("a", "b"), node("b", "a"), node("c", None)], "x"
    )
    assert [n.node_id for n in graph.active_path()] == ["b", "a", "x"]
    root = graph.path_root()
    assert root is not None and root.node_id == "b"


@given(st.one_of(corrupt_graphs(), well_formed_graphs()), st.data())
def test_a_graph_counts_its_summaries_through_every_edit(
    graph: SessionGraph, data: st.DataObject
) -> None:
    def counted(g: SessionGraph) -> int:
        return sum(1 for n in g if n.kind == NodeKind.SUMMARY)

    assert graph.summaries == counted(graph)
    more = [
        SessionNode(f"new{i}", None, kind, {}, None, 0.0)
        for i, kind in enumerate(data.draw(st.lists(st.sampled_from(list(NodeKind)), max_size=4)))
    ]
    if any(n.node_id in graph for n in more):
        return
    grown = graph.extended(more, graph.leaf_id)
    assert grown.summaries == counted(grown)
    for node in more:
        graph = graph.append(node)
    assert graph.summaries == grown.summaries
    ids = [n.node_id for n in grown]
    if ids:
        gone = data.draw(st.sets(st.sampled_from(ids)))
        assert grown.without(gone).summaries == counted(grown.without(gone))
        first = ids[0]
        assert grown.with_parent(first, None).summaries == grown.summaries
        assert grown.with_leaf(first).summaries == grown.summaries


def _walked(graph: SessionGraph) -> tuple[SessionNode, ...]:
    """The active path worked out afresh (nothing cached)."""
    return SessionGraph.from_nodes(list(graph), graph.leaf_id).active_path()


@given(st.one_of(corrupt_graphs(), well_formed_graphs()), st.data())
def test_an_active_path_handed_on_by_an_append_is_the_path_walked_afresh(
    graph: SessionGraph, data: st.DataObject
) -> None:
    if data.draw(st.booleans()):
        graph.active_path()  # worked out and kept before the append
    ids = [n.node_id for n in graph]
    # A chain on the leaf (the usual append), or nodes hung anywhere,
    # ids possibly naming a missing parent or the dangling leaf.
    count = data.draw(st.integers(0, 4))
    new_ids = data.draw(
        st.lists(
            st.sampled_from([f"n{i}" for i in range(6)] + [graph.leaf_id or "x", "x"]),
            min_size=count,
            max_size=count,
            unique=True,
        ).filter(lambda chosen: not set(chosen) & set(ids))
    )
    parent = graph.leaf_id
    nodes = []
    for node_id in new_ids:
        if data.draw(st.booleans()):
            parent = data.draw(st.sampled_from([*ids, *new_ids, None, "gone"]))
        nodes.append(SessionNode(node_id, parent, NodeKind.MESSAGE, {}, None, 0.0))
        parent = node_id
    leaf = data.draw(st.sampled_from([parent, graph.leaf_id, *new_ids, "gone"]))
    grown = graph.extended(nodes, leaf)
    assert grown.active_path() == _walked(grown)
    assert graph.active_path() == _walked(graph)


def test_a_copy_made_with_changes_works_its_path_out_afresh() -> None:
    from lash_machine._records import evolve

    a, b = (SessionNode(i, None, NodeKind.MESSAGE, {}, None, 0.0) for i in "ab")
    graph = SessionGraph.from_nodes([a, b], "a")
    assert graph.active_path() == (a,)
    assert evolve(graph, leaf_id="b").active_path() == (b,)


def _naive_path(nodes: list[SessionNode], leaf_id: str | None) -> tuple[SessionNode, ...]:
    """The active path by the plainest walk there is: the first node of
    each id, parents followed until a root, a missing parent or a repeat."""
    first: dict[str, SessionNode] = {}
    for node in nodes:
        first.setdefault(node.node_id, node)
    path: list[SessionNode] = []
    seen: set[str] = set()
    current = leaf_id
    while current is not None and current in first and current not in seen:
        seen.add(current)
        path.append(first[current])
        current = first[current].parent_id
    return tuple(reversed(path))


@given(st.one_of(corrupt_graphs(), well_formed_graphs()), st.data())
def test_the_active_path_of_a_read_graph_is_the_plain_walk_from_any_leaf(
    graph: SessionGraph, data: st.DataObject
) -> None:
    # Chains (a path read), ordered graphs and corrupt ones each take their
    # own way to the path; every node may be the leaf, or none, or a gone id.
    nodes = list(graph)
    chain = data.draw(st.booleans())
    if chain:  # the graph's nodes re-hung as one chain, as a path read returns them
        nodes = [
            SessionNode(n.node_id, nodes[i - 1].node_id if i else None, n.kind, n.body, None, 0.0)
            for i, n in enumerate(nodes)
        ]
    leaf = data.draw(st.sampled_from([*(n.node_id for n in nodes), None, "gone"]))
    read = SessionGraph.from_nodes(nodes, leaf)
    assert read.active_path() == _naive_path(nodes, leaf)
    assert read.active_path() is read.active_path()  # worked out once


def test_the_active_path_skips_a_sibling_and_stops_at_a_loop() -> None:
    def node(node_id: str, parent: str | None) -> SessionNode:
        return SessionNode(node_id, parent, NodeKind.MESSAGE, {}, None, 0.0)

    # Ordered, with siblings side by side: the leaf's parent is not the node before it.
    siblings = [node("r", None), node("a", "r"), node("b", "r")]
    assert SessionGraph.from_nodes(siblings, "b").active_path() == _naive_path(siblings, "b")
    # Unordered, with a loop the walk must leave.
    loop = [node("x", "y"), node("y", "x"), node("z", "y")]
    assert SessionGraph.from_nodes(loop, "z").active_path() == _naive_path(loop, "z")
