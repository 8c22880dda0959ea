"""The ``lash-machine`` command, run as users run it: a subprocess
(``python -m lash_machine``), real exit codes, real output, against SQLite
files and a PostgreSQL schema."""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest
from cli_support import POLICY, Db, cli, load

from lash_machine import wire
from lash_machine.persisted import StoredSession
from lash_machine.stores.leases import LeaseStore

# ---- reading ---------------------------------------------------------------------


def test_sessions_lists_every_session_as_a_table_or_json(db: Db) -> None:
    # The database may also be named before the command.
    table = cli(*db.args, "sessions")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["SESSION", "HEAD", "NODES", "UPDATED", "(UTC)"]
    assert re.match(r"s-main\s+1\s+4\s+\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", lines[1])
    assert re.match(r"s-other\s+1\s+1\s", lines[2])

    listed = json.loads(cli("sessions", "--json", *db.args).stdout)
    assert [(s["session_id"], s["head_revision"], s["node_count"]) for s in listed] == [
        ("s-main", 1, 4),
        ("s-other", 1, 1),
    ]
    assert all(isinstance(s["updated_at"], float) for s in listed)


def test_show_draws_the_tree_with_the_active_path_and_orphans_marked(db: Db) -> None:
    shown = cli("show", "s-main", *db.args)
    assert shown.returncode == 0, shown.stderr
    assert "head revision 1, 4 nodes (3 on the active path, 1 orphan)" in shown.stdout
    tree = shown.stdout.split("(off the active path)\n", 1)[1].splitlines()
    assert tree == [
        "*  n1  user: Plan a weekend in Lisbon.",
        "*  n2  assistant: Alfama, then Belem.",
        "o  ├─ n3  user: Make it cheaper.",
        "*  └─ n4  user: Swap day 2 for Sintra.  → leaf",
    ]
    # A unique prefix names a session; an unknown id is "not found".
    assert cli("show", "s-ot", *db.args).stdout.startswith("session s-other\n")
    missing = cli("show", "s-nope", *db.args)
    assert (missing.returncode, missing.stderr) == (
        3,
        f"lash-machine: error: no session 's-nope' in {_label(db)}\n",
    )


def _label(db: Db) -> str:
    return db.args[1]


# ---- maintenance -----------------------------------------------------------------


def test_orphans_prune_and_vacuum(db: Db) -> None:
    listed = cli("orphans", "s-main", "--json", *db.args)
    assert [node["node_id"] for node in json.loads(listed.stdout)] == ["n3"]

    # Tombstones are not fenced: a worker holding the session keeps prune out.
    store = db.open()
    assert isinstance(store, LeaseStore)
    lease = store.claim_lease("s-main", "worker-1", ttl=60)
    try:
        shown = cli("show", "s-main", *db.args)
        assert "in use: worker-1 holds its lease until " in shown.stdout
        refused = cli("prune", "s-main", *db.args)
        assert refused.returncode == 6
        assert "'s-main' is in use: 'worker-1' holds its lease until" in refused.stderr
    finally:
        store.release_lease(lease)
        store.close()

    pruned = cli("prune", "s-main", *db.args)
    assert pruned.returncode == 0, pruned.stderr
    assert "tombstoned 1 orphan" in pruned.stdout
    after = cli("orphans", "s-main", *db.args)
    assert after.stdout == "session s-main: no orphans\n"

    vacuumed = cli("vacuum", *db.args)
    assert (vacuumed.returncode, vacuumed.stdout) == (0, "vacuum: removed 1 tombstoned node\n")
    stored = load(db, "s-main")
    assert stored is not None
    assert [n.node_id for n in stored.nodes] == ["n1", "n2", "n4"]


