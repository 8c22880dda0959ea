"""Where the async drivers' worker threads meet everything else: a store
call that raises instead of answering, a driver closed mid-call, more
sessions than workers, a cancellation at each point of a call's trip to a
worker and back, a loop that ends under a call, two loops on one driver,
and context variables. Real SQLite files (and PostgreSQL where a pool is
involved); threads meet at events and barriers, never at sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from stack_support import postgres_place
from test_drivers_support import DRIVERS, POLICY, run_scenario

from lash_machine import DriverClosed, Phase
from lash_machine.drivers import asyncio as asyncio_driver
from lash_machine.drivers import trio as trio_driver
from lash_machine.drivers._threads import Done, LastIdleFirst
from lash_machine.drivers.store_effects import Outcome, carry_out
from lash_machine.effects import StoreRequest
from lash_machine.persisted import FullGraph, ReadScope
from lash_machine.stores import SQLiteStore
from lash_machine.stores.base import SessionStore
from lash_machine.stores.postgres import PostgresStore

ASYNC = ["asyncio", "trio"]
WAIT = 10.0  # seconds any thread waits for another before the test fails


class Boom(BaseException):
    """A ``BaseException`` of the host's own, as a store might raise."""


def _session_of(args: tuple[Any, ...]) -> str:
    first = args[0] if args else None
    return first if isinstance(first, str) else str(getattr(first, "session_id", ""))


