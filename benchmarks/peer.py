"""Workload 4, peer: one branching conversation persisted after every turn,
reopened and forked, by lash_machine and by LangGraph's checkpointers, on
the same databases.

lash_machine runs through the blocking driver, as a host would: per turn
``session.append(user)``, ``session.append(assistant)``, ``session.save()``.
LangGraph runs its checkpointer as its graph runtime does (no graph: the
runtime's part is written out here): after every turn one
``saver.put(parent_config, checkpoint, metadata, new_versions)`` whose
checkpoint holds the conversation in the ``messages`` channel of
``channel_values``, with ``new_versions`` naming only that channel, so only
its new blob is written; a rewind (a regenerated answer) continues from a
past checkpoint read with ``saver.get_tuple``.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import os
import random
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import attrs
from langgraph.checkpoint.base import BaseCheckpointSaver, empty_checkpoint

from lash_machine import effects as fx
from lash_machine import events as ev
from lash_machine import step
from lash_machine.drivers.blocking import Driver, Session
from lash_machine.model import NodeKind, ParkedSession, Residency, SessionNode
from lash_machine.persisted import ActivePath
from lash_machine.state import MachineState
from lash_machine.stores.base import SessionStore
from lash_machine.stores.sqlite import SQLiteStore
from lash_machine.testing.records import POLICY, make_commit

from ._common import (
    Config,
    Goal,
    Section,
    fmt_bytes,
    fmt_time,
    median,
    profile,
    prose,
    samples,
    table,
    words,
)
from ._pg import checkpoint, relation_bytes, temporary_schema, vacuum_analyze
from ._plots import Panel, save_panels

#: Every BRANCH_EVERY-th turn the user regenerates: the conversation goes
#: back REWIND turns and continues from there (the REWIND turns stay stored
#: on an abandoned branch).
BRANCH_EVERY = 10
REWIND = 3
USER_WORDS, ASSISTANT_WORDS = 25, 75
PERSIST_GOAL = 10.0

Message = dict[str, str]


@dataclass(frozen=True)
class Turn:
    """A user message, the answer, and the turn they follow (-1: none)."""

    user: Message
    assistant: Message
    base: int


def conversation(turns: int, seed: int = 7) -> list[Turn]:
    """The same branching conversation for both systems."""
    rng = random.Random(seed)
    script = []
    for t in range(turns):
        rewind = t >= BRANCH_EVERY and t % BRANCH_EVERY == 0
        base = t - 1 - REWIND if rewind else t - 1
        user = {"role": "user", "content": words(rng, USER_WORDS)}
        assistant = {"role": "assistant", "content": words(rng, ASSISTANT_WORDS)}
        script.append(Turn(user, assistant, base))
    return script


def abandoned_tips(script: list[Turn]) -> list[int]:
    """Turns that end an abandoned branch: where a fork finds no resident path."""
    return [t - 1 for t, turn in enumerate(script) if turn.base != t - 1 and t > 0]


def active_messages(script: list[Turn]) -> list[Message]:
    """The conversation as the last turn sees it."""
    chain = []
    t = len(script) - 1
    while t >= 0:
        chain.append(script[t])
        t = script[t].base
    return [m for turn in reversed(chain) for m in (turn.user, turn.assistant)]


# -- lash_machine ---------------------------------------------------------------------------


class Lash:
    """The conversation through lash_machine's blocking driver."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.parked: ParkedSession | None = None
        self.answers: list[str] = []  # the assistant node of every turn

    def persist(self, session_id: str, script: list[Turn]) -> None:
        session = self.driver.open(POLICY, session_id)
        answers: list[str] = []
        for t, turn in enumerate(script):
            if turn.base != t - 1 and t > 0:
                session.branch(answers[turn.base])
            session.append(turn.user)
            answers.append(session.append(turn.assistant).node_id)
            session.save()
        self.parked, self.answers = session.park(), answers

    def reopen(self, residency: Residency) -> tuple[Session, list[Message]]:
        assert self.parked is not None
        session = self.driver.resume(self.parked, residency=residency)
        assert session.state is not None
        return session, [node.body for node in session.state.graph.active_path()]

    def fork(self, session: Session, turn: int, new: Turn) -> None:
        session.branch(self.answers[turn])
        session.append(new.user)
        session.append(new.assistant)
        session.save()


