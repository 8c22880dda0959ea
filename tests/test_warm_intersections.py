"""Warm resumes where they meet everything else: every resume a driver
takes from its cache must give what a resume that reads the store gives
(the cold path, ``warm_cache=0``), whatever happened between the park and
the resume: a handle through the wire, another driver, another writer's
commit, prune, vacuum, heal, compaction, fork, delete or session made
again, a lease held elsewhere, a failed or abandoned stamp read, two live
sessions from one handle, and the cache's own bounds."""

from __future__ import annotations

import asyncio
import sqlite3
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from test_drivers_support import (
    DRIVERS,
    POLICY,
    STORES,
    HeldStore,
    Probe,
    StoreFactory,
    run_scenario,
)
from test_drivers_support import store_factory as _store_factory

from lash_machine import (
    HeadRevisionConflict,
    LeaseHeld,
    NodeKind,
    ParkedSession,
    Residency,
    SessionDeleted,
    wire,
)
from lash_machine.cli import main as cli_main
from lash_machine.drivers import asyncio as asyncio_driver
from lash_machine.drivers import blocking as blocking_driver
from lash_machine.drivers import trio as trio_driver
from lash_machine.errors import TransientStoreError
from lash_machine.persisted import FullGraph
from lash_machine.state import SessionState
from lash_machine.stores import MemoryStore, SQLiteStore
from lash_machine.stores.base import SessionStore
from lash_machine.testing.records import make_commit, make_node
from lash_machine.transport import RemoteStore, serve_store

KEEP_ALL, PATH_ONLY = Residency.KEEP_ALL, Residency.ACTIVE_PATH_ONLY
Driver = blocking_driver.Driver
Session = blocking_driver.Session

#: What a resume read: the stamp alone (warm) or the nodes (cold).
WARM = {"session_stamp": 1}


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from _store_factory(request, tmp_path)


def _sid() -> str:
    # The PostgreSQL schema lives for the whole run: ids never repeat.
    return f"warm-{uuid.uuid4().hex[:12]}"


def _build(session: Session) -> None:
    """A session with a bit of everything: an orphan, a pinned orphan, a
    compaction, snapshots and a checkpoint."""
    root = session.append({"n": "root"})
    pinned = session.append({"n": "pinned answer"})
    session.branch(root.node_id)
    session.append({"n": "draft"})
    session.branch(root.node_id)
    turns = [session.append({"n": i, "text": "x" * i}) for i in range(5)]
    session.pin(pinned.node_id)
    session.compact(turns[2].node_id, "the first turns")
    session.append({"n": "after the summary"})
    session.set_checkpoint({"step": 3, "seen": [1, 2]})
    session.record_plugin_state({"plugin": {"k": "v"}})
    session.apply_tool_state(0, {"tools": ["search"]})


def _summary_id(state: SessionState) -> str:
    return next(n.node_id for n in state.graph if n.kind is NodeKind.SUMMARY)


def _edit(session: Session) -> None:
    """Edits that touch what is resident: undo the compaction (under
    ACTIVE_PATH_ONLY this reads the replaced history), branch, append."""
    state = session.state
    assert state is not None
    session.uncompact(_summary_id(state))
    path = session.state.graph.active_path()  # type: ignore[union-attr]
    session.branch(path[1].node_id)
    session.append({"n": "edited"})
    session.set_checkpoint({"step": 4})


def _cold(factory: StoreFactory, parked: ParkedSession, residency: Residency) -> SessionState:
    """What a resume that reads the store gives now (a driver of its own,
    on a store object of its own)."""
    with Driver(factory(), warm_cache=0) as cold:
        session = cold.resume(parked, residency=residency)
        state = session.state
        session.close(discard=True)
    assert state is not None
    return state


def _outcome(call: Callable[[], Session]) -> tuple[str, Any]:
    """A resume's state, or the kind of error it raised."""
    try:
        session = call()
    except Exception as error:  # the outcome compared
        return ("raised", type(error))
    state = session.state
    session.close(discard=True)
    return ("resumed", state)


