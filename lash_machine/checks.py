"""Checks that know the content: invariants a host defines over the active
path, and the repairs that restore them.

Healing (:func:`~lash_machine.graph.heal_graph`) keeps the *graph* sound
whatever the nodes say. A :class:`GraphCheck` looks at what they say: a
tool call that was never answered, because the process died between the
model asking for it and the tool's result being appended, leaves a path
that the next request to the model would be refused for. A check reports
such :class:`Problem` s and proposes :class:`Addition` s that fix them.

Rules every check keeps (:func:`lash_machine.testing.checks.check_repairs`
verifies them on any path):

1. Repairs only append. A check proposes new nodes for the end of the
   active path, never a change to a node already there: stored history is
   never rewritten, and a repair commits like any append (a conflicting
   writer loses nothing).
2. A repaired path passes: the path with the additions appended has no
   problems.
3. Repairing is idempotent: a path without problems gets no additions, so
   a second open or resume appends nothing.

A check is pure (no IO, no clock): the drivers call it on the active path
after an open or a resume (``Driver(store, checks=[...])``) and hand what
it proposes to the machine as one :class:`~lash_machine.events.Repair`;
``lash-machine check --checks NAME`` runs it over every stored session.

Two checks ship, for the two common shapes of tool calls in chat messages
(the node's body is the message itself):

* :data:`OPENAI_TOOL_CALLS`: an assistant message with ``tool_calls``
  (each with an ``id``) is answered by ``{"role": "tool", "tool_call_id":
  ...}`` messages; the repair appends one such message per unanswered call.
* :data:`ANTHROPIC_TOOL_USE`: ``{"type": "tool_use", "id": ...}`` blocks
  in an assistant message's content are answered by ``{"type":
  "tool_result", "tool_use_id": ...}`` blocks in a later message; the
  repair appends one user message holding an error result per unanswered
  call.

A call counts as answered by a result anywhere after it on the active
path; results and calls are matched by id. Only message nodes are read
(summaries, events and plugin nodes are skipped), and a body of another
shape is no call and no answer: a check never fails on a body it does not
understand. An unanswered call in the middle of the path is answered at
the end too (append-only), which satisfies the pairing but not an API
that wants each result right after its call; a crash in the middle of a
tool call leaves the call at the end, where the repair is exactly what
the model expects.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import attrs

from .model import JSON, NodeKind, SessionNode

__all__ = [
    "ANTHROPIC_TOOL_USE",
    "CHECKS",
    "INTERRUPTED",
    "OPENAI_TOOL_CALLS",
    "Addition",
    "AnthropicToolUse",
    "GraphCheck",
    "OpenAIToolCalls",
    "Problem",
    "addition_nodes",
    "checks_named",
]


@attrs.frozen
class Problem:
    """What a check found wrong on the active path: ``check`` is its name,
    ``node_id`` the node the problem is about (the unanswered call's
    message), ``message`` one sentence for a person."""

    check: str
    node_id: str
    message: str


@attrs.frozen
class Addition:
    """A node a check proposes to append: its body and kind. The machine
    gives it its id, its parent (the leaf, or the addition before it), the
    current frame and the time."""

    body: JSON
    kind: NodeKind = NodeKind.MESSAGE


@runtime_checkable
class GraphCheck(Protocol):
    """An invariant over the active path (a sequence of nodes, root first),
    with its repair.

    ``name`` names the check in errors, lifecycle events and on the command
    line. ``problems`` says what is wrong (nothing: the path passes);
    ``repairs`` proposes what to append so that nothing is (nothing when
    there are no problems). Both must be pure and deterministic; see the
    module's rules.
    """

    @property
    def name(self) -> str:
        """The check's name (``"openai-tool-calls"``)."""
        ...

    def problems(self, path: Sequence[SessionNode]) -> tuple[Problem, ...]:
        """What is wrong with ``path``."""
        ...

    def repairs(self, path: Sequence[SessionNode]) -> tuple[Addition, ...]:
        """What to append to ``path`` so that it passes."""
        ...


def addition_nodes(
    additions: Sequence[Addition],
    node_ids: Sequence[str],
    leaf_id: str | None,
    frame_id: str | None,
    now: float,
) -> tuple[SessionNode, ...]:
    """The nodes a :class:`~lash_machine.events.Repair` appends: the
    addition at each place gets the id at the same place of ``node_ids``,
    the first hangs under ``leaf_id``, each next one under the one before,
    all in ``frame_id`` at ``now``."""
    nodes: list[SessionNode] = []
    parent = leaf_id
    for node_id, addition in zip(node_ids, additions, strict=True):
        nodes.append(SessionNode(node_id, parent, addition.kind, addition.body, frame_id, now))
        parent = node_id
    return tuple(nodes)


#: What a repaired call's result says by default.
INTERRUPTED = "the tool call was interrupted before it returned a result"


@attrs.frozen
class _Call:
    call_id: str
    tool: str
    node_id: str


def _text(value: object) -> str | None:
    return value if type(value) is str and value else None


def _unanswered(path: Sequence[SessionNode], pairing: _Pairing) -> list[_Call]:
    """The calls on ``path`` no later result answers, in the order made."""
    open_calls: dict[str, _Call] = {}
    for node in path:
        if node.kind != NodeKind.MESSAGE or not isinstance(node.body, dict):
            continue
        # A message that answers and calls (odd, but possible) answers
        # first: its results cannot be for its own calls.
        for call_id in pairing.answers(node.body):
            open_calls.pop(call_id, None)
        for call_id, tool in pairing.calls(node.body):
            open_calls[call_id] = _Call(call_id, tool, node.node_id)
    return list(open_calls.values())


