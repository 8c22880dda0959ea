"""Stale and forged results: the machine refuses them (StaleResult) and the
drivers never feed one. A runner that answers the wrong request, or with
the wrong kind of result, fails the call with ``protocol_error``; the
session stays usable."""

from __future__ import annotations

import sqlite3
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import pytest
from test_drivers_support import DRIVERS, POLICY, HeldStore, run_scenario

from lash_machine import (
    CorruptRow,
    HeadRevisionConflict,
    MachineState,
    Phase,
    Residency,
    SchemaVersionMismatch,
    StaleResult,
    StoreError,
    step,
)
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.drivers import Hooks, Outcome, StoreRunner, _loop
from lash_machine.drivers._loop import SessionLoop
from lash_machine.errors import ErrorCode, StoreFailure, failure_of
from lash_machine.persisted import FullGraph
from lash_machine.stores import SQLiteStore

Forgery = Callable[[fx.StoreRequest, Outcome], Outcome]


class ForgingRunner:
    """A real store behind a runner that lies once about one kind of request."""

    def __init__(self, store: SQLiteStore) -> None:
        self.honest = StoreRunner(store)
        self.forgeries: dict[type, Forgery] = {}

    def __call__(self, request: fx.StoreRequest) -> Outcome:
        outcome = self.honest(request)
        forge = self.forgeries.pop(type(request), None)
        return outcome if forge is None else forge(request, outcome)


def _watch(session: Any) -> list[ev.Event]:
    """Record every event the driver feeds this session's machine."""
    fed: list[ev.Event] = []
    core = session._core
    real = core.step

    def recording(event: ev.Event) -> list[fx.Effect]:
        fed.append(event)
        return real(event)

    core.step = recording
    return fed


def test_the_machine_refuses_stale_and_forged_results() -> None:
    state, effects = step(MachineState.initial(), ev.Open(POLICY, 1.0, session_id="s"))
    (load,) = effects
    assert isinstance(load, fx.LoadGraph)
    for forged in (
        ev.GraphLoaded(load.request_id + 1, None),
        ev.EffectFailed(load.request_id + 1, "store_error", "forged"),
    ):
        with pytest.raises(StaleResult):
            step(state, forged)
    state, _ = step(state, ev.GraphLoaded(load.request_id, None))
    assert state.phase is Phase.ACTIVE
    with pytest.raises(StaleResult):  # a duplicate of a result already fed
        step(state, ev.GraphLoaded(load.request_id, None))


@pytest.mark.parametrize("driver", DRIVERS)
def test_drivers_never_feed_a_forged_result(driver: str, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "sessions.db")
    runner = ForgingRunner(store)

    async def scenario(driver: Any) -> None:
        session = await driver.open(POLICY)
        node = await session.append({"text": "hello"})
        fed = _watch(session)

        # Another request's id.
        runner.forgeries[fx.Commit] = lambda request, outcome: Outcome(
            attrs.evolve(outcome.result, request_id=request.request_id + 7)
        )
        with pytest.raises(StoreFailure) as failure:
            await session.save()
        assert failure.value.failure_code == "protocol_error"
        # The machine got an EffectFailed for its own request, never the forgery.
        assert [type(e) for e in fed] == [ev.Save, ev.EffectFailed]
        assert session.phase is Phase.ACTIVE and not session._core.state.outstanding
        # That commit really was applied by the store: a retry meets the
        # store's head, and the caller reloads, as after any lost answer.
        stored = store.load_graph(session.session_id, FullGraph())
        assert stored is not None and stored.head_revision == 1
        with pytest.raises(HeadRevisionConflict):
            await session.save()
        await session.close(discard=True)

        # The wrong kind of result for the request.
        session = await driver.open(POLICY)
        await session.append({"text": "again"})
        fed = _watch(session)
        runner.forgeries[fx.LoadGraph] = lambda request, outcome: Outcome(
            ev.Tombstoned(request.request_id, 0)
        )
        with pytest.raises(StoreFailure, match="does not answer"):
            await session.list_orphans()
        assert not any(isinstance(e, ev.Tombstoned) for e in fed)
        assert session.phase is Phase.ACTIVE

        # A result whose content the machine refuses (another session's graph):
        # the machine stays unchanged, the driver fails the request instead.
        runner.forgeries[fx.LoadNode] = lambda request, outcome: Outcome(
            ev.LoadNodeResult(request.request_id, attrs.evolve(node, node_id="someone-else"))
        )
        with pytest.raises(StoreFailure, match="protocol_error"):
            await session.load_node("not-resident")
        assert session.phase is Phase.ACTIVE and not session._core.state.outstanding
        assert (await session.park()).head_revision == 1

        lean = await driver.resume(session.parked, residency=Residency.ACTIVE_PATH_ONLY)
        assert lean.view.head_revision == 1
        await lean.close()

    try:
        run_scenario(driver, scenario, {"runner": runner})
    finally:
        store.close()


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (CorruptRow("s", "n", "bad JSON"), "corrupt_row"),
        (SchemaVersionMismatch("sessions.db", 9, 1), "schema_version_mismatch"),
        (StoreError("disk full"), "store_error"),
        (sqlite3.OperationalError("database is locked"), "store_error"),
    ],
)
def test_store_errors_map_to_codes_and_are_raised_as_themselves(
    error: Exception, code: str, tmp_path: Path
) -> None:
    held = HeldStore(SQLiteStore(tmp_path / "sessions.db"))

    async def scenario(driver: Any) -> None:
        session = await driver.open(POLICY)
        await session.append({"text": "hello"})
        await session.save()
        fed = _watch(session)
        gate = held.hold("load_node", fail=error)
        gate.release.set()
        with pytest.raises(type(error)) as raised:
            await session.load_node("historic")
        assert raised.value is error  # the store's own exception, not a copy
        (failed,) = [e for e in fed if isinstance(e, ev.EffectFailed)]
        assert failed.error == code
        assert await session.load_node("historic") is None  # usable again

    try:
        run_scenario("asyncio", scenario, held)
    finally:
        held.inner.close()


def test_a_failure_from_afar_is_rebuilt_from_its_code() -> None:
    """A failure that arrives as data (over a transport) is raised as the
    exception its code names, with the fields it travelled with."""
    core = SessionLoop(None, Hooks(), lambda: 0.0, lambda: "id")
    code, message, detail = failure_of(CorruptRow("s", "n", "bad JSON"))
    core._reply = fx.ReplyFailed("save", code, message, detail)
    with pytest.raises(CorruptRow) as failure:
        core.answer()
    assert (failure.value.session_id, failure.value.node_id) == ("s", "n")
    assert failure_of(HeadRevisionConflict("s", 1, 2))[0] is ErrorCode.HEAD_REVISION_CONFLICT
    core._reply = fx.ReplyFailed("save", ErrorCode.TRANSPORT_ERROR, "the pipe broke")
    with pytest.raises(StoreFailure) as unknown:
        core.answer()
    assert unknown.value.failure_code == "transport_error"


def test_the_loop_knows_the_answers_of_every_store_request() -> None:
    """The loop routes an effect by its type: every store request must have
    its answers listed (else it would be taken for a reply), and every
    result must answer some request."""
    assert set(_loop._ANSWERS) == set(typing.get_args(fx.StoreRequest))
    answers = {kind for kinds in _loop._ANSWERS.values() for kind in kinds}
    assert answers == set(typing.get_args(ev.Result))
    assert set(typing.get_args(fx.StoreWrite)) < set(_loop._ANSWERS)
