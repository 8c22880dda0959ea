"""Commit races between threads or processes, and what must hold after.

Every contender of a round reads the same head and commits against it:
exactly one wins each revision, every loser is told, and nothing of a
loser's commit is applied. :func:`race_contender` runs in a thread or a
child process; :func:`check_race` asserts the outcome. No pytest here.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import HeadRevisionConflict, StoreError
from ..persisted import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    Reparent,
    SessionCommit,
)
from ..stores.base import SessionStore
from .records import chain, ids, make_commit, make_node

__all__ = [
    "RACE_SESSION",
    "RaceOutcome",
    "check_race",
    "prepare_race",
    "race_contender",
    "race_in_processes",
    "run_threads",
]


def run_threads(count: int, work: Callable[[int], object]) -> list[object]:
    """Run ``work(i)`` on ``count`` threads released together; return each
    result or the exception it raised."""
    barrier = threading.Barrier(count)
    results: list[object] = [None] * count

    def target(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as exc:  # the test inspects it
            results[i] = exc

    threads = [threading.Thread(target=target, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


#: One contender's outcome in a commit race: (round, contender, head it
#: committed against, result). The result is the revision it won, the
#: ``(expected, actual)`` of the conflict it got, or the ``repr`` of any other
#: error. Plain data, so it crosses a process boundary.
RaceOutcome = tuple[int, int, int, "int | tuple[int | None, int | None] | str"]

#: The session the race helpers commit to.
RACE_SESSION = "race"


def prepare_race(store: SessionStore, contenders: int, rounds: int) -> None:
    """Create the race session (a root and a ``marker`` node) and record an
    attachment intent for every contender of every round."""
    store.commit(make_commit(RACE_SESSION, None, [make_node("marker"), make_node("root")]))
    for round_no in range(rounds):
        for contender in range(contenders):
            name = _contender(round_no, contender)
            store.record_intent(AttachmentIntent(RACE_SESSION, name, f"mem://{name}", 1.0))


def _contender(round_no: int, contender: int) -> str:
    return f"r{round_no}c{contender}"


def _contender_commit(
    head: int, leaf_id: str | None, round_no: int, contender: int
) -> SessionCommit:
    # Everything a commit can change, so a half-applied loser would show:
    # three nodes, a repair of the shared marker, an adoption, a checkpoint.
    name = _contender(round_no, contender)
    nodes = chain(f"{name}-", 3, leaf_id)
    return make_commit(
        RACE_SESSION,
        head,
        nodes,
        reparented=[Reparent("marker", nodes[0].node_id)],
        adopt=[name],
        host_checkpoint={"winner": name},
    )


def race_contender(
    open_store: Callable[[], SessionStore],
    contender: int,
    rounds: int,
    barrier: Any,
    report: Callable[[RaceOutcome], object],
    *,
    close: bool = True,
) -> None:
    """One contender of a commit race, for a thread or a child process.

    Each round: wait for every contender, read the head, wait again (so all
    read the same head), then commit against it and ``report`` the outcome.
    ``barrier`` is a ``threading.Barrier`` or a ``multiprocessing`` one;
    ``open_store`` must be picklable for a child process (for example
    ``functools.partial(SQLiteStore, path)``).
    """
    store = open_store()
    try:
        for round_no in range(rounds):
            barrier.wait(timeout=60)
            loaded = store.load_graph(RACE_SESSION, ActivePath())
            assert loaded is not None
            barrier.wait(timeout=60)
            commit = _contender_commit(loaded.head_revision, loaded.leaf_id, round_no, contender)
            outcome: int | tuple[int | None, int | None] | str
            try:
                outcome = store.commit(commit)
            except HeadRevisionConflict as exc:
                outcome = (exc.expected, exc.actual)
            except StoreError as exc:
                outcome = repr(exc)
            report((round_no, contender, loaded.head_revision, outcome))
    finally:
        if close:
            store.close()


def check_race(
    store: SessionStore, outcomes: Sequence[RaceOutcome], contenders: int, rounds: int
) -> None:
    """Assert a finished race went right: one winner per revision, every
    loser told so, and nothing of any loser's commit applied."""
    assert len(outcomes) == contenders * rounds, outcomes
    winners: list[str] = []
    for round_no in range(rounds):
        this_round = [o for o in outcomes if o[0] == round_no]
        heads = {o[2] for o in this_round}
        assert heads == {round_no + 1}, this_round
        won = [o for o in this_round if isinstance(o[3], int)]
        assert [o[3] for o in won] == [round_no + 2], this_round
        for _, contender, head, outcome in this_round:
            name = _contender(round_no, contender)
            if not isinstance(outcome, int):
                assert outcome == (head, head + 1), this_round
                assert all(store.load_node(RACE_SESSION, f"{name}-{i}") is None for i in range(3))
            else:
                winners.append(name)
    loaded = store.load_graph(RACE_SESSION, FullGraph())
    assert loaded is not None
    assert loaded.head_revision == rounds + 1
    assert ids(loaded) == ["marker", "root", *(f"{w}-{i}" for w in winners for i in range(3))]
    assert ids(store.load_graph(RACE_SESSION, ActivePath())) == [
        "root",
        *(f"{w}-{i}" for w in winners for i in range(3)),
    ]
    assert loaded.host_checkpoint == {"winner": winners[-1]}
    assert loaded.nodes[0].parent_id == f"{winners[-1]}-0"
    unadopted = {i.attachment_id for i in store.list_uncommitted(2.0)}
    everyone = {_contender(r, c) for r in range(rounds) for c in range(contenders)}
    assert unadopted == everyone - set(winners)


def race_in_processes(
    opener: Callable[[], SessionStore], contenders: int, rounds: int
) -> list[RaceOutcome]:
    """Run :func:`race_contender` in ``contenders`` processes started with
    ``spawn`` (each opens its own store through the picklable ``opener``)
    and collect every outcome for :func:`check_race`."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(contenders)
    results = ctx.Queue()
    processes = [
        ctx.Process(target=race_contender, args=(opener, i, rounds, barrier, results.put))
        for i in range(contenders)
    ]
    for process in processes:
        process.start()
    outcomes: list[RaceOutcome] = []
    try:
        for _ in range(contenders * rounds):
            outcomes.append(results.get(timeout=60))
    except queue.Empty:
        raise AssertionError(
            f"the race stalled after {len(outcomes)} outcomes: {outcomes}"
        ) from None
    finally:
        for process in processes:
            process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * contenders
    return outcomes
