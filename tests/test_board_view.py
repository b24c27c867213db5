"""The board's pure parts: what the page shows of a task at `now`, in which order, and what an event carries."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from task_pulse.board.live import View, delta_json
from task_pulse.board.view import Shown, notification_record, ordered, page_json, task_record
from task_pulse.history.forecast import Outlook
from task_pulse.model import Step, Task, TaskFormatError

NOW = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


def task(status: str = "running", *, updated: float = 10, budget: float | None = None, name: str = "Daily",
         steps: list[Step] | None = None, started: float = 60) -> Task:
    at = (NOW - timedelta(seconds=started)).isoformat()
    return Task(task_id="t", name=name, status=status, started_at=at, budget_seconds=budget,
                updated_at=(NOW - timedelta(seconds=updated)).isoformat(),
                finished_at=NOW.isoformat() if status != "running" else None,
                steps=steps if steps is not None else [Step("a", "done"), Step("b", "running" if status == "running"
                                                                                 else "done")])


def record(t: Task | TaskFormatError, key: str = "t") -> dict:
    outlook = None if isinstance(t, TaskFormatError) else Outlook.of(None, t, NOW, 180)
    return task_record(Shown(key, "", key, t), NOW, outlook)


def test_each_state_as_the_page_names_it() -> None:
    assert record(task())["state"] == "running"
    assert record(task(updated=600))["state"] == "stalled" and record(task(updated=600))["stalled"] is True
    assert record(task(budget=30))["state"] == "overdue" and record(task(budget=30))["overdue"] == [None]
    assert record(task(steps=[Step("a", "done"), Step("b", "pending")]))["state"] == "waiting"
    assert record(task("done"))["state"] == "done" and record(task("error"))["state"] == "error"
    broken = record(TaskFormatError("not valid JSON"), "broken")
    assert broken["state"] == "invalid" and broken["invalid"] == "not valid JSON" and "name" not in broken


def test_times_are_unix_seconds_and_a_record_does_not_move_with_the_clock() -> None:
    shown = record(task())
    assert shown["startedAt"] == (NOW - timedelta(seconds=60)).timestamp() and shown["etaAt"] is None
    later = task_record(Shown("t", "", "t", task()), NOW + timedelta(seconds=5), Outlook.of(None, task(), NOW, 180))
    assert later == shown  # what is pushed is what changed, not every task every second


def test_texts_are_masked_as_in_the_chat() -> None:
    hostile = task(name="\x1b[31m<b>x</b>\u202e ghp_abcdefghijklmnopqrstuvwxyz0123",
                   steps=[Step("s", "running", message="token=abc123secret\nnext line")])
    shown = record(hostile)
    assert shown["name"] == "<b>x</b> ghp_***" and shown["steps"][0]["message"] == "token=*** next line"
    assert "<" not in page_json(shown) and json.loads(page_json(shown)) == shown


def test_the_order_worth_reading() -> None:
    records = [record(task("done"), "d"), record(task(), "r"), record(task(updated=600), "s"),
               record(task("error"), "e"), record(TaskFormatError("x"), "i"), record(task(budget=30), "o"),
               record(task(updated=5), "r2")]
    assert [r["key"] for r in ordered(records)] == ["i", "o", "s", "e", "r2", "r", "d"]


def test_a_notification_keeps_its_lines_each_made_safe() -> None:
    row = (7, "failed", "2026-11-24T09:30:00.000+00:00", "❌ \"x\" failed\nlogin with password=hunter2\x07",
           "2026-11-24T09:30:01.000+00:00", "openclaw:telegram:123", 1, None)
    shown = notification_record(row)
    assert shown["text"] == "❌ \"x\" failed\nlogin with password=***"
    assert shown["deliveredBy"] == "openclaw:telegram:123"


def view(version: int, records: dict[str, dict], counts: dict[str, int] | None = None) -> View:
    return View(version=version, counts=counts or {}, order=list(records),
                records={k: page_json(r) for k, r in records.items()})


def test_an_event_carries_only_what_changed() -> None:
    a, b, c = {"key": "a", "n": 1}, {"key": "b", "n": 1}, {"key": "c", "n": 1}
    before = view(1, {"a": a, "b": b})
    assert delta_json(before, view(2, {"a": a, "b": b})) is None
    changed = json.loads(delta_json(before, view(2, {"a": a, "b": {**b, "n": 2}})) or "")
    assert changed["changed"] == [{"key": "b", "n": 2}] and changed["order"] is None and changed["removed"] == []
    moved = json.loads(delta_json(before, view(2, {"c": c, "a": a})) or "")
    assert moved["changed"] == [c] and moved["removed"] == ["b"] and moved["order"] == ["c", "a"]
    counted = json.loads(delta_json(before, view(2, {"a": a, "b": b}, {"done": 1})) or "")
    assert counted["changed"] == [] and counted["counts"] == {"done": 1}
