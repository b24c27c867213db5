"""task-pulse as a drop-in for the original Live Task Pulse: its writer beside the real daemon.

The original script writes task files in place (`open('w')` + `json.dump`); `standins/original_writer.py`
writes them the same way, in its own process, and can stop half way through a write.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tests.conftest import Daemon, clean_env, kinds, read_notifications, run_tp, wait_for

ORIGINAL = Path(__file__).parent / "standins" / "original_writer.py"


def original(tasks_dir: Path, *args: str) -> str:
    """Run the original-style writer; its stdout."""
    proc = subprocess.run([sys.executable, str(ORIGINAL), *args], capture_output=True, text=True, timeout=60,
                          env=clean_env(TASK_PULSE_DIR=str(tasks_dir)))
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_a_slow_in_place_writer_is_not_reported_broken(tasks_dir: Path, daemon: Daemon) -> None:
    """Files left empty or half written for 0.6 s (past the daemon's settle delay) by writers that stop mid-write.

    Each of 4 tasks is created empty-then-paused, advanced with a pause half way, and finished the same way.
    Nothing is `invalid`; every task gets exactly its notifications.
    """
    def one(i: int) -> str:
        task_id = original(tasks_dir, "--pause", "0.6", "--at", "0", "create", f"慢写{i}", "抓取", "筛选", "发布")
        original(tasks_dir, "--pause", "0.6", "next", task_id, f"抓取了{i}条")
        original(tasks_dir, "--pause", "0.6", "next", task_id)
        original(tasks_dir, "--pause", "0.6", "done", task_id, "已发布")
        return task_id

    with ThreadPoolExecutor(4) as pool:
        ids = list(pool.map(one, range(4)))
    expected = ["started", "step_done", "step_done", "done"]  # 发布 is finished by `done`: one message
    for task_id in ids:
        wait_for(lambda t=task_id: kinds(tasks_dir, t) == expected, 30, f"{task_id}: {expected}")
    assert "invalid" not in kinds(tasks_dir)
    texts = [n["text"] for n in read_notifications(tasks_dir) if n["task_id"] == ids[0]]
    assert texts[1] == "✅ 【慢写0】抓取完成（抓取了0条）\n🔄 已完成 1/3 → 筛选"
    assert texts[2] == "✅ 【慢写0】筛选完成\n🔄 已完成 2/3 → 发布"
    assert texts[3].startswith("🎉 【慢写0】完成！（") and texts[3].endswith("秒）\n结果: 已发布")


def test_a_file_closed_broken_is_still_reported(tasks_dir: Path, daemon: Daemon) -> None:
    """The other side of the rule above: once its writer has closed it, a broken file is `invalid`."""
    with (tasks_dir / "half.json").open("w") as fh:
        fh.write('{"taskName": "x", "status": ')
    wait_for(lambda: kinds(tasks_dir) == ["invalid"], 30, "invalid")


def test_a_broken_file_moved_or_linked_in_whole_is_reported(tasks_dir: Path, tmp_path: Path, daemon: Daemon) -> None:
    """`jq … > /tmp/t && mv /tmp/t tasks/x.json`: arriving whole (reported as created), it has no writer to wait for."""
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "moved.json").write_text('{"taskName": "x", "status": "running"}')  # no steps
    (outside / "linked.json").write_text('{"taskName": "y", "status": "sideways", "steps": []}')
    os.rename(outside / "moved.json", tasks_dir / "moved.json")
    os.link(outside / "linked.json", tasks_dir / "linked.json")
    wait_for(lambda: sorted(n["data"]["file"] for n in read_notifications(tasks_dir)) == ["linked.json", "moved.json"],
             10, "both reported")


def test_a_file_deleted_and_put_back_is_not_news(tasks_dir: Path, tmp_path: Path, daemons: list[Daemon]) -> None:
    """A sync tool or an editor removes the file and writes it back: not a new start, and the throttle holds."""
    daemon = Daemon(tasks_dir, "--progress-interval", "30").start()
    daemons.append(daemon)
    task_id = run_tp(tasks_dir, "create", "同步", "a", "b").stdout.strip()
    path = tasks_dir / f"{task_id}.json"
    run_tp(tasks_dir, "heartbeat", task_id, "m0")
    wait_for(lambda: kinds(tasks_dir) == ["started", "progress"], 30, "started, progress")
    for i in range(1, 4):
        copy = tmp_path / "copy.json"
        shutil.copy(path, copy)
        path.unlink()
        wait_for(lambda i=i: daemon.log().count("file removed") == i, 30, "the removal seen")
        data = json.loads(copy.read_text())
        data["steps"][0]["message"] = f"m{i}"  # the file comes back a little further on
        copy.write_text(json.dumps(data, ensure_ascii=False))
        os.replace(copy, path)
        wait_for(lambda i=i: f": m{i}（" in _held(tasks_dir, task_id), 30, f"m{i} held by the throttle")
    assert kinds(tasks_dir) == ["started", "progress"]  # no second start, no progress past the throttle
    assert daemon.log().count(": started ") == 1
    run_tp(tasks_dir, "next", task_id)
    wait_for(lambda: kinds(tasks_dir) == ["started", "progress", "step_done"], 30, "the next step")


def _held(tasks_dir: Path, task_id: str) -> str:
    """The text of the progress message the throttle holds back for the task ("" if none)."""
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db", timeout=30)
    try:
        row = db.execute("SELECT held FROM seen WHERE task_id = ?", (task_id,)).fetchone()
    finally:
        db.close()
    return json.loads(row[0])["text"] if row and row[0] else ""


def test_an_id_reused_after_its_file_was_removed_is_a_new_run(tasks_dir: Path, daemon: Daemon) -> None:
    run_tp(tasks_dir, "create", "--id", "nightly", "Nightly", "build")
    run_tp(tasks_dir, "done", "nightly")
    wait_for(lambda: kinds(tasks_dir) == ["started", "done"], 30, "the first run")
    (tasks_dir / "nightly.json").unlink()
    wait_for(lambda: "nightly: file removed" in daemon.log(), 30, "the removal seen")
    time.sleep(1.1)  # the new run's startedAt must differ from the first one's (stamps have microseconds; be sure)
    run_tp(tasks_dir, "create", "--id", "nightly", "Nightly", "build")
    wait_for(lambda: kinds(tasks_dir) == ["started", "done", "started"], 30, "the second run announced")


def test_heartbeats_after_the_last_next_keep_the_task_from_stalling(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """Between the last `next` and `done` the agent is still at work: its heartbeats count (stall threshold 2 s)."""
    daemon = Daemon(tasks_dir, "--stall", "2").start()
    daemons.append(daemon)
    task_id = run_tp(tasks_dir, "create", "收尾", "a").stdout.strip()
    run_tp(tasks_dir, "next", task_id)
    for _ in range(5):
        beat = run_tp(tasks_dir, "heartbeat", task_id, "收尾中")
        assert (beat.returncode, beat.stdout) == (0, "💓 ok\n")
        time.sleep(0.8)
    assert "stalled" not in kinds(tasks_dir, task_id)  # 4 s of heartbeats against a 2 s threshold
    stalled = wait_for(lambda: [n for n in read_notifications(tasks_dir) if n["kind"] == "stalled"], 30,
                       "the stall once the heartbeats stop")
    assert stalled[0]["text"].startswith("⚠️ 【收尾】可能卡住了（2秒无更新）")
    assert stalled[0]["text"].endswith("当前步骤: 步骤已全部完成（已完成 1/1）")


def test_task_pulse_rewriting_an_original_file_keeps_its_shape(tasks_dir: Path) -> None:
    """Null keys stay null, numbers stay as written; task-pulse adds only `rev`."""
    task_id = original(tasks_dir, "create", "日报", "抓取", "筛选")
    path = tasks_dir / f"{task_id}.json"
    raw = json.loads(path.read_text())
    raw["steps"][1].update(startedAt=None, finishedAt=None, message=None)
    raw["stallSeconds"] = 600
    path.write_text(json.dumps(raw, ensure_ascii=False, indent=2))
    run_tp(tasks_dir, "heartbeat", task_id, "进行中")
    after = json.loads(path.read_text())
    assert set(after) == set(raw) | {"rev"}
    assert after["finishedAt"] is None and after["error"] is None and after["result"] is None
    assert after["steps"][1] == {"name": "筛选", "status": "pending", "startedAt": None, "finishedAt": None,
                                 "message": None}
    assert '"stallSeconds": 600,' in path.read_text() or '"stallSeconds": 600\n' in path.read_text()


def test_mixed_writers_on_one_task_agree(tasks_dir: Path, daemon: Daemon) -> None:
    """The original script and task-pulse take turns on one file; the daemon tells each step once."""
    task_id = original(tasks_dir, "create", "混写", "a", "b", "c", "d")
    run_tp(tasks_dir, "next", task_id, "by task-pulse")
    original(tasks_dir, "next", task_id, "by the original")
    run_tp(tasks_dir, "next", task_id)
    original(tasks_dir, "done", task_id, "ok")
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started", "step_done", "step_done", "step_done", "done"], 30,
             "every step once")
    assert Counter(kinds(tasks_dir))["invalid"] == 0
