"""The blocking driver: the same session API without an event loop, for
scripts and the CLI.

Store effects still run in a small pool of worker threads, so that a
``KeyboardInterrupt`` (or another signal handler's exception) never lands
inside a store call and leaves a connection half-used. An interrupt while
waiting behaves like a cancellation in the async drivers:

* a **read** is abandoned: the machine is told (``EffectFailed(...,
  "cancelled")``), returns to where it was, and the late result is dropped;
* a **write** may already be applied, so the driver keeps waiting for it
  (absorbing further interrupts), feeds the machine the real result, then
  re-raises the interrupt. The session always agrees with the store.

Use the driver as a context manager (or call :meth:`Driver.close`) to stop
its worker threads.
"""

from __future__ import annotations

import concurrent.futures
import functools
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TypeVar

from .. import effects as fx
from ..model import (
    JSON,
    NodeKind,
    ParkedSession,
    Residency,
    SessionNode,
    SessionPolicy,
)
from ..persisted import VacuumReport
from ..state import SessionState
from ..stores.base import SessionStore
from ..stores.leases import Lease
from ._base import DriverBase, Start, new_id
from ._core import Done, Exchange, Plan, SessionCore
from ._facts import SessionFacts
from .hooks import Hooks
from .store_effects import WRITES, EffectRunner, Outcome

__all__ = ["Driver", "Session"]

T = TypeVar("T")
R = TypeVar("R")


class Session(SessionFacts):
    """One session, driven by blocking calls.

    Calls on one session are serialized (a lock; do not call back into the
    same session from a hook). A failed store request raises (the store's
    exception, or :class:`~lash_machine.errors.HeadRevisionConflict` for a
    lost commit) and leaves the session usable: retry, or close it.
    """

    def __init__(self, core: SessionCore, pool: concurrent.futures.Executor) -> None:
        self._core = core
        self._pool = pool
        self._lock = threading.Lock()

    def _do(self, plan: Plan[T], claim: str | None = None) -> T:
        """Run ``plan`` to its end, claiming the lease of ``claim`` first
        (when leases are on) and releasing the lease once the session is
        parked or closed, whatever happened."""
        with self._lock:
            keeper = self._core.lease
            try:
                if claim is not None and keeper is not None:
                    self._lease_call(functools.partial(keeper.claim, claim))
                result = self._run(plan)
            except BaseException as error:
                self._settle_lease(error)
                raise
            self._settle_lease(None)
            return result

    def _run(self, plan: Plan[T]) -> T:
        reply: fx.Reply | None = None
        while True:
            exchange = self._core.advance(plan, reply)
            if isinstance(exchange, Done):
                return exchange.value
            while exchange.request is not None:
                self._carry_out(exchange)
            reply = exchange.reply()

    def _lease_call(self, call: Callable[[], T]) -> T:
        """Run a lease call in a worker thread to its end, through
        interrupts (re-raised afterwards): the store may have applied it."""
        job = self._pool.submit(call)
        interrupted: BaseException | None = None
        while not job.done():
            try:
                _wait(job)
            except BaseException as error:  # an interrupt: the call may be applied, keep waiting
                interrupted = interrupted or error
        if interrupted is not None:
            raise interrupted
        return job.result()

    def _settle_lease(self, error: BaseException | None) -> None:
        """Release the lease of a parked or closed session (see the async
        drivers: a failed release is raised or noted, and retried by the
        next call)."""
        keeper = self._core.lease
        if keeper is None or not self._core.releases_lease:
            return
        try:
            self._lease_call(keeper.release)
        except Exception as failed:
            if error is None:
                raise
            error.add_note(f"releasing the session's lease failed too: {failed!r}")

    def _carry_out(self, exchange: Exchange) -> None:
        request, runner = exchange.request, self._core.runner
        assert request is not None and runner is not None
        try:
            job = self._pool.submit(runner, request)
        except BaseException:  # interrupted (or the pool is shut down): nothing was sent
            exchange.cancel("interrupted")
            raise
        if isinstance(request, WRITES):
            _outlast(exchange, job)
            return
        try:
            outcome = _wait(job).result()
        except BaseException:  # interrupted: the machine must not keep waiting
            exchange.cancel("interrupted")
            raise
        exchange.feed(outcome)

    # ---- the lease --------------------------------------------------------------------

    def renew_lease(self) -> Lease:
        """Extend the session's lease by its time-to-live now; raises
        :class:`~lash_machine.errors.LeaseLost` when another worker took
        the session over."""
        keeper = self._core.lease
        if keeper is None:
            raise RuntimeError("the driver was made without lease_owner: no lease to renew")
        with self._lock:
            return self._lease_call(keeper.renew)

    # ---- the API of the async drivers, without await ------------------------------------

    def append(self, body: JSON, *, kind: NodeKind = NodeKind.MESSAGE) -> SessionNode:
        """Append one node under the current leaf; return it."""
        return self._do(self._core.append(body, kind))

    def append_nodes(self, nodes: Iterable[SessionNode]) -> str | None:
        """Append nodes exactly as given; return the new leaf id."""
        return self._do(self._core.append_nodes(nodes))

    def branch(self, node_id: str) -> None:
        """Make ``node_id`` the leaf (loading it first when not resident)."""
        self._do(self._core.branch(node_id))

    def apply_tool_state(self, base_generation: int, data: JSON) -> int:
        """Apply a tool-state delta; return the new generation."""
        return self._do(self._core.apply_tool_state(base_generation, data))

    def record_plugin_state(self, data: JSON) -> None:
        """Replace the plugin snapshot."""
        self._do(self._core.record_plugin_state(data))

    def set_checkpoint(self, data: JSON) -> None:
        """Replace the host checkpoint."""
        self._do(self._core.set_checkpoint(data))

    def record_attachment(self, uri: str, attachment_id: str | None = None) -> str:
        """Store an attachment's write-ahead intent; return its id."""
        return self._do(self._core.record_attachment(uri, attachment_id))

    def save(self) -> int:
        """Commit; return the new head revision."""
        return self._do(self._core.save())

    def park(self) -> ParkedSession:
        """Commit and leave memory; return the handle (again, if parked)."""
        return self._do(self._core.park())

    def resume(self, *, residency: Residency | None = None) -> None:
        """Load this parked session again."""
        parked = self._core.state.parked
        claim = None if parked is None else parked.session_id
        self._do(self._core.resume(None, residency), claim)

    def close(self, *, discard: bool = False) -> None:
        """Leave the session (``discard`` drops uncommitted changes)."""
        self._do(self._core.close(discard))

    def load_node(self, node_id: str) -> SessionNode | None:
        """One node, resident or from the store."""
        return self._do(self._core.load_node(node_id))

    def list_orphans(self) -> tuple[str, ...]:
        """The ids of stored and resident nodes off the active path."""
        return self._do(self._core.list_orphans())

    def tombstone(self, node_ids: Iterable[str]) -> int:
        """Hide committed nodes off the active path; return the count."""
        return self._do(self._core.tombstone(node_ids))

    def tombstone_orphans(self) -> int:
        """Hide every committed orphan; return the count."""
        return self._do(self._core.tombstone_orphans())


