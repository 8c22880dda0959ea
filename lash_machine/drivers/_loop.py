"""The session loop, written once for every driver.

A driver call is one command through the machine. :class:`SessionLoop`
steps the command, hands host effects to the hooks, keeps the reply, and
gives the driver each :class:`Job` the call needs carried out: a store
request the machine waits for, or a lease call (claim before an open,
release once parked or closed). The driver runs the job its own way
(inline, in a worker thread) and hands the outcome back to
:meth:`SessionLoop.done`, which feeds it to the machine and answers the
next job, until there is none; :meth:`SessionLoop.answer` then gives the
reply or raises the failure it stands for. When the caller stops waiting
for a read, :meth:`SessionLoop.abandon` tells the machine so; when a job
raises instead of returning, :meth:`SessionLoop.raised` does.

A driver is thus this loop and nothing else::

    job = loop.begin(command)
    while job is not None:
        job = loop.done(job, <run job.run() inline or in a thread>)
    return loop.answer()

plus its lock and what it does when cancelled: a read (``job.write`` is
false) may be abandoned; a write must be waited for, because the store may
apply it anyway, and its real outcome fed.

Nothing here does IO or knows about asyncio or trio.
"""

from __future__ import annotations

import functools
import typing
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs

from .. import effects as fx
from .. import events as ev
from ..checks import Addition, GraphCheck
from ..errors import (
    CheckFailed,
    DriverClosed,
    ErrorCode,
    ProtocolError,
    StoreFailure,
    code_of,
    error_from_failure,
)
from ..machine import step
from ..model import NodeKind, SessionNode
from ..state import MachineState, Phase, SessionState, WarmSession
from ._lease import LeaseKeeper
from ._warm import WarmCache
from .hooks import Hooks
from .store_effects import EffectRunner, Outcome, failed

__all__ = ["Job", "SessionLoop"]

#: The result events that may answer each store request.
_ANSWERS: dict[type, tuple[type, ...]] = {
    fx.LoadGraph: (ev.GraphLoaded, ev.EffectFailed),
    fx.LoadNode: (ev.LoadNodeResult, ev.EffectFailed),
    fx.Commit: (ev.Committed, ev.CommitConflicted, ev.EffectFailed),
    fx.TombstoneNodes: (ev.Tombstoned, ev.EffectFailed),
    fx.RecordAttachmentIntent: (ev.IntentRecorded, ev.EffectFailed),
    fx.ReadStamp: (ev.StampRead, ev.EffectFailed),
    fx.ForkSession: (ev.Forked, ev.EffectFailed),
}
#: The store requests that write, and the effects for the host's hooks (by
#: type: a set lookup, where ``isinstance`` of a union tries each member).
_WRITES = frozenset(typing.get_args(fx.StoreWrite))
_HOST = frozenset(typing.get_args(fx.HostEffect))


@attrs.frozen
class Job:
    """One thing a call needs carried out off the machine: run ``run()``
    (it never raises an ``Exception``: failures come back as its outcome)
    and hand what it returned to :meth:`SessionLoop.done`, or what it
    raised to :meth:`SessionLoop.raised`.

    ``write``: the store may apply it even if nobody waits, so a driver
    never abandons it. ``lease``: a lease call, which a driver also runs
    through a cancellation that arrived before it started.
    """

    run: Callable[[], Any]
    write: bool
    lease: bool = False
    request: fx.StoreRequest | None = None


@attrs.frozen
class _LeaseOutcome:
    value: object = None
    error: BaseException | None = None


def _lease_call(call: Callable[[], object]) -> _LeaseOutcome:
    try:
        return _LeaseOutcome(call())
    except Exception as error:  # the call's outcome, reported by answer()
        return _LeaseOutcome(error=error)


def _mismatch(request: fx.StoreRequest, result: ev.Result) -> str:
    """Why ``result`` cannot be the answer to ``request`` ("" when it can)."""
    if result.request_id != request.request_id:
        return f"asked request {request.request_id}, the runner answered {result.request_id}"
    if type(result) not in _ANSWERS[type(request)]:
        return f"{type(result).__name__} does not answer {type(request).__name__}"
    return ""


