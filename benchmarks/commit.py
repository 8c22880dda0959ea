"""Workload 2, commit: K appended nodes on sessions of N nodes, through the
store and through the blocking driver, beside the raw driver writing the
same rows in one transaction."""

from __future__ import annotations

from pathlib import Path

from lash_machine.drivers.blocking import Driver, Session
from lash_machine.model import SessionNode
from lash_machine.testing.records import POLICY, make_commit

from ._backends import Backend, open_backends
from ._common import Config, Goal, Section, fmt_time, median, profile, prose, samples, table
from ._plots import Panel, save_panels
from .bench_store import build_chain, clone_session, node

FLAT = 1.5
CLOSE_TO_RAW = 1.3
APPENDS = (1, 10, 100)

#: (database, N, K) -> median seconds of (store commit, driver save, raw commit).
Found = dict[tuple[str, int, int], tuple[float, float, float]]


def build(backend: Backend, size: int) -> int:
    """Three identical chains of ``size`` nodes (``store-``, ``raw-`` and
    ``driver-{size}``); returns their head revision."""
    head = build_chain(backend.store, f"store-{size}", size)
    for copy in (f"raw-{size}", f"driver-{size}"):
        clone_session(backend.raw, f"store-{size}", copy, backend.mark)
    backend.raw.prepare(f"raw-{size}")
    return head


class Writers:
    """The three writers of one session size, each fed the same K-node
    chain every round (the driver's append untimed: only its save is)."""

    def __init__(self, backend: Backend, session: Session, size: int, head: int) -> None:
        self.backend = backend
        self.session = session
        self.size = size
        self.heads = {"store": head, "raw": head}
        self.append = 1
        self.batch: list[SessionNode] = []

    def before(self, round_: int) -> None:
        ids = [f"k{self.append}.{round_}.{i}" for i in range(self.append)]
        self.batch = [node(ids[i], ids[i - 1] if i else None) for i in range(self.append)]
        self.session.append_nodes(self.batch)

    def via_store(self) -> None:
        commit = make_commit(f"store-{self.size}", self.heads["store"], self.batch)
        self.heads["store"] = self.backend.store.commit(commit)

    def via_driver(self) -> None:
        self.session.save()

    def via_raw(self) -> None:
        raw = self.backend.raw
        self.heads["raw"] = raw.commit(f"raw-{self.size}", self.heads["raw"], self.batch)


def run(config: Config) -> Section:
    sizes = config.pick((1_000, 10_000, 100_000), (1_000, 10_000))
    repeats = config.pick(150, 15)
    section = Section(
        "2. Commit: K nodes onto a session of N nodes",
        prose(f"""
        A chain of N nodes is written through the store, then copied (SQL
        `INSERT ... SELECT`) under two more ids so all three writers start
        from identical sessions. Each round appends the same K-node chain
        three ways, in rotated order: `store.commit` of a `SessionCommit`;
        the blocking driver's `session.save()` after an untimed
        `append_nodes` (the whole stack: reducer, worker thread, store); and
        the raw driver (`bench_store.RawSQLite` / `RawPostgres`): one
        transaction with the same compare-and-set `UPDATE` and an
        `executemany` of the same rows, session columns pre-encoded. SQLite
        with `synchronous={config.synchronous}`, so every commit is a real
        fsync; PostgreSQL with `fsync=on`. Medians of {repeats} rounds per
        case; a goal takes, for each K, the median over N of the ratio, and
        reports the worst K (one case's ratio moves by ±0.2 from run to run).
        """),
    )
    found: Found = {}
    with open_backends(config, "commit") as backends:
        for backend in backends:
            heads = {size: build(backend, size) for size in sizes}
            backend.settle()
            with Driver(backend.store) as driver:
                for size in sizes:
                    session = driver.open(POLICY, f"driver-{size}")
                    assert session.state is not None and len(session.state.graph) == size
                    writers = Writers(backend, session, size, heads[size])
                    for append in APPENDS:
                        writers.append = append
                        store_t, driver_t, raw_t = samples(
                            [writers.via_store, writers.via_driver, writers.via_raw],
                            repeats,
                            warmup=5,
                            before=writers.before,
                        )
                        found[backend.name, size, append] = (
                            median(store_t),
                            median(driver_t),
                            median(raw_t),
                        )
                    session.close()
        names = [b.name for b in backends]
        for name in names:
            section.goals += _goals(found, name, sizes)
        if not all(goal.met for goal in section.goals):
            worst = max(found, key=lambda case: found[case][0] / found[case][2])
            backend = next(b for b in backends if b.name == worst[0])
            section.add(_profile_commit(backend, *worst[1:]))

    section.add(_table(found, sizes))
    section.plot = _plot(config, found, names, sizes)
    return section


