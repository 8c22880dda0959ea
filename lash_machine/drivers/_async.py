"""The session-shaped async API, written once for asyncio and trio.

:class:`AsyncSession` and :class:`AsyncDriver` know nothing about either
loop: a loop's module supplies the lock, the way a store request runs in a
worker thread (and how it reacts to cancellation), and the lifecycle
stream. Everything else is a one-line call into the plans of
:class:`~._core.SessionCore`.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Callable, Iterable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, TypeVar

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
from ..stores.leases import Lease
from ._base import DriverBase, Start
from ._core import Done, Exchange, Plan, SessionCore
from ._facts import SessionFacts
from .hooks import Hooks

__all__ = ["AsyncDriver", "AsyncSession", "LifecycleStreamBase"]

T = TypeVar("T")
S = TypeVar("S", bound="AsyncSession")


class AsyncSession(SessionFacts, abc.ABC):
    """One session, driven on an event loop.

    Calls on one session are serialized (a lock), so each reply answers its
    own call. A failed store request raises (the store's exception, or
    :class:`~lash_machine.errors.HeadRevisionConflict` for a lost commit)
    and leaves the session usable: retry, or close it. A cancelled call
    leaves it usable too (see the driver module for what a cancelled write
    does). :class:`~lash_machine.errors.ProtocolError` means the call does
    not fit the session's phase or content; nothing changed.
    """

    def __init__(self, core: SessionCore) -> None:
        self._core = core
        self._lock = self._new_lock()

    @abc.abstractmethod
    def _new_lock(self) -> AbstractAsyncContextManager[Any]: ...

    @abc.abstractmethod
    async def _carry_out(self, exchange: Exchange) -> None:
        """Run ``exchange.request`` off the loop and feed its outcome back,
        or cancel it in the exchange before letting a cancellation through."""

    @abc.abstractmethod
    async def _lease_call(self, call: Callable[[], T]) -> T:
        """Run a lease call (claim, renew, release) off the loop to its end,
        even through a cancellation, which is let through afterwards: the
        store may have applied it, so the session must learn its outcome."""

    async def _do(self, plan: Plan[T], claim: str | None = None) -> T:
        """Run ``plan`` to its end, claiming the lease of ``claim`` first
        (when leases are on) and releasing the lease once the session is
        parked or closed, whatever happened."""
        async with self._lock:
            keeper = self._core.lease
            try:
                if claim is not None and keeper is not None:
                    await self._lease_call(functools.partial(keeper.claim, claim))
                result = await self._run(plan)
            except BaseException as error:
                await self._settle_lease(error)
                raise
            await self._settle_lease(None)
            return result

    async def _run(self, plan: Plan[T]) -> T:
        reply: fx.Reply | None = None
        while True:
            exchange = self._core.advance(plan, reply)
            if isinstance(exchange, Done):
                return exchange.value
            while exchange.request is not None:
                await self._carry_out(exchange)
            reply = exchange.reply()

    async def _settle_lease(self, error: BaseException | None) -> None:
        """Release the lease of a parked or closed session. A failed release
        is raised, or noted on the ``error`` already under way; the lease
        stays held, so the next call (a retried park) releases it again."""
        keeper = self._core.lease
        if keeper is None or not self._core.releases_lease:
            return
        try:
            await self._lease_call(keeper.release)
        except Exception as failed:
            if error is None:
                raise
            error.add_note(f"releasing the session's lease failed too: {failed!r}")

    # ---- the lease --------------------------------------------------------------------

    async def renew_lease(self) -> Lease:
        """Extend the session's lease by its time-to-live now (commits renew
        it when due; call this to keep an idle session longer). Raises
        :class:`~lash_machine.errors.LeaseLost` when another worker took
        the session over."""
        keeper = self._core.lease
        if keeper is None:
            raise RuntimeError("the driver was made without lease_owner: no lease to renew")
        async with self._lock:
            return await self._lease_call(keeper.renew)

    # ---- edits ----------------------------------------------------------------------

    async def append(self, body: JSON, *, kind: NodeKind = NodeKind.MESSAGE) -> SessionNode:
        """Append one node (fresh id, parent = the current leaf, the current
        frame, now) and make it the leaf; return it."""
        return await self._do(self._core.append(body, kind))

    async def append_nodes(self, nodes: Iterable[SessionNode]) -> str | None:
        """Append nodes exactly as given (the last becomes the leaf); return
        the new leaf id."""
        return await self._do(self._core.append_nodes(nodes))

    async def branch(self, node_id: str) -> None:
        """Make ``node_id`` the leaf; the next append forks there. Under
        ``ACTIVE_PATH_ONLY`` a node that is not resident is loaded first."""
        await self._do(self._core.branch(node_id))

    async def apply_tool_state(self, base_generation: int, data: JSON) -> int:
        """Apply a tool-state delta made on ``base_generation``; return the
        new generation. A stale base raises
        :class:`~lash_machine.errors.InvalidEvent`."""
        return await self._do(self._core.apply_tool_state(base_generation, data))

    async def record_plugin_state(self, data: JSON) -> None:
        """Replace the plugin snapshot (its revision grows by one)."""
        await self._do(self._core.record_plugin_state(data))

    async def set_checkpoint(self, data: JSON) -> None:
        """Replace the host checkpoint (any JSON kept with the session)."""
        await self._do(self._core.set_checkpoint(data))

    async def record_attachment(self, uri: str, attachment_id: str | None = None) -> str:
        """Store the write-ahead intent of an attachment (a fresh id when
        none is given) and return its id. Write the bytes only after this
        returns; the next commit adopts the attachment."""
        return await self._do(self._core.record_attachment(uri, attachment_id))

    # ---- commit and leave --------------------------------------------------------------

    async def save(self) -> int:
        """Commit the changes; return the new head revision. Another
        writer's commit raises :class:`~lash_machine.errors.HeadRevisionConflict`
        (its ``actual`` is the stored head) and the changes stay in memory."""
        return await self._do(self._core.save())

    async def park(self) -> ParkedSession:
        """Commit, then leave memory; return the handle for :meth:`resume`.
        Conflicts raise as for :meth:`save`. On a parked session this
        returns its handle again, so a retried park is safe."""
        return await self._do(self._core.park())

    async def resume(self, *, residency: Residency | None = None) -> None:
        """Load this parked session again (its handle's residency unless
        ``residency`` is given)."""
        parked = self._core.state.parked
        claim = None if parked is None else parked.session_id
        await self._do(self._core.resume(None, residency), claim)

    async def close(self, *, discard: bool = False) -> None:
        """Leave the session. Uncommitted changes raise
        :class:`~lash_machine.errors.InvalidEvent` unless ``discard``."""
        await self._do(self._core.close(discard))

    # ---- queries and maintenance -------------------------------------------------------

    async def load_node(self, node_id: str) -> SessionNode | None:
        """One node: from memory when resident, else from the store
        (``None`` when it does not exist or was tombstoned)."""
        return await self._do(self._core.load_node(node_id))

    async def list_orphans(self) -> tuple[str, ...]:
        """The ids of stored and resident nodes off the active path."""
        return await self._do(self._core.list_orphans())

    async def tombstone(self, node_ids: Iterable[str]) -> int:
        """Hide committed nodes off the active path in the store (and drop
        them from memory); return how many were hidden."""
        return await self._do(self._core.tombstone(node_ids))

    async def tombstone_orphans(self) -> int:
        """Hide every committed orphan; return how many were hidden."""
        return await self._do(self._core.tombstone_orphans())


class LifecycleStreamBase(abc.ABC):
    """Lifecycle events as an async iterator. Subscribed from creation
    until :meth:`close` (or the end of a ``with`` block); events emitted
    meanwhile are buffered, then iteration ends."""

    def __init__(self, hooks: Hooks) -> None:
        self._unsubscribe = hooks.on_lifecycle(self._put)

    @abc.abstractmethod
    def _put(self, event: fx.LifecycleEvent) -> None: ...

    @abc.abstractmethod
    def _end(self) -> None: ...

    @abc.abstractmethod
    async def __anext__(self) -> fx.LifecycleEvent: ...

    def __aiter__(self) -> LifecycleStreamBase:
        return self

    def close(self) -> None:
        """Stop listening; iteration ends after the buffered events."""
        self._unsubscribe()
        self._end()

    def __enter__(self) -> LifecycleStreamBase:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncDriver(DriverBase, Generic[S], abc.ABC):
    """Opens sessions on an event loop; see :class:`~._base.DriverBase`
    for the arguments.

    Every open, restore or resume gives an independent session object. Two
    of them on the same session id are two writers, as two workers would
    be: the one that commits second gets
    :class:`~lash_machine.errors.HeadRevisionConflict`.
    """

    @property
    @abc.abstractmethod
    def _session_class(self) -> Callable[[SessionCore], S]: ...

    @abc.abstractmethod
    async def _in_thread(self, call: Callable[[], T]) -> T: ...

    async def _start(self, start: Start) -> S:
        plan, session_id = start
        core = self._new_core()
        session = self._session_class(core)
        await session._do(plan(core), session_id)
        return session

    async def open(
        self,
        policy: SessionPolicy,
        session_id: str = "",
        *,
        residency: Residency = Residency.KEEP_ALL,
    ) -> S:
        """Open the session ``session_id`` or create it (a fresh id when
        empty). Raises :class:`~lash_machine.errors.ModelSpecMissing` when no
        model is named anywhere."""
        return await self._start(self._opening(policy, session_id, residency))

    async def restore(
        self,
        state: SessionState,
        policy: SessionPolicy,
        *,
        residency: Residency = Residency.KEEP_ALL,
    ) -> S:
        """Rebuild a session from a state in hand (no store read)."""
        return await self._start(self._restoring(state, policy, residency))

    async def resume(self, parked: ParkedSession, *, residency: Residency | None = None) -> S:
        """Load a parked session (a stored session may have moved on since
        the handle was made; the store's head wins)."""
        return await self._start(self._resuming(parked, residency))

    async def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes and forgotten intents."""
        store = self._local_store()
        return await self._in_thread(store.vacuum)