# ---- the cold path's result, edited and saved ------------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("parked_under", list(Residency))
@pytest.mark.parametrize("resumed_under", list(Residency))
def test_a_warm_resume_gives_the_cold_resume_and_saves_what_it_reads(
    open_store: StoreFactory, parked_under: Residency, resumed_under: Residency
) -> None:
    probe = Probe(open_store())
    # A copy kept under ACTIVE_PATH_ONLY lacks the orphans KEEP_ALL holds.
    usable = parked_under is KEEP_ALL or resumed_under is PATH_ONLY
    with Driver(probe) as driver:
        session = driver.open(POLICY, _sid(), residency=parked_under)
        _build(session)
        parked = session.park()
        probe.reads()
        warm = driver.resume(parked, residency=resumed_under)
        assert (probe.reads() == WARM) is usable
        assert warm.state == _cold(open_store, parked, resumed_under)

        _edit(warm)
        warm.save()
        assert warm.state == _cold(open_store, parked, resumed_under)
        parked = warm.park()
        probe.reads()
        again = driver.resume(parked, residency=resumed_under)
        assert probe.reads() == WARM
        assert again.state == _cold(open_store, parked, resumed_under)
        again.close()


def _stored(store: SessionStore, session_id: str) -> tuple[Any, ...]:
    """What the store holds of the session, but the store's own times and
    the ids of the commits (fresh for every incarnation)."""
    read = store.load_graph(session_id, FullGraph())
    assert read is not None
    return (
        read.head_revision,
        read.generation,
        read.policy,
        read.frames,
        read.current_frame_id,
        read.nodes,
        read.leaf_id,
        sorted(read.pinned),
        read.tool_snapshot,
        read.plugin_snapshot,
        read.host_checkpoint,
    )


def _counting_clock() -> Callable[[], float]:
    ticks = iter(range(1, 10_000))
    return lambda: float(next(ticks))


def _counting_ids() -> Callable[[], str]:
    ids = iter(range(1, 10_000))
    return lambda: f"n{next(ids)}"


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("parked_under", list(Residency))
@pytest.mark.parametrize("resumed_under", list(Residency))
def test_edits_saved_after_a_warm_resume_store_what_the_cold_path_stores(
    open_store: StoreFactory, parked_under: Residency, resumed_under: Residency
) -> None:
    """The same script, with the same ids and times, once warm on the store
    under test and once cold on a MemoryStore: the stores end up holding
    the same session."""
    session_id = _sid()

    def script(store: SessionStore, warm_cache: int) -> None:
        with Driver(
            store, clock=_counting_clock(), ids=_counting_ids(), warm_cache=warm_cache
        ) as d:
            session = d.open(POLICY, session_id, residency=parked_under)
            _build(session)
            session = d.resume(session.park(), residency=resumed_under)
            _edit(session)
            session = d.resume(session.park(), residency=resumed_under)
            session.append({"n": "last"})
            session.park()

    store = open_store()
    script(store, 64 * 1024 * 1024)
    reference = MemoryStore()
    script(reference, 0)
    assert _stored(store, session_id) == _stored(reference, session_id)


# ---- the handle on the wire, and other drivers ------------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_handle_through_the_wire_resumes_warm_here_and_cold_elsewhere(
    driver: str, open_store: StoreFactory
) -> None:
    probe = Probe(open_store())

    async def scenario(one: Any, other: Any) -> None:
        session = await one.open(POLICY, _sid())
        for n in range(4):
            await session.append({"n": n})
        parked = await session.park()
        sent = wire.loads(wire.dumps(parked), ParkedSession)
        assert sent == parked
        probe.reads()
        here = await one.resume(sent)
        assert probe.reads() == WARM
        warm = here.state
        assert warm == _cold(open_store, parked, KEEP_ALL)
        await here.close()
        # Driver B never parked it: it reads the nodes, and reads them right.
        elsewhere = await other.resume(sent)
        assert "load_graph" in probe.reads()
        assert elsewhere.state == warm
        await elsewhere.append({"n": "B"})
        parked_b = await elsewhere.park()
        # A's copy is now behind the store: A reads the nodes too.
        back = await one.resume(sent)
        assert "load_graph" in probe.reads()
        assert back.state == _cold(open_store, parked_b, KEEP_ALL)
        await back.close()

    run_scenario(driver, scenario, probe, probe)