def _goals(found: Found, name: str, sizes: tuple[int, ...]) -> list[Goal]:
    by_k = {
        k: median([found[name, s, k][0] / found[name, s, k][2] for s in sizes]) for k in APPENDS
    }
    worst_k = max(by_k, key=by_k.__getitem__)
    growth = {k: found[name, sizes[-1], k][0] / found[name, sizes[0], k][0] for k in APPENDS}
    steepest = max(growth, key=growth.__getitem__)
    return [
        Goal(
            f"{name}: store commit vs raw (worst K)",
            f"{by_k[worst_k]:.2f}x",
            f"≤ {CLOSE_TO_RAW}x",
            by_k[worst_k] <= CLOSE_TO_RAW,
            f"K={worst_k}; "
            + ", ".join(f"K={k}: {r:.2f}x" for k, r in by_k.items() if k != worst_k),
        ),
        Goal(
            f"{name}: commit flat in N ({sizes[-1]:,} vs {sizes[0]:,} nodes, worst K)",
            f"{growth[steepest]:.2f}x",
            f"flat (≤ {FLAT}x)",
            growth[steepest] <= FLAT,
            f"K={steepest}",
        ),
    ]


def _table(found: Found, sizes: tuple[int, ...]) -> str:
    rows = []
    for (name, size, append), (store_t, driver_t, raw_t) in found.items():
        base = found[name, sizes[0], append][0]
        rows.append(
            [
                name,
                f"{size:,}",
                append,
                fmt_time(raw_t),
                fmt_time(store_t),
                f"{store_t / raw_t:.2f}x",
                fmt_time(driver_t),
                f"{driver_t / raw_t:.2f}x",
                f"{store_t / base:.2f}x",
            ]
        )
    return table(
        [
            "database",
            "N>",
            "K>",
            "raw>",
            "store>",
            "store ÷ raw>",
            "driver save>",
            "driver ÷ raw>",
            f"store vs N={sizes[0]:,}>",
        ],
        rows,
    )


def _plot(config: Config, found: Found, names: list[str], sizes: tuple[int, ...]) -> Path:
    panels = []
    groups = [f"N={s:,}" for s in sizes]
    for name in names:
        panels.append(
            Panel(
                f"{name}: store commit ÷ raw",
                groups,
                {
                    f"K={k}": [found[name, s, k][0] / found[name, s, k][2] for s in sizes]
                    for k in APPENDS
                },
                ylabel="ratio to the raw time",
                goal=CLOSE_TO_RAW,
                goal_label=f"goal ≤ {CLOSE_TO_RAW}x",
            )
        )
        panels.append(
            Panel(
                f"{name}: store commit at N ÷ at N={sizes[0]:,}",
                groups,
                {
                    f"K={k}": [found[name, s, k][0] / found[name, sizes[0], k][0] for s in sizes]
                    for k in APPENDS
                },
                ylabel="ratio to the small-session time",
                goal=FLAT,
                goal_label=f"flat (≤ {FLAT}x)",
            )
        )
    return save_panels(
        config.plots / "commit.png", "Commit: ratios of medians, same run", panels, columns=2
    )


def _profile_commit(backend: Backend, size: int, append: int) -> str:
    """cProfile of store commits in the worst case."""
    sid = f"profile-{size}-{append}"
    state = {"head": build_chain(backend.store, sid, size), "round": 0}

    def commit() -> None:
        state["round"] += 1
        ids = [f"p{state['round']}.{i}" for i in range(append)]
        nodes = [node(ids[i], ids[i - 1] if i else None) for i in range(append)]
        state["head"] = backend.store.commit(make_commit(sid, state["head"], nodes))

    return "\n\n".join(
        [
            prose(f"""
            **Profile of the worst case** ({backend.name}, N={size:,}, K={append}):
            cProfile of 50 store commits, by own time.
            """),
            profile(commit, 50),
        ]
    )
