"""The drivers where features meet: a handle whose session was deleted or
lives in another store, a closed driver, a close retried after its lease
release failed, a commit whose answer was lost, and a lease held across a
transport. Every driver, on real stores."""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_drivers_support import DRIVERS, POLICY, STORES, HeldStore, StoreFactory, run_scenario
from test_drivers_support import store_factory as _store_factory

from lash_machine import (
    CommitOutcomeUnknown,
    DriverClosed,
    InvalidEvent,
    LeaseHeld,
    Phase,
    Residency,
    SessionDeleted,
    SessionNotFound,
    StoreError,
)
from lash_machine.drivers import blocking as blocking_driver
from lash_machine.drivers._base import new_id
from lash_machine.persisted import FullGraph
from lash_machine.stores import MemoryStore, SQLiteStore
from lash_machine.transport import RemoteStore, serve_store


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from _store_factory(request, tmp_path)


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("residency", list(Residency))
def test_a_handle_whose_session_was_deleted_raises_and_creates_nothing(
    driver: str, open_store: StoreFactory, residency: Residency
) -> None:
    store = open_store()

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, residency=residency)
        await session.append({"n": 1})
        parked = await session.park()
        assert store.delete_session(parked.session_id)
        with pytest.raises(SessionDeleted):
            await one.resume(parked)
        with pytest.raises(SessionDeleted):
            await session.resume()
        assert session.phase is Phase.PARKED  # still the handle: nothing was made of it
        with pytest.raises(SessionDeleted):
            store.load_graph(parked.session_id, FullGraph())
        assert parked.session_id not in {i.session_id for i in store.list_sessions()}
        # Once the marker is purged, the handle finds no session: still
        # nothing is made of it.
        store.purge_deleted(float("inf"))
        with pytest.raises(SessionNotFound):
            await one.resume(parked)
        assert store.load_graph(parked.session_id, FullGraph()) is None

    run_scenario(driver, scenario, store)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_handle_from_another_store_raises(driver: str, tmp_path: Path) -> None:
    here, there = SQLiteStore(tmp_path / "here.db"), SQLiteStore(tmp_path / "there.db")

    async def scenario(first: Any, second: Any) -> None:
        session = await first.open(POLICY)
        await session.append({"n": 1})
        parked = await session.park()
        with pytest.raises(SessionNotFound):
            await second.resume(parked)
        assert there.list_sessions() == []

    try:
        run_scenario(driver, scenario, here, there)
    finally:
        here.close()
        there.close()


def test_a_closed_blocking_driver_raises_a_typed_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    with blocking_driver.Driver(store) as driver:
        session = driver.open(POLICY)
        session.append({"n": 1})
    for call in (session.save, session.park, lambda: driver.open(POLICY), driver.vacuum):
        with pytest.raises(DriverClosed, match="the driver is closed"):
            call()
    assert session.phase is Phase.ACTIVE  # nothing was started
    store.close()


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_close_retried_after_its_lease_release_failed_releases(driver: str) -> None:
    held = HeldStore(MemoryStore())

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        await session.save()
        gate = held.hold("release_lease", fail=StoreError("connection reset"))
        gate.release.set()
        with pytest.raises(StoreError, match="connection reset"):
            await session.close()
        assert session.phase is Phase.CLOSED
        assert held.inner.current_lease("s") is not None
        await session.close()  # the retry releases, no ProtocolError
        assert held.inner.current_lease("s") is None

    run_scenario(driver, scenario, {"store": held, "lease_owner": "w1"})