class Turnstile:
    """A real store. Calls of the methods in :attr:`held` wait until
    :attr:`release` is set (counted while they wait), or raise what
    :meth:`arm` put in their way, before or after the real call. Every
    call is noted: (method, session id, thread id)."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.held: set[str] = set()
        self.release = threading.Event()
        self.calls: list[tuple[str, str, int]] = []
        self.waiting = 0
        self.most = 0  # the most held calls waiting at once
        self._armed: dict[str, tuple[BaseException, bool]] = {}
        self._cond = threading.Condition()

    def arm(self, method: str, error: BaseException, *, after: bool = False) -> None:
        self._armed[method] = (error, after)

    def wait_until_waiting(self, count: int) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: self.waiting >= count, WAIT), self.waiting

    def ran(self, method: str) -> list[int]:
        """The threads that ran ``method``, in order."""
        return [thread for name, _, thread in self.calls if name == method]

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if not callable(real):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            with self._cond:
                self.calls.append((name, _session_of(args), threading.get_ident()))
                held = name in self.held
                if held:
                    self.waiting += 1
                    self.most = max(self.most, self.waiting)
                    self._cond.notify_all()
            if held:
                try:
                    assert self.release.wait(WAIT), "the test never released the call"
                finally:
                    with self._cond:
                        self.waiting -= 1
            error, after = self._armed.pop(name, (None, False))
            if error is not None and not after:
                raise error
            result = real(*args, **kwargs)
            if error is not None:
                raise error
            return result

        return call


@pytest.fixture
def sqlite(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = SQLiteStore(tmp_path / "sessions.db")
    yield store
    store.close()


def _alive(thread_id: int) -> bool:
    return any(t.ident == thread_id and t.is_alive() for t in threading.enumerate())


def _stored_head(store: SessionStore, session_id: str) -> int | None:
    stored = store.load_graph(session_id, FullGraph())
    assert stored is not None
    return stored.head_revision


# ---- a store call that raises instead of answering ----------------------------------


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, Boom])
@pytest.mark.parametrize("after", [False, True], ids=["before-applying", "after-applying"])
def test_a_commit_that_raises_a_base_exception_is_raised_and_settled(
    driver: str, kind: type[BaseException], after: bool, sqlite: SQLiteStore
) -> None:
    """The exception reaches the caller as itself; the machine is told the
    commit's outcome is unknown (never left committing), sends it again
    under its commit id, and so agrees with the store whether the first
    attempt was applied or not. The worker lives on and takes the retry."""
    store = Turnstile(sqlite)

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        assert await session.save() == 1
        last = await session.append({"n": 2})
        store.arm("commit", kind("raised by the store"), after=after)
        with pytest.raises(kind, match="raised by the store"):
            await session.save()
        assert session.phase is Phase.ACTIVE and not session._core.state.outstanding
        assert not session.state.dirty and session.view.head_revision == 2
        assert _stored_head(sqlite, "s") == 2 and session.view.leaf_id == last.node_id
        _, raising, again = store.ran("commit")
        if driver != "blocking":
            assert raising == again and _alive(raising)  # the same worker, still serving
        await session.append({"n": 3})
        assert await session.save() == 3
        await session.park()

    run_scenario(driver, scenario, store)


@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("kind", [KeyboardInterrupt, SystemExit, Boom, RuntimeError])
def test_a_read_that_raises_is_abandoned_and_raised(
    driver: str, kind: type[BaseException], sqlite: SQLiteStore
) -> None:
    """A resume whose graph read raises (a ``BaseException``, or an
    ``Exception`` that is not a store error): the caller gets it, the
    session is parked as before, and the next resume reads again."""
    store = Turnstile(sqlite)

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        await session.park()
        store.arm("load_graph", kind("raised by the store"))
        with pytest.raises(kind, match="raised by the store"):
            await session.resume()
        assert session.phase is Phase.PARKED and not session._core.state.outstanding
        await session.resume()
        assert [n.body for n in session.state.graph.active_path()] == [{"n": 1}]
        if driver != "blocking":
            *_, raising, again = store.ran("load_graph")  # the open read first
            assert raising == again  # the worker that raised took the next call

    run_scenario(driver, scenario, {"store": store, "warm_cache": 0})


class _BrokenRunner:
    """An effect runner that breaks its contract: its next call raises
    ``error`` instead of returning an outcome, once the store applied it."""

    def __init__(self, store: SessionStore) -> None:
        self.store = store
        self.error: BaseException | None = None

    def __call__(self, request: StoreRequest) -> Outcome:
        outcome = carry_out(self.store, request)
        error, self.error = self.error, None
        if error is not None:
            raise error
        return outcome


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_runner_that_raises_an_exception_is_raised_and_settled(
    driver: str, sqlite: SQLiteStore
) -> None:
    runner = _BrokenRunner(sqlite)

    async def scenario(one: Any) -> None:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        runner.error = RuntimeError("the runner lost its answer")
        with pytest.raises(RuntimeError, match="lost its answer"):
            await session.save()
        # Applied, answer lost: sent again under its id, and settled.
        assert session.phase is Phase.ACTIVE and not session.state.dirty
        assert session.view.head_revision == _stored_head(sqlite, "s") == 1
        await session.append({"n": 2})
        assert await session.save() == 2

    run_scenario(driver, scenario, {"runner": runner})


@pytest.mark.parametrize("driver", DRIVERS)
def test_a_lease_call_that_raises_is_raised_as_itself(driver: str, sqlite: SQLiteStore) -> None:
    store = Turnstile(sqlite)

    async def scenario(one: Any) -> None:
        store.arm("claim_lease", Boom("claim"))
        with pytest.raises(Boom, match="claim"):
            await one.open(POLICY, "s")
        assert sqlite.current_lease("s") is None
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        store.arm("release_lease", Boom("release"))
        with pytest.raises(Boom, match="release"):
            await session.park()
        assert session.phase is Phase.PARKED and _stored_head(sqlite, "s") == 1
        lease = sqlite.current_lease("s")
        assert lease is not None and lease.owner == "w1"  # still held: the retry releases
        await session.park()
        assert sqlite.current_lease("s") is None

    run_scenario(driver, scenario, {"store": store, "lease_owner": "w1"})


class _SQLiteBreaksMidCommit(SQLiteStore):
    """A real SQLite store whose next write transaction raises
    :attr:`armed` after its statements ran, before its COMMIT."""

    armed: BaseException | None = None

    @contextlib.contextmanager
    def _transaction(self, begin: str | None) -> Iterator[Any]:
        with super()._transaction(begin) as conn:
            yield conn
            error = self.armed if begin == "BEGIN IMMEDIATE" else None
            if error is not None:
                self.armed = None
                raise error


class _PostgresBreaksAfterCommit(PostgresStore):
    """A real PostgreSQL store whose next call raises :attr:`armed` while
    it still holds its pooled connection (a commit is one autocommitted
    statement: applied by then)."""

    armed: BaseException | None = None

    @contextlib.contextmanager
    def _connection(self) -> Iterator[Any]:
        with super()._connection() as conn:
            yield conn
            error, self.armed = self.armed, None
            if error is not None:
                raise error


@pytest.mark.parametrize("driver", ASYNC)
@pytest.mark.parametrize("place", ["sqlite", "postgres"])
def test_a_base_exception_inside_the_stores_transaction_leaves_it_usable(
    driver: str, place: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """SQLite: raised before COMMIT, so rolled back; the worker's own
    connection is not left in the transaction. PostgreSQL: raised after
    the statement, so applied; the pool (of one connection) gets its
    connection back. Either way the retry under the commit id settles it."""
    with contextlib.ExitStack() as stack:
        store: _SQLiteBreaksMidCommit | _PostgresBreaksAfterCommit
        if place == "sqlite":
            store = _SQLiteBreaksMidCommit(tmp_path / "s.db")
        else:
            dsn = stack.enter_context(postgres_place(request.getfixturevalue("postgres_dsn"))).dsn
            store = _PostgresBreaksAfterCommit(dsn, min_size=1, max_size=1, timeout=3)
        stack.callback(store.close)

        async def scenario(one: Any) -> None:
            session = await one.open(POLICY, "s")
            await session.append({"n": 1})
            assert await session.save() == 1
            last = await session.append({"n": 2})
            store.armed = Boom("in the transaction")
            with pytest.raises(Boom):
                await session.save()
            assert session.view.head_revision == _stored_head(store, "s") == 2
            assert session.view.leaf_id == last.node_id and not session.state.dirty
            await session.append({"n": 3})
            assert await session.save() == 3
            await session.park()

        run_scenario(driver, scenario, store)
        stored = store.load_graph("s", FullGraph())
        assert stored is not None and [n.body for n in stored.nodes] == [
            {"n": i} for i in (1, 2, 3)
        ]


# ---- loop-specific helpers ------------------------------------------------------------


async def _until_asyncio(condition: Callable[[], bool]) -> None:
    """Let the loop run until ``condition`` holds (turns of the loop, no
    timed sleep; bounded)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the condition never held")


