"""``lash-machine demo``: one session's lifecycle, narrated, on a new SQLite file.

The demo drives a real session through the blocking driver and prints, for
each step, what the machine asked the store to do (an effect runner that
records every store request), what it told the host (hooks on lifecycle
events and host effects), and how long the step took.

It only ever writes to a file it creates: an existing ``--db`` is refused,
since the demo's vacuum step works on the whole database, not one session.
The file is kept afterwards, so the operator commands can be tried on it.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from .. import effects as fx
from ..drivers.blocking import Driver
from ..drivers.hooks import Hooks
from ..drivers.store_effects import Outcome, StoreRunner
from ..events import (
    CommitConflicted,
    Committed,
    EffectFailed,
    GraphLoaded,
    LoadNodeResult,
    Tombstoned,
)
from ..graph import SessionGraph
from ..model import ModelSpec, Residency, SessionPolicy
from ..persisted import ActivePath, FullGraph
from ..stores.base import SessionStore
from ..stores.sqlite import SQLiteStore
from .exits import CliError, Exit
from .render import Glyphs, glyphs_for, legend, node_label, tree_lines

__all__ = ["run_demo"]

T = TypeVar("T")

#: The conversation: a question, an answer and a follow-up that the demo
#: later abandons by branching back to the first answer.
_FIRST = (
    {"role": "user", "content": "Plan a weekend in Lisbon."},
    {"role": "assistant", "content": "Day 1: Alfama and the castle. Day 2: Belem."},
    {"role": "user", "content": "Make it cheaper."},
    {"role": "assistant", "content": "Walk instead of taking taxis; eat at tascas."},
)
_SECOND = (
    {"role": "user", "content": "Swap day 2 for a trip to Sintra."},
    {"role": "assistant", "content": "Take the train from Rossio: 40 minutes each way."},
)
_POLICY = SessionPolicy(ModelSpec("demo-model"), provider_id="demo")

#: Column where step timings start, so they line up.
_TITLE_WIDTH = 56


class _Narrator:
    """Prints numbered, timed steps with what happened during each."""

    def __init__(self, glyphs: Glyphs) -> None:
        self.glyphs = glyphs
        self.total_ms = 0.0
        self.steps = 0
        self._log: list[str] = []
        # Store requests are recorded on the driver's worker threads.
        self._lock = threading.Lock()

    def log(self, line: str) -> None:
        """Record one thing the machine did during the current step."""
        with self._lock:
            self._log.append(line)

    def step(self, title: str, action: Callable[[], T]) -> T:
        """Run ``action`` as the next step; print its title, its time and
        what was recorded while it ran."""
        with self._lock:
            self._log.clear()
        start = time.perf_counter()
        result = action()
        elapsed = (time.perf_counter() - start) * 1000
        self.total_ms += elapsed
        self.steps += 1
        print(f"{self.steps:>2}. {title:<{_TITLE_WIDTH}}{elapsed:>7.1f} ms")
        with self._lock:
            lines, self._log = self._log, []
        self.note(*(lines or ["(no effects: edits stay in memory until a commit)"]))
        return result

    def note(self, *lines: str) -> None:
        """Print lines under the current step."""
        for line in lines:
            print(f"      {line}")


class _RecordingRunner:
    """Carries store requests out against ``store`` and logs each one with
    its result, in a few words."""

    def __init__(self, store: SessionStore, narrator: _Narrator, short: Callable[[str], str]):
        self._runner = StoreRunner(store)
        self._narrator = narrator
        self._short = short

    def __call__(self, request: fx.StoreRequest) -> Outcome:
        outcome = self._runner(request)
        arrow = self._narrator.glyphs.arrow
        self._narrator.log(
            f"store  {self._request(request)} {arrow} {self._result(outcome.result)}"
        )
        return outcome

    def _request(self, request: fx.StoreRequest) -> str:
        if isinstance(request, fx.LoadGraph):
            scope = request.scope
            what = "full graph" if isinstance(scope, FullGraph) else "active path"
            if isinstance(scope, ActivePath) and scope.leaf_id is not None:
                what += f" from {self._short(scope.leaf_id)}"
            return f"LoadGraph({what})"
        if isinstance(request, fx.LoadNode):
            return f"LoadNode({self._short(request.node_id)})"
        if isinstance(request, fx.Commit):
            commit = request.commit
            head = "none" if commit.expected_head is None else commit.expected_head
            return f"Commit(expected head {head}, +{len(commit.delta.appended)} nodes)"
        if isinstance(request, fx.TombstoneNodes):
            return f"TombstoneNodes({len(request.node_ids)} nodes)"
        return "RecordAttachmentIntent"

    @staticmethod
    def _result(result: object) -> str:
        if isinstance(result, GraphLoaded):
            if result.session is None:
                return "nothing stored: a new session"
            return f"{len(result.session.nodes)} nodes"
        if isinstance(result, LoadNodeResult):
            return "found" if result.node is not None else "not found"
        if isinstance(result, Committed):
            return f"head revision {result.head_revision}"
        if isinstance(result, CommitConflicted):
            return f"conflict: the store is at head revision {result.stored_head}"
        if isinstance(result, Tombstoned):
            return f"{result.count} hidden"
        if isinstance(result, EffectFailed):
            return f"failed ({result.error}): {result.message}"
        return "done"


def _lifecycle(event: fx.LifecycleEvent) -> str:
    """A lifecycle event in a few words."""
    if isinstance(event, fx.SessionOpened):
        return f"SessionOpened({event.view.resident_nodes} nodes)"
    if isinstance(event, fx.SessionRestored):
        view = event.view
        return (
            f"SessionRestored(head revision {view.head_revision},"
            f" {view.resident_nodes} nodes resident)"
        )
    if isinstance(event, fx.SessionHealed):
        return "SessionHealed(the graph was repaired)"
    if isinstance(event, fx.SessionRepaired):
        return f"SessionRepaired({event.check} appended {len(event.node_ids)} nodes)"
    if isinstance(event, fx.SessionSaved):
        return f"SessionSaved(head revision {event.head_revision})"
    if isinstance(event, fx.CommitConflict):
        return f"CommitConflict(store at head revision {event.stored_head})"
    if isinstance(event, fx.SessionParked):
        return f"SessionParked(head revision {event.parked.head_revision})"
    return "SessionClosed(discarded)" if event.discarded else "SessionClosed"


def _hooks(narrator: _Narrator) -> Hooks:
    hooks = Hooks()
    hooks.on_lifecycle(lambda event: narrator.log(f"event  {_lifecycle(event)}"))
    hooks.on(
        fx.UnregisterPluginSession,
        lambda _: narrator.log("host   UnregisterPluginSession (drop the plugin state)"),
    )
    hooks.on(fx.RestoreToolSurface, lambda _: narrator.log("host   RestoreToolSurface"))
    hooks.on(fx.RestorePlugins, lambda _: narrator.log("host   RestorePlugins"))
    return hooks


def _claim_file(requested: str | None) -> tuple[str, str]:
    """A new, empty file for the demo and its session id. The file is
    created exclusively: the demo never writes into an existing one."""
    session_id = uuid.uuid4().hex
    path = requested or f"lash-demo-{session_id[:8]}.sqlite3"
    try:
        with open(path, "x"):
            pass
    except FileExistsError:
        raise CliError(
            f"{path} exists: the demo only writes to a new file (its vacuum step"
            " works on the whole database); name another with --db",
            Exit.CONFLICT,
        ) from None
    except FileNotFoundError:
        raise CliError(f"cannot create {path}: no such directory", Exit.NOT_FOUND) from None
    except OSError as exc:
        raise CliError(f"cannot create {path}: {exc.strerror}", Exit.STORE) from None
    return path, session_id


def _invocation() -> str:
    """How the user started us, so the suggested commands can be pasted."""
    if os.path.basename(sys.argv[0]) == "__main__.py":
        return "python -m lash_machine"
    return "lash-machine"


def run_demo(args: argparse.Namespace) -> int:
    """``demo [--db PATH]``: the narrated session; exit 0."""
    path, session_id = _claim_file(args.db)
    glyphs = glyphs_for(sys.stdout)
    narrator = _Narrator(glyphs)
    store = SQLiteStore(path)
    try:
        print("lash-machine demo: one agent session's lifecycle, step by step")
        print(f"database: {path} (a new SQLite file)")
        print(f"session:  {session_id}")
        print()
        print("Under each step, what the machine emitted: `store` lines are requests the")
        print("driver carried out against the file (with their results), `event` lines")
        print("lifecycle events, `host` lines requests to the application.")
        print()
        graph = _narrate(store, narrator, session_id)
        print()
        print(f"{narrator.steps} steps in {narrator.total_ms:.1f} ms. The session as stored now:")
        print(legend(graph))
        for line in tree_lines(graph, glyphs=glyphs):
            print(line)
    finally:
        store.close()
    db, me = shlex.quote(path), _invocation()
    print()
    print("The file stays. Try the operator commands on it:")
    print(f"  {me} sessions --db {db}")
    print(f"  {me} show {session_id[:8]} --db {db}")
    print(f"  {me} check --db {db}")
    if args.db is None:
        print(f"Remove it with: rm {db}")
    return Exit.OK


def _narrate(store: SQLiteStore, narrator: _Narrator, session_id: str) -> SessionGraph:
    """The demo's steps; returns the stored graph at the end."""
    say = narrator.note
    ids: list[str] = []

    def short(node_id: str) -> str:
        return node_id[:8]

    runner = _RecordingRunner(store, narrator, short)
    # No warm cache: the resume below reads the active path from the file,
    # which is what the demo shows.
    with Driver(runner=runner, hooks=_hooks(narrator), warm_cache=0) as driver:
        session = narrator.step("Open a new session", lambda: driver.open(_POLICY, session_id))

        def converse() -> int:
            ids.extend(session.append(body).node_id for body in _FIRST)
            return session.save()

        narrator.step(f"Append {len(_FIRST)} messages, then save", converse)
        say("one commit, a compare-and-set on the head revision (none before the first)")

        def fork() -> None:
            session.branch(ids[1])
            ids.extend(session.append(body).node_id for body in _SECOND)

        narrator.step("Branch back to the first answer and ask again", fork)
        state = session.state
        assert state is not None
        orphaned = len(state.graph) - len(state.graph.active_path())
        say(f"{orphaned} messages are now off the active path (orphans):")
        say(legend(state.graph))
        say(*tree_lines(state.graph, glyphs=narrator.glyphs, width=94))

        parked = narrator.step("Park: commit, then leave memory", session.park)
        say(
            "what stays in memory: a small ParkedSession handle"
            f" (id, policy, head revision {parked.head_revision})"
        )

        session = narrator.step(
            "Resume, keeping only the active path in memory",
            lambda: driver.resume(parked, residency=Residency.ACTIVE_PATH_ONLY),
        )
        view = session.view
        assert view is not None
        say(
            f"resident: {view.resident_nodes} of {len(ids)} nodes"
            " (residency ACTIVE_PATH_ONLY); the others stay in the store"
        )

        historic = ids[2]
        node = narrator.step(
            "Load an off-path message from the store", lambda: session.load_node(historic)
        )
        assert node is not None
        say(f"{short(node.node_id)}  {node_label(node)}")

        orphans = narrator.step("List the orphans", session.list_orphans)
        say("orphans: " + ", ".join(short(i) for i in orphans))

        narrator.step(
            "Tombstone the orphans (hidden from every read)", lambda: session.tombstone(orphans)
        )

        def vacuum() -> None:
            report = store.vacuum()
            arrow = narrator.glyphs.arrow
            narrator.log(f"store  vacuum() {arrow} {report.nodes_removed} nodes removed for good")

        narrator.step("Vacuum the database", vacuum)
        say("store maintenance for the whole database, not a session operation")
        narrator.step("Close the session", session.close)

    stored = store.load_graph(session_id, FullGraph())
    assert stored is not None, "the demo's session was committed"
    return SessionGraph.from_nodes(stored.nodes, stored.leaf_id)
