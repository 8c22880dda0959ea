"""The driver API beyond the store scenarios: sessions without a store,
typed errors, hooks, lifecycle streams, and per-session serialization."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import trio
from test_drivers_support import DRIVERS, POLICY, HeldStore, run_scenario

from lash_machine import (
    InvalidEvent,
    ModelSpec,
    ModelSpecMissing,
    NodeKind,
    Phase,
    ProtocolError,
    Residency,
    ResidencyRequiresStore,
    SessionNode,
    SessionPolicy,
)
from lash_machine import effects as fx
from lash_machine.drivers import Hooks
from lash_machine.drivers import asyncio as asyncio_driver
from lash_machine.drivers import trio as trio_driver
from lash_machine.stores import MemoryStore, SQLiteStore

NO_MODEL = SessionPolicy(ModelSpec(""))


@pytest.mark.parametrize("driver", DRIVERS)
def test_sessions_without_a_store_live_in_memory(driver: str) -> None:
    async def scenario(driver: Any) -> None:
        session = await driver.open(POLICY)
        assert len(session.session_id) == 32  # a fresh uuid4
        first = await session.append({"text": "a"})
        second = await session.append({"text": "b"})
        await session.branch(first.node_id)
        assert await session.list_orphans() == (second.node_id,)
        assert await session.tombstone([second.node_id]) == 1
        with pytest.raises(InvalidEvent, match="no persistent store"):
            await session.save()
        with pytest.raises(ResidencyRequiresStore):
            await driver.open(POLICY, residency=Residency.ACTIVE_PATH_ONLY)
        assert await session.record_attachment("mem://x", "x") == "x"
        # A raw append: nodes exactly as given, the last one the leaf.
        frame = session.state.current_frame_id
        raw = [
            SessionNode("q", first.node_id, NodeKind.MESSAGE, {"text": "q"}, frame, 1.0),
            SessionNode("e", "q", NodeKind.EVENT, {"tool": "search"}, frame, 2.0),
        ]
        assert await session.append_nodes(raw) == "e"
        assert await session.load_node("q") == raw[0]
        with pytest.raises(InvalidEvent, match="already"):
            await session.append_nodes(raw[:1])
        await session.close()  # nothing to lose: no store to lose it from
        assert session.phase is Phase.CLOSED

    run_scenario(driver, scenario, {})


@pytest.mark.parametrize("driver", DRIVERS)
def test_errors_are_typed_and_change_nothing(driver: str) -> None:
    store = MemoryStore()

    async def scenario(driver: Any) -> None:
        with pytest.raises(ModelSpecMissing):
            await driver.open(NO_MODEL)
        session = await driver.open(POLICY, "chosen-id")
        assert session.session_id == "chosen-id"
        assert await session.apply_tool_state(0, {"v": 1}) == 1
        with pytest.raises(InvalidEvent, match="generation"):
            await session.apply_tool_state(0, {"v": 2})
        await session.record_plugin_state({"p": 1})
        await session.set_checkpoint({"step": 3})
        parked = await session.park()
        state = session._core.state
        with pytest.raises(ProtocolError):
            await session.append({"text": "too late"})
        assert session._core.state is state
        # An existing session with a configured policy opens under any policy.
        again = await driver.resume(parked)
        assert again.state.tool_snapshot.generation == 1
        assert again.state.host_checkpoint == {"step": 3}
        await again.close()

    run_scenario(driver, scenario, store)


@pytest.mark.parametrize("driver", DRIVERS)
def test_host_hooks_receive_their_effects_and_failures_come_after(driver: str) -> None:
    store = MemoryStore()
    hooks = Hooks()
    calls: list[str] = []
    hooks.on(fx.RestoreToolSurface, lambda e: calls.append(f"tools {e.snapshot.generation}"))
    hooks.on(fx.RestorePlugins, lambda e: calls.append(f"plugins {e.snapshot.revision}"))
    hooks.on(fx.UnregisterPluginSession, lambda e: calls.append("unregister"))

    def broken(event: fx.LifecycleEvent) -> None:
        raise RuntimeError(f"listener failed on {type(event).__name__}")

    async def scenario(driver: Any) -> None:
        session = await driver.open(POLICY)
        await session.apply_tool_state(0, {"t": 1})
        await session.record_plugin_state({"p": 1})
        parked = await session.park()
        assert calls == ["unregister"]
        stop = hooks.on_lifecycle(broken)
        with pytest.raises(RuntimeError, match="SessionRestored"):
            await driver.resume(parked)
        stop()
        # Every hook ran, in order, although a listener failed.
        assert calls == ["unregister", "tools 1", "plugins 1"]
        resumed = await driver.resume(parked)
        await resumed.close()
        assert calls[-1] == "unregister"

    run_scenario(driver, scenario, {"store": store, "hooks": hooks})


def test_asyncio_lifecycle_stream_and_serialized_calls(tmp_path: Path) -> None:
    held = HeldStore(SQLiteStore(tmp_path / "sessions.db"))

    async def main() -> None:
        driver = asyncio_driver.Driver(held)
        with driver.lifecycle() as events:
            session = await driver.open(POLICY)
            await session.append({"n": 1})
            gate = held.hold("commit")
            saving = asyncio.create_task(session.save())
            await asyncio.to_thread(gate.entered.wait, 5)
            # Mid-commit, a second call waits for the first instead of
            # meeting a committing machine.
            appending = asyncio.create_task(session.append({"n": 2}))
            await asyncio.sleep(0.02)
            assert not appending.done()
            gate.release.set()
            assert await saving == 1
            node = await appending
            assert session.state.graph.leaf_id == node.node_id and session.state.dirty
            await session.park()
        kinds = [type(event).__name__ async for event in events]
        assert kinds == ["SessionOpened", "SessionSaved", "SessionSaved", "SessionParked"]

    asyncio.run(main())
    held.inner.close()


def test_trio_lifecycle_stream_and_serialized_calls(tmp_path: Path) -> None:
    held = HeldStore(SQLiteStore(tmp_path / "sessions.db"))

    async def main() -> None:
        driver = trio_driver.Driver(held)
        seen: list[str] = []

        async def listen(events: Any) -> None:
            async for event in events:
                seen.append(type(event).__name__)

        async with trio.open_nursery() as nursery:
            with driver.lifecycle() as events:
                nursery.start_soon(listen, events)
                session = await driver.open(POLICY)
                await session.append({"n": 1})
                gate = held.hold("commit")
                nursery.start_soon(session.save)
                await trio.to_thread.run_sync(gate.entered.wait, 5)
                nursery.start_soon(session.append, {"n": 2})
                await trio.sleep(0.02)
                assert session.phase is Phase.COMMITTING
                gate.release.set()
                await trio.sleep(0.05)
                await session.park()
        assert seen == ["SessionOpened", "SessionSaved", "SessionSaved", "SessionParked"]

    trio.run(main)
    held.inner.close()
