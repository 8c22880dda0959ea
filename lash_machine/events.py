"""What goes into the machine.

Commands come from the caller; results come from whoever carried out an
effect and echo its ``request_id``. Anything non-deterministic (the time,
fresh ids, IO results) arrives in an event, so :func:`~lash_machine.step`
stays pure.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from .checks import Addition
from .errors import ErrorCode
from .model import JSON, ParkedSession, Residency, SessionNode, SessionPolicy
from .persisted import SessionStamp, StoredSession
from .state import SessionState, WarmSession

__all__ = [
    "Append",
    "ApplyToolState",
    "BranchTo",
    "Close",
    "Command",
    "CommitConflicted",
    "Committed",
    "Compact",
    "EffectFailed",
    "Event",
    "Fork",
    "Forked",
    "GraphLoaded",
    "IntentRecorded",
    "ListOrphans",
    "LoadNode",
    "LoadNodeResult",
    "Open",
    "Park",
    "Pin",
    "RecordAttachment",
    "RecordPluginState",
    "Restore",
    "Result",
    "Resume",
    "Repair",
    "Save",
    "SetCheckpoint",
    "StampRead",
    "Tombstone",
    "TombstoneOrphans",
    "Tombstoned",
    "Uncompact",
    "Unpin",
]

# ---- commands ---------------------------------------------------------------


@attrs.frozen
class Open:
    """Open the session ``session_id``, or create it.

    With ``persistent`` the stored session is loaded first (a missing one is
    created on the first commit); without, a fresh in-memory session starts.
    ``fresh_id`` is the id used when ``session_id`` is empty: drivers fill it
    with a new random id. ``writer`` is a fresh random id too, the one this
    session's commits are named under (see
    :attr:`~lash_machine.state.MachineState.writer`); empty: commits carry
    no id, and a retried commit is not recognised.
    """

    policy: SessionPolicy
    now: float
    session_id: str = ""
    fresh_id: str = ""
    residency: Residency = Residency.KEEP_ALL
    persistent: bool = True
    writer: str = ""


@attrs.frozen
class Restore:
    """Rebuild a session from a state in hand (a worker rebuild): no store
    read. ``persistent`` says whether later commits have a store;
    ``writer`` as for :class:`Open` (give a fresh one: two workers restoring
    one state are two writers)."""

    state: SessionState
    policy: SessionPolicy
    now: float
    residency: Residency = Residency.KEEP_ALL
    persistent: bool = True
    fresh_id: str = ""
    writer: str = ""


@attrs.frozen
class Resume:
    """Load a parked session again. ``residency`` overrides the handle's;
    ``writer`` as for :class:`Open`. A handle that was committed (its head
    revision is not ``None``) must find its session in the store:
    otherwise the resume fails with ``session_not_found``.

    ``warm``: the session as it left memory, when the caller kept it. The
    store is then asked only for its stamp; when that still matches (no
    commit, tombstone or delete since), the kept session is resumed
    without reading its nodes, else it is read as usual. It must be a
    session this machine let go of (a driver's cache of parked sessions):
    a ``KEEP_ALL`` one is resumed as it is, with no healing pass."""

    parked: ParkedSession
    now: float
    residency: Residency | None = None
    writer: str = ""
    warm: WarmSession | None = None


@attrs.frozen
class Append:
    """Add nodes; the last one becomes the leaf.

    Each parent must be ``None``, a resident node, or an earlier node of the
    same append; each id must be new.
    """

    nodes: tuple[SessionNode, ...]


@attrs.frozen
class Repair:
    """Append what the check ``check`` proposed (see
    :mod:`lash_machine.checks`): one node per addition, with the id at the
    same place in ``node_ids``, each under the one before it and the first
    under the leaf, in the current frame, created at ``now``; the last one
    becomes the leaf. Checked as an :class:`Append` is; the next commit
    writes it. Lifecycle listeners hear
    :class:`~lash_machine.effects.SessionRepaired`.
    """

    check: str
    additions: tuple[Addition, ...]
    node_ids: tuple[str, ...]
    now: float


@attrs.frozen
class BranchTo:
    """Make ``node_id`` the leaf: the next append forks the history there.

    Under ``ACTIVE_PATH_ONLY`` a node that is not resident has its path
    loaded from the store first.
    """

    node_id: str


@attrs.frozen
class Save:
    """Commit the session's changes; the session stays active."""


@attrs.frozen
class Park:
    """Commit, then give up the in-memory session for a small handle."""


@attrs.frozen
class LoadNode:
    """Answer one node: from memory when resident, else from the store."""

    node_id: str


@attrs.frozen
class ListOrphans:
    """Answer the ids of stored or resident nodes off the active path."""


@attrs.frozen
class TombstoneOrphans:
    """Hide every committed node off the active path: the stored graph is
    read, then its orphans are tombstoned, except uncommitted nodes and
    their ancestors (which stay, so nothing uncommitted loses its parent)."""


@attrs.frozen
class Tombstone:
    """Hide committed orphan nodes in the store (and drop them from memory).
    Nodes on the active path and uncommitted nodes are refused."""

    node_ids: tuple[str, ...]


@attrs.frozen
class Pin:
    """Keep ``node_id`` and its ancestors from prune and ``TombstoneOrphans``
    (written by the next commit)."""

    node_id: str


@attrs.frozen
class Unpin:
    """Take a pin back (written by the next commit)."""

    node_id: str


@attrs.frozen
class Fork:
    """Copy the stored path up to ``node_id`` (the leaf when ``None``) into
    a new session ``new_session_id``, in one store transaction; the node
    must be committed. Answered with the new session's handle."""

    new_session_id: str
    now: float
    node_id: str | None = None


@attrs.frozen
class Compact:
    """Replace the active path up to ``through`` by a summary.

    A new root node ``node_id`` of kind ``SUMMARY`` is made, with the body
    ``{"summary": summary, "through": through, "kept": K}``, and the node
    ``K`` that followed ``through`` on the active path is re-parented under
    it: the active path becomes the summary, then the kept tail. When
    ``through`` is the leaf, nothing is kept (``"kept": null``) and the
    summary becomes the leaf. The replaced nodes stay in the store, off the
    active path: ``through`` is pinned, so prune and tombstoning keep it and
    its ancestors. The next commit writes it all at once (or, on a
    conflict, none of it). See :class:`Uncompact` for the way back.
    """

    through: str
    summary: JSON
    node_id: str
    now: float


@attrs.frozen
class Uncompact:
    """Undo a :class:`Compact`: every resident child of the summary
    ``summary_id`` is re-parented back under the node the summary replaced
    (its ``through``), a summary leaf gives the leaf back to it, and the
    compaction's pin is taken back. Under ``ACTIVE_PATH_ONLY`` the replaced
    path is loaded first; the summary, and the kept node when the leaf
    lies under it, must be resident (branch to the tail first). The
    summary node itself stays, a root off the active path.
    """

    summary_id: str


@attrs.frozen
class ApplyToolState:
    """A tool-surface delta: accepted only on top of ``base_generation``,
    after which the generation is one higher."""

    base_generation: int
    data: JSON


@attrs.frozen
class RecordPluginState:
    """Replace the plugin snapshot; its revision grows by one."""

    data: JSON


@attrs.frozen
class SetCheckpoint:
    """Replace the host's checkpoint (any JSON the host wants kept)."""

    data: JSON


@attrs.frozen
class RecordAttachment:
    """Announce an attachment before its bytes are written: a write-ahead
    intent is stored first, and the next commit adopts the id."""

    attachment_id: str
    uri: str
    now: float


@attrs.frozen
class Close:
    """Leave the session. Refused while a persistent session has
    uncommitted changes, unless ``discard``."""

    discard: bool = False


# ---- results ----------------------------------------------------------------


@attrs.frozen
class GraphLoaded:
    """A ``LoadGraph`` effect's result; ``session`` is ``None`` when the
    store has no such session."""

    request_id: int
    session: StoredSession | None


@attrs.frozen
class LoadNodeResult:
    """A ``LoadNode`` effect's result; ``node`` is ``None`` when absent."""

    request_id: int
    node: SessionNode | None


@attrs.frozen
class Committed:
    """A ``Commit`` effect succeeded; the store's head is now ``head_revision``."""

    request_id: int
    head_revision: int


@attrs.frozen
class CommitConflicted:
    """A ``Commit`` lost its compare-and-set: the store's head is ``stored_head``."""

    request_id: int
    stored_head: int | None


@attrs.frozen
class Tombstoned:
    """A ``TombstoneNodes`` effect hid ``count`` nodes."""

    request_id: int
    count: int


@attrs.frozen
class IntentRecorded:
    """A ``RecordAttachmentIntent`` effect is durable."""

    request_id: int


@attrs.frozen
class StampRead:
    """A ``ReadStamp`` effect's result (``None``: no such session)."""

    request_id: int
    stamp: SessionStamp | None


@attrs.frozen
class Forked:
    """A ``ForkSession`` effect made the copy at ``head_revision``."""

    request_id: int
    head_revision: int


@attrs.frozen
class EffectFailed:
    """Any IO effect failed. ``error`` is its code (store error, corrupt
    row, cancelled, ...), ``message`` says what happened and ``detail``
    holds the failed exception's fields (see
    :func:`~lash_machine.errors.failure_of`); the machine returns to a
    state the caller can retry from."""

    request_id: int
    error: ErrorCode
    message: str
    detail: dict[str, JSON] = attrs.Factory(dict)


Command: TypeAlias = (
    Open
    | Restore
    | Resume
    | Append
    | Repair
    | BranchTo
    | Save
    | Park
    | LoadNode
    | ListOrphans
    | Tombstone
    | TombstoneOrphans
    | Pin
    | Unpin
    | Fork
    | Compact
    | Uncompact
    | ApplyToolState
    | RecordPluginState
    | SetCheckpoint
    | RecordAttachment
    | Close
)
Result: TypeAlias = (
    GraphLoaded
    | LoadNodeResult
    | Committed
    | CommitConflicted
    | Tombstoned
    | IntentRecorded
    | StampRead
    | Forked
    | EffectFailed
)
Event: TypeAlias = Command | Result
