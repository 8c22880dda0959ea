"""The web examples, served for real on loopback and driven over HTTP.

``examples/web_asgi.py`` (Starlette under uvicorn, asyncio) and
``examples/web_trio.py`` (a plain ASGI app under hypercorn's trio worker)
run in a thread of this process, or as the command a user runs; httpx
talks to them. Races are staged: the example's assistant (the model call
between the user's message and the park) is replaced by a gate the test
opens, so the second request always arrives while the first is inside its
turn.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from types import ModuleType
from typing import Any

import anyio.to_thread
import httpx
import hypercorn.trio
import pytest
import trio
import uvicorn
from hypercorn.config import Config

from lash_machine import ModelSpec, ParkedSession, Residency, SessionPolicy, wire
from lash_machine import effects as fx
from lash_machine.persisted import ActivePath, FullGraph
from lash_machine.stores import SQLiteStore

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
KINDS = ["web_asgi", "web_trio"]
#: Every wait of this file is bounded by this many seconds.
TIMEOUT = 20.0


def _example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"lash_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


MODULES = {name: _example(name) for name in KINDS}


# ---- serving ------------------------------------------------------------------------


@contextlib.contextmanager
def _uvicorn(app: Any) -> Iterator[str]:
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    listener = socket.create_server(("127.0.0.1", 0))  # listening: early clients wait
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]})
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(TIMEOUT)
        listener.close()
        assert not thread.is_alive(), "uvicorn did not stop"


@contextlib.contextmanager
def _hypercorn(app: Any) -> Iterator[str]:
    started: queue.Queue[tuple[str, trio.lowlevel.TrioToken, trio.Event] | BaseException]
    started = queue.Queue()

    async def serve() -> None:
        config = Config()
        config.bind = ["127.0.0.1:0"]
        config.errorlog = None
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                partial(hypercorn.trio.serve, app, config, shutdown_trigger=stop.wait)
            )
            started.put((binds[0], trio.lowlevel.current_trio_token(), stop))

    def run() -> None:
        try:
            trio.run(serve)
        except BaseException as error:  # handed to the test thread, which raises it
            started.put(error)

    thread = threading.Thread(target=run)
    thread.start()
    ready = started.get(timeout=TIMEOUT)
    if isinstance(ready, BaseException):
        raise ready
    url, token, stop = ready
    try:
        yield url
    finally:
        trio.from_thread.run_sync(stop.set, trio_token=token)
        thread.join(TIMEOUT)
        assert not thread.is_alive(), "hypercorn did not stop"


@contextlib.contextmanager
def served(kind: str, db: Path, **options: Any) -> Iterator[httpx.Client]:
    """The example ``kind`` serving ``db`` in a thread, and a client of it."""
    module = MODULES[kind]
    if kind == "web_asgi":
        server = _uvicorn(module.make_app(db, **options))
    else:
        server = _hypercorn(module.ChatServer(db, **options))
    with server as url, httpx.Client(base_url=url, timeout=TIMEOUT) as client:
        yield client


@contextlib.contextmanager
def command(kind: str, *args: str, env: dict[str, str] | None = None) -> Iterator[httpx.Client]:
    """The example ``kind`` run as a user runs it, stopped with SIGTERM."""
    process = subprocess.Popen(
        [sys.executable, str(EXAMPLES / f"{kind}.py"), "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    try:
        assert process.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(process.stdout.readline()), daemon=True).start()
        try:
            first = lines.get(timeout=TIMEOUT)
        except queue.Empty:
            pytest.fail(f"{kind} printed no address within {TIMEOUT} s")
        assert first.startswith("listening on http://127.0.0.1:"), first
        with httpx.Client(base_url=first.split()[-1], timeout=TIMEOUT) as client:
            yield client
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=TIMEOUT)
        # uvicorn raises the signal again once it has stopped gracefully.
        assert process.returncode in (0, -signal.SIGTERM), errors
        assert "Traceback" not in errors, errors
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


# ---- the protocol, as a client sees it ----------------------------------------------


class Turn:
    """One 200 answer: the lifecycle events streamed, and the final ``done``."""

    def __init__(self, response: httpx.Response) -> None:
        assert response.status_code == 200, response.text
        assert response.headers["content-type"].startswith("text/event-stream")
        stream: list[tuple[str, str]] = []
        fields: dict[str, str] = {}
        for line in response.iter_lines():
            if line:
                name, _, value = line.partition(": ")
                fields[name] = value
            elif fields:
                stream.append((fields["event"], fields["data"]))
                fields = {}
        assert stream and stream[-1][0] == "done", stream
        self.lifecycle = [wire.loads(data, fx.EmitLifecycle).event for _, data in stream[:-1]]
        assert [type(e).__name__ for e in self.lifecycle] == [name for name, _ in stream[:-1]]
        self.done: dict[str, Any] = json.loads(stream[-1][1])
        self.handle = wire.loads(self.done["handle"], ParkedSession)
        assert self.handle.head_revision == self.done["head_revision"]

    @property
    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.lifecycle]


def post(client: httpx.Client, session_id: str, content: str, **extra: Any) -> httpx.Response:
    with client.stream(
        "POST", f"/sessions/{session_id}/messages", json={"content": content, **extra}
    ) as response:
        response.read()
        return response


def turn(client: httpx.Client, session_id: str, content: str, **extra: Any) -> Turn:
    with client.stream(
        "POST", f"/sessions/{session_id}/messages", json={"content": content, **extra}
    ) as response:
        return Turn(response)


def _field(body: object, name: str) -> object:
    assert isinstance(body, dict), body
    return body[name]


def conversation(db: Path, session_id: str) -> list[str]:
    """The stored active path of the session, as ``role: content`` lines."""
    store = SQLiteStore(db)
    try:
        stored = store.load_graph(session_id, ActivePath())
        assert stored is not None, f"no session {session_id!r} in the store"
        return [f"{_field(n.body, 'role')}: {_field(n.body, 'content')}" for n in stored.nodes]
    finally:
        store.close()


def stored_contents(db: Path, session_id: str) -> list[str]:
    """Every stored node of the session (any branch), by content."""
    store = SQLiteStore(db)
    try:
        stored = store.load_graph(session_id, FullGraph())
        return [] if stored is None else [_field(n.body, "content") for n in stored.nodes]
    finally:
        store.close()


def said(*contents: str) -> list[str]:
    lines = []
    for content in contents:
        lines += [f"user: {content}", f"assistant: You said: {content}"]
    return lines


def _another(client: httpx.Client) -> httpx.Client:
    """A second client of the same server, for a request in another thread."""
    return httpx.Client(base_url=client.base_url, timeout=TIMEOUT)


class Gate:
    """An assistant that holds its answer to one message until the test
    opens the gate (the stand-in for a slow model call)."""

    def __init__(self, held: str) -> None:
        self.held = held
        self.arrived = threading.Event()
        self.opened = threading.Event()

    async def __call__(self, content: str) -> str:
        if content == self.held:
            self.arrived.set()
            await anyio.to_thread.run_sync(self.opened.wait, TIMEOUT)
        return f"You said: {content}"

    def wait_until_held(self) -> None:
        assert self.arrived.wait(TIMEOUT), f"no request for {self.held!r} reached the gate"


# ---- the tests ----------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_conversation_of_several_turns_across_requests(kind: str, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    with served(kind, db) as client:
        first = turn(client, "alice", "hello")
        assert first.kinds == ["SessionOpened", "SessionSaved", "SessionParked"]
        assert (first.done["session_id"], first.done["head_revision"]) == ("alice", 1)
        assert first.done["answer"] == "You said: hello"
        assert first.handle.residency is Residency.ACTIVE_PATH_ONLY

        other = turn(client, "bob", "hi, I am bob")
        second = turn(client, "alice", "how are you?")
        third = turn(client, "alice", "bye")

    for later, revision in ((second, 2), (third, 3)):
        assert later.kinds == ["SessionRestored", "SessionSaved", "SessionParked"]
        restored, saved, parked = later.lifecycle
        assert isinstance(restored, fx.SessionRestored)
        assert restored.view.head_revision == revision - 1
        # Only the active path is resident: the two nodes of each earlier turn.
        assert restored.view.resident_nodes == 2 * (revision - 1)
        assert isinstance(saved, fx.SessionSaved) and saved.head_revision == revision
        assert isinstance(parked, fx.SessionParked) and parked.parked == later.handle
    assert other.done["head_revision"] == 1
    assert conversation(db, "alice") == said("hello", "how are you?", "bye")
    assert conversation(db, "bob") == said("hi, I am bob")


@pytest.mark.parametrize("kind", KINDS)
def test_a_restarted_server_resumes_from_the_same_file(kind: str, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    with command(kind, env={"LASH_MACHINE_WEB_DB": str(db)}) as client:
        turn(client, "alice", "one")
        kept = turn(client, "alice", "two").done["handle"]
        turn(client, "bob", "hello")
    assert conversation(db, "alice") == said("one", "two")

    with command(kind, "--db", str(db)) as client:
        # The client kept its handle: the new server resumes it.
        resumed = turn(client, "alice", "three", handle=kept)
        # No handle anywhere (the old server's dict died with it): opened
        # from the store by its id, so restored, not created.
        reopened = turn(client, "bob", "again")
    assert resumed.kinds == ["SessionRestored", "SessionSaved", "SessionParked"]
    assert resumed.done["head_revision"] == 3
    assert reopened.kinds == ["SessionRestored", "SessionSaved", "SessionParked"]
    assert reopened.done["head_revision"] == 2
    assert conversation(db, "alice") == said("one", "two", "three")
    assert conversation(db, "bob") == said("hello", "again")


@pytest.mark.parametrize("kind", KINDS)
def test_the_loser_of_a_race_gets_409_and_nothing_acknowledged_is_lost(
    kind: str, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    gate = Gate("slow")
    with (
        served(kind, db, assistant=gate) as client,
        _another(client) as second,
        ThreadPoolExecutor(1) as pool,
    ):
        turn(client, "alice", "first")
        try:
            # "slow" resumes at revision 1 and waits for its answer; "quick"
            # resumes at revision 1 too and parks first.
            slow = pool.submit(post, second, "alice", "slow")
            gate.wait_until_held()
            quick = turn(client, "alice", "quick")
        finally:
            gate.opened.set()
        lost = slow.result(timeout=TIMEOUT)
        assert quick.done["head_revision"] == 2
        assert lost.status_code == 409, lost.text
        assert lost.json() == {
            **lost.json(),
            "error": "HeadRevisionConflict",
            "code": "head_revision_conflict",
            "session_id": "alice",
            "expected": 1,
            "actual": 2,
        }
        # Nothing of the lost request was stored, on any branch.
        assert "slow" not in stored_contents(db, "alice")
        assert conversation(db, "alice") == said("first", "quick")

        # The loser sends its message again and wins this time.
        retried = turn(client, "alice", "slow")
    assert retried.done["head_revision"] == 3
    assert conversation(db, "alice") == said("first", "quick", "slow")


@pytest.mark.parametrize("kind", KINDS)
def test_with_leases_a_second_request_is_refused_with_409_lease_held(
    kind: str, tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    gate = Gate("slow")
    with (
        served(kind, db, leases=True, assistant=gate) as client,
        _another(client) as second,
        ThreadPoolExecutor(1) as pool,
    ):
        turn(client, "alice", "first")
        try:
            slow = pool.submit(turn, second, "alice", "slow")  # holds the lease
            gate.wait_until_held()
            refused = post(client, "alice", "quick")
        finally:
            gate.opened.set()
        assert refused.status_code == 409, refused.text
        body = refused.json()
        assert body["error"] == "LeaseHeld" and body["code"] == "lease_held"
        assert body["session_id"] == "alice"
        assert body["owner"].startswith(f"{socket.gethostname()}:")
        # The holder was not disturbed: its turn commits.
        assert slow.result(timeout=TIMEOUT).done["head_revision"] == 2
        assert conversation(db, "alice") == said("first", "slow")

        # The lease was released with the park: the refused message goes in now.
        again = turn(client, "alice", "quick")
    assert again.done["head_revision"] == 3
    assert conversation(db, "alice") == said("first", "slow", "quick")


@pytest.mark.parametrize("kind", KINDS)
def test_an_old_handle_resumes_at_the_stored_head(kind: str, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    with served(kind, db) as client:
        old = turn(client, "alice", "one").done["handle"]
        turn(client, "alice", "two")
        late = turn(client, "alice", "three", handle=old)
    assert late.done["head_revision"] == 3
    assert conversation(db, "alice") == said("one", "two", "three")


@pytest.mark.parametrize("kind", KINDS)
def test_bad_requests_are_refused_and_store_nothing(kind: str, tmp_path: Path) -> None:
    db = tmp_path / "chat.db"
    policy = SessionPolicy(ModelSpec("demo-model"), provider_id="demo")
    ghost = ParkedSession("ghost", policy, 3, Residency.KEEP_ALL)
    with served(kind, db) as client:
        url = "/sessions/alice/messages"
        cases = [
            (client.post(url, content=b"{not json"), 400, "BadRequest"),
            (client.post(url, json=["hello"]), 400, "BadRequest"),
            (client.post(url, json={"content": ""}), 400, "BadRequest"),
            (client.post(url, json={"content": "hi", "handle": 7}), 400, "BadRequest"),
            (client.post(url, json={"content": "hi", "handle": "{}"}), 400, "WireError"),
            (post(client, "alice", "hi", handle=wire.dumps(ghost)), 400, "BadRequest"),
            (post(client, "ghost", "hi", handle=wire.dumps(ghost)), 404, "SessionNotFound"),
        ]
        for response, status, error in cases:
            assert (response.status_code, response.json()["error"]) == (status, error), (
                response.text
            )
        assert "ghost" in cases[-2][0].json()["message"]
    store = SQLiteStore(db)
    try:
        assert store.list_sessions() == []
    finally:
        store.close()
