"""Healing: the shipped properties on arbitrary, corrupted and well-formed graphs."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from lash_machine import NodeKind, SessionGraph, SessionNode, heal_graph
from lash_machine.testing.healing import check_healing, graph_problems
from lash_machine.testing.strategies import corrupt_graphs, well_formed_graphs


def node(node_id: str, parent: str | None, kind: NodeKind = NodeKind.MESSAGE) -> SessionNode:
    return SessionNode(node_id, parent, kind, {"t": node_id}, None, 0.0)


@given(corrupt_graphs())
def test_healing_properties_hold_on_corrupt_graphs(graph: SessionGraph) -> None:
    check_healing(graph)


@given(well_formed_graphs())
def test_well_formed_graphs_come_back_as_the_same_object(graph: SessionGraph) -> None:
    healed, report = heal_graph(graph)
    assert healed is graph
    assert report.is_clean
    assert graph_problems(graph) == []


def test_cycle_is_cut_at_its_earliest_node_wherever_the_walk_starts() -> None:
    # c -> b -> a -> c: a is the earliest inserted node of the loop.
    graph = SessionGraph.from_nodes([node("a", "c"), node("b", "a"), node("c", "b")], "c")
    healed, report = heal_graph(graph)
    assert [(r.node_id, r.old_parent_id, r.reason) for r in report.parents_cut] == [
        ("a", "c", "cycle")
    ]
    assert healed.get("a") == node("a", None)
    assert [n.node_id for n in healed.active_path()] == ["a", "b", "c"]


def test_dangling_parent_becomes_a_root_and_leaf_falls_back_to_newest_message() -> None:
    graph = SessionGraph.from_nodes(
        [node("a", None), node("b", "zzz"), node("e", "a", NodeKind.EVENT)], "gone"
    )
    healed, report = heal_graph(graph)
    assert healed.get("b") == node("b", None)
    assert report.leaf is not None and report.leaf.new_leaf_id == "b"
    assert healed.leaf_id == "b"


def test_dangling_leaf_without_messages_falls_back_to_none() -> None:
    graph = SessionGraph.from_nodes([node("e", None, NodeKind.EVENT)], "gone")
    healed, report = heal_graph(graph)
    assert healed.leaf_id is None
    assert report.leaf is not None and report.leaf.old_leaf_id == "gone"


def test_duplicates_keep_the_first_copy_and_are_reported_once_each() -> None:
    graph = SessionGraph.from_nodes([node("a", None), node("a", "x"), node("a", "y")], "a")
    healed, report = heal_graph(graph)
    assert healed.nodes == (node("a", None),)
    assert report.duplicates_dropped == ("a", "a")


def test_self_parent_is_a_cycle() -> None:
    healed, report = heal_graph(SessionGraph.from_nodes([node("a", "a")], "a"))
    assert healed.get("a") == node("a", None)
    assert report.parents_cut[0].reason == "cycle"


@given(corrupt_graphs())
def test_the_quick_check_never_hides_a_repair(graph: SessionGraph) -> None:
    """heal_graph answers well-formed graphs from a one-pass check; the full
    algorithm must agree with whatever heal_graph answers."""
    from lash_machine.graph import _repair, _well_formed

    healed, report = heal_graph(graph)
    full_healed, full_report = _repair(graph)
    assert report == full_report
    assert healed == full_healed
    if _well_formed(graph):
        assert full_report.is_clean


@given(well_formed_graphs())
def test_the_quick_check_passes_every_well_formed_graph(graph: SessionGraph) -> None:
    from lash_machine.graph import _well_formed

    # Graphs built by edits keep parents before children: the quick path.
    assert _well_formed(graph)


def test_the_quick_check_refuses_a_parent_that_comes_later() -> None:
    from lash_machine.graph import _well_formed

    later = SessionGraph.from_nodes([node("b", "a"), node("a", None)], "b")
    assert not _well_formed(later)
    assert heal_graph(later)[0] is later  # still well formed: the full pass says so
    loop = SessionGraph.from_nodes([node("a", "b"), node("b", "a")], "a")
    assert not _well_formed(loop) and not heal_graph(loop)[1].is_clean
    selfish = SessionGraph.from_nodes([node("a", None), node("b", "b")], "b")
    assert not _well_formed(selfish) and not heal_graph(selfish)[1].is_clean
    dangling = SessionGraph.from_nodes([node("a", None), node("b", "x")], "b")
    assert not _well_formed(dangling) and not heal_graph(dangling)[1].is_clean


def _parents_first(graph: SessionGraph) -> bool:
    """The ordered-graph rule, checked the slow, obvious way: unique ids,
    each parent before its child, a leaf that is a node."""
    seen: set[str] = set()
    for each in graph:
        if each.node_id in seen or (each.parent_id is not None and each.parent_id not in seen):
            return False
        seen.add(each.node_id)
    return graph.leaf_id is None or graph.leaf_id in seen


def _one_chain(graph: SessionGraph) -> bool:
    """No nodes, or unique ids with the first a root and each next one a
    child of the one before, checked the slow, obvious way."""
    nodes = graph.nodes
    return len({each.node_id for each in nodes}) == len(nodes) and all(
        each.parent_id == (nodes[i - 1].node_id if i else None) for i, each in enumerate(nodes)
    )


def _chain_of(length: int) -> SessionGraph:
    ids = [f"c{i}" for i in range(length)]
    return SessionGraph.from_nodes(
        [node(i, ids[k - 1] if k else None) for k, i in enumerate(ids)], ids[-1] if ids else None
    )


_chains = st.integers(0, 6).map(_chain_of)


@given(well_formed_graphs())
def test_a_graph_read_back_knows_whether_it_is_one_chain(graph: SessionGraph) -> None:
    for nodes in (graph.nodes, [n for n in graph if n.parent_id is None][:1] or graph.nodes):
        rebuilt = SessionGraph.from_nodes(nodes, graph.leaf_id)
        assert rebuilt._chain == _one_chain(rebuilt)
    path = graph.active_path()
    read = SessionGraph.from_nodes(path, path[-1].node_id if path else None)
    assert read._chain and read.is_path() == bool(path)


_EDITS = st.lists(
    st.tuples(
        st.sampled_from(["append", "extend", "leaf", "parent", "without"]),
        st.integers(0, 12),
        st.integers(-1, 12),
    ),
    max_size=25,
)


@given(
    st.one_of(_chains, _chains, well_formed_graphs(12), corrupt_graphs(12)),
    _EDITS,
)
def test_every_graph_knows_whether_it_is_ordered_through_any_edits(
    graph: SessionGraph, edits: list[tuple[str, int, int]]
) -> None:
    """The verdict a graph carries (what heal_graph trusts) is the slow
    check's, after from_nodes and after every kind of edit, including ones
    that break the order (a parent moved later, a leaf that names no node);
    a graph out of order stays marked so until it is rebuilt."""
    from lash_machine.graph import _well_formed

    assert _well_formed(graph) == _parents_first(graph)
    assert graph._chain == _one_chain(graph)
    fresh = iter(range(10**6))
    for what, a, b in edits:
        ids = [n.node_id for n in graph]
        was, was_chain = graph._ordered, graph._chain

        def name(i: int, ids: list[str] = ids) -> str | None:
            return None if i < 0 or not ids else ids[i % len(ids)]

        if what == "append":
            parent = "missing" if a % 4 == 0 else name(b)
            graph = graph.append(node(f"new{next(fresh)}", parent))
        elif what == "extend":
            first, second = f"new{next(fresh)}", f"new{next(fresh)}"
            graph = graph.extended(
                [node(first, name(b)), node(second, first if a % 2 else "missing")],
                second if a % 3 else "nowhere",
            )
        elif what == "leaf":
            graph = graph.with_leaf(name(a) if b != 12 else "nowhere")
        elif what == "parent" and ids:
            graph = graph.with_parent(ids[a % len(ids)], name(b))
        elif what == "without" and ids:
            graph = graph.without([ids[a % len(ids)]])
        # Never ordered when it is not; exactly when it was before the edit
        # (an edit does not work out again a verdict it was not given).
        assert _well_formed(graph) <= _parents_first(graph), what
        if was or what == "without":
            assert _well_formed(graph) == _parents_first(graph), what
        # The same for being one chain (what is_path answers from), except
        # that moving a parent pointer is never taken to make one.
        assert graph._chain <= (_one_chain(graph) and graph._ordered), what
        if (was_chain and what != "parent") or what == "without":
            assert graph._chain == _one_chain(graph), what
        if graph._chain:
            last = graph.nodes[-1].node_id if len(graph) else None
            assert graph.is_path() == (last is not None and last == graph.leaf_id)
        if _well_formed(graph):
            assert heal_graph(graph)[0] is graph and graph_problems(graph) == []


def test_edits_keep_a_chain_only_while_each_node_continues_the_last() -> None:
    chain = _chain_of(3)
    assert chain.is_path() and chain.extended([node("d", "c2")], "d").is_path()
    assert chain.append(node("d", "c2")).with_leaf("d").is_path()
    assert not chain.extended([node("d", "c2"), node("e", "c0")], "e")._chain
    assert not chain.append(node("d", "c1"))._chain
    assert not chain.with_parent("c2", "c0")._chain
    assert not chain.with_leaf("c1").is_path()  # a chain, but not to its leaf
