"""``lash-machine import`` and ``export -o``: bad input is exit 5 before any
store is touched, an export file is written whole or not at all, and two
imports creating one new SQLite file at once end in 0 and 6."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from cli_support import ENV, POLICY, cli

from lash_machine import wire
from lash_machine.model import AgentFrame, NodeKind, SessionNode, ToolSnapshot
from lash_machine.persisted import StoredSession


def _export() -> dict[str, Any]:
    """A sound export as JSON data: one frame, two nodes, a tool snapshot."""
    frame = AgentFrame("s:frame:initial", None, "initial", POLICY, 1.0)
    nodes = (
        SessionNode("a", None, NodeKind.MESSAGE, {"role": "user", "content": "hi"}, None, 1.0),
        SessionNode("b", "a", NodeKind.EVENT, {"x": 1.5}, "s:frame:initial", 2.0),
    )
    stored = StoredSession(
        "s", 3, POLICY, (frame,), frame.frame_id, nodes, "b", ToolSnapshot(1, {"k": 1})
    )
    data: dict[str, Any] = json.loads(wire.dumps(stored))
    return data


# ---- two imports creating one SQLite file ----------------------------------------

#: A process that runs `import --create` once per path read from stdin and
#: answers each with its exit code and stderr (one JSON line).
_RACER = """
import contextlib, io, json, sys
from lash_machine.cli import main
from lash_machine.drivers.blocking import Driver
for line in sys.stdin:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["import", "--create", "--db", line.strip(), sys.argv[1]])
    print(json.dumps({"code": code, "stderr": err.getvalue()}), flush=True)
"""

#: How long the second import starts after the first, in turn: the first
#: is then between creating the file and committing its schema.
_STAGGER = (0.004, 0.006, 0.008, 0.010, 0.012, 0.014)


def test_two_imports_creating_one_sqlite_file_at_once_end_in_0_and_6(tmp_path: Path) -> None:
    # Before the fix about one round in four ended in 3 ("an empty SQLite
    # database"): the second saw the file the first had just created.
    export = tmp_path / "s.json"
    export.write_text(json.dumps(_export()))
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", _RACER, str(export)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for _ in range(2)
    ]
    outcomes = []
    try:
        for i in range(4 * len(_STAGGER)):
            path = tmp_path / f"race-{i}.sqlite3"
            for racer, pause in zip(racers, (_STAGGER[i % len(_STAGGER)], 0.0), strict=True):
                assert racer.stdin is not None
                racer.stdin.write(f"{path}\n")
                racer.stdin.flush()
                time.sleep(pause)
            answers = [json.loads(racer.stdout.readline()) for racer in racers if racer.stdout]
            outcomes.append(sorted((a["code"], a["stderr"].strip()) for a in answers))
    finally:
        for racer in racers:
            assert racer.stdin is not None
            racer.stdin.close()
            racer.wait(timeout=60)
    wrong = [o for o in outcomes if [code for code, _ in o] != [0, 6]]
    assert not wrong, wrong
    assert all("already exists" in o[1][1] for o in outcomes)


def test_import_create_takes_a_new_sqlite_database_without_tables(tmp_path: Path) -> None:
    # What a concurrent creator has made before its schema commits: a file
    # in WAL mode, user_version 0, no tables. Staged, it happens every time.
    path = tmp_path / "new.sqlite3"
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    export = tmp_path / "s.json"
    export.write_text(json.dumps(_export()))

    without = cli("import", str(export), "--db", str(path))
    assert without.returncode == 3
    assert "an empty SQLite database, not a lash-machine database" in without.stderr
    created = cli("import", str(export), "--create", "--db", str(path))
    assert created.returncode == 0, created.stderr

    # A database of another application stays refused, --create or not.
    foreign = tmp_path / "foreign.sqlite3"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    refused = cli("import", str(export), "--create", "--db", str(foreign))
    assert refused.returncode == 3
    assert "a SQLite database of another application" in refused.stderr