def test_a_warm_resume_through_the_transport() -> None:
    import socket
    import threading

    store = Probe(MemoryStore())
    ours, theirs = socket.socketpair()
    server = threading.Thread(
        target=serve_store, args=(store, theirs.makefile("rb"), theirs.makefile("wb"))
    )
    server.start()
    remote = RemoteStore(ours.makefile("rb"), ours.makefile("wb"))

    async def main() -> tuple[SessionState | None, SessionState | None]:
        driver = asyncio_driver.Driver(runner=remote)
        session = await driver.open(POLICY, "over-the-wire")
        for n in range(3):
            await session.append({"n": n})
        before = session.state
        parked = await session.park()
        store.reads()
        resumed = await driver.resume(parked)
        assert store.reads() == WARM
        return before, resumed.state

    try:
        before, after = asyncio.run(main())
    finally:
        remote.close()
        ours.shutdown(socket.SHUT_WR)
        server.join(timeout=10)
        theirs.close()
        ours.close()
    assert after is not None and before is not None
    assert after.graph == before.graph
    with Driver(store.inner, warm_cache=0) as cold:
        parked = ParkedSession("over-the-wire", POLICY, 1, KEEP_ALL)
        assert cold.resume(parked).state == after


# ---- another writer between the park and the resume -------------------------------------


def _other_commits(factory: StoreFactory, driver: Driver, parked: ParkedSession) -> ParkedSession:
    with Driver(factory()) as other:
        session = other.resume(parked)
        session.append({"n": "theirs"})
        session.park()
    return parked


def _other_prunes(factory: StoreFactory, driver: Driver, parked: ParkedSession) -> ParkedSession:
    with Driver(factory()) as other:
        session = other.resume(parked)
        assert session.tombstone_orphans() >= 1  # the draft (the rest is pinned)
        session.park()
    return parked


def _vacuum_after_a_prune(
    factory: StoreFactory, driver: Driver, parked: ParkedSession
) -> ParkedSession:
    """Pruned, resumed and parked here (the copy is of the pruned
    session), then vacuumed elsewhere: the stamp stays, and so may the copy."""
    _other_prunes(factory, driver, parked)
    parked = driver.resume(parked).park()
    store = factory()
    store.vacuum()
    return parked


def _other_compacts(factory: StoreFactory, driver: Driver, parked: ParkedSession) -> ParkedSession:
    with Driver(factory()) as other:
        session = other.resume(parked)
        state = session.state
        assert state is not None
        session.uncompact(_summary_id(state))
        path = session.state.graph.active_path()  # type: ignore[union-attr]
        session.compact(path[-2].node_id, "nearly everything")
        session.park()
    return parked


def _other_forks(factory: StoreFactory, driver: Driver, parked: ParkedSession) -> ParkedSession:
    with Driver(factory()) as other:
        session = other.resume(parked)
        session.fork(new_session_id=f"{parked.session_id}-fork")
        session.close()
    return parked


def _other_deletes(factory: StoreFactory, driver: Driver, parked: ParkedSession) -> ParkedSession:
    assert factory().delete_session(parked.session_id)
    return parked


def _other_makes_it_again(
    factory: StoreFactory, driver: Driver, parked: ParkedSession
) -> ParkedSession:
    """Deleted, purged, and made again by another driver up to the same
    head revision."""
    store = factory()
    store.delete_session(parked.session_id)
    store.purge_deleted(float("inf"))
    assert parked.head_revision is not None
    with Driver(factory()) as other:
        session = other.open(POLICY, parked.session_id)
        for n in range(parked.head_revision):
            session.append({"n": f"again {n}"})
            session.save()
        session.park()
    return parked