class Raw:
    """The floor: ``bench_store``'s raw driver writing the same rows into
    lash_machine's tables (its own copy of them), one transaction per turn,
    and reading the active path back with one recursive query."""

    def __init__(self, store: SessionStore, raw: Any) -> None:
        self.store = store
        self.raw = raw
        self.session_id = ""
        self.leaf = ""

    def prepare(self, session_id: str) -> None:
        """Create the session row (untimed: lash's first save does it)."""
        self.store.commit(make_commit(session_id, None, []))
        self.raw.prepare(session_id)

    def persist(self, session_id: str, script: list[Turn]) -> None:
        head = 1
        answers: list[str] = []
        for t, turn in enumerate(script):
            parent = answers[turn.base] if turn.base >= 0 else None
            user = SessionNode(f"{t}u", parent, NodeKind.MESSAGE, turn.user, None, 0.0)
            answer = SessionNode(f"{t}a", user.node_id, NodeKind.MESSAGE, turn.assistant, None, 0.0)
            head = self.raw.commit(session_id, head, [user, answer])
            answers.append(answer.node_id)
        self.session_id, self.leaf = session_id, answers[-1]

    def reopen(self) -> list[Any]:
        return list(self.raw.load_path(self.session_id, self.leaf))


# -- LangGraph ------------------------------------------------------------------------------


class LangGraph:
    """The conversation through a LangGraph checkpointer, as its runtime
    writes it: one checkpoint per turn."""

    def __init__(self, saver: BaseCheckpointSaver[Any]) -> None:
        self.saver = saver
        self.thread = ""
        self.configs: list[dict[str, Any]] = []  # the checkpoint of every turn

    def _put(
        self, parent: dict[str, Any], messages: list[Message], step: int, version: Any
    ) -> tuple[dict[str, Any], Any]:
        """Write a checkpoint after ``parent`` whose ``messages`` channel moves
        on from ``version``; return its config and the channel's new version."""
        version = self.saver.get_next_version(version, None)
        checkpoint = empty_checkpoint()
        checkpoint["channel_values"] = {"messages": messages}
        checkpoint["channel_versions"] = {"messages": version}
        checkpoint["versions_seen"] = {"agent": {"messages": version}}
        checkpoint["updated_channels"] = ["messages"]
        metadata: Any = {"source": "loop", "step": step, "parents": {}}
        config = self.saver.put(parent, checkpoint, metadata, {"messages": version})
        return dict(config), version

    def persist(self, thread_id: str, script: list[Turn]) -> None:
        parent: dict[str, Any] = {"configurable": {"thread_id": thread_id, "checkpoint_ns": ""}}
        messages: list[Message] = []
        version = None
        configs: list[dict[str, Any]] = []
        for t, turn in enumerate(script):
            if turn.base != t - 1 and t > 0:
                # Continue from a past checkpoint: the runtime reads it back.
                parent = configs[turn.base]
                past = self.saver.get_tuple(parent)  # type: ignore[arg-type]
                assert past is not None
                messages = past.checkpoint["channel_values"]["messages"]
                version = past.checkpoint["channel_versions"]["messages"]
            messages = [*messages, turn.user, turn.assistant]
            parent, version = self._put(parent, messages, t, version)
            configs.append(parent)
        self.thread, self.configs = thread_id, configs

    def reopen(self) -> list[Message]:
        latest = self.saver.get_tuple({"configurable": {"thread_id": self.thread}})
        assert latest is not None
        messages: list[Message] = latest.checkpoint["channel_values"]["messages"]
        return messages

    def fork(self, turn: int, new: Turn) -> None:
        past = self.saver.get_tuple(self.configs[turn])  # type: ignore[arg-type]
        assert past is not None
        messages = [*past.checkpoint["channel_values"]["messages"], new.user, new.assistant]
        version = past.checkpoint["channel_versions"]["messages"]
        self._put(self.configs[turn], messages, len(self.configs), version)


# -- the databases --------------------------------------------------------------------------


@dataclass
class Pair:
    """Both systems on one kind of database, each in its own file or
    schema, with a way to measure what each keeps on disk."""

    database: str
    lash: Lash
    raw: Raw
    langgraph: LangGraph
    lash_bytes: Callable[[], int]
    langgraph_bytes: Callable[[], int]
    settle: Callable[[], None] = lambda: None
    quiesce: Callable[[], None] = os.sync