#: How often a wait wakes up. A signal that arrives just before a blocking
#: wait starts is only handled when the wait returns: waking regularly keeps
#: Ctrl-C prompt.
_POLL = 0.1


def _wait(job: concurrent.futures.Future[R]) -> concurrent.futures.Future[R]:
    while not job.done():
        concurrent.futures.wait([job], timeout=_POLL)
    return job


def _outlast(exchange: Exchange, job: concurrent.futures.Future[Outcome]) -> None:
    """Wait for a write through interrupts, feed its real outcome, then
    re-raise the first interrupt."""
    interrupted: BaseException | None = None
    while not job.done():
        try:
            _wait(job)
        except BaseException as error:  # an interrupt: the write may be applied, keep waiting
            interrupted = interrupted or error
    failure = job.exception()
    if failure is not None:
        exchange.cancel("the effect runner raised")
        raise interrupted or failure
    exchange.feed(job.result())
    if interrupted is not None:
        raise interrupted


class Driver(DriverBase):
    """Opens sessions with blocking calls (see :class:`~._base.DriverBase`
    for the arguments; ``workers`` is the size of the store-call pool).

    As with the async drivers, two session objects on the same session id
    are two writers: the one that commits second gets
    :class:`~lash_machine.errors.HeadRevisionConflict`.
    """

    def __init__(
        self,
        store: SessionStore | None = None,
        *,
        runner: EffectRunner | None = None,
        hooks: Hooks | None = None,
        clock: Callable[[], float] = time.time,
        ids: Callable[[], str] = new_id,
        lease_owner: str | None = None,
        lease_ttl: float = 30.0,
        workers: int = 4,
    ) -> None:
        super().__init__(
            store,
            runner=runner,
            hooks=hooks,
            clock=clock,
            ids=ids,
            lease_owner=lease_owner,
            lease_ttl=lease_ttl,
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="lash-store")

    def _start(self, start: Start) -> Session:
        plan, session_id = start
        core = self._new_core()
        session = Session(core, self._pool)
        session._do(plan(core), session_id)
        return session

    def open(
        self,
        policy: SessionPolicy,
        session_id: str = "",
        *,
        residency: Residency = Residency.KEEP_ALL,
    ) -> Session:
        """Open the session ``session_id`` or create it."""
        return self._start(self._opening(policy, session_id, residency))

    def restore(
        self,
        state: SessionState,
        policy: SessionPolicy,
        *,
        residency: Residency = Residency.KEEP_ALL,
    ) -> Session:
        """Rebuild a session from a state in hand (no store read)."""
        return self._start(self._restoring(state, policy, residency))

    def resume(self, parked: ParkedSession, *, residency: Residency | None = None) -> Session:
        """Load a parked session."""
        return self._start(self._resuming(parked, residency))

    def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes and forgotten intents."""
        return self._local_store().vacuum()

    def close(self) -> None:
        """Stop the worker threads (waiting for calls still running)."""
        self._pool.shutdown(wait=True)

    def __enter__(self) -> Driver:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
