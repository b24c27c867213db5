"""History, ETA, budgets and learned stall thresholds through the real daemon and the real commands.

Past runs are files with timestamps in the past, written whole (as a sub-agent or a restore would), or
runs the daemon watches as they go; time-driven rules run with thresholds of a second or two.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from task_pulse.model import Task
from task_pulse.store import TaskStore
from tests.conftest import Daemon, clean_env, kinds, read_notifications, run_tp, wait_for
from tests.test_card import Chat, is_card, openclaw_daemon

STEPS = ("fetch", "filter", "write")
DURATIONS = [(60, 120, 300), (66, 110, 320), (55, 130, 280)]  # medians 60 + 120 + 300


def past_run(tasks_dir: Path, task_id: str, name: str, days_ago: float, durations: tuple[float, ...],
             steps: tuple[str, ...] = STEPS) -> None:
    """A finished run written whole, as it ended `days_ago` days ago."""
    start = datetime.now(UTC) - timedelta(days=days_ago, seconds=sum(durations))
    at, written = start, []
    for step, seconds in zip(steps, durations, strict=True):
        written.append({"name": step, "status": "done", "startedAt": at.isoformat(),
                        "finishedAt": (at + timedelta(seconds=seconds)).isoformat()})
        at += timedelta(seconds=seconds)
    (tasks_dir / f"{task_id}.json").write_text(json.dumps(
        {"taskId": task_id, "taskName": name, "status": "done", "startedAt": start.isoformat(),
         "updatedAt": at.isoformat(), "finishedAt": at.isoformat(), "steps": written, "result": "ok"}))


def history(tasks_dir: Path, name: str | None = None, env: dict[str, str] | None = None) -> Any:
    out = run_tp(tasks_dir, "history", *([name] if name else []), "--json", env=env, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else None


def runs_of(tasks_dir: Path, name: str) -> int:
    found = history(tasks_dir, name)
    return len(found["runs"]) if found else 0


def status_of(tasks_dir: Path, task_id: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    return json.loads(run_tp(tasks_dir, "status", task_id, "--json", env=env).stdout)


def test_eta_for_a_fourth_run_after_three_runs_written_as_past_files(tmp_path: Path, tasks_dir: Path,
                                                                    daemons: list[Daemon]) -> None:
    chat = Chat(tmp_path)
    daemons.append(openclaw_daemon(tasks_dir, chat, TASK_PULSE_LANG="en").start())
    for n, durations in enumerate(DURATIONS):
        past_run(tasks_dir, f"daily-{n}", "Daily", 3 - n, durations)
    wait_for(lambda: runs_of(tasks_dir, "Daily") == 3, 30, "three runs in the history")
    before = status_of(tasks_dir, "daily-0")
    assert before["etaSeconds"] is None  # an ended task has nothing left
    task_id = run_tp(tasks_dir, "create", "Daily", *STEPS).stdout.strip()
    eta = status_of(tasks_dir, task_id)["etaSeconds"]
    assert 470 <= eta <= 480  # the steps' medians, less the few seconds fetch has run
    assert "· ≈ 8m left" in run_tp(tasks_dir, "--lang", "en", "status").stdout
    card = wait_for(lambda: next((s["text"] for s in chat.sends() if is_card(s["text"], "Daily")
                                  and "left" in s["text"]), None), 30, "the fourth run's card")
    assert card.split("\n")[0].endswith(" · ≈ 8m left")


def test_one_overdue_notice_for_a_step_past_its_budget_while_it_heartbeats(tasks_dir: Path,
                                                                          daemons: list[Daemon]) -> None:
    env = clean_env(TASK_PULSE_STALL="60")
    daemons.append(Daemon(tasks_dir, env=env).start())
    task_id = run_tp(tasks_dir, "create", "--step-budget", "load=1", "Import", "load", "index", env=env).stdout.strip()
    store = TaskStore(tasks_dir)

    def heartbeat_until(done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline:
            store.update(task_id, lambda t: t.touch("loading"), datetime.now(UTC))
            time.sleep(0.2)

    heartbeat_until(lambda: "overdue" in kinds(tasks_dir, task_id), 30)
    assert status_of(tasks_dir, task_id, env)["overdue"] is True
    told = time.monotonic()
    heartbeat_until(lambda: time.monotonic() - told > 2, 3)  # it goes on past its budget, alive
    assert kinds(tasks_dir, task_id).count("overdue") == 1 and "stalled" not in kinds(tasks_dir, task_id)
    note = next(n for n in read_notifications(tasks_dir) if n["kind"] == "overdue")
    assert note["text"].startswith("⏰ 【Import】load超时（已用") and note["text"].endswith("，预算1秒）")
    run_tp(tasks_dir, "next", task_id, env=env)
    run_tp(tasks_dir, "done", task_id, env=env)
    wait_for(lambda: kinds(tasks_dir, task_id)[-1:] == ["done"], 30, "done")
    assert kinds(tasks_dir, task_id).count("overdue") == 1


def hold_still(seconds: float) -> None:
    """Let a step stay silent on purpose: its silence is what the test is about."""
    time.sleep(seconds)


@pytest.mark.slow
def test_stall_thresholds_learned_from_watched_runs(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """`busy` heartbeats every 0.2 s, `quiet` is always silent 2 s: with a 1 s default threshold, three
    watched runs teach `quiet` a threshold of its own; `busy`, never that silent, keeps the default; an
    explicit stallSeconds wins over what was learned."""
    env = clean_env(TASK_PULSE_STALL="1", TASK_PULSE_LANG="en")
    daemons.append(Daemon(tasks_dir, env=env).start())
    store = TaskStore(tasks_dir)

    def write(task_id: str, change: Callable[[Task, str], object]) -> None:
        store.update(task_id, lambda t: change(t, datetime.now(UTC).isoformat()), datetime.now(UTC))

    def busy_then_quiet(task_id: str, busy_silence: float = 0.0) -> None:
        for _ in range(3):
            time.sleep(0.2)
            write(task_id, lambda t, _now: t.touch())
        if busy_silence:
            hold_still(busy_silence)
            write(task_id, lambda t, _now: t.touch())
        write(task_id, lambda t, now: t.advance(now))
        wait_for(lambda: "step_done" in kinds(tasks_dir, task_id), 30, "quiet running")

    for n in range(3):
        task_id = store.create("Nightly", ["busy", "quiet"], datetime.now(UTC)).task_id
        busy_then_quiet(task_id)
        hold_still(2)
        write(task_id, lambda t, now: t.finish(now))
        wait_for(lambda n=n: runs_of(tasks_dir, "Nightly") == n + 1, 30, "the run recorded")
    learned = history(tasks_dir, "Nightly", env)
    assert all(r["steps"][1]["silenceSeconds"] >= 2 for r in learned["runs"])
    assert learned["steps"][1]["stallSource"] == "learned" and learned["steps"][0]["stallSource"] == "default"

    fourth = store.create("Nightly", ["busy", "quiet"], datetime.now(UTC)).task_id
    busy_then_quiet(fourth, busy_silence=3.5)  # busy was never silent that long: a stall
    assert kinds(tasks_dir, fourth) == ["started", "stalled", "resumed", "step_done"]
    shown = status_of(tasks_dir, fourth, env)
    assert shown["stallThresholdSource"] == "learned" and shown["stallThresholdSeconds"] >= 3
    assert "(learned)" in run_tp(tasks_dir, "status", env=env).stdout
    hold_still(2)  # as silent as quiet always is: no stall now
    write(fourth, lambda t, now: t.finish(now))
    wait_for(lambda: kinds(tasks_dir, fourth)[-1:] == ["done"], 30, "done")
    assert kinds(tasks_dir, fourth) == ["started", "stalled", "resumed", "step_done", "done"]

    fifth = store.create("Nightly", ["busy", "quiet"], datetime.now(UTC), stall_seconds=1).task_id
    busy_then_quiet(fifth)
    wait_for(lambda: "stalled" in kinds(tasks_dir, fifth), 30, "the explicit threshold's stall")
    assert status_of(tasks_dir, fifth, env)["stallThresholdSource"] == "explicit"
    stall = [n for n in read_notifications(tasks_dir) if n["task_id"] == fifth and n["kind"] == "stalled"]
    assert [n["data"]["step"] for n in stall] == ["quiet"]


def test_history_survives_cleanup_and_a_restart(tasks_dir: Path, daemons: list[Daemon]) -> None:
    first = Daemon(tasks_dir).start()
    daemons.append(first)
    for n, durations in enumerate(DURATIONS):
        past_run(tasks_dir, f"daily-{n}", "Daily", 3 - n, durations)
    wait_for(lambda: runs_of(tasks_dir, "Daily") == 3, 30, "three runs in the history")
    assert "3" in run_tp(tasks_dir, "cleanup", "--days", "0").stdout
    assert not list(tasks_dir.glob("*.json"))
    wait_for(lambda: "daily-2: file removed" in first.log(), 30, "the files seen gone")
    assert first.stop() == 0
    daemons.append(Daemon(tasks_dir).start())
    assert runs_of(tasks_dir, "Daily") == 3
    task_id = run_tp(tasks_dir, "create", "Daily", *STEPS).stdout.strip()
    assert status_of(tasks_dir, task_id)["etaSeconds"] is not None


def test_history_is_bounded_per_name_and_by_age(tasks_dir: Path, daemons: list[Daemon]) -> None:
    for n in range(5):
        past_run(tasks_dir, f"daily-{n}", "Daily", 5 - n, DURATIONS[n % 3])
    past_run(tasks_dir, "old-0", "Old", 10, DURATIONS[0])
    # A first start adopts the files silently, and records the runs of those that ended.
    daemons.append(Daemon(tasks_dir, "--history-runs", "3", "--history-days", "7", "--cleanup-interval", "1").start())
    wait_for(lambda: runs_of(tasks_dir, "Daily") == 3 and history(tasks_dir, "Old") is None, 30, "the bounds kept")
    assert [r["taskId"] for r in history(tasks_dir, "Daily")["runs"]] == ["daily-4", "daily-3", "daily-2"]
    assert [row["name"] for row in history(tasks_dir)] == ["Daily"]
    assert kinds(tasks_dir) == []  # adopted: nothing told


@pytest.mark.xdist_group("postgresql")
def test_history_is_forwarded_to_the_shared_database(tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    pytest.importorskip("psycopg")
    import psycopg

    from tests.test_shared import host_daemon

    tasks_dir = tmp_path / "gamma"
    daemons.append(host_daemon(tasks_dir, pg_url, "gamma").start())
    for n, durations in enumerate(DURATIONS):
        past_run(tasks_dir, f"daily-{n}", "Shared daily", 3 - n, durations)

    def shared_runs() -> int:
        with psycopg.connect(pg_url) as conn:
            row = conn.execute("SELECT count(*) FROM task_pulse.runs WHERE host = 'gamma'").fetchone()
            return int(row[0]) if row else 0

    wait_for(lambda: shared_runs() == 3, 30, "the runs in the shared database")
    task_id = run_tp(tasks_dir, "create", "Shared daily", *STEPS).stdout.strip()

    def shared_eta() -> Any:
        out = run_tp(tasks_dir, "status", "--all-hosts", "--state", pg_url, "--json").stdout
        return next((t["etaSeconds"] for t in json.loads(out) if t["taskId"] == task_id and t["host"] == "gamma"),
                    None)

    assert wait_for(shared_eta, 30, "the ETA from the shared database") > 400