class SessionLoop:
    """One session's machine and everything loop-agnostic about it.

    ``runner`` is ``None`` for a session without a persistent store;
    ``lease``, when given, keeps the session's execution lease; ``closed``
    tells whether the driver was closed (nothing runs afterwards).
    """

    def __init__(
        self,
        runner: EffectRunner | None,
        hooks: Hooks,
        clock: Callable[[], float],
        new_id: Callable[[], str],
        *,
        lease: LeaseKeeper | None = None,
        closed: Callable[[], bool] = lambda: False,
        warm: WarmCache | None = None,
        checks: tuple[GraphCheck, ...] = (),
    ) -> None:
        self.state = MachineState.initial()
        self.checks = checks
        self.runner = runner
        self.hooks = hooks
        self.clock = clock
        self.new_id = new_id
        self.lease = lease
        self.warm = warm
        self._closed = closed
        self._session_id = ""
        self._queue: deque[fx.Effect] = deque()
        self._command: ev.Command | None = None
        self._stage = ""  # "claim", "command", "release" or "renew"
        self._reply: object = None
        self._error: BaseException | None = None
        self._release_error: BaseException | None = None
        self._hook_error: Exception | None = None

    @property
    def persistent(self) -> bool:
        """Whether the session commits to a store."""
        return self.runner is not None

    @property
    def session_id(self) -> str:
        """The session's id (empty before an open has chosen one)."""
        return self._session_id

    def step(self, event: ev.Event) -> list[fx.Effect]:
        """Feed one event to the machine and keep the new state."""
        self.state, effects = step(self.state, event)
        for holder in (self.state.session, self.state.opening, self.state.parked):
            if holder is not None:
                self._session_id = holder.session_id
                break
        return effects

    # ---- one call ---------------------------------------------------------------

    def begin(self, command: ev.Command, claim: str | None = None) -> Job | None:
        """Start a call of ``command``, claiming the lease of the session
        ``claim`` first when leases are on. A command the machine refuses
        raises here (:class:`~lash_machine.errors.ProtocolError`), and the
        machine is as it was."""
        if self._closed():
            raise DriverClosed(type(command).__name__)
        self._start(command)
        if claim is not None and self.lease is not None:
            keeper = self.lease
            self._stage = "claim"
            return Job(functools.partial(_lease_call, lambda: keeper.claim(claim)), True, True)
        return self._run_command()

    def begin_renewal(self) -> Job:
        """Start a call that renews the lease (see :meth:`answer`)."""
        keeper = self.lease
        if keeper is None:
            raise RuntimeError("the driver was made without lease_owner: no lease to renew")
        if self._closed():
            raise DriverClosed("renew_lease")
        self._start(None)
        self._stage = "renew"
        return Job(functools.partial(_lease_call, keeper.renew), True, True)

    def done(self, job: Job, outcome: Any, *, stopping: bool = False) -> Job | None:
        """Feed what ``job.run()`` returned; return the next job, if any.

        ``stopping``: the caller was cancelled meanwhile, so nothing new is
        started: a claim that went through is released at once, and a read
        the machine asks for next is abandoned; only what is owed (a lease
        release) is still handed out.
        """
        following = self._done(job, outcome, stopping)
        while stopping and following is not None and not following.write:
            following = self.abandon(following)
        return following

    def _done(self, job: Job, outcome: Any, stopping: bool) -> Job | None:
        if job.lease:
            return self._lease_done(outcome, stopping)
        request = job.request
        assert request is not None and isinstance(outcome, Outcome)
        result, error = outcome.result, outcome.error
        mismatch = _mismatch(request, result)
        if mismatch:
            # A stale or forged result is never fed: the request fails.
            error = StoreFailure(type(self._command).__name__, "protocol_error", mismatch)
            result = ev.EffectFailed(request.request_id, ErrorCode.PROTOCOL_ERROR, mismatch)
        try:
            effects = self.step(result)
        except ProtocolError as refused:  # the machine refused the result's content
            error = StoreFailure(type(self._command).__name__, "protocol_error", str(refused))
            effects = self.step(
                ev.EffectFailed(request.request_id, ErrorCode.PROTOCOL_ERROR, str(refused))
            )
        # The last outcome's error: the machine may have recovered from an
        # earlier one (a commit it sent again).
        self._error = error
        self._queue.extend(effects)
        return self._next()

    def abandon(self, job: Job, message: str = "the caller stopped waiting") -> Job | None:
        """The caller stopped waiting for a read (or for a job that never
        started): the machine is told, and returns to where the caller can
        retry from. A late outcome of ``job`` must be dropped. Returns the
        job still owed (a lease release), which the driver runs to its end."""
        assert job.request is not None, "lease calls are always waited for"
        self._queue.extend(
            self.step(ev.EffectFailed(job.request.request_id, ErrorCode.CANCELLED, message))
        )
        return self._next()

    def raised(self, job: Job, error: BaseException, *, started: bool = True) -> Job | None:
        """``job.run()`` raised ``error`` instead of returning (a
        ``BaseException``, or the ``Exception`` of a runner that breaks its
        contract); the driver raises it once the jobs still owed are done.
        The machine must hear of it, or it waits forever: a read, or a
        write that never ``started``, is abandoned; a write that ran may
        have been applied, so its outcome is unknown (a commit is sent
        again under its commit id, which settles it); a lease call failed.
        As with :meth:`done` ``stopping``, only what is owed follows."""
        if job.lease:
            return self.done(job, _LeaseOutcome(error=error), stopping=True)
        reason = f"the call ended in {type(error).__name__}: {error}"
        if not (job.write and started):
            return self.abandon(job, reason)
        assert job.request is not None
        unknown = ev.EffectFailed(job.request.request_id, ErrorCode.COMMIT_OUTCOME_UNKNOWN, reason)
        return self.done(job, Outcome(unknown), stopping=True)

    def answer(self) -> Any:
        """The call's reply (the renewed lease, for a renewal). A failed
        reply raises the exception it stands for (the store's own when this
        process saw it); a hook's error is raised after the machine
        finished the call."""
        reply, error = self._reply, self._error
        if reply is not None and not isinstance(reply, fx.ReplyFailed):
            error = None  # the call succeeded, whatever went wrong on the way
        if isinstance(reply, fx.ReplyFailed) and (error is None or code_of(error) != reply.error):
            error = error_from_failure(
                reply.error, reply.message, reply.detail, operation=reply.operation
            )
        if error is None:
            error = self._release_error
        elif self._release_error is not None:
            # The lease stays held: the next call (a retried park) releases it.
            error.add_note(f"releasing the session's lease failed too: {self._release_error!r}")
        if error is not None:
            raise error
        if self._hook_error is not None:
            raise self._hook_error
        return reply

    # ---- the steps of a call ------------------------------------------------------

    def _start(self, command: ev.Command | None) -> None:
        self._command, self._reply, self._error = command, None, None
        self._release_error = self._hook_error = None

    def _run_command(self) -> Job | None:
        assert self._command is not None
        self._stage = "command"
        self._queue.extend(self.step(self._command))
        return self._next()

    def _next(self) -> Job | None:
        """Work through the machine's effects in order up to the next store
        request; once none is left, release a lease the session no longer
        needs."""
        while self._queue:
            effect = self._queue.popleft()
            kind = type(effect)
            if kind in _ANSWERS:
                return self._store_job(effect)  # type: ignore[arg-type]
            if kind in _HOST:
                try:
                    self.hooks.dispatch(effect)  # type: ignore[arg-type]
                except Exception as error:  # the machine already moved on; report after the reply
                    self._hook_error = self._hook_error or error
            else:
                self._reply = effect
                if isinstance(effect, fx.ReplyParked):
                    self._keep_warm(effect)
        keeper = self.lease
        if (
            self._stage == "command"
            and keeper is not None
            and keeper.lease is not None
            and self.state.phase in (Phase.CLOSED, Phase.PARKED)
        ):
            self._stage = "release"
            return Job(functools.partial(_lease_call, keeper.release), True, True)
        return None

    def _keep_warm(self, reply: fx.ReplyParked) -> None:
        if self.warm is not None and reply.session is not None:
            self.warm.keep(WarmSession(reply.session, self.state.residency))

    def _store_job(self, request: fx.StoreRequest) -> Job:
        runner, keeper = self.runner, self.lease
        assert runner is not None, "a session without a store makes no store requests"
        write = type(request) in _WRITES
        if keeper is None or not write:
            return Job(functools.partial(runner, request), write, request=request)

        def fenced() -> Outcome:
            try:
                sent = keeper.fenced(request)
            except Exception as error:  # the machine must hear of it, or it waits forever
                return failed(request.request_id, error)
            return runner(sent)

        return Job(fenced, True, request=request)

    def _lease_done(self, outcome: _LeaseOutcome, stopping: bool) -> Job | None:
        stage = self._stage
        if stage == "claim" and outcome.error is None:
            if stopping and self.lease is not None:
                # The caller is gone before the command ran: give the claim back.
                self._stage = "release"
                return Job(functools.partial(_lease_call, self.lease.release), True, True)
            return self._run_command()
        if stage == "release":
            self._release_error = outcome.error
        else:  # a failed claim (the command never ran), or a renewal
            self._reply, self._error = outcome.value, outcome.error
        return None

    # ---- what the session methods build -------------------------------------------

    def active(self, event: str) -> SessionState:
        """The active session, or the :class:`ProtocolError` ``event`` would get."""
        session = self.state.session
        if session is None:
            raise ProtocolError(self.state.phase.value, event, "no session is active")
        return session

    def warm_for(self, session_id: str) -> WarmSession | None:
        """The copy of the session this driver kept when it parked it."""
        return None if self.warm is None else self.warm.get(session_id)

    def repair(self, check: GraphCheck) -> ev.Repair | None:
        """The command that appends what ``check`` proposes for the active
        path (``None``: it proposes nothing). Raises
        :class:`~lash_machine.errors.CheckFailed` when the check raises or
        proposes something other than additions."""
        session = self.active("Repair")
        try:
            additions = tuple(check.repairs(session.graph.active_path()))
        except Exception as error:  # the host's code: reported as the check's failure
            raise CheckFailed(check.name, session.session_id, _raised(error)) from error
        if not additions:
            return None
        wrong = next((a for a in additions if not isinstance(a, Addition)), None)
        if wrong is not None:
            raise CheckFailed(
                check.name,
                session.session_id,
                f"repairs() returned a {type(wrong).__name__}, not an Addition",
            )
        node_ids = tuple(self.new_id() for _ in additions)
        return ev.Repair(check.name, additions, node_ids, self.clock())

    def new_node(self, body: object, kind: NodeKind) -> SessionNode:
        """A node under the current leaf, in the current frame: a fresh id, now."""
        session = self.active("Append")
        return SessionNode(
            node_id=self.new_id(),
            parent_id=session.graph.leaf_id,
            kind=kind,
            body=body,
            frame_id=session.current_frame_id,
            created_at=self.clock(),
        )


def _raised(error: Exception) -> str:
    return f"it raised {type(error).__name__}: {error}"
