"""Shared helpers: the real `task-pulse` / `task-pulsed` processes and polling with a deadline."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

# The PostgreSQL server fixtures (pg_server, pg_url, own_pg_server) for the tests of a shared outbox.
pytest_plugins = ["tests.postgres"]

BIN = Path(sys.executable).parent
T = TypeVar("T")


def original_file() -> dict[str, Any]:
    """A task as the original Live Task Pulse script writes it (no rev), plus fields other tools added."""
    return {
        "taskId": "日报发布-20261124-093000",
        "taskName": "日报发布",
        "status": "running",
        "startedAt": "2026-11-24T09:30:00+08:00",
        "updatedAt": "2026-11-24T09:31:10+08:00",
        "finishedAt": None,
        "steps": [
            {"name": "抓取", "status": "done", "startedAt": "2026-11-24T09:30:00+08:00",
             "finishedAt": "2026-11-24T09:31:00+08:00", "message": "抓取了25条数据", "source": "rss",
             "retries": [1, 2]},
            {"name": "筛选", "status": "running", "startedAt": "2026-11-24T09:31:00+08:00", "message": "已处理60%"},
            {"name": "写稿", "status": "pending", "owner": {"agent": "writer"}},
        ],
        "error": None,
        "result": None,
        "channel": "telegram",
        "meta": {"cron": "30 9 * * *", "tags": ["daily"]},
    }


def wait_for(predicate: Callable[[], T], timeout: float = 30.0, what: str = "condition") -> T:
    """Poll `predicate` until it returns something truthy; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


# Most tests run writers, `status` and `drain` on dirs no daemon watches, and hold their stderr to an
# exact text: the note that says so (tests/test_unwatched.py proves it) is turned off for them.
QUIET = {"TASK_PULSE_DAEMON_CHECK": "0"}
# Where a daemon with --openclaw looks for the gateway unless a test says otherwise: a port nothing listens on,
# so no test ever reaches a gateway that happens to run on this machine (and through it, someone's chat).
NO_GATEWAY = "ws://127.0.0.1:1"


@pytest.fixture(autouse=True)
def _no_unwatched_note(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process commands (CliRunner) of every test: no note about a missing daemon (see QUIET)."""
    monkeypatch.setenv("TASK_PULSE_DAEMON_CHECK", "0")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment for a child process, without any TASK_PULSE_* setting of the developer's (and without
    the note about a missing daemon, see QUIET), nor the developer's OpenClaw gateway."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("TASK_PULSE_", "OPENCLAW_GATEWAY_", "OPENCLAW_CONFIG_PATH"))}
    env.update(QUIET)
    env["OPENCLAW_GATEWAY_URL"] = NO_GATEWAY
    env.update(extra)
    return env


def run_tp(tasks_dir: Path, *args: str, env: dict[str, str] | None = None,
           check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the installed `task-pulse` on `tasks_dir`."""
    proc = subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), *args], capture_output=True,
                          text=True, env=env or clean_env(), timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"task-pulse {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def read_notifications(tasks_dir: Path) -> list[dict[str, Any]]:
    """Every row of the outbox, in queue order (empty when there is no database yet)."""
    db_path = tasks_dir / ".pulse" / "state.db"
    if not db_path.exists():
        return []
    db = sqlite3.connect(db_path, timeout=30)
    try:
        rows = db.execute("SELECT seq, key, task_id, kind, text, data, delivered_at, delivered_by "
                          "FROM notifications ORDER BY seq").fetchall()
    except sqlite3.OperationalError:  # schema not created yet
        return []
    finally:
        db.close()
    return [{"seq": r[0], "key": r[1], "task_id": r[2], "kind": r[3], "text": r[4], "data": json.loads(r[5]),
             "delivered_at": r[6], "delivered_by": r[7]} for r in rows]


def kinds(tasks_dir: Path, task_id: str | None = None) -> list[str]:
    return [n["kind"] for n in read_notifications(tasks_dir) if task_id is None or n["task_id"] == task_id]


# A `task-pulse drain --json` loop in its own process, until `idle` empty rounds in a row; prints the keys.
# With `until` (a path), a round only counts as idle if that file existed before it began: a test creates
# the file once every notification it expects is in the outbox, so the loop cannot stop while more may come.
_DRAIN_LOOP = """
import json, os, subprocess, sys, time
keys, idle = [], 0
until = sys.argv[5] if len(sys.argv) > 5 else None
while idle < int(sys.argv[4]):
    all_queued = until is None or os.path.exists(until)
    out = subprocess.run([sys.argv[1], "--dir", sys.argv[2], "drain", "--json", "--limit", sys.argv[3]],
                         capture_output=True, text=True, check=True).stdout
    got = [json.loads(line)["key"] for line in out.splitlines()]
    keys += got
    idle = 0 if got or not all_queued else idle + 1
    time.sleep(0.02)
print(json.dumps(keys))
"""


def start_drain_loop(tasks_dir: Path, limit: int, idle: int, until: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", _DRAIN_LOOP, str(BIN / "task-pulse"), str(tasks_dir), str(limit),
                             str(idle), *([str(until)] if until is not None else [])], stdout=subprocess.PIPE,
                            text=True, env=clean_env())


def drained_keys(loop: subprocess.Popen[str]) -> list[str]:
    out, _ = loop.communicate(timeout=180)
    assert loop.returncode == 0
    return json.loads(out)


class Daemon:
    """A real `task-pulsed` process on a tasks dir, its stderr kept in a log file."""

    def __init__(self, tasks_dir: Path, *args: str, env: dict[str, str] | None = None,
                 command: list[str] | None = None, **popen: Any) -> None:
        """`command` (instead of the installed `task-pulsed`) and `popen` (e.g. `user=`) run it another way."""
        self.tasks_dir, self.args, self.env = tasks_dir, args, env or clean_env()
        self.command, self.popen = command or [str(BIN / "task-pulsed")], popen
        self.log_path = tasks_dir.parent / f"daemon-{time.monotonic_ns()}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, wait_ready: bool = True) -> Daemon:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([*self.command, "--dir", str(self.tasks_dir), *self.args],
                                         stdout=log, stderr=subprocess.STDOUT, env=self.env, **self.popen)
        if wait_ready:
            wait_for(lambda: "ready:" in self.log() or self.proc.poll() is not None, 20, "daemon ready")
            assert self.proc.poll() is None, f"daemon exited early:\n{self.log()}"
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


@pytest.fixture
def tasks_dir(tmp_path: Path) -> Path:
    d = tmp_path / "tasks"
    d.mkdir()
    return d


@pytest.fixture
def daemons() -> Iterator[list[Daemon]]:
    """Append every Daemon you start; whatever is still running at the end is killed."""
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.alive():
            d.kill()


@pytest.fixture
def daemon(tasks_dir: Path, daemons: list[Daemon]) -> Daemon:
    d = Daemon(tasks_dir).start()
    daemons.append(d)
    return d
