"""Cancellation in the middle of a store effect, on both loops (and an
interrupt under the blocking driver).

A gate holds the store call mid-flight. A cancelled read returns at once
and the machine is told; its late result is dropped. A cancelled write is
outlasted: the machine learns what the store really did, so the session
and the store always agree and the session can retry or close.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
from test_drivers_support import POLICY, HeldStore

from lash_machine import Phase, Residency, StaleResult, StoreError, step
from lash_machine import events as ev
from lash_machine.drivers import asyncio as asyncio_driver
from lash_machine.drivers import blocking as blocking_driver
from lash_machine.drivers import trio as trio_driver
from lash_machine.persisted import FullGraph
from lash_machine.stores import SQLiteStore


@pytest.fixture
def held(tmp_path: Path) -> Iterator[HeldStore]:
    store = SQLiteStore(tmp_path / "sessions.db")
    yield HeldStore(store)
    store.close()


def _stored(held: HeldStore, session_id: str) -> Any:
    return held.inner.load_graph(session_id, FullGraph())


# ---- asyncio ----------------------------------------------------------------------


async def _asyncio_saved(held: HeldStore) -> tuple[Any, Any, Any]:
    driver = asyncio_driver.Driver(held)
    session = await driver.open(POLICY)
    await session.append({"n": 1})
    await session.save()
    return driver, session, await session.append({"n": 2})


def test_asyncio_cancelled_commit_is_outlasted_and_the_session_agrees(held: HeldStore) -> None:
    async def main() -> None:
        driver, session, last = await _asyncio_saved(held)
        gate = held.hold("commit")
        parking = asyncio.create_task(session.park())
        await asyncio.to_thread(gate.entered.wait, 5)
        parking.cancel()
        await asyncio.sleep(0.05)
        assert not parking.done()  # waiting for the store's answer, not abandoning it
        gate.release.set()
        with pytest.raises(asyncio.CancelledError):
            await parking
        # The store applied the commit, and the session knows it.
        assert session.phase is Phase.PARKED and session.parked.head_revision == 2
        assert _stored(held, session.session_id).leaf_id == last.node_id
        assert await session.park() == session.parked  # the retry is safe
        resumed = await driver.resume(session.parked)
        assert resumed.view.leaf_id == last.node_id and resumed.view.head_revision == 2

    asyncio.run(main())


def test_asyncio_cancelled_commit_that_failed_can_be_retried(held: HeldStore) -> None:
    async def main() -> None:
        _, session, last = await _asyncio_saved(held)
        gate = held.hold("commit", fail=StoreError("disk full"))
        threading.Timer(0.1, gate.release.set).start()
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.02):
                await session.save()
        assert session.phase is Phase.ACTIVE and session.state.dirty
        assert _stored(held, session.session_id).head_revision == 1
        assert await session.save() == 2
        assert _stored(held, session.session_id).leaf_id == last.node_id
        await session.close()

    asyncio.run(main())


def test_asyncio_cancelled_load_returns_at_once_and_drops_the_late_result(
    held: HeldStore,
) -> None:
    async def main() -> None:
        driver = asyncio_driver.Driver(held)
        session = await driver.open(POLICY)
        root = await session.append({"n": 1})
        old = await session.append({"n": 2})
        await session.branch(root.node_id)
        await session.append({"n": 3})
        lean = await driver.resume(await session.park(), residency=Residency.ACTIVE_PATH_ONLY)

        cancelled_id = lean._core.state.next_request_id
        gate = held.hold("load_node")
        loading = asyncio.create_task(lean.load_node(old.node_id))
        await asyncio.to_thread(gate.entered.wait, 5)
        loading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await loading  # without releasing the gate
        assert lean.phase is Phase.ACTIVE and not lean._core.state.outstanding
        assert await lean.load_node(old.node_id) == old  # retried while the first still hangs

        settled = lean._core.state
        gate.release.set()
        await asyncio.to_thread(gate.done.wait, 5)
        await asyncio.sleep(0.01)
        assert lean._core.state is settled  # the late result was never fed
        with pytest.raises(StaleResult):
            step(settled, ev.LoadNodeResult(cancelled_id, old))

    asyncio.run(main())


def test_asyncio_cancelled_resume_goes_back_to_parked(held: HeldStore) -> None:
    async def main() -> None:
        _, session, last = await _asyncio_saved(held)
        await session.park()
        # The resume's first read: the stamp (the driver kept the session).
        gate = held.hold("session_stamp")
        resuming = asyncio.create_task(session.resume())
        await asyncio.to_thread(gate.entered.wait, 5)
        resuming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await resuming
        assert session.phase is Phase.PARKED
        gate.release.set()
        await session.resume()
        assert session.view.leaf_id == last.node_id

    asyncio.run(main())


# ---- trio -------------------------------------------------------------------------


async def _trio_saved(held: HeldStore) -> tuple[Any, Any, Any]:
    driver = trio_driver.Driver(held)
    session = await driver.open(POLICY)
    await session.append({"n": 1})
    await session.save()
    return driver, session, await session.append({"n": 2})


async def _cancel_when_entered(
    gate: Any, scope: trio.CancelScope, release_after: float | None
) -> None:
    await trio.to_thread.run_sync(gate.entered.wait, 5)
    scope.cancel()
    if release_after is not None:
        await trio.sleep(release_after)
        gate.release.set()


def test_trio_cancelled_commit_is_outlasted_and_the_session_agrees(held: HeldStore) -> None:
    async def main() -> None:
        driver, session, last = await _trio_saved(held)
        gate = held.hold("commit")
        scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_entered, gate, scope, 0.05)
            started = trio.current_time()
            with scope:
                parked = await session.park()
        # The write completed, so trio returns it (its cancellation would
        # land at the next checkpoint); the session and the store agree.
        assert trio.current_time() - started >= 0.05
        assert not scope.cancelled_caught and parked == session.parked
        assert session.phase is Phase.PARKED and parked.head_revision == 2
        assert _stored(held, session.session_id).leaf_id == last.node_id
        resumed = await driver.resume(parked)
        assert resumed.view.leaf_id == last.node_id

    trio.run(main)


def test_trio_cancelled_commit_that_failed_can_be_retried(held: HeldStore) -> None:
    async def main() -> None:
        _, session, _ = await _trio_saved(held)
        gate = held.hold("commit", fail=StoreError("disk full"))
        scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_entered, gate, scope, 0.02)
            with scope, pytest.raises(StoreError):
                await session.save()
        assert session.phase is Phase.ACTIVE and session.state.dirty
        assert await session.save() == 2

    trio.run(main)


def test_trio_cancelled_load_returns_at_once_and_drops_the_late_result(held: HeldStore) -> None:
    async def cancelled_midway(gate: Any, call: Any) -> None:
        scope = trio.CancelScope()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_cancel_when_entered, gate, scope, None)
            with scope:
                await call()
        assert scope.cancelled_caught

    async def main() -> None:
        driver, session, _ = await _trio_saved(held)
        parked = await session.park()

        # A resume's read (its stamp: the driver kept the session): back to
        # parked at once.
        gate = held.hold("session_stamp")
        await cancelled_midway(gate, session.resume)
        assert session.phase is Phase.PARKED
        settled = session._core.state
        gate.release.set()
        await trio.to_thread.run_sync(gate.done.wait, 5)
        await trio.sleep(0.01)
        assert session._core.state is settled  # the late result was never fed
        await session.resume()
        assert session.view.head_revision == parked.head_revision

        # A historic node's read: still active, and the retry answers.
        lean = await driver.resume(await session.park(), residency=Residency.ACTIVE_PATH_ONLY)
        leaf = await lean.load_node(lean.view.leaf_id)
        gate = held.hold("load_node")
        await cancelled_midway(gate, lambda: lean.load_node("off-path"))
        assert lean.phase is Phase.ACTIVE and not lean._core.state.outstanding
        gate.release.set()
        assert await lean.load_node(leaf.node_id) == leaf
        await lean.close()

    trio.run(main)


def test_trio_call_cancelled_before_it_starts_changes_nothing(held: HeldStore) -> None:
    async def main() -> None:
        _, session, _ = await _trio_saved(held)
        with trio.CancelScope() as scope:
            scope.cancel()
            await session.save()  # cancelled while taking the session's lock
        assert scope.cancelled_caught and session.phase is Phase.ACTIVE
        assert not session._core.state.outstanding
        assert await session.save() == 2

    trio.run(main)


# ---- blocking: an interrupt (a signal handler's exception) ------------------------------


class Interrupt(BaseException):
    """What our test signal handler raises, like KeyboardInterrupt."""


@contextmanager
def _interrupt_when_entered(gate: Any, release_after: float | None) -> Iterator[None]:
    def raise_interrupt(signum: int, frame: object) -> None:
        raise Interrupt

    def fire() -> None:
        gate.entered.wait(5)
        time.sleep(0.02)  # let the main thread settle into its wait
        main = threading.main_thread().ident
        assert main is not None
        signal.pthread_kill(main, signal.SIGUSR1)
        if release_after is not None:
            time.sleep(release_after)
            gate.release.set()

    previous = signal.signal(signal.SIGUSR1, raise_interrupt)
    firing = threading.Thread(target=fire)
    firing.start()
    try:
        yield
    finally:
        firing.join()
        signal.signal(signal.SIGUSR1, previous)


def test_blocking_interrupted_commit_is_outlasted(held: HeldStore) -> None:
    with blocking_driver.Driver(held) as driver:
        session = driver.open(POLICY)
        last = session.append({"n": 1})
        gate = held.hold("commit")
        with _interrupt_when_entered(gate, 0.05), pytest.raises(Interrupt):
            session.park()
        assert session.phase is Phase.PARKED and session.parked.head_revision == 1
        assert _stored(held, session.session_id).leaf_id == last.node_id


def test_blocking_interrupted_load_is_abandoned(held: HeldStore) -> None:
    with blocking_driver.Driver(held) as driver:
        session = driver.open(POLICY)
        node = session.append({"n": 1})
        session.save()
        gate = held.hold("load_node")
        with _interrupt_when_entered(gate, None), pytest.raises(Interrupt):
            session.load_node("not-resident")
        assert session.phase is Phase.ACTIVE and not session._core.state.outstanding
        gate.release.set()
        assert session.load_node(node.node_id) == node
        session.close()