#: What another writer does, and whether a warm resume then reads the
#: stamp alone: the stored state is still what the copy holds (so the warm
#: path takes the copy), or the stamp read finds the session deleted.
OTHERS: dict[str, tuple[Callable[[StoreFactory, Driver, ParkedSession], ParkedSession], bool]] = {
    "commit": (_other_commits, False),
    "prune": (_other_prunes, False),
    "vacuum": (_vacuum_after_a_prune, True),
    "compaction": (_other_compacts, False),
    "fork": (_other_forks, True),
    "delete": (_other_deletes, True),
    "made-again": (_other_makes_it_again, False),
}


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("other", list(OTHERS))
@pytest.mark.parametrize("residency", list(Residency))
def test_what_another_writer_did_meanwhile_reaches_a_warm_resume(
    open_store: StoreFactory, other: str, residency: Residency
) -> None:
    act, stamp_alone = OTHERS[other]
    probe = Probe(open_store())
    with Driver(probe) as driver:
        session = driver.open(POLICY, _sid(), residency=residency)
        _build(session)
        parked = act(open_store, driver, session.park())
        cold = _outcome(lambda: Driver(open_store(), warm_cache=0).resume(parked))
        probe.reads()
        warm = _outcome(lambda: driver.resume(parked))
        assert (probe.reads() == WARM) is stamp_alone
        assert warm == cold
        if other == "delete":
            assert warm == ("raised", SessionDeleted)
        if other == "fork":
            # The copy is a session of its own: never taken from the cache.
            fork = ParkedSession(f"{parked.session_id}-fork", POLICY, 1, residency)
            forked = _outcome(lambda: driver.resume(fork))
            assert "load_graph" in probe.reads()
            assert forked == _outcome(lambda: Driver(open_store(), warm_cache=0).resume(fork))


def test_a_heal_applied_elsewhere_reaches_a_warm_resume(tmp_path: Path) -> None:
    """A parent cycle written under the store's feet, then healed with
    ``lash-machine heal --apply`` (a commit of its own)."""
    db = tmp_path / "s.db"
    probe = Probe(SQLiteStore(db))
    with Driver(probe) as driver:
        session = driver.open(POLICY, "s")
        root = session.append({"n": "root"})
        session.append({"n": "a"})
        leaf = session.append({"n": "b"})
        parked = session.park()
        with sqlite3.connect(db) as conn:
            conn.execute(
                "UPDATE lash_nodes SET parent_id = ? WHERE session_id = 's' AND node_id = ?",
                (leaf.node_id, root.node_id),
            )
        conn.close()
        assert cli_main(["heal", "--db", str(db), "s", "--apply"]) == 0
        cold = _cold(lambda: SQLiteStore(db), parked, KEEP_ALL)
        probe.reads()
        warm = driver.resume(parked)
        assert "load_graph" in probe.reads()
        assert warm.state == cold
        assert warm.state.head_revision == parked.head_revision + 1  # type: ignore[union-attr,operator]
    probe.inner.close()


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("edited", [False, True])
def test_a_session_made_again_by_commits_without_an_id_is_never_taken_for_the_copy(
    open_store: StoreFactory, edited: bool
) -> None:
    """An import (``lash-machine import``), a migrated row, a raw store
    call: the session's creating commit has no id, so its stamp cannot
    tell it from one made again the same way at the same head revision.
    The warm path must read the nodes, as the cold path does."""
    store = open_store()
    session_id = _sid()
    store.commit(make_commit(session_id, None, [make_node("old", None)]))
    with Driver(store) as driver:
        session = driver.open(POLICY, session_id)
        if edited:
            session.append({"n": "mine"})
        parked = session.park()
        store.delete_session(session_id)
        store.purge_deleted(float("inf"))
        nodes = [make_node("new", None), make_node("new-child", "new")]
        for head, node in enumerate(nodes[: parked.head_revision]):
            store.commit(make_commit(session_id, head or None, [node]))
        assert store.session_stamp(session_id) == driver.warm_cache.get(session_id).session.stamp  # type: ignore[union-attr]
        resumed = driver.resume(parked)
        assert resumed.state == _cold(open_store, parked, KEEP_ALL)
        assert "old" not in resumed.state.graph  # type: ignore[union-attr]


def _holder(probe: Probe, session_id: str) -> str | None:
    """Who holds the session's lease now (asked of the store itself, not
    counted)."""
    lease = probe.inner.current_lease(session_id)  # type: ignore[attr-defined]
    return None if lease is None else str(lease.owner)


