"""Workload 5, many workers: W processes share S sessions in PostgreSQL,
each looping resume -> append -> park for a fixed time; lost
compare-and-sets are counted and retried, and afterwards every
acknowledged node must be in the store (and nothing else)."""

from __future__ import annotations

import multiprocessing
import os
import random
import time
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from typing import Any

from lash_machine.drivers.blocking import Driver
from lash_machine.errors import HeadRevisionConflict
from lash_machine.model import ParkedSession, Residency
from lash_machine.persisted import FullGraph
from lash_machine.stores.postgres import PostgresStore
from lash_machine.testing.conformance import POLICY, make_commit

from ._common import Config, Goal, Section, median, prose, table
from ._pg import temporary_schema, vacuum_analyze
from ._plots import Panel, save_panels
from .bench_store import node

SESSIONS = 16
START_NODES = 20
RISE = 1.2


@dataclass(frozen=True)
class Job:
    """What one worker process is asked to do."""

    dsn: str
    index: int
    sessions: list[str]
    seconds: float


@dataclass
class Report:
    """What one worker did, sent back to the parent."""

    worker: int
    cycles: int
    conflicts: int
    acked: list[tuple[str, str]]
    started: float
    ended: float


def worker(job: Job, barrier: Barrier) -> Report:
    """One worker process: resume a random session, append one node, park;
    on a lost compare-and-set, drop the edit and start the cycle again."""
    index, sessions = job.index, job.sessions
    rng = random.Random(index)
    store = PostgresStore(job.dsn, min_size=1, max_size=2)
    cycles = conflicts = 0
    acked: list[tuple[str, str]] = []
    with Driver(store) as driver:
        barrier.wait()
        started = time.monotonic()
        while time.monotonic() < started + job.seconds:
            session_id = rng.choice(sessions)
            handle = ParkedSession(session_id, POLICY, None, Residency.ACTIVE_PATH_ONLY)
            while True:
                session = driver.resume(handle)
                # Answer at the same point every time (a regenerate), so each
                # resume reads the same path however many cycles ran before.
                session.branch(f"{session_id}-n{START_NODES - 1}")
                appended = session.append({"role": "assistant", "worker": index, "n": cycles})
                try:
                    session.park()
                except HeadRevisionConflict:
                    conflicts += 1
                    session.close(discard=True)
                    continue
                acked.append((session_id, appended.node_id))
                cycles += 1
                break
        ended = time.monotonic()
    store.close()
    return Report(index, cycles, conflicts, acked, started, ended)


def _child(job: Job, barrier: Barrier, out: Any) -> None:
    out.put(worker(job, barrier))


@dataclass
class Round:
    """One run of W workers."""

    workers: int
    cycles: int
    conflicts: int
    seconds: float
    missing: int
    extra: int

    @property
    def rate(self) -> float:
        return self.cycles / self.seconds


def one_round(dsn: str, store: PostgresStore, count: int, label: str, seconds: float) -> Round:
    sessions = [f"{label}-s{i}" for i in range(SESSIONS)]
    for session_id in sessions:
        chain = [
            node(f"{session_id}-n{i}", f"{session_id}-n{i - 1}" if i else None)
            for i in range(START_NODES)
        ]
        store.commit(make_commit(session_id, None, chain))
    vacuum_analyze(dsn)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(count)
    out = context.Queue()
    processes = [
        context.Process(target=_child, args=(Job(dsn, i, sessions, seconds), barrier, out))
        for i in range(count)
    ]
    for process in processes:
        process.start()
    reports: list[Report] = [out.get(timeout=120 + seconds) for _ in processes]
    for process in processes:
        process.join()
    # Every acknowledged node is stored, and the store holds nothing else.
    acked: dict[str, set[str]] = {s: set() for s in sessions}
    for report in reports:
        for session_id, node_id in report.acked:
            acked[session_id].add(node_id)
    missing = extra = 0
    for session_id in sessions:
        read = store.load_graph(session_id, FullGraph())
        assert read is not None
        stored = {n.node_id for n in read.nodes} - {
            f"{session_id}-n{i}" for i in range(START_NODES)
        }
        missing += len(acked[session_id] - stored)
        extra += len(stored - acked[session_id])
    elapsed = max(r.ended for r in reports) - min(r.started for r in reports)
    return Round(
        count,
        sum(r.cycles for r in reports),
        sum(r.conflicts for r in reports),
        elapsed,
        missing,
        extra,
    )


def _conflict_rate(rounds: list[Round]) -> float:
    return sum(r.conflicts for r in rounds) / max(sum(r.cycles for r in rounds), 1)


