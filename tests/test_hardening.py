"""What someone holding a task's lock can do: make one call wait a bounded time, never stop the rest."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Daemon, clean_env, kinds, read_notifications, run_tp, wait_for
from tests.test_systemd import NotifySocket

HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(fd, fcntl.LOCK_EX)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
"""


@pytest.fixture
def hold_lock() -> Iterator[list[subprocess.Popen[str]]]:
    """Start processes that hold a task's lock (`hold(task_id)`); they are killed at the end."""
    holders: list[subprocess.Popen[str]] = []
    yield holders
    for p in holders:
        p.kill()
        p.wait(10)


def hold(holders: list[subprocess.Popen[str]], tasks_dir: Path, task_id: str, seconds: float = 300) -> None:
    locks = tasks_dir / ".pulse" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(locks / f"{task_id}.lock"), str(seconds)],
                            stdout=subprocess.PIPE, text=True)
    holders.append(proc)
    assert proc.stdout is not None and proc.stdout.readline() == "held\n"


def test_a_writer_waits_a_bounded_time_for_a_held_lock(tasks_dir: Path,
                                                       hold_lock: list[subprocess.Popen[str]]) -> None:
    task_id = run_tp(tasks_dir, "create", "Held", "a").stdout.strip()
    before = (tasks_dir / f"{task_id}.json").read_bytes()
    hold(hold_lock, tasks_dir, task_id)
    started = time.monotonic()
    proc = run_tp(tasks_dir, "heartbeat", task_id, "x", env=clean_env(TASK_PULSE_LOCK_TIMEOUT="0.5"), check=False)
    assert proc.returncode == 1 and time.monotonic() - started < 10
    assert proc.stderr.startswith(f"Error: task '{task_id}' is locked by another process for more than 0.5 s")
    assert (tasks_dir / f"{task_id}.json").read_bytes() == before
    hold_lock[0].kill()
    hold_lock[0].wait(10)
    assert run_tp(tasks_dir, "heartbeat", task_id, "x").stdout == "💓 ok\n"  # free again: it goes through


def test_a_held_lock_does_not_stop_the_daemon(tasks_dir: Path, daemons: list[Daemon],
                                              hold_lock: list[subprocess.Popen[str]]) -> None:
    """Cleanup skips an expired task whose lock someone holds: other tasks go on, SIGTERM is prompt."""
    ended = (datetime.now().astimezone() - timedelta(days=30)).isoformat()
    (tasks_dir / "old.json").write_text(json.dumps({"taskName": "old", "status": "done", "finishedAt": ended,
                                                     "steps": [{"name": "a", "status": "done"}]}))
    hold(hold_lock, tasks_dir, "old")
    d = Daemon(tasks_dir, "--cleanup-interval", "1").start()
    daemons.append(d)
    time.sleep(1.5)  # a cleanup round (every second) meets the held lock
    task_id = run_tp(tasks_dir, "create", "Fresh", "a").stdout.strip()
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started"], 10, "a new task announced while the lock is held")
    assert (tasks_dir / "old.json").exists()  # skipped, not waited for
    hold_lock[0].kill()
    hold_lock[0].wait(10)
    wait_for(lambda: not (tasks_dir / "old.json").exists(), 30, "removed by a later cleanup once the lock is free")
    hold(hold_lock, tasks_dir, task_id)
    started = time.monotonic()
    assert d.stop(timeout=15) == 0 and time.monotonic() - started < 10


def test_a_busy_state_db_degrades_the_daemon_but_never_stops_it(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """Another process holds the state db's write lock for longer than any busy timeout: the daemon
    keeps pinging the watchdog, says it is degraded in STATUS, and catches up once the lock is free."""
    notify = NotifySocket()
    pings: list[float] = []  # when each WATCHDOG=1 arrived

    def listen() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                message = notify.sock.recv(4096).decode()
                notify.messages.append(message)
                if "WATCHDOG=1" in message.splitlines():
                    pings.append(time.monotonic())
    stop = threading.Event()
    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    d = Daemon(tasks_dir, env=clean_env(NOTIFY_SOCKET="@" + notify.name, WATCHDOG_USEC="4000000"))
    daemons.append(d.start())
    blocker = sqlite3.connect(tasks_dir / ".pulse" / "state.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        task_id = run_tp(tasks_dir, "create", "while busy", "a").stdout.strip()

        def statuses() -> list[str]:
            return [line for m in list(notify.messages) for line in m.splitlines() if line.startswith("STATUS=")]
        wait_for(lambda: any("degraded" in s for s in statuses()), 30, "a degraded STATUS")
        busy_since = len(pings)
        wait_for(lambda: len(pings) - busy_since >= 5, 30, "watchdog pings while busy")
        gaps = [b - a for a, b in zip(pings[busy_since:], pings[busy_since + 1:], strict=False)]
        assert max(gaps) < 4.0, gaps  # within WATCHDOG_USEC: systemd would not kill it (nominal 2.5 s at most)
        assert d.alive() and kinds(tasks_dir, task_id) == []
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started"], 30, "the task announced once the lock is free")
    wait_for(lambda: "degraded" not in statuses()[-1], 30, "STATUS back to normal")
    assert "state database is busy" in d.log() and "usable again" in d.log()
    assert d.stop() == 0
    stop.set()
    listener.join(5)


def test_entries_that_cannot_be_tasks_are_reported_not_ignored(tasks_dir: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tasks_dir).start()
    daemons.append(d)
    long_name = "长" * 80 + ".json"  # 240 bytes of UTF-8: over the 200-byte id limit
    (tasks_dir / "folder.json").mkdir()
    (tasks_dir / long_name).write_text("{}")
    (tasks_dir / "back\\slash.json").write_text("{}")
    (tasks_dir / b"latin-\xe9.json".decode(errors="surrogateescape")).write_text("{}")

    def reasons() -> dict[str, str]:
        return {n["data"]["file"]: n["data"]["reason"] for n in read_notifications(tasks_dir) if n["kind"] == "invalid"}
    wait_for(lambda: len(reasons()) == 4, 30, "four invalid notices")
    got = reasons()
    assert got["folder.json"] == "not a regular file"
    assert "240 bytes, over the limit of 200" in got[long_name]
    assert "path separator" in got["back\\slash.json"] and "not valid UTF-8" in got["latin-\ufffd.json"]
    assert d.stop() == 0
    again = Daemon(tasks_dir).start()  # the scan at start finds them again: nothing told twice
    daemons.append(again)
    assert again.stop() == 0
    assert len([n for n in read_notifications(tasks_dir) if n["kind"] == "invalid"]) == 4


def test_a_daemon_started_on_a_busy_db_waits_and_stops_cleanly(tasks_dir: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tasks_dir).start()  # makes the state db
    daemons.append(first)
    assert first.stop() == 0
    blocker = sqlite3.connect(tasks_dir / ".pulse" / "state.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    try:
        d = Daemon(tasks_dir).start(wait_ready=False)
        daemons.append(d)
        wait_for(lambda: "state database is busy" in d.log(), 30, "the daemon waiting for the lock")
        assert d.stop() == 0
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    assert "ready:" not in d.log() and "Traceback" not in d.log()
