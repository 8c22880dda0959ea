"""Write the blocking session class from the async one.

    python scripts/unasync.py          # rewrites lash_machine/drivers/_blocking_api.py
    python scripts/unasync.py --check  # exit 1 when the file is stale

The session API is written once, in lash_machine/drivers/_async_api.py;
the blocking form is the same text without ``async`` and ``await``. The
rewrite works on tokens, so strings and comments are left alone.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT / "lash_machine" / "drivers" / "_async_api.py"
TARGET = ROOT / "lash_machine" / "drivers" / "_blocking_api.py"

#: Names the blocking form spells differently.
RENAMES = {
    "AsyncSession": "BlockingSession",
    "AsyncDriver": "BlockingDriver",
    "AbstractAsyncContextManager": "AbstractContextManager",
}

HEADER = (
    "# Written by scripts/unasync.py from _async_api.py: edit that file, then run\n"
    "# `python scripts/unasync.py`. tests/test_drivers_generated.py fails when this is stale.\n"
)


def unasync(source: str) -> str:
    """``source`` without the ``async`` and ``await`` keywords (and the
    space after each), with the names of :data:`RENAMES` replaced."""
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, int, str]] = []  # (row, start, end, replacement)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        (row, start), (_, end) = token.start, token.end
        if token.type == tokenize.STRING and token.string.strip("'\"") in RENAMES:
            # A forward reference ("AsyncSession") names the class too.
            quote = token.string[0]
            edits.append((row, start, end, quote + RENAMES[token.string.strip(quote)] + quote))
            continue
        if token.type != tokenize.NAME:
            continue
        if token.string in ("async", "await"):
            line = lines[row - 1]
            while end < len(line) and line[end] == " ":
                end += 1
            edits.append((row, start, end, ""))
        elif token.string in RENAMES:
            edits.append((row, start, end, RENAMES[token.string]))
    for row, start, end, replacement in reversed(edits):
        line = lines[row - 1]
        lines[row - 1] = line[:start] + replacement + line[end:]
    return "".join(lines)


def render() -> str:
    """The blocking session module, formatted as ruff formats the project
    (a shorter line may now fit where the async one was wrapped)."""
    text = SOURCE.read_text()
    text = text.replace(
        '"""The session API, written once.', '"""The session API, written once (blocking form).', 1
    )
    formatted = subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--stdin-filename", str(TARGET), "-"],
        input=HEADER + unasync(text),
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    return formatted.stdout


def main() -> int:
    wanted = render()
    if "--check" in sys.argv[1:]:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != wanted:
            print(f"{TARGET} is stale: run python scripts/unasync.py", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(wanted)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
