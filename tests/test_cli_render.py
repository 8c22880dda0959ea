"""The CLI's pure parts, in-process: trees, labels, repairs, redaction."""

from __future__ import annotations

import time

import pytest

from lash_machine import NodeKind, SessionGraph, SessionNode, heal_graph
from lash_machine.cli.marks import marks_of
from lash_machine.cli.render import (
    ASCII,
    legend,
    node_label,
    printable,
    repair_lines,
    short_ids,
    table,
    tree_lines,
)
from lash_machine.stores._dsn import redact, scrub, secrets_of


def node(
    node_id: str, parent: str | None, text: str = "", kind: NodeKind = NodeKind.MESSAGE
) -> SessionNode:
    body = {"role": "user", "content": text or node_id}
    return SessionNode(node_id, parent, kind, body, None, 0.0)


def test_a_fork_indents_and_a_chain_keeps_its_column() -> None:
    graph = SessionGraph.from_nodes(
        [
            node("a", None),
            node("b", "a"),
            node("c", "b"),
            node("d", "c"),
            node("e", "b"),
            node("f", "e"),
        ],
        "f",
    )
    assert tree_lines(graph) == [
        "*  a  user: a",
        "*  b  user: b",
        "o  ├─ c  user: c",
        "o  │  d  user: d",
        "*  └─ e  user: e",
        "*     f  user: f  → leaf",
    ]
    assert tree_lines(graph, glyphs=ASCII)[2:4] == ["o  |- c  user: c", "o  |  d  user: d"]
    assert legend(graph) == "* active path   o orphan (off the active path)"
    assert legend(SessionGraph.from_nodes([node("a", None)], "a")) == "* active path"


def test_several_roots_fork_at_the_top() -> None:
    graph = SessionGraph.from_nodes([node("a", None), node("b", None), node("c", "b")], "c")
    assert tree_lines(graph) == ["o  ├─ a  user: a", "*  └─ b  user: b", "*     c  user: c  → leaf"]


def test_broken_graphs_draw_every_node_once() -> None:
    # x's parent is missing; p and q are a parent cycle nothing reaches.
    graph = SessionGraph.from_nodes([node("x", "ghost"), node("p", "q"), node("q", "p")], "x")
    lines = tree_lines(graph)
    assert lines[0] == "*  x  user: x  (parent ghost is missing)  → leaf"
    assert sorted(line.split()[1] for line in lines) == ["p", "q", "x"]


def test_a_deep_path_is_drawn_without_recursion() -> None:
    depth = 20_000
    nodes = [node(f"n{i}", f"n{i - 1}" if i else None) for i in range(depth)]
    start = time.perf_counter()
    lines = tree_lines(SessionGraph.from_nodes(nodes, f"n{depth - 1}"))
    assert len(lines) == depth
    assert time.perf_counter() - start < 5


def test_long_labels_are_cut_to_the_width() -> None:
    graph = SessionGraph.from_nodes([node("a", None, "word " * 100)], "a")
    [line] = tree_lines(graph, width=60)
    assert len(line) == 60
    assert line.endswith("…  → leaf")


def test_labels_summarise_bodies_and_never_carry_control_characters() -> None:
    assert node_label(node("a", None, "line one\n\tline two")) == "user: line one line two"
    raw = SessionNode("e", None, NodeKind.EVENT, {"tool": "x", "n": [1, 2]}, None, 0.0)
    assert node_label(raw) == '[event] {"tool":"x","n":[1,2]}'
    plain = SessionNode("s", None, NodeKind.PLUGIN, "\x1b[31mred\x1b[0m", None, 0.0)
    assert node_label(plain) == "[plugin] ?[31mred?[0m"
    assert printable("a\x07b\u202ec") == "a?b?c"


def test_short_ids_grow_until_they_differ() -> None:
    shorten = short_ids(["0123456789aa", "0123456789ab", "fffffffffffff"])
    assert shorten("0123456789aa") == "0123456789aa"
    assert shorten("fffffffffffff") == "ffffffffffff"
    assert short_ids(["abcdefghij"])("abcdefghij") == "abcdefgh"


def test_repairs_are_told_in_words() -> None:
    graph = SessionGraph.from_nodes([node("a", "gone"), node("p", "q"), node("q", "p")], "lost")
    _, report = heal_graph(graph)
    assert repair_lines(report) == [
        "node a: its parent gone is missing; the node becomes a root",
        "node p: its parent q closes a parent cycle; the node becomes a root",
        "leaf lost is missing: the leaf moves to the newest message, q",
    ]
    assert repair_lines(heal_graph(SessionGraph.from_nodes([node("a", None)], "a"))[1]) == []


def test_table_aligns_columns() -> None:
    assert table(("ID", "N"), [("a", "1"), ("bbb", "22")], right={1}) == [
        "ID    N",
        "a     1",
        "bbb  22",
    ]


@pytest.mark.parametrize(
    ("dsn", "shown", "secret"),
    [
        ("postgresql://me:s3cr%40t@db:5432/x", "postgresql://me:***@db:5432/x", "s3cr@t"),
        ("host=db password='pa ss' user=me", "host=db password=*** user=me", "pa ss"),
        ("host=db password=plain", "host=db password=***", "plain"),
        (
            "postgresql://db/x?user=me&password=qq&sslmode=require",
            "postgresql://db/x?user=me&password=***&sslmode=require",
            "qq",
        ),
        ("postgresql://me@db/x", "postgresql://me@db/x", None),
    ],
)
def test_a_dsn_password_is_never_shown(dsn: str, shown: str, secret: str | None) -> None:
    assert redact(dsn) == shown
    secrets = secrets_of(dsn)
    if secret is None:
        assert secrets == []
    else:
        assert secret in secrets
        assert scrub(f"failed for {secret} at {dsn}", dsn) == f"failed for *** at {shown}"
        assert secret not in scrub(f"failed for {secret}", dsn)


def _summary(node_id: str, through: str, kept: str | None) -> SessionNode:
    body = {"summary": f"all up to {through}", "through": through, "kept": kept}
    return SessionNode(node_id, None, NodeKind.SUMMARY, body, None, 0.0)


def test_marks_follow_pins_up_and_compactions_back() -> None:
    # a -> b -> c; the summary s replaced a, b; c hangs under s; x is a
    # pinned orphan under b, y an orphan under x.
    graph = SessionGraph.from_nodes(
        [
            node("a", None),
            node("b", "a"),
            node("c", "s"),
            node("x", "b"),
            node("y", "x"),
            _summary("s", "b", "c"),
        ],
        "c",
    )
    marks = marks_of(graph, ["b", "x"])
    assert marks.held == {"a": "b", "b": "b", "x": "x"}
    assert marks.kept_orphans(graph) == ("a", "b", "x")
    assert marks.compacted == {"a": "s", "b": "s"}
    assert tree_lines(graph, marks=marks)[-2:] == [
        "*  └─ s  [summary of 2 nodes through b] all up to b",
        "*     c  user: c  → leaf",
    ]
    # Undone (c back under b): the originals are on the active path again.
    undone = graph.with_parent("c", "b")
    assert marks_of(undone, ["x"]).compacted == {}
    # A summary of a path no longer stored, and a parent cycle, are described.
    gone = SessionGraph.from_nodes(
        [_summary("s", "ghost", None), node("p", "q"), node("q", "p")], "s"
    )
    marks = marks_of(gone, ["p"])
    assert marks.held == {"p": "p", "q": "p"}
    assert tree_lines(gone, marks=marks)[0] == (
        "*  s  [summary through ghost, which is not stored] all up to ghost  → leaf"
    )
