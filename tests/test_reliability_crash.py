"""Crash injection: a child process committing in a loop is killed with
SIGKILL at a random point, again and again, on a SQLite file and on
PostgreSQL. After every kill the store opens, the session loads, healing
finds nothing to repair, every commit the child acknowledged (after
``commit`` returned) is present, and the commit in flight is all or
nothing. A crashed lease holder's lease expires and another worker claims
the session.

CI: 12 kills per store. Full (``LASH_MACHINE_STRESS=full``): 200 per store.
"""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_drivers_support import POLICY
from test_reliability_support import (
    Timer,
    count,
    fresh_schema,
    postgres_opener,
    report,
    sqlite_opener,
)

from lash_machine import LeaseHeld, LeaseLost
from lash_machine import effects as fx
from lash_machine.drivers.blocking import Driver
from lash_machine.stores import MemoryStore
from lash_machine.testing.records import make_commit, make_node
from lash_machine.testing.stress import (
    CrashPlan,
    Opener,
    check_crash,
    crash_commit,
    kill_during_commits,
)

KILLS = count(12, 200)
#: Kills per session: later children resume a session an earlier one was
#: killed in the middle of.
PER_SESSION = 25


@pytest.fixture(params=["sqlite", "postgres"])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    if request.param == "sqlite":
        yield sqlite_opener(tmp_path / "crash.db")
        return
    request.applymarker(pytest.mark.postgres)
    with fresh_schema(request.getfixturevalue("postgres_dsn")) as dsn:
        yield postgres_opener(dsn)


def _sqlite_is_intact(opener: Opener) -> None:
    path = getattr(opener, "args", ("",))[0]
    if str(path).endswith(".db"):
        conn = sqlite3.connect(path)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        finally:
            conn.close()


def test_sigkill_during_commits_loses_nothing_acknowledged(opener: Opener, tmp_path: Path) -> None:
    elapsed = Timer()
    rng = random.Random(7)
    stored: dict[str, tuple[str, ...]] = {}
    acks: dict[str, dict[int, tuple[str, ...]]] = {}
    landed: dict[str, int] = {}
    name = ""
    for kill in range(KILLS):
        session_id = f"crash-{kill // PER_SESSION}"
        # Every other child holds the session's lease, as a worker that
        # restarts under the same owner id would: it reclaims at once.
        owner = "restarting-worker" if kill % 2 else None
        killed = kill_during_commits(CrashPlan(opener, session_id, owner), kill, tmp_path, rng)
        acks.setdefault(session_id, {})[kill] = killed.acknowledged
        _sqlite_is_intact(opener)
        store = opener()  # the store opens after the kill
        try:
            name = type(store).__name__
            found = check_crash(store, session_id, acks[session_id], stored.get(session_id, ()))
            if killed.lease_token is not None:
                _check_dead_holders_lease(store, session_id, killed.lease_token, found.stored)
            # Through the driver too: the session opens without healing.
            with Driver(store) as driver:
                events: list[fx.LifecycleEvent] = []
                driver.hooks.on_lifecycle(events.append)
                session = driver.open(POLICY, session_id)
                assert not [e for e in events if isinstance(e, fx.SessionHealed)]
                session.close()
        finally:
            store.close()
        stored[session_id] = found.stored
        landed[session_id] = found.unacknowledged
    acknowledged = sum(len(a) for by_child in acks.values() for a in by_child.values())
    report(
        f"crash {name}",
        kills=KILLS,
        acknowledged_commits=acknowledged,
        unacknowledged_commits_landed=sum(landed.values()),
        seconds=elapsed(),
    )
    assert acknowledged > 0


def _check_dead_holders_lease(store: Any, session_id: str, token: int, stored: Any) -> None:
    """The killed child's lease outlives it: others are told it is held;
    its owner, restarting, reclaims it with a larger token, and the dead
    incarnation's token is refused from then on."""
    with pytest.raises(LeaseHeld):
        store.claim_lease(session_id, "another-worker", 30.0)
    restarted = store.claim_lease(session_id, "restarting-worker", 30.0)
    assert restarted.token > token
    head = len(stored) or None
    with pytest.raises(LeaseLost):
        store.commit(make_commit(session_id, head, [make_node("zombie")], fencing_token=token))
    store.release_lease(restarted)


def test_a_crashed_leaseholders_lease_expires_and_another_claims(
    opener: Opener, tmp_path: Path
) -> None:
    ttl = 1.0
    plan = CrashPlan(opener, "leased", lease_owner="crashed", lease_ttl=ttl)
    killed = kill_during_commits(plan, 0, tmp_path, random.Random(1), max_delay=0.0)
    assert killed.lease_token is not None
    store = opener()
    try:
        with Driver(store, lease_owner="next", lease_ttl=30.0) as second:
            with pytest.raises(LeaseHeld) as caught:
                second.open(POLICY, "leased")
            assert caught.value.owner == "crashed"
            time.sleep(max(0.0, caught.value.expires_at - time.time()) + 0.05)
            taken = second.open(POLICY, "leased")
            assert taken.lease.token > killed.lease_token
            found = check_crash(store, "leased", {0: killed.acknowledged}, ())
            assert taken.view.head_revision == len(found.stored)
            taken.append({"n": "after the crash"})
            assert taken.save() == len(found.stored) + 1
            taken.park()
    finally:
        store.close()


def test_the_crash_check_allows_one_late_landing_per_child_and_no_more() -> None:
    # What a server allows: child 0's commit in flight at its kill lands
    # after the check of child 0, before child 1's commits.
    store = MemoryStore()
    head = store.commit(crash_commit("s", None, None, "i0c0", None))
    assert check_crash(store, "s", {0: ("i0c0",)}, ()).unacknowledged == 0
    head = store.commit(crash_commit("s", head, "i0c0/2", "i0c1", None))  # landed late
    head = store.commit(crash_commit("s", head, "i0c1/2", "i1c0", None))
    found = check_crash(store, "s", {0: ("i0c0",), 1: ("i1c0",)}, ("i0c0",))
    assert (found.stored, found.unacknowledged) == (("i0c0", "i0c1", "i1c0"), 1)
    # A second unacknowledged commit of child 0 is one it never sent.
    store.commit(crash_commit("s", head, "i1c0/2", "i0c2", None))
    with pytest.raises(AssertionError, match="never sent"):
        check_crash(store, "s", {0: ("i0c0",), 1: ("i1c0",)}, found.stored)
    # An acknowledged commit that is missing is caught.
    with pytest.raises(AssertionError, match="missing"):
        check_crash(store, "s", {0: ("i0c0", "i0c1", "i0c2", "i0c3"), 1: ("i1c0",)}, ())
