"""A real PostgreSQL server for the tests that share one outbox between daemons.

Debian's `postgresql` package gives `initdb` and `pg_ctl` (in /usr/lib/postgresql/<version>/bin); the
tests make a cluster of their own in a temp dir, listening on a free port of 127.0.0.1 with trust
authentication, run by an unprivileged account (`nobody` when the tests run as root: PostgreSQL
refuses to run as root). Each test gets a database of its own. `TASK_PULSE_TEST_PG_URL` points the
tests at a server already running instead (the tests that stop the server are then skipped).
Without either the tests skip, saying how to set it up. The tests of roles (tests/test_shared_roles.py) make
login roles of their own on the tests' own server only, and drop them; the group roles `task_pulse_host` and
`task_pulse_deliverer` stay with the cluster, which is removed after the session.
"""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

SETUP_HINT = ("needs PostgreSQL: install Debian's postgresql package (apt-get install postgresql) so that initdb "
              "and pg_ctl exist, or set TASK_PULSE_TEST_PG_URL to a server the tests may create databases on")


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PgServer:
    """A cluster in a temp dir: `start`, `stop` (fast shutdown: connections are cut), `new_database`."""

    def __init__(self, base: Path) -> None:
        initdb, self.pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
        if initdb is None or self.pg_ctl is None:
            pytest.skip(SETUP_HINT)
        self.data = base / "data"
        self.port = free_port()
        self.as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(base, "nobody")
            os.chmod(base, 0o700)
        self.log = base / "server.log"
        self._names = itertools.count()
        self._run([initdb, "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"])
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{base}'\n"
                       "fsync = off\nmax_connections = 200\n")
        self.start()

    def _run(self, argv: list[str]) -> None:
        proc = subprocess.run([*self.as_user, *argv], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            pytest.skip(f"{SETUP_HINT} ({' '.join(argv[:2])} failed: {proc.stderr.strip()[-300:]})")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        assert self.pg_ctl is not None
        self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "start"])

    def stop(self) -> None:
        assert self.pg_ctl is not None
        self._run([self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop"])

    def new_database(self) -> str:
        name = f"tp_{os.getpid()}_{next(self._names)}"
        create_database(self.url(), name)
        return self.url(name)


def create_database(admin_url: str, name: str) -> None:
    import psycopg

    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer | None]:
    """The tests' own server; None when TASK_PULSE_TEST_PG_URL names one already running."""
    pytest.importorskip("psycopg", reason="needs psycopg: pip install -e '.[test]'")
    if os.environ.get("TASK_PULSE_TEST_PG_URL"):
        yield None
        return
    base = Path(tempfile.mkdtemp(prefix="tp-pg-"))
    server = PgServer(base)
    try:
        yield server
    finally:
        with_timeout = [*server.as_user, server.pg_ctl or "pg_ctl", "-D", str(server.data), "-m", "immediate", "stop"]
        subprocess.run(with_timeout, capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)


_external = itertools.count()


@pytest.fixture
def pg_url(pg_server: PgServer | None) -> str:
    """A new, empty database on the tests' server."""
    if pg_server is not None:
        return pg_server.new_database()
    admin = os.environ["TASK_PULSE_TEST_PG_URL"]
    name = f"tp_{os.getpid()}_{int(time.time())}_{next(_external)}"
    create_database(admin, name)
    return admin.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def own_pg_server(pg_server: PgServer | None) -> PgServer:
    """The tests' own server, for tests that stop and start it (skipped against an external one)."""
    if pg_server is None:
        pytest.skip("stops the server: not done to one given by TASK_PULSE_TEST_PG_URL")
    return pg_server
