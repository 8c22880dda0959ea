"""Stale and forged results, as a property: in every phase, a result event
for a request that is not outstanding (late, duplicated, or made up) is
refused with ProtocolError and changes nothing; answered once, a request
refuses a second answer. The drivers' side (they never feed such a result,
under asyncio, trio and the blocking driver) is in test_drivers_results.py
and test_reliability_security.py."""

from __future__ import annotations

import typing
from typing import Any

import attrs
from hypothesis import given
from hypothesis import strategies as st

from lash_machine import ProtocolError, StaleResult, step, wire
from lash_machine import events as ev
from lash_machine.testing.strategies import events, machine_states

RESULTS = typing.get_args(ev.Result)  # every result, as the union defines them

result_events = events(*RESULTS)  # drawn by type: no filtering


@given(machine_states(), result_events, st.integers(0, 2**31))
def test_a_result_for_no_outstanding_request_changes_nothing(
    state: Any, result: Any, shift: int
) -> None:
    # Aim at an id the machine is not waiting for: below, between or above
    # the ones it is.
    forged_id = result.request_id + shift
    if forged_id in state.outstanding:
        forged_id = max(state.outstanding) + 1 + shift
    forged = attrs.evolve(result, request_id=forged_id)
    before = wire.dumps(state)
    try:
        step(state, forged)
    except StaleResult as refused:
        assert refused.request_id == forged_id
    except ProtocolError:
        pass  # the phase takes no such result at all
    else:
        raise AssertionError(f"{type(forged).__name__} {forged_id} was taken in {state.phase}")
    assert wire.dumps(state) == before


@given(machine_states(), st.data())
def test_an_answered_request_refuses_a_second_answer(state: Any, data: st.DataObject) -> None:
    for request_id in list(state.outstanding):
        failed = ev.EffectFailed(request_id, "cancelled", "gave up")
        try:
            after, _ = step(state, failed)
        except ProtocolError:
            continue  # not a state where that failure is taken
        duplicate = data.draw(st.sampled_from([failed, ev.IntentRecorded(request_id)]))
        try:
            step(after, duplicate)
        except ProtocolError:
            continue
        raise AssertionError(f"request {request_id} was answered twice")
