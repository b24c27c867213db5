"""What someone holding a task's lock can do: make one call wait a bounded time, never stop the rest."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import Daemon, clean_env, kinds, run_tp, wait_for

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
