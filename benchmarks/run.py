"""Run the benchmarks and write ``RESULTS.md`` and the plots.

    python -m benchmarks              # everything: benchmarks/RESULTS.md, benchmarks/plots/
    python -m benchmarks --quick      # a smoke run of every workload, into a temporary folder
    python -m benchmarks --only peer,workers --out /tmp/bench

PostgreSQL runs against ``LASH_MACHINE_BENCH_DSN`` when set, else against a
throwaway server on 127.0.0.1 (``fsync=on``) when the PostgreSQL server
binaries are installed; without either, the PostgreSQL parts are skipped.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lash_machine

from ._common import Config, Section, table
from ._pg import postgres_dsn, server_version

#: Workload name -> module (each has ``run(config) -> Section``), in report order.
WORKLOADS = {
    "reducer": "benchmarks.reducer",
    "commit": "benchmarks.commit",
    "resume": "benchmarks.resume",
    "peer": "benchmarks.peer",
    "workers": "benchmarks.workers",
    "memory": "benchmarks.memory",
    "expire": "benchmarks.expire",
}

HERE = Path(__file__).resolve().parent


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run (well under a minute)")
    parser.add_argument(
        "--only", default="", help=f"comma-separated workloads (of {', '.join(WORKLOADS)})"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help="where RESULTS.md and plots/ go (default: benchmarks/, or a temporary"
        " folder with --quick)",
    )
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument(
        "--synchronous", default="FULL", help="SQLite synchronous setting for every system"
    )
    args = parser.parse_args(argv)
    chosen = [name.strip() for name in args.only.split(",") if name.strip()] or list(WORKLOADS)
    unknown = set(chosen) - set(WORKLOADS)
    if unknown:
        parser.error(f"unknown workloads: {', '.join(sorted(unknown))}")
    out: Path = args.out or (
        Path(tempfile.mkdtemp(prefix="lash-bench-quick-")) if args.quick else HERE
    )

    started = time.perf_counter()
    sections: list[Section] = []
    with tempfile.TemporaryDirectory(prefix="lash-bench-") as tmp, postgres_dsn() as found:
        dsn = None if args.skip_postgres else found
        config = Config(
            quick=args.quick,
            tmp=Path(tmp),
            plots=out / "plots",
            pg_dsn=dsn,
            synchronous=args.synchronous.upper(),
        )
        machine = machine_info(config)
        for name in chosen:
            print(f"[{time.perf_counter() - started:6.1f}s] {name} ...", file=sys.stderr)
            module = importlib.import_module(WORKLOADS[name])
            sections.append(module.run(config))
    elapsed = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    results = out / "RESULTS.md"
    machine.append(("load average at end", "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())))
    results.write_text(render(sections, machine, config, elapsed, out))
    print(f"[{elapsed:6.1f}s] wrote {results}", file=sys.stderr)


# -- the machine --------------------------------------------------------------------------


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _commit() -> str:
    found = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=HERE,
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() or "unknown"


def machine_info(config: Config) -> list[tuple[str, str]]:
    postgres = "skipped"
    if config.pg_dsn is not None:
        where = "LASH_MACHINE_BENCH_DSN" if os.environ.get("LASH_MACHINE_BENCH_DSN") else None
        postgres = server_version(config.pg_dsn) + (
            f" ({where})" if where else ", throwaway server on 127.0.0.1, fsync=on"
        )
    return [
        ("CPU", f"{os.cpu_count()} cores, {_cpu_model()}"),
        ("memory", _memory()),
        ("OS", platform.platform()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        (
            "SQLite",
            f"{sqlite3.sqlite_version} (WAL; synchronous={config.synchronous}, the peer"
            " workload NORMAL and FULL)",
        ),
        ("PostgreSQL", postgres),
        ("psycopg", _version("psycopg")),
        ("lash-machine", f"{lash_machine.__version__} (git {_commit()})"),
        ("load average at start", "{:.2f} {:.2f} {:.2f}".format(*os.getloadavg())),
        (
            "LangGraph checkpointers",
            f"langgraph-checkpoint {_version('langgraph-checkpoint')},"
            f" -sqlite {_version('langgraph-checkpoint-sqlite')},"
            f" -postgres {_version('langgraph-checkpoint-postgres')}",
        ),
    ]


# -- the report ---------------------------------------------------------------------------


def render(
    sections: list[Section],
    machine: list[tuple[str, str]],
    config: Config,
    elapsed: float,
    out: Path,
) -> str:
    today = datetime.date.today().isoformat()
    mode = (
        "`python -m benchmarks --quick` (smoke run)" if config.quick else "`python -m benchmarks`"
    )
    lines = [
        "# lash-machine benchmarks",
        "",
        f"Written by {mode} on {today} in {elapsed / 60:.1f} minutes. Every figure is a"
        " ratio of two medians measured in the same run (the calls being compared take"
        " turns going first); absolute times are context only. Method and caveats:"
        " [README.md](README.md).",
        "",
        "## Machine",
        "",
        table(["", ""], machine),
        "",
        "## Goals",
        "",
        table(
            ["workload", "goal", "measured", "target", "met"],
            [
                [
                    section.title.split(":")[0],
                    goal.name,
                    goal.measured,
                    goal.target,
                    "yes" if goal.met else "**no**",
                ]
                for section in sections
                for goal in section.goals
            ],
        ),
        "",
    ]
    for section in sections:
        lines += [f"## {section.title}", "", section.method, ""]
        for part in section.body:
            lines += [part, ""]
        if section.plot is not None:
            lines += [f"![{section.title}]({section.plot.relative_to(out).as_posix()})", ""]
        for goal in section.goals:
            verdict = "met" if goal.met else "**missed**"
            note = f" ({goal.note})" if goal.note else ""
            lines.append(
                f"* Goal {goal.name}: {goal.measured}, target {goal.target}: {verdict}{note}."
            )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    main()
