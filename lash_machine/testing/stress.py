"""Stress a store across processes: a commit storm on shared sessions, the
same storm through leasing drivers, and crash injection (a child killed
with ``SIGKILL`` in the middle of its commits).

Each helper takes a picklable ``opener`` (for example
``functools.partial(SQLiteStore, path)``) so that every child process opens
a store of its own, and each ``check_*`` function raises
``AssertionError`` naming the first broken promise:

* storm: exactly one commit per revision, every acknowledged append
  present (in revision order on the active path), every loser told with a
  conflict whose stored head is past the one it expected, and nothing of a
  loser stored;
* lease storm: the same through drivers that claim a lease per attempt;
  a worker finding the session busy is told with ``LeaseHeld`` and
  leaseholders never conflict;
* crash: after each kill the store opens, the session loads, healing
  finds nothing to repair, every commit the child acknowledged (reported
  after ``commit`` returned) is present, and every commit is all or
  nothing. The commit in flight at a kill may land or not; on a server it
  may land shortly after the kill (the server finishes a statement its
  dead client sent), and the next child then retries on the new head.
"""

from __future__ import annotations

import multiprocessing
import os
import queue
import random
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import attrs

from ..errors import HeadRevisionConflict, LashMachineError, LeaseHeld
from ..graph import SessionGraph, heal_graph
from ..model import ModelSpec, SessionPolicy
from ..persisted import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    Reparent,
    SessionCommit,
    StoredSession,
)
from ..stores.base import SessionStore
from ..stores.leases import LeaseStore
from .conformance import make_commit, make_node

__all__ = [
    "CrashPlan",
    "CrashReport",
    "Killed",
    "StormOutcome",
    "StormPlan",
    "check_crash",
    "check_lease_storm",
    "check_storm",
    "crash_child",
    "crash_commit",
    "kill_during_commits",
    "lease_storm_worker",
    "prepare_storm",
    "run_workers",
    "storm_worker",
]

Opener: TypeAlias = Callable[[], SessionStore]

#: One storm attempt: (worker, attempt, session, head it read, node id,
#: result). The result is the revision won, ``[expected, actual]`` of a
#: conflict, ``"busy"`` (the lease storm's ``LeaseHeld``), or the ``repr`` of
#: any other error. Plain data, so it crosses a process boundary.
StormOutcome: TypeAlias = tuple[int, int, str, int, str, "int | list[int | None] | str"]

_POLICY = SessionPolicy(ModelSpec("stress-model"), provider_id="stress")

#: A leaf id no store holds: an active-path read from it costs nothing and
#: still answers the stored head and leaf.
_NO_NODE = "\x01no such node"


def _child_context() -> Any:
    # spawn: a fresh interpreter, whatever threads or connections the
    # parent (a test runner, a pool) holds.
    return multiprocessing.get_context("spawn")


# ---- the commit storm -----------------------------------------------------------


def prepare_storm(store: SessionStore, sessions: Sequence[str]) -> None:
    """Create each storm session with one root node."""
    for session_id in sessions:
        store.commit(make_commit(session_id, None, [make_node("root")]))


@attrs.frozen
class StormPlan:
    """What every storm worker does: open a store with ``opener`` and make
    ``attempts`` attempts on randomly chosen ``sessions``."""

    opener: Opener
    attempts: int
    sessions: tuple[str, ...]


