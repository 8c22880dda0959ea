"""A status line for long runs (``check`` over many sessions, ``vacuum``,
``import``): on stderr, and only when stderr is a terminal.

Piped or redirected, a command prints exactly what it printed before (its
results on stdout, errors on stderr): scripts and logs never see progress.
On a terminal the line is redrawn in place and erased when the run ends,
before the results are printed.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from .render import printable

__all__ = ["Progress"]

#: Erase from the cursor to the end of the line (ANSI, every terminal).
_ERASE = "\x1b[K"


class Progress:
    """The status line of one ``command`` run, written to ``stream``
    (default: stderr) when it is a terminal, else a no-op.

    Redrawn at most every ``every`` seconds, except the first and the last
    count of a run, which are always drawn.
    """

    def __init__(self, command: str, stream: TextIO | None = None, every: float = 0.1) -> None:
        self.stream = sys.stderr if stream is None else stream
        self.command = command
        self.every = every
        self.enabled = _is_terminal(self.stream)
        self._drawn_at: float | None = None

    def say(self, text: str) -> None:
        """Show ``text`` as the status, now."""
        if self.enabled:
            self._draw(text)

    def count(self, done: int, total: int, what: str) -> None:
        """Show that ``done`` of ``total`` ``what`` (``"sessions"``) are done."""
        if not self.enabled:
            return
        first = self._drawn_at is None
        due = first or time.monotonic() - (self._drawn_at or 0.0) >= self.every
        if due or done >= total:
            self._draw(f"{done}/{total} {what}")

    def done(self) -> None:
        """Erase the status line (the results follow on a clean line)."""
        if self.enabled and self._drawn_at is not None:
            self.stream.write("\r" + _ERASE)
            self.stream.flush()
            self._drawn_at = None

    def _draw(self, text: str) -> None:
        line = printable(f"{self.command}: {text}")
        # A line longer than the terminal wraps, and "\r" no longer
        # returns to its start.
        line = line[: max(_columns(self.stream) - 1, 10)]
        self.stream.write("\r" + line + _ERASE)
        self.stream.flush()
        self._drawn_at = time.monotonic()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _columns(stream: TextIO) -> int:
    try:
        return os.get_terminal_size(stream.fileno()).columns or 80
    except (AttributeError, ValueError, OSError):
        return 80
