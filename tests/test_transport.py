"""A custom transport: the machine in this process, the store (a SQLite
file) in a child process, store effects and results as wire JSON lines."""

from __future__ import annotations

import asyncio
import contextlib
import io
import math
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from test_drivers_support import DRIVERS, POLICY, run_scenario

from lash_machine import HeadRevisionConflict, Phase, Residency, SessionNode, WireError, wire
from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine.drivers.asyncio import Driver
from lash_machine.errors import StoreFailure
from lash_machine.persisted import FullGraph
from lash_machine.stores import MemoryStore, SQLiteStore
from lash_machine.testing.conformance import make_commit, make_node
from lash_machine.transport import RemoteStore, serve_store

SERVE = (
    "import sys\n"
    "from lash_machine.stores import SQLiteStore\n"
    "from lash_machine.transport import serve_store\n"
    "serve_store(SQLiteStore(sys.argv[1]), sys.stdin.buffer, sys.stdout.buffer)\n"
)

Spawn = Callable[[], tuple[RemoteStore, "subprocess.Popen[bytes]"]]


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start store processes on one SQLite file; each gives a RemoteStore."""
    children: list[tuple[RemoteStore, subprocess.Popen[bytes]]] = []

    def start() -> tuple[RemoteStore, subprocess.Popen[bytes]]:
        child = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(tmp_path / "sessions.db")],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdin is not None and child.stdout is not None
        children.append((RemoteStore(child.stdout, child.stdin), child))
        return children[-1]

    yield start
    for remote, child in children:
        remote.close()
        child.wait(timeout=10)


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_full_cycle_across_processes(driver: str, spawn: Spawn, tmp_path: Path) -> None:
    mine, _ = spawn()
    theirs, _ = spawn()

    async def scenario(driver: Any, other: Any) -> None:
        session = await driver.open(POLICY)
        root = await session.append({"text": "question"})
        old = await session.append({"text": "draft"})
        await session.branch(root.node_id)
        await session.append({"text": "answer"})
        attachment = await session.record_attachment("file:///tmp/figure.png")
        parked = await session.park()

        lean = await driver.resume(parked, residency=Residency.ACTIVE_PATH_ONLY)
        assert old.node_id not in lean.state.graph
        assert await lean.load_node(old.node_id) == old
        assert await lean.list_orphans() == (old.node_id,)

        # A second process on the same file wins the race; this one learns
        # the stored head through the wire.
        rival = await other.resume(parked)
        await rival.append({"text": "rival"})
        await rival.park()
        await lean.append({"text": "late"})
        with pytest.raises(HeadRevisionConflict) as conflict:
            await lean.park()
        assert conflict.value.actual == 2
        await lean.close(discard=True)

        store = SQLiteStore(tmp_path / "sessions.db")
        try:
            stored = store.load_graph(session.session_id, FullGraph())
            assert stored is not None and stored.head_revision == 2
            assert old.node_id in {node.node_id for node in stored.nodes}
            assert attachment not in {i.attachment_id for i in store.list_uncommitted(1e12)}
        finally:
            store.close()

    run_scenario(driver, scenario, {"runner": mine}, {"runner": theirs})


def test_a_lost_connection_fails_calls_and_leaves_the_session_usable(spawn: Spawn) -> None:
    remote, child = spawn()

    async def main() -> None:
        driver = Driver(runner=remote)
        session = await driver.open(POLICY)
        await session.append({"text": "unsaved"})
        child.kill()
        child.wait(timeout=10)
        for _ in range(2):  # and again: the broken stream fails fast
            with pytest.raises(StoreFailure) as failure:
                await session.save()
            assert failure.value.failure_code == "transport_error"
            assert session.phase is Phase.ACTIVE and not session._core.state.outstanding
        await session.close(discard=True)

    asyncio.run(main())


def test_serving_over_a_socket() -> None:
    store = MemoryStore()
    ours, theirs = socket.socketpair()
    server = threading.Thread(
        target=serve_store, args=(store, theirs.makefile("rb"), theirs.makefile("wb"))
    )
    server.start()
    remote = RemoteStore(ours.makefile("rb"), ours.makefile("wb"))

    async def main() -> None:
        driver = Driver(runner=remote)
        session = await driver.open(POLICY, "over-a-socket")
        node = await session.append({"text": "hi"})
        parked = await session.park()
        resumed = await driver.resume(parked)
        assert resumed.view.leaf_id == node.node_id

    asyncio.run(main())
    remote.close()
    ours.shutdown(socket.SHUT_WR)
    server.join(timeout=10)
    theirs.close()
    ours.close()
    assert store.load_node("over-a-socket", "missing") is None


def _serve(*lines: str) -> list[str]:
    out = io.BytesIO()
    serve_store(MemoryStore(), io.BytesIO("".join(f"{x}\n" for x in lines).encode()), out)
    return out.getvalue().decode().splitlines()


def test_serve_store_answers_failures_in_order() -> None:
    request = fx.LoadNode(7, "absent", "n1")
    malformed = '{"format": 1, "type": "effects.LoadNode", "request_id": 8}'
    answers = _serve(wire.dumps(request), "", malformed)
    assert wire.loads(answers[0]) == ev.LoadNodeResult(7, None)
    failed = wire.loads(answers[1])
    assert isinstance(failed, ev.EffectFailed) and failed.request_id == 8
    assert failed.error == "wire_error"
    assert len(answers) == 2  # the blank line was skipped


def test_serve_store_stops_at_a_message_it_cannot_answer() -> None:
    with pytest.raises(WireError):
        _serve("not json")
    with pytest.raises(WireError, match="not a store request"):
        _serve(wire.dumps(ev.Save()))


def test_remote_store_refuses_an_answer_to_another_request() -> None:
    answer = wire.dumps(ev.LoadNodeResult(99, None)) + "\n"
    remote = RemoteStore(io.BytesIO(answer.encode()), io.BytesIO())
    outcome = remote(fx.LoadNode(1, "s", "n"))
    assert isinstance(outcome.result, ev.EffectFailed)
    assert outcome.result.error == "transport_error" and outcome.result.request_id == 1
    # The stream is out of step now: later requests fail without trying.
    later = remote(fx.LoadNode(2, "s", "n")).result
    assert isinstance(later, ev.EffectFailed) and "broken" in later.message


class _BrokenWriter(io.BytesIO):
    """A pipe whose reader died: every flush fails as the OS fails it."""

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_commit_that_could_not_be_written_is_not_in_doubt() -> None:
    # The request never left whole, so the store cannot have applied it: a
    # transport error the caller may retry, not CommitOutcomeUnknown.
    remote = RemoteStore(io.BytesIO(), _BrokenWriter())
    outcome = remote(fx.Commit(1, make_commit("s", None, [make_node("a", None, {})])))
    assert isinstance(outcome.result, ev.EffectFailed)
    assert outcome.result.error == "transport_error", outcome.result


def test_a_commit_whose_answer_was_lost_is_in_doubt() -> None:
    remote = RemoteStore(io.BytesIO(), io.BytesIO())  # written, then the stream ends
    outcome = remote(fx.Commit(1, make_commit("s", None, [make_node("a", None, {})])))
    assert isinstance(outcome.result, ev.EffectFailed)
    assert outcome.result.error == "commit_outcome_unknown", outcome.result


def test_serve_store_does_not_run_a_request_cut_short() -> None:
    store = MemoryStore()
    line = wire.dumps(fx.Commit(1, make_commit("s", None, [make_node("a", None, {})])))
    out = io.BytesIO()
    assert serve_store(store, io.BytesIO(line.encode()), out) == 0  # no newline: unfinished
    assert out.getvalue() == b"" and store.load_node("s", "a") is None
    assert serve_store(store, io.BytesIO(line.encode() + b"\n"), out) == 1
    assert store.load_node("s", "a") is not None


# ---- one bad message never stops the store process -------------------------------------


def _legacy_infinite_body(path: Path) -> None:
    """A session whose node body holds an infinity, as a row written before
    bodies were checked."""
    store = SQLiteStore(path)
    try:
        store.commit(make_commit("legacy", None, [make_node("a", None, {"x": 1})]))
    finally:
        store.close()
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE lash_nodes SET body = '{\"x\": Infinity}' WHERE node_id = 'a'")


def test_a_legacy_row_fails_its_reads_and_the_store_process_serves_on(
    spawn: Spawn, tmp_path: Path
) -> None:
    _legacy_infinite_body(tmp_path / "sessions.db")
    remote, child = spawn()
    for request in (fx.LoadNode(1, "legacy", "a"), fx.LoadGraph(2, "legacy", FullGraph())):
        result = remote(request).result
        assert isinstance(result, ev.EffectFailed), result
        assert result.request_id == request.request_id
        assert result.error in ("corrupt_row", "wire_error")
    assert remote(fx.LoadNode(3, "legacy", "missing")).result == ev.LoadNodeResult(3, None)
    assert child.poll() is None


class _HostStore(MemoryStore):
    """A host's own store (the SessionStore protocol is public) that hands
    back what JSON text cannot carry: an infinity in node ``a``'s body."""

    def load_node(self, session_id: str, node_id: str) -> SessionNode | None:
        node = super().load_node(session_id, node_id)
        if node is None or node_id != "a":
            return node
        return attrs.evolve(node, body={"x": math.inf})


