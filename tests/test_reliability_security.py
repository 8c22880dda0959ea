"""Security: sessions stay apart through every API whatever their ids look
like, awkward ids round-trip through every store, and a DSN's password
never shows in errors, logs or attributes.

Decisions recorded here: PostgreSQL text cannot hold NUL, so its store
refuses ids with NUL with a clear StoreError (reads of them find nothing)
rather than encoding them; text that is not valid Unicode (a lone
surrogate) is refused by both SQL stores with StoreError.
"""

from __future__ import annotations

import logging
import traceback
import unicodedata
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_drivers_support import DRIVERS, POLICY, StoreFactory, run_scenario, store_factory
from test_reliability_support import fresh_schema, password_server

from lash_machine import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    InvalidEvent,
    Reparent,
    Residency,
    StoreError,
)
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.drivers import Outcome, StoreRunner
from lash_machine.errors import StoreFailure
from lash_machine.stores import MemoryStore, SQLiteStore
from lash_machine.stores.base import SessionStore
from lash_machine.testing.conformance import make_commit, make_node

#: Ids that have confused storage layers: SQL and LIKE syntax, driver
#: placeholders, quotes and escapes, case and whitespace twins, Unicode
#: normalization twins and invisible characters, path-like ids, the empty id.
CRAFTED = [
    "a",
    "A",
    "a ",
    " a",
    "a%",
    "%",
    "_",
    "a_",
    "*",
    "'",
    "''",
    '"',
    "a'; DROP TABLE lash_nodes; --",
    "' OR '1'='1",
    "\\",
    "a\\",
    "%s",
    "%(sid)s",
    "$1",
    "?",
    ":sid",
    "NULL",
    unicodedata.normalize("NFC", "é"),
    unicodedata.normalize("NFD", "é"),
    "ﬁ",
    "fi",
    "İ",
    "\u200b",
    "a\u200b",
    "🧵",
    "a/b",
    "../a",
    "",
]
NUL_IDS = ["a\x00", "\x00", "a\x00b"]


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SessionStore]:
    if request.param == "memory":
        store: SessionStore = MemoryStore()
    elif request.param == "sqlite":
        store = SQLiteStore(tmp_path / "security.db")
    else:
        request.applymarker(pytest.mark.postgres)
        from lash_machine.stores import PostgresStore

        with fresh_schema(request.getfixturevalue("postgres_dsn")) as dsn:
            store = PostgresStore(dsn)
            yield store
            store.close()
        return
    yield store
    store.close()


def _supports_nul(store: SessionStore) -> bool:
    return type(store).__name__ != "PostgresStore"


def _body(session_id: str, node_id: str) -> dict[str, str]:
    return {"session": session_id, "node": node_id}


def _populate(store: SessionStore, sessions: list[str], nodes: list[str]) -> None:
    """Every session holds every crafted node id (a chain, so the active
    path covers them all) plus one id only it has; bodies say whose."""
    for session_id in sessions:
        ids = [*nodes, f"{session_id}|own"]
        chain = [
            make_node(node_id, ids[i - 1] if i else None, _body(session_id, node_id))
            for i, node_id in enumerate(ids)
        ]
        store.commit(make_commit(session_id, None, chain))
        store.record_intent(AttachmentIntent(session_id, "att", f"file:///{session_id}", 1.0))


def _check_intact(store: SessionStore, sessions: list[str], nodes: list[str]) -> None:
    for session_id in sessions:
        ids = [*nodes, f"{session_id}|own"]
        for scope in (FullGraph(), ActivePath()):
            loaded = store.load_graph(session_id, scope)
            assert loaded is not None
            assert loaded.session_id == session_id
            assert [n.node_id for n in loaded.nodes] == ids, (session_id, scope)
            assert all(n.body == _body(session_id, n.node_id) for n in loaded.nodes)
        for node_id in ids:
            node = store.load_node(session_id, node_id)
            assert node is not None
            assert node.body == _body(session_id, node_id)


