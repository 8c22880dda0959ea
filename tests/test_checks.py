"""The content checks (lash_machine.checks), their public checker
(lash_machine.testing.checks) and the machine's Repair command.

Properties over generated message paths of both shapes; each shape's
repair spelled out; the checker catches planted bugs in checks; Repair
appends through Append's validation and refuses what Append refuses."""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import attrs
import pytest
from hypothesis import given
from machine_helpers import PHASES, POLICY, request_of, run

from lash_machine import (
    ErrorCode,
    MachineState,
    NodeKind,
    Phase,
    ProtocolError,
    Residency,
    SessionGraph,
    SessionNode,
    step,
    wire,
)
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.checks import (
    ANTHROPIC_TOOL_USE,
    CHECKS,
    INTERRUPTED,
    OPENAI_TOOL_CALLS,
    Addition,
    GraphCheck,
    Problem,
    checks_named,
)
from lash_machine.testing.checks import check_repairs
from lash_machine.testing.messages import ToolPath, anthropic_paths, message_paths, openai_paths

CHECK_OF = {"openai": OPENAI_TOOL_CALLS, "anthropic": ANTHROPIC_TOOL_USE}
OTHER = {"openai": ANTHROPIC_TOOL_USE, "anthropic": OPENAI_TOOL_CALLS}


def chain(*bodies: Any) -> tuple[SessionNode, ...]:
    """A path of message nodes m0, m1, ... with these bodies."""
    nodes: list[SessionNode] = []
    for i, body in enumerate(bodies):
        parent = nodes[-1].node_id if nodes else None
        nodes.append(SessionNode(f"m{i}", parent, NodeKind.MESSAGE, body, None, float(i)))
    return tuple(nodes)


USER = {"role": "user", "content": "weather in Oslo and Bergen?"}
OPENAI_CALLS = {
    "role": "assistant",
    "content": None,
    "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
        {"id": "call_2", "type": "function", "function": {"name": "weather", "arguments": "{}"}},
    ],
}
ANTHROPIC_CALLS = {
    "role": "assistant",
    "content": [
        {"type": "text", "text": "Looking it up."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
        {"type": "tool_use", "id": "toolu_2", "name": "weather", "input": {"city": "Bergen"}},
    ],
}

# ---- properties ------------------------------------------------------------------


@given(message_paths())
def test_every_generated_path_keeps_the_rules_and_problems_are_the_unanswered_calls(
    drawn: ToolPath,
) -> None:
    check = CHECK_OF[drawn.shape]
    repaired = check_repairs(check, drawn.nodes)
    problems = check.problems(drawn.nodes)
    named = [p for p in problems if p.check == check.name]
    assert len(named) == len(problems) == len(drawn.unanswered)
    for problem, call_id in zip(problems, drawn.unanswered, strict=True):
        assert f"tool call {call_id!r}" in problem.message
        assert problem.node_id in {n.node_id for n in drawn.nodes}
    assert repaired[: len(drawn.nodes)] == drawn.nodes
    assert (len(repaired) > len(drawn.nodes)) == bool(drawn.unanswered)


@given(message_paths())
def test_a_check_of_the_other_shape_finds_nothing_and_proposes_nothing(drawn: ToolPath) -> None:
    other = OTHER[drawn.shape]
    assert other.problems(drawn.nodes) == ()
    assert check_repairs(other, drawn.nodes) == drawn.nodes


@given(openai_paths())
def test_openai_repairs_answer_each_unanswered_call_in_order(drawn: ToolPath) -> None:
    additions = OPENAI_TOOL_CALLS.repairs(drawn.nodes)
    assert [a.body["tool_call_id"] for a in additions] == list(drawn.unanswered)
    assert all(a.body["role"] == "tool" and a.kind is NodeKind.MESSAGE for a in additions)


@given(anthropic_paths())
def test_anthropic_repairs_are_one_user_message_of_error_results(drawn: ToolPath) -> None:
    additions = ANTHROPIC_TOOL_USE.repairs(drawn.nodes)
    if not drawn.unanswered:
        assert additions == ()
        return
    (addition,) = additions
    assert addition.body["role"] == "user"
    blocks = addition.body["content"]
    assert [b["tool_use_id"] for b in blocks] == list(drawn.unanswered)
    assert all(b["type"] == "tool_result" and b["is_error"] is True for b in blocks)


# ---- each shape, spelled out --------------------------------------------------------


def test_openai_a_crash_between_two_parallel_results() -> None:
    path = chain(
        USER, OPENAI_CALLS, {"role": "tool", "tool_call_id": "call_1", "content": "cloudy"}
    )
    assert OPENAI_TOOL_CALLS.problems(path) == (
        Problem(
            "openai-tool-calls", "m1", "tool call 'call_2' (weather) in node 'm1' has no result"
        ),
    )
    assert OPENAI_TOOL_CALLS.repairs(path) == (
        Addition({"role": "tool", "tool_call_id": "call_2", "content": INTERRUPTED}),
    )


def test_anthropic_a_crash_before_any_result() -> None:
    path = chain(USER, ANTHROPIC_CALLS)
    assert [p.message for p in ANTHROPIC_TOOL_USE.problems(path)] == [
        "tool call 'toolu_1' (weather) in node 'm1' has no result",
        "tool call 'toolu_2' (weather) in node 'm1' has no result",
    ]
    (addition,) = ANTHROPIC_TOOL_USE.repairs(path)
    assert addition.body == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": i, "content": INTERRUPTED, "is_error": True}
            for i in ("toolu_1", "toolu_2")
        ],
    }


