"""The state the reducer threads through: the session itself, and the
machine around it (phase, outstanding requests, the request-id counter)."""

from __future__ import annotations

import enum

import attrs
import immutables

from .graph import SessionGraph
from .model import (
    JSON,
    AgentFrame,
    ParkedSession,
    PluginSnapshot,
    Residency,
    SessionPolicy,
    SessionView,
    ToolSnapshot,
)
from .persisted import Reparent, SessionStamp

__all__ = [
    "MachineState",
    "OpenContext",
    "Pending",
    "Phase",
    "Purpose",
    "SessionState",
    "WarmSession",
]


class Phase(enum.StrEnum):
    """Where a session is in its lifecycle."""

    CLOSED = "closed"
    OPENING = "opening"
    ACTIVE = "active"
    COMMITTING = "committing"
    PARKED = "parked"


class Purpose(enum.StrEnum):
    """Why an outstanding request was made: decides what its result does."""

    OPEN = "open"
    OPEN_FULL = "open_full"
    COMMIT_SAVE = "commit_save"
    COMMIT_PARK = "commit_park"
    LOAD_NODE = "load_node"
    LIST_ORPHANS = "list_orphans"
    BRANCH = "branch"
    BRANCH_FULL = "branch_full"
    TOMBSTONE = "tombstone"
    TOMBSTONE_ORPHANS = "tombstone_orphans"
    INTENT = "intent"
    FORK = "fork"
    UNCOMPACT = "uncompact"
    UNCOMPACT_FULL = "uncompact_full"
    STAMP = "stamp"


#: Requests whose results change the session (a save must not race them).
MUTATING = frozenset(
    {
        Purpose.BRANCH,
        Purpose.BRANCH_FULL,
        Purpose.UNCOMPACT,
        Purpose.UNCOMPACT_FULL,
        Purpose.TOMBSTONE,
        Purpose.TOMBSTONE_ORPHANS,
        Purpose.INTENT,
    }
)
#: The requests of a commit.
COMMITS = frozenset({Purpose.COMMIT_SAVE, Purpose.COMMIT_PARK})


@attrs.frozen
class Pending:
    """One request the machine waits for. ``subject`` is the node, branch
    target, attachment or commit id the request is about, when it has one;
    ``retried`` marks a commit already sent again once after its outcome
    was unknown."""

    request_id: int
    purpose: Purpose
    subject: str | None = None
    node_ids: tuple[str, ...] = ()
    retried: bool = False


@attrs.frozen
class SessionState:
    """One open session.

    The graph's first ``saved_nodes`` nodes are stored; the rest were
    appended since the last commit. ``repairs`` are parent pointers healing
    changed that the next commit writes. ``dirty`` is true when anything
    changed since the last commit; ``branched`` when the leaf moved off
    the newest branch since then (so committed nodes may have left the
    active path). ``in_doubt`` is the id of a commit whose outcome is
    unknown (the connection failed while it was in flight): edits wait
    until a save or park settles it by sending that same commit again.
    ``pin_changes`` are pins and unpins (``(node id, pinned)``, the last
    word on each node) the next commit writes. ``generation`` and
    ``created_by`` are the store's, as of the last read or commit (see
    :class:`~lash_machine.persisted.SessionStamp`).
    """

    session_id: str
    policy: SessionPolicy
    frames: tuple[AgentFrame, ...]
    current_frame_id: str
    graph: SessionGraph
    head_revision: int | None = None
    tool_snapshot: ToolSnapshot | None = None
    plugin_snapshot: PluginSnapshot | None = None
    host_checkpoint: JSON = None
    pending_attachments: tuple[str, ...] = ()
    saved_nodes: int = 0
    repairs: tuple[Reparent, ...] = ()
    dirty: bool = False
    branched: bool = False
    in_doubt: str | None = None
    pin_changes: tuple[tuple[str, bool], ...] = ()
    generation: int = 0
    created_by: str | None = None

    @property
    def stamp(self) -> SessionStamp | None:
        """The store's stamp of this state (``None`` before the first commit)."""
        if self.head_revision is None:
            return None
        return SessionStamp(self.head_revision, self.generation, self.created_by)

    @property
    def current_frame(self) -> AgentFrame:
        """The frame the session currently runs in."""
        for frame in self.frames:
            if frame.frame_id == self.current_frame_id:
                return frame
        raise LookupError(f"frame {self.current_frame_id!r} is not in the session")

    def view(self, residency: Residency) -> SessionView:
        """A small read view for lifecycle listeners and callers."""
        return SessionView(
            session_id=self.session_id,
            head_revision=self.head_revision,
            policy=self.policy,
            current_frame_id=self.current_frame_id,
            leaf_id=self.graph.leaf_id,
            resident_nodes=len(self.graph),
            residency=residency,
        )


@attrs.frozen
class WarmSession:
    """A session as it left memory when it was parked, kept by a driver to
    resume it without reading it all again. ``residency`` is the one it was
    parked under (an ``ACTIVE_PATH_ONLY`` copy holds only its path)."""

    session: SessionState
    residency: Residency


@attrs.frozen
class OpenContext:
    """What an open or resume in flight was asked for. ``expect_stored``
    is true for the resume of a handle that was committed: the store must
    then have the session (it is never created afresh)."""

    session_id: str
    policy: SessionPolicy
    now: float
    residency: Residency
    return_to: Phase
    parked: ParkedSession | None = None
    expect_stored: bool = False
    warm: SessionState | None = None


@attrs.frozen
class MachineState:
    """Everything :func:`~lash_machine.step` needs; start from
    :meth:`MachineState.initial`.

    ``writer`` is the id this incarnation of the session commits under
    (given by ``Open``, ``Restore`` or ``Resume``); commit ids are made from
    it, so a retried commit is recognised by the store. Empty: commits
    carry no id.
    """

    phase: Phase = Phase.CLOSED
    session: SessionState | None = None
    parked: ParkedSession | None = None
    opening: OpenContext | None = None
    persistent: bool = True
    residency: Residency = Residency.KEEP_ALL
    outstanding: immutables.Map[int, Pending] = attrs.field(factory=immutables.Map)
    next_request_id: int = 1
    writer: str = ""

    @classmethod
    def initial(cls) -> MachineState:
        """A closed machine with no session."""
        return cls()
