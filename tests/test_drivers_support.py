"""Shared pieces of the driver tests: real stores on demand, a store whose
next call waits at a gate, and one way to run an async scenario under each
driver (the blocking one behind a thin awaitable proxy)."""

from __future__ import annotations

import asyncio
import functools
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from lash_machine import ModelSpec, SessionPolicy
from lash_machine.drivers import asyncio as asyncio_driver
from lash_machine.drivers import blocking as blocking_driver
from lash_machine.drivers import trio as trio_driver
from lash_machine.stores import MemoryStore, SessionStore, SQLiteStore

POLICY = SessionPolicy(ModelSpec("test-model", context_window=8192), provider_id="test")

DRIVERS = ["asyncio", "trio", "blocking"]
STORES = ["memory", "sqlite", "postgres"]

StoreFactory = Callable[[], SessionStore]


@functools.cache
def _reset_postgres(dsn: str) -> None:
    """Start each test run from an empty schema (once per process)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS lash_drivers CASCADE")
        conn.execute("CREATE SCHEMA lash_drivers")


def _postgres_dsn(dsn: str) -> str:
    _reset_postgres(dsn)
    joiner = "&" if "?" in dsn else "?"
    return f"{dsn}{joiner}options=-csearch_path%3Dlash_drivers"


def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreFactory]:
    """For an ``open_store`` fixture parametrized with a store kind: a
    factory of store instances that all see the same data (for the memory
    store: the same instance). Every instance is closed afterwards."""
    kind: str = request.param
    made: list[SessionStore] = []
    if kind == "memory":
        shared = MemoryStore()
        made.append(shared)

        def factory() -> SessionStore:
            return shared

    elif kind == "sqlite":

        def factory() -> SessionStore:
            made.append(SQLiteStore(tmp_path / "sessions.db"))
            return made[-1]

    else:
        from lash_machine.stores import PostgresStore

        dsn = _postgres_dsn(request.getfixturevalue("postgres_dsn"))

        def factory() -> SessionStore:
            made.append(PostgresStore(dsn, max_size=4))
            return made[-1]

    yield factory
    for store in made:
        store.close()


class Gate:
    """Holds one store call: ``entered`` is set once the call is waiting,
    ``release`` lets it go on (or raise ``fail``), ``done`` is set when it
    has returned."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.done = threading.Event()
        self.fail = fail


class HeldStore:
    """A real store whose next call of a chosen method waits at a gate, as
    a slow disk or network would hold it."""

    def __init__(self, store: SessionStore) -> None:
        self.inner = store
        self._gates: dict[str, Gate] = {}

    def hold(self, method: str, fail: BaseException | None = None) -> Gate:
        gate = Gate(fail)
        self._gates[method] = gate
        return gate

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            gate = self._gates.pop(name, None)
            if gate is None:
                return real(*args, **kwargs)
            try:
                gate.entered.set()
                assert gate.release.wait(10), "the test never released the gate"
                if gate.fail is not None:
                    raise gate.fail
                return real(*args, **kwargs)
            finally:
                gate.done.set()

        return call


class Awaiting:
    """Makes a blocking driver or session look async, so one scenario
    runs under every driver. Blocking calls run inline."""

    def __init__(self, target: Any) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return attr

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            return Awaiting(result) if isinstance(result, blocking_driver.Session) else result

        return call


Scenario = Callable[..., Awaitable[None]]


def _driver(module: Any, config: Any) -> Any:
    return module.Driver(**config) if isinstance(config, dict) else module.Driver(config)


def run_scenario(kind: str, scenario: Scenario, *configs: Any) -> None:
    """Run ``scenario(driver, ...)`` with one driver of ``kind`` per config:
    a store, or a dict of the driver's keyword arguments."""
    if kind == "asyncio":
        asyncio.run(scenario(*[_driver(asyncio_driver, c) for c in configs]))
    elif kind == "trio":
        trio.run(scenario, *[_driver(trio_driver, c) for c in configs])
    else:
        drivers = [_driver(blocking_driver, c) for c in configs]
        try:
            asyncio.run(scenario(*[Awaiting(d) for d in drivers]))
        finally:
            for driver in drivers:
                driver.close()


class Probe:
    """A real store that counts the calls made of it, and fails the next
    call of a method when told to."""

    def __init__(self, inner: SessionStore) -> None:
        self.inner = inner
        self.calls: Counter[str] = Counter()
        self.failures: dict[str, BaseException] = {}

    def __getattr__(self, name: str) -> Any:
        real = getattr(self.inner, name)
        if not callable(real):
            return real

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            failure = self.failures.pop(name, None)
            if failure is not None:
                raise failure
            return real(*args, **kwargs)

        return call

    def reads(self) -> dict[str, int]:
        """The calls made since the last look, then forgets them."""
        seen = dict(self.calls)
        self.calls.clear()
        return seen