def storm_worker(
    plan: StormPlan, worker: int, start: Any, report: Callable[[list[StormOutcome]], object]
) -> None:
    """One storm process: ``attempts`` times, pick a shared session, read
    its head and leaf, and commit one node under that leaf against that
    head. ``start`` is a barrier all workers pass together."""
    store = plan.opener()
    rng = random.Random(worker)
    outcomes: list[StormOutcome] = []
    sessions = plan.sessions
    try:
        start.wait(120)
        for attempt in range(plan.attempts):
            session_id = sessions[rng.randrange(len(sessions))]
            read = store.load_graph(session_id, ActivePath(_NO_NODE))
            assert read is not None
            node = make_node(f"w{worker}-a{attempt}", read.leaf_id)
            commit = make_commit(
                session_id,
                read.head_revision,
                [node],
                host_checkpoint={"by": node.node_id},
            )
            result: int | list[int | None] | str
            try:
                result = store.commit(commit)
            except HeadRevisionConflict as exc:
                result = [exc.expected, exc.actual]
            except LashMachineError as exc:
                result = repr(exc)
            outcomes.append((worker, attempt, session_id, read.head_revision, node.node_id, result))
    finally:
        report(outcomes)
        store.close()


def lease_storm_worker(
    plan: StormPlan, worker: int, start: Any, report: Callable[[list[StormOutcome]], object]
) -> None:
    """One lease-storm process: ``attempts`` times, open a shared session
    through a blocking driver holding a lease (``LeaseHeld``: the session
    is busy), append one node, save, and park (which releases the lease)."""
    from ..drivers.blocking import Driver

    store = plan.opener()
    rng = random.Random(worker)
    outcomes: list[StormOutcome] = []
    sessions = plan.sessions
    driver = Driver(store, lease_owner=f"worker-{worker}", lease_ttl=30.0)
    try:
        start.wait(120)
        for attempt in range(plan.attempts):
            session_id = sessions[rng.randrange(len(sessions))]
            node_id = f"w{worker}-a{attempt}"
            result: int | list[int | None] | str
            head = -1
            try:
                session = driver.open(_POLICY, session_id)
            except LeaseHeld:
                outcomes.append((worker, attempt, session_id, head, node_id, "busy"))
                continue
            try:
                assert session.view is not None
                head = session.view.head_revision or 0
                parent = session.view.leaf_id
                session.append_nodes([make_node(node_id, parent)])
                result = session.save()
            except HeadRevisionConflict as exc:
                result = [exc.expected, exc.actual]
            except LashMachineError as exc:
                result = repr(exc)
            finally:
                # Park releases the lease; a failed save's edits are dropped.
                if session.state is not None and session.state.dirty:
                    session.close(discard=True)
                else:
                    session.park()
            outcomes.append((worker, attempt, session_id, head, node_id, result))
    finally:
        report(outcomes)
        driver.close()
        store.close()


def run_workers(
    target: Callable[..., None], plan: StormPlan, processes: int, timeout: float = 600.0
) -> list[StormOutcome]:
    """Run ``target`` (:func:`storm_worker` or :func:`lease_storm_worker`)
    in ``processes`` spawned processes released together; return every
    outcome."""
    ctx = _child_context()
    start = ctx.Barrier(processes)
    results = ctx.Queue()
    children = [
        ctx.Process(target=target, args=(plan, worker, start, results.put))
        for worker in range(processes)
    ]
    for child in children:
        child.start()
    outcomes: list[StormOutcome] = []
    deadline = time.monotonic() + timeout
    try:
        for _ in children:
            outcomes.extend(results.get(timeout=max(1.0, deadline - time.monotonic())))
    except queue.Empty:
        raise AssertionError(f"the storm stalled; {len(outcomes)} outcomes came back") from None
    finally:
        for child in children:
            child.join(timeout=60)
            if child.is_alive():
                child.kill()
    codes = [child.exitcode for child in children]
    assert codes == [0] * processes, f"storm workers exited with {codes}"
    return outcomes


def _won(outcome: StormOutcome) -> int:
    result = outcome[5]
    assert isinstance(result, int), outcome
    return result


def _by_revision(winners: Sequence[StormOutcome]) -> list[StormOutcome]:
    return sorted(winners, key=_won)


def _path_ids(store: SessionStore, session_id: str) -> list[str]:
    loaded = store.load_graph(session_id, ActivePath())
    assert loaded is not None, f"session {session_id!r} is gone"
    return [node.node_id for node in loaded.nodes]


