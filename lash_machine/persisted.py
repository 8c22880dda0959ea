"""What travels between the machine and a store: read scopes, the stored
session a read returns, and the commit (with its graph delta) a write sends.

These records are the whole store contract's vocabulary; stores import them
and nothing of the reducer.
"""

from __future__ import annotations

from typing import Literal, TypeAlias

import attrs

from .model import JSON, AgentFrame, PluginSnapshot, SessionNode, SessionPolicy, ToolSnapshot

__all__ = [
    "ActivePath",
    "AttachmentIntent",
    "FullGraph",
    "GraphDelta",
    "ReadScope",
    "Reparent",
    "SessionCommit",
    "SessionInfo",
    "StoredSession",
    "VacuumReport",
]


@attrs.frozen
class FullGraph:
    """Read every live (not tombstoned) node of the session."""


@attrs.frozen
class ActivePath:
    """Read only the chain of parents from ``leaf_id`` (the stored leaf when
    ``None``) up to a root; its cost follows the path length."""

    leaf_id: str | None = None


ReadScope: TypeAlias = FullGraph | ActivePath


@attrs.frozen
class StoredSession:
    """A session as a store returns it for one read scope.

    ``nodes`` come in insertion order (for an active-path read: root first).
    ``leaf_id`` is the stored leaf, whatever the scope.
    """

    session_id: str
    head_revision: int
    policy: SessionPolicy
    frames: tuple[AgentFrame, ...]
    current_frame_id: str
    nodes: tuple[SessionNode, ...]
    leaf_id: str | None
    tool_snapshot: ToolSnapshot | None = None
    plugin_snapshot: PluginSnapshot | None = None
    host_checkpoint: JSON = None


@attrs.frozen
class Reparent:
    """Set one stored node's parent pointer (a repair found by healing)."""

    node_id: str
    parent_id: str | None


@attrs.frozen
class GraphDelta:
    """The change a commit makes to the stored graph.

    It only ever adds nodes and rewrites parent pointers of nodes the session
    holds in memory: no commit deletes or overwrites a node that is not
    resident. Removing nodes is the job of tombstoning and vacuum.
    """

    leaf_id: str | None
    appended: tuple[SessionNode, ...] = ()
    reparented: tuple[Reparent, ...] = ()

    @property
    def kind(self) -> Literal["unchanged", "append", "repair", "append+repair"]:
        """Which of the delta shapes this is."""
        if self.appended and self.reparented:
            return "append+repair"
        if self.appended:
            return "append"
        if self.reparented:
            return "repair"
        return "unchanged"


@attrs.frozen
class SessionCommit:
    """Everything one commit writes, applied in one transaction or not at all.

    ``expected_head`` is the head revision the session was loaded at (``None``
    for a session's first commit, which creates it); the store applies the
    commit only when its head still equals it, and the new head revision is
    ``(expected_head or 0) + 1``. ``fencing_token`` is the execution lease's
    token when the session holds one.

    ``commit_id`` names this commit (the machine makes it unique per
    writer and keeps it for a retry): a store that already applied a
    commit with that id answers a retry of it with the head revision it
    made, instead of a conflict. ``None``: no retry is recognised.
    """

    session_id: str
    expected_head: int | None
    policy: SessionPolicy
    frames: tuple[AgentFrame, ...]
    current_frame_id: str
    delta: GraphDelta
    tool_snapshot: ToolSnapshot | None = None
    plugin_snapshot: PluginSnapshot | None = None
    host_checkpoint: JSON = None
    adopt_attachments: tuple[str, ...] = ()
    fencing_token: int | None = None
    commit_id: str | None = None


@attrs.frozen
class SessionInfo:
    """One row of a store's session listing."""

    session_id: str
    head_revision: int
    node_count: int
    updated_at: float


@attrs.frozen
class AttachmentIntent:
    """A write-ahead record: an attachment's bytes may exist at ``uri``.

    ``committed`` turns true when a commit adopts the attachment; intents
    still uncommitted long after ``created_at`` are garbage to reconcile.
    """

    session_id: str
    attachment_id: str
    uri: str
    created_at: float
    committed: bool = False


@attrs.frozen
class VacuumReport:
    """What a vacuum physically removed."""

    nodes_removed: int
    intents_removed: int = 0
