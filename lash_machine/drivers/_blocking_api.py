# Written by scripts/unasync.py from _async_api.py: edit that file, then run
# `python scripts/unasync.py`. tests/test_drivers_generated.py fails when this is stale.
"""The session and driver API, written once.

This file is the source of both forms: :class:`AsyncSession` and
:class:`AsyncDriver` here (for asyncio and trio), ``BlockingSession`` and
``BlockingDriver`` in ``_blocking_api.py``, which ``scripts/unasync.py``
writes from this file by dropping ``async`` and ``await`` (a test fails
when it is stale). Each session method builds one command, runs it through
the session loop (:mod:`._loop`) with :meth:`AsyncSession._call`, and takes
its value out of the reply; each driver module supplies its lock and
``_drive`` (how it runs the loop's jobs) and nothing else of substance.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import Any, Generic, TypeVar

from .. import effects as fx
from .. import events as ev
from ..errors import CheckFailed, InvalidEvent, ProtocolError
from ..model import JSON, NodeKind, ParkedSession, Residency, SessionNode, SessionPolicy
from ..persisted import VacuumReport
from ..state import SessionState
from ..stores.leases import Lease
from ._base import DriverBase, Start, new_id
from ._facts import SessionFacts
from ._loop import Job, SessionLoop

__all__ = ["BlockingDriver", "BlockingSession"]

R = TypeVar("R")
T = TypeVar("T")
S = TypeVar("S", bound="BlockingSession")


def _expect(reply: fx.Reply, kind: type[R]) -> R:
    if not isinstance(reply, kind):
        raise TypeError(f"the machine answered {type(reply).__name__}, expected {kind.__name__}")
    return reply


class BlockingSession(SessionFacts, abc.ABC):
    """One session of a driver.

    Calls on one session are serialized (a lock), so each reply answers its
    own call. A failed store request raises (the store's exception, or
    :class:`~lash_machine.errors.HeadRevisionConflict` for a lost commit)
    and leaves the session usable: retry, or close it. A cancelled call
    leaves it usable too (see the driver module for what a cancelled write
    does). :class:`~lash_machine.errors.ProtocolError` means the call does
    not fit the session's phase or content; nothing changed.
    """

    def __init__(self, core: SessionLoop, lock: AbstractContextManager[object]) -> None:
        self._core = core
        self._lock = lock

    @abc.abstractmethod
    def _drive(self, job: Job | None) -> Any:
        """Carry out the session loop's jobs, from ``job`` on, the way this
        driver runs store calls; return the loop's answer."""

    def _call(self, command: ev.Command, claim: str | None = None) -> fx.Reply:
        """Run ``command`` through the session loop (claiming the lease of
        the session ``claim`` first) and return its reply."""
        with self._lock:
            return self._drive(self._core.begin(command, claim))  # type: ignore[no-any-return]

    def _renew(self) -> Lease:
        with self._lock:
            return self._drive(self._core.begin_renewal())  # type: ignore[no-any-return]

    def _run_checks(self) -> None:
        """Run the driver's checks on the active path and append their
        repairs; a check that fails closes the session unsaved (see
        :class:`~._base.DriverBase`)."""
        for check in self._core.checks:
            try:
                command = self._core.repair(check)
                if command is not None:
                    self._call(command)
            except (CheckFailed, InvalidEvent) as error:
                session_id = self._core.session_id
                self._call(ev.Close(discard=True))
                if isinstance(error, CheckFailed):
                    raise
                reason = f"the session refused its repair: {error}"
                raise CheckFailed(check.name, session_id, reason) from error

    # ---- the lease --------------------------------------------------------------------

    def renew_lease(self) -> Lease:
        """Extend the session's lease by its time-to-live from now (commits
        renew it when due; call this to keep an idle session longer).
        Raises :class:`~lash_machine.errors.LeaseLost` when another worker
        took the session over."""
        return self._renew()

    # ---- edits ----------------------------------------------------------------------

    def append(self, body: JSON, *, kind: NodeKind = NodeKind.MESSAGE) -> SessionNode:
        """Append one node (fresh id, parent = the current leaf, the current
        frame, now) and make it the leaf; return it. A body that is not JSON
        as the stores keep it raises :class:`~lash_machine.errors.InvalidEvent`."""
        node = self._core.new_node(body, kind)
        self._call(ev.Append((node,)))
        return node

    def append_nodes(self, nodes: Iterable[SessionNode]) -> str | None:
        """Append nodes exactly as given (the last becomes the leaf); return
        the new leaf id."""
        return _expect(self._call(ev.Append(tuple(nodes))), fx.ReplyUpdated).leaf_id

    def branch(self, node_id: str) -> None:
        """Make ``node_id`` the leaf; the next append forks there. Under
        ``ACTIVE_PATH_ONLY`` a node that is not resident is loaded first."""
        self._call(ev.BranchTo(node_id))

    def apply_tool_state(self, base_generation: int, data: JSON) -> int:
        """Apply a tool-state delta made on ``base_generation``; return the
        new generation. A stale base raises
        :class:`~lash_machine.errors.InvalidEvent`."""
        reply = self._call(ev.ApplyToolState(base_generation, data))
        return _expect(reply, fx.ReplyUpdated).tool_generation

    def record_plugin_state(self, data: JSON) -> None:
        """Replace the plugin snapshot (its revision grows by one)."""
        self._call(ev.RecordPluginState(data))

    def set_checkpoint(self, data: JSON) -> None:
        """Replace the host checkpoint (any JSON kept with the session)."""
        self._call(ev.SetCheckpoint(data))

    def record_attachment(self, uri: str, attachment_id: str | None = None) -> str:
        """Store the write-ahead intent of an attachment (a fresh id when
        none is given) and return its id. Write the bytes only after this
        returns; the next commit adopts the attachment."""
        command = ev.RecordAttachment(attachment_id or self._core.new_id(), uri, self._core.clock())
        return _expect(self._call(command), fx.ReplyAttachment).attachment_id

    # ---- commit and leave --------------------------------------------------------------

    def save(self) -> int:
        """Commit the changes; return the new head revision. Another
        writer's commit raises :class:`~lash_machine.errors.HeadRevisionConflict`
        (its ``actual`` is the stored head) and the changes stay in memory.
        A commit whose outcome the store could not report is sent again
        once; if that fails too, :class:`~lash_machine.errors.CommitOutcomeUnknown`
        is raised and the next save or park settles it."""
        return _expect(self._call(ev.Save()), fx.ReplySaved).head_revision

    def park(self) -> ParkedSession:
        """Commit, then leave memory; return the handle for :meth:`resume`.
        Conflicts raise as for :meth:`save`. On a parked session this
        returns its handle again, so a retried park is safe."""
        return _expect(self._call(ev.Park()), fx.ReplyParked).parked

    def resume(self, *, residency: Residency | None = None) -> None:
        """Load this parked session again (its handle's residency unless
        ``residency`` is given). A handle whose session is no longer in the
        store raises :class:`~lash_machine.errors.SessionNotFound`."""
        parked = self._core.state.parked
        if parked is None:
            raise ProtocolError(self._core.state.phase.value, "Resume", "there is no parked handle")
        warm = self._core.warm_for(parked.session_id)
        command = ev.Resume(parked, self._core.clock(), residency, writer=new_id(), warm=warm)
        self._call(command, parked.session_id)
        self._run_checks()

    def close(self, *, discard: bool = False) -> None:
        """Leave the session. Uncommitted changes raise
        :class:`~lash_machine.errors.InvalidEvent` unless ``discard``. On a
        closed session this does nothing, so a retried close is safe."""
        self._call(ev.Close(discard))

    # ---- pins and copies ---------------------------------------------------------------

    def pin(self, node_id: str) -> None:
        """Keep ``node_id`` and its ancestors: prune and
        :meth:`tombstone_orphans` never remove them. Written by the next
        commit; the store refuses it then if the node is no longer live."""
        self._call(ev.Pin(node_id))

    def unpin(self, node_id: str) -> None:
        """Take a pin back (written by the next commit). The pin of a
        compaction in effect is refused with
        :class:`~lash_machine.errors.InvalidEvent`: :meth:`uncompact` takes
        it back."""
        self._call(ev.Unpin(node_id))

    def fork(self, node_id: str | None = None, new_session_id: str | None = None) -> ParkedSession:
        """Copy this session's history up to ``node_id`` (the leaf by
        default; it must be committed) into a new session, in one store
        transaction; return the new session's handle (resume it to work on
        the copy). The copy records where it came from
        (``StoredSession.origin``); this session is not changed."""
        command = ev.Fork(new_session_id or self._core.new_id(), self._core.clock(), node_id)
        return _expect(self._call(command), fx.ReplyForked).parked

    # ---- compaction ------------------------------------------------------------------

    def compact(self, through: str, summary: JSON) -> SessionNode:
        """Replace the active path up to ``through`` by a summary node whose
        body holds ``summary`` (any JSON: the host's text, its token count);
        return that node. The active path becomes the summary, then the
        nodes after ``through``. Nothing is deleted: the replaced nodes stay
        in the store, pinned, loadable with :meth:`load_node`, and
        :meth:`uncompact` puts them back. The next commit writes the
        compaction whole; a conflicting writer gets
        :class:`~lash_machine.errors.HeadRevisionConflict`, never half of it."""
        node_id = self._core.new_id()
        self._call(ev.Compact(through, summary, node_id, self._core.clock()))
        node = self._core.active("Compact").graph.get(node_id)
        assert node is not None
        return node

    def uncompact(self, summary_id: str) -> None:
        """Undo :meth:`compact`: the nodes after the summary hang under the
        ones it replaced again, and the compaction's pin is taken back.
        Under ``ACTIVE_PATH_ONLY`` the replaced path is loaded first."""
        self._call(ev.Uncompact(summary_id))

    # ---- queries and maintenance -------------------------------------------------------

    def load_node(self, node_id: str) -> SessionNode | None:
        """One node: from memory when resident, else from the store
        (``None`` when it does not exist or was tombstoned)."""
        return _expect(self._call(ev.LoadNode(node_id)), fx.ReplyNode).node

    def list_orphans(self) -> tuple[str, ...]:
        """The ids of stored and resident nodes off the active path."""
        return _expect(self._call(ev.ListOrphans()), fx.ReplyOrphans).node_ids

    def tombstone(self, node_ids: Iterable[str]) -> int:
        """Hide committed nodes off the active path in the store (and drop
        them from memory); return how many were hidden. A node the stored
        graph still needs raises :class:`~lash_machine.errors.TombstoneRefused`."""
        reply = self._call(ev.Tombstone(tuple(node_ids)))
        return _expect(reply, fx.ReplyTombstoned).count

    def tombstone_orphans(self) -> int:
        """Hide every committed orphan (uncommitted nodes and their
        ancestors stay); return how many were hidden."""
        return _expect(self._call(ev.TombstoneOrphans()), fx.ReplyTombstoned).count


