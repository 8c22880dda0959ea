"""The machine in this process, the store in another: store effects travel
as lines of wire JSON over the child's stdin and stdout.

The child (``transport_demo.py --serve DB``) owns a SQLite file and runs
:func:`lash_machine.transport.serve_store`; this process drives a session
through :class:`lash_machine.transport.RemoteStore`. Any byte stream works
the same way (a socket's ``makefile``, for instance).

Run it with ``python examples/transport_demo.py [DB]``: it opens a session,
appends and forks it, parks it, resumes it with only the active path in
memory, loads the off-path node through the child, and exits.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import tempfile
from pathlib import Path

from lash_machine import ModelSpec, Residency, SessionPolicy
from lash_machine.drivers.asyncio import Driver
from lash_machine.stores import SQLiteStore
from lash_machine.transport import RemoteStore, serve_store

POLICY = SessionPolicy(ModelSpec("demo-model"), provider_id="demo")


def serve(db: str) -> None:
    """The child: answer store requests on stdin/stdout until stdin ends."""
    store = SQLiteStore(db)
    answered = serve_store(store, sys.stdin.buffer, sys.stdout.buffer)
    store.close()
    print(f"store process answered {answered} requests", file=sys.stderr)


async def main(db: Path) -> None:
    """The parent: a full session cycle whose store lives in the child."""
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(db)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert child.stdin is not None and child.stdout is not None
    remote = RemoteStore(child.stdout, child.stdin)
    driver = Driver(runner=remote)

    session = await driver.open(POLICY, "demo")
    question = await session.append({"role": "user", "content": "What is a sans-IO machine?"})
    draft = await session.append({"role": "assistant", "content": "A first draft."})
    await session.branch(question.node_id)
    await session.append({"role": "assistant", "content": "A better answer."})
    parked = await session.park()
    print(f"parked {parked.session_id!r} at revision {parked.head_revision}")

    session = await driver.resume(parked, residency=Residency.ACTIVE_PATH_ONLY)
    assert session.view is not None
    print(f"resumed with {session.view.resident_nodes} of 3 nodes in memory")
    loaded = await session.load_node(draft.node_id)
    assert loaded == draft
    print(f"loaded the off-path draft from the store process: {loaded.body['content']!r}")
    print(f"orphans: {len(await session.list_orphans())}")
    await session.close()

    remote.close()
    child.wait(timeout=10)


if __name__ == "__main__":
    if sys.argv[1:2] == ["--serve"]:
        serve(sys.argv[2])
    else:
        with tempfile.TemporaryDirectory() as scratch:
            asyncio.run(main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(scratch) / "demo.db"))