async def _in_thread(kind: str, call: Callable[[], object]) -> None:
    if kind == "asyncio":
        await asyncio.to_thread(call)
    else:
        await trio.to_thread.run_sync(call)


def _run(kind: str, main: Callable[[], Any]) -> None:
    if kind == "asyncio":
        asyncio.run(main())
    else:
        trio.run(main)


def _module(kind: str) -> Any:
    return asyncio_driver if kind == "asyncio" else trio_driver


# ---- the driver closed mid-call -------------------------------------------------------


@pytest.mark.parametrize("driver", ASYNC)
def test_closing_the_driver_mid_call_finishes_what_is_in_flight_and_refuses_the_rest(
    driver: str, sqlite: SQLiteStore
) -> None:
    """Every worker is busy with a held commit and two more commits wait
    for a worker when the driver is closed and its lifecycle stream
    exited: all of them finish (the session agrees with the store), new
    calls raise ``DriverClosed`` at once, and the workers end."""
    store = Turnstile(sqlite)
    one = _module(driver).Driver(store)
    bound = one._threads._max
    workers: list[threading.Thread] = []

    async def main() -> None:
        events = one.lifecycle()
        idle = await one.open(POLICY, "idle")
        sessions = [await one.open(POLICY, f"s{i}") for i in range(bound + 2)]
        for session in sessions:
            await session.append({"n": 1})
        store.held.add("commit")
        heads: list[int] = []

        async def save(session: Any) -> None:
            heads.append(await session.save())

        async def close_mid_call() -> None:
            await _in_thread(driver, lambda: store.wait_until_waiting(bound))
            assert len(one._threads._backlog) == 2  # waiting for a worker
            busy = set(store.ran("commit"))
            workers.extend(t for t in threading.enumerate() if t.ident in busy)
            one.close()
            events.close()
            for call in (lambda: idle.append({"n": 1}), lambda: one.open(POLICY), one.vacuum):
                with pytest.raises(DriverClosed):
                    await call()
            store.release.set()

        if driver == "asyncio":
            await asyncio.gather(close_mid_call(), *(save(s) for s in sessions))
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_mid_call)
                for session in sessions:
                    nursery.start_soon(save, session)
        assert heads == [1] * len(sessions)
        for session in sessions:
            assert _stored_head(sqlite, session.session_id) == 1 and not session.state.dirty
            with pytest.raises(DriverClosed):
                await session.park()
        # Iteration ends after what was buffered before the stream was exited.
        assert [type(e).__name__ async for e in events] == ["SessionOpened"] * (bound + 3)

    _run(driver, main)
    assert store.most == bound and len(workers) == bound
    for worker in workers:
        worker.join(WAIT)  # ended once idle: the driver was closed
        assert not worker.is_alive()


