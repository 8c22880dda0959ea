"""The pages of docs/ say what is true: every Python snippet runs as
written, prints what the page shows after it, and every link resolves.

Snippets of one page run in order in one scratch directory. A snippet whose
first line is ``# file: NAME.py`` is saved under that name (a later snippet
may import it) and, when NAME starts with ``test_``, run with pytest; any
other snippet that defines ``test_`` functions is a pytest module too; the
rest run as scripts. A ``text`` block right after a script is its exact
standard output.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.md"))
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
FILE = re.compile(r"# file: (\w+\.py)\n")
LINK = re.compile(r"\]\(([^)\s]+)\)")


@attrs.frozen
class Snippet:
    code: str
    output: str | None  # the text block shown right after it, if any

    @property
    def file(self) -> str | None:
        named = FILE.match(self.code)
        return named.group(1) if named else None

    @property
    def is_test_module(self) -> bool:
        if self.file is not None:
            return self.file.startswith("test_")
        return re.search(r"^def test_", self.code, re.MULTILINE) is not None


def snippets(page: Path) -> list[Snippet]:
    text = page.read_text()
    blocks = list(FENCE.finditer(text))
    found = []
    for i, block in enumerate(blocks):
        if block.group(1) != "python":
            continue
        following = blocks[i + 1] if i + 1 < len(blocks) else None
        adjacent = following is not None and not text[block.end() : following.start()].strip()
        output = following.group(2) if adjacent and following.group(1) == "text" else None
        found.append(Snippet(block.group(2), output))
    return found


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_the_how_to_pages_have_snippets() -> None:
    counts = {page.name: len(snippets(page)) for page in PAGES}
    for how_to in ("web-servers.md", "verify-graphs.md", "custom-store.md", "transport.md"):
        assert counts.get(how_to, 0) >= 1, counts


@pytest.mark.parametrize("page", [p for p in PAGES if snippets(p)], ids=lambda p: p.name)
def test_every_snippet_of_the_page_runs_as_written(page: Path, tmp_path: Path) -> None:
    for number, snippet in enumerate(snippets(page), 1):
        where = f"{page.name}, Python snippet {number}"
        name = snippet.file or (
            f"test_{page.stem.replace('-', '_')}_{number}.py"
            if snippet.is_test_module
            else f"snippet_{number}.py"
        )
        (tmp_path / name).write_text(snippet.code)
        if snippet.file is not None and not snippet.is_test_module:
            continue  # a module for the snippets after it
        if snippet.is_test_module:
            done = _run(["-m", "pytest", "-q", "-p", "no:cacheprovider", name], tmp_path)
            assert done.returncode == 0, f"{where}:\n{done.stdout}{done.stderr}"
            continue
        done = _run([name], tmp_path)
        assert done.returncode == 0, f"{where}:\n{done.stderr}"
        if snippet.output is not None:
            assert done.stdout == snippet.output, f"{where} printed other output"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_relative_link_resolves(page: Path) -> None:
    for target in LINK.findall(page.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = target.split("#", 1)[0]
        assert (page.parent / path).exists(), f"{page.name} links to missing {target}"


def test_the_index_lists_every_page() -> None:
    index = (DOCS / "README.md").read_text()
    for page in PAGES:
        if page.name != "README.md":
            assert f"]({page.name})" in index, f"docs/README.md does not link {page.name}"