def sqlite_bytes(path: Path) -> int:
    """The database file plus its WAL, after a checkpoint that empties the WAL."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    wal = Path(f"{path}-wal")
    return os.path.getsize(path) + (os.path.getsize(wal) if wal.exists() else 0)


@contextlib.contextmanager
def sqlite_pair(config: Config, label: str, synchronous: str) -> Iterator[Pair]:
    """Three SQLite files (lash, raw, LangGraph), all with ``synchronous``."""
    from langgraph.checkpoint.sqlite import SqliteSaver

    from .bench_store import RawSQLite

    lash_path = config.tmp / f"{label}-{synchronous}-lash.db"
    raw_path = config.tmp / f"{label}-{synchronous}-raw.db"
    langgraph_path = config.tmp / f"{label}-{synchronous}-langgraph.db"
    with contextlib.ExitStack() as stack:
        store = SQLiteStore(lash_path, synchronous=synchronous)
        stack.callback(store.close)
        raw_store = SQLiteStore(raw_path, synchronous=synchronous)
        stack.callback(raw_store.close)
        raw = RawSQLite(str(raw_path), synchronous)
        stack.callback(raw.close)
        conn = sqlite3.connect(langgraph_path, check_same_thread=False)
        stack.callback(conn.close)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        saver = SqliteSaver(conn)
        saver.setup()
        driver = stack.enter_context(Driver(store))
        yield Pair(
            f"SQLite ({synchronous})",
            Lash(driver),
            Raw(raw_store, raw),
            LangGraph(saver),
            lambda: sqlite_bytes(lash_path),
            lambda: sqlite_bytes(langgraph_path),
        )


@contextlib.contextmanager
def postgres_pair(config: Config, label: str) -> Iterator[Pair]:
    """Three schemas (lash, raw, LangGraph) on the run's server."""
    from langgraph.checkpoint.postgres import PostgresSaver

    from lash_machine.stores.postgres import PostgresStore

    from .bench_store import RawPostgres

    assert config.pg_dsn is not None
    server = config.pg_dsn
    with contextlib.ExitStack() as stack:
        lash_schema, lash_dsn = stack.enter_context(temporary_schema(server, f"{label}_lash"))
        _, raw_dsn = stack.enter_context(temporary_schema(server, f"{label}_raw"))
        langgraph_schema, langgraph_dsn = stack.enter_context(
            temporary_schema(server, f"{label}_langgraph")
        )
        store = PostgresStore(lash_dsn)
        stack.callback(store.close)
        raw_store = PostgresStore(raw_dsn)
        stack.callback(raw_store.close)
        raw = RawPostgres(raw_dsn)
        stack.callback(raw.close)
        saver = stack.enter_context(PostgresSaver.from_conn_string(langgraph_dsn))
        saver.setup()
        driver = stack.enter_context(Driver(store))

        def settle() -> None:
            for dsn in (lash_dsn, raw_dsn, langgraph_dsn):
                vacuum_analyze(dsn)

        def quiesce() -> None:
            checkpoint(server)
            os.sync()

        yield Pair(
            "PostgreSQL",
            Lash(driver),
            Raw(raw_store, raw),
            LangGraph(saver),
            lambda: relation_bytes(server, lash_schema),
            lambda: relation_bytes(server, langgraph_schema),
            settle,
            quiesce,
        )


# -- the measurements -----------------------------------------------------------------------

#: The answer a fork writes.
FORK = Turn({"role": "user", "content": "try again"}, {"role": "assistant", "content": "ok"}, -1)


@dataclass
class Result:
    """Median seconds (bytes for size) of each system, per measure."""

    persist: tuple[float, float]
    reopen: tuple[float, float]
    reopen_keep_all: float
    fork: tuple[float, float]
    size: tuple[float, float]
    raw_persist: float
    raw_reopen: float
    why: str = ""


