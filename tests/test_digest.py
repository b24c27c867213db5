"""drain --digest: one message per task for everything pending, at most three lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from task_pulse.messages import digest
from task_pulse.model import task_from_dict
from task_pulsed.differ import diff_tasks
from tests.conftest import Daemon, kinds, run_tp, wait_for

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)


def events_for(*states: dict[str, object]) -> list[tuple[str, dict[str, object]]]:
    """The notifications the daemon would queue for a task going through `states`."""
    out: list[tuple[str, dict[str, object]]] = []
    old = None
    for raw in states:
        new = task_from_dict({"taskName": "Daily", "startedAt": "2026-11-24T09:30:00+00:00", **raw}, "t1")
        out += [(n.kind, n.data) for n in diff_tasks(old, new, NOW).notifications]
        old = new
    return out


def steps(*statuses: str, message: str | None = None) -> list[dict[str, object]]:
    out: list[dict[str, object]] = [{"name": n, "status": s} for n, s in zip(("fetch", "filter", "write"), statuses,
                                                                             strict=True)]
    if message:
        out[statuses.index("running")]["message"] = message
    return out


def test_a_running_task_sums_up_in_three_lines() -> None:
    events = events_for({"status": "running", "steps": steps("running", "pending", "pending")},
                        {"status": "running", "steps": steps("done", "running", "pending")},
                        {"status": "running", "steps": steps("done", "running", "pending", message="60%")})
    assert [k for k, _ in events] == ["started", "step_done", "progress"]
    assert digest(events) == "🔄 【Daily】[1/3] ███░░░░░░░ → filter\n✅ fetch完成\n💬 60%"


def test_a_finished_task() -> None:
    events = events_for({"status": "running", "steps": steps("done", "running", "pending")},
                        {"status": "done", "steps": steps("done", "done", "done"), "result": "published",
                         "finishedAt": "2026-11-24T09:33:12+00:00"})
    text = digest(events)
    assert text == "🎉 【Daily】完成！（3分12秒）\n✅ fetch、filter、write完成\n结果: published"
    assert len(text.splitlines()) == 3


def test_a_failed_task_in_english() -> None:
    events = events_for({"status": "running", "steps": steps("running", "pending", "pending")},
                        {"status": "error", "error": "HTTP 502", "steps": steps("error", "pending", "pending")})
    assert digest(events, "en") == (
        "❌ \"Daily\" failed: HTTP 502\n🚀 Started: fetch → filter → write\nAt step: fetch (0/3 done)")


def test_a_stalled_task_says_so_first() -> None:
    stalled = {"name": "Daily", "step": "filter", "done": 1, "total": 3, "minutes": 4}
    assert digest([("stalled", stalled)]) == "⚠️ 【Daily】可能卡住了（4分钟无更新） → filter"


def test_drain_digest_through_the_real_daemon(tasks_dir: Path, daemon: Daemon) -> None:
    a = run_tp(tasks_dir, "create", "A", "x", "y").stdout.strip()
    b = run_tp(tasks_dir, "create", "B", "x", "y").stdout.strip()
    run_tp(tasks_dir, "next", a, "first")
    run_tp(tasks_dir, "done", b, "fine")
    # A: started, x done; B: started, done (which finishes x in the same message; y stays pending)
    wait_for(lambda: len(kinds(tasks_dir)) == 4, 30, "four notifications")
    lines = run_tp(tasks_dir, "drain", "--digest", "--json").stdout.splitlines()
    objs = [json.loads(line) for line in lines]
    assert [(o["taskId"], o["kind"], o["count"]) for o in objs] == [(a, "digest", 2), (b, "digest", 2)]
    assert objs[1]["text"].startswith("🎉 【B】完成！") and objs[1]["latestKind"] == "done"
    assert run_tp(tasks_dir, "drain").stdout == ""  # all of it was delivered by the digest


def test_drain_digest_speaks_the_daemons_language(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """The daemon runs with --lang en; a cron drain with no setting of its own must not answer in zh."""
    daemons.append(Daemon(tasks_dir, "--lang", "en").start())
    task_id = run_tp(tasks_dir, "create", "Report", "fetch", "send").stdout.strip()
    run_tp(tasks_dir, "next", task_id, "25 items")
    wait_for(lambda: len(kinds(tasks_dir)) == 2, 30, "two notifications")
    text = run_tp(tasks_dir, "drain", "--digest").stdout
    assert "Report" in text and "完成" not in text and "当前" not in text, text
    run_tp(tasks_dir, "heartbeat", task_id, "--percent", "10", "sending")
    run_tp(tasks_dir, "done", task_id)
    wait_for(lambda: kinds(tasks_dir)[-1] == "done", 30, "done")
    assert "完成" in run_tp(tasks_dir, "--lang", "zh", "drain", "--digest").stdout  # the flag still wins


def test_a_backlog_is_taken_in_batches_not_all_at_once(tasks_dir: Path) -> None:
    """`drain --digest`, what the cron route runs every minute, claimed the whole backlog at once: 518 MB for
    50,000 rows, and a drain killed for it left the claim for 300 s, then did it again. 500 rows at a time now,
    each batch summed up per task."""
    from task_pulse.state.outbox import Outbox
    from task_pulse.store import TaskStore
    from task_pulsed.differ import make_notification

    outbox = Outbox.for_store(TaskStore(tasks_dir))
    notes = [make_notification("big", "Big", "progress", (i,), {"name": "Big", "step": "s", "message": f"at {i}",
                                                                 "done": 0, "total": 1}, "en") for i in range(1200)]
    with outbox.batch():
        for note in notes:
            outbox.record("big", None, [note])
    outbox.close()
    lines = run_tp(tasks_dir, "drain", "--digest", "--json").stdout.splitlines()
    assert [json.loads(line)["count"] for line in lines] == [500, 500, 200]
    assert json.loads(lines[-1])["text"].endswith("💬 at 1199")
    assert run_tp(tasks_dir, "drain", "--digest").stdout == ""  # every row taken, once
