"""The chat server of ``asyncio_server.py``, on trio: every request
resumes a parked session, appends a message, and parks it again.

The line protocol: a client sends ``<session> <text>``; the server answers
``<session> rev=<head revision> path=<messages on the active path>``. A lost
race (``HeadRevisionConflict``) reloads the session and appends again.

Run it with ``python examples/trio_server.py [DB]``: it serves two
concurrent clients of one session on a free port, then exits.
"""

from __future__ import annotations

import sys
import tempfile
from functools import partial
from pathlib import Path

import trio

from lash_machine import HeadRevisionConflict, ModelSpec, ParkedSession, Residency, SessionPolicy
from lash_machine.drivers.trio import Driver, Session
from lash_machine.stores import SQLiteStore

POLICY = SessionPolicy(ModelSpec("demo-model"), provider_id="demo")


class ChatServer:
    """Handles requests; holds nothing but parked handles between them."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.parked: dict[str, ParkedSession] = {}

    async def _session(self, name: str) -> Session:
        handle = self.parked.get(name)
        if handle is None:
            return await self.driver.open(POLICY, name, residency=Residency.ACTIVE_PATH_ONLY)
        return await self.driver.resume(handle)

    async def handle(self, name: str, text: str) -> str:
        """Resume, append, park; on a lost race, reload and try again."""
        while True:
            session = await self._session(name)
            await session.append({"role": "user", "content": text})
            path = session.view.resident_nodes if session.view else 0
            try:
                parked = await session.park()
            except HeadRevisionConflict:
                await session.close(discard=True)
                self.parked.pop(name, None)  # reload from the store next time
                continue
            self.parked[name] = parked
            return f"{name} rev={parked.head_revision} path={path}"

    async def serve_client(self, stream: trio.SocketStream) -> None:
        """Answer each request line of one connection."""
        buffer = b""
        async with stream:
            async for chunk in stream:
                buffer += chunk
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    name, _, text = line.decode().partition(" ")
                    await stream.send_all((await self.handle(name, text) + "\n").encode())


async def client(port: int, lines: list[str], answers: list[str]) -> None:
    """Send request lines, one at a time; collect the answers."""
    async with await trio.open_tcp_stream("127.0.0.1", port) as stream:
        for line in lines:
            await stream.send_all(f"{line}\n".encode())
            answer = b""
            while not answer.endswith(b"\n"):
                answer += await stream.receive_some()
            answers.append(answer.decode().strip())


async def main(db: Path) -> None:
    """Serve two concurrent clients of one session, then print its end state."""
    store = SQLiteStore(db)
    chat = ChatServer(Driver(store))
    answers: list[str] = []
    async with trio.open_nursery() as nursery:
        serve = partial(trio.serve_tcp, chat.serve_client, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as clients:
            clients.start_soon(client, port, [f"alice hello {n}" for n in range(3)], answers)
            clients.start_soon(client, port, [f"alice hi {n}" for n in range(3)], answers)
        nursery.cancel_scope.cancel()
    for answer in sorted(answers, key=lambda a: int(a.split("rev=")[1].split()[0])):
        print(answer)
    print("final:", await chat.handle("alice", "bye"))
    store.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        trio.run(main, Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch) / "chat.db")