def test_a_result_before_its_call_does_not_answer_it_and_a_reused_id_is_a_new_call() -> None:
    early = {"role": "tool", "tool_call_id": "call_1", "content": "too early"}
    answer = {"role": "tool", "tool_call_id": "call_1", "content": "ok"}
    one_call = {**OPENAI_CALLS, "tool_calls": OPENAI_CALLS["tool_calls"][:1]}  # type: ignore[index]
    assert len(OPENAI_TOOL_CALLS.problems(chain(early, one_call))) == 1
    assert OPENAI_TOOL_CALLS.problems(chain(one_call, answer)) == ()
    assert len(OPENAI_TOOL_CALLS.problems(chain(one_call, answer, one_call))) == 1


def test_only_message_nodes_count_and_a_compacted_path_is_checked_from_its_summary() -> None:
    path = list(chain(USER, OPENAI_CALLS))
    # An event node holding a call is not a call; a summary root is stepped over.
    path[0] = attrs.evolve(path[0], kind=NodeKind.SUMMARY, body={"summary": "x"})
    event = SessionNode("e", "m1", NodeKind.EVENT, OPENAI_CALLS, None, 3.0)
    assert len(OPENAI_TOOL_CALLS.problems([*path, event])) == 2
    check_repairs(OPENAI_TOOL_CALLS, [*path, event])


def test_the_shipped_checks_are_found_by_name() -> None:
    assert set(CHECKS) == {"openai-tool-calls", "anthropic-tool-use"}
    assert checks_named("anthropic-tool-use, openai-tool-calls,openai-tool-calls") == (
        ANTHROPIC_TOOL_USE,
        OPENAI_TOOL_CALLS,
    )
    with pytest.raises(ValueError, match="no check named 'nope'; the checks are: anthropic"):
        checks_named("nope")
    with pytest.raises(ValueError, match="no check named an empty name"):
        checks_named("openai-tool-calls,")
    assert all(isinstance(check, GraphCheck) for check in CHECKS.values())


# ---- the checker catches broken checks (each a planted bug) -------------------------


@attrs.frozen
class Broken:
    """The OpenAI check with one planted bug."""

    bug: str
    name: str = "broken"

    def problems(self, path: Sequence[SessionNode]) -> tuple[Problem, ...]:
        if self.bug == "no-problems":
            return ()
        return OPENAI_TOOL_CALLS.problems(path)

    def repairs(self, path: Sequence[SessionNode]) -> tuple[Addition, ...]:
        additions = OPENAI_TOOL_CALLS.repairs(path)
        if self.bug == "rewrites" and additions:
            path[-1].body["tool_calls"] = []  # "repairs" the call away, in place
        if self.bug == "wrong-id":
            return tuple(Addition({**a.body, "tool_call_id": "call_x"}, a.kind) for a in additions)
        if self.bug == "not-json":
            return tuple(Addition({**a.body, "content": ("a", "tuple")}) for a in additions)
        if self.bug == "repeats" and not additions and path[-1].body.get("content") == INTERRUPTED:
            return (Addition({"role": "user", "content": "go on"}),)
        return additions


@pytest.mark.parametrize(
    ("bug", "message"),
    [
        ("rewrites", "looking at the path changed it"),
        ("wrong-id", "the repaired path still has problems"),
        ("no-problems", "a path without problems was proposed"),
        ("not-json", "a proposed node cannot be stored"),
        ("repeats", "repairing twice appended more"),
    ],
)
def test_check_repairs_catches_a_planted_bug(bug: str, message: str) -> None:
    path = copy.deepcopy(chain(USER, OPENAI_CALLS))
    with pytest.raises(AssertionError, match=message):
        check_repairs(Broken(bug), path)
    check_repairs(Broken("none"), copy.deepcopy(path))  # the same check without the bug passes


# ---- the machine's Repair --------------------------------------------------------


def _active(residency: Residency = Residency.KEEP_ALL) -> MachineState:
    """A persistent session whose committed path ends in two open calls."""
    state, out = run(
        MachineState.initial(),
        ev.Open(POLICY, 1.0, session_id="s1", residency=residency, writer="w"),
    )
    state, _ = run(state, ev.GraphLoaded(request_of(out, fx.LoadGraph).request_id, None))
    state, _ = run(state, ev.Append(chain(USER, OPENAI_CALLS)))
    state, out = run(state, ev.Save())
    state, _ = run(state, ev.Committed(request_of(out, fx.Commit).request_id, 1))
    return state