# ---- more sessions than workers ---------------------------------------------------------


@pytest.mark.parametrize("driver", ASYNC)
def test_more_sessions_than_workers_all_finish_and_renewals_wait_their_turn(
    driver: str, sqlite: SQLiteStore
) -> None:
    """Every worker holds a commit; lease renewals of other sessions then
    wait for a worker (no deadlock, no thread beyond the bound) and run in
    the order they came once the commits go on."""
    store = Turnstile(sqlite)
    one = _module(driver).Driver(store, lease_owner="w1")
    bound = one._threads._max
    renewing = 3

    async def main() -> None:
        sessions = [await one.open(POLICY, f"s{i}") for i in range(bound + renewing)]
        before = [s.lease for s in sessions]
        for session in sessions[:bound]:
            await session.append({"n": 1})
        store.held.add("commit")
        heads: list[int] = []

        async def save(session: Any) -> None:
            heads.append(await session.save())

        async def renew(session: Any) -> None:
            await session.renew_lease()

        async def renew_once_saturated() -> Any:
            await _in_thread(driver, lambda: store.wait_until_waiting(bound))
            for session in sessions[bound:]:
                spawn(renew, session)
            if driver == "asyncio":
                await _until_asyncio(lambda: len(one._threads._backlog) == renewing)
            else:
                await trio.testing.wait_all_tasks_blocked()
                assert len(one._threads._backlog) == renewing
            assert "renew_lease" not in {name for name, _, _ in store.calls}
            store.release.set()

        if driver == "asyncio":
            tasks: list[asyncio.Task[None]] = []

            def spawn(call: Any, session: Any) -> None:
                tasks.append(asyncio.create_task(call(session)))

            for session in sessions[:bound]:
                spawn(save, session)
            await asyncio.wait_for(renew_once_saturated(), WAIT)
            await asyncio.wait_for(asyncio.gather(*tasks), WAIT)
        else:
            with trio.fail_after(WAIT):
                async with trio.open_nursery() as nursery:

                    def spawn(call: Any, session: Any) -> None:
                        nursery.start_soon(call, session)

                    for session in sessions[:bound]:
                        spawn(save, session)
                    nursery.start_soon(renew_once_saturated)
        assert heads == [1] * bound and store.most == bound
        renewed = sorted(sid for name, sid, _ in store.calls if name == "renew_lease")
        assert renewed == sorted(s.session_id for s in sessions[bound:])
        for old, session in zip(before, sessions, strict=True):
            assert session.lease.token == old.token
        for old, session in list(zip(before, sessions, strict=True))[bound:]:
            assert session.lease.expires_at > old.expires_at
        one.close()

    _run(driver, main)


@pytest.mark.parametrize("driver", ASYNC)
def test_postgres_more_sessions_than_workers_and_connections_all_finish(
    driver: str, postgres_dsn: str
) -> None:
    with postgres_place(postgres_dsn) as place:
        store = PostgresStore(place.dsn, min_size=1, max_size=2, timeout=WAIT)
        one = _module(driver).Driver(store, lease_owner="w1")
        count = 2 * one._threads._max + 1

        async def work(n: int) -> None:
            session = await one.open(POLICY, f"pg{n}")
            for turn in range(3):
                await session.append({"n": n, "turn": turn})
                assert await session.save() == turn + 1
            await session.park()

        async def main() -> None:
            if driver == "asyncio":
                await asyncio.wait_for(asyncio.gather(*(work(n) for n in range(count))), WAIT)
            else:
                with trio.fail_after(WAIT):
                    async with trio.open_nursery() as nursery:
                        for n in range(count):
                            nursery.start_soon(work, n)

        try:
            _run(driver, main)
            assert [_stored_head(store, f"pg{n}") for n in range(count)] == [3] * count
            assert all(store.current_lease(f"pg{n}") is None for n in range(count))
        finally:
            one.close()
            store.close()