def _check_winners(
    store: SessionStore, session_id: str, winners: list[StormOutcome], first_revision: int
) -> StoredSession:
    loaded = store.load_graph(session_id, FullGraph())
    assert loaded is not None, f"session {session_id!r} is gone"
    by_revision = _by_revision(winners)
    revisions = [_won(o) for o in by_revision]
    expected = list(range(first_revision, loaded.head_revision + 1))
    assert revisions == expected, f"{session_id}: revisions won {revisions} != {expected}"
    for outcome in by_revision:
        # The head it read was the one before the revision it won.
        assert outcome[3] + 1 == _won(outcome), f"{session_id}: won off a stale read {outcome}"
    acknowledged = [o[4] for o in by_revision]
    stored = {node.node_id for node in loaded.nodes}
    missing = [n for n in acknowledged if n not in stored]
    assert not missing, f"{session_id}: acknowledged appends missing: {missing[:10]}"
    return loaded


def check_storm(
    store: SessionStore, outcomes: Sequence[StormOutcome], sessions: Sequence[str], attempts: int
) -> dict[str, int]:
    """Assert the storm went right; return counts (``won``, ``lost``)."""
    errors = [o for o in outcomes if isinstance(o[5], str)]
    assert not errors, f"attempts failed with errors: {errors[:5]}"
    workers = {o[0] for o in outcomes}
    assert len(outcomes) == len(workers) * attempts, "an attempt came back without an outcome"
    won = lost = 0
    for session_id in sessions:
        mine = [o for o in outcomes if o[2] == session_id]
        winners = [o for o in mine if isinstance(o[5], int)]
        loaded = _check_winners(store, session_id, winners, 2)
        by_revision = _by_revision(winners)
        chain = ["root", *(o[4] for o in by_revision)]
        assert _path_ids(store, session_id) == chain, f"{session_id}: the active path is off"
        assert len(loaded.nodes) == len(chain), f"{session_id}: a loser's node is stored"
        if by_revision:
            assert loaded.host_checkpoint == {"by": by_revision[-1][4]}
        for outcome in mine:
            result = outcome[5]
            if isinstance(result, list):
                expected, actual = result
                # Told, and told the truth: someone else had moved the head on.
                assert expected == outcome[3], outcome
                assert actual is not None and actual > outcome[3], outcome
        won += len(winners)
        lost += len(mine) - len(winners)
    return {"won": won, "lost": lost}


def check_lease_storm(
    store: SessionStore, outcomes: Sequence[StormOutcome], sessions: Sequence[str], attempts: int
) -> dict[str, int]:
    """Assert the lease storm went right; return counts (``won``,
    ``busy``). Leaseholders are the only writers, so none may conflict."""
    bad = [o for o in outcomes if not isinstance(o[5], int) and o[5] != "busy"]
    assert not bad, f"leaseholders failed or conflicted: {bad[:5]}"
    workers = {o[0] for o in outcomes}
    assert len(outcomes) == len(workers) * attempts, "an attempt came back without an outcome"
    won = 0
    for session_id in sessions:
        winners = [o for o in outcomes if o[2] == session_id and isinstance(o[5], int)]
        if not winners:
            continue
        _check_winners(store, session_id, winners, 1)
        by_revision = _by_revision(winners)
        assert _path_ids(store, session_id) == [o[4] for o in by_revision]
        won += len(winners)
    return {"won": won, "busy": len(outcomes) - won}


# ---- crash injection ------------------------------------------------------------


def _crash_commit_nodes(commit_id: str) -> list[str]:
    return [f"{commit_id}/{i}" for i in range(3)]


@attrs.frozen
class CrashPlan:
    """What a crash child does: open a store with ``opener`` and commit to
    ``session_id``; with ``lease_owner``, first claim the session's lease
    for ``lease_ttl`` seconds and fence every commit with its token."""

    opener: Opener
    session_id: str
    lease_owner: str | None = None
    lease_ttl: float = 30.0