class _Served:
    """serve_store in a thread on one end of a socket pair; requests go in
    as raw lines on the other end."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.ours, theirs = socket.socketpair()
        self._theirs = theirs
        self.error: BaseException | None = None
        self.reader = self.ours.makefile("rb")
        self.writer = self.ours.makefile("wb")
        self.store = store or MemoryStore()
        self.thread = threading.Thread(target=self._serve, args=(self.store,))
        self.thread.start()

    def _serve(self, store: MemoryStore) -> None:
        try:
            serve_store(store, self._theirs.makefile("rb"), self._theirs.makefile("wb"))
        except BaseException as error:  # recorded for the test to look at
            self.error = error
        finally:
            # As a store process's exit would: the client sees the end.
            self._theirs.shutdown(socket.SHUT_RDWR)

    def ask(self, line: bytes) -> Any:
        self.writer.write(line + b"\n")
        self.writer.flush()
        answer = self.reader.readline()
        return wire.loads(answer) if answer else None

    def stop(self) -> None:
        with contextlib.suppress(OSError):  # the server may have hung up first
            self.writer.close()
            self.ours.shutdown(socket.SHUT_WR)
        self.thread.join(timeout=10)
        self.reader.close()
        self.ours.close()
        self._theirs.close()


def test_a_deep_request_with_an_id_is_answered_and_serving_goes_on() -> None:
    served = _Served()
    try:
        deep = b"[" * 800 + b"]" * 800  # parses; no store request holds it
        line = b'{"format": 1, "type": "effects.LoadNode", "request_id": 5,'
        answer = served.ask(line + b' "session_id": "s", "node_id": ' + deep + b"}")
        assert isinstance(answer, ev.EffectFailed)
        assert (answer.request_id, answer.error) == (5, "wire_error")
        answer = served.ask(wire.dumps(fx.LoadNode(6, "s", "n")).encode())
        assert answer == ev.LoadNodeResult(6, None)
    finally:
        served.stop()
    assert served.error is None


@pytest.mark.parametrize("depth", [2_000, 100_000])
def test_a_line_nested_past_the_parser_stops_serving_with_a_wire_error(depth: int) -> None:
    served = _Served()
    line = b'{"format": 1, "request_id": 7, "x": ' + b"[" * depth + b"]" * depth + b"}"
    try:
        assert served.ask(line) is None  # no answer: the stream ends
    finally:
        served.stop()
    assert isinstance(served.error, WireError), repr(served.error)


def test_a_result_that_cannot_be_encoded_is_answered_as_a_wire_error() -> None:
    store = _HostStore()
    store.commit(make_commit("host", None, [make_node("a", None, {"x": 1})]))
    served = _Served(store)
    try:
        answer = served.ask(wire.dumps(fx.LoadNode(1, "host", "a")).encode())
        assert isinstance(answer, ev.EffectFailed)
        assert (answer.request_id, answer.error) == (1, "wire_error")
        assert "cannot encode LoadNodeResult" in answer.message
        # In step: the next request gets its own answer.
        answer = served.ask(wire.dumps(fx.LoadNode(2, "host", "b")).encode())
        assert answer == ev.LoadNodeResult(2, None)
    finally:
        served.stop()
    assert served.error is None


def test_a_driver_gets_a_typed_failure_for_a_result_that_cannot_be_sent() -> None:
    store = _HostStore()
    nodes = [make_node("r", None, {}), make_node("a", "r", {"x": 1})]
    store.commit(make_commit("host", None, nodes, leaf_id="r"))
    served = _Served(store)
    remote = RemoteStore(served.reader, served.writer)

    async def main() -> None:
        driver = Driver(runner=remote)
        session = await driver.open(POLICY, "host", residency=Residency.ACTIVE_PATH_ONLY)
        # The failure's code names its exception: the driver raises it.
        with pytest.raises(WireError, match="cannot encode LoadNodeResult"):
            await session.load_node("a")  # off the path: read from the store
        await session.append({"text": "still usable"})
        await session.save()

    try:
        asyncio.run(main())
    finally:
        served.stop()
    assert served.error is None
