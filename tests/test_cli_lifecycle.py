"""The data lifecycle on the command line: ``delete``, ``purge``,
``expire``, ``copy`` and ``migrate``, and how ``show``, ``orphans`` and
``prune`` treat pins, copies and compactions. Subprocesses, on SQLite and
PostgreSQL."""

from __future__ import annotations

import importlib.util
import itertools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from cli_support import (
    DATABASES,
    ENV,
    POLICY,
    Db,
    cli,
    load,
    on_terminal,
    postgres_db,
    sqlite_db,
)

from lash_machine import SessionDeleted
from lash_machine.drivers.blocking import Driver
from lash_machine.persisted import FullGraph
from lash_machine.stores.leases import LeaseStore

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "schema-v2.sqlite3"


def _ids(db: Db) -> list[str]:
    store = db.open()
    try:
        return [info.session_id for info in store.list_sessions()]
    finally:
        store.close()


def _deleted(db: Db, session_id: str) -> bool:
    """Whether the store keeps a deletion marker of ``session_id``."""
    store = db.open()
    try:
        store.load_graph(session_id, FullGraph())
    except SessionDeleted:
        return True
    finally:
        store.close()
    return False


# ---- delete and purge ----------------------------------------------------------------


def test_delete_leaves_nothing_but_a_marker_and_purge_forgets_it(db: Db) -> None:
    # A prefix is not enough for what cannot be undone.
    prefix = cli("delete", "s-ma", *db.args)
    assert prefix.returncode == 3
    assert "delete takes a whole session id, not a prefix: did you mean s-main?" in prefix.stderr
    assert _ids(db) == ["s-main", "s-other"]

    # Not while a worker holds the session.
    store = db.open()
    assert isinstance(store, LeaseStore)
    lease = store.claim_lease("s-main", "worker-1", ttl=60)
    try:
        refused = cli("delete", "s-main", *db.args)
        assert refused.returncode == 6
        assert "'s-main' is in use: 'worker-1' holds its lease" in refused.stderr
        assert _ids(db) == ["s-main", "s-other"]
    finally:
        store.release_lease(lease)
        store.close()

    deleted = cli("delete", "s-main", *db.args)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.startswith("deleted session s-main (4 nodes); nothing is left but")
    assert _ids(db) == ["s-other"]
    assert _deleted(db, "s-main")
    again = cli("delete", "s-main", *db.args)
    assert (again.returncode, again.stderr) == (
        3,
        "lash-machine: error: session 's-main' was deleted; it cannot be used again\n",
    )
    assert cli("show", "s-main", *db.args).returncode == 3
    unknown = cli("delete", "nope", *db.args)
    assert (unknown.returncode, unknown.stderr) == (
        3,
        f"lash-machine: error: no session 'nope' in {db.args[1]}\n",
    )

    # A marker younger than the age is kept; --older-than 0s forgets all.
    kept = cli("purge", "--older-than", "1h", *db.args)
    assert (kept.returncode, kept.stdout.split(" older")[0]) == (0, "purged 0 deletion markers")
    assert _deleted(db, "s-main")
    purged = cli("purge", "--older-than", "0s", *db.args)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("purged 1 deletion marker older than ")
    assert purged.stdout.endswith(": those session ids may be used again\n")
    assert not _deleted(db, "s-main")
    for bad in ("soon", "3x"):
        usage = cli("purge", "--older-than", bad, *db.args)
        assert usage.returncode == 2 and "argument --older-than:" in usage.stderr
    assert cli("purge", *db.args).returncode == 2  # the age is required


