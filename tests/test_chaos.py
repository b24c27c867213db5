"""Nothing lost, nothing repeated: the daemon killed at random, concurrent writers and drains, overflow.

Marked `slow` so they can be selected (`-m slow`) or left out (`-m "not slow"`); CI runs them all.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from task_pulse.model import parse_task
from tests.conftest import Daemon, clean_env, drained_keys, read_notifications, start_drain_loop, wait_for

pytestmark = pytest.mark.slow

# A writer process: advances its tasks through every step with small random pauses, like an agent.
WRITER = """\
import random, sys, time
from datetime import datetime, timezone
from task_pulse.store import TaskStore

root, prefix, tasks, steps, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])
store = TaskStore(root)
rng = random.Random(prefix)
now = lambda: datetime.now(timezone.utc)
ids = [store.create(f"{prefix}-{i}", [f"s{j}" for j in range(steps)], now(), task_id=f"{prefix}-{i}").task_id
       for i in range(tasks)]
for _ in range(steps - 1):
    for task_id in ids:
        store.update(task_id, lambda t: t.advance(now().isoformat(), f"{task_id} ok"), now())
        time.sleep(rng.uniform(0, pause))
for task_id in ids:
    store.update(task_id, lambda t: t.finish(now().isoformat(), "all done"), now())
"""


def start_writers(tmp_path: Path, tasks_dir: Path, processes: int, tasks: int, steps: int,
                  pause: float) -> list[subprocess.Popen[bytes]]:
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    return [subprocess.Popen([sys.executable, str(script), str(tasks_dir), f"w{p}", str(tasks), str(steps), str(pause)],
                             env=clean_env()) for p in range(processes)]


def expected_events(task_ids: list[str], steps: int) -> Counter[tuple[str, str, object]]:
    """What every task owes: started, one step_done per step `next` finished, done (which finishes the last)."""
    out: Counter[tuple[str, str, object]] = Counter()
    for task_id in task_ids:
        out[(task_id, "started", None)] += 1
        for j in range(steps - 1):
            out[(task_id, "step_done", f"s{j}")] += 1
        out[(task_id, "done", None)] += 1
    return out


def events(tasks_dir: Path) -> Counter[tuple[str, str, object]]:
    return Counter((n["task_id"], n["kind"], n["data"].get("step") if n["kind"] == "step_done" else None)
                   for n in read_notifications(tasks_dir))


def test_sigkill_at_random_moments_loses_and_repeats_nothing(tmp_path: Path, tasks_dir: Path,
                                                              daemons: list[Daemon]) -> None:
    env = clean_env(TASK_PULSE_STALL="3600")
    unlimited = ("--news-burst", "1000")  # 24 tasks start at once: told one by one, each (flood limits apart)
    rng = random.Random(7)
    processes, tasks, steps = 4, 6, 10  # 24 tasks, 12 notifications each, written over ~8 s
    daemons.append(Daemon(tasks_dir, *unlimited, env=env).start())
    # The writers must outlast most kill rounds even when restarting the daemon is slow (a loaded machine).
    writers = start_writers(tmp_path, tasks_dir, processes, tasks, steps, pause=0.3)
    kills = kills_mid_write = 0
    while kills < 8 or any(w.poll() is None for w in writers):
        time.sleep(rng.uniform(0.05, 0.5))
        kills_mid_write += any(w.poll() is None for w in writers)
        daemons[-1].kill()  # SIGKILL: no chance to finish anything
        kills += 1
        if rng.random() < 0.5:
            time.sleep(rng.uniform(0, 0.3))  # writes land while nobody watches
        daemons.append(Daemon(tasks_dir, *unlimited, env=env).start())
    assert all(w.wait(60) == 0 for w in writers)
    task_ids = [f"w{p}-{i}" for p in range(processes) for i in range(tasks)]
    expected = expected_events(task_ids, steps)
    wait_for(lambda: events(tasks_dir) == expected, 60, f"all {sum(expected.values())} notifications")
    notes = read_notifications(tasks_dir)
    assert len(notes) == sum(expected.values()) == 264
    assert len({n["key"] for n in notes}) == len(notes)  # by key
    assert max(Counter((n["task_id"], n["text"]) for n in notes).values()) == 1  # by content
    assert kills_mid_write >= 6
    print(f"\nchaos: {kills} SIGKILLs survived ({kills_mid_write} while writers were writing), "
          f"{len(notes)} notifications checked")


def test_sixteen_writers_a_daemon_and_two_drains(tmp_path: Path, tasks_dir: Path, daemon: Daemon) -> None:
    all_queued = tmp_path / "all-queued"  # the drains stop once this exists and they find nothing more
    drains = [start_drain_loop(tasks_dir, limit=9, idle=3, until=all_queued) for _ in range(2)]
    writers = start_writers(tmp_path, tasks_dir, processes=16, tasks=1, steps=11, pause=0.01)
    assert all(w.wait(120) == 0 for w in writers)
    expected = expected_events([f"w{p}-0" for p in range(16)], 11)
    wait_for(lambda: events(tasks_dir) == expected, 60, f"all {sum(expected.values())} notifications")
    all_queued.touch()
    drained = [drained_keys(d) for d in drains]
    notes = read_notifications(tasks_dir)
    assert len(notes) == 16 * 12
    assert events(tasks_dir) == expected
    union = drained[0] + drained[1]
    assert sorted(union) == sorted(n["key"] for n in notes)  # every notification, exactly once
    assert drained[0] and drained[1]
    print(f"\nconcurrency: 16 writers, 2 drains, {len(union)} notifications each delivered once")


def seen_table(tasks_dir: Path) -> dict[str, dict[str, object]]:
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db")
    try:
        rows = db.execute("SELECT task_id, snapshot FROM seen WHERE gone_at IS NULL")  # files still there
        return {tid: json.loads(snap) for tid, snap in rows}
    finally:
        db.close()


def disk_tasks(tasks_dir: Path) -> dict[str, dict[str, object]]:
    return {p.stem: parse_task(p.read_bytes(), p.stem).to_dict() for p in tasks_dir.glob("*.json")}


def test_inotify_overflow_is_caught_by_a_rescan(tasks_dir: Path, daemon: Daemon) -> None:
    assert daemon.proc is not None
    from datetime import UTC, datetime

    from task_pulse.store import TaskStore

    store = TaskStore(tasks_dir)
    now = lambda: datetime.now(UTC)  # noqa: E731
    before = [store.create(f"before {i}", ["a", "b"], now()).task_id for i in range(50)]
    wait_for(lambda: len(seen_table(tasks_dir)) == 50, 30, "50 tasks seen")
    daemon.proc.send_signal(signal.SIGSTOP)  # the kernel queue fills while nobody reads it
    try:
        for i in range(17_000):  # ~51,000 events (create, close-write, delete), far past the 16,384 queue
            junk = tasks_dir / f".junk-{i}"
            junk.write_bytes(b"")
            junk.unlink()
        for task_id in before[:25]:
            store.update(task_id, lambda t: t.advance(now().isoformat()), now())
        for task_id in before[25:35]:
            os.unlink(tasks_dir / f"{task_id}.json")
        after = [store.create(f"after {i}", ["x"], now()).task_id for i in range(20)]
    finally:
        daemon.proc.send_signal(signal.SIGCONT)
    wait_for(lambda: "inotify queue overflowed: rescanning" in daemon.log(), 30, "the overflow handler")
    wait_for(lambda: seen_table(tasks_dir) == disk_tasks(tasks_dir), 30, "seen table == disk")
    assert set(seen_table(tasks_dir)) == set(before[:25] + before[35:] + after)
    assert daemon.alive()
