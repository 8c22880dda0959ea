"""The blocking session API is written from the async one
(scripts/unasync.py): the committed file must be what the script writes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_blocking_api_is_what_unasync_writes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "unasync.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_unasync_drops_the_async_keywords() -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import unasync
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    source = (ROOT / "lash_machine" / "drivers" / "_async_api.py").read_text()
    blocking = unasync.unasync(source)
    assert "async def" not in blocking and "await " not in blocking
    assert "class BlockingSession" in blocking and "AbstractContextManager" in blocking
