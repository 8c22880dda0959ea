"""A chat loop on asyncio that keeps its context short by compacting.

Each turn resumes the parked session (as a web server would per request),
appends the user's message and the model's answer, and parks again. Once
the active path is longer than the model's budget, everything but the last
few messages is replaced by a summary node: nothing is deleted, the
originals stay in the store (pinned), and the session can be uncompacted to
get the whole history back.

Run it with ``python examples/compacting_chat_asyncio.py`` (it writes
``compacting.db`` in the current directory).
"""

import asyncio

from lash_machine import ModelSpec, NodeKind, Residency, SessionPolicy
from lash_machine.compaction import read_summary
from lash_machine.drivers.asyncio import Driver, Session
from lash_machine.stores import SQLiteStore

BUDGET = 12  # messages the model may see
KEEP = 4  # messages kept verbatim after a compaction
POLICY = SessionPolicy(ModelSpec("gpt-4o"), provider_id="openai")


def context(session: Session) -> list[dict[str, object]]:
    """What the model is sent: the summary (if any), then the messages."""
    assert session.state is not None
    messages: list[dict[str, object]] = []
    for node in session.state.graph.active_path():
        summary = read_summary(node)
        if summary is not None:
            messages.append({"role": "system", "content": f"Earlier: {summary.summary}"})
        elif node.kind is NodeKind.MESSAGE:
            assert isinstance(node.body, dict)
            messages.append(node.body)
    return messages


async def compact_if_long(session: Session) -> None:
    assert session.state is not None
    path = session.state.graph.active_path()
    if len(path) <= BUDGET:
        return
    through = path[-KEEP - 1]  # the last node the summary replaces
    replaced = [n for n in path[:-KEEP] if n.kind is NodeKind.MESSAGE]
    # A real agent asks the model for this summary; the example counts.
    await session.compact(through.node_id, f"{len(replaced)} messages about the weather")


async def main() -> None:
    driver = Driver(SQLiteStore("compacting.db"))
    session = await driver.open(POLICY, residency=Residency.ACTIVE_PATH_ONLY)
    first = await session.append({"role": "user", "content": "Is it raining?"})
    await session.append({"role": "assistant", "content": "Not yet."})
    parked = await session.park()
    for turn in range(1, 30):
        session = await driver.resume(parked)
        await session.append({"role": "user", "content": f"And in {turn} hours?"})
        sent = context(session)  # the model would get this
        await session.append({"role": "assistant", "content": f"Answer {turn} ({len(sent)} sent)"})
        await compact_if_long(session)
        parked = await session.park()

    session = await driver.resume(parked)
    assert session.view is not None and session.state is not None
    print("messages sent to the model:", len(context(session)))
    print("nodes in memory:", session.view.resident_nodes)
    original = await session.load_node(first.node_id)  # still in the store
    assert original is not None
    print("first message, from the store:", original.body)
    # The whole history back: undo the last compaction, then the one before.
    undone = 0
    while (top := read_summary(session.state.graph.active_path()[0])) is not None:
        await session.uncompact(top.node_id)
        undone += 1
    await session.save()
    print(f"messages after undoing {undone} compactions:", len(context(session)))
    await session.close()
    driver.close()


asyncio.run(main())