class _Pairing(Protocol):
    """How one message shape spells calls and their answers."""

    @property
    def name(self) -> str: ...

    def calls(self, message: dict[str, JSON]) -> list[tuple[str, str]]: ...

    def answers(self, message: dict[str, JSON]) -> list[str]: ...


def _problems(path: Sequence[SessionNode], pairing: _Pairing) -> tuple[Problem, ...]:
    return tuple(
        Problem(
            pairing.name,
            call.node_id,
            f"tool call {call.call_id!r}"
            + (f" ({call.tool})" if call.tool else "")
            + f" in node {call.node_id!r} has no result",
        )
        for call in _unanswered(path, pairing)
    )


@attrs.frozen
class OpenAIToolCalls:
    """Tool calls as OpenAI's chat messages spell them: ``tool_calls`` on an
    assistant message, each answered by a ``role: "tool"`` message with its
    ``tool_call_id``. The repair appends, per unanswered call, a tool
    message whose content is ``note``."""

    name: str = "openai-tool-calls"
    note: str = INTERRUPTED

    def calls(self, message: dict[str, JSON]) -> list[tuple[str, str]]:
        """The ``(id, tool name)`` of each call ``message`` makes."""
        if message.get("role") != "assistant" or not isinstance(message.get("tool_calls"), list):
            return []
        found = []
        for call in message["tool_calls"]:
            call_id = _text(call.get("id")) if isinstance(call, dict) else None
            if call_id is None:
                continue
            function = call.get("function")
            tool = _text(function.get("name")) if isinstance(function, dict) else None
            found.append((call_id, tool or ""))
        return found

    def answers(self, message: dict[str, JSON]) -> list[str]:
        """The id of the call ``message`` answers, if it answers one."""
        call_id = _text(message.get("tool_call_id"))
        return [call_id] if message.get("role") == "tool" and call_id is not None else []

    def problems(self, path: Sequence[SessionNode]) -> tuple[Problem, ...]:
        """Each unanswered call on ``path``."""
        return _problems(path, self)

    def repairs(self, path: Sequence[SessionNode]) -> tuple[Addition, ...]:
        """One tool message per unanswered call, in the order of the calls."""
        return tuple(
            Addition({"role": "tool", "tool_call_id": call.call_id, "content": self.note})
            for call in _unanswered(path, self)
        )


@attrs.frozen
class AnthropicToolUse:
    """Tool calls as Anthropic's messages spell them: ``tool_use`` blocks in
    an assistant message's content, answered by ``tool_result`` blocks
    (with the call's id as ``tool_use_id``) in a later message. The repair
    appends one user message with an error result (``is_error``, content
    ``note``) for every unanswered call."""

    name: str = "anthropic-tool-use"
    note: str = INTERRUPTED

    def calls(self, message: dict[str, JSON]) -> list[tuple[str, str]]:
        """The ``(id, tool name)`` of each ``tool_use`` block of ``message``."""
        if message.get("role") != "assistant":
            return []
        return [
            (call_id, _text(block.get("name")) or "")
            for block in _blocks(message, "tool_use")
            if (call_id := _text(block.get("id"))) is not None
        ]

    def answers(self, message: dict[str, JSON]) -> list[str]:
        """The ids the ``tool_result`` blocks of ``message`` answer."""
        return [
            call_id
            for block in _blocks(message, "tool_result")
            if (call_id := _text(block.get("tool_use_id"))) is not None
        ]

    def problems(self, path: Sequence[SessionNode]) -> tuple[Problem, ...]:
        """Each unanswered ``tool_use`` on ``path``."""
        return _problems(path, self)

    def repairs(self, path: Sequence[SessionNode]) -> tuple[Addition, ...]:
        """One user message answering every unanswered call, in order."""
        calls = _unanswered(path, self)
        if not calls:
            return ()
        results: list[JSON] = [
            {
                "type": "tool_result",
                "tool_use_id": call.call_id,
                "content": self.note,
                "is_error": True,
            }
            for call in calls
        ]
        return (Addition({"role": "user", "content": results}),)


def _blocks(message: dict[str, JSON], kind: str) -> list[dict[str, JSON]]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [block for block in content if isinstance(block, dict) and block.get("type") == kind]


#: The OpenAI-shaped tool-call check.
OPENAI_TOOL_CALLS = OpenAIToolCalls()
#: The Anthropic-shaped tool-use check.
ANTHROPIC_TOOL_USE = AnthropicToolUse()

#: The shipped checks by name (what ``lash-machine check --checks`` accepts).
CHECKS: Mapping[str, GraphCheck] = {
    check.name: check for check in (OPENAI_TOOL_CALLS, ANTHROPIC_TOOL_USE)
}


def checks_named(names: str | Sequence[str]) -> tuple[GraphCheck, ...]:
    """The shipped checks for ``names`` (a sequence, or one text with the
    names separated by commas), in order, each once. An unknown or empty
    name raises ``ValueError`` listing the known ones."""
    if isinstance(names, str):
        names = names.split(",")
    chosen: dict[str, GraphCheck] = {}
    for raw in names:
        name = raw.strip()
        if name not in CHECKS:
            known = ", ".join(sorted(CHECKS))
            shown = repr(name) if name else "an empty name"
            raise ValueError(f"no check named {shown}; the checks are: {known}")
        chosen.setdefault(name, CHECKS[name])
    if not chosen:
        raise ValueError("no check named")
    return tuple(chosen.values())
