"""Healing: the shipped properties on arbitrary, corrupted and well-formed graphs."""

from __future__ import annotations

from hypothesis import given

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