def measure(
    pair: Pair, script: list[Turn], persists: int, reopens: int, forks: int, *, explain: bool
) -> Result:
    """Persist, size, reopen and fork medians for one pair; with
    ``explain``, also the part-by-part breakdown (taken before the forks
    move the stored leaf)."""
    lash, raw, langgraph = pair.lash, pair.raw, pair.langgraph
    conversation_id = ""

    def next_conversation(round_: int) -> None:
        nonlocal conversation_id
        conversation_id = f"conversation-{round_}"
        raw.prepare(conversation_id)

    persist = samples(
        [
            lambda: lash.persist(conversation_id, script),
            lambda: langgraph.persist(conversation_id, script),
            lambda: raw.persist(conversation_id, script),
        ],
        persists,
        before=next_conversation,
        collect=True,
        between=pair.quiesce,
    )
    size = (pair.lash_bytes() / persists, pair.langgraph_bytes() / persists)
    pair.settle()

    expected = active_messages(script)
    session, messages = lash.reopen(Residency.ACTIVE_PATH_ONLY)
    session.close()
    assert messages == expected == langgraph.reopen(), "the systems disagree"
    assert len(raw.reopen()) == len(expected)

    opened: list[Session] = []

    def close_opened(_: object = None) -> None:
        while opened:
            opened.pop().close()

    def reopen_lash(residency: Residency) -> None:
        opened.append(lash.reopen(residency)[0])

    lash_reopen, keep_all, langgraph_reopen, raw_reopen = samples(
        [
            lambda: reopen_lash(Residency.ACTIVE_PATH_ONLY),
            lambda: reopen_lash(Residency.KEEP_ALL),
            langgraph.reopen,
            raw.reopen,
        ],
        reopens,
        warmup=2,
        before=close_opened,
        collect=True,
    )

    why = _why(pair, len(script), reopens) if explain else ""

    # Each fork starts from a freshly reopened session (ACTIVE_PATH_ONLY)
    # and goes to the tip of another abandoned branch: a turn that is in
    # neither system's memory, so both read its history from the store.
    tips = abandoned_tips(script)
    tip = 0

    def reopen_for_fork(round_: int) -> None:
        nonlocal tip
        close_opened()
        tip = tips[round_ % len(tips)]
        opened.append(lash.reopen(Residency.ACTIVE_PATH_ONLY)[0])

    lash_fork, langgraph_fork = samples(
        [lambda: lash.fork(opened[-1], tip, FORK), lambda: langgraph.fork(tip, FORK)],
        min(forks, len(tips) - 1),
        warmup=1,
        before=reopen_for_fork,
        collect=True,
    )
    close_opened()
    return Result(
        (median(persist[0]), median(persist[1])),
        (median(lash_reopen), median(langgraph_reopen)),
        median(keep_all),
        (median(lash_fork), median(langgraph_fork)),
        size,
        median(persist[2]),
        median(raw_reopen),
        why,
    )


# -- the report -----------------------------------------------------------------------------


