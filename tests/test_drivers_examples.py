"""The examples run, quickly, and say what they promise. The quickstart
files are the README's snippets, verbatim. The web servers are served and
driven over HTTP in test_web_examples.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(name: str, cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_transport_demo_runs_a_full_cycle_across_processes(tmp_path: Path) -> None:
    assert _run("transport_demo.py", tmp_path).splitlines() == [
        "parked 'demo' at revision 1",
        "resumed with 2 of 3 nodes in memory",
        "loaded the off-path draft from the store process: 'A first draft.'",
        "orphans: 1",
    ]


@pytest.mark.parametrize("name", ["quickstart_asyncio.py", "quickstart_trio.py"])
def test_quickstart_snippets_run(name: str, tmp_path: Path) -> None:
    assert _run(name, tmp_path).split() == ["1", "1"]
    assert (tmp_path / "sessions.db").exists()


def test_the_compacting_chat_keeps_its_context_short_and_its_history(tmp_path: Path) -> None:
    out = _run("compacting_chat_asyncio.py", tmp_path).splitlines()
    assert out == [
        "messages sent to the model: 11",
        "nodes in memory: 11",  # under ACTIVE_PATH_ONLY: the summary and the tail
        "first message, from the store: {'role': 'user', 'content': 'Is it raining?'}",
        "messages after undoing 6 compactions: 60",
    ]
    check = subprocess.run(
        [sys.executable, "-m", "lash_machine", "--db", str(tmp_path / "compacting.db"), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_tool_crash_example_recovers_with_an_interrupted_result(tmp_path: Path) -> None:
    lines = _run("tool_crash_trio.py", tmp_path).splitlines()
    assert lines[:4] == [
        "run 1: the model asked for get_weather (call_1); the tool runs",
        "run 1 died with exit status 1",
        "run 2: openai-tool-calls appended 1 node(s) on open",
        "run 2: the model answers: The weather lookup was cut short. Try again?",
    ]
    assert lines[4] == "stored at head revision 2:"
    stored = [json.loads(line) for line in lines[5:]]
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[2] == {
        "role": "tool",
        "tool_call_id": "call_1",
        "content": "the tool call was interrupted before it returned a result",
    }
