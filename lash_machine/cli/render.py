"""Text for people: session trees, node labels, repair lists, tables.

Everything here is pure (text in, lines out), so it is tested without a
database. Stored text is untrusted: control characters are replaced before
anything reaches a terminal.
"""

from __future__ import annotations

import datetime
import itertools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import TextIO

import attrs

from ..graph import HealReport, SessionGraph
from ..model import JSON, NodeKind, SessionNode
from .marks import Compaction, Marks

__all__ = [
    "ASCII",
    "UNICODE",
    "Glyphs",
    "glyphs_for",
    "iso_time",
    "legend",
    "node_label",
    "printable",
    "repair_lines",
    "short_ids",
    "summary_label",
    "table",
    "tree_lines",
    "truncate",
]

#: How many hex digits of a uuid are enough to tell nodes apart by eye.
SHORT_ID = 8

#: Margin marks of a tree line.
ACTIVE_MARK = "*"
ORPHAN_MARK = "o"
COMPACTED_MARK = "c"


@attrs.frozen
class Glyphs:
    """The characters trees and truncation are drawn with."""

    tee: str
    elbow: str
    pipe: str
    ellipsis: str
    arrow: str


UNICODE = Glyphs(tee="├─ ", elbow="└─ ", pipe="│  ", ellipsis="…", arrow="→")
ASCII = Glyphs(tee="|- ", elbow="`- ", pipe="|  ", ellipsis="...", arrow="->")


def glyphs_for(stream: TextIO) -> Glyphs:
    """Box-drawing glyphs when ``stream`` can encode them, else ASCII."""
    probe = UNICODE.tee + UNICODE.pipe + UNICODE.elbow + UNICODE.ellipsis + UNICODE.arrow
    try:
        probe.encode(getattr(stream, "encoding", None) or "ascii")
    except (UnicodeEncodeError, LookupError):
        return ASCII
    return UNICODE


def printable(text: str) -> str:
    """``text`` on one line, control characters (terminal escapes
    included) replaced by ``?``."""
    flat = " ".join(text.split())
    return "".join(c if c.isprintable() else "?" for c in flat)


def truncate(text: str, width: int, glyphs: Glyphs = UNICODE) -> str:
    """``text`` cut to at most ``width`` characters, marked when cut."""
    if len(text) <= width:
        return text
    keep = max(width - len(glyphs.ellipsis), 0)
    return text[:keep] + glyphs.ellipsis


def node_label(node: SessionNode) -> str:
    """A one-line summary of a node: ``role: content`` for chat messages,
    the ``text`` of a body that has one, a string body as it is, compact
    JSON otherwise; other kinds than
    messages are tagged (``[event] ...``)."""
    tag = "" if node.kind is NodeKind.MESSAGE else f"[{node.kind}] "
    return printable(tag + _text(node.body))


def summary_label(
    node: SessionNode, compaction: Compaction, shorten: Callable[[str], str] = printable
) -> str:
    """The label of a compaction's summary node: what it replaced, then the
    host's summary (``[summary of 3 nodes through 1a2b3c4d] ...``)."""
    assert isinstance(node.body, dict)  # read_summary checked its shape
    through = shorten(compaction.through)
    if compaction.replaced:
        what = f"summary of {len(compaction.replaced)} node"
        what += "" if len(compaction.replaced) == 1 else "s"
        tag = f"[{what} through {through}]"
    else:
        tag = f"[summary through {through}, which is not stored]"
    return printable(f"{tag} {_text(node.body['summary'])}")


def _text(body: JSON) -> str:
    if isinstance(body, dict):
        content, role, text = body.get("content"), body.get("role"), body.get("text")
        if isinstance(content, str):
            return f"{role}: {content}" if isinstance(role, str) else content
        if isinstance(text, str):
            return text
    if isinstance(body, str):
        return body
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"), default=repr)


def short_ids(ids: Iterable[str], minimum: int = SHORT_ID) -> Callable[[str], str]:
    """A function shortening each of ``ids`` to the shortest prefix (at
    least ``minimum`` characters) that still tells them all apart."""
    unique = sorted(set(ids))
    length = minimum
    # Sorted, ids sharing a prefix are neighbours: the longest common prefix
    # of neighbours decides how long a distinguishing prefix must be.
    for left, right in itertools.pairwise(unique):
        common = 0
        for a, b in zip(left, right, strict=False):
            if a != b:
                break
            common += 1
        length = max(length, common + 1)
    return lambda node_id: printable(node_id[:length])


def tree_lines(
    graph: SessionGraph,
    *,
    width: int = 100,
    glyphs: Glyphs = UNICODE,
    full_ids: bool = False,
    marks: Marks | None = None,
) -> list[str]:
    """The graph as a tree, one line per node, in the form::

        *  1a2b3c4d  user: Plan a weekend in Lisbon.
        *  5e6f7a8b  assistant: Day 1: ...
        o  ├─ 9c0d1e2f  user: Make it cheaper.
        *  └─ 7e8f9a0b  user: Swap day 2 for Sintra.  <- leaf

    The margin marks the active path (``*``), orphans (``o``, off the
    active path) and, with ``marks``, the originals a compaction replaced
    (``c``, off the active path too); a summary node says what it replaced
    (:func:`summary_label`) and a pinned node is noted ``(pinned)``. A
    chain continues in its column; only a fork indents. Nodes with a parent
    that is not in the graph start trees of their own, and so does a node
    of a parent cycle (the walk never repeats a node). Iterative, so a path
    of any depth is drawn.
    """
    return _Tree(graph, width, glyphs, full_ids, marks or Marks()).lines()


