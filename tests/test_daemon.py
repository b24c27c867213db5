"""The real `task-pulsed` process on a real temp dir, driven by the real `task-pulse` command."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tests.conftest import BIN, Daemon, clean_env, kinds, read_notifications, run_tp, wait_for

STEPS = ("fetch", "filter", "write")
# create, next, next, done: the last step is finished by `done`, which says so in one message
FULL_RUN = ["started", "step_done", "step_done", "done"]


def create(tasks_dir: Path, name: str = "Daily", *steps: str) -> str:
    return run_tp(tasks_dir, "create", name, *(steps or STEPS)).stdout.strip()


def wait_kinds(tasks_dir: Path, task_id: str, expected: list[str], timeout: float = 30) -> None:
    try:
        wait_for(lambda: kinds(tasks_dir, task_id) == expected, timeout, str(expected))
    except AssertionError as exc:  # say what there is at the deadline, not what there was before the wait
        raise AssertionError(f"{exc}, have {kinds(tasks_dir, task_id)}") from None


def test_writer_verbs_at_a_human_pace(tasks_dir: Path, daemon: Daemon) -> None:
    task_id = create(tasks_dir)
    wait_kinds(tasks_dir, task_id, ["started"])
    run_tp(tasks_dir, "next", task_id, "25 items")
    wait_kinds(tasks_dir, task_id, ["started", "step_done"])
    run_tp(tasks_dir, "next", task_id)
    wait_kinds(tasks_dir, task_id, ["started", "step_done", "step_done"])
    run_tp(tasks_dir, "done", task_id, "published")
    wait_kinds(tasks_dir, task_id, FULL_RUN)
    texts = [n["text"] for n in read_notifications(tasks_dir)]
    assert texts[1] == "✅ 【Daily】fetch完成（25 items）\n🔄 已完成 1/3 → filter"
    assert texts[-1].startswith("🎉 【Daily】完成！") and texts[-1].endswith("结果: published")
    created_at = [n for n in read_notifications(tasks_dir)]
    assert len({n["key"] for n in created_at}) == len(created_at)


def test_writer_verbs_in_one_burst(tasks_dir: Path, daemon: Daemon) -> None:
    ids = [create(tasks_dir, f"burst {i}") for i in range(5)]
    for task_id in ids:
        run_tp(tasks_dir, "next", task_id)
        run_tp(tasks_dir, "next", task_id)
        run_tp(tasks_dir, "done", task_id)
    for task_id in ids:
        wait_kinds(tasks_dir, task_id, FULL_RUN)
    time.sleep(0.5)  # nothing more may trickle in after the full run (checked right below)
    assert all(kinds(tasks_dir, t) == FULL_RUN for t in ids)


def test_follows_an_in_place_writer_without_rev(tasks_dir: Path, daemon: Daemon) -> None:
    """The original script rewrites the file in place with open('w'), and knows nothing of rev."""
    path = tasks_dir / "legacy-20261124-093000.json"
    now = datetime.now(timezone(timedelta(hours=8))).isoformat()
    task = {"taskId": "legacy-20261124-093000", "taskName": "Legacy", "status": "running",
            "startedAt": now, "updatedAt": now,
            "finishedAt": None, "steps": [{"name": "a", "status": "running"}, {"name": "b", "status": "pending"}],
            "error": None, "result": None, "agent": "cron-7"}

    def save() -> None:
        task["updatedAt"] = datetime.now(timezone(timedelta(hours=8))).isoformat()
        with path.open("w") as fh:
            json.dump(task, fh, ensure_ascii=False, indent=2)

    save()
    wait_kinds(tasks_dir, path.stem, ["started"])
    task["steps"][0].update(status="done", message="ok")  # type: ignore[index]
    task["steps"][1]["status"] = "running"  # type: ignore[index]
    save()
    wait_kinds(tasks_dir, path.stem, ["started", "step_done"])
    task["steps"][1]["status"] = "done"  # type: ignore[index]
    task.update(status="done", finishedAt=datetime.now(timezone(timedelta(hours=8))).isoformat())
    save()
    wait_kinds(tasks_dir, path.stem, ["started", "step_done", "step_done", "done"])
    assert "invalid" not in kinds(tasks_dir)


def test_a_torn_in_place_write_is_not_reported_invalid(tasks_dir: Path, daemon: Daemon) -> None:
    task_id = create(tasks_dir)
    wait_kinds(tasks_dir, task_id, ["started"])
    path = tasks_dir / f"{task_id}.json"
    data = json.loads(path.read_text())
    data["steps"][0]["status"] = "done"
    data["steps"][1]["status"] = "running"
    text = json.dumps(data, ensure_ascii=False)
    with path.open("w") as fh:  # half a file for 50 ms, then the rest
        fh.write(text[: len(text) // 2])
        fh.flush()
        time.sleep(0.05)
        fh.write(text[len(text) // 2:])
    wait_kinds(tasks_dir, task_id, ["started", "step_done"])
    time.sleep(0.5)  # past the settle delay: the retry must not report anything
    assert kinds(tasks_dir) == ["started", "step_done"]


def test_a_broken_file_is_reported_once_and_the_daemon_lives(tasks_dir: Path, daemon: Daemon) -> None:
    broken = tasks_dir / "broken.json"
    broken.write_text('{"taskName": "x", "status": ')
    wait_for(lambda: kinds(tasks_dir) == ["invalid"], 30, "invalid")
    assert "broken.json" in read_notifications(tasks_dir)[0]["text"]
    broken.write_text('{"taskName": "x", "status": ')  # same content again: not repeated
    task_id = create(tasks_dir)
    wait_kinds(tasks_dir, task_id, ["started"])
    assert kinds(tasks_dir).count("invalid") == 1
    broken.write_text("[1, 2")  # broken another way: still the same spell, not repeated
    broken.write_text(json.dumps({"taskName": "x", "status": "running", "steps": [{"name": "a", "status": "running"}]}))
    wait_for(lambda: kinds(tasks_dir, "broken") == ["invalid", "started"], 30, "readable again")
    assert kinds(tasks_dir).count("invalid") == 1
    broken.write_text("[1, 2")  # broken again after it was readable: a new spell, told
    wait_for(lambda: kinds(tasks_dir).count("invalid") == 2, 30, "second invalid")
    assert broken.read_text() == "[1, 2"  # never modified
    assert daemon.alive()


def test_kill_9_writes_while_down_restart(tasks_dir: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tasks_dir).start()
    daemons.append(first)
    a = create(tasks_dir, "A")
    run_tp(tasks_dir, "next", a)
    wait_kinds(tasks_dir, a, ["started", "step_done"])
    first.kill()
    # while the daemon is down: a advances and finishes, b is created and advanced, c is created and removed
    run_tp(tasks_dir, "next", a, "while down")
    run_tp(tasks_dir, "done", a)
    b = create(tasks_dir, "B")
    run_tp(tasks_dir, "next", b)
    c = create(tasks_dir, "C")
    (tasks_dir / f"{c}.json").unlink()
    second = Daemon(tasks_dir).start()
    daemons.append(second)
    wait_kinds(tasks_dir, a, FULL_RUN)
    wait_kinds(tasks_dir, b, ["started", "step_done"])
    assert kinds(tasks_dir, c) == []
    notes = read_notifications(tasks_dir)
    assert len({n["key"] for n in notes}) == len(notes)
    assert Counter((n["task_id"], n["text"]) for n in notes).most_common(1)[0][1] == 1
    assert second.stop() == 0
    third = Daemon(tasks_dir).start()  # a clean restart with nothing changed repeats nothing
    daemons.append(third)
    assert third.stop() == 0
    assert read_notifications(tasks_dir) == notes


def test_a_second_daemon_on_the_same_dir_refuses(tasks_dir: Path, daemon: Daemon, daemons: list[Daemon]) -> None:
    second = Daemon(tasks_dir).start(wait_ready=False)
    daemons.append(second)
    assert second.proc is not None
    assert second.proc.wait(15) == 1
    assert f"already watching {tasks_dir}" in second.log()
    assert "Traceback" not in second.log()
    assert daemon.alive()


def test_sigterm_and_sigint_exit_cleanly(tasks_dir: Path, daemons: list[Daemon]) -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        d = Daemon(tasks_dir).start()
        daemons.append(d)
        assert d.proc is not None
        d.proc.send_signal(sig)
        assert d.proc.wait(15) == 0
        assert "stopped" in d.log() and "Traceback" not in d.log()


def test_first_start_adopts_existing_tasks_silently(tasks_dir: Path, daemons: list[Daemon]) -> None:
    old = create(tasks_dir, "Old")
    run_tp(tasks_dir, "next", old)
    d = Daemon(tasks_dir).start()
    daemons.append(d)
    run_tp(tasks_dir, "next", old)
    wait_kinds(tasks_dir, old, ["step_done"])  # only what happened after adoption
    assert read_notifications(tasks_dir)[0]["data"]["done"] == 2


def test_announce_existing_replays_them(tasks_dir: Path, daemons: list[Daemon]) -> None:
    old = create(tasks_dir, "Old")
    run_tp(tasks_dir, "next", old)
    daemons.append(Daemon(tasks_dir, "--announce-existing").start())
    wait_kinds(tasks_dir, old, ["started", "step_done"])


def test_a_deleted_task_is_forgotten_quietly(tasks_dir: Path, daemon: Daemon) -> None:
    task_id = create(tasks_dir)
    wait_kinds(tasks_dir, task_id, ["started"])
    (tasks_dir / f"{task_id}.json").unlink()
    wait_for(lambda: "file removed" in daemon.log(), 30, "removal logged")
    assert kinds(tasks_dir) == ["started"]


def test_drain_prints_then_marks_delivered(tasks_dir: Path, daemon: Daemon) -> None:
    task_id = create(tasks_dir)
    run_tp(tasks_dir, "next", task_id, "25 items")
    wait_kinds(tasks_dir, task_id, ["started", "step_done"])
    first = run_tp(tasks_dir, "drain", "--limit", "1")
    assert first.stdout == "🚀 开始【Daily】\n📋 fetch → filter → write\n🔄 当前: fetch\n\n"
    rest = run_tp(tasks_dir, "drain", "--json")
    (line,) = rest.stdout.splitlines()
    obj = json.loads(line)
    assert {k: obj[k] for k in ("taskId", "taskName", "kind", "done", "total", "step")} == {
        "taskId": task_id, "taskName": "Daily", "kind": "step_done", "done": 1, "total": 3, "step": "fetch"}
    assert {"seq", "key", "text", "createdAt"} <= obj.keys()
    assert "name" not in obj  # the template's field for taskName: said once, as taskName
    assert run_tp(tasks_dir, "drain").stdout == ""
    assert all(n["delivered_by"] == "drain" for n in read_notifications(tasks_dir))


def test_created_at_has_milliseconds(tasks_dir: Path, daemon: Daemon) -> None:
    task_id = create(tasks_dir)
    wait_kinds(tasks_dir, task_id, ["started"])
    obj = json.loads(run_tp(tasks_dir, "drain", "--json").stdout)
    assert len(obj["createdAt"]) == len("2026-11-24T09:30:00.123+00:00")


def test_python_dash_m_daemon_help() -> None:
    out = subprocess.run([sys.executable, "-m", "task_pulsed", "--help"], capture_output=True, text=True,
                         env={**os.environ}, timeout=30)
    assert out.returncode == 0 and "Example" in out.stdout


def test_a_relative_tasks_dir_is_watched(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_PULSE_")}
    log = (tmp_path / "daemon.log").open("wb")
    proc = subprocess.Popen([str(BIN / "task-pulsed"), "--dir", "rel"], cwd=tmp_path, stdout=log,
                            stderr=subprocess.STDOUT, env=env)
    try:
        wait_for(lambda: "ready:" in (tmp_path / "daemon.log").read_text(), 20, "ready")
        task_id = run_tp(tmp_path / "rel", "create", "Relative", "a").stdout.strip()
        wait_for(lambda: kinds(tmp_path / "rel", task_id) == ["started"], 30, "started, from the watcher")
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_a_tasks_dir_that_is_a_file_is_a_usage_error(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "tasks"
    not_a_dir.write_text("")
    proc = subprocess.run([str(BIN / "task-pulsed")], capture_output=True, text=True, timeout=60,
                          env=clean_env(TASK_PULSE_DIR=str(not_a_dir)))
    assert proc.returncode == 2 and f"TASK_PULSE_DIR='{not_a_dir}': must be a directory, not a file" in proc.stderr


def wal_frames(tasks_dir: Path) -> tuple[int, int]:
    """(frames in the WAL, frames of it copied back into the db), from the WAL index in `state.db-shm`
    (its header's mxFrame, and nBackfill after the header's two copies; native byte order)."""
    shm = (tasks_dir / ".pulse" / "state.db-shm").read_bytes()[:100]
    return int.from_bytes(shm[16:20], sys.byteorder), int.from_bytes(shm[96:100], sys.byteorder)


def test_the_wal_is_checkpointed_by_the_daemon_not_by_a_commit(tasks_dir: Path, daemon: Daemon) -> None:
    """Too few pages for SQLite's own checkpoint (1,000): only the daemon's checkpointer copies them."""
    for i in range(20):
        create(tasks_dir, f"burst {i}")
    wait_for(lambda: kinds(tasks_dir).count("started") == 20, 30, "20 started")
    wait_for(lambda: (lambda f: f[0] > 0 and f[0] == f[1])(wal_frames(tasks_dir)), 30, "the WAL checkpointed")


def test_status_of_many_tasks_is_taken_from_the_running_daemons_state_db(tasks_dir: Path, daemon: Daemon) -> None:
    """With a daemon running, `status` reads the counts and which tasks to show from its state db (only
    the files it shows are read); stopped, it reads every file."""
    now = datetime.now().astimezone().isoformat()
    for i in range(60):
        (tasks_dir / f"many-{i:02d}.json").write_text(json.dumps(
            {"taskName": f"Many {i}", "status": "running", "startedAt": now, "updatedAt": now,
             "steps": [{"name": "a", "status": "running"}]}))
    wait_for(lambda: len(kinds(tasks_dir)) == 60, 30, "every task seen")
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db", timeout=30)
    with db:  # the db says what no file says: the overview must come from it
        db.execute("UPDATE seen SET status = 'error' WHERE task_id = 'many-07'")
    db.close()
    lines = run_tp(tasks_dir, "status").stdout.splitlines()
    assert lines[-1] == "📊 🔄59 ⚠️0 ✅0 ❌1"
    assert lines[-3] == "…… 还有 10 个任务（全部: task-pulse status --all）"
    assert daemon.stop() == 0
    assert run_tp(tasks_dir, "status").stdout.splitlines()[-1] == "📊 🔄60 ⚠️0 ✅0 ❌0"
