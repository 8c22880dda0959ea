"""The healing properties as plain checks, to run on your own session data.

>>> from lash_machine.testing.healing import check_healing
>>> from lash_machine import SessionGraph
>>> check_healing(SessionGraph.empty())

:func:`check_healing` raises ``AssertionError`` naming the first property
that fails. Feed it graphs from your store (``SessionGraph.from_nodes``), or
the strategies of :mod:`lash_machine.testing.strategies` under hypothesis.
"""

from __future__ import annotations

from ..graph import SessionGraph, heal_graph
from ..model import NodeKind, SessionNode

__all__ = ["check_healing", "graph_problems"]


def graph_problems(graph: SessionGraph) -> list[str]:
    """What keeps ``graph`` from being well-formed (empty when it is)."""
    problems: list[str] = []
    seen: set[str] = set()
    for node in graph:
        if node.node_id in seen:
            problems.append(f"duplicate node id {node.node_id!r}")
        seen.add(node.node_id)
    for node in graph:
        if node.parent_id is not None and node.parent_id not in seen:
            problems.append(f"node {node.node_id!r} has dangling parent {node.parent_id!r}")
    if graph.leaf_id is not None and graph.leaf_id not in seen:
        problems.append(f"leaf {graph.leaf_id!r} is not a node")
    problems.extend(_cycles(graph))
    return problems


def _cycles(graph: SessionGraph) -> list[str]:
    parent = {node.node_id: node.parent_id for node in graph}
    done: set[str] = set()
    found: list[str] = []
    for start in parent:
        walk: list[str] = []
        on_walk: set[str] = set()
        current: str | None = start
        while current is not None and current in parent and current not in done:
            if current in on_walk:
                found.append(f"parent cycle through {current!r}")
                break
            on_walk.add(current)
            walk.append(current)
            current = parent[current]
        done.update(walk)
    return found


def check_healing(graph: SessionGraph) -> None:
    """Assert every healing property on ``graph``.

    * the healed graph is well-formed (unique ids, no cycles, no dangling
      parents, the leaf is a node or ``None``);
    * idempotent: healing it again changes nothing and reports nothing;
    * conservative: a well-formed input comes back unchanged, report clean;
    * lossless: every message node id of the input is in the output;
    * a dangling leaf falls back to the most recent message node;
    * the report lists exactly the repairs made.
    """
    healed, report = heal_graph(graph)
    problems = graph_problems(healed)
    assert not problems, f"healed graph is not well-formed: {problems}"

    again, second = heal_graph(healed)
    assert second.is_clean and again == healed, "healing is not idempotent"

    if not graph_problems(graph):
        assert report.is_clean and healed == graph, "a well-formed graph was changed"

    messages_in = {n.node_id for n in graph if n.kind is NodeKind.MESSAGE}
    ids_out = {n.node_id for n in healed}
    assert messages_in <= ids_out, f"message nodes lost: {sorted(messages_in - ids_out)}"

    ids_in = [n.node_id for n in graph]
    if graph.leaf_id is not None and graph.leaf_id not in ids_in:
        last_message = next(
            (n.node_id for n in reversed(healed.nodes) if n.kind is NodeKind.MESSAGE), None
        )
        assert report.leaf is not None, "a dangling leaf was not reported"
        assert healed.leaf_id == last_message, (
            "a dangling leaf did not fall back to the newest message"
        )
    else:
        assert report.leaf is None and healed.leaf_id == graph.leaf_id, "a valid leaf was moved"

    # The report is exact: replaying it on the input gives the output.
    expected_dropped = len(ids_in) - len(set(ids_in))
    assert len(report.duplicates_dropped) == expected_dropped, "duplicate report is wrong"
    cut = {r.node_id: r for r in report.parents_cut}
    first: dict[str, SessionNode] = {}
    for node in graph:
        first.setdefault(node.node_id, node)
    for node in healed:
        original = first[node.node_id]
        if node.node_id in cut:
            assert node.parent_id is None, f"reported cut of {node.node_id!r} not applied"
            assert cut[node.node_id].old_parent_id == original.parent_id, "cut reports wrong parent"
        else:
            assert node == original, f"node {node.node_id!r} changed without a report"
