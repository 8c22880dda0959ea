"""The synchronous store contract every store implements.

Drivers call these methods from worker threads, never on an event loop.
Every lookup is scoped by session id: a node id of another session is never
returned, tombstoned or rewritten.

The stored graph keeps two rules, each checked by the store inside the
transaction that could break it (so they hold against what is stored, not
against what one session holds in memory, and whatever runs concurrently):

* **Tombstones hide whole subtrees off the active path.**
  :meth:`SessionStore.tombstone_nodes` refuses, with
  :class:`~lash_machine.errors.TombstoneRefused` and nothing hidden, when a
  node asked for is the stored leaf or the parent of a live node not asked
  for. So no node on the stored active path is ever hidden, and no live
  node's parent is.
* **Commits build only on live nodes.** A commit to an existing session
  whose appended nodes end up (after its repairs) under a stored node, whose
  repairs point at one, or whose new leaf is one, is refused with
  :class:`~lash_machine.errors.ParentTombstoned` and nothing applied when
  that node is tombstoned or no longer stored (vacuumed). The store refuses
  rather than revives: what an operator hid stays hidden, and the session,
  which keeps its edits, branches to a live node or reloads. A session's
  first commit builds on nothing stored and is not checked (an import may
  carry a graph that needs repair).

Vacuum removes a tombstoned node only when no live node names it as its
parent (rows tombstoned before these rules may still be above a live node).

Three more promises of schema version 3:

* **Deletes stay deleted.** :meth:`SessionStore.delete_session` (and
  :meth:`SessionStore.expire`) leave a marker of the id: a later read, open,
  resume or commit of it raises
  :class:`~lash_machine.errors.SessionDeleted`, and nothing is ever made
  again under it, until :meth:`SessionStore.purge_deleted` forgets the
  marker.
* **Pins keep branches.** A commit may pin or unpin nodes
  (:attr:`~lash_machine.persisted.GraphDelta.pinned`); a pinned node is
  never tombstoned (:class:`~lash_machine.errors.TombstoneRefused`), so
  neither is any of its ancestors (the subtree rule), and prune and
  ``TombstoneOrphans`` leave them be.
* **A retried commit is answered, not applied twice.** A commit carrying
  the id of the last commit the session applied, whose head it made is
  still the head, is answered with that head revision and applies nothing
  (its first attempt's answer was lost). Any other mismatch is a
  :class:`~lash_machine.errors.HeadRevisionConflict`.

Every identifier a store keys rows by (session, node, frame, attachment id)
is text of at most :data:`~lash_machine.content.MAX_ID_LENGTH` characters,
and every node is checked by :func:`~lash_machine.content.node_problem`
before anything is written: a violation is a :class:`StoreError` naming it,
the same on every store.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ..model import SessionNode
from ..persisted import (
    AttachmentIntent,
    ExpireReport,
    ReadScope,
    SessionCommit,
    SessionInfo,
    SessionStamp,
    StoredSession,
    VacuumReport,
)

__all__ = ["SCHEMA_VERSION", "SessionStore", "check_expiry"]

#: The version of the SQL schemas this release reads and writes. Version 2
#: added the execution-lease table; version 3 deleted-session markers, pins,
#: session copies, commit ids, a generation per session and the active
#: path's hint. A version-2 database is upgraded in place by
#: ``lash-machine migrate`` (:mod:`lash_machine.stores.migrations`).
SCHEMA_VERSION = 3


@runtime_checkable
class SessionStore(Protocol):
    """Durable storage for sessions.

    Implementations: :class:`~lash_machine.stores.memory.MemoryStore` (the
    reference semantics), :class:`~lash_machine.stores.sqlite.SQLiteStore`
    and :class:`~lash_machine.stores.postgres.PostgresStore`. Run
    :mod:`lash_machine.testing.conformance` against your own.
    """

    def load_graph(self, session_id: str, scope: ReadScope) -> StoredSession | None:
        """The session with the nodes of ``scope``, or ``None`` when the
        store has no such session. Raises
        :class:`~lash_machine.errors.CorruptRow` for an undecodable row and
        :class:`~lash_machine.errors.SessionDeleted` for a deleted one."""
        ...

    def session_stamp(self, session_id: str) -> SessionStamp | None:
        """The small row that says which state of the session is stored
        (``None`` when there is none; a deleted one raises
        :class:`~lash_machine.errors.SessionDeleted`)."""
        ...

    def load_node(self, session_id: str, node_id: str) -> SessionNode | None:
        """One live node of the session, or ``None``."""
        ...

    def commit(self, commit: SessionCommit) -> int:
        """Apply ``commit`` in one transaction when the stored head equals
        ``commit.expected_head``; return the new head revision. Raises
        :class:`~lash_machine.errors.HeadRevisionConflict` otherwise, and
        :class:`~lash_machine.errors.ParentTombstoned` when it builds on a
        node that is not live (see the module's rules); nothing is applied
        either way. A lease check comes first, then the head, then the
        nodes built on, then duplicate node ids."""
        ...

    def tombstone_nodes(self, session_id: str, node_ids: Sequence[str]) -> int:
        """Hide those nodes of the session from every read; return how many
        live nodes were hidden (ids of other sessions, and nodes already
        hidden, count as absent). Raises
        :class:`~lash_machine.errors.TombstoneRefused`, with nothing hidden,
        when one of them is the stored leaf or the parent of a live node not
        among them (hide whole subtrees that are off the active path)."""
        ...

    def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes (except one a live node still
        names as its parent) and forgotten intents."""
        ...

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, ordered by id."""
        ...

    def delete_session(self, session_id: str, now: float | None = None) -> bool:
        """Remove the session and all its rows, keeping a marker of its id
        (deleted at ``now``, the store's clock by default); ``False`` when
        absent. A commit racing the delete either lands before it (and its
        nodes go too) or finds the session deleted."""
        ...

    def purge_deleted(self, older_than: float) -> int:
        """Forget the markers of sessions deleted before ``older_than``
        (seconds since the epoch); return how many. Their ids may then be
        used again."""
        ...

    def expire(
        self,
        idle_for: float,
        *,
        now: float | None = None,
        dry_run: bool = False,
        batch_size: int = 200,
        progress: Callable[[ExpireReport], None] | None = None,
    ) -> ExpireReport:
        """Delete every session not committed to for ``idle_for`` seconds
        (before ``now``), as :meth:`delete_session` does, except one whose
        lease a worker holds; with ``dry_run``, only report them. Works in
        write transactions of at most ``batch_size`` sessions, so a big
        database is never locked for long; ``progress`` hears the report so
        far after each."""
        ...

    def fork_session(
        self, session_id: str, node_id: str | None, new_session_id: str, now: float | None = None
    ) -> int:
        """Make ``new_session_id`` a copy of the session whose history is
        the path up to ``node_id`` (the stored leaf when ``None``), in one
        transaction, recording where it came from
        (:attr:`~lash_machine.persisted.StoredSession.origin`); return its
        head revision, 1. Raises :class:`~lash_machine.errors.SessionNotFound`
        (or :class:`~lash_machine.errors.SessionDeleted`) for the source,
        :class:`~lash_machine.errors.ParentTombstoned` when ``node_id`` is
        not a live node of it, and
        :class:`~lash_machine.errors.HeadRevisionConflict` (or
        ``SessionDeleted``) when ``new_session_id`` is taken."""
        ...

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Write an attachment's intent before the host writes its bytes.
        Recording an id again replaces its URI and time, but an intent a
        commit adopted stays committed (a retried record, or a
        content-addressed id, never turns adopted bytes into garbage)."""
        ...

    def list_uncommitted(self, older_than: float) -> list[AttachmentIntent]:
        """Intents no commit adopted, created before ``older_than``."""
        ...

    def forget(self, session_id: str, attachment_id: str) -> bool:
        """Drop an intent no commit adopted, atomically; ``True`` only then.

        This is the collector's protocol: :meth:`list_uncommitted` (old
        enough that their sessions are done with them), then ``forget``
        each, and delete an intent's bytes only when ``forget`` returned
        ``True``: a commit may have adopted the intent since the listing,
        and ``forget`` keeps an adopted intent and returns ``False``.
        ``False`` also when there was no such intent."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...


def check_expiry(idle_for: float, batch_size: int) -> None:
    """Refuse an idle time or batch size no store should accept."""
    if isinstance(idle_for, bool) or not isinstance(idle_for, int | float):
        raise ValueError(f"idle_for must be a number of seconds, not {idle_for!r}")
    if not math.isfinite(idle_for) or idle_for < 0:
        raise ValueError(f"idle_for must be finite and not negative, not {idle_for!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}")
