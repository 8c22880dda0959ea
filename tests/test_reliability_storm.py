"""The concurrency storm: processes hammering shared sessions on a SQLite
file and on PostgreSQL, with raw compare-and-set commits and through
drivers holding leases.

Promises checked (see :mod:`lash_machine.testing.stress`): exactly one
commit per revision, every acknowledged append present in revision order,
every loser told (a conflict naming a newer stored head, or ``LeaseHeld``),
nothing of a loser stored; leaseholders never conflict.

A takeover race probes the narrow window between a lease check and the
compare-and-set: a holder commits in a loop while another worker claims
the session, loads it and commits; the new holder must never conflict.

CI: 8 processes x 40 attempts (lease storm: 8 x 12; 20 takeovers). Full
(``LASH_MACHINE_STRESS=full``): 8 x 500 (lease storm: 8 x 150; 1000
takeovers).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from test_reliability_support import (
    Timer,
    count,
    fresh_schema,
    postgres_opener,
    report,
    sqlite_opener,
)

from lash_machine.testing.lease_conformance import takeover_round
from lash_machine.testing.stress import (
    Opener,
    StormPlan,
    check_lease_storm,
    check_storm,
    lease_storm_worker,
    prepare_storm,
    run_workers,
    storm_worker,
)

PROCESSES = 8
ATTEMPTS = count(40, 500)
LEASE_ATTEMPTS = count(12, 150)
TAKEOVERS = count(20, 1000)
SESSIONS = ("storm-a", "storm-b")


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "sqlite":
        yield sqlite_opener(tmp_path / "storm.db")
        return
    request.applymarker(pytest.mark.postgres)
    with fresh_schema(request.getfixturevalue("postgres_dsn")) as dsn:
        yield postgres_opener(dsn)


def test_commit_storm_one_winner_per_revision(opener: Opener) -> None:
    elapsed = Timer()
    store = opener()
    try:
        prepare_storm(store, SESSIONS)
        outcomes = run_workers(storm_worker, StormPlan(opener, ATTEMPTS, SESSIONS), PROCESSES)
        figures = check_storm(store, outcomes, SESSIONS, ATTEMPTS)
    finally:
        store.close()
    report(
        f"storm {type(store).__name__}",
        processes=PROCESSES,
        attempts=ATTEMPTS,
        seconds=elapsed(),
        **figures,
    )
    assert figures["won"] > 0
    assert figures["lost"] > 0, "no contention: the storm tested nothing"


def test_lease_storm_leaseholders_never_conflict(opener: Opener) -> None:
    elapsed = Timer()
    plan = StormPlan(opener, LEASE_ATTEMPTS, SESSIONS)
    outcomes = run_workers(lease_storm_worker, plan, PROCESSES)
    store = opener()
    try:
        figures = check_lease_storm(store, outcomes, SESSIONS, LEASE_ATTEMPTS)
        for session_id in SESSIONS:
            assert store.current_lease(session_id) is None  # every holder released
    finally:
        store.close()
    report(
        f"lease storm {type(store).__name__}",
        processes=PROCESSES,
        attempts=LEASE_ATTEMPTS,
        seconds=elapsed(),
        **figures,
    )
    assert figures["won"] > 0


def test_takeovers_never_let_a_stale_holder_in(opener: Opener) -> None:
    elapsed = Timer()
    store = opener()
    try:
        for round_no in range(TAKEOVERS):
            takeover_round(store, f"takeover-{round_no}")
        name = type(store).__name__
    finally:
        store.close()
    report(f"takeover race {name}", rounds=TAKEOVERS, seconds=elapsed())