def run(config: Config) -> Section:
    turn_counts = config.pick((100, 1000), (100,))
    persists = config.pick({100: 5, 1000: 5}, {100: 1})
    reopens = config.pick(30, 5)
    forks = config.pick(20, 3)
    section = Section(
        "4. Peer: lash_machine beside LangGraph's checkpointers",
        prose(f"""
        One scripted conversation of T turns (a user message of
        {USER_WORDS} words and an answer of {ASSISTANT_WORDS}); every
        {BRANCH_EVERY}th turn the user regenerates, so the conversation goes
        back {REWIND} turns and continues there (the abandoned turns stay
        stored, as both systems keep history). **lash_machine** runs through
        the blocking driver, as a host would: per turn `session.append(user)`,
        `session.append(answer)`, `session.save()` (one commit: the two new
        nodes); a rewind is `session.branch(node_id)`. **LangGraph** runs its
        checkpointer as its graph runtime does: per turn one
        `saver.put(parent_config, checkpoint, metadata, new_versions)`, the
        conversation in the `messages` channel of `channel_values` and only
        that channel in `new_versions`, so only its new blob is written; a
        rewind reads the past checkpoint back with `saver.get_tuple`. This is
        generous to LangGraph: its runtime also writes the pending writes of
        every task (`put_writes`), and real `MessagesState` messages are
        LangChain message objects, slower to (de)serialize than the plain
        dicts used here. Each system has its own SQLite file (WAL,
        `synchronous={config.synchronous}` for both) or PostgreSQL schema on
        the same server. **Persist**: the whole conversation, medians over
        fresh conversations. **Reopen**: load the latest state and produce
        the message list (lash: `driver.resume` then the active path's
        bodies; LangGraph: `saver.get_tuple(thread)`); the two lists are
        checked equal. **Fork**: from a freshly reopened session, continue
        from the tip of an abandoned branch (a different one each round, so
        neither system has it in memory) and persist one turn (lash:
        `branch` + 2 `append` + `save` under `ACTIVE_PATH_ONLY`, which loads
        the branch's path; LangGraph: `get_tuple(past)` + `put`). **Size**:
        SQLite file plus WAL after `wal_checkpoint(TRUNCATE)`;
        PostgreSQL `pg_total_relation_size` of the schema's tables (with
        indexes and TOAST), per conversation.
        """),
    )
    found: dict[tuple[str, int], Result] = {}
    whys: list[str] = []
    main = f"SQLite ({config.synchronous})"
    openers: list[Callable[[str], contextlib.AbstractContextManager[Pair]]] = [
        lambda label: sqlite_pair(config, label, config.synchronous)
    ]
    if config.synchronous != "NORMAL":
        # Context: the same comparison without an fsync per commit.
        openers.append(lambda label: sqlite_pair(config, label, "NORMAL"))
    if config.pg_dsn is not None:
        openers.append(lambda label: postgres_pair(config, label))
    for open_pair in openers:
        for turns in turn_counts:
            with open_pair(f"peer{turns}") as pair:
                explain = turns == turn_counts[-1] and pair.database != "SQLite (NORMAL)"
                result = measure(
                    pair, conversation(turns), persists[turns], reopens, forks, explain=explain
                )
                found[pair.database, turns] = result
                missed = (
                    result.reopen[0] > result.reopen[1]
                    or result.persist[1] < PERSIST_GOAL * result.persist[0]
                )
                if missed:
                    whys.append(result.why)
    databases = list(dict.fromkeys(name for name, _ in found))
    last = turn_counts[-1]
    section.add(_table(found), *_explain(found, main, turn_counts), *whys)
    for name in (main, "PostgreSQL"):
        if (name, last) not in found:
            continue
        result = found[name, last]
        speedup = result.persist[1] / result.persist[0]
        notes = [
            f"the raw floor is {result.persist[1] / result.raw_persist:.1f}x faster than LangGraph"
        ]
        if name == main and ("SQLite (NORMAL)", last) in found:
            normal = found["SQLite (NORMAL)", last]
            notes.append(f"with `synchronous=NORMAL`: {normal.persist[1] / normal.persist[0]:.1f}x")
        section.goals.append(
            Goal(
                f"{name}: persist a {last:,}-turn conversation, LangGraph ÷ lash",
                f"{speedup:.1f}x",
                f"≥ {PERSIST_GOAL:.0f}x",
                speedup >= PERSIST_GOAL,
                "; ".join(notes),
            )
        )
        reopen = result.reopen[1] / result.reopen[0]
        section.goals.append(
            Goal(
                f"{name}: reopen after {last:,} turns, LangGraph ÷ lash (`ACTIVE_PATH_ONLY`)",
                f"{reopen:.2f}x",
                "≥ 1x (no slower)",
                reopen >= 1.0,
                f"`KEEP_ALL`: {result.reopen[1] / result.reopen_keep_all:.2f}x; LangGraph ÷ the"
                f" raw path query: {result.reopen[1] / result.raw_reopen:.2f}x",
            )
        )
    section.plot = _plot(config, found, databases, turn_counts)
    return section


