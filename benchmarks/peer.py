"""Workload 4, peer: one branching conversation persisted after every turn,
then reopened (warm and cold), compacted and forked, by lash_machine and by
LangGraph's checkpointers, beside the raw database driver, on the same
databases.

lash_machine runs through each of its drivers, as a host would: per turn
``session.append(user)``, ``session.append(assistant)``, ``session.save()``
(blocking; awaited on asyncio and trio). LangGraph runs its checkpointer as
its graph runtime does (no graph: the runtime's part is written out here):
after every turn one ``saver.put(parent_config, checkpoint, metadata,
new_versions)`` whose checkpoint holds the conversation in the ``messages``
channel of ``channel_values``, with ``new_versions`` naming only that
channel, so only its new blob is written; a rewind (a regenerated answer)
continues from a past checkpoint read with ``saver.get_tuple``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

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
    Elapsed,
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
#: Words per message: about 230 bytes of JSON each, two messages a turn.
MESSAGE_WORDS = 29
#: The goals (issues 12, 13 and 15).
PERSIST_TO_RAW = {"blocking": 1.5, "asyncio": 2.0, "trio": 2.0}
COLD_TO_RAW = 1.3
WARM_FASTER = {10: 2.0, 1000: 10.0}
LANGGRAPH_STRETCH = 2.0
COMPACTED_TAIL = 10
COMPACTED_GOAL = 1.5

Message = dict[str, str]


@dataclass(frozen=True)
class Turn:
    """A user message, the answer, and the turn they follow (-1: none)."""

    user: Message
    assistant: Message
    base: int


def conversation(turns: int, seed: int = 7) -> list[Turn]:
    """The same branching conversation for every system."""
    rng = random.Random(seed)
    script = []
    for t in range(turns):
        rewind = t >= BRANCH_EVERY and t % BRANCH_EVERY == 0
        base = t - 1 - REWIND if rewind else t - 1
        user = {"role": "user", "content": words(rng, MESSAGE_WORDS)}
        assistant = {"role": "assistant", "content": words(rng, MESSAGE_WORDS)}
        script.append(Turn(user, assistant, base))
    return script


def abandoned_tips(script: list[Turn]) -> list[int]:
    """Turns that end an abandoned branch: where a fork finds no resident path."""
    return [t - 1 for t, turn in enumerate(script) if turn.base != t - 1 and t > 0]


def active_turns(script: list[Turn]) -> list[int]:
    """The turns on the path the last turn sees, first to last."""
    chain = []
    t = len(script) - 1
    while t >= 0:
        chain.append(t)
        t = script[t].base
    return chain[::-1]


def active_messages(script: list[Turn]) -> list[Message]:
    """The conversation as the last turn sees it."""
    return [m for t in active_turns(script) for m in (script[t].user, script[t].assistant)]


# -- lash_machine ---------------------------------------------------------------------------


class Persists(Protocol):
    """A system that persists a conversation, timing its turns itself."""

    def persist(self, session_id: str, script: list[Turn]) -> Elapsed: ...


class Lash:
    """The conversation through lash_machine's blocking driver. Opening the
    session and parking it at the end are left out of the time: the
    measure is the turns."""

    name = "blocking"

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.parked: ParkedSession | None = None
        self.answers: list[str] = []  # the assistant node of every turn

    def persist(self, session_id: str, script: list[Turn]) -> Elapsed:
        session = self.driver.open(POLICY, session_id)
        answers: list[str] = []
        start = time.perf_counter()
        for t, turn in enumerate(script):
            if turn.base != t - 1 and t > 0:
                session.branch(answers[turn.base])
            session.append(turn.user)
            answers.append(session.append(turn.assistant).node_id)
            session.save()
        seconds = time.perf_counter() - start
        self.parked, self.answers = session.park(), answers
        return Elapsed(seconds)

    def reopen(
        self, residency: Residency | None = None, driver: Driver | None = None
    ) -> tuple[Session, list[Message]]:
        """Resume the last persisted conversation (through ``driver``, this
        one's by default: a warm resume when its cache holds the session)."""
        assert self.parked is not None
        session = (driver or self.driver).resume(self.parked, residency=residency)
        assert session.state is not None
        return session, [node.body for node in session.state.graph.active_path()]

    def fork(self, session: Session, turn: int, new: Turn) -> None:
        session.branch(self.answers[turn])
        session.append(new.user)
        session.append(new.assistant)
        session.save()


class AsyncioLash:
    """The same turns awaited on the asyncio driver, on one event loop kept
    for the run (the loop is not started per conversation)."""

    name = "asyncio"

    def __init__(self, store: SessionStore) -> None:
        from lash_machine.drivers.asyncio import Driver as AsyncioDriver

        self.driver = AsyncioDriver(store)
        self.loop = asyncio.new_event_loop()

    def persist(self, session_id: str, script: list[Turn]) -> Elapsed:
        return self.loop.run_until_complete(_persist_async(self.driver, session_id, script))

    def close(self) -> None:
        self.driver.close()
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()


class TrioLash:
    """The same turns awaited on the trio driver; each conversation is one
    ``trio.run`` (its start and end are outside the time)."""

    name = "trio"

    def __init__(self, store: SessionStore) -> None:
        from lash_machine.drivers.trio import Driver as TrioDriver

        self.driver = TrioDriver(store)

    def persist(self, session_id: str, script: list[Turn]) -> Elapsed:
        import trio

        return trio.run(_persist_async, self.driver, session_id, script)

    def close(self) -> None:
        self.driver.close()


async def _persist_async(driver: Any, session_id: str, script: list[Turn]) -> Elapsed:
    session = await driver.open(POLICY, session_id)
    answers: list[str] = []
    start = time.perf_counter()
    for t, turn in enumerate(script):
        if turn.base != t - 1 and t > 0:
            await session.branch(answers[turn.base])
        await session.append(turn.user)
        answers.append((await session.append(turn.assistant)).node_id)
        await session.save()
    seconds = time.perf_counter() - start
    await session.park()
    return Elapsed(seconds)


class Raw:
    """The floor for persisting: ``bench_store``'s raw driver writing the
    same rows into lash_machine's tables (its own copy of them), one
    transaction per turn."""

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


def decoded(rows: list[Any]) -> list[Any]:
    """What any reader of these rows must at least do with them: decode
    each node's JSON body."""
    return [json.loads(row[5]) for row in rows]


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
    """Every system on one kind of database, lash and LangGraph each in its
    own file or schema (and the raw writer in a third), with fresh store
    and raw objects on lash's tables for cold reads, and a way to measure
    what each keeps on disk."""

    database: str
    lash: Lash
    others: list[AsyncioLash | TrioLash]
    raw: Raw
    langgraph: LangGraph
    new_store: Callable[[], SessionStore]
    new_raw: Callable[[], Any]
    lash_bytes: Callable[[], int]
    langgraph_bytes: Callable[[], int]
    settle: Callable[[], None] = lambda: None
    quiesce: Callable[[], None] = os.sync

    @property
    def flavours(self) -> list[Lash | AsyncioLash | TrioLash]:
        return [self.lash, *self.others]


def sqlite_bytes(path: Path) -> int:
    """The database file plus its WAL, after a checkpoint that empties the WAL."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    wal = Path(f"{path}-wal")
    return os.path.getsize(path) + (os.path.getsize(wal) if wal.exists() else 0)


def _other_drivers(stack: contextlib.ExitStack, store: SessionStore) -> list[Any]:
    others: list[Any] = []
    for flavour in (AsyncioLash, TrioLash):
        other = flavour(store)
        stack.callback(other.close)
        others.append(other)
    return others


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
            _other_drivers(stack, store),
            Raw(raw_store, raw),
            LangGraph(saver),
            lambda: SQLiteStore(lash_path, synchronous=synchronous),
            lambda: RawSQLite(str(lash_path), synchronous),
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
            _other_drivers(stack, store),
            Raw(raw_store, raw),
            LangGraph(saver),
            lambda: PostgresStore(lash_dsn),
            lambda: RawPostgres(lash_dsn),
            lambda: relation_bytes(server, lash_schema),
            lambda: relation_bytes(server, langgraph_schema),
            settle,
            quiesce,
        )


# -- the measurements -----------------------------------------------------------------------

#: The answer a fork writes.
FORK = Turn({"role": "user", "content": "try again"}, {"role": "assistant", "content": "ok"}, -1)

#: The reads of :func:`measure_reads`, in their order there.
READS = (
    "warm resume",
    "cold ACTIVE_PATH_ONLY",
    "cold KEEP_ALL",
    "raw path + decode",
    "raw full + decode",
    "LangGraph reopen",
)


@dataclass
class Result:
    """Median seconds (bytes for size) of one database at one T."""

    turns: int
    #: Seconds for the T turns: each lash driver, LangGraph, raw.
    persist: dict[str, float]
    size: tuple[float, float]
    #: Median seconds of each of :data:`READS` (empty: reads not measured).
    reads: dict[str, float] = field(default_factory=dict)
    fork: tuple[float, float] | None = None
    #: Cold ACTIVE_PATH_ONLY resume: compacted T-turn session, COMPACTED_TAIL-turn session.
    compacted: tuple[float, float] | None = None
    #: cProfile summaries of the measures whose goal this case missed.
    profiles: dict[str, str] = field(default_factory=dict)
    why: str = ""

    def per_turn(self, system: str) -> float:
        return self.persist[system] / self.turns


def measure_persist(pair: Pair, script: list[Turn], persists: int) -> Result:
    """Each system persists ``persists`` fresh conversations, taking turns."""
    raw, langgraph = pair.raw, pair.langgraph
    conversation_id = ""

    def next_conversation(round_: int) -> None:
        nonlocal conversation_id
        conversation_id = f"conversation-{round_}"
        raw.prepare(conversation_id)

    def persisting(flavour: Persists) -> Callable[[], Elapsed]:
        return lambda: flavour.persist(f"{conversation_id}-{flavour.name}", script)  # type: ignore[attr-defined]

    calls: list[Callable[[], object]] = [persisting(f) for f in pair.flavours]
    calls += [
        lambda: langgraph.persist(conversation_id, script),
        lambda: raw.persist(conversation_id, script),
    ]
    times = samples(calls, persists, before=next_conversation, collect=True, between=pair.quiesce)
    names = [f.name for f in pair.flavours] + ["LangGraph", "raw"]
    persist = {name: median(t) for name, t in zip(names, times, strict=True)}
    stored = len(pair.flavours) * persists
    size = (pair.lash_bytes() / stored, pair.langgraph_bytes() / persists)
    return Result(len(script), persist, size)


class Fresh:
    """Fresh objects for cold reads: :meth:`new` gives a new store object
    behind a new blocking driver without a warm cache, and a new raw driver
    on the same tables (each its own new connection); :meth:`release`
    closes every one made so far (between rounds, so a long run never holds
    more connections than one round needs)."""

    def __init__(self, pair: Pair) -> None:
        self._pair = pair
        self._made: list[Callable[[], object]] = []

    def new(self) -> tuple[Driver, Any]:
        store, raw = self._pair.new_store(), self._pair.new_raw()
        self._made.extend([store.close, raw.close])
        return Driver(store, warm_cache=0), raw

    def release(self) -> None:
        while self._made:
            self._made.pop()()


@contextlib.contextmanager
def cold(pair: Pair) -> Iterator[Fresh]:
    """A :class:`Fresh` whose objects are all closed on exit."""
    fresh = Fresh(pair)
    try:
        yield fresh
    finally:
        fresh.release()


def assert_warm(lash: Lash) -> None:
    """Check that a resume on the driver that parked the conversation is
    warm: it must not read the graph from the store."""
    store = lash.driver.store
    assert store is not None
    reads: list[object] = []
    real = store.load_graph

    def counted(*args: Any) -> Any:
        reads.append(args)
        return real(*args)

    store.load_graph = counted  # type: ignore[method-assign]
    try:
        lash.reopen()[0].close()
    finally:
        del store.load_graph
    assert not reads, "the warm resume read the graph: it was not warm"


def measure_reads(pair: Pair, result: Result, script: list[Turn], reopens: int) -> None:
    """Warm and cold resumes of the last blocking conversation, its raw
    floors, LangGraph's reopen."""
    lash, langgraph = pair.lash, pair.langgraph
    expected = active_messages(script)
    session, messages = lash.reopen()
    session.close()
    assert messages == expected == langgraph.reopen(), "the systems disagree"
    assert lash.parked is not None
    assert_warm(lash)
    session_id, leaf = lash.parked.session_id, lash.answers[-1]
    opened: list[Session] = []
    with cold(pair) as made:
        fresh: list[tuple[Driver, Any]] = []

        def before(_: int) -> None:
            while opened:
                opened.pop().close()
            made.release()  # the last round's connections
            fresh[:] = [made.new(), made.new(), made.new(), made.new()]

        def resume(residency: Residency | None, driver: Driver | None = None) -> None:
            opened.append(lash.reopen(residency, driver)[0])

        before(0)
        for raw_rows in (fresh[0][1].load_path(session_id, leaf), fresh[1][1].load_all(session_id)):
            assert len(decoded(raw_rows)) >= len(expected)
        times = samples(
            [
                lambda: resume(None),
                lambda: resume(Residency.ACTIVE_PATH_ONLY, fresh[0][0]),
                lambda: resume(Residency.KEEP_ALL, fresh[1][0]),
                lambda: decoded(fresh[2][1].load_path(session_id, leaf)),
                lambda: decoded(fresh[3][1].load_all(session_id)),
                langgraph.reopen,
            ],
            reopens,
            warmup=2,
            before=before,
            collect=True,
        )
        while opened:
            opened.pop().close()
    result.reads = {name: median(t) for name, t in zip(READS, times, strict=True)}


def measure_forks(pair: Pair, result: Result, script: list[Turn], forks: int) -> None:
    """From a freshly (warm) reopened session, continue from the tip of an
    abandoned branch, a different one each round, so neither system has it
    in memory and both read its history from the store."""
    lash, langgraph = pair.lash, pair.langgraph
    tips = abandoned_tips(script)
    if len(tips) < 2:
        return
    opened: list[Session] = []
    tip = 0

    def reopen_for_fork(round_: int) -> None:
        nonlocal tip
        while opened:
            opened.pop().close()
        tip = tips[round_ % len(tips)]
        opened.append(lash.reopen(Residency.ACTIVE_PATH_ONLY)[0])

    lash_fork, langgraph_fork = samples(
        [lambda: lash.fork(opened[-1], tip, FORK), lambda: langgraph.fork(tip, FORK)],
        min(forks, len(tips) - 1),
        warmup=1,
        before=reopen_for_fork,
        collect=True,
    )
    while opened:
        opened.pop().close()
    result.fork = (median(lash_fork), median(langgraph_fork))


def measure_compaction(pair: Pair, result: Result, script: list[Turn], reopens: int) -> None:
    """A fresh copy of the conversation compacted to its last COMPACTED_TAIL turns
    (``session.compact``, then park), resumed cold under ACTIVE_PATH_ONLY,
    beside a session that only ever had COMPACTED_TAIL turns."""
    lash, short = Lash(pair.lash.driver), Lash(pair.lash.driver)
    lash.persist("compacted", script)
    short.persist("short", conversation(COMPACTED_TAIL, seed=11))
    assert lash.parked is not None and short.parked is not None
    path = active_turns(script)
    through = lash.answers[path[-COMPACTED_TAIL - 1]]
    session = lash.driver.resume(lash.parked, residency=Residency.ACTIVE_PATH_ONLY)
    summary = session.compact(through, {"role": "system", "content": "summary " * 30})
    compacted = session.park()
    pair.settle()
    opened: list[Session] = []
    with cold(pair) as made:
        drivers: list[Driver] = []

        def before(_: int) -> None:
            while opened:
                opened.pop().close()
            made.release()  # the last round's connections
            drivers[:] = [made.new()[0], made.new()[0]]

        def resume(parked: ParkedSession, driver: Driver) -> None:
            opened.append(driver.resume(parked, residency=Residency.ACTIVE_PATH_ONLY))

        before(0)
        check = drivers[0].resume(compacted, residency=Residency.ACTIVE_PATH_ONLY)
        assert check.state is not None
        path_ids = [n.node_id for n in check.state.graph.active_path()]
        assert path_ids[0] == summary.node_id and len(path_ids) == 2 * COMPACTED_TAIL + 1
        check.close()
        long_t, short_t = samples(
            [lambda: resume(compacted, drivers[0]), lambda: resume(short.parked, drivers[1])],  # type: ignore[arg-type]
            reopens,
            warmup=2,
            before=before,
            collect=True,
        )
        while opened:
            opened.pop().close()
    result.compacted = (median(long_t), median(short_t))


def measure(
    pair: Pair, script: list[Turn], counts: dict[str, int], *, reads: bool, last: bool
) -> Result:
    """Everything measured on one database at one T; with ``reads`` the
    reopens and forks too, and with ``last`` (the largest T) the compaction
    row and the part-by-part breakdown of a missed persist goal."""
    result = measure_persist(pair, script, counts["persists"])
    pair.settle()
    if reads:
        measure_reads(pair, result, script, counts["reopens"])
        measure_forks(pair, result, script, counts["forks"])
    profile_misses(pair, result, script)
    if reads and last:
        if any(k.startswith("persist") for k in result.profiles):
            result.why = _why(pair, len(script), counts["reopens"])
        measure_compaction(pair, result, script, counts["reopens"])
        if result.compacted[0] > COMPACTED_GOAL * result.compacted[1]:  # type: ignore[index]
            result.profiles["compaction"] = "(see the cold `ACTIVE_PATH_ONLY` profile)"
    return result


def misses(result: Result) -> list[str]:
    """The measures of this case whose goal it missed."""
    missed = [
        f"persist {name}"
        for name, limit in PERSIST_TO_RAW.items()
        if result.persist[name] > limit * result.persist["raw"]
    ]
    if result.turns == 10 and result.persist["LangGraph"] <= result.persist["blocking"]:
        missed.append("persist blocking")
    reads = result.reads
    if reads:
        langgraph = reads["LangGraph reopen"]
        if langgraph < WARM_FASTER.get(result.turns, 0.0) * reads["warm resume"]:
            missed.append("warm resume")
        if reads["cold ACTIVE_PATH_ONLY"] > COLD_TO_RAW * reads["raw path + decode"]:
            missed.append("cold ACTIVE_PATH_ONLY")
        if reads["cold KEEP_ALL"] > COLD_TO_RAW * reads["raw full + decode"]:
            missed.append("cold KEEP_ALL")
    return list(dict.fromkeys(missed))


def profile_misses(pair: Pair, result: Result, script: list[Turn]) -> None:
    """A cProfile summary of each measure whose goal this case missed (the
    asyncio and trio drivers' store calls run in worker threads, which
    cProfile does not see: their profiles show the event loop's side)."""
    fresh = iter(range(10**6))
    calls: dict[str, Callable[[], object]] = {}
    for flavour in pair.flavours:
        calls[f"persist {flavour.name}"] = lambda f=flavour: f.persist(  # type: ignore[misc]
            f"profiled-{next(fresh)}-{f.name}", script
        )
    lash = pair.lash
    parked, answers = lash.parked, lash.answers

    def warm_resume() -> None:
        lash.reopen()[0].close()

    calls["warm resume"] = warm_resume
    for residency in (Residency.ACTIVE_PATH_ONLY, Residency.KEEP_ALL):

        def cold_resume(r: Residency = residency) -> None:
            with cold(pair) as made:
                lash.reopen(r, made.new()[0])[0].close()

        calls[f"cold {residency.name}"] = cold_resume
    for name in misses(result):
        result.profiles[name] = profile(calls[name], 1 if name.startswith("persist") else 10)
    lash.parked, lash.answers = parked, answers  # profiled persists moved them


# -- the report -----------------------------------------------------------------------------


def run(config: Config) -> Section:
    turn_counts = config.pick((10, 100, 1000), (10, 100))
    persists = config.pick({10: 15, 100: 7, 1000: 5}, {10: 2, 100: 1})
    reopens = config.pick(30, 4)
    forks = config.pick(20, 3)
    section = Section(
        "4. Peer: lash_machine beside LangGraph's checkpointers and the raw driver",
        prose(f"""
        One scripted conversation of T turns (two messages of about 230
        bytes of JSON a turn: {MESSAGE_WORDS} words each); every
        {BRANCH_EVERY}th turn the user regenerates, so the conversation goes
        back {REWIND} turns and continues there (the abandoned turns stay
        stored, as both systems keep history). **lash_machine** runs through
        each driver, as a host would: per turn `session.append(user)`,
        `session.append(answer)`, `session.save()` (one commit: the two new
        nodes; awaited on asyncio and trio), a rewind is
        `session.branch(node_id)`; the session's open before the first turn
        and park after the last are not timed. **LangGraph** runs its
        checkpointer as its graph runtime does: per turn one
        `saver.put(parent_config, checkpoint, metadata, new_versions)`, the
        conversation in the `messages` channel of `channel_values` and only
        that channel in `new_versions`, so only its new blob is written; a
        rewind reads the past checkpoint back with `saver.get_tuple`. This is
        generous to LangGraph: its runtime also writes the pending writes of
        every task (`put_writes`), and real `MessagesState` messages are
        LangChain message objects, slower to (de)serialize than the plain
        dicts used here. The **raw floor** is `bench_store`'s raw driver
        writing lash's two rows per turn in one transaction (the same
        compare-and-set `UPDATE`, an `executemany`), and reading lash's own
        rows back: the recursive path query, or a scan of every node, each
        followed by a `json.loads` of every body. Each system has its own
        SQLite file (WAL; `synchronous=NORMAL` and `FULL`, every system
        alike) or PostgreSQL schema on the same server (`fsync=on`).
        **Persist**: the T turns of fresh conversations, medians, divided
        by T. **Warm resume**: `driver.resume(parked)` on the driver that
        parked the conversation, whose cache still holds it (the store
        only confirms the head is unchanged), then the active path's
        messages. **Cold resume**: the same through a new store object and a
        new blocking driver without a warm cache (made untimed before each
        call, as are the raw floor's new connections). **LangGraph reopen**:
        `saver.get_tuple(thread)` on its open connection. The message lists
        are checked equal. Reads are measured on `SQLite (FULL)` and
        PostgreSQL (`synchronous` does not change a read).
        """),
    )
    found: dict[tuple[str, int], Result] = {}
    openers: list[tuple[Callable[[str], contextlib.AbstractContextManager[Pair]], bool]] = [
        (lambda label: sqlite_pair(config, label, "NORMAL"), False),
        (lambda label: sqlite_pair(config, label, "FULL"), True),
    ]
    if config.pg_dsn is not None:
        openers.append((lambda label: postgres_pair(config, label), True))
    counts = {"reopens": reopens, "forks": forks}
    for open_pair, reads in openers:
        for turns in turn_counts:
            with open_pair(f"peer{turns}") as pair:
                counts["persists"] = persists[turns]
                found[pair.database, turns] = measure(
                    pair, conversation(turns), counts, reads=reads, last=turns == turn_counts[-1]
                )
    databases = list(dict.fromkeys(name for name, _ in found))
    section.add(*_tables(found, databases, turn_counts))
    section.goals.extend(_goals(found, databases, turn_counts))
    section.add(*_profiles(found, section.goals, databases, turn_counts))
    section.plot = _plot(config, found, databases, turn_counts)
    return section


def _worst(
    found: dict[tuple[str, int], Result],
    name: str,
    turns: tuple[int, ...],
    ratio: Callable[[Result], float],
) -> tuple[float, int, str]:
    """The largest ratio over T, its T, and every T's ratio for the note."""
    ratios = {t: ratio(found[name, t]) for t in turns}
    worst = max(ratios, key=lambda t: ratios[t])
    note = ", ".join(f"T={t:,}: {r:.2f}x" for t, r in ratios.items())
    return ratios[worst], worst, note


#: Goal name -> the measure whose profile explains a miss, filled by _goals.
_EXPLAINED_BY: dict[str, tuple[str, str, int]] = {}


def _goals(
    found: dict[tuple[str, int], Result], databases: list[str], turns: tuple[int, ...]
) -> list[Goal]:
    goals: list[Goal] = []
    _EXPLAINED_BY.clear()

    def add(goal: Goal, database: str, measure_name: str, at: int) -> None:
        goals.append(goal)
        _EXPLAINED_BY[goal.name] = (database, measure_name, at)

    for name in databases:
        for flavour, limit in PERSIST_TO_RAW.items():
            worst, at, note = _worst(
                found, name, turns, lambda r, f=flavour: r.persist[f] / r.persist["raw"]
            )
            add(
                Goal(
                    f"{name}: persist per turn, lash ({flavour} driver) ÷ raw, worst T",
                    f"{worst:.2f}x (T={at:,})",
                    f"≤ {limit}x",
                    worst <= limit,
                    note,
                ),
                name,
                f"persist {flavour}",
                at,
            )
        if (name, 10) in found:
            small = found[name, 10]
            speedup = small.persist["LangGraph"] / small.persist["blocking"]
            add(
                Goal(
                    f"{name}: persist per turn at T=10, LangGraph ÷ lash (blocking)",
                    f"{speedup:.2f}x",
                    "> 1x (lash faster)",
                    speedup > 1.0,
                    "asyncio: {:.2f}x, trio: {:.2f}x".format(
                        small.persist["LangGraph"] / small.persist["asyncio"],
                        small.persist["LangGraph"] / small.persist["trio"],
                    ),
                ),
                name,
                "persist blocking",
                10,
            )
        read_turns = tuple(t for t in turns if found[name, t].reads)
        if not read_turns:
            continue
        for at, limit in WARM_FASTER.items():
            if at not in read_turns:
                continue
            reads = found[name, at].reads
            speedup = reads["LangGraph reopen"] / reads["warm resume"]
            add(
                Goal(
                    f"{name}: warm resume at T={at:,}, LangGraph reopen ÷ lash",
                    f"{speedup:.1f}x",
                    f"≥ {limit:.0f}x",
                    speedup >= limit,
                    f"warm {fmt_time(reads['warm resume'])}, LangGraph"
                    f" {fmt_time(reads['LangGraph reopen'])}",
                ),
                name,
                "warm resume",
                at,
            )
        for residency, floor in (
            ("ACTIVE_PATH_ONLY", "raw path + decode"),
            ("KEEP_ALL", "raw full + decode"),
        ):
            worst, at, note = _worst(
                found,
                name,
                read_turns,
                lambda r, res=residency, fl=floor: r.reads[f"cold {res}"] / r.reads[fl],
            )
            add(
                Goal(
                    f"{name}: cold resume, `{residency}` ÷ {floor}, worst T",
                    f"{worst:.2f}x (T={at:,})",
                    f"≤ {COLD_TO_RAW}x",
                    worst <= COLD_TO_RAW,
                    note,
                ),
                name,
                f"cold {residency}",
                at,
            )
        last = read_turns[-1]
        if name.startswith("SQLite"):
            reads = found[name, last].reads
            ratio = reads["cold ACTIVE_PATH_ONLY"] / reads["LangGraph reopen"]
            add(
                Goal(
                    f"{name} (stretch): cold `ACTIVE_PATH_ONLY` resume at T={last:,}"
                    " ÷ LangGraph's one-row reopen",
                    f"{ratio:.2f}x",
                    f"≤ {LANGGRAPH_STRETCH:.0f}x",
                    ratio <= LANGGRAPH_STRETCH,
                    "raw path + decode ÷ LangGraph:"
                    f" {reads['raw path + decode'] / reads['LangGraph reopen']:.2f}x",
                ),
                name,
                "cold ACTIVE_PATH_ONLY",
                last,
            )
        compacted = found[name, last].compacted
        if compacted is not None:
            ratio = compacted[0] / compacted[1]
            add(
                Goal(
                    f"{name}: cold `ACTIVE_PATH_ONLY` resume of a {last:,}-turn session"
                    f" compacted to {COMPACTED_TAIL} turns ÷ a {COMPACTED_TAIL}-turn session",
                    f"{ratio:.2f}x",
                    f"≈ 1x (≤ {COMPACTED_GOAL}x)",
                    ratio <= COMPACTED_GOAL,
                    f"{fmt_time(compacted[0])} vs {fmt_time(compacted[1])}",
                ),
                name,
                "cold ACTIVE_PATH_ONLY",
                last,
            )
    return goals


def _profiles(
    found: dict[tuple[str, int], Result],
    goals: list[Goal],
    databases: list[str],
    turns: tuple[int, ...],
) -> list[str]:
    """For every missed goal the profile of its case (each profile once),
    and the part-by-part breakdowns."""
    parts: list[str] = []
    shown: set[tuple[str, str, int]] = set()
    for goal in goals:
        if goal.met:
            continue
        database, measure_name, at = _EXPLAINED_BY[goal.name]
        summary = found[database, at].profiles.get(measure_name)
        if summary is None:
            # Measured as met in its own case (e.g. LangGraph's side moved):
            # profile anyway from the worst case's persist when there is one.
            continue
        if (database, measure_name, at) in shown:
            parts.append(f"**Missed: {goal.name}.** Profile: as above ({measure_name}, T={at:,}).")
            continue
        shown.add((database, measure_name, at))
        parts += [
            f"**Missed: {goal.name}.** cProfile of {measure_name} ({database}, T={at:,}),"
            " by own time:",
            summary,
        ]
    for name in databases:
        why = found[name, turns[-1]].why
        if why:
            parts.append(why)
    return parts


def _tables(
    found: dict[tuple[str, int], Result], databases: list[str], turns: tuple[int, ...]
) -> list[str]:
    persist_rows = []
    for (name, t), r in found.items():
        persist_rows.append(
            [
                name,
                f"{t:,}",
                *(fmt_time(r.per_turn(s)) for s in ("blocking", "asyncio", "trio", "raw")),
                fmt_time(r.per_turn("LangGraph")),
                *(
                    f"{r.persist[s] / r.persist['raw']:.2f}x"
                    for s in ("blocking", "asyncio", "trio")
                ),
                f"**{r.persist['LangGraph'] / r.persist['blocking']:.2f}x**",
            ]
        )
    parts = [
        "**Persist, per turn** (medians):",
        table(
            [
                "database",
                "turns T>",
                "lash blocking>",
                "lash asyncio>",
                "lash trio>",
                "raw floor>",
                "LangGraph>",
                "blocking ÷ raw>",
                "asyncio ÷ raw>",
                "trio ÷ raw>",
                "LangGraph ÷ lash (blocking)>",
            ],
            persist_rows,
        ),
    ]
    read_rows = []
    for (name, t), r in found.items():
        if not r.reads:
            continue
        x = r.reads
        read_rows.append(
            [
                name,
                f"{t:,}",
                *(fmt_time(x[k]) for k in READS),
                f"{x['cold ACTIVE_PATH_ONLY'] / x['raw path + decode']:.2f}x",
                f"{x['cold KEEP_ALL'] / x['raw full + decode']:.2f}x",
                f"**{x['LangGraph reopen'] / x['warm resume']:.1f}x**",
                f"{x['cold ACTIVE_PATH_ONLY'] / x['LangGraph reopen']:.2f}x",
            ]
        )
    parts += [
        "**Reopen** (medians; cold resumes beside their raw floor, warm beside LangGraph):",
        table(
            [
                "database",
                "turns T>",
                *(f"{k}>" for k in READS),
                "cold ACTIVE_PATH_ONLY ÷ raw path>",
                "cold KEEP_ALL ÷ raw full>",
                "LangGraph ÷ warm>",
                "cold ACTIVE_PATH_ONLY ÷ LangGraph>",
            ],
            read_rows,
        ),
    ]
    compaction_rows = [
        [
            name,
            f"{t:,} → {COMPACTED_TAIL}",
            fmt_time(r.compacted[0]),
            fmt_time(r.compacted[1]),
            f"{r.compacted[0] / r.compacted[1]:.2f}x",
        ]
        for (name, t), r in found.items()
        if r.compacted is not None
    ]
    if compaction_rows:
        parts += [
            prose(f"""
            **Compaction** (issue 15): the longest conversation,
            `session.compact(through=..., summary={{...}})` through the
            answer {COMPACTED_TAIL} turns before its last, parked; then a
            cold `ACTIVE_PATH_ONLY` resume of it beside one of a session
            that only ever had {COMPACTED_TAIL} turns (medians, rotated):
            """),
            table(
                [
                    "database",
                    "turns (compacted to)>",
                    "resume compacted>",
                    f"resume {COMPACTED_TAIL}-turn session>",
                    "ratio>",
                ],
                compaction_rows,
            ),
        ]
    context_rows = [
        [
            name,
            f"{t:,}",
            fmt_bytes(r.size[0]),
            fmt_bytes(r.size[1]),
            f"{r.size[1] / r.size[0]:.1f}x",
            *(
                (fmt_time(r.fork[0]), fmt_time(r.fork[1]), f"{r.fork[1] / r.fork[0]:.2f}x")
                if r.fork
                else ("", "", "")
            ),
        ]
        for (name, t), r in found.items()
    ]
    parts += [
        prose("""
        **Context**: size on disk per conversation (SQLite file plus WAL
        after `wal_checkpoint(TRUNCATE)`; PostgreSQL `pg_total_relation_size`
        of the schema's tables), and a fork from the tip of an abandoned
        branch after a warm reopen (lash: `branch` + 2 `append` + `save`
        under `ACTIVE_PATH_ONLY`, which loads the branch's path; LangGraph:
        `get_tuple(past)` + `put`):
        """),
        table(
            [
                "database",
                "turns T>",
                "lash size>",
                "LangGraph size>",
                "LangGraph ÷ lash>",
                "lash fork>",
                "LangGraph fork>",
                "LangGraph ÷ lash>",
            ],
            context_rows,
        ),
    ]
    return parts


def _plot(
    config: Config,
    found: dict[tuple[str, int], Result],
    databases: list[str],
    turns: tuple[int, ...],
) -> Path:
    groups = [f"T={t:,}" for t in turns]
    panels = []
    for name in databases:
        panels.append(
            Panel(
                f"{name}: persist per turn",
                groups,
                {
                    **{
                        f"{f} ÷ raw": [
                            found[name, t].persist[f] / found[name, t].persist["raw"] for t in turns
                        ]
                        for f in PERSIST_TO_RAW
                    },
                    "LangGraph ÷ lash (blocking)": [
                        found[name, t].persist["LangGraph"] / found[name, t].persist["blocking"]
                        for t in turns
                    ],
                },
                ylabel="ratio (log)",
                goal=PERSIST_TO_RAW["blocking"],
                goal_label=f"blocking goal ≤ {PERSIST_TO_RAW['blocking']}x raw",
                log=True,
            )
        )
        if found[name, turns[0]].reads:
            panels.append(
                Panel(
                    f"{name}: reopen",
                    groups,
                    {
                        "cold ACTIVE_PATH_ONLY ÷ raw path": [
                            found[name, t].reads["cold ACTIVE_PATH_ONLY"]
                            / found[name, t].reads["raw path + decode"]
                            for t in turns
                        ],
                        "cold KEEP_ALL ÷ raw full": [
                            found[name, t].reads["cold KEEP_ALL"]
                            / found[name, t].reads["raw full + decode"]
                            for t in turns
                        ],
                        "LangGraph ÷ warm resume": [
                            found[name, t].reads["LangGraph reopen"]
                            / found[name, t].reads["warm resume"]
                            for t in turns
                        ],
                    },
                    ylabel="ratio (log)",
                    goal=COLD_TO_RAW,
                    goal_label=f"cold goal ≤ {COLD_TO_RAW}x raw",
                    log=True,
                )
            )
    return save_panels(
        config.plots / "peer.png", "Peer: ratios of medians, same run", panels, columns=2
    )


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
        with cold(pair) as made:
            driver = made.new()[0]
            started = time.perf_counter()
            lash.reopen(Residency.ACTIVE_PATH_ONLY, driver)[0].close()
            return Elapsed(time.perf_counter() - started)  # type: ignore[return-value]

    reopen_split = {
        "raw path query (rows, undecoded)": raw.reopen,
        "raw path query + `json.loads` of each body": lambda: decoded(raw.reopen()),
        "`store.load_graph(ActivePath())` (query and decoding)": lambda: store.load_graph(
            lash.parked.session_id,  # type: ignore[union-attr]
            read_scope,
        ),
        "store read + the reducer building the state, in one thread": inline_reopen,
        "cold `driver.resume` (all of it, blocking driver)": driver_reopen,
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
