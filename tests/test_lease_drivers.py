"""Execution leases through the drivers: every driver on every store
claims on open, resume and restore, fences its commits, renews when due,
and releases once parked or closed. Without ``lease_owner`` nothing
changes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
from test_drivers_support import (
    DRIVERS,
    POLICY,
    STORES,
    HeldStore,
    StoreFactory,
    run_scenario,
    store_factory,
)

from lash_machine import (
    LeaseHeld,
    LeaseLost,
    ModelSpec,
    ModelSpecMissing,
    Phase,
    SessionPolicy,
    StoreError,
)
from lash_machine.drivers import asyncio as asyncio_driver
from lash_machine.drivers import blocking as blocking_driver
from lash_machine.drivers import trio as trio_driver
from lash_machine.drivers.store_effects import StoreRunner
from lash_machine.persisted import FullGraph
from lash_machine.stores import MemoryStore, SQLiteStore

#: A policy without a model: opening a new session with it fails.
NO_MODEL = SessionPolicy(ModelSpec(""), provider_id="")


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from store_factory(request, tmp_path)


def _sid() -> str:
    return f"lease-{uuid.uuid4().hex[:10]}"


def _leased(store: Any, owner: str = "w1", ttl: float = 30.0) -> dict[str, Any]:
    return {"store": store, "lease_owner": owner, "lease_ttl": ttl}


def _holder(store: Any, session_id: str) -> str | None:
    lease = store.current_lease(session_id)
    return None if lease is None else lease.owner


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_session_holds_its_lease_until_parked(driver: str, open_store: StoreFactory) -> None:
    store = open_store()
    sid = _sid()

    async def scenario(one: Any, two: Any) -> None:
        session = await one.open(POLICY, sid)
        assert session.lease is not None
        assert (session.lease.session_id, session.lease.owner) == (sid, "w1")
        assert _holder(store, sid) == "w1"
        # Another worker is told the session is busy: typed and retryable.
        with pytest.raises(LeaseHeld) as caught:
            await two.open(POLICY, sid)
        assert caught.value.owner == "w1"
        await session.append({"text": "hello"})
        assert await session.save() == 1
        parked = await session.park()
        assert session.lease is None
        assert _holder(store, sid) is None
        # Now the other worker gets it, with a larger token.
        other = await two.resume(parked)
        assert other.lease.token > 1
        assert _holder(store, sid) == "w2"
        await other.append({"text": "from w2"})
        await other.close(discard=True)
        assert _holder(store, sid) is None
        # The parked session object claims again when resumed.
        await session.resume()
        assert session.lease.owner == "w1"
        assert session.view.head_revision == 1
        await session.close()
        assert _holder(store, sid) is None

    run_scenario(driver, scenario, _leased(store, "w1"), _leased(store, "w2"))


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_worker_that_lost_its_lease_cannot_commit(driver: str, open_store: StoreFactory) -> None:
    store = open_store()
    sid = _sid()

    async def scenario(slow: Any, fast: Any) -> None:
        stalled = await slow.open(POLICY, sid)
        await stalled.append({"text": "first"})
        await stalled.save()
        stale_token = stalled.lease.token
        await stalled.append({"text": "written after the lease expired"})
        time.sleep(0.25)  # the lease (ttl 0.2 s) expires: a crashed or stalled worker
        taker = await fast.open(POLICY, sid)
        assert taker.lease.token > stale_token
        with pytest.raises(LeaseLost) as caught:
            await stalled.save()
        assert caught.value.token == stale_token
        # Nothing of the stale commit is stored; the session kept its edits.
        assert store.load_graph(sid, FullGraph()).head_revision == 1
        assert stalled.phase is Phase.ACTIVE and stalled.state.dirty
        with pytest.raises(LeaseLost):
            await stalled.renew_lease()
        await stalled.close(discard=True)
        # Closing the loser did not release the new holder's lease.
        assert _holder(store, sid) == "w2"
        await taker.append({"text": "second"})
        assert await taker.save() == 2
        await taker.park()

    run_scenario(driver, scenario, _leased(store, "w1", 0.2), _leased(store, "w2"))


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_commits_renew_the_lease_when_due(driver: str, open_store: StoreFactory) -> None:
    store = open_store()

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY)  # a fresh id, claimed before the open
        first = session.lease
        assert first.session_id == session.session_id
        await session.append({"n": 1})
        await session.save()
        assert session.lease == first  # not due yet
        time.sleep(0.6)  # past half the time-to-live
        await session.append({"n": 2})
        await session.save()
        assert session.lease.token == first.token
        assert session.lease.expires_at > first.expires_at
        explicit = await session.renew_lease()
        assert explicit.expires_at >= session.lease.expires_at - 1e-6
        await session.park()

    run_scenario(driver, scenario, _leased(store, "w1", 1.0))


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_failed_open_releases_and_restore_claims(driver: str, open_store: StoreFactory) -> None:
    store = open_store()
    sid = _sid()

    async def scenario(one: Any, two: Any) -> None:
        with pytest.raises(ModelSpecMissing):
            await one.open(NO_MODEL, sid)
        assert _holder(store, sid) is None
        session = await one.open(POLICY, sid)
        await session.append({"n": 1})
        await session.save()
        state = session.state
        await session.close()
        rebuilt = await two.restore(state, POLICY)
        assert rebuilt.lease.owner == "w2"
        with pytest.raises(LeaseHeld):
            await one.restore(state, POLICY)
        await rebuilt.append({"n": 2})
        assert await rebuilt.save() == 2
        await rebuilt.park()
        assert _holder(store, sid) is None

    run_scenario(driver, scenario, _leased(store, "w1"), _leased(store, "w2"))


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_writer_without_leases_is_told_the_session_is_held(
    driver: str, open_store: StoreFactory
) -> None:
    store = open_store()
    sid = _sid()

    async def scenario(leased: Any, plain: Any) -> None:
        holder = await leased.open(POLICY, sid)
        await holder.append({"n": 1})
        await holder.save()
        intruder = await plain.open(POLICY, sid)  # reads are not fenced
        assert intruder.lease is None
        await intruder.append({"n": "intruder"})
        with pytest.raises(LeaseHeld):
            await intruder.save()
        assert intruder.state.dirty  # kept its edits: it may retry later
        await holder.park()
        assert await intruder.save() == 2  # the session is free again
        await intruder.close()

    run_scenario(driver, scenario, _leased(store), {"store": store})


# ---- configuration ----------------------------------------------------------------


@pytest.mark.parametrize("module", [asyncio_driver, trio_driver, blocking_driver])
def test_leases_are_opt_in_and_checked_up_front(module: Any, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    try:
        with pytest.raises(ValueError, match="LeaseStore"):
            module.Driver(lease_owner="w1")
        with pytest.raises(ValueError, match="LeaseStore"):
            module.Driver(runner=StoreRunner(store), lease_owner="w1")
        with pytest.raises(ValueError):
            module.Driver(store, lease_owner="")
        with pytest.raises(ValueError):
            module.Driver(store, lease_owner="w1", lease_ttl=0)
        plain = module.Driver(store)
        assert plain.lease_owner is None
    finally:
        store.close()


def test_without_leases_nothing_is_claimed(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    with blocking_driver.Driver(store) as driver:
        session = driver.open(POLICY, "s")
        assert session.lease is None
        with pytest.raises(RuntimeError, match="lease_owner"):
            session.renew_lease()
        session.append({"n": 1})
        assert session.save() == 1
        session.park()
    assert store.current_lease("s") is None
    store.close()


# ---- failures and cancellation around lease calls ---------------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_failed_release_is_raised_and_retried_by_the_next_park(driver: str) -> None:
    held = HeldStore(MemoryStore())

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        gate = held.hold("release_lease", fail=StoreError("connection reset"))
        gate.release.set()
        with pytest.raises(StoreError, match="connection reset"):
            await session.park()
        assert session.phase is Phase.PARKED  # the commit is stored
        assert _holder(held.inner, "s") == "w1"
        parked = await session.park()  # the retry releases
        assert parked.head_revision == 1
        assert _holder(held.inner, "s") is None

    run_scenario(driver, scenario, _leased(held))


def test_asyncio_a_cancelled_claim_is_outlasted_and_released() -> None:
    held = HeldStore(MemoryStore())

    async def main() -> None:
        driver = asyncio_driver.Driver(held, lease_owner="w1")
        gate = held.hold("claim_lease")
        opening = asyncio.create_task(driver.open(POLICY, "s"))
        await asyncio.to_thread(gate.entered.wait, 5)
        opening.cancel()
        await asyncio.sleep(0.05)
        assert not opening.done()  # the claim may be applied: it is waited for
        gate.release.set()
        with pytest.raises(asyncio.CancelledError):
            await opening
        # The claim went through, the open did not: the lease was given back.
        assert held.inner.current_lease("s") is None
        session = await asyncio_driver.Driver(held, lease_owner="w2").open(POLICY, "s")
        assert session.lease.token == 2
        await session.close()

    asyncio.run(main())


def test_trio_a_cancelled_claim_is_outlasted_and_released() -> None:
    held = HeldStore(MemoryStore())

    async def main() -> None:
        driver = trio_driver.Driver(held, lease_owner="w1")
        gate = held.hold("claim_lease")
        with trio.move_on_after(0.05) as scope:
            trio.lowlevel.spawn_system_task(trio.to_thread.run_sync, _release_later, gate)
            await driver.open(POLICY, "s")
        assert scope.cancelled_caught
        assert gate.done.is_set()
        assert held.inner.current_lease("s") is None
        session = await trio_driver.Driver(held, lease_owner="w2").open(POLICY, "s")
        assert session.lease.token == 2
        await session.close()

    trio.run(main)


def _release_later(gate: Any) -> None:
    gate.entered.wait(5)
    time.sleep(0.15)
    gate.release.set()


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("open_store", STORES, indirect=True)
def test_a_worker_that_lost_its_lease_cannot_tombstone(
    driver: str, open_store: StoreFactory
) -> None:
    # Tombstones carry no token: the driver renews the lease first, which
    # fails once another worker took over, and then nothing is hidden.
    store = open_store()
    sid = _sid()

    async def scenario(slow: Any, fast: Any) -> None:
        stalled = await slow.open(POLICY, sid)
        root = await stalled.append({"n": "root"})
        old = await stalled.append({"n": "old branch"})
        await stalled.branch(root.node_id)
        await stalled.append({"n": "new branch"})
        await stalled.save()
        time.sleep(0.25)  # the lease (ttl 0.2 s) expires
        taker = await fast.open(POLICY, sid)
        await taker.branch(old.node_id)  # the new holder works on the old branch
        await taker.save()
        with pytest.raises(LeaseLost):
            await stalled.tombstone_orphans()
        assert store.load_node(sid, old.node_id) is not None
        await stalled.close(discard=True)
        assert await taker.list_orphans()  # the other branch, still there
        await taker.park()

    run_scenario(driver, scenario, _leased(store, "w1", 0.2), _leased(store, "w2"))
