"""Workload 6, memory: bytes per parked handle, and the resident memory of
one open session under each residency (tracemalloc)."""

from __future__ import annotations

import gc
import sys
import tracemalloc
import uuid
from collections.abc import Callable
from typing import TypeVar

from lash_machine import effects as fx
from lash_machine import step, wire
from lash_machine.drivers.blocking import Driver, Session
from lash_machine.events import Append, Committed, GraphLoaded, Open, Park
from lash_machine.model import NodeKind, ParkedSession, Residency, SessionNode
from lash_machine.state import MachineState
from lash_machine.stores.sqlite import SQLiteStore
from lash_machine.testing.records import POLICY

from ._common import Config, Goal, Section, fmt_bytes, prose, table
from ._plots import Panel, save_panels
from .bench_store import PATH_LENGTH, build_path_session

T = TypeVar("T")

#: Off-path nodes per path node: a 10k-node session, 99% off its active path.
OFF_PER_PATH_NODE = 99


def retained(build: Callable[[], T]) -> tuple[T, int]:
    """What ``build`` returns, and the bytes still allocated because of it
    once everything else it made is garbage."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        value = build()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return value, after - before


def park_in_memory(session_id: str) -> ParkedSession:
    """A real parked handle, straight from the reducer: open a new session,
    append a node, park, with the store's answers fed in by hand."""
    state, out = step(
        MachineState.initial(),
        Open(POLICY, 0.0, session_id, residency=Residency.ACTIVE_PATH_ONLY),
    )
    load = next(e for e in out if isinstance(e, fx.LoadGraph))
    state, _ = step(state, GraphLoaded(load.request_id, None))
    first = SessionNode(uuid.uuid4().hex, None, NodeKind.MESSAGE, {"role": "user"}, None, 0.0)
    state, _ = step(state, Append((first,)))
    state, out = step(state, Park())
    commit = next(e for e in out if isinstance(e, fx.Commit))
    state, _ = step(state, Committed(commit.request_id, 1))
    assert state.parked is not None
    return state.parked


def handle_bytes(count: int) -> float:
    """Bytes one parked handle keeps allocated, over ``count`` handles."""
    ids = [uuid.uuid4().hex for _ in range(count)]
    slots: list[ParkedSession | None] = [None] * count  # the list is not the handles' cost

    def fill() -> None:
        for i, session_id in enumerate(ids):
            slots[i] = park_in_memory(session_id)

    _, used = retained(fill)
    assert all(handle is not None and handle.session_id is ids[i] for i, handle in enumerate(slots))
    # Each handle holds its id string, made before measuring: count it too.
    return (used + sum(sys.getsizeof(session_id) for session_id in ids)) / count


def open_session(driver: Driver, session_id: str, residency: Residency) -> tuple[Session, int]:
    return retained(lambda: driver.open(POLICY, session_id, residency=residency))


def run(config: Config) -> Section:
    count = config.pick(10_000, 2_000)
    off = config.pick(OFF_PER_PATH_NODE, 9)
    section = Section(
        "6. Memory: parked handles and resident sessions",
        prose(f"""
        **Parked handles**: {count:,} sessions (uuid4 ids, as the drivers
        make) are opened, given a node, parked and committed straight
        through the reducer (the store's answers fed in by hand), keeping
        only the `ParkedSession` handles; tracemalloc counts what stays
        allocated after a garbage collection, plus the id strings. The
        policy object is the caller's and shared by every handle, as it is
        when one server opens every session with its policy. **Resident
        session**: a session of {PATH_LENGTH:,} path nodes with {off} nodes
        off the path after each ({PATH_LENGTH * (off + 1):,} nodes, {off / (off + 1):.0%}
        off the path) is opened from SQLite through the blocking driver
        under each residency; tracemalloc counts what the open session
        holds (after one untimed open, so connection caches are warm).
        """),
    )
    per_handle = handle_bytes(count)
    sample = park_in_memory(uuid.uuid4().hex)
    wire_bytes = len(wire.dumps(sample).encode())

    store = SQLiteStore(config.tmp / "memory.db", synchronous=config.synchronous)
    resident: dict[Residency, tuple[int, int]] = {}
    try:
        build_path_session(store, "memory", off)
        with Driver(store) as driver:
            for residency in (Residency.KEEP_ALL, Residency.ACTIVE_PATH_ONLY):
                driver.open(POLICY, "memory", residency=residency).close()  # warm up
                session, used = open_session(driver, "memory", residency)
                assert session.state is not None
                resident[residency] = (used, len(session.state.graph))
                session.close()
    finally:
        store.close()

    keep_all, path_only = resident[Residency.KEEP_ALL], resident[Residency.ACTIVE_PATH_ONLY]
    section.add(
        table(
            ["what", "bytes>", "per node>", "nodes resident>"],
            [
                ["one parked handle (tracemalloc)", f"{per_handle:,.0f} B", "", ""],
                ["one parked handle, as wire JSON", f"{wire_bytes:,} B", "", ""],
                *(
                    [
                        f"open session, `{residency.name}`",
                        fmt_bytes(used),
                        f"{used / nodes:,.0f} B",
                        f"{nodes:,}",
                    ]
                    for residency, (used, nodes) in resident.items()
                ),
            ],
        )
    )
    ratio = path_only[0] / keep_all[0]
    section.goals.append(
        Goal(
            f"resident memory, `ACTIVE_PATH_ONLY` ÷ `KEEP_ALL` ({off / (off + 1):.0%} off path)",
            f"{ratio:.3f}x",
            f"≈ the path's share ({PATH_LENGTH / (PATH_LENGTH * (off + 1)):.3f}x)",
            ratio <= 2 * PATH_LENGTH / (PATH_LENGTH * (off + 1)),
            f"{fmt_bytes(keep_all[0])} vs {fmt_bytes(path_only[0])}",
        )
    )
    section.plot = save_panels(
        config.plots / "memory.png",
        "Memory: ratios measured in the same run (tracemalloc)",
        [
            Panel(
                "open session: resident bytes ÷ KEEP_ALL's",
                ["KEEP_ALL", "ACTIVE_PATH_ONLY"],
                {"bytes": [1.0, ratio], "nodes": [1.0, path_only[1] / keep_all[1]]},
                ylabel="ratio (log)",
                log=True,
            ),
            Panel(
                "bytes per resident node ÷ KEEP_ALL's",
                ["KEEP_ALL", "ACTIVE_PATH_ONLY"],
                {
                    "bytes per node": [
                        1.0,
                        (path_only[0] / path_only[1]) / (keep_all[0] / keep_all[1]),
                    ]
                },
                ylabel="ratio",
            ),
        ],
    )
    return section
