"""Drivers given checks: a session left with an unanswered tool call is
repaired on open and on resume, under every driver, on SQLite and
PostgreSQL, in both residencies; the repair is written by the next park,
a second resume appends nothing, a conflicting writer loses nothing, a
compacted session is repaired after its tail, and a check that fails
closes the session unsaved with a typed error."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest
from test_drivers_support import DRIVERS, POLICY, StoreFactory, run_scenario
from test_drivers_support import store_factory as _store_factory

from lash_machine import (
    CheckFailed,
    HeadRevisionConflict,
    NodeKind,
    Phase,
    Residency,
    SessionNode,
)
from lash_machine import effects as fx
from lash_machine.checks import (
    ANTHROPIC_TOOL_USE,
    INTERRUPTED,
    OPENAI_TOOL_CALLS,
    Addition,
    Problem,
)
from lash_machine.drivers import blocking
from lash_machine.drivers.hooks import Hooks
from lash_machine.persisted import FullGraph
from lash_machine.stores import SessionStore

STORES = ["sqlite", "postgres"]

USER = {"role": "user", "content": "what is the weather in Oslo?"}
CALL = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}}
    ],
}
REPAIRED = {"role": "tool", "tool_call_id": "call_1", "content": INTERRUPTED}
SECOND_CALL = {**CALL, "tool_calls": [{"id": "call_2", "function": {"name": "search"}}]}
SECOND_REPAIRED = {**REPAIRED, "tool_call_id": "call_2"}


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from _store_factory(request, tmp_path)


def _bodies(session: Any) -> list[Any]:
    return [node.body for node in session.state.graph.active_path()]


def _stored_bodies(store: SessionStore, session_id: str) -> list[Any]:
    from lash_machine import SessionGraph

    read = store.load_graph(session_id, FullGraph())
    assert read is not None
    return [n.body for n in SessionGraph.from_nodes(read.nodes, read.leaf_id).active_path()]


def _crashed(store: SessionStore, residency: Residency, *tail: Any) -> str:
    """A session whose worker saved the model's tool call, then died before
    the tool's result was appended (its session object is simply dropped)."""
    with blocking.Driver(store) as driver:
        session = driver.open(POLICY, residency=residency)
        for body in (USER, CALL, *tail):
            session.append(body)
        session.save()
        return session.session_id


def _repaired_events(hooks: Hooks) -> list[fx.SessionRepaired]:
    heard: list[fx.SessionRepaired] = []
    hooks.on_lifecycle(lambda e: heard.append(e) if isinstance(e, fx.SessionRepaired) else None)
    return heard


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("residency", list(Residency))
def test_an_unanswered_call_is_repaired_on_open_written_by_park_and_not_again_on_resume(
    driver: str, open_store: StoreFactory, residency: Residency
) -> None:
    store = open_store()
    session_id = _crashed(store, residency)
    hooks = Hooks()
    heard = _repaired_events(hooks)

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, session_id, residency=residency)
        assert _bodies(session) == [USER, CALL, REPAIRED]
        (event,) = heard
        assert event.check == "openai-tool-calls" and event.session_id == session_id
        assert event.node_ids == (session.state.graph.leaf_id,)
        # Appended, not yet written: the open itself commits nothing.
        assert _stored_bodies(store, session_id) == [USER, CALL]
        assert session.state.dirty
        parked = await session.park()
        assert _stored_bodies(store, session_id) == [USER, CALL, REPAIRED]
        again = await one.resume(parked)
        await again.append({"role": "assistant", "content": "I could not reach the tool."})
        parked = await again.park()
        await again.resume()
        assert len(heard) == 1, "a repaired session was repaired again"
        assert _bodies(again)[-1] == {"role": "assistant", "content": "I could not reach the tool."}
        assert not again.state.dirty
        parked = await again.park()
        # Meanwhile another worker (without checks) crashes in a tool call.
        with blocking.Driver(store) as plain:
            other = plain.resume(parked)
            other.append(SECOND_CALL)
            other.park()
        await again.resume()  # this session object's own resume checks too
        assert len(heard) == 2 and _bodies(again)[-2:] == [SECOND_CALL, SECOND_REPAIRED]
        await again.close(discard=True)

    run_scenario(driver, scenario, {"store": store, "hooks": hooks, "checks": [OPENAI_TOOL_CALLS]})


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("residency", list(Residency))
def test_a_parked_handle_resumed_with_checks_is_repaired(
    open_store: StoreFactory, residency: Residency
) -> None:
    store = open_store()
    with blocking.Driver(store) as plain:
        session = plain.open(POLICY, residency=residency)
        session.append(USER)
        session.append(CALL)
        parked = session.park()
    with blocking.Driver(store, checks=[ANTHROPIC_TOOL_USE, OPENAI_TOOL_CALLS]) as checked:
        resumed = checked.resume(parked)
        assert _bodies(resumed) == [USER, CALL, REPAIRED]
        resumed.close(discard=True)  # only looked at: the next open repairs it again
        assert _stored_bodies(store, parked.session_id) == [USER, CALL]
        assert _bodies(checked.resume(parked)) == [USER, CALL, REPAIRED]


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_repair_that_loses_to_another_writer_loses_nothing(
    driver: str, open_store: StoreFactory
) -> None:
    store = open_store()
    session_id = _crashed(store, Residency.KEEP_ALL)

    async def scenario(one: Any, two: Any) -> None:
        first = await one.open(POLICY, session_id)
        second = await two.open(POLICY, session_id)
        await second.append({"role": "assistant", "content": "second worker"})
        await first.save()
        with pytest.raises(HeadRevisionConflict):
            await second.save()
        # The repair and the edit after it are still in memory.
        assert _bodies(second) == [
            USER,
            CALL,
            REPAIRED,
            {"role": "assistant", "content": "second worker"},
        ]
        await second.close(discard=True)
        third = await two.open(POLICY, session_id)
        assert _bodies(third) == [USER, CALL, REPAIRED]
        assert not third.state.dirty, "the stored repair was repaired again"
        await third.close()
        await first.close()

    config = {"store": store, "checks": [OPENAI_TOOL_CALLS]}
    run_scenario(driver, scenario, config, {**config, "store": open_store()})


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("residency", list(Residency))
def test_a_compacted_session_is_repaired_after_its_kept_tail(
    open_store: StoreFactory, residency: Residency
) -> None:
    store = open_store()
    with blocking.Driver(store) as plain:
        session = plain.open(POLICY, residency=residency)
        first = session.append({"role": "user", "content": "earlier"})
        session.append({"role": "assistant", "content": "answer"})
        session.append(USER)
        session.append(CALL)
        summary = session.compact(session.state.graph.active_path()[1].node_id, "an earlier turn")
        parked = session.park()
    assert first.node_id
    with blocking.Driver(store, checks=[OPENAI_TOOL_CALLS]) as checked:
        resumed = checked.resume(parked, residency=residency)
        path = resumed.state.graph.active_path()
        assert path[0].node_id == summary.node_id and path[0].kind is NodeKind.SUMMARY
        assert [n.body for n in path[1:]] == [USER, CALL, REPAIRED]
        resumed.save()
        assert _stored_bodies(store, parked.session_id)[-1] == REPAIRED
        resumed.uncompact(summary.node_id)
        assert _bodies(resumed)[-1] == REPAIRED  # the repair stays on the path
        resumed.close(discard=True)