def _repair_of(state: MachineState, check: GraphCheck = OPENAI_TOOL_CALLS) -> ev.Repair:
    assert state.session is not None
    additions = check.repairs(state.session.graph.active_path())
    return ev.Repair(check.name, additions, tuple(f"r{i}" for i in range(len(additions))), 5.0)


@pytest.mark.parametrize("residency", list(Residency))
def test_repair_appends_a_chain_from_the_leaf_and_the_commit_only_appends(
    residency: Residency,
) -> None:
    state = _active(residency)
    new, out = step(state, _repair_of(state))
    session = new.session
    assert session is not None
    assert [n.node_id for n in session.graph.active_path()] == ["m0", "m1", "r0", "r1"]
    r0, r1 = session.graph.get("r0"), session.graph.get("r1")
    assert r0 is not None and r1 is not None
    assert (r0.parent_id, r1.parent_id) == ("m1", "r0")
    assert r0.frame_id == session.current_frame_id and r0.created_at == 5.0
    assert fx.EmitLifecycle(fx.SessionRepaired("s1", "openai-tool-calls", ("r0", "r1"))) in out
    assert isinstance(out[-1], fx.ReplyUpdated) and out[-1].leaf_id == "r1"
    assert session.dirty and OPENAI_TOOL_CALLS.problems(session.graph.active_path()) == ()
    _, out = step(new, ev.Save())
    delta = request_of(out, fx.Commit).commit.delta
    assert [n.node_id for n in delta.appended] == ["r0", "r1"]
    assert delta.reparented == () and delta.leaf_id == "r1"


def test_repair_on_a_compacted_session_appends_after_the_kept_tail() -> None:
    state = _active()
    state, _ = run(state, ev.Compact("m0", {"text": "the question"}, "sum", 2.0))
    assert state.session is not None
    assert state.session.graph.active_path()[0].kind is NodeKind.SUMMARY
    state, _ = run(state, _repair_of(state))
    assert state.session is not None
    ids = [n.node_id for n in state.session.graph.active_path()]
    assert ids == ["sum", "m1", "r0", "r1"]


REFUSED = [
    (ev.Repair("c", (), (), 1.0), "proposed nothing to append"),
    (ev.Repair("c", (Addition({}),), ("a", "b"), 1.0), "1 additions need as many node ids, got 2"),
    (ev.Repair("c", (Addition({}),), ("m0",), 1.0), "node id 'm0' is already in the session"),
    (ev.Repair("c", (Addition({}), Addition({})), ("x", "x"), 1.0), "'x' is already"),
    (ev.Repair("c", (Addition({"t": (1,)}),), ("x",), 1.0), "a tuple at body.t"),
    (ev.Repair("c", (Addition({}, "bogus"),), ("x",), 1.0), "unknown node kind"),  # type: ignore[arg-type]
    (ev.Repair("", (Addition({}),), ("x",), 1.0), "check name is empty"),
    (ev.Repair("c", (Addition({}),), ("x",), float("nan")), "now must be finite"),
]


@pytest.mark.parametrize(("event", "reason"), REFUSED, ids=[r for _, r in REFUSED])
def test_a_bad_repair_is_refused_and_changes_nothing(event: ev.Repair, reason: str) -> None:
    state = _active()
    before = wire.dumps(state)
    with pytest.raises(ProtocolError, match=reason):
        step(state, event)
    assert wire.dumps(state) == before


def test_a_repair_waits_while_a_commit_is_in_doubt() -> None:
    state = _active()
    extra = SessionNode("x", "m1", NodeKind.MESSAGE, {}, None, 2.0)
    state, out = run(state, ev.Append((extra,)), ev.Save())
    for _ in range(2):  # the commit, and the one resend of it
        commit = request_of(out, fx.Commit)
        state, out = step(
            state, ev.EffectFailed(commit.request_id, ErrorCode.COMMIT_OUTCOME_UNKNOWN, "lost")
        )
    assert state.phase is Phase.ACTIVE and state.session is not None and state.session.in_doubt
    with pytest.raises(ProtocolError, match="may or may not have been applied"):
        step(state, ev.Repair("c", (Addition({}),), ("y",), 1.0))


def test_repair_is_refused_outside_the_active_phase() -> None:
    for phase in (Phase.CLOSED, Phase.PARKED, Phase.OPENING, Phase.COMMITTING):
        with pytest.raises(ProtocolError):
            step(PHASES[phase](), ev.Repair("c", (Addition({}),), ("y",), 1.0))


def test_a_repaired_graph_passes_healing_untouched() -> None:
    state = _active()
    state, _ = run(state, _repair_of(state))
    assert state.session is not None
    graph = state.session.graph
    assert SessionGraph.from_nodes(graph.nodes, graph.leaf_id) == graph
