"""What comes out of the machine.

* Store requests carry a ``request_id``; feed their result back as the
  matching result event (or :class:`~lash_machine.events.EffectFailed`).
* Host requests (:class:`RestoreToolSurface`, :class:`RestorePlugins`,
  :class:`UnregisterPluginSession`) and :class:`EmitLifecycle` are
  notifications: carry them out, nothing is fed back.
* ``Reply*`` effects answer the caller's command.
"""

from __future__ import annotations

from typing import TypeAlias

import attrs

from .errors import ErrorCode
from .graph import HealReport
from .model import (
    JSON,
    ParkedSession,
    PluginSnapshot,
    SessionNode,
    SessionView,
    ToolSnapshot,
)
from .persisted import AttachmentIntent, ReadScope, SessionCommit
from .state import SessionState

__all__ = [
    "Commit",
    "CommitConflict",
    "Effect",
    "EmitLifecycle",
    "ForkSession",
    "HostEffect",
    "LifecycleEvent",
    "LoadGraph",
    "LoadNode",
    "ReadStamp",
    "RecordAttachmentIntent",
    "ReplyAttachment",
    "ReplyClosed",
    "ReplyFailed",
    "ReplyForked",
    "ReplyNode",
    "ReplyOrphans",
    "Reply",
    "ReplyParked",
    "ReplyReady",
    "ReplySaved",
    "ReplyTombstoned",
    "ReplyUpdated",
    "RestorePlugins",
    "RestoreToolSurface",
    "SessionClosed",
    "SessionHealed",
    "SessionOpened",
    "SessionParked",
    "SessionRepaired",
    "SessionRestored",
    "SessionSaved",
    "StoreRead",
    "StoreRequest",
    "StoreWrite",
    "TombstoneNodes",
    "UnregisterPluginSession",
]

# ---- store requests ---------------------------------------------------------


@attrs.frozen
class LoadGraph:
    """Read the session for ``scope``; answer with ``GraphLoaded``."""

    request_id: int
    session_id: str
    scope: ReadScope


@attrs.frozen
class LoadNode:
    """Read one node; answer with ``LoadNodeResult``."""

    request_id: int
    session_id: str
    node_id: str


@attrs.frozen
class Commit:
    """Apply ``commit`` with compare-and-set on its expected head; answer
    with ``Committed``, or ``CommitConflicted`` when another writer won."""

    request_id: int
    commit: SessionCommit


@attrs.frozen
class TombstoneNodes:
    """Hide nodes of the session; answer with ``Tombstoned``."""

    request_id: int
    session_id: str
    node_ids: tuple[str, ...]


@attrs.frozen
class RecordAttachmentIntent:
    """Store a write-ahead intent; answer with ``IntentRecorded``. Only then
    may the host write the attachment's bytes."""

    request_id: int
    intent: AttachmentIntent


@attrs.frozen
class ReadStamp:
    """Read the session's stamp (one small row); answer with ``StampRead``."""

    request_id: int
    session_id: str


@attrs.frozen
class ForkSession:
    """Copy the session's stored path up to ``node_id`` into the new session
    ``new_session_id`` (see ``SessionStore.fork_session``); answer with
    ``Forked``."""

    request_id: int
    session_id: str
    node_id: str | None
    new_session_id: str
    now: float


#: Store requests that only read.
StoreRead: TypeAlias = LoadGraph | LoadNode | ReadStamp
#: Store requests that change the store. Once started they may be applied
#: even if the caller gives up waiting, so drivers wait for their outcome.
StoreWrite: TypeAlias = Commit | TombstoneNodes | RecordAttachmentIntent | ForkSession
#: Every effect a store carries out.
StoreRequest: TypeAlias = StoreRead | StoreWrite

# ---- host requests ------------------------------------------------------------


@attrs.frozen
class RestoreToolSurface:
    """Install this tool surface, adopting its generation as it is."""

    session_id: str
    snapshot: ToolSnapshot


@attrs.frozen
class RestorePlugins:
    """Restore the session's plugins from this snapshot."""

    session_id: str
    snapshot: PluginSnapshot


@attrs.frozen
class UnregisterPluginSession:
    """The session left memory (parked or closed): drop its plugin state."""

    session_id: str