class _Tree:
    """One drawing of :func:`tree_lines`."""

    def __init__(
        self, graph: SessionGraph, width: int, glyphs: Glyphs, full_ids: bool, marks: Marks
    ) -> None:
        self.graph = graph
        self.marks = marks
        self.width = width
        self.glyphs = glyphs
        self.nodes = _first_of_each_id(graph)
        self.present = {node.node_id for node in self.nodes}
        self.on_path = graph.active_path_ids()
        self.shorten: Callable[[str], str] = printable if full_ids else short_ids(self.present)
        self.children: dict[str, list[SessionNode]] = {}
        self.roots: list[SessionNode] = []
        for node in self.nodes:
            if node.parent_id is None or node.parent_id not in self.present:
                self.roots.append(node)
            else:
                self.children.setdefault(node.parent_id, []).append(node)
        self.seen: set[str] = set()
        self.out: list[str] = []

    def lines(self) -> list[str]:
        self.draw(self.roots)
        # Whatever no root reaches sits on a parent cycle: start from its
        # earliest node (the walk stops where the cycle closes).
        for node in self.nodes:
            if node.node_id not in self.seen:
                self.draw([node])
        return self.out

    def draw(self, tops: Sequence[SessionNode]) -> None:
        stack = self.forks(tops, "")
        while stack:
            node, first, rest = stack.pop()
            if node.node_id in self.seen:
                continue
            self.seen.add(node.node_id)
            self.out.append(self.line(node, first))
            kids = [k for k in self.children.get(node.node_id, ()) if k.node_id not in self.seen]
            if len(kids) == 1:
                stack.append((kids[0], rest, rest))
            else:
                stack.extend(self.forks(kids, rest))

    def forks(self, kids: Sequence[SessionNode], prefix: str) -> list[tuple[SessionNode, str, str]]:
        """Stack entries (node, prefix of its line, prefix of its
        descendants) for siblings, reversed so that the first is drawn first."""
        if len(kids) == 1:
            return [(kids[0], prefix, prefix)]
        glyphs = self.glyphs
        entries = []
        for i, kid in enumerate(kids):
            last = i == len(kids) - 1
            first = prefix + (glyphs.elbow if last else glyphs.tee)
            entries.append((kid, first, prefix + ("   " if last else glyphs.pipe)))
        entries.reverse()
        return entries

    def line(self, node: SessionNode, prefix: str) -> str:
        node_id = node.node_id
        if node_id in self.on_path:
            mark = ACTIVE_MARK
        elif node_id in self.marks.compacted:
            mark = COMPACTED_MARK
        else:
            mark = ORPHAN_MARK
        notes = []
        if node.parent_id is not None and node.parent_id not in self.present:
            notes.append(f"(parent {printable(node.parent_id)} is missing)")
        if node_id in self.marks.pinned:
            notes.append("(pinned)")
        if node_id == self.graph.leaf_id:
            notes.append(f"{self.glyphs.arrow} leaf")
        suffix = ("  " + "  ".join(notes)) if notes else ""
        head = f"{mark}  {prefix}{self.shorten(node_id)}  "
        room = max(self.width - len(head) - len(suffix), 20)
        compaction = self.marks.summaries.get(node_id)
        label = (
            node_label(node)
            if compaction is None
            else summary_label(node, compaction, self.shorten)
        )
        return head + truncate(label, room, self.glyphs) + suffix


def _first_of_each_id(graph: SessionGraph) -> list[SessionNode]:
    """The graph's nodes, without later copies of an id (as lookups see it)."""
    seen: set[str] = set()
    nodes = []
    for node in graph:
        if node.node_id not in seen:
            seen.add(node.node_id)
            nodes.append(node)
    return nodes


def legend(graph: SessionGraph, marks: Marks | None = None) -> str:
    """The key to :func:`tree_lines`' margin marks (orphans, and compacted
    originals, only when the graph has some)."""
    keys = [f"{ACTIVE_MARK} active path"]
    compacted = 0 if marks is None else len(marks.compacted)
    if len(graph.active_path()) + compacted < len(graph):
        keys.append(f"{ORPHAN_MARK} orphan (off the active path)")
    if compacted:
        keys.append(f"{COMPACTED_MARK} compacted (replaced by a summary)")
    return "   ".join(keys)


def repair_lines(report: HealReport, shorten: Callable[[str], str] = printable) -> list[str]:
    """Each repair of ``report`` as a sentence (empty for a clean report)."""
    lines = [
        f"node {shorten(i)} is stored twice: the later copy is dropped"
        for i in report.duplicates_dropped
    ]
    for cut in report.parents_cut:
        why = "is missing" if cut.reason == "dangling" else "closes a parent cycle"
        lines.append(
            f"node {shorten(cut.node_id)}: its parent {shorten(cut.old_parent_id)} {why};"
            " the node becomes a root"
        )
    if report.leaf is not None:
        new = report.leaf.new_leaf_id
        where = (
            "no message is left: the leaf is cleared"
            if new is None
            else (f"the leaf moves to the newest message, {shorten(new)}")
        )
        lines.append(f"leaf {shorten(report.leaf.old_leaf_id)} is missing: {where}")
    return lines


def iso_time(epoch: float) -> str:
    """``epoch`` seconds as UTC ISO 8601 to the second (``...T12:03:44Z``)."""
    moment = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> list[str]:
    """Rows under headers in aligned columns; columns in ``right`` are
    right-aligned (numbers)."""
    widths = [max(len(row[i]) for row in [headers, *rows]) for i in range(len(headers))]

    def cell(i: int, text: str) -> str:
        return text.rjust(widths[i]) if i in right else text.ljust(widths[i])

    return ["  ".join(cell(i, t) for i, t in enumerate(row)).rstrip() for row in [headers, *rows]]
