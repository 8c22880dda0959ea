"""PostgreSQL races between transactions, staged so they happen every time.

A third connection holds the session row (``SELECT ... FOR UPDATE`` in an
open transaction) while the contenders start; each is seen waiting for a
lock before the next starts, so the lock queue fixes their order, and then
the holder lets go. Each race runs in both orders. After every race the
stored graph keeps its promises: no node row outlives its session, no live
node hangs off a tombstoned or vanished parent, the stored leaf is live.

Then the pool after a server restart, the mapping of a deadlock the server
breaks to :class:`TransientStoreError`, and a bounded natural (unstaged)
loop of the same races (``LASH_MACHINE_STRESS=full`` raises its count;
``scripts/stress.sh`` runs it).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from test_reliability_support import _as_postgres, _pg_bindir, count, report

from lash_machine.errors import (
    HeadRevisionConflict,
    LashMachineError,
    ParentTombstoned,
    TombstoneRefused,
    TransientStoreError,
)
from lash_machine.persisted import FullGraph, Reparent
from lash_machine.stores.postgres import PostgresStore
from lash_machine.testing.conformance import make_commit, make_node, run_threads

pytestmark = pytest.mark.postgres

#: How long a staged contender may take to start waiting for its lock.
_START = 30.0


@pytest.fixture
def dsn(postgres_dsn: str) -> Iterator[str]:
    """A fresh schema, and an application name of its own, so the test
    can see which of its connections wait for a lock."""
    name = f"race_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(
        postgres_dsn, options=f"-c search_path={name}", application_name=name
    )
    with psycopg.connect(postgres_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def _app(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["application_name"]  # type: ignore[return-value]


class Stage:
    """Holds a row lock from its own connection and starts contenders in
    threads, each once the one before waits for a lock."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.app = _app(dsn)
        self.holder = psycopg.connect(dsn, application_name=f"{self.app}-holder")
        self.pool = ThreadPoolExecutor(4)
        self.started = 0

    def hold(self, query: str, params: tuple[object, ...]) -> None:
        """Take the lock ``query`` takes and keep it (one open transaction)."""
        self.holder.execute(query, params)

    def start(self, call: Callable[[], object]) -> Future[object]:
        """Run ``call`` in a thread; return once it waits for a lock."""
        future = self.pool.submit(call)
        self.started += 1
        self._wait_for_waiters(self.started, future)
        return future

    def _wait_for_waiters(self, wanted: int, future: Future[object]) -> None:
        deadline = time.monotonic() + _START
        with psycopg.connect(self.dsn, autocommit=True, application_name="observer") as watch:
            while True:
                row = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE application_name = %s AND wait_event_type = 'Lock'",
                    (self.app,),
                ).fetchone()
                assert row is not None
                if row[0] >= wanted:
                    return
                if future.done():
                    pytest.fail(f"a contender finished without waiting: {future.result()!r}")
                assert time.monotonic() < deadline, "a contender never started waiting"
                time.sleep(0.01)

    def release(self) -> None:
        self.holder.rollback()

    def close(self) -> None:
        self.holder.close()
        self.pool.shutdown(wait=True)


@pytest.fixture
def stage(dsn: str) -> Iterator[Stage]:
    staged = Stage(dsn)
    yield staged
    staged.close()


@pytest.fixture
def store(dsn: str) -> Iterator[PostgresStore]:
    opened = PostgresStore(dsn, max_size=4)
    yield opened
    opened.close()


def outcome(future: Future[object]) -> object:
    """The result of a contender, or the typed error it raised."""
    try:
        return future.result(timeout=_START)
    except LashMachineError as exc:
        return exc


_LOCK_SESSION = "SELECT 1 FROM lash_sessions WHERE session_id = %s FOR UPDATE"


