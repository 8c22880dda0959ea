"""Carrying out store effects: one request in, one result event out.

This is the only place that calls a :class:`~lash_machine.stores.base.SessionStore`
on the machine's behalf. It runs inline (the blocking driver), in a worker
thread (the async drivers) or in another process (behind
:mod:`lash_machine.transport`) and never raises for a failed store call:
every failure becomes the :class:`~lash_machine.events.EffectFailed` (or,
for a lost compare-and-set, :class:`~lash_machine.events.CommitConflicted`)
the machine expects, so a session is never left waiting for a result that
will not come.
"""

from __future__ import annotations

from typing import Protocol

import attrs

from .. import effects as fx
from .. import events as ev
from ..errors import HeadRevisionConflict, failure_of
from ..stores.base import SessionStore

__all__ = ["EffectRunner", "Outcome", "StoreRunner", "carry_out", "failed"]


@attrs.frozen
class Outcome:
    """What happened to one store request: the result event to feed the
    machine and, when the request failed in this process, the exception
    (the driver raises it, so callers see the store's own error)."""

    result: ev.Result
    error: BaseException | None = None


class EffectRunner(Protocol):
    """Carries out one store request and describes what happened.

    It must answer the request it was given (same ``request_id``) and
    should not raise: a failure is an :class:`Outcome` with
    :class:`~lash_machine.events.EffectFailed`. :class:`StoreRunner` is the
    local one; :class:`lash_machine.transport.RemoteStore` sends the
    request to another process.
    """

    def __call__(self, request: fx.StoreRequest) -> Outcome: ...


@attrs.frozen
class StoreRunner:
    """The :class:`EffectRunner` for a store in this process."""

    store: SessionStore

    def __call__(self, request: fx.StoreRequest) -> Outcome:
        return carry_out(self.store, request)


def failed(request_id: int, error: BaseException) -> Outcome:
    """The outcome of a request that failed with ``error``."""
    code, message, detail = failure_of(error)
    return Outcome(ev.EffectFailed(request_id, code, message, detail), error)


def carry_out(store: SessionStore, request: fx.StoreRequest) -> Outcome:
    """Run ``request`` against ``store``; return its result event.

    Any ``Exception`` from the store becomes ``EffectFailed`` (the exception
    rides along in :attr:`Outcome.error`); a commit's
    :class:`~lash_machine.errors.HeadRevisionConflict` becomes
    ``CommitConflicted`` with the stored head. ``BaseException`` (such as
    ``KeyboardInterrupt``) is not caught: the driver tells the machine (a
    read abandoned, a write's outcome unknown: ``SessionLoop.raised``) and
    raises it.
    """
    rid = request.request_id
    try:
        if isinstance(request, fx.Commit):
            return Outcome(ev.Committed(rid, store.commit(request.commit)))
        if isinstance(request, fx.LoadGraph):
            return Outcome(ev.GraphLoaded(rid, store.load_graph(request.session_id, request.scope)))
        if isinstance(request, fx.LoadNode):
            node = store.load_node(request.session_id, request.node_id)
            return Outcome(ev.LoadNodeResult(rid, node))
        if isinstance(request, fx.TombstoneNodes):
            count = store.tombstone_nodes(request.session_id, request.node_ids)
            return Outcome(ev.Tombstoned(rid, count))
        if isinstance(request, fx.ReadStamp):
            return Outcome(ev.StampRead(rid, store.session_stamp(request.session_id)))
        if isinstance(request, fx.ForkSession):
            head = store.fork_session(
                request.session_id, request.node_id, request.new_session_id, request.now
            )
            return Outcome(ev.Forked(rid, head))
        store.record_intent(request.intent)
        return Outcome(ev.IntentRecorded(rid))
    except HeadRevisionConflict as error:
        if isinstance(request, fx.Commit):
            return Outcome(ev.CommitConflicted(rid, error.actual), error)
        return failed(rid, error)
    except Exception as error:  # every failure must reach the machine, or it waits forever
        return failed(rid, error)
