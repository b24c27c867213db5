"""Time-driven behaviour of the real daemon, with thresholds of a second or two."""

from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from task_pulse.store import TaskStore
from tests.conftest import Daemon, clean_env, kinds, read_notifications, run_tp, wait_for

FAST = clean_env(TASK_PULSE_STALL="1", TASK_PULSE_PROGRESS_INTERVAL="2")


def create(tasks_dir: Path, name: str = "Slow", *extra: str) -> str:
    return run_tp(tasks_dir, "create", *extra, name, "a", "b", env=FAST).stdout.strip()


def hold_still(seconds: float) -> None:
    """Let time pass on purpose: what is under test is that nothing more happens meanwhile."""
    time.sleep(seconds)


def test_stalled_once_per_episode_then_resumed(tasks_dir: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tasks_dir, env=FAST).start()
    daemons.append(d)
    task_id = create(tasks_dir)
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started", "stalled"], 30, "stalled")
    hold_still(2.5)
    assert kinds(tasks_dir, task_id) == ["started", "stalled"]
    run_tp(tasks_dir, "heartbeat", task_id, env=FAST)
    wait_for(lambda: kinds(tasks_dir, task_id)[2:3] == ["resumed"], 30, "resumed")
    # a new episode after the resume is flagged again, once
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started", "stalled", "resumed", "stalled"], 30, "second stall")
    stall = next(n for n in read_notifications(tasks_dir) if n["kind"] == "stalled")
    assert stall["text"].startswith("⚠️ 【Slow】可能卡住了")
    assert json.loads(run_tp(tasks_dir, "status", task_id, "--json", env=FAST).stdout)["stalled"] is True


def test_stall_lands_soon_after_the_deadline(tasks_dir: Path, daemons: list[Daemon]) -> None:
    daemons.append(Daemon(tasks_dir, env=FAST).start())
    task_id = create(tasks_dir, "Timed", "--stall", "2")
    updated = datetime.fromisoformat(json.loads((tasks_dir / f"{task_id}.json").read_text())["updatedAt"])
    wait_for(lambda: "stalled" in kinds(tasks_dir, task_id), 30, "stalled")
    note = next(n for n in read_notifications(tasks_dir) if n["kind"] == "stalled")
    obj = json.loads(run_tp(tasks_dir, "drain", "--json", env=FAST).stdout.splitlines()[-1])
    assert obj["key"] == note["key"]
    created = datetime.fromisoformat(obj["createdAt"])
    assert created > updated + timedelta(seconds=2)  # never early (the per-task threshold is 2 s here)


def test_restart_during_a_stall_does_not_repeat_it(tasks_dir: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tasks_dir, env=FAST).start()
    daemons.append(first)
    task_id = create(tasks_dir)
    wait_for(lambda: "stalled" in kinds(tasks_dir, task_id), 30, "stalled")
    first.kill()
    second = Daemon(tasks_dir, env=FAST).start()
    daemons.append(second)
    hold_still(2)
    assert kinds(tasks_dir, task_id) == ["started", "stalled"]
    run_tp(tasks_dir, "next", task_id, env=FAST)
    after = ["started", "stalled", "resumed", "step_done"]
    wait_for(lambda: kinds(tasks_dir, task_id)[:4] == after, 30, "resumed after restart")
    # The new step stalls a second later (1 s threshold): a slow machine may see that stall too, but no other.
    assert kinds(tasks_dir, task_id) in (after, [*after, "stalled"])


def test_a_task_that_went_stale_while_down_is_flagged_at_startup(tasks_dir: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tasks_dir, env=clean_env(TASK_PULSE_STALL="30")).start()
    daemons.append(first)
    task_id = create(tasks_dir)
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started"], 30, "started")
    assert first.stop() == 0
    hold_still(1.2)
    daemons.append(Daemon(tasks_dir, env=FAST).start())
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started", "stalled"], 30, "stalled right after startup")


def test_twelve_heartbeats_in_one_window(tasks_dir: Path, daemons: list[Daemon]) -> None:
    # The heartbeats are written in-process (TaskStore, what `task-pulse heartbeat` does): twelve take a few
    # milliseconds even on a loaded machine, so they surely fall in one 3 s window.
    window = 3
    env = clean_env(TASK_PULSE_STALL="60", TASK_PULSE_PROGRESS_INTERVAL=str(window))
    daemons.append(Daemon(tasks_dir, env=env).start())
    task_id = create(tasks_dir)
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started"], 30, "started")
    store = TaskStore(tasks_dir)
    start = time.monotonic()
    for i in range(12):
        store.update(task_id, lambda t, i=i: t.touch(f"beat {i}"), datetime.now(UTC))
    assert time.monotonic() - start < window / 2, "12 heartbeats must fit in one window for this test to mean anything"
    wait_for(lambda: any(n["data"].get("message") == "beat 11" for n in read_notifications(tasks_dir)),
             window + 30, "the last message")
    hold_still(window + 0.5)  # a second flush would come one window after the first
    progress = [n["data"]["message"] for n in read_notifications(tasks_dir) if n["kind"] == "progress"]
    assert len(progress) <= 2 and progress[-1] == "beat 11"


def test_cleanup_removes_old_finished_tasks_and_keeps_running_ones(tasks_dir: Path, daemons: list[Daemon]) -> None:
    old = (datetime.now(UTC) - timedelta(days=8)).isoformat()
    (tasks_dir / "old-done.json").write_text(json.dumps(
        {"taskName": "Old", "status": "done", "startedAt": old, "updatedAt": old, "finishedAt": old,
         "steps": [{"name": "a", "status": "done"}]}))
    (tasks_dir / "old-running.json").write_text(json.dumps(
        {"taskName": "Still", "status": "running", "startedAt": old, "updatedAt": old,
         "steps": [{"name": "a", "status": "running"}]}))
    recent = datetime.now(UTC).isoformat()
    (tasks_dir / "recent-done.json").write_text(json.dumps(
        {"taskName": "Recent", "status": "done", "startedAt": recent, "finishedAt": recent,
         "steps": [{"name": "a", "status": "done"}]}))
    d = Daemon(tasks_dir, "--cleanup-interval", "1").start()  # cleanup runs at startup, then every second
    daemons.append(d)
    wait_for(lambda: not (tasks_dir / "old-done.json").exists(), 30, "old task removed")
    assert (tasks_dir / "old-running.json").exists() and (tasks_dir / "recent-done.json").exists()
    wait_for(lambda: "cleanup: 1 finished task removed" in d.log(), 30, "cleanup logged")
    db_rows = run_tp(tasks_dir, "status", "--json").stdout
    assert {t["taskId"] for t in json.loads(db_rows)} == {"old-running", "recent-done"}
    assert d.alive() and os.path.exists(tasks_dir / ".pulse" / "state.db")
