"""The asyncio driver's worker threads: the last idle one takes the next
call, so calls that come one at a time share one thread (and its SQLite
connection); overlapping calls still run side by side."""

from __future__ import annotations

import asyncio
import contextvars
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from lash_machine import ModelSpec, SessionPolicy
from lash_machine.drivers import trio as trio_driver
from lash_machine.drivers._threads import LastIdleFirst
from lash_machine.drivers.asyncio import Driver
from lash_machine.persisted import ReadScope, SessionCommit, StoredSession
from lash_machine.stores import SQLiteStore

POLICY = SessionPolicy(model=ModelSpec("m"))


def _wait_until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_calls_one_at_a_time_run_on_one_thread() -> None:
    threads = LastIdleFirst(max_workers=8)
    # A first burst makes several workers; afterwards, one at a time, the
    # same one (the last to go idle) takes every call.
    gate = threading.Barrier(4)
    burst = [threads.submit(gate.wait, 5) for _ in range(4)]
    assert all(f.result(5) is not None for f in burst)
    seen = {threads.submit(threading.get_ident).result(5) for _ in range(50)}
    assert len(seen) == 1
    threads.shutdown()


def test_overlapping_calls_run_side_by_side_up_to_the_limit_then_wait() -> None:
    threads = LastIdleFirst(max_workers=2)
    release = threading.Event()
    running: list[int] = []

    def hold(n: int) -> int:
        running.append(n)
        release.wait(5)
        return n

    futures = [threads.submit(hold, n) for n in range(3)]
    _wait_until(lambda: len(running) == 2)
    time.sleep(0.05)
    assert len(running) == 2  # the third waits for a worker
    release.set()
    assert [f.result(5) for f in futures] == [0, 1, 2]
    threads.shutdown()


def test_a_call_that_raises_reports_through_its_future() -> None:
    threads = LastIdleFirst()

    def fail() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        threads.submit(fail).result(5)
    assert threads.submit(lambda: 7).result(5) == 7  # the worker lives on
    threads.shutdown()


def test_a_call_cancelled_before_it_starts_never_runs() -> None:
    threads = LastIdleFirst(max_workers=1)
    release = threading.Event()
    ran: list[str] = []
    first = threads.submit(release.wait, 5)
    second = threads.submit(ran.append, "second")
    assert second.cancel()
    release.set()
    assert first.result(5) is True
    assert threads.submit(ran.append, "third").result(5) is None
    assert ran == ["third"]
    threads.shutdown()


def test_idle_workers_end_after_their_idle_time_and_at_shutdown() -> None:
    others = set(threading.enumerate())  # threads of earlier tests may still idle

    def workers() -> int:
        return sum(1 for t in threading.enumerate() if t not in others)

    threads = LastIdleFirst(max_workers=4, idle_seconds=0.3)
    gate = threading.Barrier(3)
    for future in [threads.submit(gate.wait, 5) for _ in range(3)]:
        future.result(5)
    assert workers() == 3
    _wait_until(lambda: workers() == 0)
    # Shut down, calls still run (a driver may be in the middle of a call),
    # and their workers end once idle.
    threads = LastIdleFirst(max_workers=4, idle_seconds=60)
    threads.submit(time.sleep, 0).result(5)
    assert workers() == 1
    threads.shutdown()
    _wait_until(lambda: workers() == 0)
    assert threads.submit(lambda: "late").result(5) == "late"
    _wait_until(lambda: workers() == 0)


class _Recording(SQLiteStore):
    """A real SQLite store that notes the thread of every commit."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.threads: list[int] = []

    def commit(self, commit: SessionCommit) -> int:
        self.threads.append(threading.get_ident())
        return super().commit(commit)


def test_the_asyncio_driver_commits_one_session_on_one_thread(tmp_path: Path) -> None:
    store = _Recording(tmp_path / "s.db")

    async def main() -> None:
        driver = Driver(store)
        session = await driver.open(POLICY, "s")
        for n in range(20):
            await session.append({"n": n})
            await session.save()
        await session.park()
        driver.close()

    asyncio.run(main())
    store.close()
    assert len(store.threads) == 20 and len(set(store.threads)) == 1
    assert threading.get_ident() not in store.threads  # never on the loop's thread


REQUEST = contextvars.ContextVar("REQUEST", default="none")


class _Seeing(SQLiteStore):
    """A real SQLite store that notes the context variable each call sees,
    and can hold a read until told to go on."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.seen: list[str] = []
        self.hold = threading.Event()
        self.holding = threading.Event()
        self.go = threading.Event()

    def commit(self, commit: SessionCommit) -> int:
        self.seen.append(REQUEST.get())
        return super().commit(commit)

    def load_graph(self, session_id: str, scope: ReadScope) -> StoredSession | None:
        self.seen.append(REQUEST.get())
        if self.hold.is_set():
            self.holding.set()
            self.go.wait(5)
        return super().load_graph(session_id, scope)


def test_store_calls_see_the_callers_context_variables(tmp_path: Path) -> None:
    """As ``asyncio.to_thread`` and ``trio.to_thread.run_sync``: a store
    call runs in a copy of the calling task's context."""
    store = _Seeing(tmp_path / "s.db")

    async def on_asyncio() -> None:
        driver = Driver(store)
        REQUEST.set("asyncio")
        session = await driver.open(POLICY, "a")
        await session.append({"n": 1})
        await session.park()
        driver.close()

    async def on_trio() -> None:
        driver = trio_driver.Driver(store)
        REQUEST.set("trio")
        session = await driver.open(POLICY, "t")
        await session.append({"n": 1})
        await session.park()
        driver.close()

    asyncio.run(on_asyncio())
    trio.run(on_trio)
    store.close()
    assert store.seen == ["asyncio", "asyncio", "trio", "trio"]  # the open's read, the commit


def test_a_read_abandoned_as_its_loop_ends_leaves_the_worker_usable(tmp_path: Path) -> None:
    """The late result of an abandoned read finds its loop closed: it is
    dropped, and the worker goes on serving the driver's next loop."""
    store = _Seeing(tmp_path / "s.db")
    driver = Driver(store, warm_cache=0)  # so a resume reads the nodes

    async def park_one() -> Any:
        session = await driver.open(POLICY, "s")
        await session.append({"n": 1})
        return await session.park()

    parked = asyncio.run(park_one())

    async def abandon() -> None:
        store.hold.set()
        task = asyncio.create_task(driver.resume(parked))
        assert await asyncio.to_thread(store.holding.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(abandon())  # the loop is closed while the read still runs
    workers = threading.active_count()
    store.hold.clear()
    store.go.set()
    _wait_until(lambda: driver._threads._idle)  # the read ended, its worker is idle

    async def resume() -> list[Any]:
        session = await asyncio.wait_for(driver.resume(parked), 5)
        return [node.body for node in session.state.graph.active_path()]

    assert asyncio.run(resume()) == [{"n": 1}]
    assert threading.active_count() == workers  # the same worker served it
    driver.close()
    store.close()
