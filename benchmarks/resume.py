"""Workload 3, resume: a parked session whose 100-node active path has 0%,
90% or 99% of the session's nodes off it, resumed cold under ``KEEP_ALL``
and ``ACTIVE_PATH_ONLY``, beside the raw recursive path query and the raw
full read (each decoding every body); and a session that grows 100x on a
fresh PostgreSQL table that was never analyzed."""

from __future__ import annotations

import contextlib
import json
from typing import Any

from lash_machine.drivers.blocking import Driver, Session
from lash_machine.model import Residency
from lash_machine.persisted import ActivePath
from lash_machine.stores.base import SessionStore
from lash_machine.testing.records import POLICY, make_commit

from ._backends import Backend, open_backends
from ._common import Config, Goal, Section, fmt_time, median, profile, prose, samples, table
from ._pg import temporary_schema
from ._plots import Panel, save_panels
from .bench_store import PATH_LENGTH, build_path_session, node

#: Off-path nodes per path node: 0%, 90% and 99% of the session off the path.
OFF_PER_PATH_NODE = (0, 9, 99)
#: A quick run stops at 90%: enough to smoke every step.
QUICK_OFF_PER_PATH_NODE = (0, 9)
FLAT = 1.5
METHODS = ("KEEP_ALL", "ACTIVE_PATH_ONLY", "raw path query", "raw full read")


def share(off: int) -> str:
    return f"{off / (off + 1):.0%} off path"


def decoded(rows: list[Any]) -> list[Any]:
    """The raw rows' bodies decoded: the least any reader of them does."""
    return [json.loads(row[5]) for row in rows]


def measure(backend: Backend, driver: Driver, off: int, repeats: int) -> list[float]:
    """Median seconds of each of :data:`METHODS` on one session."""
    return measure_session(backend.raw, driver, f"path-{off}", repeats)


def measure_session(raw: Any, driver: Driver, sid: str, repeats: int) -> list[float]:
    """Median seconds of each of :data:`METHODS` on the session ``sid``
    (whose stored leaf ends the 100-node path)."""
    parked = driver.open(POLICY, sid).park()
    leaf = f"p{PATH_LENGTH - 1}"
    opened: list[Session] = []

    def close_opened(_: object) -> None:
        while opened:
            opened.pop().close()

    def resume(residency: Residency) -> None:
        opened.append(driver.resume(parked, residency=residency))

    check = driver.resume(parked, residency=Residency.ACTIVE_PATH_ONLY)
    assert check.state is not None and len(check.state.graph) == PATH_LENGTH
    check.close()
    assert len(decoded(raw.load_path(sid, leaf))) == PATH_LENGTH
    # Each residency beside its own floor: a full read between two path
    # reads would evict the pages those share with each other.
    full, all_rows = samples(
        [lambda: resume(Residency.KEEP_ALL), lambda: decoded(raw.load_all(sid))],
        repeats,
        warmup=3,
        before=close_opened,
        collect=True,
    )
    path, path_rows = samples(
        [
            lambda: resume(Residency.ACTIVE_PATH_ONLY),
            lambda: decoded(raw.load_path(sid, leaf)),
        ],
        repeats,
        warmup=3,
        before=close_opened,
        collect=True,
    )
    # The two residencies head to head, for "never slower than KEEP_ALL".
    both = samples(
        [lambda: resume(Residency.KEEP_ALL), lambda: resume(Residency.ACTIVE_PATH_ONLY)],
        repeats,
        warmup=3,
        before=close_opened,
        collect=True,
    )
    close_opened(0)
    return [median(t) for t in (full, path, path_rows, all_rows, *both)]


def grow_off_path(store: SessionStore, sid: str, off_per_path_node: int) -> None:
    """Hang ``off_per_path_node`` nodes of side branches off each node of the
    session's path, in commits that keep its stored leaf."""
    stored = store.load_graph(sid, ActivePath())
    assert stored is not None
    head = stored.head_revision
    leaf = f"p{PATH_LENGTH - 1}"
    nodes = []
    for i in range(PATH_LENGTH):
        parent = f"p{i}"
        for j in range(off_per_path_node):
            nodes.append(node(f"g{i}.{j}", parent))
            parent = f"g{i}.{j}"
        if len(nodes) >= 2000 or i == PATH_LENGTH - 1:
            head = store.commit(make_commit(sid, head, nodes, leaf_id=leaf))
            nodes = []


