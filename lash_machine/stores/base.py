"""The synchronous store contract every store implements.

Drivers call these methods from worker threads, never on an event loop.
Every lookup is scoped by session id: a node id of another session is never
returned, tombstoned or rewritten.
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
        :class:`~lash_machine.errors.HeadRevisionConflict` otherwise, with
        nothing applied."""
        ...

    def tombstone_nodes(self, session_id: str, node_ids: Sequence[str]) -> int:
        """Hide those nodes of the session from every read; return how many
        live nodes were hidden (ids of other sessions count as absent)."""
        ...

    def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes and forgotten intents."""
        ...

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, ordered by id."""
        ...

    def delete_session(self, session_id: str) -> bool:
        """Remove the session and all its rows; ``False`` when absent."""
        ...

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Write an attachment's intent before the host writes its bytes."""
        ...

    def list_uncommitted(self, older_than: float) -> list[AttachmentIntent]:
        """Intents no commit adopted, created before ``older_than``."""
        ...

    def forget(self, session_id: str, attachment_id: str) -> bool:
        """Drop an intent (after the host deleted its bytes)."""
        ...

    def close(self) -> None:
        """Release connections; the store is unusable afterwards."""
        ...