@attrs.frozen
class Raises:
    name: str = "raises"

    def problems(self, path: Sequence[SessionNode]) -> tuple[Problem, ...]:
        return ()

    def repairs(self, path: Sequence[SessionNode]) -> tuple[Addition, ...]:
        raise KeyError("tool_calls")


@attrs.frozen
class NotJson:
    name: str = "not-json"

    def problems(self, path: Sequence[SessionNode]) -> tuple[Problem, ...]:
        return ()

    def repairs(self, path: Sequence[SessionNode]) -> tuple[Addition, ...]:
        return (Addition({"at": {1, 2}}),)


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize(
    ("check", "reason"),
    [
        (Raises(), r"check 'raises' failed: it raised KeyError: 'tool_calls'"),
        (NotJson(), r"check 'not-json' failed: the session refused its repair: .*a set at body.at"),
    ],
    ids=["raises", "refused"],
)
def test_a_check_that_fails_closes_the_session_unsaved_with_a_typed_error(
    driver: str, open_store: StoreFactory, check: Any, reason: str
) -> None:
    store = open_store()
    session_id = _crashed(store, Residency.KEEP_ALL)

    async def scenario(one: Any) -> None:
        # The first check's repair is made, the second fails: nothing is kept.
        with pytest.raises(CheckFailed, match=reason) as info:
            await one.open(POLICY, session_id)
        assert info.value.check == check.name and info.value.session_id == session_id
        assert info.value.__cause__ is not None
        assert _stored_bodies(store, session_id) == [USER, CALL]

    config = {"store": store, "checks": [OPENAI_TOOL_CALLS, check], "lease_owner": "w1"}
    run_scenario(driver, scenario, config)
    # The failed open gave its lease back: another worker takes the session.
    with blocking.Driver(store, lease_owner="w2") as plain:
        parked = plain.open(POLICY, session_id).park()
    with blocking.Driver(store, checks=[check]) as checked:
        with pytest.raises(CheckFailed, match=reason):
            checked.resume(parked)
        assert _stored_bodies(store, session_id) == [USER, CALL]


def test_checks_are_checked_when_the_driver_is_made() -> None:
    with pytest.raises(
        TypeError, match=r"checks must be GraphChecks \(name, problems, repairs\), got str"
    ):
        blocking.Driver(checks=["openai-tool-calls"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="two checks are named 'openai-tool-calls'"):
        blocking.Driver(checks=[OPENAI_TOOL_CALLS, OPENAI_TOOL_CALLS])
    with pytest.raises(ValueError, match="a check's name is empty"):
        blocking.Driver(checks=[attrs.evolve(OPENAI_TOOL_CALLS, name="")])
    assert blocking.Driver(checks=OPENAI_TOOL_CALLS).checks == (OPENAI_TOOL_CALLS,)  # type: ignore[arg-type]


def test_a_session_in_memory_is_checked_too() -> None:
    with blocking.Driver(checks=[OPENAI_TOOL_CALLS]) as driver:
        session = driver.open(POLICY)
        session.append(CALL)
        assert session.phase is Phase.ACTIVE
        restored = driver.restore(session.state, POLICY)
        assert _bodies(restored) == [CALL, REPAIRED]