class BlockingDriver(DriverBase, Generic[S], abc.ABC):
    """Opens sessions; see :class:`~._base.DriverBase` for the arguments.

    Every open, restore or resume gives an independent session object. Two
    of them on the same session id are two writers, as two workers would
    be: the one that commits second gets
    :class:`~lash_machine.errors.HeadRevisionConflict`.
    """

    @abc.abstractmethod
    def _session(self, core: SessionLoop) -> S:
        """A session object of this driver around ``core``."""

    @abc.abstractmethod
    def _in_thread(self, call: Callable[[], T]) -> T:
        """Run a store call the way this driver runs them."""

    def _start(self, start: Start) -> S:
        command, claim = start
        session = self._session(self._new_loop())
        session._call(command, claim)
        session._run_checks()
        return session

    def open(
        self,
        policy: SessionPolicy,
        session_id: str = "",
        *,
        residency: Residency = Residency.KEEP_ALL,
    ) -> S:
        """Open the session ``session_id`` or create it (a fresh id when
        empty). Raises :class:`~lash_machine.errors.ModelSpecMissing` when no
        model is named anywhere."""
        return self._start(self._opening(policy, session_id, residency))

    def restore(
        self,
        state: SessionState,
        policy: SessionPolicy,
        *,
        residency: Residency = Residency.KEEP_ALL,
    ) -> S:
        """Rebuild a session from a state in hand (no store read)."""
        return self._start(self._restoring(state, policy, residency))

    def resume(self, parked: ParkedSession, *, residency: Residency | None = None) -> S:
        """Load a parked session (a stored session may have moved on since
        the handle was made; the store's head wins). A handle whose session
        is not in the store raises :class:`~lash_machine.errors.SessionNotFound`."""
        return self._start(self._resuming(parked, residency))

    def vacuum(self) -> VacuumReport:
        """Physically remove tombstoned nodes and forgotten intents."""
        return self._in_thread(self._local_store("vacuum").vacuum)
