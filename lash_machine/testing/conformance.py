"""A reusable pytest suite every :class:`~lash_machine.stores.base.SessionStore`
must pass.

Subclass :class:`StoreConformance` in a module pytest collects (name the
subclass ``Test...``) and implement :meth:`StoreConformance.make_store`::

    from lash_machine.testing.conformance import StoreConformance

    class TestMyStore(StoreConformance):
        def make_store(self, tmp_path):
            return MyStore(tmp_path / "db")

        def corrupt_node(self, store, session_id, node_id, column, value):
            ...  # write ``value`` raw into that column of the node's row

Each test gets a fresh instance of the class and a fresh ``tmp_path``;
calling :meth:`~StoreConformance.make_store` again within one test must
open the same data (for a persistent store). Hooks a store cannot support
(a schema version for an in-memory store) are skipped with their reason,
never silently passed.
"""

from __future__ import annotations

import abc
import multiprocessing
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import pytest

from ..content import MAX_ID_LENGTH
from ..errors import (
    CorruptRow,
    HeadRevisionConflict,
    ParentTombstoned,
    SchemaVersionMismatch,
    StoreError,
    TombstoneRefused,
)
from ..model import (
    JSON,
    AgentFrame,
    ModelSpec,
    NodeKind,
    PluginSnapshot,
    SessionNode,
    SessionPolicy,
    ToolSnapshot,
    initial_frame_id,
)
from ..persisted import (
    ActivePath,
    AttachmentIntent,
    FullGraph,
    GraphDelta,
    Reparent,
    SessionCommit,
    StoredSession,
)
from ..stores.base import SessionStore

if TYPE_CHECKING:
    from .lease_conformance import LeaseConformance

__all__ = [
    "POLICY",
    "LeaseConformance",
    "RACE_SESSION",
    "RaceOutcome",
    "StoreConformance",
    "chain",
    "check_race",
    "make_commit",
    "make_node",
    "prepare_race",
    "race_contender",
    "race_in_processes",
    "run_threads",
]

#: The policy the suite's commits carry.
POLICY = SessionPolicy(model=ModelSpec(id="test-model", context_window=8192), provider_id="test")


def make_node(
    node_id: str,
    parent_id: str | None = None,
    body: JSON = None,
    *,
    kind: NodeKind = NodeKind.MESSAGE,
    frame_id: str | None = None,
    created_at: float = 1.0,
) -> SessionNode:
    """A node for tests; the body defaults to ``{"text": node_id}``."""
    return SessionNode(
        node_id=node_id,
        parent_id=parent_id,
        kind=kind,
        body={"text": node_id} if body is None else body,
        frame_id=frame_id,
        created_at=created_at,
    )


def make_commit(
    session_id: str,
    expected_head: int | None,
    appended: Sequence[SessionNode] = (),
    *,
    leaf_id: str | None = None,
    reparented: Sequence[Reparent] = (),
    adopt: Sequence[str] = (),
    policy: SessionPolicy = POLICY,
    host_checkpoint: JSON = None,
    fencing_token: int | None = None,
) -> SessionCommit:
    """A commit for tests; the leaf defaults to the last appended node."""
    if leaf_id is None and appended:
        leaf_id = appended[-1].node_id
    frame = AgentFrame(initial_frame_id(session_id), None, "initial", policy, 0.0)
    return SessionCommit(
        session_id=session_id,
        expected_head=expected_head,
        policy=policy,
        frames=(frame,),
        current_frame_id=frame.frame_id,
        delta=GraphDelta(leaf_id=leaf_id, appended=tuple(appended), reparented=tuple(reparented)),
        host_checkpoint=host_checkpoint,
        adopt_attachments=tuple(adopt),
        fencing_token=fencing_token,
    )


def chain(prefix: str, length: int, parent: str | None = None) -> list[SessionNode]:
    """``length`` nodes, each the child of the one before."""
    nodes = []
    for i in range(length):
        node = make_node(f"{prefix}{i}", parent)
        nodes.append(node)
        parent = node.node_id
    return nodes


def ids(session: StoredSession | None) -> list[str]:
    """The node ids of a read, in the order the store returned them."""
    assert session is not None
    return [n.node_id for n in session.nodes]


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
        pytest.fail(f"the race stalled after {len(outcomes)} outcomes: {outcomes}")
    finally:
        for process in processes:
            process.join(timeout=60)
    assert [p.exitcode for p in processes] == [0] * contenders
    return outcomes


