"""Floods: the first few unreadable files (InvalidFlood), new tasks and stall alarms (NewsFlood) are told one by
one, the rest in one summary per window."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

from task_pulse.records import Notification
from task_pulsed.differ import NEWS_SUMMARY_ID, invalid_summary
from task_pulsed.flood import InvalidFlood, NewsFlood
from tests.conftest import Daemon, read_notifications, wait_for


def note(task_id: str) -> Notification:
    return Notification(key=f"{task_id}:invalid:x", task_id=task_id, task_name="", kind="invalid", text="…")


def tell(flood: InvalidFlood, now: float) -> bool:
    """What the worker does: ask, and count it when it was stored."""
    if flood.may_tell(now):
        flood.told()
        return True
    return False


def test_a_burst_then_one_summary_per_window() -> None:
    flood = InvalidFlood(burst=2, window=60)
    assert tell(flood, 1000) and tell(flood, 1010)
    assert not flood.may_tell(1020)
    assert flood.hold(note("a")) == 1060  # the first one held: schedule the summary at the window's end
    assert not flood.may_tell(1030) and flood.hold(note("b")) is None
    assert not flood.may_tell(1070) and flood.hold(note("a")) is None  # past the end, but no summary yet
    held = flood.held()
    assert [n.task_id for n in held] == ["a", "b"]  # one per file, latest notice
    assert flood.held() == held  # kept until the summary is stored
    flood.close()
    assert tell(flood, 1080) and tell(flood, 1081) and not flood.may_tell(1082)  # a new window
    assert flood.held() == []


def test_only_what_was_stored_counts() -> None:
    flood = InvalidFlood(burst=1, window=60)
    assert flood.may_tell(0) and flood.may_tell(1)  # a notice whose storing failed (a busy db) is asked again
    flood.told()
    assert not flood.may_tell(2)


def test_a_quiet_window_ends_by_itself() -> None:
    flood = InvalidFlood(burst=1, window=60)
    assert tell(flood, 0) and not flood.may_tell(59)
    assert flood.hold(note("a")) == 60
    flood.close()
    assert tell(flood, 61)
    assert tell(flood, 200)  # nothing held: a window older than 60 s is over


def test_the_summary_names_the_files_and_keeps_within_the_cap() -> None:
    files = [f"bad-{i:04d}.json" for i in range(300)]
    summary = invalid_summary(files, "1000.000", 5, 300, "en")
    assert summary.task_id == ".unreadable" and summary.kind == "invalid"
    assert summary.text.startswith("⚠️ Task file unreadable: 300 files: bad-0000.json, bad-0001.json")
    assert "more than 5 within 5m" in summary.text
    assert summary.data["files"] == files[:100]
    assert summary.key == invalid_summary(files, "1000.000", 5, 300, "en").key
    assert summary.key != invalid_summary(files, "1300.000", 5, 300, "en").key


# -- NewsFlood: new tasks (each a new card) and stall alarms -----------------------------------------------


def test_news_a_burst_of_each_kind_then_held_until_the_summary() -> None:
    flood = NewsFlood(burst=2, window=60)
    for _ in range(2):
        assert flood.may_tell("task", 1000)
        flood.told("task")
    assert not flood.may_tell("task", 1001) and flood.may_tell("stall", 1001)  # counted apart
    window, due, first = flood.hold(1002)
    assert window.startswith("flood:") and due == 1060 and first
    assert flood.hold(1070) == (window, 1060, False)  # past its end, but its summary is not stored yet
    assert not flood.may_tell("task", 1070)
    flood.close(window)
    assert flood.may_tell("task", 1071)  # a fresh window
    assert flood.hold(1072)[0] != window


def test_news_a_quiet_window_ends_by_itself() -> None:
    flood = NewsFlood(burst=1, window=60)
    assert flood.may_tell("task", 0)
    flood.told("task")
    assert not flood.may_tell("task", 10) and flood.may_tell("task", 200)


def flooding_tasks(tasks_dir: Path, count: int, stall: int) -> list[str]:
    """`count` valid task files written at once, each stalling after `stall` seconds (a co-user's flood)."""
    ids = [f"flood-{i:03d}" for i in range(count)]
    stamp = datetime.now(UTC).isoformat()
    for task_id in ids:
        (tasks_dir / f"{task_id}.json").write_text(json.dumps(
            {"taskName": f"Deploy prod {task_id}", "status": "running", "stallSeconds": stall, "startedAt": stamp,
             "updatedAt": stamp, "steps": [{"name": "push", "status": "running"}]}))
    return ids


def still_held(tasks_dir: Path) -> int:
    """Notifications a flood window holds (claimed by it) for a summary not made yet."""
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db", timeout=30)
    try:
        return db.execute("SELECT count(*) FROM notifications WHERE delivered_at IS NULL "
                          "AND claimed_by LIKE 'flood:%'").fetchone()[0]
    finally:
        db.close()


def test_a_flood_of_valid_tasks_is_a_few_messages_and_a_summary(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """60 valid tasks that each stall within 2 s: 5 cards and 5 stall alarms one by one per window, the rest in a
    summary per window; every notification told once, by itself or by a summary. (Unlimited, they were 120
    messages, and the chat's rate limits then held up the alarms that mattered.)"""
    d = Daemon(tasks_dir, "--news-burst", "5", "--news-window", "3", "--lang", "en").start()
    daemons.append(d)
    ids = flooding_tasks(tasks_dir, 60, 2)
    wait_for(lambda: len([n for n in read_notifications(tasks_dir) if n["task_id"] in ids]) == 120
             and still_held(tasks_dir) == 0, 60, "a start and a stall alarm of each task, told or summed up")
    rows = read_notifications(tasks_dir)
    summed_up = [n for n in rows if (n["delivered_by"] or "").startswith("summary:")]
    alone = [n for n in rows if n["task_id"] in ids and n not in summed_up]
    summaries = [n for n in rows if n["task_id"] == NEWS_SUMMARY_ID]
    windows = len(summaries)
    assert 1 <= windows <= 20, windows
    assert Counter(n["kind"] for n in alone) <= Counter({"started": 5 * windows, "stalled": 5 * windows})
    assert {n["delivered_by"] for n in summed_up} <= {f"summary:{s['key']}" for s in summaries}
    assert len(summed_up) + len(alone) == 120  # every start and stall alarm of the 60 tasks, once
    assert summaries[0]["text"].startswith("🌊 ") and "Deploy prod flood-" in summaries[0]["text"]
    print(f"\nflood: 60 tasks → {len(alone)} messages one by one and {windows} summaries")
