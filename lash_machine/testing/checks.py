"""The rules of a content check as a plain checker, to run on your own
checks and your own session data (beside :mod:`.healing` for the graph).

>>> from lash_machine.checks import OPENAI_TOOL_CALLS
>>> from lash_machine.testing.checks import check_repairs
>>> repaired = check_repairs(OPENAI_TOOL_CALLS, [])

:func:`check_repairs` raises ``AssertionError`` naming the first rule that
fails. Feed it active paths from your store
(``SessionGraph.from_nodes(...).active_path()``), or the strategies of
:mod:`lash_machine.testing.messages` under hypothesis.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

from ..checks import Addition, GraphCheck, addition_nodes
from ..content import node_problem
from ..model import SessionNode

__all__ = ["check_repairs"]


def check_repairs(check: GraphCheck, path: Sequence[SessionNode]) -> tuple[SessionNode, ...]:
    """Assert the rules of :mod:`lash_machine.checks` for ``check`` on
    ``path`` (an active path, root first) and return the repaired path.

    * repairs only append: ``repairs`` returns additions and leaves the
      path (its nodes and their bodies) exactly as it was;
    * a problem is proposed a repair, and a path without problems none;
    * the additions are storable nodes (JSON bodies, known kinds);
    * a repaired path passes: the path with the additions appended, as
      the machine appends them, has no problems;
    * repairing twice changes nothing: the repaired path gets no additions;
    * the check is deterministic: asked twice, it answers the same.
    """
    path = tuple(path)
    before = copy.deepcopy(path)
    problems = check.problems(path)
    additions = check.repairs(path)
    assert path == before, f"{check.name}: looking at the path changed it (a body was mutated)"
    assert isinstance(additions, tuple) and all(isinstance(a, Addition) for a in additions), (
        f"{check.name}: repairs() must return a tuple of Additions, got {additions!r}"
    )
    assert check.problems(path) == problems and check.repairs(path) == additions, (
        f"{check.name}: asked twice about the same path, the check answered differently"
    )
    if problems:
        assert additions, f"{check.name}: problems {problems} but no repair proposed"
    else:
        assert not additions, f"{check.name}: a path without problems was proposed {additions}"
    leaf = path[-1].node_id if path else None
    taken = {node.node_id for node in path}
    node_ids = [f"repair-{i}" for i in range(len(additions) + len(taken))]
    node_ids = [node_id for node_id in node_ids if node_id not in taken][: len(additions)]
    frame_id = path[-1].frame_id if path else None
    now = path[-1].created_at if path else 0.0
    added = addition_nodes(additions, node_ids, leaf, frame_id, now)
    for node in added:
        problem = node_problem(node)
        assert problem is None, f"{check.name}: a proposed node cannot be stored: {problem}"
    repaired = path + added
    left = check.problems(repaired)
    assert not left, f"{check.name}: the repaired path still has problems: {left}"
    again = check.repairs(repaired)
    assert not again, f"{check.name}: repairing twice appended more: {again}"
    return repaired
