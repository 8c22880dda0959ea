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

Every identifier a store keys rows by (session, node, frame, attachment id)
is text of at most :data:`~lash_machine.content.MAX_ID_LENGTH` characters,
and every node is checked by :func:`~lash_machine.content.node_problem`
before anything is written: a violation is a :class:`StoreError` naming it,
the same on every store.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from ..model import SessionNode
from ..persisted import (
    AttachmentIntent,
    ReadScope,
    SessionCommit,
    SessionInfo,
    StoredSession,
    VacuumReport,
)

__all__ = ["SCHEMA_VERSION", "SessionStore"]

#: The version of the SQL schemas this release reads and writes. Version 2
#: added the execution-lease table; a version 1 database is refused (the
#: format was never released, so no migration exists).
SCHEMA_VERSION = 2


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
        :class:`~lash_machine.errors.CorruptRow` for an undecodable row."""
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

    def delete_session(self, session_id: str) -> bool:
        """Remove the session and all its rows; ``False`` when absent. A
        commit racing the delete either lands before it (and its nodes go
        too) or finds the session gone."""
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
