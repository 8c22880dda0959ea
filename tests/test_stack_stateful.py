"""The whole stack under a rule-based test: blocking drivers on a real
SQLite file or a real PostgreSQL schema, two workers (each with a store
object of its own, with or without leases) on the same sessions, an
operator between the steps (prune, vacuum and heal through the command
line's own function; tombstones, deletes, expiry and lease takeovers
through a third store object), commits that fail or lose their answer,
handles and session states carried through the wire before reuse, and on
PostgreSQL an operator transaction racing a commit in flight (ordered by a
row lock a fourth connection holds).

After every step, against what the test saw acknowledged:

* every acknowledged node is readable (its body as written), unless a
  tombstone the test saw succeed, or a delete, took it;
* nothing vanishes from the store except by a tombstone, and a tombstone
  hides only what was off the stored active path and not pinned (nor an
  ancestor of a pinned node);
* the stored graph needs no repair, and the tables hold no live node under
  a removed parent (vacuum never took one), no dead leaf, no stray row;
* a session opened or resumed holds what its residency promises;
* memory and store agree on every node both hold, and a session with
  nothing to commit has the stored active path;
* every failure is a typed :class:`~lash_machine.errors.LashMachineError`.

``LASH_MACHINE_STRESS=full`` (scripts/stress.sh) runs many more examples.
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from machine_helpers import POLICY
from stack_support import (
    FAULTS,
    FaultyStore,
    Place,
    Stage,
    outcome,
    postgres_place,
    sqlite_place,
    table_problems,
)
from test_reliability_support import report

from lash_machine import wire
from lash_machine.cli import main
from lash_machine.cli.exits import Exit
from lash_machine.compaction import read_summary
from lash_machine.drivers.blocking import Driver, Session
from lash_machine.errors import (
    CommitOutcomeUnknown,
    InvalidEvent,
    LashMachineError,
    LeaseHeld,
    LeaseLost,
    SessionDeleted,
    SessionNotFound,
)
from lash_machine.graph import SessionGraph, heal_graph
from lash_machine.model import NodeKind, ParkedSession, Residency, SessionNode
from lash_machine.persisted import FullGraph, StoredSession
from lash_machine.state import Phase, SessionState
from lash_machine.stores.base import SessionStore
from lash_machine.testing.healing import graph_problems
from lash_machine.testing.strategies import json_values

_FULL = os.environ.get("LASH_MACHINE_STRESS", "") == "full"
EXAMPLES = 200 if _FULL else 25
STEPS = 60 if _FULL else 30

#: The operator actions that tidy up (drawn most often).
_TIDY = ("prune", "prune_through_the_store", "vacuum")

#: The operator actions that end sessions (drawn less often than the rest).
_ENDS = ("delete", "expire")

#: What the rules met, by rule and outcome (printed with ``-s``).
SEEN: Counter[str] = Counter()

#: A session id with the characters careless SQL trips over.
_ODD = "q'%\\ü"


@attrs.define
class Slot:
    """One session object of a worker."""

    worker: str
    session: Session
    session_id: str
    residency: Residency
    #: Set when an operator took the session's lease over from this worker.
    lease_lost: bool = False


def _path_ids(stored: StoredSession, leaf: str | None = None) -> list[str]:
    by_id = {node.node_id: node for node in stored.nodes}
    path: list[str] = []
    current = stored.leaf_id if leaf is None else leaf
    while current is not None and current in by_id and len(path) <= len(by_id):
        path.append(current)
        current = by_id[current].parent_id
    return path[::-1]


def _hideable(stored: StoredSession) -> set[str]:
    """What a tombstone may hide of ``stored``: off the active path, not
    pinned, not above a pinned node."""
    parents = {node.node_id: node.parent_id for node in stored.nodes}
    kept = set(_path_ids(stored))
    for pinned in stored.pinned:
        current: str | None = pinned
        while current is not None and current not in kept:
            kept.add(current)
            current = parents.get(current)
    return set(parents) - kept


def _as_committed(stored: StoredSession, state: SessionState) -> StoredSession:
    """``stored`` as the commit of ``state`` leaves it: its nodes (parents
    as memory has them), its leaf and its pin changes."""
    nodes = {node.node_id: node for node in stored.nodes}
    nodes.update((node.node_id, node) for node in state.graph)
    pinned = set(stored.pinned)
    for node_id, flag in state.pin_changes:
        (pinned.add if flag else pinned.discard)(node_id)
    return attrs.evolve(
        stored, nodes=tuple(nodes.values()), leaf_id=state.graph.leaf_id, pinned=tuple(pinned)
    )


def _same(one: SessionNode, other: SessionNode) -> bool:
    """The same node, up to its parent (repairs and compactions move it)."""
    return (one.node_id, one.kind, one.body, one.frame_id, one.created_at) == (
        other.node_id,
        other.kind,
        other.body,
        other.frame_id,
        other.created_at,
    )


class Stack(RuleBasedStateMachine):
    place: Place
    stores: dict[str, SessionStore]
    residency: Residency
    examples = 0

    def __init__(self) -> None:
        super().__init__()
        Stack.examples += 1
        prefix = self.prefix = f"x{Stack.examples}-"
        self.session_ids = [prefix + "a", prefix + _ODD]
        self.known: set[str] = set(self.session_ids)
        self.deleted: set[str] = set()
        self.acked: dict[str, dict[str, SessionNode]] = {}
        self.hidden: dict[str, set[str]] = {}
        self.slots: list[Slot] = []
        self.handles: list[str] = []
        self.drivers: dict[str, Driver] = {}
        self.faulty = FaultyStore(self.stores["a"])
        self.operator = self.stores["operator"]
        self.counter = 0
        self.may_hide = False
        self.last: dict[str, StoredSession | None] = {}
        #: What a race's operator saw when the commit went first, by session.
        self.raced: dict[str, StoredSession] = {}

    # ---- calling, and what a call may raise ------------------------------------------

    def call(self, work: Callable[[], Any]) -> Any:
        """Run ``work``; return its value or the typed error it raised."""
        rule_name = sys._getframe(1).f_code.co_name
        try:
            result = work()
        except LashMachineError as error:
            SEEN[f"{rule_name}:{type(error).__name__}"] += 1
            return error
        # Anything else propagates: every failure must be typed.
        SEEN[f"{rule_name}:ok"] += 1
        return result

    def cli(self, *args: str) -> int:
        with redirect_stdout(StringIO()), redirect_stderr(StringIO()):
            code = main([*args, *self.place.target])
        return code

    def fresh(self) -> str:
        self.counter += 1
        return f"{self.session_ids[0]}-{self.counter}"

    def active(self) -> list[Slot]:
        return [s for s in self.slots if s.session.phase is Phase.ACTIVE]

    def parked(self) -> list[Slot]:
        return [s for s in self.slots if s.session.phase is Phase.PARKED]

    def stored(self, session_id: str) -> StoredSession | None:
        return self.operator.load_graph(session_id, FullGraph())

    def _claimed(self, worker: str, session_id: str) -> None:
        """A claim by an owner fences its older tokens: the worker's other
        sessions on that id have lost their lease."""
        if self.drivers[worker].lease_owner is None:
            return
        for other in self.slots:
            if other.worker == worker and other.session_id == session_id:
                other.lease_lost = other.lease_lost or other.session.lease is not None

    def _add(self, worker: str, session: Session, residency: Residency) -> Slot:
        self._claimed(worker, session.session_id)
        slot = Slot(worker, session, session.session_id, residency)
        self.slots.append(slot)
        self.check_resident(slot)
        return slot

    def check_resident(self, slot: Slot) -> None:
        """Just opened or resumed: memory holds what the residency promises."""
        state = slot.session.state
        assert state is not None
        stored = self.stored(slot.session_id)
        resident = {node.node_id for node in state.graph}
        if stored is None:
            assert resident == set()
            return
        if slot.residency is Residency.ACTIVE_PATH_ONLY:
            assert resident == set(_path_ids(stored)), "resident set is not the active path"
        else:
            assert resident == {n.node_id for n in stored.nodes}, "resident set is not the graph"
        assert state.graph.leaf_id == stored.leaf_id
        assert state.head_revision == stored.head_revision

    def acknowledge(self, session_id: str, nodes: tuple[SessionNode, ...]) -> None:
        self.acked.setdefault(session_id, {}).update((n.node_id, n) for n in nodes)

    @staticmethod
    def unsaved(slot: Slot) -> tuple[SessionNode, ...]:
        state = slot.session.state
        return () if state is None else state.graph.since(state.saved_nodes)

    # ---- workers ---------------------------------------------------------------------

    @initialize(
        leases=st.booleans(),
        second_leased=st.booleans(),
        warm=st.booleans(),
        bodies=st.lists(json_values, min_size=1, max_size=4),
    )
    def workers(self, leases: bool, second_leased: bool, warm: bool, bodies: list[Any]) -> None:
        """Two workers, and a first session worker ``a`` committed."""
        self.leases = leases
        # Ids in order, so that an example replays the same choices.
        self.drivers["a"] = Driver(
            self.faulty,  # type: ignore[arg-type]
            lease_owner="worker-a" if leases else None,
            warm_cache=64 * 1024 * 1024 if warm else 0,
            ids=self.fresh,
        )
        self.drivers["b"] = Driver(
            self.stores["b"],
            lease_owner="worker-b" if leases and second_leased else None,
            ids=self.fresh,
        )
        session = self.drivers["a"].open(POLICY, self.session_ids[0], residency=self.residency)
        slot = self._add("a", session, self.residency)
        for body in bodies:
            session.append(body)
        nodes = self.unsaved(slot)
        session.save()
        self.acknowledge(slot.session_id, nodes)

    def teardown(self) -> None:
        for slot in self.slots:
            self.call(lambda s=slot: s.session.close(discard=True))
        for driver in self.drivers.values():
            driver.close()

    # ---- sessions --------------------------------------------------------------------

    @precondition(lambda self: len(self.active()) < 4)
    @rule(data=st.data(), worker=st.sampled_from("ab"))
    def open(self, data: st.DataObject, worker: str) -> None:
        session_id = data.draw(st.sampled_from([*sorted(self.known), ""]), "session")
        if not session_id:  # a new one
            session_id = self.fresh()
            self.known.add(session_id)
        opened = self.call(
            lambda: self.drivers[worker].open(POLICY, session_id, residency=self.residency)
        )
        if isinstance(opened, Session):
            self._add(worker, opened, self.residency)
        elif session_id in self.deleted:
            assert isinstance(opened, SessionDeleted | LeaseHeld), opened

    @precondition(lambda self: self.active())
    @rule(data=st.data(), bodies=st.lists(json_values, min_size=1, max_size=3))
    def append(self, data: st.DataObject, bodies: list[Any]) -> None:
        slot = data.draw(st.sampled_from(self.active()), "slot")
        for body in bodies:
            self.call(lambda b=body: slot.session.append(b))

    @precondition(lambda self: self.active())
    @rule(
        data=st.data(),
        faults=st.sampled_from([(), (), ("lost-answer",), ("lost-answer", "lost-answer")])
        | st.lists(st.sampled_from(FAULTS), max_size=2).map(tuple),
        park=st.booleans(),
    )
    def commit(self, data: st.DataObject, faults: tuple[str, ...], park: bool) -> None:
        """Save or park, through faults when the worker is ``a``."""
        slot = data.draw(st.sampled_from(self.active()), "slot")
        nodes = self.unsaved(slot)
        state = slot.session.state
        assert state is not None
        # A resent commit in doubt is answered when it was applied (nothing
        # is written again), whoever holds the lease now.
        sends = (state.dirty or state.head_revision is None) and state.in_doubt is None
        if slot.worker == "a":
            self.faulty.faults[:] = faults
            self.faulty.met.clear()
        try:
            result = self.call(slot.session.park if park else slot.session.save)
        finally:
            met = list(self.faulty.met)
            self.faulty.faults.clear()
        preempted = any(fault != "lost-answer" for fault, _ in met)
        if slot.lease_lost and sends and not preempted:
            fenced = LeaseLost if slot.session_id not in self.deleted else SessionDeleted
            assert isinstance(result, LeaseLost | fenced), (
                f"a worker whose lease was taken committed: {result}"
            )
            return
        if slot.worker == "a" and met == [("lost-answer", True)]:
            # The first attempt was applied and its answer lost: the resend
            # under the same commit id must be answered, not refused.
            assert not isinstance(result, LashMachineError), result
        if isinstance(result, LashMachineError):
            if isinstance(result, CommitOutcomeUnknown):
                assert slot.session.state is not None and slot.session.state.in_doubt is not None
            return
        self.acknowledge(slot.session_id, nodes)
        if park:
            assert isinstance(result, ParkedSession)
            self.handles.append(wire.dumps(result))

    @precondition(lambda self: self.handles and len(self.active()) < 4)
    @rule(
        data=st.data(),
        worker=st.sampled_from("ab"),
        residency=st.none() | st.sampled_from(Residency),
    )
    def resume_handle(self, data: st.DataObject, worker: str, residency: Residency | None) -> None:
        """A handle from the wire, to either worker."""
        text = data.draw(st.sampled_from(self.handles), "handle")
        parked = wire.loads(text, ParkedSession)
        assert wire.dumps(parked) == text
        resumed = self.call(lambda: self.drivers[worker].resume(parked, residency=residency))
        if isinstance(resumed, Session):
            self._add(worker, resumed, residency or parked.residency)
        elif parked.session_id in self.deleted:
            assert isinstance(resumed, SessionNotFound | LeaseHeld), resumed

    @precondition(lambda self: self.parked() and len(self.active()) < 4)
    @rule(data=st.data(), residency=st.none() | st.sampled_from(Residency))
    def resume_slot(self, data: st.DataObject, residency: Residency | None) -> None:
        slot = data.draw(st.sampled_from(self.parked()), "slot")
        assert slot.session.parked is not None
        before = slot.session.parked.residency
        resumed = self.call(lambda: slot.session.resume(residency=residency))
        if not isinstance(resumed, LashMachineError):
            self._claimed(slot.worker, slot.session_id)
            slot.residency = residency or before
            slot.lease_lost = False
            self.check_resident(slot)

    @precondition(lambda self: self.active() and len(self.active()) < 4)
    @rule(data=st.data(), worker=st.sampled_from("ab"))
    def restore(self, data: st.DataObject, worker: str) -> None:
        """A session state from the wire, rebuilt by either worker (a second
        writer at the same head)."""
        slot = data.draw(st.sampled_from(self.active()), "slot")
        state = slot.session.state
        assert state is not None
        copy = wire.loads(wire.dumps(state), SessionState)
        assert copy == state, "the session state did not survive the wire"
        restored = self.call(
            lambda: self.drivers[worker].restore(copy, POLICY, residency=slot.residency)
        )
        if isinstance(restored, Session):
            self._claimed(worker, slot.session_id)
            self.slots.append(Slot(worker, restored, slot.session_id, slot.residency))

    @precondition(lambda self: self.slots)
    @rule(data=st.data(), discard=st.booleans())
    def close(self, data: st.DataObject, discard: bool) -> None:
        slot = data.draw(st.sampled_from(self.slots), "slot")
        self.call(lambda: slot.session.close(discard=discard))
        if slot.session.phase is Phase.CLOSED:
            self.slots.remove(slot)

    # ---- edits -----------------------------------------------------------------------

    def _targets(self, slot: Slot) -> list[str]:
        """Nodes to aim at: resident ones, acknowledged ones (resident or
        not), tombstoned ones, and one that never existed."""
        state = slot.session.state
        assert state is not None
        ids = [node.node_id for node in state.graph]
        ids += sorted(self.acked.get(slot.session_id, {}))
        ids += sorted(self.hidden.get(slot.session_id, set()))
        return [*dict.fromkeys(ids), "no-such-node"]

    @precondition(lambda self: self.active())
    @rule(data=st.data(), bodies=st.lists(json_values, min_size=1, max_size=3))
    def grow_a_branch(self, data: st.DataObject, bodies: list[Any]) -> None:
        """Branch to a resident node, append, save: what leaves orphans."""
        slot = data.draw(st.sampled_from(self.active()), "slot")
        state = slot.session.state
        assert state is not None
        ids = [node.node_id for node in state.graph]
        if ids:
            self.call(lambda: slot.session.branch(data.draw(st.sampled_from(ids), "at")))
        for body in bodies:
            self.call(lambda b=body: slot.session.append(b))
        nodes = self.unsaved(slot)
        fenced = slot.lease_lost
        if not isinstance(self.call(slot.session.save), LashMachineError):
            assert not fenced or state.in_doubt is not None, "a fenced-out worker committed"
            self.acknowledge(slot.session_id, nodes)

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def branch(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self.active()), "slot")
        state = slot.session.state
        assert state is not None
        target = data.draw(st.sampled_from(self._targets(slot)), "target")
        result = self.call(lambda: slot.session.branch(target))
        resident = target in state.graph
        stored = None if slot.session_id in self.deleted else self.stored(slot.session_id)
        live = stored is not None and target in {n.node_id for n in stored.nodes}
        if resident and state.in_doubt is None:
            assert result is None, result
        elif not resident and (not live or slot.residency is Residency.KEEP_ALL):
            # Off the resident graph and not to be loaded: refused, typed
            # (a node of a deleted session is not loaded either).
            refused = InvalidEvent if slot.session_id not in self.deleted else SessionDeleted
            assert isinstance(result, InvalidEvent | refused), result
        if result is None:
            after = slot.session.state
            assert after is not None and after.graph.leaf_id == target

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def load_node(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self.active()), "slot")
        state = slot.session.state
        assert state is not None
        target = data.draw(st.sampled_from(self._targets(slot)), "target")
        found = self.call(lambda: slot.session.load_node(target))
        acked = self.acked.get(slot.session_id, {}).get(target)
        gone = target in self.hidden.get(slot.session_id, set())
        if acked is not None and not gone and slot.session_id not in self.deleted:
            assert isinstance(found, SessionNode), f"acknowledged {target!r} unreadable: {found}"
            assert _same(found, acked)
        if found is None:
            assert target not in state.graph

    @precondition(lambda self: self.active())
    @rule(data=st.data(), everything=st.booleans())
    def tombstone(self, data: st.DataObject, everything: bool) -> None:
        slot = data.draw(st.sampled_from(self.active()), "slot")
        self.may_hide = True
        if everything:
            self.call(slot.session.tombstone_orphans)
        else:
            target = data.draw(st.sampled_from(self._targets(slot)), "target")
            self.call(lambda: slot.session.tombstone([target]))
        if data.draw(st.booleans(), "then vacuum"):
            self.call(self.drivers[slot.worker].vacuum)  # the driver's own

    @precondition(lambda self: self.active())
    @rule(data=st.data(), pin=st.booleans())
    def pin(self, data: st.DataObject, pin: bool) -> None:
        slot = data.draw(st.sampled_from(self.active()), "slot")
        target = data.draw(st.sampled_from(self._targets(slot)), "target")
        self.call(lambda: (slot.session.pin if pin else slot.session.unpin)(target))

    @precondition(lambda self: self.active())
    @rule(data=st.data(), at_leaf=st.booleans())
    def fork(self, data: st.DataObject, at_leaf: bool) -> None:
        slot = data.draw(st.sampled_from(self.active()), "slot")
        state = slot.session.state
        assert state is not None
        # The copy is made up to the leaf in memory (it must be committed).
        target = data.draw(st.sampled_from(self._targets(slot)), "target")
        if at_leaf:
            target = state.graph.leaf_id
        new_id = self.fresh()
        before = self.stored(slot.session_id) if slot.session_id not in self.deleted else None
        forked = self.call(lambda: slot.session.fork(None if at_leaf else target, new_id))
        if not isinstance(forked, ParkedSession):
            return
        assert before is not None
        copy = self.stored(new_id)
        assert copy is not None
        # The copy is the stored path up to the node, node for node.
        wanted = _path_ids(before, target)
        assert [n.node_id for n in copy.nodes] == wanted
        by_id = {n.node_id: n for n in before.nodes}
        assert all(_same(n, by_id[n.node_id]) for n in copy.nodes)
        self.known.add(new_id)
        self.acknowledge(new_id, copy.nodes)
        self.handles.append(wire.dumps(forked))

    @precondition(lambda self: self.active())
    @rule(data=st.data(), summary=json_values)
    def compact(self, data: st.DataObject, summary: Any) -> None:
        slot = data.draw(st.sampled_from(self.active()), "slot")
        state = slot.session.state
        assert state is not None
        path = [node.node_id for node in state.graph.active_path()]
        through = data.draw(st.sampled_from([*path, "no-such-node"]), "through")
        self.call(lambda: slot.session.compact(through, summary))

    @precondition(lambda self: self.active())
    @rule(data=st.data())
    def uncompact(self, data: st.DataObject) -> None:
        slot = data.draw(st.sampled_from(self.active()), "slot")
        state = slot.session.state
        assert state is not None
        summaries = [n.node_id for n in state.graph if n.kind is NodeKind.SUMMARY]
        acked = [
            n
            for n, node in self.acked.get(slot.session_id, {}).items()
            if node.kind is NodeKind.SUMMARY
        ]
        target = data.draw(st.sampled_from([*summaries, *acked, *self._targets(slot)]), "summary")
        self.call(lambda: slot.session.uncompact(target))

    # ---- the operator ----------------------------------------------------------------

    @rule(
        data=st.data(),
        action=st.sampled_from([*_TIDY, *_TIDY, "heal", *_ENDS]),
    )
    def operate(self, data: st.DataObject, action: str) -> None:
        """One operator action between the workers' steps (prune and vacuum
        more often than the ones that end sessions); a vacuum may follow,
        as it would in a maintenance run."""
        SEEN[f"operate:{action}"] += 1
        getattr(self, action)(data)
        if action != "vacuum" and data.draw(st.booleans(), "then vacuum"):
            self.vacuum(data)

    def _a_session(self, data: st.DataObject) -> str:
        return data.draw(st.sampled_from(sorted(self.known)), "session")

    def prune(self, data: st.DataObject) -> None:
        """``lash-machine prune``: refused while a worker holds the lease."""
        session_id = self._a_session(data)
        expected = Exit.OK
        if session_id in self.deleted or self.stored(session_id) is None:
            expected = Exit.NOT_FOUND
        elif self.leases and self._leased(session_id):
            expected = Exit.CONFLICT
        self.may_hide = True
        code = self.cli("prune", session_id)
        SEEN[f"prune:{Exit(code).name}"] += 1
        assert code == expected, f"prune of {session_id!r} exited {code}, not {expected}"

    def _leased(self, session_id: str) -> bool:
        store: Any = self.operator
        return store.current_lease(session_id) is not None

    def prune_through_the_store(self, data: st.DataObject) -> None:
        """An operator's own tool: tombstone the stored orphans, unfenced."""
        session_id = self._a_session(data)
        stored = self.call(lambda: self.stored(session_id))
        if not isinstance(stored, StoredSession):
            return
        self.may_hide = True
        orphans = SessionGraph.from_nodes(stored.nodes, stored.leaf_id).orphan_ids()
        if orphans and data.draw(st.booleans(), "just one"):
            # One node, whatever hangs under it: the store must refuse to
            # hide a parent of a live node.
            orphans = (data.draw(st.sampled_from(orphans), "orphan"),)
        self.call(lambda: self.operator.tombstone_nodes(session_id, orphans))

    def vacuum(self, data: st.DataObject) -> None:
        if data.draw(st.booleans(), "through the command line"):
            assert self.cli("vacuum") == Exit.OK
        else:
            removed = self.operator.vacuum().nodes_removed
            SEEN["nodes-vacuumed"] += removed
            SEEN[f"vacuum:{'removed' if removed else 'nothing'}"] += 1

    def heal(self, data: st.DataObject) -> None:
        """``lash-machine heal --apply``: a stored graph never needs it."""
        session_id = self._a_session(data)
        code = self.cli("heal", session_id, "--apply")
        if session_id in self.deleted or self.stored(session_id) is None:
            assert code == Exit.NOT_FOUND, code
        else:
            assert code == Exit.OK, code

    def delete(self, data: st.DataObject) -> None:
        session_id = self._a_session(data)
        existed = session_id not in self.deleted and self.stored(session_id) is not None
        assert self.operator.delete_session(session_id) is existed
        if existed:  # nothing stored, nothing to mark
            self.deleted.add(session_id)

    def expire(self, data: st.DataObject) -> None:
        """Expire what is idle since some session's last commit."""
        dry_run = data.draw(st.sampled_from([True, True, False]), "dry run")
        mine = [i for i in self.operator.list_sessions() if i.session_id in self.known]
        if not mine:
            return
        info = data.draw(st.sampled_from(mine), "session")
        now = info.updated_at + 1e-3
        report = self.operator.expire(0.0, now=now, dry_run=dry_run)
        expired = set(report.expired) & self.known
        for other in mine:
            idle = other.updated_at < now
            leased = self.leases and self._leased(other.session_id)
            if other.session_id in expired:
                assert idle and not (leased and not dry_run)
            elif idle:
                assert leased, f"idle {other.session_id!r} was not expired"
        if not dry_run:
            self.deleted |= expired

    @precondition(lambda self: self.leases and self.active())
    @rule(data=st.data(), keep=st.booleans())
    def take_lease_over(self, data: st.DataObject, keep: bool) -> None:
        """Another worker claims the lease as if it had expired (a stalled
        worker): the slot's next commit must be refused."""
        slot = data.draw(st.sampled_from(self.active()), "slot")
        lease = slot.session.lease
        if lease is None:
            return
        store: Any = self.operator
        # Past the lease held now: a later claim of the same owner (a
        # restore, a resume) or a renewal may outlast the slot's own.
        held = store.current_lease(slot.session_id)
        until = lease.expires_at if held is None else max(lease.expires_at, held.expires_at)
        taken = store.claim_lease(slot.session_id, "thief", 60.0, now=until + 1)
        if not keep:
            store.release_lease(taken)
        for other in self.slots:
            if other.session_id == slot.session_id and other.session.lease is not None:
                other.lease_lost = True

    # ---- a commit racing the operator, on PostgreSQL ---------------------------------

    def _racing(self) -> list[Slot]:
        return [
            s
            for s in self.active()
            if s.session.state is not None
            and s.session.state.head_revision is not None
            and s.session.state.in_doubt is None
            and s.session_id not in self.deleted
            and not s.lease_lost
        ]

    @precondition(lambda self: self.place.kind == "postgres" and self._racing())
    @rule(
        data=st.data(),
        action=st.sampled_from(["prune", "tombstone", "delete", "vacuum", "cli-prune", "expire"]),
        commit_first=st.booleans(),
        body=json_values,
    )
    def race(self, data: st.DataObject, action: str, commit_first: bool, body: Any) -> None:
        """An operator transaction in a connection of its own while a commit
        is in flight: a held session row makes both wait, in a chosen order."""
        slot = data.draw(st.sampled_from(self._racing()), "slot")
        sid = slot.session_id
        stored = self.stored(sid)
        if stored is None or isinstance(self.call(lambda: slot.session.append(body)), Exception):
            return
        nodes = self.unsaved(slot)
        sending = slot.session.state
        assert sending is not None
        orphans = SessionGraph.from_nodes(stored.nodes, stored.leaf_id).orphan_ids()
        target = data.draw(st.sampled_from([*orphans, "no-such-node"]), "target")
        operator: Callable[[], object] = {
            "prune": lambda: self.operator.tombstone_nodes(sid, orphans),
            "tombstone": lambda: self.operator.tombstone_nodes(sid, [target]),
            "delete": lambda: self.operator.delete_session(sid),
            "vacuum": self.operator.vacuum,
            "cli-prune": lambda: self.cli("prune", sid),
            "expire": lambda: self.operator.expire(0.0),
        }[action]
        self.may_hide = True
        stage = Stage(self.place.dsn)
        try:
            stage.hold(sid)
            first, second = (slot.session.save, operator)
            if not commit_first:
                first, second = second, first
            futures = [stage.start(first), stage.start(second)]
            stage.release()
            results = [outcome(future) for future in futures]
        finally:
            stage.close()
        committed, done = results if commit_first else results[::-1]
        order = "commit-first" if commit_first else "operator-first"
        SEEN[f"race-{action}-{order}:{type(committed).__name__}/{type(done).__name__}"] += 1
        if isinstance(committed, int):
            self.acknowledge(sid, nodes)
            if commit_first:
                # The operator acted on what the commit left: it may hide
                # what the commit took off the active path.
                self.raced[sid] = _as_committed(stored, sending)
        if action == "delete" and done is True:
            self.deleted.add(sid)
        if action == "expire" and not isinstance(done, Exception):
            self.deleted |= set(done.expired) & self.known  # type: ignore[attr-defined]
        if action == "delete" and not commit_first:
            # A commit that waited behind the delete finds the session gone.
            assert isinstance(committed, SessionDeleted | LeaseLost), committed

    # ---- invariants ------------------------------------------------------------------

    @invariant()
    def the_store_keeps_its_promises(self) -> None:
        now: dict[str, StoredSession | None] = {}
        for session_id in sorted(self.known):
            if session_id in self.deleted:
                with pytest.raises(SessionDeleted):
                    self.stored(session_id)
                continue
            stored = now[session_id] = self.stored(session_id)
            if stored is None:
                continue
            graph = SessionGraph.from_nodes(stored.nodes, stored.leaf_id)
            assert graph_problems(graph) == [], f"{session_id!r}: {graph_problems(graph)}"
            assert heal_graph(graph)[1].is_clean, f"{session_id!r} needs repair"
            if stored.nodes:
                assert stored.leaf_id is not None
            self._compactions_keep_their_history(stored)
            self._nothing_vanished_unless_hidden(session_id, stored)
            self._acknowledged_are_readable(session_id, stored)
        problems = table_problems(self.place, self.prefix)
        assert problems == [], problems
        self.last = now
        self.may_hide = False
        self.raced.clear()
        self._memory_and_store_agree()

    def _compactions_keep_their_history(self, stored: StoredSession) -> None:
        if stored.origin is not None:
            # A copy holds the path only (see the xfail in
            # test_stack_regressions.py).
            return
        by_id = {node.node_id: node for node in stored.nodes}
        for node_id in _path_ids(stored):
            summary = read_summary(by_id[node_id])
            if summary is not None:
                assert summary.through in by_id, f"{summary} lost what it replaced"
                assert summary.through in stored.pinned, f"{summary} left it unpinned"

    def _nothing_vanished_unless_hidden(self, session_id: str, stored: StoredSession) -> None:
        before = self.last.get(session_id)
        if before is None:
            return
        vanished = {n.node_id for n in before.nodes} - {n.node_id for n in stored.nodes}
        if not vanished:
            return
        assert self.may_hide, f"{session_id!r}: {sorted(vanished)} vanished"
        allowed = _hideable(before)
        if session_id in self.raced:
            allowed |= _hideable(self.raced[session_id])
        assert vanished <= allowed, f"{session_id!r}: hid {sorted(vanished - allowed)}"
        self.hidden.setdefault(session_id, set()).update(vanished)
        SEEN["nodes-hidden"] += len(vanished)

    def _acknowledged_are_readable(self, session_id: str, stored: StoredSession) -> None:
        by_id = {node.node_id: node for node in stored.nodes}
        hidden = self.hidden.get(session_id, set())
        for node_id, node in self.acked.get(session_id, {}).items():
            if node_id in hidden:
                continue
            assert node_id in by_id, f"{session_id!r}: acknowledged {node_id!r} is gone"
            assert _same(by_id[node_id], node), f"{session_id!r}: {node_id!r} changed"
            loaded = self.operator.load_node(session_id, node_id)
            assert loaded is not None and _same(loaded, node)

    def _memory_and_store_agree(self) -> None:
        for slot in self.active():
            state = slot.session.state
            assert state is not None
            assert graph_problems(state.graph) == []
            if slot.session_id in self.deleted:
                continue
            stored = self.last.get(slot.session_id)
            if stored is None:
                continue
            by_id = {node.node_id: node for node in stored.nodes}
            for node in state.graph:
                if node.node_id in by_id:
                    assert _same(node, by_id[node.node_id]), f"{node.node_id!r} differs"
            if not state.dirty and state.head_revision == stored.head_revision:
                path = state.graph.active_path()
                assert [n.node_id for n in path] == _path_ids(stored), "paths differ"
                assert [n.parent_id for n in path] == [
                    by_id[i].parent_id for i in _path_ids(stored)
                ]
                if slot.residency is Residency.ACTIVE_PATH_ONLY and not state.branched:
                    assert len(state.graph) == len(path), "off-path nodes stayed resident"


@pytest.fixture(params=["sqlite", "postgres"])
def place(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Place]:
    if request.param == "sqlite":
        with sqlite_place(tmp_path) as found:
            yield found
    else:
        with postgres_place(request.getfixturevalue("postgres_dsn")) as found:
            yield found


@pytest.mark.parametrize("residency", list(Residency))
def test_the_whole_stack(place: Place, residency: Residency) -> None:
    stores = {name: place.open() for name in ("a", "b", "operator")}
    try:

        class Run(Stack):
            pass

        Run.place = place
        Run.stores = stores
        Run.residency = residency
        run_state_machine_as_test(
            Run,
            settings=settings(
                max_examples=EXAMPLES,
                stateful_step_count=STEPS,
                # The default run explores the same examples every time, so
                # a red run can be replayed; scripts/stress.sh searches anew.
                derandomize=not _FULL,
                deadline=None,
                report_multiple_bugs=False,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
    finally:
        for store in stores.values():
            store.close()
    report(f"stack-{place.kind}-{residency.value}", **dict(sorted(SEEN.items())))
    SEEN.clear()
