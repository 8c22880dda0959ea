"""A chat server on Starlette under uvicorn (asyncio): every HTTP request
resumes a parked session, appends the user's message and an answer, parks
the session again, and streams what happened as server-sent events.

``POST /sessions/{session_id}/messages`` with ``{"content": "..."}`` (and,
optionally, ``"handle"``: the wire text of a parked handle the client kept)
answers

* **200**, ``text/event-stream``: one event per lifecycle event of this
  request (named after its type, ``SessionRestored``, ``SessionSaved``,
  ``SessionParked``...; the data is ``wire.dumps(EmitLifecycle(event))``),
  then ``done`` with ``{"session_id", "head_revision", "answer", "handle"}``;
* **409** ``{"error": "HeadRevisionConflict" | "LeaseHeld" | "LeaseLost",
  "code", "message", ...}`` when another request on the same session won
  the race. Nothing of this request was stored (it was never acknowledged):
  send it again;
* **400** for a body that is not ``{"content": non-empty text}`` or a bad
  handle, **404** for a handle whose session is not in the store.

Between requests the server keeps nothing but parked handles (wire text in
a dict keyed by session id). A session without a handle (a new one, or any
session after a restart) is opened from the store by its id, with only its
active path in memory.

The response starts only once the session is parked: an HTTP status cannot
change after the first byte, and the park (the commit) is what decides
between 200 and 409. A driver is configuration and hooks (the store is what
requests share), so each request makes its own: its lifecycle stream then
holds exactly this request's events, and with ``--leases`` each request is
its own lease owner, so a second request on a leased session is refused at
once with ``LeaseHeld`` instead of losing its commit at the end.

A server that would rather retry a lost race itself does what a client
does on 409: close the losing session with ``discard=True`` and run the
turn again (a handle older than the stored head still resumes at the
stored head).

Run it with ``python examples/web_asgi.py [--db FILE] [--port N] [--leases]``
(the database defaults to ``$LASH_MACHINE_WEB_DB``, else ``sessions.db``;
``--port 0`` picks a free port); it prints ``listening on URL`` when ready::

    curl -N -X POST localhost:8000/sessions/alice/messages -d '{"content": "hi"}'
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

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
from lash_machine.drivers.asyncio import Driver
from lash_machine.errors import failure_of
from lash_machine.stores import SQLiteStore

POLICY = SessionPolicy(ModelSpec("demo-model"), provider_id="demo")
#: This process among the workers sharing the store (the lease owner's prefix).
WORKER = f"{socket.gethostname()}:{os.getpid()}"

#: Turns the user's message into the assistant's answer (a model call, in a
#: real server: it takes a while, which is when races happen).
Assistant = Callable[[str], Awaitable[str]]


async def echo(content: str) -> str:
    """The fake assistant."""
    return f"You said: {content}"


class BadRequest(Exception):
    """The request body or handle is unusable (answered with 400)."""


def error_response(status: int, error: BaseException) -> JSONResponse:
    """The error as JSON: its class name, code, message and fields."""
    code, message, fields = failure_of(error)
    body = {**fields, "error": type(error).__name__, "code": str(code), "message": message}
    return JSONResponse(body, status_code=status)


class ChatServer:
    """The request handler; holds the parked handles (the store is the
    application's state, opened by its lifespan)."""

    def __init__(self, *, leases: bool = False, assistant: Assistant = echo) -> None:
        self.leases = leases
        self.assistant = assistant
        self.handles: dict[str, str] = {}  # session id -> wire text of its parked handle

    async def post_message(self, request: Request) -> Response:
        """One turn: resume, append the message and the answer, park."""
        session_id = request.path_params["session_id"]
        try:
            content, handle = await self._read(request, session_id)
        except BadRequest as error:
            return JSONResponse({"error": "BadRequest", "message": str(error)}, status_code=400)
        except WireError as error:
            return error_response(400, error)
        owner = f"{WORKER}:{uuid.uuid4().hex}" if self.leases else None
        driver = Driver(request.state.store, lease_owner=owner)
        with driver.lifecycle() as events:
            try:
                parked, answer = await self._turn(driver, session_id, content, handle)
            except (HeadRevisionConflict, LeaseHeld, LeaseLost) as error:
                return error_response(409, error)
            except SessionNotFound as error:
                self.handles.pop(session_id, None)
                return error_response(404, error)
            except LashMachineError as error:
                return error_response(503, error)
        handle_text = wire.dumps(parked)
        self.handles[session_id] = handle_text
        done = {
            "session_id": session_id,
            "head_revision": parked.head_revision,
            "answer": answer,
            "handle": handle_text,
        }
        return StreamingResponse(_sse(events, done), media_type="text/event-stream")

    async def _read(self, request: Request, session_id: str) -> tuple[str, ParkedSession | None]:
        try:
            body: Any = json.loads(await request.body())
        except ValueError as error:
            raise BadRequest(f"the body is not JSON: {error}") from None
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        content = body.get("content")
        if not isinstance(content, str) or not content:
            raise BadRequest('"content" must be a non-empty string')
        text = body.get("handle", self.handles.get(session_id))
        if text is None:
            return content, None
        if not isinstance(text, str):
            raise BadRequest('"handle" must be the wire text of a parked handle')
        handle = wire.loads(text, ParkedSession)
        if handle.session_id != session_id:
            raise BadRequest(f"the handle is for session {handle.session_id!r}, not {session_id!r}")
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


async def _sse(
    events: AsyncIterator[fx.LifecycleEvent], done: dict[str, Any]
) -> AsyncIterator[str]:
    async for event in events:
        yield f"event: {type(event).__name__}\ndata: {wire.dumps(fx.EmitLifecycle(event))}\n\n"
    yield f"event: done\ndata: {json.dumps(done)}\n\n"


def make_app(
    db: str | os.PathLike[str], *, leases: bool = False, assistant: Assistant = echo
) -> Starlette:
    """The Starlette application around a :class:`ChatServer`, its sessions
    in the SQLite file ``db``."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        store = SQLiteStore(db)
        try:
            yield {"store": store}  # request.state.store
        finally:
            store.close()

    chat = ChatServer(leases=leases, assistant=assistant)
    route = Route("/sessions/{session_id}/messages", chat.post_message, methods=["POST"])
    return Starlette(routes=[route], lifespan=lifespan)


def main(argv: list[str] | None = None) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM; uvicorn stops gracefully,
    the lifespan closes the store, then uvicorn re-raises the signal)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=os.environ.get("LASH_MACHINE_WEB_DB", "sessions.db"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--leases", action="store_true", help="one writer per session")
    args = parser.parse_args(argv)
    # Bound here, not by uvicorn, so that the real port of --port 0 is known.
    listener = socket.create_server((args.host, args.port))
    host, port = listener.getsockname()[:2]
    print(f"listening on http://{host}:{port}", flush=True)
    app = make_app(args.db, leases=args.leases)
    uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[listener])


if __name__ == "__main__":
    main(sys.argv[1:])
