"""Corrupt data, written behind the store's back on a SQLite file and on
PostgreSQL: each kind gives either a healed load with a report (through
the driver: a ``SessionHealed`` lifecycle event, and the next commit
writes the repairs) or a clear error naming the session and the node; and
``lash-machine check`` (run as a subprocess) finds each one.

Duplicate node ids cannot be stored (the primary key forbids them); they
arrive in a raw graph, through the wire (a restored state, a forged read,
an export to import), and are healed or refused there.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from test_drivers_support import POLICY
from test_reliability_support import fresh_schema

from lash_machine import CorruptRow, Residency, SchemaVersionMismatch, heal_graph, step, wire
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.drivers.blocking import Driver
from lash_machine.graph import SessionGraph
from lash_machine.persisted import FullGraph
from lash_machine.state import MachineState
from lash_machine.stores import SCHEMA_VERSION, SQLiteStore
from lash_machine.stores.base import SessionStore
from lash_machine.testing.records import make_node

SESSION = "corrupt-me"
ROOT = Path(__file__).parent.parent


class Target:
    """A database to corrupt: how to open it, how to write raw SQL to it,
    and how the CLI names it."""

    def __init__(
        self,
        open_store: Callable[[], SessionStore],
        raw: Callable[[str, tuple[Any, ...]], None],
        cli_args: list[str],
        placeholder: str,
    ) -> None:
        self.open_store = open_store
        self.cli_args = cli_args
        self._raw = raw
        self._placeholder = placeholder

    def sql(self, query: str, *params: Any) -> None:
        """Run ``query`` (``?`` placeholders) on the database directly."""
        self._raw(query.replace("?", self._placeholder), params)


@pytest.fixture(params=["sqlite", "postgres"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Target]:
    if request.param == "sqlite":
        path = str(tmp_path / "corrupt.db")

        def raw_sqlite(query: str, params: tuple[Any, ...]) -> None:
            conn = sqlite3.connect(path, isolation_level=None)
            try:
                conn.execute(query, params)
            finally:
                conn.close()

        yield Target(lambda: SQLiteStore(path), raw_sqlite, ["--db", path], "?")
        return
    request.applymarker(pytest.mark.postgres)
    from lash_machine.stores import PostgresStore

    with fresh_schema(request.getfixturevalue("postgres_dsn")) as dsn:

        def raw_postgres(query: str, params: tuple[Any, ...]) -> None:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(query, params)

        yield Target(lambda: PostgresStore(dsn), raw_postgres, ["--dsn", dsn], "%s")


def _history(target: Target) -> list[str]:
    """A stored session n0 <- n1 <- n2 with a fork n0 <- f; the leaf is n2.
    Returns the node ids in insertion order."""
    store = target.open_store()
    try:
        with Driver(store) as driver:
            session = driver.open(POLICY, SESSION)
            ids = [
                session.append_nodes([make_node(f"n{i}", f"n{i - 1}" if i else None)])
                for i in range(3)
            ]
            session.branch("n0")
            session.append_nodes([make_node("f", "n0")])
            session.branch("n2")
            session.park()
        # A second, healthy session: check must single out the bad one.
        with Driver(store) as driver:
            healthy = driver.open(POLICY, "healthy")
            healthy.append({"ok": True})
            healthy.park()
    finally:
        store.close()
    return [str(i) for i in ids] + ["f"]


def _cli_check(target: Target, *extra: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "lash_machine", *target.cli_args, "check", *extra],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def _checked(target: Target) -> dict[str, Any]:
    code, output = _cli_check(target, "--json")
    assert code == 1, output
    by_session = {entry["session_id"]: entry for entry in json.loads(output)}
    assert by_session["healthy"]["status"] == "ok"
    return by_session[SESSION]  # type: ignore[no-any-return]


def _open_healing(target: Target, residency: Residency) -> tuple[Any, list[fx.SessionHealed]]:
    """Open the session through the driver; return its stored graph after a
    save and the SessionHealed events seen."""
    store = target.open_store()
    try:
        with Driver(store) as driver:
            healed: list[fx.SessionHealed] = []
            driver.hooks.on(
                fx.EmitLifecycle,
                lambda e: healed.append(e.event) if isinstance(e.event, fx.SessionHealed) else None,
            )
            session = driver.open(POLICY, SESSION, residency=residency)
            assert session.state.dirty  # the repairs wait for the next commit
            session.park()
        stored = store.load_graph(SESSION, FullGraph())
    finally:
        store.close()
    return stored, healed


def _is_clean(stored: Any) -> bool:
    return heal_graph(SessionGraph.from_nodes(stored.nodes, stored.leaf_id))[1].is_clean


# ---- healable corruption -----------------------------------------------------------------


@pytest.mark.parametrize("residency", [Residency.KEEP_ALL, Residency.ACTIVE_PATH_ONLY])
def test_a_missing_parent_heals_with_a_report(target: Target, residency: Residency) -> None:
    _history(target)
    target.sql("UPDATE lash_nodes SET parent_id = ? WHERE node_id = ?", "ghost", "n1")
    found = _checked(target)
    assert found["status"] == "needs_repair"
    assert any("n1" in p and "ghost" in p for p in found["problems"]), found
    stored, healed = _open_healing(target, residency)
    (event,) = healed
    assert event.session_id == SESSION
    assert [(c.node_id, c.old_parent_id, c.reason) for c in event.report.parents_cut] == [
        ("n1", "ghost", "dangling")
    ]
    assert _is_clean(stored)
    assert [n.node_id for n in stored.nodes] == ["n0", "n1", "n2", "f"]  # nothing lost
    code, output = _cli_check(target)
    assert code == 0, output


@pytest.mark.parametrize("residency", [Residency.KEEP_ALL, Residency.ACTIVE_PATH_ONLY])
def test_a_parent_cycle_heals_with_a_report(target: Target, residency: Residency) -> None:
    _history(target)
    target.sql("UPDATE lash_nodes SET parent_id = ? WHERE node_id = ?", "n2", "n0")
    found = _checked(target)
    assert found["status"] == "needs_repair"
    assert any("cycle" in p for p in found["problems"]), found
    stored, healed = _open_healing(target, residency)
    (event,) = healed
    assert [(c.node_id, c.reason) for c in event.report.parents_cut] == [("n0", "cycle")]
    assert _is_clean(stored)
    assert {n.node_id for n in stored.nodes} == {"n0", "n1", "n2", "f"}
    code, output = _cli_check(target, SESSION)
    assert code == 0, output


def test_a_dangling_leaf_heals_with_a_report(target: Target) -> None:
    _history(target)
    target.sql("UPDATE lash_sessions SET leaf_id = ? WHERE session_id = ?", "ghost", SESSION)
    found = _checked(target)
    assert found["status"] == "needs_repair"
    assert any("ghost" in p for p in found["problems"]), found
    stored, healed = _open_healing(target, Residency.ACTIVE_PATH_ONLY)
    (event,) = healed
    assert event.report.leaf is not None
    assert (event.report.leaf.old_leaf_id, event.report.leaf.new_leaf_id) == ("ghost", "f")
    assert stored.leaf_id == "f"
    assert _is_clean(stored)
    code, output = _cli_check(target)
    assert code == 0, output


# ---- corruption that cannot be healed: clear errors -------------------------------------


@pytest.mark.parametrize(
    ("column", "value", "detail"),
    [
        ("body", "{not json", "bad JSON"),
        ("body", "", "bad JSON"),
        ("kind", "no-such-kind", "unknown node kind"),
    ],
)
def test_a_corrupt_node_row_is_named(target: Target, column: str, value: str, detail: str) -> None:
    _history(target)
    target.sql(f"UPDATE lash_nodes SET {column} = ? WHERE node_id = ?", value, "n1")
    store = target.open_store()
    try:
        with Driver(store) as driver, pytest.raises(CorruptRow) as caught:
            driver.open(POLICY, SESSION)
    finally:
        store.close()
    assert (caught.value.session_id, caught.value.node_id) == (SESSION, "n1")
    assert detail in str(caught.value) and "'n1'" in str(caught.value)
    found = _checked(target)
    assert found["status"] == "corrupt"
    assert any("n1" in p and detail in p for p in found["problems"]), found
    code, output = _cli_check(target, SESSION)
    assert code == 1 and "CORRUPT" in output and "n1" in output, output


def test_a_corrupt_session_row_is_named(target: Target) -> None:
    _history(target)
    target.sql("UPDATE lash_sessions SET frames = ? WHERE session_id = ?", "[{]", SESSION)
    store = target.open_store()
    try:
        with pytest.raises(CorruptRow) as caught:
            store.load_graph(SESSION, FullGraph())
    finally:
        store.close()
    assert (caught.value.session_id, caught.value.node_id) == (SESSION, None)
    assert "frames" in str(caught.value)
    found = _checked(target)
    assert found["status"] == "corrupt"
    assert any("frames" in p for p in found["problems"]), found


def test_a_wrong_schema_version_is_a_clear_error(target: Target) -> None:
    _history(target)
    if target.cli_args[0] == "--db":
        target.sql("PRAGMA user_version = 99")
    else:
        target.sql("UPDATE lash_schema SET version = 99")
    with pytest.raises(SchemaVersionMismatch) as caught:
        target.open_store()
    assert (caught.value.found, caught.value.expected) == (99, SCHEMA_VERSION)
    assert "99" in str(caught.value)
    code, output = _cli_check(target)
    assert code == 4, output
    assert "schema version 99" in output, output


# ---- duplicate ids: only in a raw graph ------------------------------------------------


def _duplicated_state() -> Any:
    """A SessionState as wire JSON whose graph holds node ``a`` twice."""
    closed = MachineState.initial()
    active, _ = step(closed, ev.Open(POLICY, 1.0, fresh_id="dup", persistent=False))
    active, _ = step(active, ev.Append((make_node("a", None), make_node("b", "a"))))
    data = wire.to_json(active.session)
    twin = dict(data["graph"]["nodes"][0], body={"text": "second copy"})
    data["graph"]["nodes"].append(twin)
    return data


def test_duplicate_ids_in_a_restored_state_are_healed(tmp_path: Path) -> None:
    state = wire.from_json(_duplicated_state())
    assert [n.node_id for n in state.graph] == ["a", "b", "a"]
    store = SQLiteStore(tmp_path / "dup.db")
    try:
        with Driver(store) as driver:
            healed: list[Any] = []
            driver.hooks.on_lifecycle(healed.append)
            session = driver.restore(state, POLICY)
            (event,) = [e for e in healed if isinstance(e, fx.SessionHealed)]
            assert event.report.duplicates_dropped == ("a",)
            assert [n.node_id for n in session.state.graph] == ["a", "b"]
            session.park()
        stored = store.load_graph("dup", FullGraph())
        assert stored is not None
        assert [(n.node_id, n.body) for n in stored.nodes] == [
            ("a", {"text": "a"}),  # the first copy wins
            ("b", {"text": "b"}),
        ]
    finally:
        store.close()


def test_duplicate_ids_in_a_forged_read_are_healed() -> None:
    data = _duplicated_state()
    stored = {
        "format": wire.WIRE_FORMAT,
        "type": "persisted.StoredSession",
        "session_id": "dup",
        "head_revision": 3,
        "policy": wire.unstructure(POLICY),
        "frames": data["frames"],
        "current_frame_id": data["current_frame_id"],
        "nodes": data["graph"]["nodes"],
        "leaf_id": "b",
        "tool_snapshot": None,
        "plugin_snapshot": None,
        "host_checkpoint": None,
    }
    read = wire.from_json(stored)
    opening, (load,) = step(
        MachineState.initial(), ev.Open(POLICY, 1.0, session_id="dup", persistent=True)
    )
    active, effects = step(opening, ev.GraphLoaded(load.request_id, read))
    lifecycle = [e.event for e in effects if isinstance(e, fx.EmitLifecycle)]
    (event,) = [e for e in lifecycle if isinstance(e, fx.SessionHealed)]
    assert event.report.duplicates_dropped == ("a",)
    assert [n.node_id for n in active.session.graph] == ["a", "b"]


def test_the_cli_refuses_to_import_duplicate_ids(tmp_path: Path) -> None:
    data = _duplicated_state()
    export = {
        "format": wire.WIRE_FORMAT,
        "type": "persisted.StoredSession",
        "session_id": "dup",
        "head_revision": 1,
        "policy": wire.unstructure(POLICY),
        "frames": data["frames"],
        "current_frame_id": data["current_frame_id"],
        "nodes": data["graph"]["nodes"],
        "leaf_id": "b",
        "tool_snapshot": None,
        "plugin_snapshot": None,
        "host_checkpoint": None,
    }
    path = tmp_path / "export.json"
    path.write_text(json.dumps(export))
    db = tmp_path / "import.db"
    done = subprocess.run(
        [sys.executable, "-m", "lash_machine", "--db", str(db), "import", "--create", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
    )
    assert done.returncode == 5, done.stdout + done.stderr
    assert "'a'" in done.stderr and "twice" in done.stderr, done.stderr