def assert_sound(dsn: str) -> None:
    """What every race must leave behind, read straight from the tables."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        strays = conn.execute(
            "SELECT session_id, node_id FROM lash_nodes AS n WHERE NOT EXISTS"
            " (SELECT 1 FROM lash_sessions AS s WHERE s.session_id = n.session_id)"
        ).fetchall()
        assert strays == [], "node rows outlived their session"
        hanging = conn.execute(
            "SELECT c.session_id, c.node_id, c.parent_id FROM lash_nodes AS c"
            " WHERE NOT c.tombstoned AND c.parent_id IS NOT NULL AND NOT EXISTS"
            " (SELECT 1 FROM lash_nodes AS p WHERE p.session_id = c.session_id"
            "  AND p.node_id = c.parent_id AND NOT p.tombstoned)"
        ).fetchall()
        assert hanging == [], "live nodes hang off a tombstoned or vanished parent"
        dead_leaves = conn.execute(
            "SELECT s.session_id, s.leaf_id FROM lash_sessions AS s WHERE s.leaf_id IS NOT NULL"
            " AND NOT EXISTS (SELECT 1 FROM lash_nodes AS n WHERE n.session_id = s.session_id"
            " AND n.node_id = s.leaf_id AND NOT n.tombstoned)"
        ).fetchall()
        assert dead_leaves == [], "a stored leaf is not a live node"
        counts = conn.execute(
            "SELECT s.session_id, s.live_nodes, (SELECT count(*) FROM lash_nodes AS n"
            " WHERE n.session_id = s.session_id AND NOT n.tombstoned) FROM lash_sessions AS s"
        ).fetchall()
        assert all(listed == live for _, listed, live in counts), counts


def with_orphan(store: PostgresStore) -> None:
    """Session ``s``: r -> a (the leaf), and an orphan x under r."""
    store.commit(
        make_commit(
            "s", None, [make_node("r"), make_node("a", "r"), make_node("x", "r")], leaf_id="a"
        )
    )


# ---- delete_session racing a commit (17.1) ------------------------------------------


@pytest.mark.parametrize("first", ["commit", "delete"])
def test_a_delete_racing_a_commit_leaves_no_node_behind(
    store: PostgresStore, stage: Stage, dsn: str, first: str
) -> None:
    store.commit(make_commit("s", None, [make_node("a")]))
    stage.hold(_LOCK_SESSION, ("s",))
    commit = lambda: store.commit(make_commit("s", 1, [make_node("b", "a"), make_node("c", "b")]))  # noqa: E731
    delete = lambda: store.delete_session("s")  # noqa: E731
    calls = {"commit": commit, "delete": delete}
    order = [first, *(name for name in calls if name != first)]
    futures = {name: stage.start(calls[name]) for name in order}
    stage.release()
    results = {name: outcome(f) for name, f in futures.items()}
    assert results["delete"] is True
    if first == "commit":
        assert results["commit"] == 2
    else:
        assert isinstance(results["commit"], HeadRevisionConflict)
        assert results["commit"].actual is None
    assert store.load_graph("s", FullGraph()) is None
    assert_sound(dsn)
    # The id is free again: a new session with it starts empty.
    store.commit(make_commit("s", None, [make_node("b")]))
    again = store.load_graph("s", FullGraph())
    assert again is not None
    assert [n.node_id for n in again.nodes] == ["b"]
    assert [i.node_count for i in store.list_sessions()] == [1]


# ---- a tombstone racing an unleased commit (17.2, 11.3, 11.4) ---------------------------


@pytest.mark.parametrize("first", ["commit", "tombstone"])
def test_a_tombstone_racing_a_commit_never_hides_what_the_commit_built_on(
    store: PostgresStore, stage: Stage, dsn: str, first: str
) -> None:
    # The commit makes y (under the orphan x) the leaf while x is tombstoned:
    # whichever goes second must be refused, whatever the lease history.
    with_orphan(store)
    stage.hold(_LOCK_SESSION, ("s",))
    calls: dict[str, Callable[[], object]] = {
        "commit": lambda: store.commit(make_commit("s", 1, [make_node("y", "x")])),
        "tombstone": lambda: store.tombstone_nodes("s", ["x"]),
    }
    order = [first, *(name for name in calls if name != first)]
    futures = {name: stage.start(calls[name]) for name in order}
    stage.release()
    results = {name: outcome(f) for name, f in futures.items()}
    if first == "commit":
        assert results["commit"] == 2
        assert isinstance(results["tombstone"], TombstoneRefused)
        assert results["tombstone"].node_id == "x"
        assert store.load_node("s", "x") is not None
    else:
        assert results["tombstone"] == 1
        assert isinstance(results["commit"], ParentTombstoned)
        assert results["commit"].node_id == "x"
        assert store.load_node("s", "y") is None
    store.vacuum()
    assert_sound(dsn)


def test_a_commit_that_waited_sees_a_tombstone_and_vacuum_that_went_first(
    store: PostgresStore, stage: Stage, dsn: str
) -> None:
    # The commit's statement takes its snapshot, then waits (here for the
    # lease row) while x is tombstoned and vacuumed away: it must not hang
    # y off a node that no longer exists.
    with_orphan(store)
    store.release_lease(store.claim_lease("s", "earlier-worker", 60.0))
    stage.hold("SELECT 1 FROM lash_leases WHERE session_id = %s FOR UPDATE", ("s",))
    commit = stage.start(lambda: store.commit(make_commit("s", 1, [make_node("y", "x")])))
    assert store.tombstone_nodes("s", ["x"]) == 1
    assert store.vacuum().nodes_removed == 1
    stage.release()
    result = outcome(commit)
    assert isinstance(result, ParentTombstoned)
    assert result.node_id == "x"
    assert store.load_node("s", "y") is None
    assert_sound(dsn)


def test_prune_reports_a_commit_that_landed_during_it_as_a_conflict(
    store: PostgresStore, stage: Stage, dsn: str
) -> None:
    # A worker without a lease commits y under the orphan x while
    # `lash-machine prune` runs: prune's lease claim cannot stop a commit
    # already in flight, so the store refuses the tombstone and prune says so.
    with_orphan(store)
    stage.hold(_LOCK_SESSION, ("s",))
    commit = stage.start(lambda: store.commit(make_commit("s", 1, [make_node("y", "x")])))
    prune = stage.start(
        lambda: subprocess.run(
            [sys.executable, "-m", "lash_machine", "prune", "s", "--dsn", dsn],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    )
    stage.release()
    assert outcome(commit) == 2
    ran = outcome(prune)
    assert isinstance(ran, subprocess.CompletedProcess)
    assert ran.returncode == 6, ran.stderr
    assert "session s changed while pruning; run prune again" in ran.stderr
    assert "Traceback" not in ran.stderr
    assert store.current_lease("s") is None  # prune gave its lease back
    assert_sound(dsn)
    # Run again, it prunes what is an orphan now: nothing.
    again = subprocess.run(
        [sys.executable, "-m", "lash_machine", "prune", "s", "--dsn", dsn],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # Run again, prune hides what is an orphan now: the old leaf a.
    assert again.returncode == 0, again.stderr
    assert "tombstoned 1 orphan" in again.stdout
    assert store.load_node("s", "a") is None
    assert store.load_node("s", "x") is not None


# ---- a repair commit and a tombstone of the same node (17.6) ----------------------------


@pytest.mark.parametrize("first", ["commit", "tombstone"])
def test_a_repair_commit_and_a_tombstone_of_one_node_do_not_deadlock(
    store: PostgresStore, stage: Stage, dsn: str, first: str
) -> None:
    # The commit repairs x (cuts it loose) and the tombstone hides x: both
    # lock the session row first, so neither waits for the other's rows.
    with_orphan(store)
    stage.hold(_LOCK_SESSION, ("s",))
    calls: dict[str, Callable[[], object]] = {
        "commit": lambda: store.commit(
            make_commit("s", 1, [], leaf_id="a", reparented=[Reparent("x", None)])
        ),
        "tombstone": lambda: store.tombstone_nodes("s", ["x"]),
    }
    order = [first, *(name for name in calls if name != first)]
    futures = {name: stage.start(calls[name]) for name in order}
    stage.release()
    results = {name: outcome(f) for name, f in futures.items()}
    assert results == {"commit": 2, "tombstone": 1}
    assert store.load_node("s", "x") is None
    assert_sound(dsn)


def test_a_deadlock_the_server_breaks_is_a_transient_error(
    store: PostgresStore, stage: Stage, dsn: str
) -> None:
    # Another client takes the locks in the other order (a node row, then
    # the session row); the server breaks the cycle by aborting the store's
    # transaction, which must come out typed and on one line.
    with_orphan(store)
    stage.holder.execute("SET deadlock_timeout = '60s'")  # the store's side detects it
    stage.hold(
        "SELECT 1 FROM lash_nodes WHERE session_id = %s AND node_id = %s FOR UPDATE", ("s", "x")
    )
    tombstone = stage.start(lambda: store.tombstone_nodes("s", ["x"]))
    blocked = stage.pool.submit(stage.holder.execute, _LOCK_SESSION, ("s",))
    result = outcome(tombstone)
    blocked.result(timeout=_START)
    stage.release()
    assert isinstance(result, TransientStoreError), result
    assert "\n" not in str(result)
    assert "deadlock" in str(result)
    # Nothing was applied, and the retry the error asks for succeeds.
    assert store.load_node("s", "x") is not None
    assert store.tombstone_nodes("s", ["x"]) == 1
    assert_sound(dsn)


# ---- the pool after the server drops its connections (11.7) -----------------------------


def _calls_in_a_row(store: PostgresStore, calls: int) -> None:
    for number in range(calls):
        assert store.load_graph("s", FullGraph()) is not None, number


def test_no_call_fails_after_the_server_ends_every_idle_connection(dsn: str) -> None:
    app = _app(dsn)
    store = PostgresStore(dsn, min_size=10, max_size=10)
    try:
        store.commit(make_commit("s", None, [make_node("a")]))
        with psycopg.connect(dsn, autocommit=True, application_name="terminator") as conn:
            ended = conn.execute(
                "SELECT count(pg_terminate_backend(pid, 10000)) FROM pg_stat_activity"
                " WHERE application_name = %s",
                (app,),
            ).fetchone()
        assert ended is not None and ended[0] == 10
        _calls_in_a_row(store, 20)
    finally:
        store.close()


@contextmanager
def own_server() -> Iterator[tuple[str, Callable[[], None]]]:
    """A PostgreSQL cluster of its own on loopback (the shared test server
    must not restart under other tests); yields its DSN and a function
    that restarts it (``pg_ctl restart -m fast``: every backend is told to
    terminate, as in a real restart)."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("no PostgreSQL server binaries to start a server of its own")
    root = Path(tempfile.mkdtemp(prefix="lash-restart-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(root, "postgres", "postgres")
        initdb = [str(bindir / "initdb"), "-D", str(root / "data"), "-U", "postgres"]
        subprocess.run(_as_postgres([*initdb, "-A", "trust"]), check=True, capture_output=True)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        ctl = [str(bindir / "pg_ctl"), "-D", str(root / "data"), "-l", str(root / "log")]
        options = ["-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"]

        def restart() -> None:
            subprocess.run(
                _as_postgres([*ctl, *options, "-m", "fast", "-w", "restart"]),
                check=True,
                capture_output=True,
            )

        subprocess.run(
            _as_postgres([*ctl, *options, "-w", "start"]), check=True, capture_output=True
        )
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres", restart
        finally:
            subprocess.run(
                _as_postgres([*ctl, "-m", "immediate", "stop"]), check=False, capture_output=True
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


def test_no_call_fails_after_a_server_restart() -> None:
    with own_server() as (server, restart):
        store = PostgresStore(server, min_size=10, max_size=10)
        try:
            store.commit(make_commit("s", None, [make_node("a")]))
            restart()
            _calls_in_a_row(store, 20)
        finally:
            store.close()


# ---- the same races, unstaged -----------------------------------------------------------


def _contenders(store: PostgresStore, sid: str, delete: bool) -> list[Callable[[], object]]:
    """An unleased commit building on the orphan x, a tombstone of x, a
    vacuum and (when ``delete``) a delete of the session, all at once."""
    return [
        lambda: store.commit(make_commit(sid, 1, [make_node("y", "x")])),
        lambda: store.tombstone_nodes(sid, ["x"]),
        store.vacuum,
        lambda: store.delete_session(sid) if delete else None,
    ]


def _runner(calls: list[Callable[[], object]]) -> Callable[[int], object]:
    return lambda i: calls[i]()


def test_natural_races_keep_the_graph_sound(dsn: str) -> None:
    rounds = count(ci=10, full=300)
    store = PostgresStore(dsn, max_size=6)
    seen: dict[str, int] = {}
    try:
        for number in range(rounds):
            sid = f"s{number}"
            store.commit(
                make_commit(
                    sid,
                    None,
                    [make_node("r"), make_node("a", "r"), make_node("x", "r")],
                    leaf_id="a",
                )
            )
            calls = _contenders(store, sid, delete=number % 3 == 0)
            for result in run_threads(len(calls), _runner(calls)):
                kind = type(result).__name__
                seen[kind] = seen.get(kind, 0) + 1
                assert not isinstance(result, Exception) or isinstance(
                    result, HeadRevisionConflict | ParentTombstoned | TombstoneRefused
                ), result
            assert_sound(dsn)
    finally:
        store.close()
    report("natural-races", rounds=rounds, **seen)
