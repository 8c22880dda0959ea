"""Recover from a crash in the middle of a tool call (trio, SQLite).

A small agent loop keeps an OpenAI-shaped conversation in a session. The
first run saves the model's tool call, then its process is killed while
the tool runs: the call is stored, its result never will be. The second
run opens the session with a driver given the tool-call check; the check
finds the unanswered call and the driver appends a tool result saying it
was interrupted, so the conversation is one the model accepts again, and
the loop goes on.

    python examples/tool_crash_trio.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from lash_machine import ModelSpec, SessionPolicy
from lash_machine.checks import INTERRUPTED, OPENAI_TOOL_CALLS
from lash_machine.drivers.hooks import Hooks
from lash_machine.drivers.trio import Driver
from lash_machine.effects import SessionRepaired
from lash_machine.stores import SQLiteStore

DB = Path("tool_crash.db")
SESSION = "weather-chat"
POLICY = SessionPolicy(ModelSpec("gpt-4o"), provider_id="openai")


def model(messages: list[Any]) -> dict[str, Any]:
    """A stand-in for the model: asks for the weather tool, then answers
    from its result."""
    last = messages[-1]
    if last["role"] == "user":
        call = {"id": "call_1", "type": "function", "function": {"name": "get_weather"}}
        return {"role": "assistant", "content": None, "tool_calls": [call]}
    if last["content"] == INTERRUPTED:
        return {"role": "assistant", "content": "The weather lookup was cut short. Try again?"}
    return {"role": "assistant", "content": f"It is {last['content']} in Oslo."}


def get_weather(crash: bool) -> str:
    if crash:
        os._exit(1)  # the process is killed while the tool runs
    return "sunny"


async def agent(crash: bool) -> None:
    run = "run 1" if crash else "run 2"
    hooks = Hooks()

    def repaired(event: object) -> None:
        if isinstance(event, SessionRepaired):
            print(f"{run}: {event.check} appended {len(event.node_ids)} node(s) on open")

    hooks.on_lifecycle(repaired)
    store = SQLiteStore(DB)
    driver = Driver(store, hooks=hooks, checks=[OPENAI_TOOL_CALLS])
    session = await driver.open(POLICY, SESSION)
    messages = [node.body for node in session.state.graph.active_path()]
    if not messages:
        messages.append({"role": "user", "content": "What is the weather in Oslo?"})
        await session.append(messages[-1])
    while True:
        if messages[-1]["role"] == "assistant" and not messages[-1].get("tool_calls"):
            break
        if messages[-1]["role"] == "assistant":
            await session.save()  # the calls are stored before the tools run
            for call in messages[-1]["tool_calls"]:
                name, call_id = call["function"]["name"], call["id"]
                print(f"{run}: the model asked for {name} ({call_id}); the tool runs", flush=True)
                result = get_weather(crash)
                messages.append({"role": "tool", "tool_call_id": call_id, "content": result})
                await session.append(messages[-1])
        else:
            messages.append(model(messages))
            await session.append(messages[-1])
    print(f"{run}: the model answers: {messages[-1]['content']}")
    parked = await session.park()
    store.close()
    print(f"stored at head revision {parked.head_revision}:")
    for message in messages:
        print("  " + json.dumps(message))


def main() -> None:
    if sys.argv[1:] == ["crash"]:
        trio.run(agent, True)
        return
    DB.unlink(missing_ok=True)
    first = subprocess.run([sys.executable, __file__, "crash"], check=False)
    print(f"run 1 died with exit status {first.returncode}")
    trio.run(agent, False)


if __name__ == "__main__":
    main()
