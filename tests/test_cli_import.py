"""``lash-machine import`` and ``export -o``: bad input is exit 5 before any
store is touched, an export file is written whole or not at all, and two
imports creating one new SQLite file at once end in 0 and 6."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cli_support import ENV, POLICY, Db, cli, empty_database, load, seed

from lash_machine import wire
from lash_machine.cli import main
from lash_machine.content import MAX_ID_LENGTH
from lash_machine.drivers.blocking import Driver
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


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """Set ``data[path]`` (dotted, list indexes as numbers)."""

    def change(data: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        here: Any = data
        for key in parents:
            here = here[int(key)] if isinstance(here, list) else here[key]
        here[int(last) if isinstance(here, list) else last] = value

    return change


LONG = "x" * (MAX_ID_LENGTH + 1)

#: (what is wrong, how to make it so, what the message says)
BAD: list[tuple[str, Callable[[dict[str, Any]], None], str]] = [
    ("unknown kind", _set("nodes.1.kind", "bogus"), "unknown value 'bogus' for NodeKind"),
    ("NaN body", _set("nodes.1.body.x", float("nan")), "nan at value.x is not a finite"),
    ("inf time", _set("nodes.0.created_at", float("inf")), "got inf @ $.nodes[0].created_at"),
    ("NaN time", _set("nodes.0.created_at", float("nan")), "got nan @ $.nodes[0].created_at"),
    ("surrogate id", _set("session_id", "s\udc80"), "session id 's\\udc80' holds '\\udc80'"),
    ("surrogate node", _set("nodes.0.node_id", "a\ud800"), "node 'a\\ud800': node id 'a\\ud800'"),
    (
        "long node id",
        _set("nodes.0.node_id", LONG),
        f"node id is {MAX_ID_LENGTH + 1} characters long; the limit is {MAX_ID_LENGTH}",
    ),
    ("long session id", _set("session_id", LONG), "session id is 257 characters long"),
    ("empty session id", _set("session_id", ""), "session id is empty"),
    ("nodes object", _set("nodes", {}), "expected an array, got an object @ $.nodes"),
    ("node not object", _set("nodes", ["a"]), "expected an object, got a string @ $.nodes[0]"),
    ("frames object", _set("frames", {"a": 1}), "expected an array, got an object @ $.frames"),
    ("frame time", _set("frames.0.created_at", float("inf")), "got inf @ $.frames[0].created_at"),
    ("long frame id", _set("frames.0.frame_id", LONG), "frames[0]: frame id is 257 characters"),
    ("snapshot", _set("tool_snapshot.data.k", float("-inf")), "-inf at value.k is not a finite"),
    ("checkpoint", _set("host_checkpoint", [float("nan")]), "nan at value[0] is not a finite"),
    ("policy", _set("policy", "p"), "expected an object, got a string @ $.policy"),
    ("twice", _set("nodes.1.node_id", "a"), "node 'a' appears twice"),
]


@pytest.mark.parametrize(("change", "says"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_bad_input_is_exit_5_naming_the_problem_and_creates_nothing(
    change: Callable[[dict[str, Any]], None],
    says: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In-process (the same main() the command runs), to keep the matrix
    # fast; the subprocess tests below run a few of these end to end.
    data = _export()
    change(data)
    export = tmp_path / "bad.json"
    export.write_text(json.dumps(data))  # NaN and Infinity as Python writes them
    target = tmp_path / "new.sqlite3"
    assert main(["import", str(export), "--create", "--db", str(target)]) == 5
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"lash-machine: error: {export}: ")
    assert says in line
    assert not target.exists()  # checked before any store was opened


def test_a_number_too_large_for_a_float_is_refused(tmp_path: Path) -> None:
    text = json.dumps(_export()).replace('"created_at": 2.0', '"created_at": 1e999')
    assert "1e999" in text
    export = tmp_path / "big.json"
    export.write_text(text)
    refused = cli("import", str(export), "--create", "--db", str(tmp_path / "new.sqlite3"))
    assert refused.returncode == 5
    assert "expected a finite number, got inf @ $.nodes[1].created_at" in refused.stderr


def test_bad_input_never_reaches_an_existing_database(empty_db: Db) -> None:
    for _, change, says in (BAD[1], BAD[4], BAD[9]):
        data = _export()
        change(data)
        refused = cli("import", "-", *empty_db.args, stdin=json.dumps(data))
        assert refused.returncode == 5, (says, refused.stderr)
        assert says in refused.stderr
    store = empty_db.open()
    try:
        assert store.list_sessions() == []
    finally:
        store.close()
    # The sound export imports, and reads back as it was written.
    imported = cli("import", "-", *empty_db.args, stdin=json.dumps(_export()))
    assert imported.returncode == 0, imported.stderr
    stored = load(empty_db, "s")
    expected = wire.from_json(_export(), StoredSession)
    assert stored is not None
    assert (stored.nodes, stored.frames, stored.tool_snapshot) == (
        expected.nodes,
        expected.frames,
        expected.tool_snapshot,
    )


# ---- export -o ----------------------------------------------------------------------


def test_export_refuses_an_existing_file_unless_forced(empty_db: Db, tmp_path: Path) -> None:
    db = seed(empty_db)
    target = tmp_path / "out.json"
    target.write_text("precious\n")
    refused = cli("export", "s-main", "-o", str(target), *db.args)
    assert refused.returncode == 6
    assert refused.stderr == f"lash-machine: error: {target} exists: give --force to replace it\n"
    assert target.read_text() == "precious\n"

    forced = cli("export", "s-main", "-o", str(target), "--force", *db.args)
    assert forced.returncode == 0, forced.stderr
    assert wire.loads(target.read_text(), StoredSession).session_id == "s-main"
    # The file gets the mode a plain open() would give it, and no
    # temporary file is left beside it.
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == ["out.json"]


def test_a_failed_export_leaves_the_old_file_and_no_part_of_the_new(tmp_path: Path) -> None:
    db = empty_database("sqlite", tmp_path, lambda: "")
    store = db.open()
    try:
        with Driver(store) as driver:
            session = driver.open(POLICY, "big")
            session.append({"text": "x" * 300_000})
            session.park()
    finally:
        store.close()
    target = tmp_path / "out.json"
    target.write_text("precious\n")

    def small_files() -> None:
        # Writes past 100 kB fail (EFBIG; Python ignores SIGXFSZ): the
        # export fails half-way through writing its 300 kB.
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))

    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "lash_machine",
            "export",
            "big",
            "-o",
            str(target),
            "--force",
            *db.args,
        ],
        capture_output=True,
        text=True,
        env=ENV,
        timeout=60,
        preexec_fn=small_files,
        check=False,
    )
    assert failed.returncode == 4, failed.stderr
    assert f"cannot write {target}: File too large" in failed.stderr
    assert target.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir() if "out" in p.name) == ["out.json"]


def test_export_without_hard_links_still_refuses_an_existing_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A file system without hard links (os.link fails EPERM) falls back to
    # check-then-rename; the only way to get one here is to say so.
    from lash_machine.cli import transfer
    from lash_machine.cli.exits import CliError

    def no_links(src: str, dst: str) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "link", no_links)
    target = tmp_path / "out.json"
    transfer._write_whole(str(target), "one\n", replace=False)
    assert target.read_text() == "one\n"
    with pytest.raises(CliError) as refused:
        transfer._write_whole(str(target), "two\n", replace=False)
    assert refused.value.code == 6
    assert target.read_text() == "one\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.json"]


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