# ---- cancellation at each point of the trip --------------------------------------------


@pytest.mark.parametrize("driver", ASYNC)
def test_calls_cancelled_while_waiting_for_a_worker(driver: str, sqlite: SQLiteStore) -> None:
    """A read cancelled before a worker took it returns at once (the call
    still runs later, and its result is dropped); a write is waited for
    and fed, then the cancellation lands (asyncio) or the result is
    returned (trio, which delivers it at the next checkpoint)."""
    store = Turnstile(sqlite)
    one = _module(driver).Driver(store, warm_cache=0)
    bound = one._threads._max

    async def main() -> None:
        busy = [await one.open(POLICY, f"busy{i}") for i in range(bound)]
        reader = await one.open(POLICY, "reader")
        await reader.append({"n": 1})
        await reader.park()
        writer = await one.open(POLICY, "writer")
        last = await writer.append({"n": 1})
        for session in busy:
            await session.append({"n": 1})
        store.held.add("commit")
        if driver == "asyncio":
            saves = [asyncio.create_task(s.save()) for s in busy]
            await asyncio.to_thread(store.wait_until_waiting, bound)
            reading = asyncio.create_task(reader.resume())
            writing = asyncio.create_task(writer.save())
            await _until_asyncio(lambda: len(one._threads._backlog) == 2)
            reading.cancel()
            writing.cancel()
            with pytest.raises(asyncio.CancelledError):
                await reading  # at once: every worker is still held
            assert not writing.done()
            store.release.set()
            with pytest.raises(asyncio.CancelledError):
                await writing
            assert await asyncio.gather(*saves) == [1] * bound
        else:
            async with trio.open_nursery() as nursery:
                for session in busy:
                    nursery.start_soon(session.save)
                await trio.to_thread.run_sync(store.wait_until_waiting, bound)
                with trio.CancelScope() as read_scope:
                    nursery.start_soon(_cancel_when_queued, one, read_scope, 1)
                    await reader.resume()
                assert read_scope.cancelled_caught
                with trio.CancelScope() as write_scope:
                    # The abandoned read still waits for a worker too.
                    nursery.start_soon(_cancel_when_queued, one, write_scope, 2, store.release)
                    assert await writer.save() == 1
        assert reader.phase is Phase.PARKED and not reader._core.state.outstanding
        assert writer.phase is Phase.ACTIVE and not writer.state.dirty
        assert writer.view.head_revision == _stored_head(sqlite, "writer") == 1
        assert writer.view.leaf_id == last.node_id
        await reader.resume()  # the retry reads again
        assert [n.body for n in reader.state.graph.active_path()] == [{"n": 1}]
        one.close()

    _run(driver, main)


async def _cancel_when_queued(
    one: Any, scope: trio.CancelScope, queued: int, then: threading.Event | None = None
) -> None:
    await trio.testing.wait_all_tasks_blocked()
    assert len(one._threads._backlog) == queued
    scope.cancel()
    if then is not None:
        await trio.testing.wait_all_tasks_blocked()
        then.set()


