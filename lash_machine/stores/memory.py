"""The in-memory store: the reference semantics every other store matches.

It keeps what the SQL stores keep (rows of JSON text), so a caller can never
mutate stored state through a record it passed in or got back, and a value
JSON cannot hold fails here exactly as it fails in SQLite or Postgres.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import attrs

from ..errors import (
    HeadRevisionConflict,
    LeaseLost,
    ParentTombstoned,
    StoreError,
    TombstoneRefused,
)
from ..model import SessionNode
from ..persisted import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    ReadScope,
    SessionCommit,
    SessionInfo,
    StoredSession,
    VacuumReport,
)
from ._rows import (
    LEAF_REASON,
    NodeRow,
    SessionRow,
    built_on,
    check_session_id,
    decode_node,
    decode_session,
    encode_intent,
    encode_node,
    encode_session,
    fold_repairs,
    orphan_reason,
    path_root_first,
    with_parent,
)
from .leases import Lease, check_claim, check_fence, claim_verdict

__all__ = ["MemoryStore"]


@attrs.define
class _Node:
    row: NodeRow
    tombstoned: bool = False


@attrs.define
class _Session:
    head_revision: int
    row: SessionRow
    updated_at: float
    # Insertion order is the dict's order; vacuum deletes keep it.
    nodes: dict[str, _Node] = attrs.Factory(dict)
    live_nodes: int = 0


@attrs.define
class _Lease:
    owner: str | None  # None once released
    token: int
    expires_at: float

    def held(self) -> tuple[str | None, int, float]:
        return (self.owner, self.token, self.expires_at)


class MemoryStore:
    """A :class:`~lash_machine.stores.base.SessionStore` in a dict, guarded
    by one lock. Nothing survives the process; use it in tests and for
    sessions that need no durability. Grants execution leases
    (:class:`~lash_machine.stores.leases.LeaseStore`) to the threads of
    this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}
        self._intents: dict[tuple[str, str], AttachmentIntent] = {}
        # Never deleted, not even with the session: tokens must not repeat.
        self._leases: dict[str, _Lease] = {}
        self._closed = False

    def _check_open(self) -> None:
        if self._closed:
            raise StoreError("the store is closed")

    def load_graph(self, session_id: str, scope: ReadScope) -> StoredSession | None:
        """The session with the nodes of ``scope``, or ``None``."""
        with self._lock:
            self._check_open()
            session = self._sessions.get(session_id)
            if session is None:
                return None
            if isinstance(scope, FullGraph):
                rows = [n.row for n in session.nodes.values() if not n.tombstoned]
            elif isinstance(scope, ActivePath):
                leaf = scope.leaf_id if scope.leaf_id is not None else session.row.leaf_id
                rows = [] if leaf is None else self._path(session, leaf)
            else:
                raise StoreError(f"unknown read scope {scope!r}")
            head, row = session.head_revision, session.row
        nodes = tuple(decode_node(session_id, r) for r in rows)
        return decode_session(session_id, head, attrs.astuple(row), nodes)

    @staticmethod
    def _path(session: _Session, leaf_id: str) -> list[NodeRow]:
        def live(node_id: str) -> NodeRow | None:
            node = session.nodes.get(node_id)
            return None if node is None or node.tombstoned else node.row

        return path_root_first(live, lambda row: row[1], leaf_id)

    def load_node(self, session_id: str, node_id: str) -> SessionNode | None:
        """One live node of the session, or ``None``."""
        with self._lock:
            self._check_open()
            session = self._sessions.get(session_id)
            node = None if session is None else session.nodes.get(node_id)
            if node is None or node.tombstoned:
                return None
            row = node.row
        return decode_node(session_id, row)

    def commit(self, commit: SessionCommit) -> int:
        """Apply ``commit`` when the stored head equals its expected head
        and it builds only on live nodes."""
        # Encode before taking the lock: a value JSON cannot hold fails here
        # with nothing applied.
        session_row = encode_session(commit)
        rows, repairs = fold_repairs(
            [encode_node(commit.session_id, n) for n in commit.delta.appended], commit.delta
        )
        with self._lock:
            self._check_open()
            session = self._sessions.get(commit.session_id)
            actual = None if session is None else session.head_revision
            lease = self._leases.get(commit.session_id)
            check_fence(
                commit.session_id,
                commit.fencing_token,
                None if lease is None else lease.held(),
                time.time(),
            )
            if actual != commit.expected_head:
                raise HeadRevisionConflict(commit.session_id, commit.expected_head, actual)
            existing = {} if session is None else session.nodes
            if session is not None:
                for node_id in built_on(rows, repairs, commit.delta.leaf_id):
                    node = existing.get(node_id)
                    if (node is None or node.tombstoned) and node_id != session.row.leaf_id:
                        raise ParentTombstoned(commit.session_id, node_id)
            seen: set[str] = set()
            for row in rows:
                if row[0] in existing or row[0] in seen:
                    raise StoreError(
                        f"session {commit.session_id!r}: node {row[0]!r} is already stored"
                    )
                seen.add(row[0])
            now = time.time()
            if session is None:
                session = _Session(head_revision=1, row=session_row, updated_at=now)
                self._sessions[commit.session_id] = session
            else:
                session.head_revision += 1
                session.row = session_row
                session.updated_at = now
            for row in rows:
                session.nodes[row[0]] = _Node(row)
            session.live_nodes += len(rows)
            for node_id, parent_id in repairs.items():
                node = session.nodes.get(node_id)
                if node is not None:
                    node.row = with_parent(node.row, parent_id)
            for attachment_id in commit.adopt_attachments:
                key = (commit.session_id, attachment_id)
                intent = self._intents.get(key)
                if intent is not None:
                    self._intents[key] = attrs.evolve(intent, committed=True)
            return session.head_revision

    def tombstone_nodes(self, session_id: str, node_ids: Sequence[str]) -> int:
        """Hide live nodes of the session; return how many were hidden.
        Refused when one is the stored leaf or the parent of a live node
        not hidden with it."""
        with self._lock:
            self._check_open()
            session = self._sessions.get(session_id)
            if session is None:
                return 0
            targets = {
                node_id
                for node_id in node_ids
                if (node := session.nodes.get(node_id)) is not None and not node.tombstoned
            }
            if not targets:
                return 0
            leaf_id = session.row.leaf_id
            if leaf_id in targets:
                raise TombstoneRefused(session_id, leaf_id, LEAF_REASON)
            for node_id, node in session.nodes.items():
                parent_id = node.row[1]
                if parent_id in targets and not node.tombstoned and node_id not in targets:
                    raise TombstoneRefused(session_id, parent_id, orphan_reason(node_id))
            for node_id in targets:
                session.nodes[node_id].tombstoned = True
            session.live_nodes -= len(targets)
            return len(targets)

    def vacuum(self) -> VacuumReport:
        """Drop tombstoned nodes for good, except one a live node still
        names as its parent (forgotten intents are already gone:
        :meth:`forget` deletes)."""
        with self._lock:
            self._check_open()
            removed = 0
            for session in self._sessions.values():
                needed = {n.row[1] for n in session.nodes.values() if not n.tombstoned}
                dead = [k for k, n in session.nodes.items() if n.tombstoned and k not in needed]
                for node_id in dead:
                    del session.nodes[node_id]
                removed += len(dead)
            return VacuumReport(nodes_removed=removed)

    def list_sessions(self) -> list[SessionInfo]:
        """Every session, ordered by id, with its live node count."""
        with self._lock:
            self._check_open()
            return [
                SessionInfo(sid, s.head_revision, s.live_nodes, s.updated_at)
                for sid, s in sorted(self._sessions.items())
            ]

    def delete_session(self, session_id: str) -> bool:
        """Remove the session, its nodes and its intents."""
        with self._lock:
            self._check_open()
            for key in [k for k in self._intents if k[0] == session_id]:
                del self._intents[key]
            return self._sessions.pop(session_id, None) is not None

    def record_intent(self, intent: AttachmentIntent) -> None:
        """Record (or replace) the intent of one attachment; an intent a
        commit adopted stays committed."""
        encode_intent(intent)
        with self._lock:
            self._check_open()
            key = (intent.session_id, intent.attachment_id)
            found = self._intents.get(key)
            if found is not None and found.committed and not intent.committed:
                intent = attrs.evolve(intent, committed=True)
            self._intents[key] = intent

    def list_uncommitted(self, older_than: float) -> list[AttachmentIntent]:
        """Unadopted intents created before ``older_than``, oldest first."""
        with self._lock:
            self._check_open()
            found = [
                i for i in self._intents.values() if not i.committed and i.created_at < older_than
            ]
        return sorted(found, key=lambda i: (i.created_at, i.session_id, i.attachment_id))

    def forget(self, session_id: str, attachment_id: str) -> bool:
        """Delete one uncommitted intent; ``False`` (and nothing deleted)
        when there is none or a commit adopted it."""
        with self._lock:
            self._check_open()
            key = (session_id, attachment_id)
            found = self._intents.get(key)
            if found is None or found.committed:
                return False
            del self._intents[key]
            return True

    # -- execution leases ---------------------------------------------------

    def claim_lease(
        self, session_id: str, owner: str, ttl: float, now: float | None = None
    ) -> Lease:
        """Claim the session for ``owner`` (see
        :class:`~lash_machine.stores.leases.LeaseStore`)."""
        check_claim(owner, ttl)
        check_session_id(session_id)
        with self._lock:
            self._check_open()
            at = time.time() if now is None else now
            found = self._leases.get(session_id)
            token = claim_verdict(session_id, owner, None if found is None else found.held(), at)
            self._leases[session_id] = _Lease(owner, token, at + ttl)
            return Lease(session_id, owner, token, at + ttl)

    def renew_lease(self, lease: Lease, ttl: float, now: float | None = None) -> Lease:
        """Extend a current lease; :class:`LeaseLost` when it is not."""
        check_claim(lease.owner, ttl)
        with self._lock:
            self._check_open()
            found = self._leases.get(lease.session_id)
            if found is None or (found.owner, found.token) != (lease.owner, lease.token):
                current = None if found is None else found.token
                raise LeaseLost(lease.session_id, lease.token, current)
            found.expires_at = (time.time() if now is None else now) + ttl
            return attrs.evolve(lease, expires_at=found.expires_at)

    def release_lease(self, lease: Lease) -> bool:
        """Give the session up; ``False`` when the lease was not current."""
        with self._lock:
            self._check_open()
            found = self._leases.get(lease.session_id)
            if found is None or (found.owner, found.token) != (lease.owner, lease.token):
                return False
            found.owner = None
            return True

    def current_lease(self, session_id: str, now: float | None = None) -> Lease | None:
        """The live lease of the session, if any."""
        with self._lock:
            self._check_open()
            found = self._leases.get(session_id)
            at = time.time() if now is None else now
            if found is None or found.owner is None or found.expires_at <= at:
                return None
            return Lease(session_id, found.owner, found.token, found.expires_at)

    def close(self) -> None:
        """Drop everything; later calls raise :class:`StoreError`."""
        with self._lock:
            self._closed = True
            self._sessions.clear()
            self._intents.clear()
            self._leases.clear()
