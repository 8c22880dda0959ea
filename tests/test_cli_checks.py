"""``lash-machine check --checks``: content checks over stored sessions,
run as users run the command (a subprocess), on SQLite and PostgreSQL.
Sessions whose active path fails a check are reported (exit 1); nothing
is written; a driver given the same checks repairs them, after which the
command passes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_support import DATABASES, POLICY, Db, cli, empty_database, load, seed

from lash_machine.checks import ANTHROPIC_TOOL_USE, OPENAI_TOOL_CALLS
from lash_machine.drivers.blocking import Driver

OPENAI_CALL = {
    "role": "assistant",
    "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "weather"}}],
}
ANTHROPIC_CALL = {
    "role": "assistant",
    "content": [{"type": "tool_use", "id": "toolu_1", "name": "search", "input": {}}],
}


@pytest.fixture(params=DATABASES)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Db:
    """The two seeded sessions, plus one cut off in an OpenAI tool call and
    one in an Anthropic tool use."""
    db = seed(
        empty_database(request.param, tmp_path, lambda: request.getfixturevalue("postgres_schema"))
    )
    store = db.open()
    try:
        with Driver(store) as driver:
            for session_id, call in (("s-openai", OPENAI_CALL), ("s-anthropic", ANTHROPIC_CALL)):
                session = driver.open(POLICY, session_id)
                session.append({"role": "user", "content": "look it up"})
                session.append(call)
                session.park()
    finally:
        store.close()
    return db


def test_check_reports_each_session_whose_path_fails_a_check_and_writes_nothing(db: Db) -> None:
    plain = cli("check", *db.args)
    assert plain.returncode == 0, plain.stdout + plain.stderr  # no content checks asked for

    found = cli("check", "--checks", "openai-tool-calls,anthropic-tool-use", *db.args)
    assert found.returncode == 1, found.stderr
    lines = found.stdout.splitlines()
    assert "FAILS    s-openai  2 nodes" in lines
    assert "         openai-tool-calls: tool call 'call_1' (weather) in node" in found.stdout
    assert "FAILS    s-anthropic  2 nodes" in lines
    assert "anthropic-tool-use: tool call 'toolu_1' (search) in node" in found.stdout
    assert "ok       s-main  4 nodes" in lines and "ok       s-other  1 node" in lines
    assert "checked 4 sessions: 0 need repair, 2 fail a check, 0 with corrupt rows" in lines
    assert "checks=[...]" in found.stdout

    one = cli("check", "s-openai", "--checks", "anthropic-tool-use", *db.args)
    assert (one.returncode, one.stdout.splitlines()[-1]) == (0, "checked 1 session: all ok")

    as_json = cli("check", "--json", "--checks", "openai-tool-calls", *db.args)
    assert as_json.returncode == 1
    by_id = {r["session_id"]: r for r in json.loads(as_json.stdout)}
    assert by_id["s-openai"]["status"] == "fails_check"
    assert by_id["s-openai"]["problems"][0].startswith("openai-tool-calls: tool call 'call_1'")
    assert by_id["s-anthropic"]["status"] == "ok"

    for session_id in ("s-openai", "s-anthropic"):
        stored = load(db, session_id)
        assert stored is not None and stored.head_revision == 1 and len(stored.nodes) == 2


def test_a_session_repaired_by_a_driver_passes(db: Db) -> None:
    store = db.open()
    try:
        with Driver(store, checks=[OPENAI_TOOL_CALLS, ANTHROPIC_TOOL_USE]) as driver:
            for session_id in ("s-openai", "s-anthropic"):
                driver.open(POLICY, session_id).park()
    finally:
        store.close()
    clean = cli("check", "--checks", "openai-tool-calls,anthropic-tool-use", *db.args)
    assert clean.returncode == 0, clean.stdout
    assert clean.stdout.splitlines()[-1] == "checked 4 sessions: all ok"


def test_a_graph_that_needs_repair_and_fails_a_check_reports_both(db: Db) -> None:
    stored = load(db, "s-openai")
    assert stored is not None
    first = stored.nodes[0].node_id
    db.sql(
        "UPDATE lash_nodes SET parent_id = 'ghost' WHERE session_id = ? AND node_id = ?",
        ("s-openai", first),
    )
    found = cli("check", "s-openai", "--checks", "openai-tool-calls", *db.args)
    assert found.returncode == 1
    assert "REPAIR   s-openai  2 nodes" in found.stdout
    assert "its parent ghost is missing" in found.stdout
    assert "openai-tool-calls: tool call 'call_1'" in found.stdout


def test_an_unknown_check_is_a_usage_error_naming_the_known_ones(tmp_path: Path) -> None:
    result = cli("check", "--db", str(tmp_path / "none.db"), "--checks", "openai,anthropic")
    assert result.returncode == 2
    assert "no check named 'openai'; the checks are: anthropic-tool-use, openai-tool-calls" in (
        result.stderr
    )
