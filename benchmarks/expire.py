"""Workload 7, expire: ``store.expire`` over 100,000 idle sessions, its total
time and its longest write transaction, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

from lash_machine.persisted import ExpireReport
from lash_machine.testing.records import make_commit

from ._backends import Backend, open_backends
from ._common import Config, Goal, Section, fmt_time, median, profile, prose, table
from .bench_store import node, table_columns

#: Nodes per session: a five-turn conversation.
NODES = 10
LONGEST_GOAL = 0.100  # seconds: no write transaction over 100 ms (issue 14)
TEMPLATE = "template"


def build(backend: Backend, sessions: int) -> None:
    """One session of NODES nodes through the store, copied in SQL into
    ``sessions`` sessions (``idle-000001``...), each last written long ago,
    one second apart (so the idle index orders them)."""
    backend.store.purge_deleted(time.time() + 1.0)  # a run before may have used the ids
    chain = [node(f"n{i}", f"n{i - 1}" if i else None) for i in range(NODES)]
    backend.store.commit(make_commit(TEMPLATE, None, chain))
    conn, mark = backend.raw.conn, backend.mark
    if mark == "?":
        series = (
            "WITH RECURSIVE series(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM series"
            f" WHERE i < {sessions})"
        )
        new_id = "printf('idle-%06d', series.i)"
    else:
        series = f"WITH series(i) AS (SELECT generate_series(1, {sessions}))"
        new_id = "'idle-' || lpad(series.i::text, 6, '0')"
    for table_name, replaced in (
        ("lash_sessions", {"session_id": new_id, "updated_at": "1000.0 + series.i"}),
        ("lash_nodes", {"session_id": new_id}),
    ):
        names = table_columns(conn, mark, table_name)
        chosen = ", ".join(replaced.get(name, f"t.{name}") for name in names)
        conn.execute(
            f"INSERT INTO {table_name} ({', '.join(names)}) {series}"
            f" SELECT {chosen} FROM {table_name} AS t CROSS JOIN series"
            f" WHERE t.session_id = {mark}",
            (TEMPLATE,),
        )
    if mark == "%s":
        conn.commit()
    backend.store.delete_session(TEMPLATE)


def measure(backend: Backend, sessions: int) -> tuple[float, ExpireReport, list[float]]:
    """Expire every idle session: total seconds, the store's report, and the
    time between consecutive progress reports (one per batch: its write
    transaction and its report, nothing else)."""
    gaps: list[float] = []
    last = time.perf_counter()

    def progress(_: ExpireReport) -> None:
        nonlocal last
        now = time.perf_counter()
        gaps.append(now - last)
        last = now

    start = last = time.perf_counter()
    report = backend.store.expire(3600.0, progress=progress)
    total = time.perf_counter() - start
    assert len(report.expired) == sessions, (len(report.expired), sessions)
    assert report.nodes_removed == sessions * NODES
    assert not backend.store.list_sessions()
    return total, report, gaps


def run(config: Config) -> Section:
    sessions = config.pick(100_000, 2_000)
    section = Section(
        "7. Expire: 100,000 idle sessions",
        prose(f"""
        {sessions:,} sessions of {NODES} nodes each (one written through
        the store, copied in SQL), all idle, are expired with
        `store.expire(idle_for=3600)` (default batch size: each write
        transaction deletes at most 200 sessions with their nodes and
        leaves their deletion markers). **Total**: the whole call.
        **Longest write transaction**: what the store reports
        (`ExpireReport.longest_batch`, the longest batch from its `BEGIN` to
        its commit); beside it the time between consecutive `progress`
        reports (one per batch), which also covers the report itself.
        SQLite `synchronous={config.synchronous}` (WAL), PostgreSQL
        `fsync=on`: every batch's commit is durable. One run per database.
        """),
    )
    rows: list[list[Any]] = []
    with open_backends(config, "expire") as backends:
        for backend in backends:
            build(backend, sessions)
            backend.settle()
            total, report, gaps = measure(backend, sessions)
            rows.append(
                [
                    backend.name,
                    f"{sessions:,}",
                    f"{len(gaps):,}",
                    fmt_time(total),
                    fmt_time(total / sessions),
                    f"**{fmt_time(report.longest_batch)}**",
                    fmt_time(median(gaps)),
                    fmt_time(max(gaps)),
                ]
            )
            met = report.longest_batch <= LONGEST_GOAL
            section.goals.append(
                Goal(
                    f"{backend.name}: longest write transaction of `expire` over"
                    f" {sessions:,} sessions",
                    fmt_time(report.longest_batch),
                    f"≤ {fmt_time(LONGEST_GOAL)}",
                    met,
                    f"total {fmt_time(total)}; median batch {fmt_time(median(gaps))}",
                )
            )
            if not met:
                # A smaller copy: the profile shows where a batch's time goes.
                build(backend, 2_000)
                section.add(
                    f"**Missed** ({backend.name}): cProfile of `expire` over 2,000 sessions:",
                    profile(lambda b=backend: b.store.expire(3600.0), 1),
                )
    section.body.insert(
        0,
        table(
            [
                "database",
                "sessions>",
                "batches>",
                "total>",
                "per session>",
                "longest transaction (store)>",
                "median batch>",
                "longest batch (between reports)>",
            ],
            rows,
        ),
    )
    return section