def test_crafted_ids_round_trip_and_stay_apart(any_store: SessionStore) -> None:
    store = any_store
    nul = NUL_IDS if _supports_nul(store) else []
    sessions = [*CRAFTED, *nul]
    # Every crafted id but the empty one, which no node may have.
    nodes = [node_id for node_id in [*CRAFTED, *nul] if node_id]
    _populate(store, sessions, nodes)
    _check_intact(store, sessions, nodes)
    assert [i.session_id for i in store.list_sessions()] == sorted(sessions)

    # Every session tries to reach every other session's own node.
    for session_id in sessions:
        for other in sessions:
            if other == session_id:
                continue
            theirs = f"{other}|own"
            assert store.load_node(session_id, theirs) is None
            path = store.load_graph(session_id, ActivePath(theirs))
            assert path is not None and path.nodes == ()
            assert store.tombstone_nodes(session_id, [theirs]) == 0
            assert store.forget(session_id, f"{other}-att") is False
    _check_intact(store, sessions, nodes)

    # Writes in one session never touch another's rows: a repair naming
    # another session's node, an adoption of its attachment, tombstoning
    # and deleting every id there is.
    victim, attacker = sessions[0], sessions[1]
    head = store.load_graph(attacker, ActivePath())
    assert head is not None
    store.commit(
        make_commit(
            attacker,
            head.head_revision,
            [],
            # The leaf moves off the chain so that all of it may be hidden.
            leaf_id=None,
            reparented=[Reparent(f"{victim}|own", None)],
            adopt=["att"],
        )
    )
    everything = [*nodes, *(f"{s}|own" for s in sessions)]
    assert store.tombstone_nodes(attacker, everything) == len(nodes) + 1
    assert store.delete_session(attacker) is True
    survivors = [s for s in sessions if s != attacker]
    _check_intact(store, survivors, nodes)
    assert {i.session_id for i in store.list_uncommitted(10.0)} == set(survivors)
    # Vacuum removes only what was tombstoned (nothing was, in survivors).
    store.vacuum()
    _check_intact(store, survivors, nodes)


def test_nul_and_invalid_unicode_get_clear_errors(any_store: SessionStore) -> None:
    store = any_store
    if not _supports_nul(store):
        for call in (
            lambda: store.commit(make_commit("s\x00", None, [make_node("a")])),
            lambda: store.commit(make_commit("s", None, [make_node("a\x00")])),
            lambda: store.record_intent(AttachmentIntent("s", "a\x00", "u", 1.0)),
        ):
            with pytest.raises(StoreError, match="NUL"):
                call()
        assert store.load_node("s", "a\x00") is None
        assert store.list_sessions() == []
    if isinstance(store, MemoryStore):
        # The reference store keeps any str; the SQL stores cannot.
        store.commit(make_commit("s\ud800", None, [make_node("\udfff")]))
        assert store.load_node("s\ud800", "\udfff") is not None
        return
    for call in (
        lambda: store.commit(make_commit("s\ud800", None, [make_node("a")])),
        lambda: store.commit(make_commit("s", None, [make_node("a\udfff")])),
        lambda: store.load_node("s", "\ud800"),
    ):
        with pytest.raises(StoreError, match="cannot hold"):
            call()
    assert store.list_sessions() == []


# ---- through the drivers -------------------------------------------------------------


