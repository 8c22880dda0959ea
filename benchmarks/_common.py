"""What every workload shares: the run's settings, timing, profiles, and
the records a workload hands to the report."""

from __future__ import annotations

import cProfile
import gc
import pstats
import random
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")

__all__ = [
    "Config",
    "Elapsed",
    "Goal",
    "Section",
    "fmt_bytes",
    "fmt_time",
    "median",
    "profile",
    "prose",
    "samples",
    "table",
    "timed",
    "words",
]

# -- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """One run's settings. ``quick`` shrinks every workload to a smoke run."""

    quick: bool
    tmp: Path
    plots: Path
    pg_dsn: str | None
    synchronous: str = "FULL"

    def pick(self, full: T, quick: T) -> T:
        """``quick`` in a quick run, ``full`` otherwise."""
        return quick if self.quick else full


# -- timing -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Elapsed:
    """What a call returns when it times itself: the seconds of the part
    being measured (a call that must set up around it untimed, such as
    starting an event loop or opening a session, returns this)."""

    seconds: float


def timed(call: Callable[[], object]) -> float:
    """Seconds one call takes (or the part it timed itself: :class:`Elapsed`)."""
    start = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - start
    return result.seconds if isinstance(result, Elapsed) else seconds


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def samples(
    calls: Sequence[Callable[[], object]],
    repeats: int,
    warmup: int = 0,
    before: Callable[[int], object] | None = None,
    *,
    collect: bool = False,
    between: Callable[[], object] | None = None,
) -> list[list[float]]:
    """Time every call ``repeats`` times (after ``warmup`` untimed rounds);
    one list of seconds per call. ``before(round)`` runs untimed at the
    start of each round (to prepare what the calls consume); with
    ``collect``, a garbage collection runs untimed before every call, so
    that one call's garbage is not collected on another's time, and so does
    ``between()`` when given (to let the database finish the background
    work the previous call caused).

    Each round runs the calls in a rotated order, so none of them always
    pays for (or profits from) what another left behind: a WAL checkpoint,
    a warm cache, a garbage collection.
    """
    times: list[list[float]] = [[] for _ in calls]
    if collect:
        # What exists now lives through the measurement: keep it out of
        # every collection, so each costs what the calls left behind.
        gc.collect()
        gc.freeze()
    try:
        for round_ in range(warmup + repeats):
            if before is not None:
                before(round_)
            first = round_ % len(calls)
            for index in [*range(first, len(calls)), *range(first)]:
                if between is not None:
                    between()
                if collect:
                    gc.collect()
                seconds = timed(calls[index])
                if round_ >= warmup:
                    times[index].append(seconds)
    finally:
        if collect:
            gc.unfreeze()
    return times


# -- profiles -----------------------------------------------------------------------------


def profile(call: Callable[[], object], repeats: int, top: int = 12) -> str:
    """A cProfile summary of ``repeats`` calls: the functions with the most
    own time, as a markdown code block."""
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(repeats):
        call()
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in entries.values()) or 1.0
    rows = sorted(entries.items(), key=lambda item: item[1][2], reverse=True)[:top]
    lines = [f"{'own %':>6} {'own ms/call':>11} {'cum ms/call':>11} {'calls/call':>10}  function"]
    for (filename, line, name), (_, ncalls, own, cumulative, _) in rows:
        where = _short(filename, line, name)
        lines.append(
            f"{own / total:6.1%} {own * 1e3 / repeats:11.3f} {cumulative * 1e3 / repeats:11.3f}"
            f" {ncalls / repeats:10.1f}  {where}"
        )
    return "```text\n" + "\n".join(lines) + "\n```"


def _short(filename: str, line: int, name: str) -> str:
    if filename == "~":
        return name  # a builtin: "<method 'execute' of 'sqlite3.Connection' objects>"
    parts = Path(filename).parts
    for anchor in ("lash_machine", "langgraph", "psycopg", "psycopg_pool", "benchmarks"):
        if anchor in parts:
            parts = parts[parts.index(anchor) :]
            break
    else:
        parts = parts[-2:]
    return f"{'/'.join(parts)}:{line}({name})"


# -- what a workload reports --------------------------------------------------------------


@dataclass
class Goal:
    """One goal of the issue, against a ratio measured in this run."""

    name: str
    measured: str
    target: str
    met: bool
    note: str = ""


@dataclass
class Section:
    """One workload's part of RESULTS.md."""

    title: str
    method: str
    body: list[str] = field(default_factory=list)
    goals: list[Goal] = field(default_factory=list)
    plot: Path | None = None

    def add(self, *paragraphs: str) -> None:
        self.body.extend(paragraphs)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A markdown table; columns whose header ends in ``>`` align right."""
    names = [h.rstrip(">") for h in headers]
    rules = ["---:" if h.endswith(">") else "---" for h in headers]
    lines = ["| " + " | ".join(names) + " |", "|" + "|".join(rules) + "|"]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def prose(text: str) -> str:
    """A paragraph written as an indented triple-quoted string, unwrapped."""
    return " ".join(text.split())


def fmt_time(seconds: float) -> str:
    """A duration with a unit that keeps three significant digits."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:,.3g} {unit}"
    return f"{seconds * 1e9:,.3g} ns"


def fmt_bytes(count: float) -> str:
    for unit, scale in (("MB", 1e6), ("kB", 1e3)):
        if abs(count) >= scale:
            return f"{count / scale:,.3g} {unit}"
    return f"{count:,.0f} B"


# -- text for conversations ---------------------------------------------------------------

_VOCABULARY = (
    "the session agent graph node branch model token tool call result user assistant"
    " context window memory store commit resume park path history reply question answer"
    " because which would could should there their about after before while where every"
    " python database latency worker thread process request response message summary plan"
)
_WORDS = _VOCABULARY.split()


def words(rng: random.Random, count: int) -> str:
    """``count`` words of plausible text (it compresses about as well as prose)."""
    return " ".join(rng.choice(_WORDS) for _ in range(count))