# ---- lifecycle notifications ----------------------------------------------------


@attrs.frozen
class SessionOpened:
    """A new session started (nothing was stored under its id)."""

    view: SessionView


@attrs.frozen
class SessionRestored:
    """A session was rebuilt from the store or from a state in hand."""

    view: SessionView


@attrs.frozen
class SessionHealed:
    """Healing repaired the graph while the session was built; the next
    commit writes the repairs."""

    session_id: str
    report: HealReport


@attrs.frozen
class SessionRepaired:
    """The check ``check`` found problems on the active path and its repair
    appended the nodes ``node_ids`` (the last is the leaf); the next commit
    writes them."""

    session_id: str
    check: str
    node_ids: tuple[str, ...]


@attrs.frozen
class SessionSaved:
    """A commit succeeded."""

    session_id: str
    head_revision: int


@attrs.frozen
class CommitConflict:
    """A commit lost to another writer; the session kept its changes."""

    session_id: str
    expected_head: int | None
    stored_head: int | None


@attrs.frozen
class SessionParked:
    """The session was committed and left memory."""

    parked: ParkedSession


@attrs.frozen
class SessionClosed:
    """The session left memory; ``discarded`` when changes were dropped."""

    session_id: str
    discarded: bool


LifecycleEvent: TypeAlias = (
    SessionOpened
    | SessionRestored
    | SessionHealed
    | SessionRepaired
    | SessionSaved
    | CommitConflict
    | SessionParked
    | SessionClosed
)


@attrs.frozen
class EmitLifecycle:
    """Tell lifecycle listeners (plugins, metrics, logs) what happened."""

    event: LifecycleEvent


#: Effects for the host: carry them out, nothing is fed back.
HostEffect: TypeAlias = (
    RestoreToolSurface | RestorePlugins | UnregisterPluginSession | EmitLifecycle
)


# ---- replies to the caller --------------------------------------------------------


@attrs.frozen
class ReplyReady:
    """Open, Restore or Resume finished: the session is active."""

    view: SessionView


@attrs.frozen
class ReplySaved:
    """Save finished at ``head_revision``."""

    head_revision: int


@attrs.frozen
class ReplyParked:
    """Park finished; keep the handle to resume later. ``session`` is the
    session as it left memory (committed), for a caller that keeps it to
    resume without a full read (see ``Resume.warm``)."""

    parked: ParkedSession
    session: SessionState | None = None


@attrs.frozen
class ReplyForked:
    """Fork finished: the handle of the new session (parked, head 1)."""

    parked: ParkedSession


@attrs.frozen
class ReplyNode:
    """The answer to ``LoadNode`` (``None`` when no such node exists)."""

    node_id: str
    node: SessionNode | None


@attrs.frozen
class ReplyOrphans:
    """The answer to ``ListOrphans``."""

    node_ids: tuple[str, ...]


@attrs.frozen
class ReplyTombstoned:
    """The answer to ``Tombstone``: how many nodes were hidden."""

    count: int


@attrs.frozen
class ReplyAttachment:
    """The intent is durable: the host may now write the bytes."""

    attachment_id: str


@attrs.frozen
class ReplyUpdated:
    """An in-memory edit was applied (append, branch, tool state, ...)."""

    leaf_id: str | None
    tool_generation: int


@attrs.frozen
class ReplyClosed:
    """The session is closed."""

    session_id: str


@attrs.frozen
class ReplyFailed:
    """The command failed; the session is still usable.

    ``error`` is its code: head revision conflict, model spec missing,
    session not found, invalid event (a branch to a node the store does not
    have), or the code of the failed effect. ``detail`` holds the fields of
    the exception it stands for: :func:`~lash_machine.errors.error_from_failure`
    rebuilds it.
    """

    operation: str
    error: ErrorCode
    message: str
    detail: dict[str, JSON] = attrs.Factory(dict)


Reply: TypeAlias = (
    ReplyReady
    | ReplySaved
    | ReplyParked
    | ReplyForked
    | ReplyNode
    | ReplyOrphans
    | ReplyTombstoned
    | ReplyAttachment
    | ReplyUpdated
    | ReplyClosed
    | ReplyFailed
)

Effect: TypeAlias = StoreRequest | HostEffect | Reply
