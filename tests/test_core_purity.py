"""The pure core does no IO: it imports nothing that could."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

CORE = [
    "model",
    "content",
    "_records",
    "compaction",
    "checks",
    "graph",
    "persisted",
    "state",
    "events",
    "effects",
    "machine",
    "errors",
    "wire",
]
FORBIDDEN = {
    "asyncio",
    "trio",
    "sqlite3",
    "psycopg",
    "psycopg_pool",
    "socket",
    "time",
    "uuid",
    "random",
    "os",
    "threading",
    "subprocess",
}
PACKAGE = Path(__file__).parent.parent / "lash_machine"


@pytest.mark.parametrize("module", CORE)
def test_core_module_imports_nothing_that_does_io(module: str) -> None:
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            imported.add(node.module.split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 1 and node.module:
            assert node.module.split(".")[0] in CORE, f"{module} imports .{node.module}"
    assert not imported & FORBIDDEN, f"{module} imports {sorted(imported & FORBIDDEN)}"


def test_importing_the_package_loads_no_io_module() -> None:
    code = (
        "import sys; before = set(sys.modules); import lash_machine, lash_machine.wire; "
        "print(' '.join(sorted(set(sys.modules) - before)))"
    )
    loaded = set(
        subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        ).stdout.split()
    )
    io = {"asyncio", "trio", "sqlite3", "psycopg", "psycopg_pool", "socket", "uuid", "random"}
    assert not loaded & io, f"importing lash_machine loaded {sorted(loaded & io)}"