def _explain(
    found: dict[tuple[str, int], Result], main: str, turn_counts: tuple[int, ...]
) -> list[str]:
    """What the table says, in words, from this run's numbers."""
    first, last = turn_counts[0], turn_counts[-1]
    if (main, last) not in found:
        return []
    small, big = found[main, first], found[main, last]
    paragraphs = [
        prose(f"""
        **Persist.** LangGraph writes the whole conversation at every turn,
        so what it writes grows with the square of T ({fmt_bytes(big.size[1])}
        on disk for one {last:,}-turn conversation against lash's
        {fmt_bytes(big.size[0])}, {main}); lash writes the two new rows, so
        its time per turn stays flat ({fmt_time(small.persist[0] / first)}
        per turn at T={first:,}, {fmt_time(big.persist[0] / last)} at
        T={last:,}). Both pay one durable commit per turn, and on
        {main} that commit is most of a lash turn: the raw driver writing
        lash's rows, with nothing else, is {big.persist[1] / big.raw_persist:.1f}x
        faster than LangGraph: the ceiling for any code that commits these
        rows once per turn.
        """)
    ]
    if ("SQLite (NORMAL)", last) in found:
        normal = found["SQLite (NORMAL)", last]
        paragraphs.append(
            prose(f"""
            Without an fsync per commit (`synchronous=NORMAL` for both) the
            ratio is {normal.persist[1] / normal.persist[0]:.1f}x, and lash
            runs at {normal.persist[0] / normal.raw_persist:.1f}x the raw
            floor: with the disk out of the way, lash's own per-turn cost shows
            (the breakdown below: the driver's worker-thread round trip and the
            reducer's steps).
            """)
        )
    floor = big.raw_reopen / big.reopen[1]
    verdict = (
        "a design with one row per node cannot meet this goal, whatever the code"
        " around it (see the recommendations in `benchmarks/README.md`)"
        if floor >= 1
        else "so the goal is within reach of the rows; the rest is lash's own cost"
    )
    paragraphs.append(
        prose(f"""
        **Reopen.** LangGraph reads one row and unpacks one msgpack blob
        holding the conversation. lash reads one row per node of the active
        path (a recursive query), decodes each node's JSON body and builds
        the graph. On {main} the raw path query alone, rows undecoded,
        takes {fmt_time(big.raw_reopen)}: {floor:.1f}x LangGraph's whole
        reopen; {verdict}. What LangGraph pays for its one-blob reads is the
        size column.
        """)
    )
    return paragraphs


def _ratio_rows(result: Result) -> list[tuple[str, float, float, float | None, str]]:
    """(measure, lash, LangGraph, raw floor or None, unit) for one case."""
    return [
        ("persist (total)", *result.persist, result.raw_persist, "time"),
        ("reopen, `ACTIVE_PATH_ONLY`", *result.reopen, result.raw_reopen, "time"),
        ("reopen, `KEEP_ALL`", result.reopen_keep_all, result.reopen[1], None, "time"),
        ("fork from a past turn", *result.fork, None, "time"),
        ("size on disk", *result.size, None, "bytes"),
    ]


def _table(found: dict[tuple[str, int], Result]) -> str:
    rows = []
    for (name, turns), result in found.items():
        for measure_name, lash, langgraph, raw, unit in _ratio_rows(result):
            show = fmt_time if unit == "time" else fmt_bytes
            rows.append(
                [
                    name,
                    f"{turns:,}",
                    measure_name,
                    show(lash),
                    show(langgraph),
                    f"**{langgraph / lash:.2f}x**",
                    "" if raw is None else show(raw),
                    "" if raw is None else f"{lash / raw:.2f}x",
                ]
            )
    headers = [
        "database",
        "turns T>",
        "measure",
        "lash>",
        "LangGraph>",
        "LangGraph ÷ lash>",
        "raw floor>",
        "lash ÷ raw>",
    ]
    return table(headers, rows)


#: Axis labels for the measures of :func:`_ratio_rows`.
SHORT = {
    "persist (total)": "persist",
    "reopen, `ACTIVE_PATH_ONLY`": "reopen\n(ACTIVE_PATH)",
    "reopen, `KEEP_ALL`": "reopen\n(KEEP_ALL)",
    "fork from a past turn": "fork",
    "size on disk": "size",
}


def _plot(
    config: Config,
    found: dict[tuple[str, int], Result],
    databases: list[str],
    turns: tuple[int, ...],
) -> Path:
    panels = []
    for name in databases:
        measures = [m for m, *_ in _ratio_rows(found[name, turns[0]])]
        series = {
            f"T={t:,}": [lg / lash for _, lash, lg, *_ in _ratio_rows(found[name, t])]
            for t in turns
        }
        panels.append(
            Panel(
                f"{name}: LangGraph ÷ lash_machine (above 1: lash wins)",
                [SHORT.get(m, m) for m in measures],
                series,
                ylabel="ratio (log)",
                goal=PERSIST_GOAL,
                goal_label=f"persist goal ≥ {PERSIST_GOAL:.0f}x",
                log=True,
            )
        )
    return save_panels(config.plots / "peer.png", "Peer: ratios of medians, same run", panels)


