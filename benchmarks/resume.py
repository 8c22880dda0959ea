"""Workload 3, resume: a parked session whose 100-node active path has 0%,
90% or 99% of the session's nodes off it, resumed under ``KEEP_ALL`` and
``ACTIVE_PATH_ONLY``, beside the raw recursive path query."""

from __future__ import annotations

from lash_machine.drivers.blocking import Driver, Session
from lash_machine.model import Residency
from lash_machine.testing.records import POLICY

from ._backends import Backend, open_backends
from ._common import Config, Goal, Section, fmt_time, median, profile, prose, samples, table
from ._plots import Panel, save_panels
from .bench_store import PATH_LENGTH, build_path_session

#: Off-path nodes per path node: 0%, 90% and 99% of the session off the path.
OFF_PER_PATH_NODE = (0, 9, 99)
FLAT = 1.5
METHODS = ("KEEP_ALL", "ACTIVE_PATH_ONLY", "raw path query", "raw full read")


def share(off: int) -> str:
    return f"{off / (off + 1):.0%} off path"


def measure(backend: Backend, driver: Driver, off: int, repeats: int) -> list[float]:
    """Median seconds of each of :data:`METHODS` on one session."""
    sid = f"path-{off}"
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
    assert len(backend.raw.load_path(sid, leaf)) == PATH_LENGTH
    # Each residency beside its own floor: a full read between two path
    # reads would evict the pages those share with each other.
    full, all_rows = samples(
        [lambda: resume(Residency.KEEP_ALL), lambda: backend.raw.load_all(sid)],
        repeats,
        warmup=3,
        before=close_opened,
        collect=True,
    )
    path, path_rows = samples(
        [lambda: resume(Residency.ACTIVE_PATH_ONLY), lambda: backend.raw.load_path(sid, leaf)],
        repeats,
        warmup=3,
        before=close_opened,
        collect=True,
    )
    close_opened(0)
    return [median(t) for t in (full, path, path_rows, all_rows)]


def run(config: Config) -> Section:
    repeats = config.pick(60, 6)
    section = Section(
        "3. Resume: `KEEP_ALL` vs `ACTIVE_PATH_ONLY` as off-path nodes grow",
        prose(f"""
        A session with a {PATH_LENGTH}-node active path; after each path node
        a side branch of 0, 9 or 99 nodes (so 0%, 90% or 99% of the session
        is off the path: {PATH_LENGTH:,}, {PATH_LENGTH * 10:,} and
        {PATH_LENGTH * 100:,} nodes). It is parked once, then resumed through
        the blocking driver (`driver.resume(parked, residency=...)`: the
        store read plus building, healing and trimming the state) under each
        residency; beside it the raw driver runs the recursive path query
        (the floor for `ACTIVE_PATH_ONLY`) and a plain read of every node
        (the floor for `KEEP_ALL`), rows left undecoded. Rotated order,
        medians of {repeats} rounds.
        """),
    )
    found: dict[tuple[str, int], list[float]] = {}
    with open_backends(config, "resume") as backends:
        for backend in backends:
            for off in OFF_PER_PATH_NODE:
                build_path_session(backend.store, f"path-{off}", off)
            backend.settle()
            with Driver(backend.store) as driver:
                for off in OFF_PER_PATH_NODE:
                    found[backend.name, off] = measure(backend, driver, off, repeats)
        names = [b.name for b in backends]
        for name in names:
            first, last = OFF_PER_PATH_NODE[0], OFF_PER_PATH_NODE[-1]
            growth = found[name, last][1] / found[name, first][1]
            raw_growth = found[name, last][2] / found[name, first][2]
            section.goals.append(
                Goal(
                    f"{name}: `ACTIVE_PATH_ONLY` resume, 99% vs 0% off path (100x the nodes)",
                    f"{growth:.2f}x",
                    f"≤ {FLAT}x",
                    growth <= FLAT,
                    f"the raw path query: {raw_growth:.2f}x",
                )
            )
            if growth > FLAT:
                backend = next(b for b in backends if b.name == name)
                with Driver(backend.store) as driver:
                    parked = driver.open(POLICY, f"path-{last}").park()
                    section.add(
                        f"**Profile** ({name}, 99% off path, `ACTIVE_PATH_ONLY` resume):",
                        profile(
                            lambda d=driver, p=parked: d.resume(
                                p, residency=Residency.ACTIVE_PATH_ONLY
                            ).close(),
                            30,
                        ),
                    )

    rows = []
    for (name, off), times in found.items():
        base = found[name, OFF_PER_PATH_NODE[0]]
        rows.append(
            [
                name,
                share(off),
                f"{PATH_LENGTH * (off + 1):,}",
                *(f"{fmt_time(t)} ({t / b:.2f}x)" for t, b in zip(times, base, strict=True)),
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
                "raw path query>",
                "raw full read>",
                "ACTIVE_PATH_ONLY ÷ raw path>",
            ],
            rows,
        ),
    )
    groups = [share(off) for off in OFF_PER_PATH_NODE]
    panels = []
    for name in names:
        base = found[name, OFF_PER_PATH_NODE[0]]
        panels.append(
            Panel(
                f"{name}: resume time ÷ time at 0% off path",
                groups,
                {
                    method: [found[name, off][i] / base[i] for off in OFF_PER_PATH_NODE]
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
                        found[name, off][1] / found[name, off][2] for off in OFF_PER_PATH_NODE
                    ],
                    "KEEP_ALL ÷ raw full read": [
                        found[name, off][0] / found[name, off][3] for off in OFF_PER_PATH_NODE
                    ],
                },
                ylabel="ratio to the raw time",
            )
        )
    section.plot = save_panels(
        config.plots / "resume.png", "Resume: ratios of medians, same run", panels, columns=2
    )
    return section