class _LosesAnswers:
    """A real store whose next ``commit`` calls apply the commit, then
    report the connection as lost (the answer never reaches the driver)."""

    def __init__(self, store: Any, times: int) -> None:
        self.inner = store
        self.lost = times
        self.commits: list[Any] = []
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def commit(self, commit: Any) -> int:
        self.commits.append(commit)
        head = self.inner.commit(commit)
        with self._lock:
            if self.lost:
                self.lost -= 1
                raise CommitOutcomeUnknown(f"session {commit.session_id!r}: connection lost")
        return head


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_lost_answer_is_sent_again_under_the_same_commit_id(driver: str) -> None:
    lossy = _LosesAnswers(MemoryStore(), times=1)

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        try:
            head = await session.save()
        except CommitOutcomeUnknown:
            head = None
        # Both attempts carried one id: a store that records it answers the
        # retry with the head the first attempt made (stores: schema v3).
        first, again = lossy.commits
        assert first.commit_id is not None and first.commit_id == again.commit_id
        assert first.delta == again.delta
        if head is None:
            assert session.state.in_doubt == first.commit_id

    run_scenario(driver, scenario, lossy)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_commit_that_stays_in_doubt_is_raised_as_such(driver: str) -> None:
    lossy = _LosesAnswers(MemoryStore(), times=5)

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        with pytest.raises(CommitOutcomeUnknown):
            await session.save()
        assert len(lossy.commits) == 2  # sent, then sent again once
        assert session.phase is Phase.ACTIVE and session.state.in_doubt is not None
        with pytest.raises(InvalidEvent, match="settle"):
            await session.append({"n": 2})

    run_scenario(driver, scenario, lossy)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_held_lease_reaches_a_remote_client_as_lease_held(driver: str, tmp_path: Path) -> None:
    """Over a transport, a failure travels as its code and fields and is
    raised as the exception it stands for (here: with its owner and expiry)."""
    store = SQLiteStore(tmp_path / "s.db")
    client, server = socket.socketpair()
    serving = threading.Thread(
        target=serve_store, args=(store, server.makefile("rb"), server.makefile("wb"))
    )
    serving.start()
    remote = RemoteStore(client.makefile("rb"), client.makefile("wb"))
    lease = store.claim_lease("s", "worker-2", ttl=60.0)

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        with pytest.raises(LeaseHeld) as held:
            await session.save()
        assert (held.value.session_id, held.value.owner) == ("s", "worker-2")
        assert held.value.expires_at == lease.expires_at
        assert session.phase is Phase.ACTIVE

    try:
        run_scenario(driver, scenario, {"runner": remote})
    finally:
        remote.close()
        client.close()
        serving.join(10)
        server.close()
        store.close()


def test_ids_made_by_a_driver_are_random_uuid4s() -> None:
    ids = {new_id() for _ in range(2000)}
    assert len(ids) == 2000
    for made in ids:
        assert uuid.UUID(made).hex == made
        assert uuid.UUID(made).version == 4 and uuid.UUID(made).variant == uuid.RFC_4122


@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_body_changed_in_place_after_its_append_is_still_refused_by_the_store(
    open_store: StoreFactory,
) -> None:
    # Nodes are checked once as they come in; a body a caller changes in
    # place afterwards to hold what JSON cannot is refused by the store at
    # the save, and nothing is written.
    store = open_store()
    with blocking_driver.Driver(store) as driver:
        session = driver.open(POLICY, "s")
        session.append({"n": 1})
        session.save()
        body: dict[str, Any] = {"n": 2}
        session.append(body)
        body["n"] = float("nan")
        with pytest.raises(StoreError, match="not JSON"):
            session.save()
    stored = store.load_graph("s", FullGraph())
    assert stored is not None and [n.body for n in stored.nodes] == [{"n": 1}]


@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_committed_node_is_not_kept_by_the_check_that_passed_it(
    open_store: StoreFactory,
) -> None:
    # The machine's check of a node spares the store a second walk; the
    # store's check takes the entry out, so a committed body (however big)
    # is not held on the session's behalf once the session lets go of it.
    from lash_machine import content

    with blocking_driver.Driver(open_store()) as driver:
        session = driver.open(POLICY, "s")
        node = session.append({"text": "x" * 100_000})
        session.save()
        session.park()
    assert content._PASSED.get(id(node)) is not node