def test_check_finds_a_graph_to_repair_and_heal_commits_the_repair(db: Db) -> None:
    db.sql(
        "UPDATE lash_nodes SET parent_id = 'ghost' WHERE session_id = ? AND node_id = ?",
        ("s-main", "n2"),
    )

    checked = cli("check", *db.args)
    assert checked.returncode == 1, checked.stderr
    assert "REPAIR   s-main  4 nodes" in checked.stdout
    assert "node n2: its parent ghost is missing; the node becomes a root" in checked.stdout
    assert "ok       s-other  1 node" in checked.stdout

    dry = cli("heal", "s-main", *db.args)
    assert dry.returncode == 1
    assert "dry run: nothing written" in dry.stdout
    unchanged = load(db, "s-main")
    assert unchanged is not None and unchanged.head_revision == 1

    applied = cli("heal", "s-main", "--apply", *db.args)
    assert applied.returncode == 0, applied.stderr
    assert "committed the repairs: head revision 1 -> 2" in applied.stdout
    healed = load(db, "s-main")
    assert healed is not None
    assert {n.node_id: n.parent_id for n in healed.nodes}["n2"] is None

    clean = cli("check", "s-main", *db.args)
    assert (clean.returncode, clean.stdout.splitlines()[-1]) == (0, "checked 1 session: all ok")


def test_a_corrupt_row_is_named_by_check_and_refused_by_show(db: Db) -> None:
    db.sql(
        "UPDATE lash_nodes SET body = 'not json' WHERE session_id = ? AND node_id = ?",
        ("s-main", "n2"),
    )

    checked = cli("check", "--json", *db.args)
    assert checked.returncode == 1
    report = {r["session_id"]: r for r in json.loads(checked.stdout)}
    assert report["s-main"]["status"] == "corrupt"
    assert "session 's-main', node 'n2'" in report["s-main"]["problems"][0]
    assert report["s-other"]["status"] == "ok"

    shown = cli("show", "s-main", *db.args)
    assert shown.returncode == 4
    assert "corrupt row in session 's-main', node 'n2': body: bad JSON" in shown.stderr


# ---- moving sessions -------------------------------------------------------------


def test_export_then_import_recreates_the_session(db: Db, tmp_path: Path) -> None:
    target = tmp_path / "s-main.json"
    written = cli("export", "s-main", "-o", str(target), *db.args)
    assert written.returncode == 0, written.stderr
    assert cli("export", "s-main", *db.args).stdout == target.read_text()
    before = wire.loads(target.read_text(), StoredSession)

    again = cli("import", str(target), *db.args)
    assert again.returncode == 6
    assert "session s-main already exists" in again.stderr

    store = db.open()
    store.delete_session("s-main")
    store.close()
    # A deleted session stays deleted: its id is refused until purged.
    refused = cli("import", str(target), *db.args)
    assert refused.returncode == 6
    assert "s-main was deleted" in refused.stderr and "purge" in refused.stderr
    store = db.open()
    store.purge_deleted(float("inf"))
    store.close()
    imported = cli("import", str(target), *db.args)
    assert imported.returncode == 0, imported.stderr
    assert "imported session s-main (4 nodes) at head revision 1" in imported.stdout
    after = load(db, "s-main")
    assert after is not None
    assert (after.nodes, after.leaf_id, after.frames) == (
        before.nodes,
        before.leaf_id,
        before.frames,
    )


def test_import_refuses_malformed_files(db: Db, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"format": 1, "type": "persisted.StoredSession", "session_id": 5}))
    refused = cli("import", str(bad), *db.args)
    assert refused.returncode == 5
    assert "not a wire-format session export" in refused.stderr
    assert "expected str @ $.session_id" in refused.stderr
    assert "required field missing @ $.nodes" in refused.stderr

    missing = cli("import", str(tmp_path / "nope.json"), *db.args)
    assert (missing.returncode, missing.stderr) == (
        3,
        f"lash-machine: error: {tmp_path / 'nope.json'}: no such file\n",
    )


# ---- what the database must be ---------------------------------------------------


