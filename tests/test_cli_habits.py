"""What scripts and people expect of a command line: progress on a terminal
(and nothing extra on a pipe), ``sessions --since/--limit``, and ``--json``
on every reading command. Subprocesses, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from cli_support import POLICY, Db, cli, on_terminal

from lash_machine import wire
from lash_machine.cli import main
from lash_machine.cli.parser import since_time
from lash_machine.drivers.blocking import Driver
from lash_machine.stores.leases import LeaseStore


def _many(db: Db, count: int) -> Db:
    store = db.open()
    try:
        with Driver(store) as driver:
            for i in range(count):
                session = driver.open(POLICY, f"s-{i:03}")
                session.append({"role": "user", "content": f"hello {i}"})
                session.park()
    finally:
        store.close()
    return db


# ---- progress ------------------------------------------------------------------------


def test_check_shows_progress_on_a_terminal_and_nothing_on_a_pipe(empty_db: Db) -> None:
    db = _many(empty_db, 30)
    piped = cli("check", *db.args)
    assert (piped.returncode, piped.stderr) == (0, "")
    assert piped.stdout.splitlines()[-1] == "checked 30 sessions: all ok"

    shown, terminal = on_terminal("check", *db.args)
    assert shown.returncode == 0
    assert shown.stdout == piped.stdout  # the results are the same
    assert "\rcheck: 0/30 sessions\x1b[K" in terminal
    assert "\rcheck: 30/30 sessions\x1b[K" in terminal
    assert terminal.endswith("\r\x1b[K")  # erased before the results


def test_vacuum_and_import_show_what_they_do_on_a_terminal_only(db: Db, tmp_path: Path) -> None:
    export = cli("export", "s-main", *db.args).stdout
    store = db.open()
    store.delete_session("s-main")
    store.purge_deleted(float("inf"))  # the id is free again
    store.close()

    piped = cli("vacuum", *db.args)
    assert (piped.returncode, piped.stderr) == (0, "")
    shown, terminal = on_terminal("vacuum", *db.args)
    assert (shown.returncode, shown.stdout) == (0, piped.stdout)
    assert terminal == "\rvacuum: removing tombstoned nodes\x1b[K\r\x1b[K"

    imported, terminal = on_terminal("import", "-", *db.args, stdin=export)
    assert imported.returncode == 0
    assert imported.stdout.startswith("imported session s-main (4 nodes)")
    assert "\rimport: writing 4 nodes in one commit\x1b[K" in terminal
    assert terminal.endswith("\r\x1b[K")
    again = cli("import", "-", *db.args, stdin=export)
    assert again.returncode == 6
    # On a pipe, stderr holds the error and nothing else.
    assert again.stderr.count("\n") == 1 and again.stderr.startswith("lash-machine: error:")


# ---- sessions --since / --limit -----------------------------------------------------


def test_sessions_since_and_limit(empty_db: Db, capsys: pytest.CaptureFixture[str]) -> None:
    db = _many(empty_db, 4)
    long_ago = time.time() - 60 * 86400
    db.sql(
        "UPDATE lash_sessions SET updated_at = ? WHERE session_id IN ('s-000', 's-002')",
        (long_ago,),
    )

    def listed(*args: str) -> list[str]:
        # In-process (the same main() the command runs) for the matrix.
        assert main(["sessions", "--json", *args, *db.args]) == 0
        return [s["session_id"] for s in json.loads(capsys.readouterr().out)]

    assert listed() == ["s-000", "s-001", "s-002", "s-003"]
    assert listed("--since", "30d") == ["s-001", "s-003"]
    assert listed("--since", "1w3d12h") == ["s-001", "s-003"]
    assert listed("--since", "90d") == ["s-000", "s-001", "s-002", "s-003"]
    day = time.strftime("%Y-%m-%d", time.gmtime(long_ago + 86400))
    assert listed("--since", day) == ["s-001", "s-003"]
    assert listed("--since", "2999-01-01T00:00:00+02:00") == []
    assert listed("--limit", "3") == ["s-000", "s-001", "s-002"]
    for bad, says in (("--limit", "0"), ("--since", "yesterday"), ("--since", "3x")):
        with pytest.raises(SystemExit) as refused:
            main(["sessions", bad, says, *db.args])
        assert refused.value.code == 2
        assert f"argument {bad}:" in capsys.readouterr().err

    both = cli("sessions", "--since", "30d", "--limit", "1", *db.args)
    assert both.returncode == 0, both.stderr
    lines = both.stdout.splitlines()
    assert [line.split()[0] for line in lines[1:]] == ["s-001", "..."]
    assert lines[2] == "... and 1 more session (--limit 1)"
    none = cli("sessions", "--since", "2999-01-01", "--json", *db.args)
    assert (none.returncode, json.loads(none.stdout)) == (0, [])


def test_since_reads_iso_times_in_utc_and_durations_back_from_now() -> None:
    now = 1_700_000_000.0
    assert since_time("30d", now) == now - 30 * 86400
    assert since_time("1h30m", now) == now - 5400
    assert since_time("1.5s", now) == now - 1.5
    assert since_time("2023-11-14T22:13:20Z", now) == 1_700_000_000.0
    assert since_time("2023-11-14T22:13:20", now) == 1_700_000_000.0  # UTC when unsaid
    assert since_time("2023-11-15T00:13:20+02:00", now) == 1_700_000_000.0
    assert since_time("2023-11-14", now) == 1_699_920_000.0
    with pytest.raises(ValueError, match="nor a duration"):
        since_time("30 days", now)


# ---- --json on every reading command ------------------------------------------------


def test_show_json(db: Db) -> None:
    shown = cli("show", "s-main", "--json", *db.args)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    assert set(data) == {
        "session_id",
        "head_revision",
        "policy",
        "current_frame_id",
        "leaf_id",
        "lease",
        "origin",
        "active_path",
        "orphans",
        "pinned",
        "kept_orphans",
        "summaries",
        "compacted",
        "repairs",
        "nodes",
    }
    assert (data["origin"], data["pinned"], data["kept_orphans"]) == (None, [], [])
    assert (data["summaries"], data["compacted"]) == ([], [])
    assert (data["session_id"], data["head_revision"], data["leaf_id"]) == ("s-main", 1, "n4")
    assert data["policy"] == wire.unstructure(POLICY)
    assert data["current_frame_id"] == "s-main:frame:initial"
    assert (data["active_path"], data["orphans"]) == (["n1", "n2", "n4"], ["n3"])
    assert (data["lease"], data["repairs"]) == (None, [])
    assert [n["node_id"] for n in data["nodes"]] == ["n1", "n2", "n3", "n4"]
    assert data["nodes"][0] == {
        "node_id": "n1",
        "parent_id": None,
        "kind": "message",
        "body": {"role": "user", "content": "Plan a weekend in Lisbon."},
        "frame_id": "s-main:frame:initial",
        "created_at": data["nodes"][0]["created_at"],
    }

    store = db.open()
    assert isinstance(store, LeaseStore)
    lease = store.claim_lease("s-main", "worker-1", ttl=60)
    try:
        db.sql(
            "UPDATE lash_nodes SET parent_id = 'ghost' WHERE session_id = ? AND node_id = ?",
            ("s-main", "n2"),
        )
        data = json.loads(cli("show", "s-main", "--json", *db.args).stdout)
    finally:
        store.release_lease(lease)
        store.close()
    assert data["lease"] == {
        "owner": "worker-1",
        "token": lease.token,
        "expires_at": lease.expires_at,
    }
    assert data["repairs"] == ["node n2: its parent ghost is missing; the node becomes a root"]


def test_every_reading_command_has_json_and_its_help_says_its_shape(
    capsys: pytest.CaptureFixture[str],
) -> None:
    for command, shape in (
        ("sessions", "session_id, head_revision, node_count"),
        ("show", "active_path (node ids, root first)"),
        ("orphans", "an array of nodes"),
        ("check", "status (ok,"),
        ("expire", "expired (session ids), nodes_removed, kept_leased"),
        ("migrate", "found_version, target_version, dry_run, migrated"),
    ):
        with pytest.raises(SystemExit) as helped:
            main([command, "--help"])
        assert helped.value.code == 0
        text = re.sub(r"\s+", " ", capsys.readouterr().out)
        assert "--json" in text, command
        assert shape in text, command
