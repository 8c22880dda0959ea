"""One scenario suite, run under the asyncio, trio and blocking drivers,
each against the memory, SQLite (a real file) and PostgreSQL (a real
server) stores."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_drivers_support import (
    DRIVERS,
    POLICY,
    STORES,
    HeldStore,
    StoreFactory,
    run_scenario,
    store_factory,
)

from lash_machine import HeadRevisionConflict, InvalidEvent, Phase, Residency, StoreError
from lash_machine import effects as fx
from lash_machine.persisted import FullGraph


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from store_factory(request, tmp_path)


pytestmark = [
    pytest.mark.parametrize("driver", DRIVERS),
    pytest.mark.parametrize("open_store", STORES, indirect=True),
]


async def _history(driver: Any) -> tuple[Any, Any, Any, Any, Any]:
    """A session with a fork: root -> old (orphaned) and root -> new."""
    session = await driver.open(POLICY)
    root = await session.append({"role": "user", "text": "hello"})
    old = await session.append({"role": "assistant", "text": "first answer"})
    await session.branch(root.node_id)
    new = await session.append({"role": "assistant", "text": "second answer"})
    return session, root, old, new, await session.list_orphans()


def test_open_branch_park_resume_load_and_tombstone(driver: str, open_store: StoreFactory) -> None:
    store = open_store()

    async def scenario(driver: Any) -> None:
        seen: list[fx.LifecycleEvent] = []
        tools: list[fx.RestoreToolSurface] = []
        driver.hooks.on_lifecycle(seen.append)
        driver.hooks.on(fx.RestoreToolSurface, tools.append)

        session, root, old, new, orphans = await _history(driver)
        assert orphans == (old.node_id,)
        assert new.parent_id == root.node_id and new.frame_id == session.state.current_frame_id
        assert await session.apply_tool_state(0, {"tools": ["search"]}) == 1
        parked = await session.park()
        assert parked.head_revision == 1 and session.phase is Phase.PARKED
        assert await session.park() == parked  # parking twice hands back the handle

        everything = await driver.resume(parked, residency=Residency.KEEP_ALL)
        assert everything.view.resident_nodes == 3 and everything.view.leaf_id == new.node_id
        assert tools[-1].snapshot.generation == 1
        await everything.close()

        lean = await driver.resume(parked, residency=Residency.ACTIVE_PATH_ONLY)
        assert lean.view.resident_nodes == 2 and old.node_id not in lean.state.graph
        assert await lean.load_node(old.node_id) == old  # historic, from the store
        assert await lean.load_node(new.node_id) == new  # resident
        assert await lean.list_orphans() == (old.node_id,)
        assert await lean.tombstone_orphans() == 1
        assert await lean.list_orphans() == ()
        assert await lean.load_node(old.node_id) is None
        assert store.load_node(session.session_id, old.node_id) is None
        assert (await driver.vacuum()).nodes_removed >= 1
        assert (await lean.park()).head_revision == 1  # nothing changed: no commit

        kinds = [type(event).__name__ for event in seen]
        assert kinds == [
            "SessionOpened",
            "SessionSaved",
            "SessionParked",
            "SessionRestored",
            "SessionClosed",
            "SessionRestored",
            "SessionParked",
        ]

    run_scenario(driver, scenario, store)


def test_branch_to_a_stored_node_under_active_path_only(
    driver: str, open_store: StoreFactory
) -> None:
    store = open_store()

    async def scenario(driver: Any) -> None:
        session, _, old, new, _ = await _history(driver)
        parked = await session.park()
        lean = await driver.resume(parked, residency=Residency.ACTIVE_PATH_ONLY)
        await lean.branch(old.node_id)  # not resident: its path is loaded first
        reply = await lean.append({"role": "user", "text": "continue the first answer"})
        assert reply.parent_id == old.node_id
        assert set(await lean.list_orphans()) == {new.node_id}
        with pytest.raises(InvalidEvent):
            await lean.branch("no-such-node")
        assert (await lean.save()) == 2
        stored = store.load_graph(session.session_id, FullGraph())
        assert stored is not None and stored.leaf_id == reply.node_id
        await lean.close()

    run_scenario(driver, scenario, store)


def test_attachment_intent_is_adopted_by_the_next_commit(
    driver: str, open_store: StoreFactory
) -> None:
    store = open_store()

    def uncommitted(session_id: str) -> list[str]:
        intents = store.list_uncommitted(time.time() + 3600)
        return [i.attachment_id for i in intents if i.session_id == session_id]

    async def scenario(driver: Any) -> None:
        session = await driver.open(POLICY)
        await session.append({"text": "see the picture"})
        attachment = await session.record_attachment("file:///tmp/picture.png")
        assert uncommitted(session.session_id) == [attachment]
        assert await session.save() == 1
        assert uncommitted(session.session_id) == []
        await session.close()

    run_scenario(driver, scenario, store)


def test_second_park_from_the_same_head_conflicts(driver: str, open_store: StoreFactory) -> None:
    first_store, second_store = open_store(), open_store()

    async def scenario(first: Any, second: Any) -> None:
        conflicts: list[fx.LifecycleEvent] = []
        second.hooks.on_lifecycle(conflicts.append)
        session = await first.open(POLICY)
        await session.append({"text": "shared start"})
        parked = await session.park()

        mine = await first.resume(parked)
        theirs = await second.resume(parked)
        await mine.append({"text": "mine"})
        lost = await theirs.append({"text": "theirs"})
        assert (await mine.park()).head_revision == 2
        with pytest.raises(HeadRevisionConflict) as conflict:
            await theirs.park()
        assert (conflict.value.expected, conflict.value.actual) == (1, 2)
        # Nothing is lost: the session is active with its edit still in memory.
        assert theirs.phase is Phase.ACTIVE and lost.node_id in theirs.state.graph
        assert isinstance(conflicts[-1], fx.CommitConflict) and conflicts[-1].stored_head == 2
        await theirs.close(discard=True)

    run_scenario(driver, scenario, first_store, second_store)


def test_a_store_failure_leaves_the_session_usable(driver: str, open_store: StoreFactory) -> None:
    store = HeldStore(open_store())

    async def scenario(driver: Any) -> None:
        session = await driver.open(POLICY)
        node = await session.append({"text": "keep me"})
        gate = store.hold("commit", fail=StoreError("disk full"))
        gate.release.set()
        with pytest.raises(StoreError, match="disk full"):
            await session.save()
        assert session.phase is Phase.ACTIVE and node.node_id in session.state.graph
        with pytest.raises(InvalidEvent):
            await session.close()  # the edit is still uncommitted
        assert await session.save() == 1
        restored = await driver.restore(session.state, POLICY)
        assert restored.view.head_revision == 1 and restored.view.leaf_id == node.node_id
        await session.close()
        await restored.close()

    run_scenario(driver, scenario, store)