# ---- leases -----------------------------------------------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("warm_cache", [64 * 1024 * 1024, 0])
def test_a_warm_resume_claims_the_lease_as_a_cold_one_does(
    open_store: StoreFactory, warm_cache: int
) -> None:
    """The same assertions hold with the cache on and off."""
    probe = Probe(open_store())
    session_id = _sid()
    with (
        Driver(probe, lease_owner="me", warm_cache=warm_cache) as mine,
        Driver(open_store(), lease_owner="them") as theirs,
    ):
        session = mine.open(POLICY, session_id)
        session.append({"n": 0})
        parked = session.park()
        assert _holder(probe, session_id) is None
        held = theirs.resume(parked)
        probe.reads()
        with pytest.raises(LeaseHeld):
            mine.resume(parked)
        # Refused before anything is read; the lease stays theirs.
        assert probe.reads() == {"claim_lease": 1}
        assert _holder(probe, session_id) == "them"
        held.park()  # nothing changed: no commit
        resumed = mine.resume(parked)
        reads = probe.reads()
        assert reads.pop("claim_lease") == 1
        assert reads == (WARM if warm_cache else {"load_graph": 1})
        assert _holder(probe, session_id) == "me"
        assert resumed.state == _cold(open_store, parked, KEEP_ALL)
        # Their commit under their own lease moves the head: read again.
        resumed.park()
        other = theirs.resume(parked)
        other.append({"n": "theirs"})
        other.park()
        again = mine.resume(parked)
        assert "load_graph" in probe.reads()
        assert again.state == _cold(open_store, parked, KEEP_ALL)
        again.park()
        assert _holder(probe, session_id) is None


# ---- a stamp read that fails, or is abandoned ---------------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("warm_cache", [64 * 1024 * 1024, 0])
@pytest.mark.parametrize("in_place", [False, True])
def test_a_failed_resume_read_leaves_everything_as_it_was_and_a_retry_works(
    open_store: StoreFactory, warm_cache: int, in_place: bool
) -> None:
    """The stamp read (warm) or the graph read (cold) fails: the same error,
    the lease given back, and the retry resumes (warm, when it may)."""
    probe = Probe(open_store())
    session_id = _sid()
    read = "session_stamp" if warm_cache else "load_graph"
    with Driver(probe, lease_owner="me", warm_cache=warm_cache) as driver:
        session = driver.open(POLICY, session_id)
        session.append({"n": 0})
        parked = session.park()
        probe.failures[read] = TransientStoreError("the connection dropped")
        with pytest.raises(TransientStoreError, match="the connection dropped"):
            if in_place:
                session.resume()
            else:
                driver.resume(parked)
        assert _holder(probe, session_id) is None
        if in_place:
            assert session.phase.value == "parked"
        probe.reads()
        if in_place:
            session.resume()
            resumed = session
        else:
            resumed = driver.resume(parked)
        reads = probe.reads()
        assert reads.pop("claim_lease") == 1
        assert reads == (WARM if warm_cache else {"load_graph": 1})
        assert resumed.state == _cold(open_store, parked, KEEP_ALL)
        resumed.park()


@pytest.mark.parametrize("driver", ["asyncio", "trio"])
@pytest.mark.parametrize("warm_cache", [64 * 1024 * 1024, 0])
def test_a_resume_cancelled_in_its_read_gives_the_lease_back_and_can_be_retried(
    driver: str, warm_cache: int
) -> None:
    store = MemoryStore()
    held = HeldStore(store)
    read = "session_stamp" if warm_cache else "load_graph"
    config = {"store": held, "lease_owner": "me", "warm_cache": warm_cache}

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 0})
        parked = await session.park()
        gate = held.hold(read)
        if driver == "asyncio":
            task = asyncio.ensure_future(one.resume(parked))
            await asyncio.get_running_loop().run_in_executor(None, gate.entered.wait, 10)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with trio.move_on_after(5) as scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(one.resume, parked)
                    await trio.to_thread.run_sync(gate.entered.wait, 10)
                    nursery.cancel_scope.cancel()
            assert not scope.cancelled_caught
        assert store.current_lease("s") is None
        gate.release.set()
        resumed = await one.resume(parked)
        assert resumed.state == _cold(lambda: store, parked, KEEP_ALL)
        await resumed.park()

    run_scenario(driver, scenario, config)


