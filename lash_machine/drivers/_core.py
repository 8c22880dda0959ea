"""The loop-agnostic half of every driver.

A driver method is a *plan*: a generator that yields commands and receives
their replies, returning what the caller gets back. Each command makes one
:class:`Exchange`, the command's round trip through the machine: it feeds
the command to :func:`~lash_machine.step`, hands host effects to the hooks,
keeps the reply, and exposes the one store request (if any) the machine
waits for. The driver carries that request out (in a worker thread, on its
own loop) and feeds the :class:`~.store_effects.Outcome` back, or, when
the caller stops waiting, :meth:`Exchange.cancel` tells the machine so.

Nothing here does IO or knows about asyncio or trio; each driver is a short
loop around :meth:`SessionCore.advance`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from typing import Generic, TypeAlias, TypeVar

import attrs

from .. import effects as fx
from .. import events as ev
from ..errors import HeadRevisionConflict, InvalidEvent, ModelSpecMissing, ProtocolError
from ..machine import step
from ..model import JSON, NodeKind, ParkedSession, Residency, SessionNode, SessionPolicy
from ..state import MachineState, Phase, SessionState
from ._lease import FencedRunner, LeaseKeeper
from .hooks import Hooks
from .store_effects import STORE_REQUESTS, EffectRunner, Outcome, StoreFailure, StoreResult

__all__ = ["Done", "Exchange", "Plan", "SessionCore"]

T = TypeVar("T")
R = TypeVar("R")

#: A driver operation: yields commands, receives their replies, returns a value.
Plan: TypeAlias = Generator[ev.Command, fx.Reply, T]

_HOST = (fx.RestoreToolSurface, fx.RestorePlugins, fx.UnregisterPluginSession, fx.EmitLifecycle)


def _expect(reply: fx.Reply, kind: type[R]) -> R:
    if not isinstance(reply, kind):
        raise TypeError(f"the machine answered {type(reply).__name__}, expected {kind.__name__}")
    return reply


#: The result events that may answer each store request (besides EffectFailed).
_ANSWERS: dict[type, tuple[type, ...]] = {
    fx.LoadGraph: (ev.GraphLoaded,),
    fx.LoadNode: (ev.LoadNodeResult,),
    fx.Commit: (ev.Committed, ev.CommitConflicted),
    fx.TombstoneNodes: (ev.Tombstoned,),
    fx.RecordAttachmentIntent: (ev.IntentRecorded,),
}


def _mismatch(request: fx.StoreRequest, result: StoreResult) -> str:
    """Why ``result`` cannot be the answer to ``request`` ("" when it can)."""
    if result.request_id != request.request_id:
        return f"asked request {request.request_id}, the runner answered {result.request_id}"
    if not isinstance(result, (ev.EffectFailed, *_ANSWERS[type(request)])):
        return f"{type(result).__name__} does not answer {type(request).__name__}"
    return ""


@attrs.frozen
class Done(Generic[T]):
    """A plan finished with ``value``."""

    value: T


class Exchange:
    """One command's round trip through the machine, without IO.

    While :attr:`request` is not ``None`` the machine waits for it: carry it
    out and :meth:`feed` the outcome, or :meth:`cancel` it. Then
    :meth:`reply` gives the answer (or raises the failure it reports).
    With ``answer``, the driver answers the command itself and the machine
    is not consulted.
    """

    def __init__(
        self, core: SessionCore, command: ev.Command, answer: fx.Reply | None = None
    ) -> None:
        self.command = command
        #: The store request the machine waits for, if any.
        self.request: fx.StoreRequest | None = None
        self._core = core
        self._queue: deque[fx.Effect] = deque()
        self._reply: fx.Reply | None = answer
        self._error: BaseException | None = None
        self._hook_error: Exception | None = None
        if answer is None:
            # A ProtocolError here leaves the machine as it was: let it propagate.
            self._absorb(core.step(command))

    def feed(self, outcome: Outcome) -> None:
        """Feed the outcome of :attr:`request` to the machine.

        A result that does not answer the request (another request id or
        kind) is never fed, so the machine never sees a stale or forged
        result; the request is failed with ``"protocol_error"`` instead, so
        the machine stops waiting for it. The same happens when the machine
        refuses a result's content (a read of another session, say).
        """
        request = self._claim()
        result, error = outcome.result, outcome.error
        mismatch = _mismatch(request, result)
        if mismatch:
            error = StoreFailure(type(self.command).__name__, "protocol_error", mismatch)
            result = ev.EffectFailed(request.request_id, "protocol_error", mismatch)
        try:
            effects = self._core.step(result)
        except ProtocolError as refused:
            error = StoreFailure(type(self.command).__name__, "protocol_error", str(refused))
            effects = self._core.step(
                ev.EffectFailed(request.request_id, "protocol_error", str(refused))
            )
        self._error = error or self._error
        self._absorb(effects)

    def cancel(self, message: str = "the caller stopped waiting") -> None:
        """Tell the machine :attr:`request` will not be answered (the caller
        was cancelled or interrupted); it returns to a phase the caller can
        retry from. A late result of that request must then be dropped."""
        while self.request is not None:
            request = self._claim()
            self._absorb(self._core.step(ev.EffectFailed(request.request_id, "cancelled", message)))

    def reply(self) -> fx.Reply:
        """The command's answer. A ``ReplyFailed`` is raised as a typed
        exception (see :meth:`SessionCore.failure`); a hook's error is raised
        after the machine finished the command."""
        if self.request is not None:
            raise RuntimeError("the exchange still waits for a store request")
        assert self._reply is not None, "every command ends with a reply"
        if isinstance(self._reply, fx.ReplyFailed):
            raise self._core.failure(self._reply, self._error)
        if self._hook_error is not None:
            raise self._hook_error
        return self._reply

    def _claim(self) -> fx.StoreRequest:
        request = self.request
        if request is None:
            raise RuntimeError("the machine waits for no store request")
        self.request = None
        return request

    def _absorb(self, effects: Iterable[fx.Effect]) -> None:
        """Work through effects in order, stopping at a store request: the
        rest waits until its result has been fed."""
        self._queue.extend(effects)
        while self._queue:
            effect = self._queue.popleft()
            if isinstance(effect, STORE_REQUESTS):
                self.request = effect
                return
            if isinstance(effect, _HOST):
                try:
                    self._core.hooks.dispatch(effect)
                except Exception as error:  # the machine already moved on; report after the reply
                    self._hook_error = self._hook_error or error
            else:
                self._reply = effect


class SessionCore:
    """One session's machine and everything loop-agnostic about it: the
    state, the plans behind each driver method (which fill in ``now`` and
    fresh ids), and the mapping of failed replies to exceptions.

    ``runner`` is ``None`` for a session without a persistent store.
    ``lease``, when given, keeps the session's execution lease: store
    requests then go through a :class:`~._lease.FencedRunner`.
    """

    def __init__(
        self,
        runner: EffectRunner | None,
        hooks: Hooks,
        clock: Callable[[], float],
        new_id: Callable[[], str],
        lease: LeaseKeeper | None = None,
    ) -> None:
        self.state = MachineState.initial()
        self.lease = lease
        if lease is not None and runner is not None:
            runner = FencedRunner(runner, lease)
        self.runner = runner
        self.hooks = hooks
        self.clock = clock
        self.new_id = new_id
        self._session_id = ""

    @property
    def persistent(self) -> bool:
        """Whether the session commits to a store."""
        return self.runner is not None

    @property
    def session_id(self) -> str:
        """The session's id (empty before an open has chosen one)."""
        return self._session_id

    @property
    def releases_lease(self) -> bool:
        """Whether the session holds a lease it no longer needs (it is
        parked or closed): the driver should release it now."""
        return (
            self.lease is not None
            and self.lease.lease is not None
            and self.state.phase in (Phase.CLOSED, Phase.PARKED)
        )

    def step(self, event: ev.Event) -> list[fx.Effect]:
        """Feed one event to the machine and keep the new state."""
        self.state, effects = step(self.state, event)
        state = self.state
        for holder in (state.session, state.opening, state.parked):
            if holder is not None:
                self._session_id = holder.session_id
                break
        return effects

    def advance(self, plan: Plan[T], reply: fx.Reply | None) -> Exchange | Done[T]:
        """Run ``plan`` to its next command (sending it ``reply``, the answer
        to the previous one) and start that command's exchange."""
        try:
            command = next(plan) if reply is None else plan.send(reply)
        except StopIteration as finished:
            return Done(finished.value)
        if isinstance(command, ev.Park) and self.state.phase is Phase.PARKED:
            # A park retried after a cancellation that the store outlived.
            assert self.state.parked is not None
            return Exchange(self, command, answer=fx.ReplyParked(self.state.parked))
        return Exchange(self, command)

    def failure(self, reply: fx.ReplyFailed, error: BaseException | None) -> BaseException:
        """The exception a failed reply stands for: the store's own exception
        when this process saw it, else one built from the reply's code."""
        session = self.state.session
        if reply.error == "head_revision_conflict":
            expected = session.head_revision if session is not None else None
            return HeadRevisionConflict(self._session_id, expected, reply.stored_head)
        if reply.error == "model_spec_missing":
            return ModelSpecMissing(self._session_id)
        if reply.error == "unknown_node":
            return InvalidEvent(self.state.phase.value, "BranchTo", reply.message)
        if error is not None:
            return error
        return StoreFailure(reply.operation, reply.error, reply.message)

    # ---- plans: opening ---------------------------------------------------------

    def open(
        self, policy: SessionPolicy, session_id: str, residency: Residency, fresh_id: str = ""
    ) -> Plan[None]:
        """Open the session, or create it (``fresh_id``, or a fresh id of its
        own, when no ``session_id`` is given)."""
        command = ev.Open(
            policy,
            self.clock(),
            session_id=session_id,
            fresh_id="" if session_id else (fresh_id or self.new_id()),
            residency=residency,
            persistent=self.persistent,
        )
        _expect((yield command), fx.ReplyReady)

    def restore(
        self, state: SessionState, policy: SessionPolicy, residency: Residency, fresh_id: str = ""
    ) -> Plan[None]:
        """Rebuild a session from a state in hand: no store read (``fresh_id``,
        or a fresh id of its own, when the state has no id)."""
        command = ev.Restore(
            state,
            policy,
            self.clock(),
            residency=residency,
            persistent=self.persistent,
            fresh_id="" if state.session_id else (fresh_id or self.new_id()),
        )
        _expect((yield command), fx.ReplyReady)

    def resume(self, parked: ParkedSession | None, residency: Residency | None) -> Plan[None]:
        """Load a parked session again (this session's own handle when
        ``parked`` is ``None``)."""
        handle = parked or self.state.parked
        if handle is None:
            raise ProtocolError(self.state.phase.value, "Resume", "there is no parked handle")
        _expect((yield ev.Resume(handle, self.clock(), residency)), fx.ReplyReady)

    # ---- plans: edits -----------------------------------------------------------

    def append(self, body: JSON, kind: NodeKind) -> Plan[SessionNode]:
        """Append one node under the current leaf, in the current frame."""
        session = self.active("Append")
        node = SessionNode(
            node_id=self.new_id(),
            parent_id=session.graph.leaf_id,
            kind=kind,
            body=body,
            frame_id=session.current_frame_id,
            created_at=self.clock(),
        )
        _expect((yield ev.Append((node,))), fx.ReplyUpdated)
        return node

    def append_nodes(self, nodes: Iterable[SessionNode]) -> Plan[str | None]:
        """Append nodes as given; return the new leaf id."""
        return _expect((yield ev.Append(tuple(nodes))), fx.ReplyUpdated).leaf_id

    def branch(self, node_id: str) -> Plan[None]:
        """Make ``node_id`` the leaf."""
        _expect((yield ev.BranchTo(node_id)), fx.ReplyUpdated)

    def apply_tool_state(self, base_generation: int, data: JSON) -> Plan[int]:
        """Apply a tool-state delta; return the new generation."""
        reply = yield ev.ApplyToolState(base_generation, data)
        return _expect(reply, fx.ReplyUpdated).tool_generation

    def record_plugin_state(self, data: JSON) -> Plan[None]:
        """Replace the plugin snapshot."""
        _expect((yield ev.RecordPluginState(data)), fx.ReplyUpdated)

    def set_checkpoint(self, data: JSON) -> Plan[None]:
        """Replace the host checkpoint."""
        _expect((yield ev.SetCheckpoint(data)), fx.ReplyUpdated)

    def record_attachment(self, uri: str, attachment_id: str | None) -> Plan[str]:
        """Store an attachment's write-ahead intent; return its id."""
        command = ev.RecordAttachment(attachment_id or self.new_id(), uri, self.clock())
        return _expect((yield command), fx.ReplyAttachment).attachment_id

    # ---- plans: commit and leave ----------------------------------------------------

    def save(self) -> Plan[int]:
        """Commit; return the new head revision."""
        return _expect((yield ev.Save()), fx.ReplySaved).head_revision

    def park(self) -> Plan[ParkedSession]:
        """Commit and leave memory; return the handle."""
        return _expect((yield ev.Park()), fx.ReplyParked).parked

    def close(self, discard: bool) -> Plan[None]:
        """Leave the session."""
        _expect((yield ev.Close(discard)), fx.ReplyClosed)

    # ---- plans: queries and maintenance ------------------------------------------------

    def load_node(self, node_id: str) -> Plan[SessionNode | None]:
        """One node, resident or from the store."""
        return _expect((yield ev.LoadNode(node_id)), fx.ReplyNode).node

    def list_orphans(self) -> Plan[tuple[str, ...]]:
        """The ids of nodes off the active path."""
        return _expect((yield ev.ListOrphans()), fx.ReplyOrphans).node_ids

    def tombstone(self, node_ids: Iterable[str]) -> Plan[int]:
        """Hide committed orphans; return how many were hidden."""
        return _expect((yield ev.Tombstone(tuple(node_ids))), fx.ReplyTombstoned).count

    def tombstone_orphans(self) -> Plan[int]:
        """List the orphans, then hide the committed ones, as one operation."""
        orphans = _expect((yield ev.ListOrphans()), fx.ReplyOrphans).node_ids
        session = self.active("Tombstone")
        unsaved = {node.node_id for node in session.graph.since(session.saved_nodes)}
        targets = tuple(node_id for node_id in orphans if node_id not in unsaved)
        if not targets:
            return 0
        return _expect((yield ev.Tombstone(targets)), fx.ReplyTombstoned).count

    def active(self, event: str) -> SessionState:
        """The active session, or the :class:`ProtocolError` ``event`` would get."""
        session = self.state.session
        if session is None:
            raise ProtocolError(self.state.phase.value, event, "no session is active")
        return session