@pytest.fixture
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    yield from store_factory(request, tmp_path)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("open_store", ["sqlite", "postgres"], indirect=True)
def test_no_driver_call_reaches_another_sessions_nodes(
    driver: str, open_store: StoreFactory
) -> None:
    store = open_store()
    # The driver tests share one PostgreSQL schema: ids unique to this run.
    tag = uuid.uuid4().hex[:8]
    victim_id, attacker_id = f"victim' OR '1'='1{tag}", f"%{tag}%"

    async def scenario(one: Any) -> None:
        victim = await one.open(POLICY, victim_id)
        root = await victim.append({"secret": 1})
        secret = await victim.append({"secret": 2})
        await victim.branch(root.node_id)
        await victim.append({"secret": 3})
        parked = await victim.park()
        for residency in (Residency.KEEP_ALL, Residency.ACTIVE_PATH_ONLY):
            attacker = await one.open(POLICY, attacker_id, residency=residency)
            await attacker.append({"mine": True})
            for node_id in (root.node_id, secret.node_id, "%", "' OR '1'='1"):
                assert await attacker.load_node(node_id) is None
                with pytest.raises(InvalidEvent):
                    await attacker.branch(node_id)
            assert await attacker.tombstone([root.node_id, secret.node_id]) == 0
            assert root.node_id not in await attacker.list_orphans()
            await attacker.park()
        again = await one.resume(parked)
        assert await again.load_node(secret.node_id) == secret
        assert set(await again.list_orphans()) == {secret.node_id}
        await again.close()

    run_scenario(driver, scenario, store)
    stored = store.load_graph(victim_id, FullGraph())
    assert stored is not None and len(stored.nodes) == 3


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_forged_read_of_another_session_is_never_fed(driver: str, tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.db")
    store.commit(make_commit("other", None, [make_node("theirs", None, {"secret": True})]))
    honest = StoreRunner(store)

    def forging(request: fx.StoreRequest) -> Outcome:
        if isinstance(request, fx.LoadGraph):
            # Answer with another session's graph, as a confused or hostile
            # transport might.
            return Outcome(
                ev.GraphLoaded(request.request_id, store.load_graph("other", FullGraph()))
            )
        return honest(request)

    async def scenario(one: Any) -> None:
        with pytest.raises(StoreFailure, match="protocol_error"):
            await one.open(POLICY, "mine")

    try:
        run_scenario(driver, scenario, {"runner": forging})
        # Nothing of the other session was taken in, nor written as "mine".
        assert store.load_graph("mine", FullGraph()) is None
    finally:
        store.close()


# ---- DSN passwords ------------------------------------------------------------------

PASSWORD = "Pa55-w0rd-%s-secret"


def _all_text(error: BaseException) -> str:
    return str(error) + repr(error) + "".join(traceback.format_exception(error))


def _dsns(host: str, port: int, password: str) -> list[str]:
    quoted = password.replace("%", "%25")
    return [
        f"postgresql://postgres:{quoted}@{host}:{port}/postgres",
        f"postgresql://postgres@{host}:{port}/postgres?password={quoted}",
        f"host={host} port={port} user=postgres dbname=postgres password={password}",
        f"host={host} port={port} user=postgres dbname=postgres password='{password}'",
    ]


@pytest.fixture(scope="module")
def secured() -> Iterator[tuple[str, int]]:
    with password_server(PASSWORD) as address:
        yield address


def test_a_refused_password_is_reported_without_it(
    secured: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    from lash_machine.stores import PostgresStore

    caplog.set_level(logging.DEBUG)
    host, port = secured
    wrong = "Wr0ng-" + PASSWORD
    for dsn in _dsns(host, port, wrong):
        with pytest.raises(StoreError) as caught:
            PostgresStore(dsn, timeout=5.0)
        text = _all_text(caught.value)
        assert "password authentication failed" in text  # a clear reason
        assert wrong not in text and PASSWORD not in text, text
        assert "Wr0ng" not in text, text
    assert "Wr0ng" not in caplog.text


def test_unreachable_and_malformed_dsns_are_reported_without_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from lash_machine.stores import PostgresStore

    caplog.set_level(logging.DEBUG)
    bad = [
        *_dsns("127.0.0.1", 1, PASSWORD),  # nothing listens on port 1
        f"postgresql://postgres:{PASSWORD}@[::1:5432/postgres",  # unbalanced bracket
        f"host=127.0.0.1 password={PASSWORD} bogus",
        f"postgresql://postgres:{PASSWORD}@127.0.0.1:notaport/postgres",
        f"postgresql://postgres:{PASSWORD}@no-such-host.invalid/postgres",
    ]
    for dsn in bad:
        with pytest.raises(StoreError) as caught:
            PostgresStore(dsn, timeout=2.0)
        text = _all_text(caught.value)
        assert PASSWORD not in text and "w0rd" not in text, text
        assert "***" in str(caught.value) or "password" not in dsn
    assert "w0rd" not in caplog.text


def test_a_working_store_never_shows_its_password(
    secured: tuple[str, int], caplog: pytest.LogCaptureFixture
) -> None:
    from lash_machine.stores import PostgresStore

    caplog.set_level(logging.DEBUG)
    host, port = secured
    for dsn in _dsns(host, port, PASSWORD):
        store = PostgresStore(dsn)
        try:
            assert "w0rd" not in store.dsn and "***" in store.dsn
            assert "w0rd" not in repr(store) + str(vars(store).get("dsn"))
            store.commit(make_commit("s", None, [make_node("a")]))
            assert store.delete_session("s") is True
        finally:
            store.close()
        with pytest.raises(StoreError) as caught:
            store.list_sessions()
        assert "w0rd" not in _all_text(caught.value)
    assert "w0rd" not in caplog.text