def crash_commit(
    session_id: str, head: int | None, leaf: str | None, commit_id: str, token: int | None
) -> SessionCommit:
    """The commit :func:`crash_child` sends as ``commit_id`` on top of
    ``head`` and ``leaf``: three nodes, a repair of the ``marker`` node (the
    session's first commit appends it), a checkpoint and an adopted
    attachment, so a half-applied commit would show."""
    ids = _crash_commit_nodes(commit_id)
    nodes = [make_node(ids[0], leaf), make_node(ids[1], ids[0]), make_node(ids[2], ids[1])]
    return make_commit(
        session_id,
        head,
        nodes if head is not None else [make_node("marker"), *nodes],
        reparented=[Reparent("marker", ids[0])],
        adopt=[commit_id],
        host_checkpoint={"last": commit_id, "head": (head or 0) + 1},
        fencing_token=token,
    )


def crash_child(plan: CrashPlan, incarnation: int, ack_path: str) -> None:
    """Commit to the session in a loop until killed, appending a line to
    ``ack_path`` after each commit returned (the acknowledgement the parent
    checks). Each commit changes everything a commit can (three nodes, a
    repair of the ``marker`` node, a checkpoint, an adopted attachment), so
    a half-applied one would show. With a lease, the first line written is
    ``lease TOKEN``."""
    store = plan.opener()
    session_id = plan.session_id
    ack = os.open(ack_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    token = None
    if plan.lease_owner is not None:
        if not isinstance(store, LeaseStore):
            raise TypeError(f"{type(store).__name__} grants no leases")
        token = store.claim_lease(session_id, plan.lease_owner, plan.lease_ttl).token
        os.write(ack, f"lease {token}\n".encode())
    head, leaf = _head_and_leaf(store, session_id)
    number = 0
    while True:
        commit_id = f"i{incarnation}c{number}"
        store.record_intent(AttachmentIntent(session_id, commit_id, f"mem://{commit_id}", 1.0))
        try:
            head = store.commit(crash_commit(session_id, head, leaf, commit_id, token))
        except HeadRevisionConflict:
            # The in-flight commit of a child killed before this one landed
            # after this one read the head (a server finishes a statement
            # its dead client sent): read again and retry the same commit.
            head, leaf = _head_and_leaf(store, session_id)
            continue
        leaf = _crash_commit_nodes(commit_id)[2]
        # One write() of one short line: a kill cannot leave half of it.
        os.write(ack, f"{commit_id} {head}\n".encode())
        number += 1


def _head_and_leaf(store: SessionStore, session_id: str) -> tuple[int | None, str | None]:
    read = store.load_graph(session_id, ActivePath(_NO_NODE))
    return (None, None) if read is None else (read.head_revision, read.leaf_id)


@attrs.frozen
class CrashReport:
    """What the kills so far left behind: the commits found in the store (in
    order) and how many of them no child acknowledged (commits in flight at
    a kill that landed)."""

    stored: tuple[str, ...]
    unacknowledged: int


@attrs.frozen
class Killed:
    """What a killed crash child reported: the commits it acknowledged, in
    order, and the token of the lease it claimed (if any)."""

    acknowledged: tuple[str, ...]
    lease_token: int | None


def kill_during_commits(
    plan: CrashPlan,
    incarnation: int,
    workdir: Path,
    rng: random.Random,
    *,
    max_delay: float = 0.08,
) -> Killed:
    """Start :func:`crash_child`, let it run for a random while (mostly
    after its first acknowledged commit, sometimes before: during the
    store's opening), kill it with ``SIGKILL`` and return what it reported."""
    ack_path = workdir / f"acks-{incarnation}"
    ack_path.write_bytes(b"")
    child = _child_context().Process(target=crash_child, args=(plan, incarnation, str(ack_path)))
    child.start()
    deadline = time.monotonic() + 60
    if rng.random() < 0.85:
        lines = 1 if plan.lease_owner is None else 2
        while ack_path.read_bytes().count(b"\n") < lines and child.is_alive():
            assert time.monotonic() < deadline, "the crash child never committed"
            time.sleep(0.002)
    time.sleep(rng.uniform(0, max_delay))
    assert child.pid is not None
    if child.is_alive():
        os.kill(child.pid, signal.SIGKILL)
    child.join(60)
    assert child.exitcode == -signal.SIGKILL, f"the crash child exited with {child.exitcode}"
    acknowledged: list[str] = []
    token = None
    # A line without its newline was cut short: it acknowledges nothing.
    for line in ack_path.read_bytes().split(b"\n")[:-1]:
        first, second = line.decode().split(" ")
        if first == "lease":
            token = int(second)
        else:
            acknowledged.append(first)
    return Killed(tuple(acknowledged), token)


def check_crash(
    store: SessionStore,
    session_id: str,
    acknowledged: Mapping[int, Sequence[str]],
    previously: Sequence[str],
) -> CrashReport:
    """Assert killed children left the session whole: it loads, needs no
    healing, holds every commit any child acknowledged, and holds each
    commit completely or not at all.

    ``acknowledged`` maps each child (its incarnation number) that ran on
    the session to the commits it acknowledged; ``previously`` are the
    commits stored at the last check. Each child's commits are stored in
    its order, and at most one more than it acknowledged: the one in flight
    when it was killed. On a server that commit may land a little after
    the kill (the server finishes a statement its dead client sent), so it
    may show up only at a later check, but never more than one per child.
    """
    loaded = store.load_graph(session_id, FullGraph())
    if loaded is None:
        assert not any(acknowledged.values()), "an acknowledged session is gone"
        assert not previously, "a stored session is gone"
        return CrashReport((), 0)
    graph = SessionGraph.from_nodes(loaded.nodes, loaded.leaf_id)
    _, report = heal_graph(graph)
    assert report.is_clean, f"{session_id}: healing found repairs after a kill: {report}"
    stored_ids = [n.node_id for n in loaded.nodes]
    stored = [node_id[:-2] for node_id in stored_ids if node_id.endswith("/0")]
    expected_ids = ["marker"] + [n for c in stored for n in _crash_commit_nodes(c)]
    assert stored_ids == expected_ids, "a commit is only partly stored, or out of place"
    assert stored[: len(previously)] == list(previously), "an earlier commit changed or vanished"
    unacknowledged = 0
    for incarnation, acks in acknowledged.items():
        mine = [c for c in stored if c.startswith(f"i{incarnation}c")]
        assert mine == [f"i{incarnation}c{n}" for n in range(len(mine))], (
            f"child {incarnation}'s commits are out of order: {mine}"
        )
        assert mine[: len(acks)] == list(acks), (
            f"child {incarnation} acknowledged commits that are missing: {acks[len(mine) :]}"
        )
        assert len(mine) <= len(acks) + 1, f"child {incarnation} landed commits it never sent"
        unacknowledged += len(mine) - len(acks)
    assert len(stored) == sum(len(c) for c in acknowledged.values()) + unacknowledged
    # The session row moved with the nodes, in the same transaction.
    assert loaded.head_revision == len(stored), "head revision and commits disagree"
    assert loaded.leaf_id == f"{stored[-1]}/2"
    assert loaded.host_checkpoint == {"last": stored[-1], "head": len(stored)}
    marker = loaded.nodes[0]
    assert marker.parent_id == f"{stored[-1]}/0", "the repair of the last commit is missing"
    unadopted = {i.attachment_id for i in store.list_uncommitted(2.0) if i.session_id == session_id}
    assert not unadopted & set(stored), "a stored commit did not adopt its attachment"
    return CrashReport(tuple(stored), unacknowledged)
