"""Bugs the whole-stack model test (tests/test_stack_stateful.py) found,
each pinned down by the smallest case that shows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from machine_helpers import POLICY

from lash_machine.cli import main
from lash_machine.drivers.blocking import Driver
from lash_machine.errors import InvalidEvent
from lash_machine.persisted import FullGraph
from lash_machine.stores import SQLiteStore


def test_prune_leaves_pinned_orphans_and_hides_the_rest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A compaction pins the path it replaced, which is then off the active
    # path: prune asked the store to hide it with the rest, the store
    # refused the lot, and prune said "changed while pruning" every time.
    path = tmp_path / "s.db"
    with Driver(SQLiteStore(path)) as driver:
        session = driver.open(POLICY, "s")
        first = session.append({"n": 1})
        second = session.append({"n": 2})
        session.branch(first.node_id)
        side = session.append({"n": 3})
        session.branch(second.node_id)
        session.compact(first.node_id, "the first message")  # pins it
        session.park()
    # Orphans now: the pinned first node (which stays) and the side branch.
    assert main(["prune", "s", "--db", str(path)]) == 0, capsys.readouterr().err
    assert "tombstoned 1 orphan" in capsys.readouterr().out
    store = SQLiteStore(path)
    assert store.load_node("s", first.node_id) is not None
    assert store.load_node("s", side.node_id) is None
    store.close()


def test_a_compaction_pin_is_taken_back_by_uncompact_only(tmp_path: Path) -> None:
    # Unpinning what a compaction replaced left the summary on the active
    # path with nothing keeping its history: prune could hide it, and
    # uncompact had nothing to go back to.
    with Driver(SQLiteStore(tmp_path / "s.db")) as driver:
        session = driver.open(POLICY, "s")
        first = session.append({"n": 1})
        session.append({"n": 2})
        summary = session.compact(first.node_id, "the first message")
        with pytest.raises(InvalidEvent, match=r"kept by compaction .*: uncompact it instead"):
            session.unpin(first.node_id)
        session.save()
        session.uncompact(summary.node_id)
        session.unpin(first.node_id)  # undone: the pin is an ordinary one again
        session.save()
        assert driver.store is not None
        stored = driver.store.load_graph("s", FullGraph())
        assert stored is not None and stored.pinned == ()