def test_asyncio_timeouts_and_two_cancels_during_a_write(sqlite: SQLiteStore) -> None:
    """``asyncio.timeout`` and ``asyncio.wait_for`` around a held commit, and
    two task cancels in a row during a leased park: each write is waited
    out and fed (and the lease released), then the one cancellation lands;
    the session agrees with the store."""
    store = Turnstile(sqlite)

    async def main() -> None:
        one = asyncio_driver.Driver(store, lease_owner="w1")
        session = await one.open(POLICY, "s")
        loop = asyncio.get_running_loop()

        async def expire(deadline: asyncio.Timeout) -> None:
            await asyncio.to_thread(store.wait_until_waiting, 1)
            deadline.reschedule(loop.time())  # it passes while the commit runs
            await _until_asyncio(deadline.expired)
            store.release.set()

        await session.append({"n": 1})
        store.held.add("commit")
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(None) as deadline:
                expiring = asyncio.create_task(expire(deadline))
                await session.save()
        await expiring
        assert session.view.head_revision == _stored_head(sqlite, "s") == 1

        await session.append({"n": 2})
        store.release.clear()

        async def release_once_cancelled() -> None:
            await asyncio.to_thread(store.wait_until_waiting, 1)
            saving = next(t for t in asyncio.all_tasks() if "save" in repr(t.get_coro()))
            await _until_asyncio(lambda: saving.cancelling() > 0)
            store.release.set()

        releasing = asyncio.create_task(release_once_cancelled())
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(session.save(), 0.01)
        await releasing
        assert session.view.head_revision == _stored_head(sqlite, "s") == 2

        last = await session.append({"n": 3})
        store.release.clear()
        parking = asyncio.create_task(session.park())
        await asyncio.to_thread(store.wait_until_waiting, 1)
        parking.cancel()
        await asyncio.sleep(0)
        parking.cancel()
        await asyncio.sleep(0)
        assert not parking.done()
        store.release.set()
        with pytest.raises(asyncio.CancelledError):
            await parking
        assert session.phase is Phase.PARKED and session.parked.head_revision == 3
        assert sqlite.load_graph("s", FullGraph()).leaf_id == last.node_id  # type: ignore[union-attr]
        assert sqlite.current_lease("s") is None  # the release it owed ran too
        resumed = await one.resume(session.parked)
        assert resumed.view.leaf_id == last.node_id
        await resumed.close()

    asyncio.run(main())


def test_trio_deadlines_during_a_read_and_a_write(sqlite: SQLiteStore) -> None:
    """A cancel scope's deadline passes while a read runs (abandoned at
    once) and while a write runs (waited out; trio returns its result)."""
    store = Turnstile(sqlite)

    async def expire(scope: trio.CancelScope, release: bool) -> None:
        await trio.to_thread.run_sync(store.wait_until_waiting, 1)
        scope.deadline = trio.current_time()
        await trio.testing.wait_all_tasks_blocked()
        assert scope.cancel_called
        if release:
            store.release.set()

    async def main() -> None:
        one = trio_driver.Driver(store, warm_cache=0)
        session = await one.open(POLICY, "s")
        last = await session.append({"n": 1})
        async with trio.open_nursery() as nursery:
            store.held.add("commit")
            with trio.CancelScope(deadline=math.inf) as scope:
                nursery.start_soon(expire, scope, True)
                assert await session.save() == 1
            assert not scope.cancelled_caught
            assert session.view.head_revision == _stored_head(sqlite, "s") == 1
            await session.park()
            store.held, store.release = {"load_graph"}, threading.Event()
            with trio.CancelScope(deadline=math.inf) as scope:
                nursery.start_soon(expire, scope, False)
                await session.resume()
            assert scope.cancelled_caught and session.phase is Phase.PARKED
            store.release.set()
        store.held.clear()
        await session.resume()
        assert session.view.leaf_id == last.node_id
        one.close()

    trio.run(main)