def run(config: Config) -> Section:
    counts = config.pick((1, 2, 4, 8), (1, 2))
    seconds = config.pick(3.0, 0.5)
    repeats = config.pick(3, 1)
    section = Section(
        "5. Many workers on PostgreSQL",
        prose(f"""
        W worker processes (spawned; each with its own `PostgresStore` and
        blocking driver) share {SESSIONS} sessions of {START_NODES} nodes.
        Each loops for {seconds:g} s: pick a session at random,
        `driver.resume(handle)` under `ACTIVE_PATH_ONLY`, `session.branch`
        to the session's last start node and `session.append` one node there
        (a regenerated answer, so every resume reads the same
        {START_NODES + 1}-node path however many cycles ran before),
        `session.park()` (a commit). A park that loses the
        compare-and-set raises `HeadRevisionConflict`: the worker counts it,
        closes the session discarding the edit, and retries the cycle from
        the resume. Afterwards every session is read back in full: every
        node whose park succeeded must be there, and no other. Throughput
        is completed cycles per second of wall time; medians of {repeats}
        runs per W. **This machine has {os.cpu_count()} cores**, shared by
        the PostgreSQL server and the W workers, so the database saturates
        early: more workers cannot add CPU.
        """),
    )
    if config.pg_dsn is None:
        section.add("Skipped: no PostgreSQL server.")
        return section
    rounds: dict[int, list[Round]] = {}
    with temporary_schema(config.pg_dsn, "workers") as (_, dsn):
        store = PostgresStore(dsn)
        try:
            for repeat in range(repeats):
                for count in counts:
                    found = one_round(dsn, store, count, f"w{count}r{repeat}", seconds)
                    rounds.setdefault(count, []).append(found)
        finally:
            store.close()

    rate = {w: median([r.rate for r in found]) for w, found in rounds.items()}
    rows = []
    for w, found in rounds.items():
        cycles = sum(r.cycles for r in found)
        conflicts = sum(r.conflicts for r in found)
        rows.append(
            [
                w,
                f"{rate[w]:,.0f}",
                f"{rate[w] / rate[counts[0]]:.2f}x",
                f"{cycles:,}",
                f"{conflicts:,}",
                f"{conflicts / max(cycles, 1):.1%}",
                sum(r.missing for r in found),
                sum(r.extra for r in found),
            ]
        )
    section.add(
        table(
            [
                "workers W>",
                "cycles/s>",
                "vs W=1>",
                "cycles>",
                "conflicts (retried)>",
                "conflicts per cycle>",
                "acked but missing>",
                "stored but not acked>",
            ],
            rows,
        )
    )
    missing = sum(r.missing + r.extra for found in rounds.values() for r in found)
    section.goals.append(
        Goal(
            "nothing acknowledged is missing (and nothing unacknowledged stored)",
            f"{missing} discrepancies",
            "0",
            missing == 0,
            f"{sum(r.cycles for found in rounds.values() for r in found):,} acknowledged parks",
        )
    )
    if len(counts) > 1:
        best = max(rate, key=rate.__getitem__)
        rise = rate[best] / rate[counts[0]]
        last = counts[-1]
        conflicts_last = _conflict_rate(rounds[last])
        section.goals.append(
            Goal(
                "throughput rises with workers until the database saturates: best W vs W=1",
                f"{rise:.2f}x at W={best}",
                f"≥ {RISE}x",
                rise >= RISE,
                f"{os.cpu_count()} cores shared by the server and the workers"
                + (
                    f"; past the peak, W={last} keeps {rate[last] / rate[best]:.2f}x of it,"
                    f" with {conflicts_last:.0%} of its cycles retried after a lost"
                    " compare-and-set"
                    if last != best
                    else ""
                ),
            )
        )
    section.plot = save_panels(
        config.plots / "workers.png",
        f"Many workers on PostgreSQL ({os.cpu_count()} cores): medians, same run",
        [
            Panel(
                "throughput ÷ throughput with one worker",
                [f"W={w}" for w in counts],
                {"cycles per second": [rate[w] / rate[counts[0]] for w in counts]},
                ylabel="ratio to W=1",
            ),
            Panel(
                "lost compare-and-sets per completed cycle",
                [f"W={w}" for w in counts],
                {
                    "conflicts ÷ cycles": [
                        sum(r.conflicts for r in rounds[w])
                        / max(sum(r.cycles for r in rounds[w]), 1)
                        for w in counts
                    ]
                },
                ylabel="ratio",
            ),
        ],
    )
    return section
