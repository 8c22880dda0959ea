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