#: A worker in a process of its own: it opens session "w" and commits, says
#: so, waits for a line on stdin (the test deletes the session meanwhile),
#: then tries to write the session through the handle it holds, and to open
#: it anew. It prints what each attempt raised, as JSON.
_WORKER = """
import json, sys
from lash_machine import ModelSpec, SessionPolicy
from lash_machine.drivers.blocking import Driver

kind, where = sys.argv[1], sys.argv[2]
if kind == "sqlite":
    from lash_machine.stores import SQLiteStore
    store = SQLiteStore(where)
else:
    from lash_machine.stores.postgres import PostgresStore
    store = PostgresStore(where, max_size=2)
policy = SessionPolicy(ModelSpec("test-model"), provider_id="test")
outcomes = {}
with Driver(store) as driver:
    session = driver.open(policy, "w")
    session.append({"role": "user", "content": "before the delete"})
    session.save()
    print("ready", flush=True)
    sys.stdin.readline()
    for name, attempt in (
        ("save", lambda: (session.append({"role": "user", "content": "after"}), session.save())),
        ("open", lambda: driver.open(policy, "w")),
    ):
        try:
            attempt()
            outcomes[name] = "written"
        except Exception as error:
            outcomes[name] = type(error).__name__
store.close()
print(json.dumps(outcomes), flush=True)
"""


def test_a_worker_holding_the_session_cannot_write_it_after_delete(db: Db) -> None:
    # Two processes: the worker keeps its handle across the command's delete.
    # (In one process, with every driver and residency, the same promise is
    # test_drivers_intersections.py's test_a_handle_whose_session_was_deleted_...)
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, db.kind, db.args[1]],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    try:
        assert worker.stdout is not None and worker.stdin is not None
        assert worker.stdout.readline() == "ready\n"
        deleted = cli("delete", "w", *db.args)
        assert deleted.returncode == 0, deleted.stderr
        assert "deleted session w (1 node)" in deleted.stdout
        worker.stdin.write("go\n")
        worker.stdin.flush()
        out, err = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
    assert worker.returncode == 0, err
    assert json.loads(out) == {"save": "SessionDeleted", "open": "SessionDeleted"}
    assert "w" not in _ids(db)
    assert _deleted(db, "w")


# ---- expire --------------------------------------------------------------------------


def _sessions(db: Db, count: int, prefix: str = "idle") -> list[str]:
    store = db.open()
    made = [f"{prefix}-{i:03}" for i in range(count)]
    try:
        with Driver(store) as driver:
            for session_id in made:
                session = driver.open(POLICY, session_id)
                session.append({"role": "user", "content": session_id})
                session.append({"role": "assistant", "content": "ok"})
                session.park()
    finally:
        store.close()
    return made


def _age(db: Db, session_ids: list[str], days: float) -> None:
    """Make the sessions look last committed to ``days`` ago."""
    for session_id in session_ids:
        db.sql(
            "UPDATE lash_sessions SET updated_at = updated_at - ? WHERE session_id = ?",
            (days * 86400, session_id),
        )


def test_expire_dry_run_reports_what_expire_then_removes_and_spares_a_leased_one(db: Db) -> None:
    idle = _sessions(db, 5)
    _age(db, idle, 40)
    _age(db, ["s-other"], 10)  # idle, but not for 30 days
    store = db.open()
    assert isinstance(store, LeaseStore)
    lease = store.claim_lease("idle-002", "worker-1", ttl=600)
    store.close()
    expected = [sid for sid in idle if sid != "idle-002"]

    dry = cli("expire", "--idle", "30d", "--dry-run", "--json", *db.args)
    assert dry.returncode == 0, dry.stderr
    planned = json.loads(dry.stdout)
    assert set(planned) == {
        "dry_run",
        "idle_for",
        "cutoff",
        "expired",
        "nodes_removed",
        "kept_leased",
        "longest_batch",
    }
    assert (planned["dry_run"], planned["idle_for"]) == (True, 30 * 86400.0)
    assert sorted(planned["expired"]) == expected
    assert (planned["nodes_removed"], planned["kept_leased"]) == (8, 1)
    assert _ids(db) == [*idle, "s-main", "s-other"]  # nothing removed
    text = cli("expire", "--idle", "30d", "--dry-run", *db.args)
    assert re.match(
        r"dry run: would expire 4 sessions \(8 nodes\) not committed to since"
        r" \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ; nothing removed\n",
        text.stdout,
    )
    assert "kept 1 idle session whose lease a worker holds" in text.stdout

    done = cli("expire", "--idle", "30d", "--json", "--batch-size", "2", *db.args)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["dry_run"] is False
    assert report["expired"] == planned["expired"]
    assert (report["nodes_removed"], report["kept_leased"]) == (8, 1)
    assert _ids(db) == ["idle-002", "s-main", "s-other"]
    assert all(_deleted(db, sid) for sid in expected)

    # Once the worker lets go, the idle session goes too.
    store = db.open()
    assert isinstance(store, LeaseStore)
    store.release_lease(lease)
    store.close()
    last = cli("expire", "--idle", "30d", *db.args)
    assert last.stdout.startswith("expired 1 session (2 nodes) not committed to since ")
    assert last.stdout.endswith("\n  idle-002\n")
    assert _ids(db) == ["s-main", "s-other"]
    for bad in ("30", "2024-01-01"):  # a duration only, never a time
        usage = cli("expire", "--idle", bad, *db.args)
        assert usage.returncode == 2 and "not a duration" in usage.stderr


