"""Pure data of a session: policy, agent frames, nodes, snapshots, handles.

Every record is a frozen, slotted attrs class. Validation happens at the
edges (the wire codec and the event constructors users call), never on the
hot-path copies the reducer makes with :func:`attrs.evolve`.
"""

from __future__ import annotations

import enum
from typing import Any, TypeAlias

import attrs

__all__ = [
    "JSON",
    "UNCONFIGURED_POLICY",
    "AgentFrame",
    "ModelSpec",
    "NodeKind",
    "ParkedSession",
    "PluginSnapshot",
    "Residency",
    "SessionNode",
    "SessionPolicy",
    "SessionView",
    "ToolSnapshot",
    "initial_frame_id",
]

#: A JSON value (the body of a node, a snapshot's payload, a checkpoint).
#: Kept as ``Any`` so hosts can store whatever their JSON library produces;
#: the wire codec checks that it really is JSON.
JSON: TypeAlias = Any


@attrs.frozen
class ModelSpec:
    """The model an agent frame talks to."""

    id: str
    context_window: int | None = None


@attrs.frozen
class SessionPolicy:
    """Which model and provider a session (or one of its frames) uses.

    A policy is *unconfigured* when its provider id is empty and its model id
    is blank; such a policy is filled in from the caller's policy when a
    session is built.
    """

    model: ModelSpec
    provider_id: str = ""
    max_turns: int | None = None

    @property
    def is_unconfigured(self) -> bool:
        """True when neither a provider nor a model has been chosen."""
        return self.provider_id == "" and self.model.id.strip() == ""


#: The policy of a freshly defaulted state: to be filled in by the caller's.
UNCONFIGURED_POLICY = SessionPolicy(model=ModelSpec(id=""))


@attrs.frozen
class AgentFrame:
    """One agent context within a session (the initial one, or a sub-agent)."""

    frame_id: str
    parent_frame_id: str | None
    reason: str
    policy: SessionPolicy
    created_at: float


def initial_frame_id(session_id: str) -> str:
    """The id of a session's initial agent frame."""
    return f"{session_id}:frame:initial"


class NodeKind(enum.StrEnum):
    """What a node of the session graph records."""

    MESSAGE = "message"
    EVENT = "event"
    PLUGIN = "plugin"
    #: Stands for the start of the active path that a compaction replaced
    #: (see :class:`~lash_machine.events.Compact`).
    SUMMARY = "summary"


@attrs.frozen
class SessionNode:
    """One node of the session graph.

    ``parent_id`` is ``None`` for a root. ``body`` is any JSON value.
    """

    node_id: str
    parent_id: str | None
    kind: NodeKind
    body: JSON
    frame_id: str | None
    created_at: float


@attrs.frozen
class ToolSnapshot:
    """The persisted tool surface; ``generation`` grows with every delta."""

    generation: int
    data: JSON


@attrs.frozen
class PluginSnapshot:
    """The persisted state of the session's plugins."""

    revision: int
    data: JSON


class Residency(enum.StrEnum):
    """Which nodes of a session are held in memory.

    ``ACTIVE_PATH_ONLY`` keeps only the chain from the leaf to its root; the
    other nodes stay in the store and are loaded on demand. It requires a
    persistent store, since trimmed nodes would otherwise be lost.
    """

    KEEP_ALL = "keep_all"
    ACTIVE_PATH_ONLY = "active_path_only"


@attrs.frozen
class ParkedSession:
    """A small handle for a parked session, O(1) in the size of its history.

    Keep it between requests (a web server's cache, a cookie, a queue
    message) and pass it to :class:`~lash_machine.events.Resume`.
    """

    session_id: str
    policy: SessionPolicy
    head_revision: int | None
    residency: Residency


@attrs.frozen
class SessionView:
    """A small read view of a session, handed to lifecycle listeners."""

    session_id: str
    head_revision: int | None
    policy: SessionPolicy
    current_frame_id: str
    leaf_id: str | None
    resident_nodes: int
    residency: Residency
