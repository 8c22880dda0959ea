"""Pins, session copies and warm resumes through every driver, on real
stores, including what another process does between a park and a resume."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_drivers_support import DRIVERS, POLICY, STORES, StoreFactory, run_scenario
from test_drivers_support import Probe as Counting
from test_drivers_support import store_factory as _store_factory

from lash_machine import (
    HeadRevisionConflict,
    InvalidEvent,
    ParentTombstoned,
    Residency,
    SessionDeleted,
)
from lash_machine.drivers import blocking as blocking_driver
from lash_machine.persisted import FullGraph, Origin
from lash_machine.stores import SQLiteStore


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from _store_factory(request, tmp_path)


# ---- pins ---------------------------------------------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_pinned_branch_outlives_tombstone_orphans(driver: str, open_store: StoreFactory) -> None:
    store = open_store()

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY)
        root = await session.append({"n": "root"})
        await session.append({"n": "answer"})
        await session.branch(root.node_id)
        draft = await session.append({"n": "draft"})
        kept = await session.append({"n": "kept"})
        await session.branch(root.node_id)
        await session.append({"n": "again"})
        await session.pin(kept.node_id)
        await session.save()
        stored = store.load_graph(session.session_id, FullGraph())
        assert stored is not None and stored.pinned == (kept.node_id,)
        # The answer is hidden; the pinned node and its parent stay.
        assert await session.tombstone_orphans() == 1
        assert store.load_node(session.session_id, draft.node_id) is not None
        await session.unpin(kept.node_id)
        await session.save()
        assert await session.tombstone_orphans() == 2
        assert store.load_node(session.session_id, kept.node_id) is None

    run_scenario(driver, scenario, store)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_pin_of_a_node_the_store_lacks_is_refused(driver: str, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY)
        await session.append({"n": 1})
        with pytest.raises(InvalidEvent, match="no node"):
            await session.pin("never-stored")  # KEEP_ALL knows every node
        parked = await session.park()
        lean = await one.resume(parked, residency=Residency.ACTIVE_PATH_ONLY)
        await lean.pin("never-stored")  # not resident: the store decides
        with pytest.raises(ParentTombstoned):
            await lean.save()
        await lean.unpin("never-stored")
        await lean.save()

    try:
        run_scenario(driver, scenario, store)
    finally:
        store.close()


# ---- copies -------------------------------------------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
def test_a_fork_is_a_session_of_its_own(driver: str, open_store: StoreFactory) -> None:
    store = open_store()

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY)
        first = await session.append({"n": 1})
        second = await session.append({"n": 2})
        await session.append({"n": 3})
        await session.save()
        handle = await session.fork(second.node_id)
        assert handle.head_revision == 1 and handle.session_id != session.session_id
        copy = await one.resume(handle)
        assert copy.view.leaf_id == second.node_id
        assert [n.node_id for n in copy.state.graph] == [first.node_id, second.node_id]
        stored = store.load_graph(handle.session_id, FullGraph())
        assert stored is not None and stored.origin == Origin(session.session_id, second.node_id)
        await copy.append({"n": "only in the copy"})
        await copy.save()
        assert len(session.state.graph) == 3  # the source is untouched
        # The leaf by default; it must be committed, and the new id free.
        await session.append({"n": "unsaved"})
        with pytest.raises(InvalidEvent, match="save first"):
            await session.fork()
        await session.save()
        with pytest.raises(HeadRevisionConflict):
            await session.fork(new_session_id=handle.session_id)
        name = f"copy-of-{session.session_id}"
        named = await session.fork(new_session_id=name)
        assert named.session_id == name

    run_scenario(driver, scenario, store)


# ---- warm resumes ----------------------------------------------------------------------


@pytest.mark.parametrize("open_store", STORES, indirect=True)
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("residency", list(Residency))
def test_a_warm_resume_reads_one_small_row(
    driver: str, open_store: StoreFactory, residency: Residency
) -> None:
    counting = Counting(open_store())

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, residency=residency)
        for n in range(5):
            await session.append({"n": n})
        parked = await session.park()
        kept = session._core.warm_for(parked.session_id).session  # type: ignore[union-attr]
        counting.calls.clear()
        again = await one.resume(parked)
        assert counting.calls == {"session_stamp": 1}
        assert again.state.graph == kept.graph and again.view.head_revision == parked.head_revision
        await again.append({"n": 5})
        parked = await again.park()
        counting.calls.clear()
        lean = await one.resume(parked, residency=Residency.ACTIVE_PATH_ONLY)
        assert counting.calls == {"session_stamp": 1}
        assert len(lean.state.graph) == 6

    run_scenario(driver, scenario, counting)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_copy_kept_under_active_path_only_never_resumes_keep_all(
    driver: str, tmp_path: Path
) -> None:
    counting = Counting(SQLiteStore(tmp_path / "s.db"))

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, residency=Residency.ACTIVE_PATH_ONLY)
        root = await session.append({"n": 0})
        await session.append({"n": 1})
        await session.branch(root.node_id)
        await session.append({"n": 2})
        parked = await session.park()
        counting.calls.clear()
        full = await one.resume(parked, residency=Residency.KEEP_ALL)
        assert "load_graph" in counting.calls  # the kept copy lacks the orphan
        assert len(full.state.graph) == 3

    try:
        run_scenario(driver, scenario, counting)
    finally:
        counting.inner.close()


def _elsewhere(db: Path, script: str) -> None:
    """Run ``script`` in another process against the same SQLite file."""
    code = textwrap.dedent(
        f"""
        from lash_machine.persisted import FullGraph
        from lash_machine.stores import SQLiteStore
        from lash_machine.testing.records import make_commit, make_node
        store = SQLiteStore({str(db)!r})
        """
    ) + textwrap.dedent(script)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_a_warm_resume_never_returns_stale_nodes(tmp_path: Path) -> None:
    """Between a park and a resume another process commits, prunes,
    deletes, and makes the session again under its id: every resume sees
    the store's state, never the copy the driver kept."""
    db = tmp_path / "s.db"
    store = SQLiteStore(db)
    counting = Counting(store)
    with blocking_driver.Driver(counting) as driver:
        session = driver.open(POLICY, "s")
        root = session.append({"n": "root"})
        session.append({"n": "old answer"})
        session.branch(root.node_id)
        session.append({"n": "new answer"})
        parked = session.park()

        # Another writer commits: the head moved.
        _elsewhere(
            db,
            """
            leaf = store.load_graph('s', FullGraph()).leaf_id
            store.commit(make_commit('s', 1, [make_node('theirs', leaf)]))
            """,
        )
        resumed = driver.resume(parked)
        assert "theirs" in resumed.state.graph
        parked = resumed.park()

        # An operator prunes the orphan: the generation moved, not the head.
        _elsewhere(
            db,
            """
            graph = store.load_graph('s', FullGraph())
            on_path = set()
            current = graph.leaf_id
            parents = {n.node_id: n.parent_id for n in graph.nodes}
            while current is not None:
                on_path.add(current)
                current = parents[current]
            print(store.tombstone_nodes('s', [n.node_id for n in graph.nodes
                                              if n.node_id not in on_path]))
            """,
        )
        counting.calls.clear()
        resumed = driver.resume(parked)
        assert counting.calls.get("load_graph") == 1
        assert len(resumed.state.graph) == 3  # the pruned answer is gone from memory too
        parked = resumed.park()

        # Deleted, then purged and made again at the same head revision.
        _elsewhere(db, "store.delete_session('s')")
        with pytest.raises(SessionDeleted):
            driver.resume(parked)
        _elsewhere(
            db,
            f"""
            store.purge_deleted(float('inf'))
            for head in range({parked.head_revision}):
                store.commit(make_commit('s', head or None, [make_node(f'x{{head}}',
                             f'x{{head - 1}}' if head else None)]))
            """,
        )
        resumed = driver.resume(parked)
        assert resumed.view.head_revision == parked.head_revision
        assert next(iter(resumed.state.graph)).node_id == "x0"  # the new session's nodes
    store.close()