class _PausedThreads(LastIdleFirst):
    """Worker threads that, once :attr:`armed`, hold the outcome of the
    next call (the call has finished) until :attr:`go` is set, then hand
    it over and set :attr:`handed`."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.go = threading.Event()
        self.handed = threading.Event()

    def call(self, fn: Callable[[], Any], done: Done) -> None:
        if not self.armed:
            super().call(fn, done)
            return
        self.armed = False

        def held(result: Any, error: BaseException | None) -> None:
            assert self.go.wait(WAIT)
            done(result, error)
            self.handed.set()

        super().call(fn, held)

    def hand_over(self) -> None:
        """Let the held outcome go and wait until its wakeup is on its way
        (this blocks the calling thread: the loop's, in the tests)."""
        self.go.set()
        assert self.handed.wait(WAIT)


@pytest.mark.parametrize("driver", ASYNC)
def test_a_cancel_after_the_call_finished_but_before_its_wakeup(
    driver: str, sqlite: SQLiteStore
) -> None:
    """The worker has finished and its wakeup is queued when the cancel
    lands: a read's result is dropped all the same (back to parked), a
    write's real result is fed (the session agrees with the store)."""
    paused = _PausedThreads()

    async def main() -> None:
        one = _module(driver).Driver(sqlite, warm_cache=0)
        one.__dict__["_threads"] = paused
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        assert await session.save() == 1
        last = await session.append({"n": 2})

        for call in (session.park, session.resume):
            write = call == session.park
            paused.armed, paused.go, paused.handed = True, threading.Event(), threading.Event()
            before = session._core.state
            if driver == "asyncio":
                task = asyncio.create_task(call())
                await asyncio.sleep(0)  # the task hands its job to a worker, then waits
                paused.hand_over()
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
            else:
                with trio.CancelScope() as scope:
                    async with trio.open_nursery() as nursery:

                        async def cancel_once_handed() -> None:
                            await trio.testing.wait_all_tasks_blocked()
                            paused.hand_over()
                            scope.cancel()

                        nursery.start_soon(cancel_once_handed)
                        await call()
                        await trio.sleep(0)  # the cancellation lands at this checkpoint
                assert scope.cancelled_caught
            # A write's real result was fed: parked, as the store says; a
            # read's result was dropped: still parked, the read abandoned.
            assert session.phase is Phase.PARKED and not session._core.state.outstanding
            assert session.parked.head_revision == _stored_head(sqlite, "s") == 2
            assert session._core.state is not before
            if not write:
                assert session._core.state.parked == before.parked
        assert session.parked.head_revision == 2
        await session.resume()
        assert session.view.leaf_id == last.node_id
        one.close()

    _run(driver, main)


# ---- the loop ends under a call; two loops on one driver --------------------------------


def test_trio_run_ending_under_a_read_leaves_the_driver_usable_in_the_next_run(
    sqlite: SQLiteStore,
) -> None:
    """The late outcome of an abandoned read finds its trio run over: it is
    dropped, and the same worker serves the driver in the next run."""
    store = Turnstile(sqlite)
    paused = _PausedThreads()
    one = trio_driver.Driver(store, warm_cache=0)
    one.__dict__["_threads"] = paused

    async def park_one() -> Any:
        session = await one.open(POLICY, "s")
        await session.append({"n": 1})
        return await session.park()

    parked = trio.run(park_one)

    async def abandon() -> None:
        paused.armed = True
        store.held.add("load_graph")
        with trio.move_on_after(WAIT) as scope:
            async with trio.open_nursery() as nursery:

                async def cancel_when_entered() -> None:
                    await trio.to_thread.run_sync(store.wait_until_waiting, 1)
                    scope.cancel()

                nursery.start_soon(cancel_when_entered)
                await one.resume(parked)
        assert scope.cancelled_caught

    trio.run(abandon)  # over while the read still runs
    store.held.clear()
    store.release.set()
    paused.hand_over()  # the worker's wakeup meets a finished run

    async def resume() -> list[Any]:
        with trio.fail_after(WAIT):
            session = await one.resume(parked)
        return [node.body for node in session.state.graph.active_path()]

    assert trio.run(resume) == [{"n": 1}]
    *_, abandoned, again = store.ran("load_graph")  # the first run's open read first
    assert abandoned == again and _alive(again)
    one.close()


@pytest.mark.parametrize("driver", ASYNC)
def test_one_driver_used_from_two_loops_in_two_threads_at_once(
    driver: str, sqlite: SQLiteStore
) -> None:
    """Each loop's calls come back to that loop: two threads, each running
    its own loop with its own sessions of one driver, commit at the same
    time (they meet at a barrier inside the store)."""
    meet = threading.Barrier(2, timeout=WAIT)

    class Meeting(Turnstile):
        def __getattr__(self, name: str) -> Any:
            real = super().__getattr__(name)
            if name != "commit":
                return real

            def commit(*args: Any) -> Any:
                meet.wait()
                return real(*args)

            return commit

    store = Meeting(sqlite)
    one = _module(driver).Driver(store)
    heads: dict[str, list[int]] = {}
    failures: list[BaseException] = []

    def in_thread(name: str) -> None:
        async def main() -> None:
            session = await one.open(POLICY, name)
            heads[name] = []
            for n in range(3):
                await session.append({"n": n})
                heads[name].append(await session.save())
            meet.abort()  # the other thread's last commit does not wait for a partner
            await session.park()

        try:
            _run(driver, main)
        except BaseException as error:  # reported by the test's thread
            failures.append(error)

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
        assert not thread.is_alive()
    assert failures == []
    assert heads == {"a": [1, 2, 3], "b": [1, 2, 3]}
    assert _stored_head(sqlite, "a") == _stored_head(sqlite, "b") == 3
    one.close()


@pytest.mark.parametrize("driver", ASYNC)
def test_a_lifecycle_stream_hears_sessions_on_another_loop(
    driver: str, sqlite: SQLiteStore
) -> None:
    """A stream made on one loop, a session of the same driver on another
    loop in another thread: its events reach the stream through the
    stream's own loop, in order. (Put on the stream's queue from the other
    thread, asyncio in debug mode refuses the wakeup and the listener waits
    forever; trio's channel is not thread-safe either.) Both loops run in
    threads of their own, so a listener that never wakes fails the test
    instead of hanging it."""
    one = _module(driver).Driver(sqlite)
    failures: list[BaseException] = []
    seen: list[str] = []
    wanted = ["SessionOpened", "SessionSaved", "SessionParked"]

    def elsewhere() -> None:
        async def main() -> None:
            session = await one.open(POLICY, "far")
            await session.append({"n": 1})
            await session.save()
            await session.park()

        try:
            _run(driver, main)
        except BaseException as error:  # reported by the test's thread
            failures.append(error)

    far = threading.Thread(target=elsewhere, daemon=True)

    async def listen() -> None:
        with one.lifecycle() as events:
            far.start()
            async for event in events:
                seen.append(type(event).__name__)
                if len(seen) == len(wanted):
                    break

    def here() -> None:
        try:
            if driver == "asyncio":
                asyncio.run(listen(), debug=True)
            else:
                trio.run(listen)
        except BaseException as error:  # reported by the test's thread
            failures.append(error)

    near = threading.Thread(target=here, daemon=True)
    near.start()
    near.join(WAIT)
    far.join(WAIT)
    assert not near.is_alive(), f"the stream never heard the other loop's session: {seen}"
    assert failures == []
    assert seen == wanted
    one.close()


# ---- context variables ----------------------------------------------------------------

REQUEST = contextvars.ContextVar("REQUEST", default="none")


@pytest.mark.parametrize("driver", ASYNC)
def test_a_store_calls_context_changes_stay_in_the_call(driver: str, sqlite: SQLiteStore) -> None:
    """Two tasks with their own value commit at once (each call sees its
    own task's value); a call that sets the variable changes it neither
    for its caller nor for the next call on the same worker."""
    meet = threading.Barrier(2, timeout=WAIT)
    seen: list[tuple[str, str]] = []

    class Seeing(SQLiteStore):
        def commit(self, commit: Any) -> int:
            seen.append((commit.session_id, REQUEST.get()))
            if commit.session_id in ("a", "b"):
                meet.wait()
            REQUEST.set(f"set by the store in {commit.session_id}")
            return super().commit(commit)

        def load_graph(self, session_id: str, scope: ReadScope) -> Any:
            seen.append((session_id, REQUEST.get()))
            return super().load_graph(session_id, scope)

    store = Seeing(sqlite.path)
    one = _module(driver).Driver(store)

    async def work(name: str) -> None:
        REQUEST.set(f"task {name}")
        session = await one.open(POLICY, name)
        await session.append({"n": 1})
        await session.save()
        assert REQUEST.get() == f"task {name}"
        await session.append({"n": 2})
        await session.park()
        assert REQUEST.get() == f"task {name}"

    async def main() -> None:
        if driver == "asyncio":
            await asyncio.gather(work("a"), work("b"))
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(work, "a")
                nursery.start_soon(work, "b")
        assert REQUEST.get() == "none"

    try:
        _run(driver, main)
    finally:
        one.close()
        store.close()
    for name in ("a", "b"):
        assert [v for s, v in seen if s == name] == [f"task {name}"] * 3  # read, save, park
