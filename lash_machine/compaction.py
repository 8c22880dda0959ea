"""The layout of a compaction, in one place.

A compaction (:class:`~lash_machine.events.Compact`) does not rewrite or
copy history. It adds one root node of kind ``SUMMARY`` and re-parents the
first node it keeps (``kept``) under it, so the active path reads: the
summary, then the kept tail. The nodes it replaced, up to ``through``, are
untouched: they stay in the store as a branch off the active path, kept
from prune and tombstoning by a pin on ``through``. Undoing it
(:class:`~lash_machine.events.Uncompact`) re-parents the tail back under
``through``.

Re-parenting one node was chosen over copying the tail under the summary:
a compaction then costs one new node and one parent pointer whatever the
length of the tail, node ids stay stable (a host that holds an id of a
kept node still finds it on the active path), and the way back is exact.
The summary's body records both ends, so the store alone tells what a
summary replaced.
"""

from __future__ import annotations

import attrs

from .model import JSON, NodeKind, SessionNode

__all__ = ["Summary", "read_summary", "summary_body"]


@attrs.frozen
class Summary:
    """What a summary node says: the host's ``summary``, the last node it
    replaced (``through``) and the first node it kept (``kept``; ``None``
    when the compaction ran through the leaf)."""

    node_id: str
    summary: JSON
    through: str
    kept: str | None


def summary_body(summary: JSON, through: str, kept: str | None) -> dict[str, JSON]:
    """The body of a summary node."""
    return {"summary": summary, "through": through, "kept": kept}


def read_summary(node: SessionNode) -> Summary | None:
    """The summary ``node`` holds, or ``None`` when it is not a summary node
    made by a compaction (another kind, or a body of another shape)."""
    if node.kind != NodeKind.SUMMARY:
        return None
    body = node.body
    if not isinstance(body, dict) or set(body) != {"summary", "through", "kept"}:
        return None
    through, kept = body["through"], body["kept"]
    if type(through) is not str or not through:
        return None
    if kept is not None and (type(kept) is not str or not kept):
        return None
    return Summary(node.node_id, body["summary"], through, kept)