def test_expire_shows_progress_on_a_terminal_and_nothing_on_a_pipe(db: Db) -> None:
    idle = _sessions(db, 25)
    _age(db, idle, 2)
    piped = cli("expire", "--idle", "1d", "--dry-run", "--batch-size", "10", *db.args)
    assert (piped.returncode, piped.stderr) == (0, "")

    shown, terminal = on_terminal("expire", "--idle", "1d", "--batch-size", "10", *db.args)
    assert shown.returncode == 0
    # The same sessions as the dry run listed (the first line names the cutoff).
    assert shown.stdout.startswith("expired 25 sessions (50 nodes) not committed to since ")
    assert shown.stdout.splitlines()[1:] == piped.stdout.splitlines()[1:]
    assert len(piped.stdout.splitlines()) == 26
    for so_far in ("10 sessions", "20 sessions", "25 sessions"):
        assert f"\rexpire: {so_far} expired so far\x1b[K" in terminal
    assert terminal.endswith("\r\x1b[K")


# ---- copy ----------------------------------------------------------------------------


def test_copy_makes_a_new_session_from_a_path_and_show_says_where_it_came_from(db: Db) -> None:
    copied = cli("copy", "s-main", "--at", "n2", "--as", "s-copy", *db.args)
    assert (copied.returncode, copied.stdout) == (0, "s-copy\n"), copied.stderr
    stored = load(db, "s-copy")
    assert stored is not None
    assert [n.node_id for n in stored.nodes] == ["n1", "n2"]
    assert stored.origin is not None
    assert (stored.origin.session_id, stored.origin.node_id) == ("s-main", "n2")
    shown = cli("show", "s-copy", *db.args)
    assert "\ncopied from session s-main at node n2\n" in shown.stdout
    data = json.loads(cli("show", "s-copy", "--json", *db.args).stdout)
    assert data["origin"] == {"session_id": "s-main", "node_id": "n2"}

    # By default: the stored leaf's path, under a fresh id; a node off the
    # active path may be named too.
    fresh = cli("copy", "s-ma", *db.args)
    assert re.fullmatch(r"[0-9a-f]{32}\n", fresh.stdout), fresh.stderr
    made = load(db, fresh.stdout.strip())
    assert made is not None and [n.node_id for n in made.nodes] == ["n1", "n2", "n4"]
    branch = cli("copy", "s-main", "--at", "n3", "--as", "s-branch", *db.args)
    assert branch.returncode == 0, branch.stderr
    made = load(db, "s-branch")
    assert made is not None and [n.node_id for n in made.nodes] == ["n1", "n2", "n3"]

    for args, code, says in (
        (("--at", "n"), 3, "'n' is the start of 4 node ids of session s-main"),
        (("--at", "ghost"), 3, "session s-main has no live node 'ghost'"),
        (("--as", "s-other"), 6, "session s-other already exists"),
        (("--as", ""), 2, "--as is empty"),
    ):
        refused = cli("copy", "s-main", *args, *db.args)
        assert (refused.returncode, says in refused.stderr) == (code, True), refused.stderr
    assert cli("delete", "s-copy", *db.args).returncode == 0
    onto_deleted = cli("copy", "s-main", "--as", "s-copy", *db.args)
    assert onto_deleted.returncode == 6
    assert "s-copy was deleted" in onto_deleted.stderr and "purge" in onto_deleted.stderr
    assert cli("copy", "s-copy", *db.args).returncode == 3  # a deleted source


# ---- pins and compactions ------------------------------------------------------------


