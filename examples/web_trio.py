"""The chat server of ``web_asgi.py`` on trio: a plain ASGI application (no
framework) under hypercorn's trio worker, with the trio driver.

Same protocol: ``POST /sessions/{session_id}/messages`` with
``{"content": "...", "handle": "..."?}`` resumes the parked session (the
handle the client sent, else the one this server kept, else the session is
opened from the store by its id), appends the message and an answer, parks
it, and answers 200 with the request's lifecycle events as server-sent
events ending with ``done`` (``{"session_id", "head_revision", "answer",
"handle"}``); 409 ``{"error": "HeadRevisionConflict" | "LeaseHeld" |
"LeaseLost", ...}`` when another request on the session won the race (this
one stored nothing: send it again); 400 for bad input; 404 for a handle of
a session the store does not have. ``web_asgi.py`` explains why the
response starts only after the park and why each request makes its own
driver.

What this file adds: the ASGI protocol by hand (read the body events, send
the response start and the SSE chunks), which is what any trio framework
does underneath, and a graceful stop on SIGINT/SIGTERM through hypercorn's
``shutdown_trigger``.

Run it with ``python examples/web_trio.py [--db FILE] [--port N] [--leases]``
(the database defaults to ``$LASH_MACHINE_WEB_DB``, else ``sessions.db``;
``--port 0`` picks a free port); it prints ``listening on URL`` when ready.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import sys
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import Any

import hypercorn.trio
import trio
from hypercorn.config import Config

from lash_machine import (
    HeadRevisionConflict,
    LashMachineError,
    LeaseHeld,
    LeaseLost,
    ModelSpec,
    ParkedSession,
    Residency,
    SessionNotFound,
    SessionPolicy,
    WireError,
    wire,
)
from lash_machine import effects as fx
from lash_machine.drivers.trio import Driver
from lash_machine.errors import failure_of
from lash_machine.stores import SQLiteStore

POLICY = SessionPolicy(ModelSpec("demo-model"), provider_id="demo")
#: This process among the workers sharing the store (the lease owner's prefix).
WORKER = f"{socket.gethostname()}:{os.getpid()}"
ROUTE = re.compile(r"/sessions/(?P<session_id>[^/]+)/messages")

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
#: Turns the user's message into the assistant's answer (a model call, in a
#: real server: it takes a while, which is when races happen).
Assistant = Callable[[str], Awaitable[str]]


async def echo(content: str) -> str:
    """The fake assistant."""
    await trio.lowlevel.checkpoint()
    return f"You said: {content}"


class ClientGone(Exception):
    """The client disconnected before its request was read: nothing to do."""


class Answer(Exception):
    """A response other than 200, with its JSON body."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body

    @classmethod
    def of(cls, status: int, error: BaseException) -> Answer:
        """The error as JSON: its class name, code, message and fields."""
        code, message, fields = failure_of(error)
        body = {**fields, "error": type(error).__name__, "code": str(code), "message": message}
        return cls(status, body)

    @classmethod
    def bad(cls, message: str) -> Answer:
        return cls(400, {"error": "BadRequest", "message": message})


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