# ---- one handle, two live sessions --------------------------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("warm_cache", [64 * 1024 * 1024, 0])
def test_two_resumes_of_one_handle_behave_as_they_do_cold(
    open_store: StoreFactory, warm_cache: int
) -> None:
    """The same assertions hold with the cache on and off."""
    with Driver(open_store(), warm_cache=warm_cache) as driver:
        session = driver.open(POLICY, _sid())
        session.append({"n": 0})
        parked = session.park()
        one, two = driver.resume(parked), driver.resume(parked)
        assert one.state == two.state == _cold(open_store, parked, KEEP_ALL)
        one.append({"n": "one"})
        assert "one" not in {n.body["n"] for n in two.state.graph}  # type: ignore[index,union-attr]
        newer = one.park()
        # The second never saw the first's commit: it parks what it read
        # (no commit), and its older copy replaces the newer one.
        older = two.park()
        assert older.head_revision == parked.head_revision
        assert newer.head_revision == parked.head_revision + 1  # type: ignore[operator]
        for handle in (older, newer):
            resumed = driver.resume(handle)
            assert resumed.state == _cold(open_store, handle, KEEP_ALL)
            assert resumed.view.head_revision == newer.head_revision  # type: ignore[union-attr]
            resumed.close()
        one, two = driver.resume(newer), driver.resume(newer)
        one.append({"n": "first"})
        two.append({"n": "second"})
        one.save()
        with pytest.raises(HeadRevisionConflict):
            two.save()
        two.close(discard=True)
        latest = one.park()
        resumed = driver.resume(latest)
        assert resumed.state == _cold(open_store, latest, KEEP_ALL)
        assert "second" not in {n.body["n"] for n in resumed.state.graph}  # type: ignore[index,union-attr]


# ---- the cache's bounds -----------------------------------------------------------------


def _small(driver: Driver, session_id: str) -> ParkedSession:
    session = driver.open(POLICY, session_id)
    session.append({"n": session_id})
    return session.park()


def test_a_session_bigger_than_the_cache_is_not_kept_and_resumes_cold(tmp_path: Path) -> None:
    probe = Probe(SQLiteStore(tmp_path / "s.db"))
    with Driver(probe, warm_cache=4000) as driver:
        parked = _small(driver, "s")
        assert len(driver.warm_cache) == 1
        session = driver.resume(parked)
        session.append({"n": "big", "text": "x" * 8000})
        parked = session.park()
        # The session outgrew the cache: its older, smaller copy went too.
        assert len(driver.warm_cache) == 0 and driver.warm_cache.size == 0
        probe.reads()
        resumed = driver.resume(parked)
        assert probe.reads() == {"load_graph": 1}
        assert resumed.state == _cold(lambda: SQLiteStore(tmp_path / "s.db"), parked, KEEP_ALL)
    probe.inner.close()


def test_the_least_recently_used_session_leaves_the_cache_first() -> None:
    probe = Probe(MemoryStore())
    with Driver(probe) as sizing:
        _small(sizing, "sizing")
        one_session = sizing.warm_cache.size
    # Room for two small sessions, not three.
    with Driver(probe, warm_cache=2 * one_session + one_session // 2) as driver:
        a, b = _small(driver, "a"), _small(driver, "b")
        driver.resume(a).close()  # a is used: b is now the oldest
        c = _small(driver, "c")
        assert len(driver.warm_cache) == 2
        for handle, read in ((a, WARM), (c, WARM), (b, {"load_graph": 1})):
            probe.reads()
            resumed = driver.resume(handle)
            assert probe.reads() == read, handle.session_id
            assert resumed.state == _cold(lambda: probe.inner, handle, KEEP_ALL)
            resumed.close()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("bad", [-1, True, False, 1.5, "1024", None, float("inf")])
def test_a_bad_warm_cache_is_refused_at_construction_by_name(driver: str, bad: Any) -> None:
    module = {"asyncio": asyncio_driver, "trio": trio_driver, "blocking": blocking_driver}[driver]
    with pytest.raises(ValueError, match="warm_cache") as raised:
        module.Driver(MemoryStore(), warm_cache=bad)
    assert repr(bad) in str(raised.value)


def test_warm_cache_zero_keeps_nothing() -> None:
    probe = Probe(MemoryStore())
    with Driver(probe, warm_cache=0) as driver:
        parked = _small(driver, "s")
        assert len(driver.warm_cache) == 0
        probe.reads()
        driver.resume(parked)
        assert probe.reads() == {"load_graph": 1}
