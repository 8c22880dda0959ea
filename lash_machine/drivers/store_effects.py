"""Carrying out store effects: one request in, one result event out.

This is the only place that calls a :class:`~lash_machine.stores.base.SessionStore`
on the machine's behalf. It runs in a worker thread (or inline, in the
blocking driver, or in another process, behind :mod:`lash_machine.transport`)
and never raises for a failed store call: every failure becomes the
:class:`~lash_machine.events.EffectFailed` (or, for a lost compare-and-set,
:class:`~lash_machine.events.CommitConflicted`) the machine expects, so a
session is never left waiting for a result that will not come.
"""

from __future__ import annotations

from typing import Protocol, TypeAlias

import attrs

from .. import effects as fx
from .. import events as ev
from ..errors import (
    CommitOutcomeUnknown,
    CorruptRow,
    HeadRevisionConflict,
    LeaseHeld,
    LeaseLost,
    ParentTombstoned,
    SchemaVersionMismatch,
    SessionNotFound,
    StoreError,
    TombstoneRefused,
    TransientStoreError,
)
from ..stores.base import SessionStore

__all__ = [
    "STORE_REQUESTS",
    "WRITES",
    "EffectRunner",
    "Outcome",
    "StoreFailure",
    "StoreResult",
    "StoreRunner",
    "carry_out",
    "describe_failure",
    "failure_code",
]

StoreResult: TypeAlias = (
    ev.GraphLoaded
    | ev.LoadNodeResult
    | ev.Committed
    | ev.CommitConflicted
    | ev.Tombstoned
    | ev.IntentRecorded
    | ev.EffectFailed
)

#: Every effect a store carries out (the members of ``effects.StoreRequest``).
STORE_REQUESTS = (
    fx.LoadGraph,
    fx.LoadNode,
    fx.Commit,
    fx.TombstoneNodes,
    fx.RecordAttachmentIntent,
)

#: Store requests that change the store. Once started they may be applied
#: even if the caller gives up waiting, so drivers wait for their outcome.
WRITES = (fx.Commit, fx.TombstoneNodes, fx.RecordAttachmentIntent)


class StoreFailure(StoreError):
    """A store request failed and the driver holds no exception object to
    re-raise: the failure came back over a transport as an error code, or
    an effect runner broke its contract (answered another request).

    ``code`` is the :class:`~lash_machine.events.EffectFailed` code
    (``"store_error"``, ``"corrupt_row"``, ``"transport_error"``, ...) and
    ``operation`` the command that failed. The session is still usable:
    retry, or close it.
    """

    def __init__(self, operation: str, code: str, message: str) -> None:
        self.operation = operation
        self.code = code
        super().__init__(f"{operation} failed ({code}): {message}")


@attrs.frozen
class Outcome:
    """What happened to one store request: the result event to feed the
    machine and, when the request failed in this process, the exception
    (the driver re-raises it so callers see the store's own error type)."""

    result: StoreResult
    error: BaseException | None = None


class EffectRunner(Protocol):
    """Carries out one store request and describes what happened.

    Drivers call it from a worker thread. It must answer the request it was
    given (same ``request_id``) and should not raise: a failure is an
    :class:`Outcome` with :class:`~lash_machine.events.EffectFailed`.
    :class:`StoreRunner` is the local one; :class:`lash_machine.transport.RemoteStore`
    sends the request to another process.
    """

    def __call__(self, request: fx.StoreRequest) -> Outcome: ...


@attrs.frozen
class StoreRunner:
    """The :class:`EffectRunner` for a store in this process."""

    store: SessionStore

    def __call__(self, request: fx.StoreRequest) -> Outcome:
        return carry_out(self.store, request)


#: Most specific first: HeadRevisionConflict and friends are StoreErrors too.
_CODES: tuple[tuple[type[BaseException], str], ...] = (
    (HeadRevisionConflict, "head_revision_conflict"),
    (CorruptRow, "corrupt_row"),
    (SchemaVersionMismatch, "schema_version_mismatch"),
    (SessionNotFound, "session_not_found"),
    (LeaseHeld, "lease_held"),
    (LeaseLost, "lease_lost"),
    (TombstoneRefused, "tombstone_refused"),
    (ParentTombstoned, "parent_tombstoned"),
    (CommitOutcomeUnknown, "commit_outcome_unknown"),
    (TransientStoreError, "transient_store_error"),
    (StoreError, "store_error"),
)


def failure_code(error: BaseException) -> str:
    """The :class:`~lash_machine.events.EffectFailed` code for an exception
    a store raised (``"store_error"`` for anything not more specific)."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return "store_error"


def describe_failure(error: BaseException) -> str:
    """The :class:`~lash_machine.events.EffectFailed` message for an
    exception a store raised."""
    if isinstance(error, StoreError):
        return str(error)
    # A raw driver error (sqlite3, psycopg, OSError): keep its type visible.
    return f"{type(error).__name__}: {error}"


def carry_out(store: SessionStore, request: fx.StoreRequest) -> Outcome:
    """Run ``request`` against ``store``; return its result event.

    Any ``Exception`` from the store becomes ``EffectFailed`` (the exception
    rides along in :attr:`Outcome.error`); a commit's
    :class:`~lash_machine.errors.HeadRevisionConflict` becomes
    ``CommitConflicted`` with the stored head. ``BaseException`` (such as
    ``KeyboardInterrupt``) is not caught: the driver treats it as a
    cancellation.
    """
    rid = request.request_id
    try:
        if isinstance(request, fx.LoadGraph):
            return Outcome(ev.GraphLoaded(rid, store.load_graph(request.session_id, request.scope)))
        if isinstance(request, fx.LoadNode):
            node = store.load_node(request.session_id, request.node_id)
            return Outcome(ev.LoadNodeResult(rid, node))
        if isinstance(request, fx.Commit):
            return Outcome(ev.Committed(rid, store.commit(request.commit)))
        if isinstance(request, fx.TombstoneNodes):
            count = store.tombstone_nodes(request.session_id, request.node_ids)
            return Outcome(ev.Tombstoned(rid, count))
        store.record_intent(request.intent)
        return Outcome(ev.IntentRecorded(rid))
    except HeadRevisionConflict as error:
        if isinstance(request, fx.Commit):
            return Outcome(ev.CommitConflicted(rid, error.actual), error)
        return Outcome(ev.EffectFailed(rid, failure_code(error), str(error)), error)
    except Exception as error:  # every failure must reach the machine, or it waits forever
        return Outcome(ev.EffectFailed(rid, failure_code(error), describe_failure(error)), error)
