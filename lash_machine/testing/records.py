"""Records for tests of stores and drivers: nodes, commits, chains.

Plain constructors with the defaults a test wants, so a test says only what
matters to it. No pytest here: use them anywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

from ..model import (
    JSON,
    AgentFrame,
    ModelSpec,
    NodeKind,
    SessionNode,
    SessionPolicy,
    initial_frame_id,
)
from ..persisted import (
    GraphDelta,
    Reparent,
    SessionCommit,
    StoredSession,
)

__all__ = ["POLICY", "chain", "ids", "make_commit", "make_node"]

#: The policy the suite's commits carry.
POLICY = SessionPolicy(model=ModelSpec(id="test-model", context_window=8192), provider_id="test")


def make_node(
    node_id: str,
    parent_id: str | None = None,
    body: JSON = None,
    *,
    kind: NodeKind = NodeKind.MESSAGE,
    frame_id: str | None = None,
    created_at: float = 1.0,
) -> SessionNode:
    """A node for tests; the body defaults to ``{"text": node_id}``."""
    return SessionNode(
        node_id=node_id,
        parent_id=parent_id,
        kind=kind,
        body={"text": node_id} if body is None else body,
        frame_id=frame_id,
        created_at=created_at,
    )


def make_commit(
    session_id: str,
    expected_head: int | None,
    appended: Sequence[SessionNode] = (),
    *,
    leaf_id: str | None = None,
    reparented: Sequence[Reparent] = (),
    adopt: Sequence[str] = (),
    policy: SessionPolicy = POLICY,
    host_checkpoint: JSON = None,
    fencing_token: int | None = None,
) -> SessionCommit:
    """A commit for tests; the leaf defaults to the last appended node."""
    if leaf_id is None and appended:
        leaf_id = appended[-1].node_id
    frame = AgentFrame(initial_frame_id(session_id), None, "initial", policy, 0.0)
    return SessionCommit(
        session_id=session_id,
        expected_head=expected_head,
        policy=policy,
        frames=(frame,),
        current_frame_id=frame.frame_id,
        delta=GraphDelta(leaf_id=leaf_id, appended=tuple(appended), reparented=tuple(reparented)),
        host_checkpoint=host_checkpoint,
        adopt_attachments=tuple(adopt),
        fencing_token=fencing_token,
    )


def chain(prefix: str, length: int, parent: str | None = None) -> list[SessionNode]:
    """``length`` nodes, each the child of the one before."""
    nodes = []
    for i in range(length):
        node = make_node(f"{prefix}{i}", parent)
        nodes.append(node)
        parent = node.node_id
    return nodes


def ids(session: StoredSession | None) -> list[str]:
    """The node ids of a read, in the order the store returned them."""
    assert session is not None
    return [n.node_id for n in session.nodes]