def grown_on_fresh_table(server: str, repeats: int, off: int) -> tuple[list[float], list[float]]:
    """A 100-node session on a new, never analyzed PostgreSQL table,
    measured; then grown 100x (99% off path) and measured again, still
    without ``ANALYZE``: the planner has only its default guesses."""
    from lash_machine.stores.postgres import PostgresStore

    from .bench_store import RawPostgres

    with contextlib.ExitStack() as stack:
        _, dsn = stack.enter_context(temporary_schema(server, "grown"))
        store = PostgresStore(dsn)
        stack.callback(store.close)
        raw = RawPostgres(dsn)
        stack.callback(raw.close)
        build_path_session(store, "grown", 0)
        driver = stack.enter_context(Driver(store, warm_cache=0))
        small = measure_session(raw, driver, "grown", repeats)
        grow_off_path(store, "grown", off)
        return small, measure_session(raw, driver, "grown", repeats)


def _resume_profile(store: SessionStore, sid: str, residency: Residency) -> str:
    with Driver(store, warm_cache=0) as driver:
        parked = driver.open(POLICY, sid).park()
        return profile(lambda: driver.resume(parked, residency=residency).close(), 30)


def run(config: Config) -> Section:
    repeats = config.pick(60, 4)
    offs = config.pick(OFF_PER_PATH_NODE, QUICK_OFF_PER_PATH_NODE)
    section = Section(
        "3. Resume: `KEEP_ALL` vs `ACTIVE_PATH_ONLY` as off-path nodes grow",
        prose(f"""
        A session with a {PATH_LENGTH}-node active path; after each path node
        a side branch of 0, 9 or 99 nodes (so 0%, 90% or 99% of the session
        is off the path: {PATH_LENGTH:,}, {PATH_LENGTH * 10:,} and
        {PATH_LENGTH * 100:,} nodes). It is parked once, then resumed cold
        through a blocking driver without a warm cache
        (`Driver(store, warm_cache=0)`; `driver.resume(parked,
        residency=...)`: the store read plus building, healing and trimming
        the state) under each residency; beside it the raw driver runs the
        recursive path query (the floor for `ACTIVE_PATH_ONLY`) and a plain
        read of every node (the floor for `KEEP_ALL`), each with a
        `json.loads` of every body. Rotated order, medians of {repeats}
        rounds; the two residencies are also timed head to head (for the
        "never slower" goal). **Grown on a fresh table** (PostgreSQL): a
        new schema whose tables were never analyzed (autovacuum is off) gets
        the 100-node session, measured; then 99 off-path nodes per path node
        (100x the rows, the stored leaf unchanged), measured again with no
        `ANALYZE` in between, so the planner works from its defaults.
        """),
    )
    found: dict[tuple[str, int], list[float]] = {}
    grown: tuple[list[float], list[float]] | None = None
    with open_backends(config, "resume") as backends:
        for backend in backends:
            for off in offs:
                build_path_session(backend.store, f"path-{off}", off)
            backend.settle()
            with Driver(backend.store, warm_cache=0) as driver:
                for off in offs:
                    found[backend.name, off] = measure(backend, driver, off, repeats)
        if config.pg_dsn is not None:
            grown = grown_on_fresh_table(config.pg_dsn, repeats, offs[-1])
        names = [b.name for b in backends]
        first, last = offs[0], offs[-1]
        for backend in backends:
            name = backend.name
            growth = found[name, last][1] / found[name, first][1]
            raw_growth = found[name, last][2] / found[name, first][2]
            section.goals.append(
                Goal(
                    f"{name}: `ACTIVE_PATH_ONLY` resume, {share(last)} vs 0% off path"
                    f" ({last + 1}x the nodes)",
                    f"{growth:.2f}x",
                    f"≤ {FLAT}x",
                    growth <= FLAT,
                    f"the raw path query: {raw_growth:.2f}x",
                )
            )
            if growth > FLAT:
                section.add(
                    f"**Profile** ({name}, {share(last)}, `ACTIVE_PATH_ONLY` resume):",
                    _resume_profile(backend.store, f"path-{last}", Residency.ACTIVE_PATH_ONLY),
                )
            keep_all, path_only = found[name, first][4:6]
            versus = path_only / keep_all
            section.goals.append(
                Goal(
                    f"{name}: `ACTIVE_PATH_ONLY` ÷ `KEEP_ALL` resume at 0% off path",
                    f"{versus:.2f}x",
                    "≤ 1x (never slower)",
                    round(versus, 2) <= 1.0,
                    f"{fmt_time(path_only)} vs {fmt_time(keep_all)}, head to head",
                )
            )
            if round(versus, 2) > 1.0:
                section.add(
                    f"**Profile** ({name}, 0% off path, `ACTIVE_PATH_ONLY` resume):",
                    _resume_profile(backend.store, f"path-{first}", Residency.ACTIVE_PATH_ONLY),
                    f"**Profile** ({name}, 0% off path, `KEEP_ALL` resume):",
                    _resume_profile(backend.store, f"path-{first}", Residency.KEEP_ALL),
                )
        if grown is not None:
            small, big = grown
            growth = big[1] / small[1]
            section.goals.append(
                Goal(
                    "PostgreSQL, grown on a fresh table (no `ANALYZE`): `ACTIVE_PATH_ONLY`"
                    f" resume, {share(last)} vs 0% off path",
                    f"{growth:.2f}x",
                    f"≤ {FLAT}x",
                    growth <= FLAT,
                    f"{fmt_time(big[1])} vs {fmt_time(small[1])}; the raw path query:"
                    f" {big[2] / small[2]:.2f}x",
                )
            )
            if growth > FLAT:
                pg = next(b for b in backends if b.name == "PostgreSQL")
                section.add(
                    "**Profile** (PostgreSQL, the session grown on a fresh table: the"
                    " most-off-path session of the analyzed table stands in, as the fresh"
                    " schema is gone):",
                    _resume_profile(pg.store, f"path-{last}", Residency.ACTIVE_PATH_ONLY),
                )

    rows = []
    for (name, off), times in found.items():
        base = found[name, offs[0]]
        rows.append(
            [
                name,
                share(off),
                f"{PATH_LENGTH * (off + 1):,}",
                *(
                    f"{fmt_time(t)} ({t / b:.2f}x)"
                    for t, b in zip(times[:4], base[:4], strict=True)
                ),
                f"{times[1] / times[2]:.2f}x",
            ]
        )
    if grown is not None:
        for label, times in zip(("0% off path", f"{share(offs[-1])}, grown"), grown, strict=True):
            base = grown[0]
            rows.append(
                [
                    "PostgreSQL, fresh table (no `ANALYZE`)",
                    label,
                    f"{PATH_LENGTH * (1 if times is base else offs[-1] + 1):,}",
                    *(
                        f"{fmt_time(t)} ({t / b:.2f}x)"
                        for t, b in zip(times[:4], base[:4], strict=True)
                    ),
                    f"{times[1] / times[2]:.2f}x",
                ]
            )
    section.add(
        "Each cell: median time (and its ratio to the same method at 0% off path).",
        table(
            [
                "database",
                "case",
                "nodes>",
                "resume KEEP_ALL>",
                "resume ACTIVE_PATH_ONLY>",
                "raw path query + decode>",
                "raw full read + decode>",
                "ACTIVE_PATH_ONLY ÷ raw path>",
            ],
            rows,
        ),
    )
    groups = [share(off) for off in offs]
    panels = []
    for name in names:
        base = found[name, offs[0]]
        panels.append(
            Panel(
                f"{name}: resume time ÷ time at 0% off path",
                groups,
                {
                    method: [found[name, off][i] / base[i] for off in offs]
                    for i, method in enumerate(METHODS)
                },
                ylabel="ratio to the 0%-off-path time (log)",
                goal=FLAT,
                goal_label=f"ACTIVE_PATH_ONLY goal ≤ {FLAT}x",
                log=True,
            )
        )
        panels.append(
            Panel(
                f"{name}: resume ÷ its raw floor",
                groups,
                {
                    "ACTIVE_PATH_ONLY ÷ raw path query": [
                        found[name, off][1] / found[name, off][2] for off in offs
                    ],
                    "KEEP_ALL ÷ raw full read": [
                        found[name, off][0] / found[name, off][3] for off in offs
                    ],
                },
                ylabel="ratio to the raw time",
            )
        )
    section.plot = save_panels(
        config.plots / "resume.png", "Resume: ratios of medians, same run", panels, columns=2
    )
    return section