def test_another_schema_version_is_refused(empty_db: Db) -> None:
    if empty_db.kind == "sqlite":
        empty_db.sql("PRAGMA user_version = 99", ())
    else:
        empty_db.sql("UPDATE lash_schema SET version = 99", ())
    refused = cli("sessions", *empty_db.args)
    assert refused.returncode == 4
    assert "schema version 99, this lash-machine expects" in refused.stderr


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def no_db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, ...]:
    """CLI arguments naming a database that does not exist yet: a missing
    file, or a schema without our tables."""
    if request.param == "sqlite":
        return ("--db", str(tmp_path / "typo.sqlite3"))
    return ("--dsn", request.getfixturevalue("postgres_schema"))


def test_only_import_create_makes_a_database(no_db: tuple[str, ...], tmp_path: Path) -> None:
    export = tmp_path / "s.json"
    export.write_text(wire.dumps(StoredSession("s", 7, POLICY, (), "", (), None)))
    for command in (("sessions",), ("check",), ("import", str(export))):
        missing = cli(*command, *no_db)
        assert missing.returncode == 3, missing.stderr
        assert "no such file" in missing.stderr or "no lash-machine tables here" in missing.stderr
    if no_db[0] == "--db":
        assert not Path(no_db[1]).exists()

    created = cli("import", str(export), "--create", *no_db)
    assert created.returncode == 0, created.stderr
    assert "imported session s (0 nodes) at head revision 1" in created.stdout
    assert cli("sessions", "--json", *no_db).stdout.count('"session_id": "s"') == 1


def test_an_unreachable_postgres_fails_fast_and_never_prints_the_password() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    refused = cli("sessions", "--dsn", f"postgresql://me:s3cr%40t@127.0.0.1:{port}/db")
    assert refused.returncode == 4
    assert f"cannot reach PostgreSQL at postgresql://me:***@127.0.0.1:{port}/db" in refused.stderr
    assert "s3cr" not in refused.stderr + refused.stdout

    # A server that accepts connections and never answers: the connect
    # timeout (3 s) ends the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        dsn = f"host=127.0.0.1 port={silent.getsockname()[1]} user=me password='pa ss'"
        start = time.monotonic()
        stuck = cli("vacuum", "--dsn", dsn)
        elapsed = time.monotonic() - start
    assert stuck.returncode == 4
    assert "password=***" in stuck.stderr and "pa ss" not in stuck.stderr
    assert elapsed < 10


# ---- the demo and the command line itself ----------------------------------------


def test_demo_narrates_a_session_on_a_new_file(tmp_path: Path) -> None:
    demo = cli("demo", cwd=tmp_path)
    assert demo.returncode == 0, demo.stderr
    [path] = tmp_path.glob("lash-demo-*.sqlite3")
    assert f"database: {path.name} (a new SQLite file)" in demo.stdout
    steps = re.findall(r"^\s*(\d+)\. .*\s\d+\.\d ms$", demo.stdout, flags=re.MULTILINE)
    assert steps == [str(i) for i in range(1, 11)]
    for shown in (
        "event  SessionOpened",
        "store  LoadGraph(active path) → 4 nodes",
        "store  LoadNode(",
        "store  TombstoneNodes(2 nodes) → 2 hidden",
        "store  vacuum() → 2 nodes removed",
        "event  SessionClosed",
        "o  ├─ ",
        "→ leaf",
    ):
        assert shown in demo.stdout
    # The file is a healthy lash-machine database.
    assert cli("check", "--db", str(path)).returncode == 0

    refused = cli("demo", "--db", str(path))
    assert refused.returncode == 6
    assert "exists: the demo only writes to a new file" in refused.stderr


def test_help_documents_the_exit_codes_and_usage_errors_exit_2() -> None:
    helped = cli("--help")
    assert helped.returncode == 0
    assert "exit codes:" in helped.stdout
    for code in range(7):
        assert re.search(rf"^  {code}  ", helped.stdout, flags=re.MULTILINE)
    nowhere = cli("sessions")
    assert nowhere.returncode == 2
    assert "--db PATH (SQLite) or --dsn URL (PostgreSQL)" in nowhere.stderr