class ChatServer:
    """The ASGI application, its sessions in the SQLite file ``db`` (opened
    when the server starts, closed when it stops); holds the parked handles."""

    def __init__(
        self, db: str | os.PathLike[str], *, leases: bool = False, assistant: Assistant = echo
    ) -> None:
        self.db = db
        self.store: SQLiteStore | None = None
        self.leases = leases
        self.assistant = assistant
        self.handles: dict[str, str] = {}  # session id -> wire text of its parked handle

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        route = ROUTE.fullmatch(scope["path"])
        if route is None:
            await _send_json(send, 404, {"error": "NotFound", "message": scope["path"]})
        elif scope["method"] != "POST":
            await _send_json(send, 405, {"error": "MethodNotAllowed", "message": "use POST"})
        else:
            try:
                await self.post_message(route["session_id"], receive, send)
            except Answer as answer:
                await _send_json(send, answer.status, answer.body)
            except ClientGone:
                pass

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.store = SQLiteStore(self.db)
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.store is not None:
                    self.store.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def post_message(self, session_id: str, receive: Receive, send: Send) -> None:
        """One turn: resume, append the message and the answer, park, then
        stream the request's lifecycle events."""
        content, handle = self._read(session_id, await _body(receive))
        if self.store is None:
            raise Answer(503, {"error": "NotStarted", "message": "the server is not started"})
        owner = f"{WORKER}:{uuid.uuid4().hex}" if self.leases else None
        driver = Driver(self.store, lease_owner=owner)
        with driver.lifecycle() as events:
            try:
                parked, answer = await self._turn(driver, session_id, content, handle)
            except (HeadRevisionConflict, LeaseHeld, LeaseLost) as error:
                raise Answer.of(409, error) from None
            except SessionNotFound as error:
                self.handles.pop(session_id, None)
                raise Answer.of(404, error) from None
            except LashMachineError as error:
                raise Answer.of(503, error) from None
        handle_text = wire.dumps(parked)
        self.handles[session_id] = handle_text
        headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        async for event in events:
            data = wire.dumps(fx.EmitLifecycle(event))
            await _send_event(send, type(event).__name__, data)
        done = {
            "session_id": session_id,
            "head_revision": parked.head_revision,
            "answer": answer,
            "handle": handle_text,
        }
        await _send_event(send, "done", json.dumps(done))
        await send({"type": "http.response.body", "body": b""})

    def _read(self, session_id: str, raw: bytes) -> tuple[str, ParkedSession | None]:
        try:
            body: Any = json.loads(raw)
        except ValueError as error:
            raise Answer.bad(f"the body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise Answer.bad("the body must be a JSON object")
        content = body.get("content")
        if not isinstance(content, str) or not content:
            raise Answer.bad('"content" must be a non-empty string')
        text = body.get("handle", self.handles.get(session_id))
        if text is None:
            return content, None
        if not isinstance(text, str):
            raise Answer.bad('"handle" must be the wire text of a parked handle')
        try:
            handle = wire.loads(text, ParkedSession)
        except WireError as error:
            raise Answer.of(400, error) from None
        if handle.session_id != session_id:
            raise Answer.bad(f"the handle is for session {handle.session_id!r}, not {session_id!r}")
        return content, handle

    async def _turn(
        self, driver: Driver, session_id: str, content: str, handle: ParkedSession | None
    ) -> tuple[ParkedSession, str]:
        if handle is None:
            session = await driver.open(POLICY, session_id, residency=Residency.ACTIVE_PATH_ONLY)
        else:
            session = await driver.resume(handle)
        try:
            await session.append({"role": "user", "content": content})
            answer = await self.assistant(content)
            await session.append({"role": "assistant", "content": answer})
            return await session.park(), answer
        except Exception:
            # A lost race or a failed store call: drop the unacknowledged
            # edits (and the lease); the client gets the error and may retry.
            await session.close(discard=True)
            raise


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send_event(send: Send, name: str, data: str) -> None:
    chunk = f"event: {name}\ndata: {data}\n\n".encode()
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


async def _until_signalled() -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def serve(app: ChatServer, host: str, port: int) -> None:
    """Serve ``app`` until SIGINT or SIGTERM."""
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.errorlog = None  # the one line below says where we listen
    async with trio.open_nursery() as nursery:
        # hypercorn types ASGI messages as TypedDicts; this app reads plain dicts.
        asgi: Any = app
        start = partial(hypercorn.trio.serve, asgi, config, shutdown_trigger=_until_signalled)
        binds = await nursery.start(start)
        print(f"listening on {binds[0]}", flush=True)


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=os.environ.get("LASH_MACHINE_WEB_DB", "sessions.db"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--leases", action="store_true", help="one writer per session")
    args = parser.parse_args(argv)
    trio.run(serve, ChatServer(args.db, leases=args.leases), args.host, args.port)


if __name__ == "__main__":
    main(sys.argv[1:])