def _compacted(db: Db) -> Db:
    """Session s-c: c1 -> c2 -> c3 with c3's children c4 (pinned), c5 and
    c6 (the leaf), then a compaction through c2: the summary c7 is a root,
    c3 hangs under it, and c1, c2 (pinned by the compaction) are off the
    active path."""
    counter = itertools.count(1)
    store = db.open()
    try:
        with Driver(store, ids=lambda: f"c{next(counter)}") as driver:
            session = driver.open(POLICY, "s-c")
            session.append({"role": "user", "content": "Plan a weekend in Lisbon."})
            session.append({"role": "assistant", "content": "Alfama, then Belem."})
            ask = session.append({"role": "user", "content": "And the evenings?"})
            session.append({"role": "assistant", "content": "Fado in Alfama."})
            session.branch(ask.node_id)
            session.append({"role": "assistant", "content": "A rooftop bar."})
            session.branch(ask.node_id)
            session.append({"role": "assistant", "content": "Dinner by the river."})
            session.pin("c4")
            session.compact("c2", "The user plans a Lisbon weekend: Alfama, then Belem.")
            session.park()
    finally:
        store.close()
    return db


def test_show_marks_pins_summaries_and_what_they_replaced(empty_db: Db) -> None:
    db = _compacted(empty_db)
    shown = cli("show", "s-c", *db.args)
    assert shown.returncode == 0, shown.stderr
    head, tree = shown.stdout.split("\n\n", 1)
    assert "pinned: c2, c4 (prune keeps 3 orphans for them)" in head
    assert "compacted: 1 summary node, 2 originals off the active path" in head
    assert tree.splitlines() == [
        "* active path   o orphan (off the active path)   c compacted (replaced by a summary)",
        "c  ├─ c1  user: Plan a weekend in Lisbon.",
        "c  │  c2  assistant: Alfama, then Belem.  (pinned)",
        "*  └─ c7  [summary of 2 nodes through c2] The user plans a Lisbon weekend: Alfama,"
        " then Belem.",
        "*     c3  user: And the evenings?",
        "o     ├─ c4  assistant: Fado in Alfama.  (pinned)",
        "o     ├─ c5  assistant: A rooftop bar.",
        "*     └─ c6  assistant: Dinner by the river.  → leaf",
    ]

    data = json.loads(cli("show", "s-c", "--json", *db.args).stdout)
    assert data["active_path"] == ["c7", "c3", "c6"]
    assert (data["pinned"], data["kept_orphans"]) == (["c2", "c4"], ["c1", "c2", "c4"])
    assert data["summaries"] == [
        {"node_id": "c7", "through": "c2", "kept": "c3", "replaces": ["c1", "c2"]}
    ]
    assert data["compacted"] == ["c1", "c2"]


def test_orphans_say_what_a_pin_keeps_and_prune_keeps_it(empty_db: Db) -> None:
    db = _compacted(empty_db)
    listed = cli("orphans", "s-c", *db.args)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines() == [
        "session s-c: 4 orphans (off the active path)",
        "  c1  user: Plan a weekend in Lisbon.  (compacted into c7; kept by the pin on c2)",
        "  c2  assistant: Alfama, then Belem.  (compacted into c7; pinned: prune keeps it)",
        "  c4  assistant: Fado in Alfama.  (pinned: prune keeps it)",
        "  c5  assistant: A rooftop bar.",
        "prune keeps 3 of them (a pin holds them) and tombstones 1",
    ]
    nodes = {n["node_id"]: n for n in json.loads(cli("orphans", "s-c", "--json", *db.args).stdout)}
    assert {k: (n["pinned"], n["kept_by_pin"], n["compacted_into"]) for k, n in nodes.items()} == {
        "c1": (False, "c2", "c7"),
        "c2": (True, "c2", "c7"),
        "c4": (True, "c4", None),
        "c5": (False, None, None),
    }

    pruned = cli("prune", "s-c", *db.args)
    assert pruned.returncode == 0, pruned.stderr
    assert pruned.stdout.startswith("session s-c: tombstoned 1 orphan (hidden from every read;")
    assert pruned.stdout.endswith("; kept 3 orphans a pin holds\n")
    stored = load(db, "s-c")
    assert stored is not None
    assert [n.node_id for n in stored.nodes] == ["c1", "c2", "c3", "c4", "c6", "c7"]
    again = cli("prune", "s-c", *db.args)
    assert again.stdout == "session s-c: nothing to prune: kept 3 orphans a pin holds\n"