def _why(pair: Pair, turns: int, repeats: int) -> str:
    """Where a lash turn and a lash reopen spend their time, measured part
    by part on this pair's databases, with a profile of the reopen."""
    lash, raw = pair.lash, pair.raw
    store = lash.driver.store
    assert store is not None and lash.parked is not None

    # One turn, part by part: the driver's calls, the store's commit of the
    # same two nodes called directly, the raw driver's, a thread round trip.
    session = lash.driver.open(POLICY, "breakdown")
    raw.prepare("breakdown")
    heads = {"store": store.commit(make_commit("breakdown-direct", None, [])), "raw": 1}
    hop = concurrent.futures.ThreadPoolExecutor(1)
    nodes: list[SessionNode] = []

    def direct() -> None:
        heads["store"] = store.commit(make_commit("breakdown-direct", heads["store"], nodes))

    def by_raw() -> None:
        heads["raw"] = raw.raw.commit("breakdown", heads["raw"], nodes)

    def turn() -> None:
        session.append(FORK.user)
        session.append(FORK.assistant)
        session.save()

    fresh = iter(range(10**9))

    def next_nodes(_: object = None) -> None:
        user = SessionNode(f"{next(fresh)}u", None, NodeKind.MESSAGE, {}, None, 0.0)
        nodes[:] = [user, attrs.evolve(user, node_id=f"{user.node_id}a", parent_id=user.node_id)]

    # The driver's parts first, each on its own (so its threads' connections
    # do not write the file between the direct commits), then the direct
    # commit, the raw commit and a bare thread round trip, taking turns.
    parts = {
        "`session.append` (one node; no IO)": samples(
            [lambda: session.append(FORK.user)], repeats, warmup=1
        )[0],
        "`session.save()` (two nodes)": samples([turn], repeats, warmup=1)[0],
    }
    direct_t, raw_t, hop_t = samples(
        [direct, by_raw, lambda: hop.submit(int).result()], repeats, warmup=1, before=next_nodes
    )
    parts["`store.commit` (two nodes, called directly)"] = direct_t
    parts["raw driver commit (two rows)"] = raw_t
    parts["worker-thread round trip (no work)"] = hop_t
    hop.shutdown()
    session.close(discard=True)
    # The save's row timed two appends too: take them out.
    appended = median(parts["`session.append` (one node; no IO)"])
    turn_rows = [
        [name, fmt_time(median(t) - (2 * appended if "save" in name else 0.0))]
        for name, t in parts.items()
    ]

    # One reopen, part by part, and the reducer's share profiled in-thread.
    read_scope = ActivePath()

    def inline_reopen() -> None:
        state, out = step(
            MachineState.initial(),
            ev.Resume(lash.parked, 0.0, Residency.ACTIVE_PATH_ONLY),  # type: ignore[arg-type]
        )
        load = next(e for e in out if isinstance(e, fx.LoadGraph))
        read = store.load_graph(load.session_id, load.scope)
        step(state, ev.GraphLoaded(load.request_id, read))

    def driver_reopen() -> None:
        lash.reopen(Residency.ACTIVE_PATH_ONLY)[0].close()

    reopen_split = {
        "raw path query (rows, undecoded)": raw.reopen,
        "`store.load_graph(ActivePath())` (query and decoding)": lambda: store.load_graph(
            lash.parked.session_id,  # type: ignore[union-attr]
            read_scope,
        ),
        "store read + the reducer building the state, in one thread": inline_reopen,
        "`driver.resume` (all of it, store in a worker thread)": driver_reopen,
        "LangGraph `get_tuple` (one blob, msgpack)": pair.langgraph.reopen,
    }
    reopen_times = samples(list(reopen_split.values()), repeats, warmup=2, collect=True)
    reopen_rows = [
        [name, fmt_time(median(t))] for name, t in zip(reopen_split, reopen_times, strict=True)
    ]
    return "\n\n".join(
        [
            prose(f"""
            **Why** ({pair.database}, {turns:,} turns). One lash turn, part by
            part (medians of {repeats}; the driver's parts on their own, the
            others taking turns; the save's row excludes its two appends):
            """),
            table(["part of a turn", "median>"], turn_rows),
            prose(f"""
            One reopen of the {turns:,}-turn conversation, part by part
            (medians of {repeats}, rotated):
            """),
            table(["part of a reopen", "median>"], reopen_rows),
            "cProfile of the in-thread reopen (store read and reducer), by own time:",
            profile(inline_reopen, 10),
        ]
    )
