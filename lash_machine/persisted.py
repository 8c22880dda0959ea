"""What travels between the machine and a store: read scopes, the stored
session a read returns, and the commit (with its graph delta) a write sends.

These records are the whole store contract's vocabulary; stores import them
and nothing of the reducer.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from .model import JSON, AgentFrame, PluginSnapshot, SessionNode, SessionPolicy, ToolSnapshot

__all__ = [
    "ActivePath",
    "AttachmentIntent",
    "ExpireReport",
    "FullGraph",
    "GraphDelta",
    "Origin",
    "ReadScope",
    "Reparent",
    "SessionCommit",
    "SessionInfo",
    "SessionStamp",
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
class Origin:
    """Where a copied session came from: the session, and the node whose
    path it copied."""

    session_id: str
    node_id: str | None


@attrs.frozen
class StoredSession:
    """A session as a store returns it for one read scope.

    ``nodes`` come in insertion order (for an active-path read, whose nodes
    are one chain, that is root first). ``leaf_id`` is the stored leaf,
    whatever the scope. ``pinned`` are the pinned ones among ``nodes``.
    ``generation`` counts the changes to the stored graph that move no
    head revision (tombstones); with ``head_revision`` and ``created_by``
    (the id of the commit that created the session, or a fresh one for a
    copy) it tells a reader whether a copy it holds is still what is stored
    (:class:`SessionStamp`). ``origin`` is set for a session made by
    copying another.
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
    pinned: tuple[str, ...] = ()
    generation: int = 0
    created_at: float = 0.0
    created_by: str | None = None
    origin: Origin | None = None

    @property
    def stamp(self) -> SessionStamp:
        """What identifies this stored state of the session."""
        return SessionStamp(self.head_revision, self.generation, self.created_by)


@attrs.frozen
class SessionStamp:
    """The small row that says which state of a session is stored: its head
    revision, its generation (see :class:`StoredSession`) and the id of the
    commit that created it (so a session deleted and made again under the
    same id is told apart)."""

    head_revision: int
    generation: int
    created_by: str | None


@attrs.frozen
class Reparent:
    """Set one stored node's parent pointer (a repair found by healing)."""

    node_id: str
    parent_id: str | None


@attrs.frozen
class GraphDelta:
    """The change a commit makes to the stored graph.

    It only ever adds nodes, rewrites parent pointers of nodes the session
    holds in memory, and pins or unpins nodes (a flag that keeps a branch
    from prune; never a node's content): no commit deletes or overwrites a
    node that is not resident. Removing nodes is the job of tombstoning and
    vacuum.
    """

    leaf_id: str | None
    appended: tuple[SessionNode, ...] = ()
    reparented: tuple[Reparent, ...] = ()
    pinned: tuple[str, ...] = ()
    unpinned: tuple[str, ...] = ()


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
class ExpireReport:
    """What :meth:`~lash_machine.stores.base.SessionStore.expire` removed
    (or, for a dry run, would remove): the ids of the expired sessions and
    how many nodes they held, and how many idle sessions were kept because
    a worker held their lease. ``longest_batch`` is the longest write
    transaction the run held, in seconds."""

    expired: tuple[str, ...]
    nodes_removed: int
    kept_leased: int
    dry_run: bool
    longest_batch: float = 0.0


@attrs.frozen
class VacuumReport:
    """What a vacuum physically removed."""

    nodes_removed: int
    intents_removed: int = 0