# ---- migrate -------------------------------------------------------------------------


def _fixture_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "make_v2_fixture", ROOT / "scripts/make_v2_fixture.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(params=DATABASES)
def v2_db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """A database of schema version 2: a copy of the committed SQLite
    fixture, or the same rows built in PostgreSQL by the script that made it."""
    if request.param == "sqlite":
        path = tmp_path / "old.sqlite3"
        shutil.copy(FIXTURE, path)
        return sqlite_db(path)
    dsn = request.getfixturevalue("postgres_schema")
    _fixture_script().build_postgres(dsn)
    return postgres_db(dsn)


def _snapshot(db: Db) -> object:
    """What a dry run must leave as it was: the file's bytes, or the
    PostgreSQL schema's tables and version."""
    if db.kind == "sqlite":
        return Path(db.args[1]).read_bytes()
    import psycopg

    with psycopg.connect(db.args[1]) as conn:
        tables = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() ORDER BY 1, 2"
        ).fetchall()
        version = conn.execute("SELECT version FROM lash_schema").fetchall()
    return tables, version


def test_migrate_upgrades_a_version_2_database_in_place(v2_db: Db) -> None:
    for command in (("sessions",), ("show", "linear"), ("check",), ("expire", "--idle", "1d")):
        refused = cli(*command, *v2_db.args)
        assert refused.returncode == 4, refused.stderr
        assert "schema version 2, this lash-machine expects 3" in refused.stderr
        assert "upgrade it in place with `lash-machine migrate`" in refused.stderr

    before = _snapshot(v2_db)
    dry = cli("migrate", "--dry-run", *v2_db.args)
    assert dry.returncode == 0, dry.stderr
    assert "schema version 2; migrating to 3 would run 1" in dry.stdout
    assert "(dry run: nothing written)" in dry.stdout
    assert "  ALTER TABLE lash_nodes ADD COLUMN pinned" in dry.stdout
    plan = json.loads(cli("migrate", "--dry-run", "--json", *v2_db.args).stdout)
    assert (plan["found_version"], plan["target_version"], plan["migrated"]) == (2, 3, False)
    assert len(plan["statements"]) == dry.stdout.count(";\n")
    assert _snapshot(v2_db) == before

    done = cli("migrate", *v2_db.args)
    assert done.returncode == 0, done.stderr
    assert "migrated from schema version 2 to 3 (" in done.stdout
    checked = cli("check", *v2_db.args)
    assert checked.returncode == 0, checked.stdout
    assert checked.stdout.splitlines()[-1] == "checked 3 sessions: all ok"
    assert _ids(v2_db) == ["branchy", "empty", "linear"]

    after = _snapshot(v2_db) if v2_db.kind == "postgres" else None
    again = cli("migrate", "--json", *v2_db.args)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == {
        "found_version": 3,
        "target_version": 3,
        "dry_run": False,
        "migrated": False,
        "statements": [],
    }
    assert cli("migrate", *v2_db.args).stdout.endswith(
        "at schema version 3 already: nothing to migrate\n"
    )
    if after is not None:
        assert _snapshot(v2_db) == after


def test_migrate_refuses_a_newer_database_and_a_missing_one(empty_db: Db, tmp_path: Path) -> None:
    if empty_db.kind == "sqlite":
        empty_db.sql("PRAGMA user_version = 99", ())
    else:
        empty_db.sql("UPDATE lash_schema SET version = 99", ())
    newer = cli("migrate", "--dry-run", *empty_db.args)
    assert newer.returncode == 4
    assert "schema version 99, this lash-machine expects 3" in newer.stderr
    assert "written by a newer lash-machine" in newer.stderr
    missing = cli("migrate", "--db", str(tmp_path / "typo.sqlite3"))
    assert missing.returncode == 3 and "no such file" in missing.stderr
    assert not (tmp_path / "typo.sqlite3").exists()