class StoreConformance(abc.ABC):
    """The contract of :class:`~lash_machine.stores.base.SessionStore` as
    tests. Subclass it and implement :meth:`make_store`."""

    #: Whether the store keeps its data across close and reopen.
    persistent: ClassVar[bool] = True
    #: Whether ids may contain NUL characters (PostgreSQL text cannot).
    supports_nul: ClassVar[bool] = True
    #: Threads racing in the concurrency tests.
    threads: ClassVar[int] = 8

    @abc.abstractmethod
    def make_store(self, tmp_path: Path) -> SessionStore:
        """Open the store under test. Called again in the same test, a
        persistent store must open the same data."""

    def corrupt_node(
        self, store: SessionStore, session_id: str, node_id: str, column: str, value: object
    ) -> None:
        """Write ``value`` raw into ``column`` (``"body"`` or ``"kind"``, as
        text; ``"created_at"``, as a float) of the node's row. Override it;
        the default skips the corrupt-row tests with the reason."""
        pytest.skip(f"{type(self).__name__} does not implement corrupt_node")

    def hide_raw(self, store: SessionStore, session_id: str, node_id: str) -> None:
        """Mark the node tombstoned behind the store's back, as rows written
        before the subtree rule may be (a tombstone on the active path, or
        above a live node). Override it; the default skips those tests."""
        pytest.skip(f"{type(self).__name__} does not implement hide_raw")

    def corrupt_session(
        self, store: SessionStore, session_id: str, column: str, value: str
    ) -> None:
        """Write ``value`` raw into ``column`` (``"policy"``) of the session row."""
        pytest.skip(f"{type(self).__name__} does not implement corrupt_session")

    def set_schema_version(self, store: SessionStore, version: int) -> None:
        """Make the stored schema version ``version`` behind the store's back."""
        pytest.skip(f"{type(self).__name__} does not implement set_schema_version")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[SessionStore]:
        """A fresh store, closed after the test."""
        opened = self.make_store(tmp_path)
        yield opened
        opened.close()

    # -- absent sessions ----------------------------------------------

    def test_absent_session_reads_nothing(self, store: SessionStore) -> None:
        assert store.load_graph("nope", FullGraph()) is None
        assert store.load_graph("nope", ActivePath()) is None
        assert store.load_node("nope", "n") is None
        assert store.tombstone_nodes("nope", ["n"]) == 0
        assert store.delete_session("nope") is False
        assert store.list_sessions() == []
        assert isinstance(store, SessionStore)

    # -- commits and head revisions ----------------------------------------

    def test_first_commit_round_trips_every_field(self, store: SessionStore) -> None:
        frame = AgentFrame("s:frame:initial", None, "initial", POLICY, 12.5)
        sub = AgentFrame("s:frame:sub", "s:frame:initial", "research", POLICY, 13.0)
        nodes = (
            make_node("z", None, {"role": "user", "parts": [1, 2.5, None, True, "é"]}),
            make_node("a", "z", "plain string", kind=NodeKind.EVENT, frame_id="s:frame:sub"),
            make_node("m", "a", [], kind=NodeKind.PLUGIN, created_at=1700000000.123456),
        )
        commit = SessionCommit(
            session_id="s",
            expected_head=None,
            policy=POLICY,
            frames=(frame, sub),
            current_frame_id="s:frame:sub",
            delta=GraphDelta(leaf_id="m", appended=nodes),
            tool_snapshot=ToolSnapshot(3, {"tools": ["a", "b"]}),
            plugin_snapshot=PluginSnapshot(2, {"p": {"x": 1}}),
            host_checkpoint={"cursor": 7, "nested": [{"a": None}]},
        )
        assert store.commit(commit) == 1
        loaded = store.load_graph("s", FullGraph())
        assert loaded == StoredSession(
            session_id="s",
            head_revision=1,
            policy=POLICY,
            frames=(frame, sub),
            current_frame_id="s:frame:sub",
            nodes=nodes,
            leaf_id="m",
            tool_snapshot=ToolSnapshot(3, {"tools": ["a", "b"]}),
            plugin_snapshot=PluginSnapshot(2, {"p": {"x": 1}}),
            host_checkpoint={"cursor": 7, "nested": [{"a": None}]},
        )
        assert store.load_node("s", "a") == nodes[1]

    def test_snapshots_may_be_absent(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None
        assert loaded.tool_snapshot is None
        assert loaded.plugin_snapshot is None
        assert loaded.host_checkpoint is None

    def test_full_graph_is_in_insertion_order(self, store: SessionStore) -> None:
        # Ids that sort against insertion order: the store must not sort by id.
        store.commit(make_commit("s", None, [make_node("c"), make_node("b", "c")]))
        store.commit(make_commit("s", 1, [make_node("a", "b"), make_node("10", "a")]))
        store.commit(make_commit("s", 2, [make_node("9", "c")], leaf_id="10"))
        assert ids(store.load_graph("s", FullGraph())) == ["c", "b", "a", "10", "9"]

    def test_each_commit_increments_the_head(self, store: SessionStore) -> None:
        assert store.commit(make_commit("s", None, [make_node("a")])) == 1
        assert store.commit(make_commit("s", 1, [make_node("b", "a")])) == 2
        assert store.commit(make_commit("s", 2, [], leaf_id="a")) == 3
        loaded = store.load_graph("s", ActivePath())
        assert loaded is not None
        assert (loaded.head_revision, loaded.leaf_id) == (3, "a")
        assert ids(loaded) == ["a"]

    def test_stale_head_conflicts_and_applies_nothing(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a")], host_checkpoint=1))
        store.commit(make_commit("s", 1, [make_node("b", "a")], host_checkpoint=2))
        before = store.load_graph("s", FullGraph())
        stale = make_commit(
            "s", 1, [make_node("c", "a")], reparented=[Reparent("b", None)], host_checkpoint=3
        )
        with pytest.raises(HeadRevisionConflict) as caught:
            store.commit(stale)
        assert (caught.value.session_id, caught.value.expected, caught.value.actual) == ("s", 1, 2)
        assert store.load_graph("s", FullGraph()) == before
        assert store.load_node("s", "c") is None

    def test_creating_an_existing_session_conflicts(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        with pytest.raises(HeadRevisionConflict) as caught:
            store.commit(make_commit("s", None, [make_node("b")]))
        assert (caught.value.expected, caught.value.actual) == (None, 1)
        assert ids(store.load_graph("s", FullGraph())) == ["a"]

    def test_expecting_a_head_of_an_absent_session_conflicts(self, store: SessionStore) -> None:
        with pytest.raises(HeadRevisionConflict) as caught:
            store.commit(make_commit("s", 4, [make_node("a")]))
        assert (caught.value.expected, caught.value.actual) == (4, None)
        assert store.load_graph("s", FullGraph()) is None

    def test_appending_a_stored_id_fails_the_whole_commit(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a"), make_node("b", "a")]))
        before = store.load_graph("s", FullGraph())
        with pytest.raises(StoreError) as caught:
            store.commit(make_commit("s", 1, [make_node("c", "b"), make_node("a", "c")]))
        assert not isinstance(caught.value, HeadRevisionConflict)
        assert "'a'" in str(caught.value)
        assert store.load_graph("s", FullGraph()) == before
        assert store.load_node("s", "c") is None
        # The session is not stuck: the next good commit still applies.
        assert store.commit(make_commit("s", 1, [make_node("c", "b")])) == 2

    def test_appending_a_tombstoned_id_fails(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a"), make_node("b", "a")], leaf_id="a"))
        assert store.tombstone_nodes("s", ["b"]) == 1
        with pytest.raises(StoreError):
            store.commit(make_commit("s", 1, [make_node("b", "a")]))
        assert store.load_graph("s", FullGraph()) is not None
        assert store.load_node("s", "b") is None

    def test_appending_an_id_twice_in_one_commit_fails(self, store: SessionStore) -> None:
        with pytest.raises(StoreError):
            store.commit(make_commit("s", None, [make_node("a"), make_node("a")]))
        assert store.load_graph("s", FullGraph()) is None

    def test_a_body_json_cannot_hold_fails_with_nothing_applied(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        with pytest.raises(StoreError):
            store.commit(make_commit("s", 1, [make_node("b", "a", {"x": float("nan")})]))
        with pytest.raises(StoreError):
            store.commit(make_commit("s", 1, [make_node("b", "a", {"x": object()})]))
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None
        assert loaded.head_revision == 1
        assert ids(loaded) == ["a"]

    def test_a_node_no_store_could_read_back_is_refused(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        too_long = "n" * (MAX_ID_LENGTH + 1)
        wrong: list[tuple[dict[str, Any], str]] = [
            ({"kind": "no-such-kind"}, "kind"),
            ({"created_at": "noon"}, "created_at"),
            ({"created_at": float("nan")}, "finite"),
            ({"created_at": float("inf")}, "finite"),
            ({"created_at": 10**400}, "finite"),
            ({"parent_id": 7}, "parent id"),
            ({"node_id": 7}, "node id"),
            ({"node_id": too_long}, "limit"),
            ({"node_id": "n" * 16384}, "limit"),
            ({"parent_id": too_long}, "limit"),
            ({"frame_id": too_long}, "limit"),
            ({"body": {1: "a"}}, "key"),
            ({"body": {"x": (1, 2)}}, "tuple"),
            ({"body": [float("inf")]}, "finite"),
            ({"body": {"x": b"bytes"}}, "bytes"),
        ]
        for fields, named in wrong:
            node = attrs.evolve(make_node("b", "a"), **fields)
            with pytest.raises(StoreError) as caught:
                store.commit(make_commit("s", 1, [make_node("c", "a"), node], leaf_id="a"))
            # The sentence says what is wrong (never "collide with stored ones").
            assert named in str(caught.value), (fields, str(caught.value))
            assert "collide" not in str(caught.value)
        assert ids(store.load_graph("s", FullGraph())) == ["a"]
        # The limit itself is fine.
        at_limit = "n" * MAX_ID_LENGTH
        assert store.commit(make_commit("s", 1, [make_node(at_limit, "a")])) == 2
        assert store.load_node("s", at_limit) is not None

    def test_ids_over_the_limit_are_refused_everywhere(self, store: SessionStore) -> None:
        too_long = "s" * (MAX_ID_LENGTH + 1)
        with pytest.raises(StoreError, match="limit"):
            store.commit(make_commit(too_long, None, [make_node("a")]))
        with pytest.raises(StoreError, match="limit"):
            store.record_intent(AttachmentIntent(too_long, "att", "file:///x", 1.0))
        with pytest.raises(StoreError, match="limit"):
            store.record_intent(AttachmentIntent("s", too_long, "file:///x", 1.0))
        with pytest.raises(StoreError, match="finite"):
            store.record_intent(AttachmentIntent("s", "att", "file:///x", float("nan")))
        assert store.list_sessions() == []
        assert store.list_uncommitted(float("inf")) == []
        # Reads of such ids simply find nothing.
        assert store.load_graph(too_long, FullGraph()) is None
        assert store.load_node("s", "n" * 16384) is None

    def test_reparent_rewrites_parents(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, chain("n", 3)))
        store.commit(make_commit("s", 1, [], leaf_id="n2", reparented=[Reparent("n2", "n0")]))
        assert ids(store.load_graph("s", ActivePath())) == ["n0", "n2"]
        node = store.load_node("s", "n2")
        assert node is not None
        assert node.parent_id == "n0"
        store.commit(make_commit("s", 2, [], leaf_id="n2", reparented=[Reparent("n2", None)]))
        assert ids(store.load_graph("s", ActivePath())) == ["n2"]

    def test_reparent_of_an_unknown_node_is_ignored(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        assert (
            store.commit(make_commit("s", 1, [], leaf_id="a", reparented=[Reparent("x", "a")])) == 2
        )
        assert store.load_node("s", "x") is None

    def test_appended_and_reparented_together(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a"), make_node("b", "missing")]))
        commit = make_commit(
            "s", 1, [make_node("c", "b")], reparented=[Reparent("b", "a")], leaf_id="c"
        )
        assert store.commit(commit) == 2
        assert ids(store.load_graph("s", ActivePath())) == ["a", "b", "c"]

    def test_reparent_of_a_node_appended_by_the_same_commit(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a"), make_node("b")]))
        commit = make_commit(
            "s",
            1,
            [make_node("c", "missing"), make_node("d", "c")],
            reparented=[Reparent("c", "a"), Reparent("b", "a"), Reparent("b", "c")],
            leaf_id="d",
        )
        assert store.commit(commit) == 2
        assert ids(store.load_graph("s", ActivePath())) == ["a", "c", "d"]
        # Repairs apply in order: the last one of a node wins.
        assert ids(store.load_graph("s", ActivePath("b"))) == ["a", "c", "b"]

    # -- active-path reads --------------------------------------------------

    def _branchy(self, store: SessionStore) -> None:
        # r - a - b - c          (stored leaf c)
        #      \- x - y
        # o (an unrelated root)
        nodes = [
            make_node("r"),
            make_node("a", "r"),
            make_node("x", "a"),
            make_node("b", "a"),
            make_node("o"),
            make_node("y", "x"),
            make_node("c", "b"),
        ]
        store.commit(make_commit("s", None, nodes, leaf_id="c"))

    def test_active_path_of_the_stored_leaf(self, store: SessionStore) -> None:
        self._branchy(store)
        loaded = store.load_graph("s", ActivePath())
        assert ids(loaded) == ["r", "a", "b", "c"]
        assert loaded is not None
        assert loaded.leaf_id == "c"
        assert loaded.nodes[1] == make_node("a", "r")

    def test_active_path_of_an_explicit_leaf(self, store: SessionStore) -> None:
        self._branchy(store)
        loaded = store.load_graph("s", ActivePath("y"))
        assert ids(loaded) == ["r", "a", "x", "y"]
        assert loaded is not None
        assert loaded.leaf_id == "c"  # the stored leaf, whatever the scope
        assert ids(store.load_graph("s", ActivePath("o"))) == ["o"]

    def test_active_path_of_an_unknown_or_absent_leaf_is_empty(self, store: SessionStore) -> None:
        self._branchy(store)
        assert ids(store.load_graph("s", ActivePath("nope"))) == []
        commit = make_commit("t", None, [make_node("a")])
        store.commit(attrs.evolve(commit, delta=attrs.evolve(commit.delta, leaf_id=None)))
        loaded = store.load_graph("t", ActivePath())
        assert loaded is not None
        assert loaded.leaf_id is None
        assert ids(loaded) == []

    def test_active_path_stops_at_a_tombstone(self, store: SessionStore) -> None:
        # A tombstone on the path, as rows written before the subtree rule
        # may hold: the read stops there.
        store.commit(make_commit("s", None, chain("n", 5)))
        self.hide_raw(store, "s", "n1")
        assert ids(store.load_graph("s", ActivePath())) == ["n2", "n3", "n4"]
        self.hide_raw(store, "s", "n4")
        assert ids(store.load_graph("s", ActivePath())) == []

    def test_active_path_survives_a_parent_cycle(self, store: SessionStore) -> None:
        store.commit(
            make_commit("s", None, [make_node("a"), make_node("b", "a"), make_node("c", "b")])
        )
        # a -> b -> a: corrupt, but a read must still end.
        store.commit(make_commit("s", 1, [], leaf_id="c", reparented=[Reparent("a", "b")]))
        path = ids(store.load_graph("s", ActivePath()))
        assert path[-1] == "c"
        assert sorted(path) == ["a", "b", "c"]
        assert sorted(ids(store.load_graph("s", FullGraph()))) == ["a", "b", "c"]
        store.commit(make_commit("s", 2, [], leaf_id="a", reparented=[Reparent("a", "a")]))
        assert ids(store.load_graph("s", ActivePath())) == ["a"]

    def test_a_long_path_is_read_whole(self, store: SessionStore) -> None:
        nodes = chain("n", 1500)
        store.commit(make_commit("s", None, nodes))
        assert ids(store.load_graph("s", ActivePath())) == [n.node_id for n in nodes]

    # -- tombstones and vacuum -----------------------------------------------

    def _with_orphans(self, store: SessionStore) -> None:
        # r - a - b          (stored leaf b)
        #  \- x - y          (an off-path subtree)
        # o                  (an unrelated root)
        nodes = [
            make_node("r"),
            make_node("a", "r"),
            make_node("x", "r"),
            make_node("y", "x"),
            make_node("o"),
            make_node("b", "a"),
        ]
        store.commit(make_commit("s", None, nodes, leaf_id="b"))

    def test_tombstones_hide_and_vacuum_removes(self, store: SessionStore) -> None:
        self._with_orphans(store)
        assert store.tombstone_nodes("s", ["y", "y", "o", "missing"]) == 2
        assert store.tombstone_nodes("s", ["y"]) == 0
        assert store.load_node("s", "y") is None
        assert store.load_node("s", "x") is not None
        assert ids(store.load_graph("s", FullGraph())) == ["r", "a", "x", "b"]
        assert [i.node_count for i in store.list_sessions()] == [4]
        report = store.vacuum()
        assert report.nodes_removed == 2
        assert store.vacuum().nodes_removed == 0
        assert ids(store.load_graph("s", FullGraph())) == ["r", "a", "x", "b"]
        # Vacuumed rows are gone for good, so their ids are free again.
        assert store.commit(make_commit("s", 1, [make_node("y", "x")])) == 2
        assert ids(store.load_graph("s", FullGraph())) == ["r", "a", "x", "b", "y"]

    def test_tombstoning_does_not_move_the_head(self, store: SessionStore) -> None:
        self._with_orphans(store)
        store.tombstone_nodes("s", ["o"])
        assert store.commit(make_commit("s", 1, [make_node("c", "b")])) == 2

    def test_the_stored_leaf_cannot_be_tombstoned(self, store: SessionStore) -> None:
        self._with_orphans(store)
        before = store.load_graph("s", FullGraph())
        for targets in (["b"], ["o", "b"], ["r", "a", "b", "x", "y", "o"]):
            with pytest.raises(TombstoneRefused) as caught:
                store.tombstone_nodes("s", targets)
            assert (caught.value.session_id, caught.value.node_id) == ("s", "b")
            assert store.load_graph("s", FullGraph()) == before
        # Once the leaf moved off it, the node is an orphan like any other.
        store.commit(make_commit("s", 1, [], leaf_id="a"))
        assert store.tombstone_nodes("s", ["b"]) == 1

    def test_a_tombstone_never_leaves_a_live_child_without_its_parent(
        self, store: SessionStore
    ) -> None:
        # The rule holds against the stored graph, whatever a session holds
        # in memory (one that keeps only its active path never sees y).
        self._with_orphans(store)
        before = store.load_graph("s", FullGraph())
        with pytest.raises(TombstoneRefused) as caught:
            store.tombstone_nodes("s", ["x"])
        assert (caught.value.session_id, caught.value.node_id) == ("s", "x")
        assert "'y'" in str(caught.value)
        # A node on the active path has a live child too.
        with pytest.raises(TombstoneRefused) as caught:
            store.tombstone_nodes("s", ["a", "o"])
        assert caught.value.node_id == "a"
        assert store.load_graph("s", FullGraph()) == before
        # A whole subtree goes at once; a child tombstoned before counts as gone.
        assert store.tombstone_nodes("s", ["y"]) == 1
        assert store.tombstone_nodes("s", ["x"]) == 1
        assert ids(store.load_graph("s", FullGraph())) == ["r", "a", "o", "b"]
        store.commit(make_commit("s", 1, [make_node("z", "o"), make_node("w", "z")], leaf_id="b"))
        assert store.tombstone_nodes("s", ["w", "z", "o"]) == 3

    def test_a_commit_building_on_a_tombstoned_node_is_refused(self, store: SessionStore) -> None:
        self._with_orphans(store)
        assert store.tombstone_nodes("s", ["y", "x"]) == 2
        before = store.load_graph("s", FullGraph())
        refused = [
            # Appended under it (directly, or a chain starting there).
            make_commit("s", 1, [make_node("c", "y")]),
            make_commit("s", 1, [make_node("c", "x"), make_node("d", "c")]),
            # Made the leaf, or a repair's new parent.
            make_commit("s", 1, [], leaf_id="x"),
            make_commit("s", 1, [], leaf_id="b", reparented=[Reparent("o", "x")]),
            # An appended node repaired onto it.
            make_commit(
                "s", 1, [make_node("c", "b")], reparented=[Reparent("c", "y")], leaf_id="b"
            ),
        ]
        for commit in refused:
            with pytest.raises(ParentTombstoned) as caught:
                store.commit(commit)
            assert caught.value.session_id == "s"
            assert caught.value.node_id in {"x", "y"}
            assert store.load_graph("s", FullGraph()) == before
            assert store.load_node("s", "c") is None
        # What counts is where the nodes end up: one repaired away is fine.
        moved = make_commit(
            "s", 1, [make_node("c", "x")], reparented=[Reparent("c", "b")], leaf_id="c"
        )
        assert store.commit(moved) == 2
        assert ids(store.load_graph("s", ActivePath())) == ["r", "a", "b", "c"]
        # A head conflict is reported first.
        with pytest.raises(HeadRevisionConflict):
            store.commit(make_commit("s", 1, [make_node("d", "x")]))

    def test_a_commit_building_on_a_vacuumed_node_is_refused(self, store: SessionStore) -> None:
        # A session read x, an operator pruned and vacuumed it, the session
        # appends under x: the store must not take a child of a node it no
        # longer has. Nodes a commit builds on must be live nodes.
        self._with_orphans(store)
        assert store.tombstone_nodes("s", ["y"]) == 1
        assert store.vacuum().nodes_removed == 1
        before = store.load_graph("s", FullGraph())
        for commit in (
            make_commit("s", 1, [make_node("z", "y")]),
            make_commit("s", 1, [], leaf_id="y"),
            make_commit("s", 1, [], leaf_id="b", reparented=[Reparent("o", "never-stored")]),
        ):
            with pytest.raises(ParentTombstoned) as caught:
                store.commit(commit)
            assert caught.value.node_id in {"y", "never-stored"}
        assert store.load_graph("s", FullGraph()) == before
        # A session's first commit builds on nothing stored: it may hold
        # dangling parents (an import of a graph that needs repair).
        assert store.commit(make_commit("t", None, [make_node("a", "gone")])) == 1

    def test_vacuum_keeps_a_tombstoned_node_a_live_node_points_to(
        self, store: SessionStore
    ) -> None:
        # Rows written before the subtree rule may hide a live node's parent:
        # vacuum must not take the parent away for good.
        self._with_orphans(store)
        self.hide_raw(store, "s", "x")
        assert store.vacuum().nodes_removed == 0
        assert ids(store.load_graph("s", ActivePath("y"))) == ["y"]
        assert store.tombstone_nodes("s", ["y"]) == 1
        assert store.vacuum().nodes_removed == 2
        assert ids(store.load_graph("s", FullGraph())) == ["r", "a", "o", "b"]

    # -- isolation between sessions ----------------------------------------

    def test_sessions_never_see_each_others_nodes(self, store: SessionStore) -> None:
        store.commit(make_commit("A", None, [make_node("shared"), make_node("a-only", "shared")]))
        store.commit(make_commit("B", None, [make_node("shared", None, {"owner": "B"})]))
        node = store.load_node("B", "shared")
        assert node is not None
        assert node.body == {"owner": "B"}
        assert store.load_node("B", "a-only") is None
        assert ids(store.load_graph("B", ActivePath("a-only"))) == []
        assert ids(store.load_graph("B", FullGraph())) == ["shared"]
        # Tombstones and repairs in B never touch A.
        assert store.tombstone_nodes("B", ["a-only"]) == 0
        # B's leaf moves off "shared" first: a stored leaf is never tombstoned.
        store.commit(make_commit("B", 1, [], leaf_id=None, reparented=[Reparent("a-only", None)]))
        assert store.tombstone_nodes("B", ["shared"]) == 1
        assert ids(store.load_graph("A", ActivePath())) == ["shared", "a-only"]
        assert store.load_node("A", "shared") is not None
        assert store.vacuum().nodes_removed == 1
        assert ids(store.load_graph("A", FullGraph())) == ["shared", "a-only"]

    def test_ids_that_look_like_sql_or_prefixes_stay_apart(self, store: SessionStore) -> None:
        store.commit(make_commit("s%", None, [make_node("n_")]))
        store.commit(make_commit("s", None, [make_node("n")]))
        store.commit(make_commit("s' OR '1'='1", None, [make_node("x'); DROP TABLE t; --")]))
        assert ids(store.load_graph("s%", FullGraph())) == ["n_"]
        assert ids(store.load_graph("s", FullGraph())) == ["n"]
        assert store.load_node("s", "n_") is None
        assert store.load_node("s%", "n") is None
        assert ids(store.load_graph("s' OR '1'='1", FullGraph())) == ["x'); DROP TABLE t; --"]
        assert [i.session_id for i in store.list_sessions()] == sorted(["s%", "s", "s' OR '1'='1"])

    def test_awkward_ids_round_trip(self, store: SessionStore) -> None:
        awkward = ["quote'\"`", "per%cent_und\\er", "ünïcødé 会话 🧵", "  spaced  ", "", "\u200b"]
        for number, session_id in enumerate(awkward):
            nodes = [
                make_node(f"{session_id}/{i}", None if i == 0 else f"{session_id}/{i - 1}")
                for i in range(3)
            ]
            store.commit(make_commit(session_id, None, nodes))
            store.record_intent(
                AttachmentIntent(session_id, session_id, f"file:///{session_id}", float(number))
            )
        for session_id in awkward:
            loaded = store.load_graph(session_id, ActivePath())
            assert loaded is not None
            assert loaded.session_id == session_id
            assert ids(loaded) == [f"{session_id}/{i}" for i in range(3)]
            node = store.load_node(session_id, f"{session_id}/1")
            assert node is not None
            assert node.parent_id == f"{session_id}/0"
        assert [i.session_id for i in store.list_sessions()] == sorted(awkward)
        assert [(i.session_id, i.attachment_id) for i in store.list_uncommitted(1e9)] == [
            (s, s) for s in awkward
        ]

    def test_nul_in_ids_round_trips_or_is_a_clear_error(self, store: SessionStore) -> None:
        if self.supports_nul:
            store.commit(
                make_commit("nul\x00s", None, [make_node("a\x00"), make_node("a", "a\x00")])
            )
            assert ids(store.load_graph("nul\x00s", ActivePath())) == ["a\x00", "a"]
            assert store.load_graph("nul", FullGraph()) is None
            assert store.load_node("nul\x00s", "a\x00") is not None
            return
        with pytest.raises(StoreError, match="NUL"):
            store.commit(make_commit("nul\x00s", None, [make_node("a")]))
        with pytest.raises(StoreError, match="NUL"):
            store.commit(make_commit("s", None, [make_node("a\x00")]))
        with pytest.raises(StoreError, match="NUL"):
            store.record_intent(AttachmentIntent("s", "a\x00", "u", 1.0))
        assert store.list_sessions() == []
        # Nothing with a NUL can be stored, so reads find nothing.
        assert store.load_graph("nul\x00s", FullGraph()) is None
        assert store.load_node("s", "a\x00") is None

    # -- stored state is the store's own ---------------------------------

    def test_callers_cannot_mutate_stored_state(self, store: SessionStore) -> None:
        body: dict[str, Any] = {"items": [1]}
        checkpoint: dict[str, Any] = {"k": [1]}
        store.commit(
            make_commit("s", None, [make_node("a", None, body)], host_checkpoint=checkpoint)
        )
        body["items"].append(2)
        checkpoint["k"].append(2)
        loaded = store.load_graph("s", FullGraph())
        assert loaded is not None
        assert loaded.nodes[0].body == {"items": [1]}
        assert loaded.host_checkpoint == {"k": [1]}
        loaded.nodes[0].body["items"].append(3)
        loaded.host_checkpoint["k"].append(3)
        node = store.load_node("s", "a")
        assert node is not None
        assert node.body == {"items": [1]}
        node.body["items"].append(4)
        again = store.load_graph("s", FullGraph())
        assert again is not None
        assert again.nodes[0].body == {"items": [1]}
        assert again.host_checkpoint == {"k": [1]}

    # -- listing and deleting ------------------------------------------------

    def test_list_sessions(self, store: SessionStore) -> None:
        before = time.time()
        store.commit(make_commit("b", None, chain("n", 3)))
        store.commit(make_commit("a", None, [make_node("x")]))
        store.commit(make_commit("a", 1, [make_node("y", "x")]))
        after = time.time()
        listed = store.list_sessions()
        assert [(i.session_id, i.head_revision, i.node_count) for i in listed] == [
            ("a", 2, 2),
            ("b", 1, 3),
        ]
        assert all(before - 1 <= i.updated_at <= after + 1 for i in listed)

    def test_delete_session_removes_everything(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, chain("n", 3), leaf_id="n1"))
        store.commit(make_commit("t", None, chain("n", 2)))
        store.record_intent(AttachmentIntent("s", "att", "file:///a", 1.0))
        store.record_intent(AttachmentIntent("t", "att", "file:///b", 1.0))
        assert store.tombstone_nodes("s", ["n2"]) == 1
        assert store.delete_session("s") is True
        assert store.delete_session("s") is False
        assert store.load_graph("s", FullGraph()) is None
        assert store.load_node("s", "n1") is None
        assert [i.session_id for i in store.list_sessions()] == ["t"]
        assert [i.session_id for i in store.list_uncommitted(10.0)] == ["t"]
        assert store.vacuum().nodes_removed == 0
        # The id is free again, from revision 1.
        assert store.commit(make_commit("s", None, [make_node("n0")])) == 1
        assert ids(store.load_graph("t", FullGraph())) == ["n0", "n1"]

    # -- attachment manifest -------------------------------------------------

    def test_attachment_manifest(self, store: SessionStore) -> None:
        store.record_intent(AttachmentIntent("s", "old", "file:///old", 10.0))
        store.record_intent(AttachmentIntent("s", "new", "file:///new", 50.0))
        store.record_intent(AttachmentIntent("t", "other", "s3://b/k", 20.0))
        assert [(i.attachment_id, i.uri, i.created_at) for i in store.list_uncommitted(30.0)] == [
            ("old", "file:///old", 10.0),
            ("other", "s3://b/k", 20.0),
        ]
        assert store.list_uncommitted(10.0) == []
        # A commit adopts its attachments in the same transaction.
        store.commit(make_commit("s", None, [make_node("a")], adopt=["old", "never-recorded"]))
        assert [i.attachment_id for i in store.list_uncommitted(100.0)] == ["other", "new"]
        assert all(not i.committed for i in store.list_uncommitted(100.0))
        # Adoption is scoped to the committing session.
        store.commit(make_commit("s", 1, [], leaf_id="a", adopt=["other"]))
        assert [i.attachment_id for i in store.list_uncommitted(100.0)] == ["other", "new"]
        assert store.forget("t", "other") is True
        assert store.forget("t", "other") is False
        assert [i.attachment_id for i in store.list_uncommitted(100.0)] == ["new"]

    def test_a_conflicting_commit_adopts_nothing(self, store: SessionStore) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        store.record_intent(AttachmentIntent("s", "att", "file:///x", 1.0))
        with pytest.raises(HeadRevisionConflict):
            store.commit(make_commit("s", None, [make_node("b")], adopt=["att"]))
        with pytest.raises(StoreError):
            store.commit(make_commit("s", 1, [make_node("a")], adopt=["att"]))
        assert [i.attachment_id for i in store.list_uncommitted(2.0)] == ["att"]

    def test_recording_an_intent_again_replaces_it(self, store: SessionStore) -> None:
        store.record_intent(AttachmentIntent("s", "att", "file:///x", 1.0))
        store.record_intent(AttachmentIntent("s", "att", "file:///y", 2.0))
        assert store.list_uncommitted(10.0) == [AttachmentIntent("s", "att", "file:///y", 2.0)]

    def test_an_adopted_intent_stays_committed(self, store: SessionStore) -> None:
        store.record_intent(AttachmentIntent("s", "sha256-abc", "file:///abc", 1.0))
        store.commit(make_commit("s", None, [make_node("a")], adopt=["sha256-abc"]))
        # Recording the id again (a retry, or a content-addressed id) keeps
        # it adopted: a collector must never see it as garbage.
        store.record_intent(AttachmentIntent("s", "sha256-abc", "file:///abc", 2.0))
        assert store.list_uncommitted(float("inf")) == []
        # forget() refuses a committed intent: False, and nothing deleted.
        assert store.forget("s", "sha256-abc") is False
        store.record_intent(AttachmentIntent("s", "sha256-abc", "file:///abc", 3.0))
        assert store.list_uncommitted(float("inf")) == []
        # An intent no commit adopted is forgotten, once.
        store.record_intent(AttachmentIntent("s", "loose", "file:///loose", 1.0))
        assert store.forget("s", "loose") is True
        assert store.forget("s", "loose") is False
        assert store.forget("s", "never-recorded") is False

    def test_the_collectors_protocol_never_deletes_adopted_bytes(self, store: SessionStore) -> None:
        # list_uncommitted, then a commit adopts one of the listed intents,
        # then the collector forgets each: forget tells it which bytes may go.
        store.commit(make_commit("s", None, [make_node("a")]))
        for name in ("x", "y"):
            store.record_intent(AttachmentIntent("s", name, f"file:///{name}", 1.0))
        listed = store.list_uncommitted(10.0)
        assert [i.attachment_id for i in listed] == ["x", "y"]
        store.commit(make_commit("s", 1, [], leaf_id="a", adopt=["y"]))
        deletable = [i.attachment_id for i in listed if store.forget(i.session_id, i.attachment_id)]
        assert deletable == ["x"]
        assert store.list_uncommitted(10.0) == []

    # -- concurrency -------------------------------------------------------

    def test_concurrent_committers_have_one_winner_per_revision(self, store: SessionStore) -> None:
        rounds = 4
        prepare_race(store, self.threads, rounds)
        outcomes: list[RaceOutcome] = []
        barrier = threading.Barrier(self.threads)

        def contend(i: int) -> None:
            race_contender(lambda: store, i, rounds, barrier, outcomes.append, close=False)

        assert run_threads(self.threads, contend) == [None] * self.threads
        check_race(store, outcomes, self.threads, rounds)

    def test_concurrent_creators_have_one_winner(self, store: SessionStore) -> None:
        def attempt(i: int) -> int:
            return store.commit(make_commit("s", None, [make_node(f"t{i}")]))

        results = run_threads(self.threads, attempt)
        won = [i for i, r in enumerate(results) if r == 1]
        assert len(won) == 1, results
        assert sum(isinstance(r, HeadRevisionConflict) for r in results) == self.threads - 1
        assert ids(store.load_graph("s", FullGraph())) == [f"t{won[0]}"]

    def test_concurrent_sessions_do_not_interfere(self, store: SessionStore) -> None:
        def work(i: int) -> int | None:
            head: int | None = None
            for step in range(5):
                head = store.commit(
                    make_commit(
                        f"s{i}", head, [make_node(f"n{step}", f"n{step - 1}" if step else None)]
                    )
                )
                assert ids(store.load_graph(f"s{i}", ActivePath())) == [
                    f"n{j}" for j in range(step + 1)
                ]
            return head

        assert run_threads(self.threads, work) == [5] * self.threads

    # -- persistence, corruption, schema -------------------------------------

    def test_reopen_after_close(self, store: SessionStore, tmp_path: Path) -> None:
        if not self.persistent:
            pytest.skip(f"{type(self).__name__} keeps nothing across close by design")
        store.commit(make_commit("s", None, chain("n", 3), leaf_id="n1", host_checkpoint={"c": 1}))
        assert store.tombstone_nodes("s", ["n2"]) == 1
        store.record_intent(AttachmentIntent("s", "att", "file:///x", 1.0))
        before = store.load_graph("s", FullGraph())
        store.close()
        with pytest.raises(StoreError):
            store.load_graph("s", FullGraph())
        reopened = self.make_store(tmp_path)
        try:
            assert reopened.load_graph("s", FullGraph()) == before
            assert reopened.commit(make_commit("s", 1, [make_node("n3", "n1")])) == 2
            assert [i.attachment_id for i in reopened.list_uncommitted(2.0)] == ["att"]
        finally:
            reopened.close()

    def test_a_closed_store_refuses_calls(self, tmp_path: Path) -> None:
        opened = self.make_store(tmp_path)
        opened.close()
        with pytest.raises(StoreError):
            opened.commit(make_commit("s", None, [make_node("a")]))
        with pytest.raises(StoreError):
            opened.list_sessions()

    @pytest.mark.parametrize(
        ("column", "value"),
        [
            ("body", "{not json"),
            ("kind", "no-such-kind"),
            # JSON text no store writes (stores refuse NaN and infinities).
            ("body", '{"x": NaN}'),
            ("body", "[1, Infinity]"),
            ("body", '{"x": -Infinity}'),
            ("body", '{"x": 1e999}'),
            ("created_at", float("inf")),
            ("created_at", float("-inf")),
        ],
    )
    def test_a_corrupt_node_row_names_session_and_node(
        self, store: SessionStore, column: str, value: object
    ) -> None:
        store.commit(make_commit("s", None, chain("n", 3)))
        self.corrupt_node(store, "s", "n1", column, value)
        for read in (
            lambda: store.load_graph("s", FullGraph()),
            lambda: store.load_graph("s", ActivePath()),
            lambda: store.load_node("s", "n1"),
        ):
            with pytest.raises(CorruptRow) as caught:
                read()
            assert (caught.value.session_id, caught.value.node_id) == ("s", "n1")
        # Reads that do not touch the row still work.
        assert ids(store.load_graph("s", ActivePath("n0"))) == ["n0"]

    @pytest.mark.parametrize("value", ["{not json", '{"model": 5}', "[]"])
    def test_a_corrupt_session_row_names_the_session(self, store: SessionStore, value: str) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        self.corrupt_session(store, "s", "policy", value)
        with pytest.raises(CorruptRow) as caught:
            store.load_graph("s", ActivePath())
        assert (caught.value.session_id, caught.value.node_id) == ("s", None)
        assert "policy" in str(caught.value)

    def test_a_schema_version_mismatch_is_refused(
        self, store: SessionStore, tmp_path: Path
    ) -> None:
        store.commit(make_commit("s", None, [make_node("a")]))
        self.set_schema_version(store, 999)
        store.close()
        with pytest.raises(SchemaVersionMismatch) as caught:
            self.make_store(tmp_path).close()
        assert caught.value.found == 999


def __getattr__(name: str) -> Any:
    # The lease suite lives in its own module (it imports the helpers
    # above); it is offered here beside the store suite, loaded on first use
    # so that importing either module first works.
    if name == "LeaseConformance":
        from .lease_conformance import LeaseConformance

        return LeaseConformance
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
