"""Hypothesis strategies for active paths of chat messages with tool calls,
in the two shapes :mod:`lash_machine.checks` knows.

Each strategy draws a :class:`ToolPath`: the nodes of an active path (root
first; sometimes a compaction's summary first), and the ids of the calls
on it that no result answers, in the order they were made. Paths hold
user and assistant turns, single and parallel calls, results answering
some or all of them in any order, calls cut off at the end (a crash in
the middle of a tool call) and in the middle, and nodes a check must
step over: event and plugin nodes, bodies of other shapes.

>>> from hypothesis import given
>>> from lash_machine.checks import OPENAI_TOOL_CALLS
>>> from lash_machine.testing.checks import check_repairs
>>> @given(openai_paths())
... def test_my_check(drawn):
...     check_repairs(OPENAI_TOOL_CALLS, drawn.nodes)
"""

from __future__ import annotations

from typing import Literal

import attrs
from hypothesis import strategies as st

from ..compaction import summary_body
from ..model import JSON, NodeKind, SessionNode

__all__ = ["ToolPath", "anthropic_paths", "message_paths", "openai_paths"]

Shape = Literal["openai", "anthropic"]


@attrs.frozen
class ToolPath:
    """An active path (``nodes``, root first) in one ``shape``, and the
    ids of its calls left without a result (``unanswered``, in order)."""

    shape: Shape
    nodes: tuple[SessionNode, ...]
    unanswered: tuple[str, ...]


#: Call ids with the characters that break careless code.
_PREFIXES = st.sampled_from(["call_", "toolu_", "'q\"", "%s ", "ü-"])
_TOOLS = st.sampled_from(["get_weather", "search", "run shell ü"])
_TEXT = st.text(max_size=12)
_STEPS = st.sampled_from(["user", "assistant", "calls", "results", "noise"])

#: Bodies that are neither calls nor results in either shape, though some
#: come close (a check must step over them, not fail on them).
_ODD_BODIES: st.SearchStrategy[JSON] = st.sampled_from(
    [
        None,
        "plain text",
        [1, 2],
        {"role": "assistant", "tool_calls": "not a list"},
        {"role": "assistant", "tool_calls": [{"function": {"name": "no id"}}, 7]},
        {"role": "tool", "content": "no tool_call_id"},
        {"role": "tool", "tool_call_id": 42},
        {"role": "assistant", "content": [{"type": "tool_use", "name": "no id"}]},
        {"role": "user", "content": [{"type": "tool_result"}, "text"]},
        {"role": "user", "content": "a string, not blocks"},
    ]
)


def _calls_body(shape: Shape, calls: list[tuple[str, str]], text: str) -> JSON:
    if shape == "openai":
        return {
            "role": "assistant",
            "content": text or None,
            "tool_calls": [
                {"id": i, "type": "function", "function": {"name": tool, "arguments": "{}"}}
                for i, tool in calls
            ],
        }
    blocks: list[JSON] = [{"type": "text", "text": text}] if text else []
    blocks += [{"type": "tool_use", "id": i, "name": tool, "input": {}} for i, tool in calls]
    return {"role": "assistant", "content": blocks}


def _result_bodies(shape: Shape, answered: list[str], text: str) -> list[JSON]:
    if shape == "openai":
        return [{"role": "tool", "tool_call_id": i, "content": text} for i in answered]
    return [
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": i, "content": text} for i in answered
            ],
        }
    ]


@st.composite
def _paths(draw: st.DrawFn, shape: Shape, max_steps: int) -> ToolPath:
    nodes: list[SessionNode] = []
    unanswered: list[str] = []
    prefix = draw(_PREFIXES)
    made = 0

    def add(body: JSON, kind: NodeKind = NodeKind.MESSAGE) -> None:
        parent = nodes[-1].node_id if nodes else None
        nodes.append(SessionNode(f"m{len(nodes)}", parent, kind, body, None, float(len(nodes))))

    if draw(st.booleans()):
        # A compacted session: its path starts with the summary.
        add(summary_body("earlier turns", "gone", None), NodeKind.SUMMARY)
    for _ in range(draw(st.integers(0, max_steps))):
        step = draw(_STEPS)
        if step == "user":
            add({"role": "user", "content": draw(_TEXT)})
        elif step == "assistant":
            add({"role": "assistant", "content": draw(_TEXT)})
        elif step == "calls":
            count = draw(st.integers(1, 3))
            calls = [(f"{prefix}{made + i}", draw(_TOOLS)) for i in range(count)]
            made += count
            add(_calls_body(shape, calls, draw(_TEXT)))
            unanswered += [call_id for call_id, _ in calls]
        elif step == "results" and unanswered:
            answered = draw(st.lists(st.sampled_from(unanswered), min_size=1, unique=True))
            for body in _result_bodies(shape, answered, draw(_TEXT)):
                add(body)
            unanswered = [call_id for call_id in unanswered if call_id not in answered]
        elif step == "noise":
            kind = draw(st.sampled_from([NodeKind.MESSAGE, NodeKind.EVENT, NodeKind.PLUGIN]))
            add(draw(_ODD_BODIES), kind)
    return ToolPath(shape, tuple(nodes), tuple(unanswered))


def openai_paths(max_steps: int = 8) -> st.SearchStrategy[ToolPath]:
    """Paths of OpenAI-shaped messages (``tool_calls``, ``role: "tool"``)."""
    return _paths("openai", max_steps)


def anthropic_paths(max_steps: int = 8) -> st.SearchStrategy[ToolPath]:
    """Paths of Anthropic-shaped messages (``tool_use``, ``tool_result``)."""
    return _paths("anthropic", max_steps)


def message_paths(max_steps: int = 8) -> st.SearchStrategy[ToolPath]:
    """Paths of either shape."""
    return openai_paths(max_steps) | anthropic_paths(max_steps)
