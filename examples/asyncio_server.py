"""A tiny chat server on asyncio: every request resumes a parked session,
appends a message, and parks it again.

The line protocol: a client sends ``<session> <text>``; the server answers
``<session> rev=<head revision> path=<messages on the active path>``.
Between requests the server keeps only the small parked handles; sessions
are resumed with only their active path in memory. Two requests on the same
session may race: the loser's park meets ``HeadRevisionConflict``, reloads,
and appends again, so no message is lost.

Run it with ``python examples/asyncio_server.py [DB]``: it starts the server
on a free port, lets two concurrent clients talk to the same session, and
exits.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
from pathlib import Path

from lash_machine import HeadRevisionConflict, ModelSpec, ParkedSession, Residency, SessionPolicy
from lash_machine.drivers.asyncio import Driver, Session
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

    async def serve_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        """Answer each request line of one connection."""
        while line := await reader.readline():
            name, _, text = line.decode().rstrip("\n").partition(" ")
            writer.write((await self.handle(name, text) + "\n").encode())
            await writer.drain()
        writer.close()
        await writer.wait_closed()


async def client(port: int, lines: list[str]) -> list[str]:
    """Send request lines; return the answers."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answers = []
    for line in lines:
        writer.write(f"{line}\n".encode())
        await writer.drain()
        answers.append((await reader.readline()).decode().strip())
    writer.close()
    await writer.wait_closed()
    return answers


async def main(db: Path) -> None:
    """Serve two concurrent clients of one session, then print its end state."""
    store = SQLiteStore(db)
    chat = ChatServer(Driver(store))
    server = await asyncio.start_server(chat.serve_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        answers = await asyncio.gather(
            client(port, [f"alice hello {n}" for n in range(3)]),
            client(port, [f"alice hi {n}" for n in range(3)]),
        )
    for answer in (*answers[0], *answers[1]):
        print(answer)
    final = await chat.handle("alice", "bye")
    print("final:", final)
    store.close()


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as scratch:
        asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch) / "chat.db"))
