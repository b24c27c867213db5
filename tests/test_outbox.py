"""The state database: one transaction per file, UNIQUE keys, claims that never hand a row out twice."""

from __future__ import annotations

import stat
import time
from pathlib import Path

from task_pulse.model import task_from_dict
from task_pulse.outbox import Notification, Outbox, Seen
from tests.conftest import drained_keys, start_drain_loop


def note(key: str, kind: str = "step_done", task_id: str = "t1") -> Notification:
    return Notification(key=key, task_id=task_id, task_name="Daily", kind=kind, text=f"text {key}",
                        data={"done": 1, "total": 3, "step": "fetch"})


def snapshot(task_id: str = "t1") -> Seen:
    return Seen(task_id=task_id, snapshot=task_from_dict(
        {"taskName": "Daily", "status": "running", "steps": [{"name": "fetch", "status": "running"}]}, task_id))


def test_database_is_private_and_wal(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir(mode=0o700)
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("t1", snapshot(), [note("k1")])
    assert stat.S_IMODE((tasks_dir / ".pulse" / "state.db").stat().st_mode) == 0o600
    assert outbox.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert outbox.get_meta("schema_version") == "1"
    outbox.close()


def test_record_stores_snapshot_and_notifications_together(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    assert outbox.record("t1", snapshot(), [note("k1"), note("k2")]) == 2
    assert outbox.seen("t1") is not None
    assert outbox.seen("t1").snapshot.name == "Daily"  # type: ignore[union-attr]
    # the same key again is skipped, never repeated
    assert outbox.record("t1", snapshot(), [note("k1"), note("k3")]) == 1
    assert outbox.count_notifications() == 3
    outbox.record("t1", None, [])
    assert outbox.seen("t1") is None
    outbox.close()


def test_claim_mark_and_release(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("t1", snapshot(), [note(f"k{i}") for i in range(5)])
    first = outbox.claim("a", limit=3)
    assert [r.key for r in first] == ["k0", "k1", "k2"]
    second = outbox.claim("b")
    assert [r.key for r in second] == ["k3", "k4"]  # never a row another owner holds
    assert outbox.mark_delivered([r.seq for r in first], owner="b") == 0  # not b's rows
    assert outbox.mark_delivered([r.seq for r in first], owner="a") == 3
    outbox.release([second[0].seq], "b")
    assert [r.key for r in outbox.claim("c")] == ["k3"]
    assert outbox.count_pending() == 2
    outbox.close()


def test_an_expired_claim_is_taken_again(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("t1", snapshot(), [note("k1")])
    assert len(outbox.claim("dead", lease_seconds=0.05)) == 1
    assert outbox.claim("alive") == []
    time.sleep(0.1)  # the lease itself is what is under test
    assert [r.key for r in outbox.claim("alive")] == ["k1"]
    outbox.close()


def test_purge_removes_only_old_delivered_rows(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("t1", snapshot(), [note("k1"), note("k2")])
    rows = outbox.claim("a", limit=1)
    outbox.mark_delivered([r.seq for r in rows], "a")
    assert outbox.purge_delivered(before=time.time() - 3600) == 0
    assert outbox.purge_delivered(before=time.time() + 1) == 1
    assert outbox.count_notifications() == 1 and outbox.count_pending() == 1
    outbox.close()


def test_two_drain_processes_deliver_each_notification_exactly_once(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    for i in range(200):
        outbox.record(f"t{i % 10}", snapshot(f"t{i % 10}"), [note(f"k{i:03d}", task_id=f"t{i % 10}")])
    outbox.close()
    loops = [start_drain_loop(tasks_dir, limit=7, idle=3) for _ in range(2)]
    drained = [drained_keys(loop) for loop in loops]
    keys = drained[0] + drained[1]
    assert sorted(keys) == [f"k{i:03d}" for i in range(200)]
    assert all(drained), "both drains should have taken a share"


def test_a_sink_keeps_per_task_order_and_gives_up_to_drain(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("a", snapshot("a"), [note("a1", task_id="a"), note("a2", task_id="a")])
    outbox.record("b", snapshot("b"), [note("b1", task_id="b")])
    first = outbox.claim_for_sink("sink", max_attempts=2, lease_seconds=60)
    assert first is not None and first.key == "a1"
    # while a1 is out, a2 must wait; b1 is free
    second = outbox.claim_for_sink("sink", max_attempts=2, lease_seconds=60)
    assert second is not None and second.key == "b1"
    assert outbox.claim_for_sink("sink", max_attempts=2, lease_seconds=60) is None
    outbox.retry_later(first.seq, "sink", "HTTP 500", retry_at=time.time() + 60)
    assert outbox.claim_for_sink("sink", max_attempts=2, lease_seconds=60) is None  # a1 waits, a2 behind it
    assert 0 < (outbox.sink_next_free(2) or 0) - time.time() <= 60
    outbox.retry_later(first.seq, "sink", "x", 0)  # not claimed by "sink" any more: no effect
    # a drain takes anything undelivered, the retry delay notwithstanding
    assert [r.key for r in outbox.claim("drain")] == ["a1", "a2"]
    outbox.close()


def test_after_its_last_attempt_a_row_no_longer_holds_its_task(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("a", snapshot("a"), [note("a1", task_id="a"), note("a2", task_id="a")])
    row = outbox.claim_for_sink("sink", max_attempts=1, lease_seconds=60)
    assert row is not None
    outbox.retry_later(row.seq, "sink", "exit 1", retry_at=time.time() + 3600)
    nxt = outbox.claim_for_sink("sink", max_attempts=1, lease_seconds=60)
    assert nxt is not None and nxt.key == "a2"
    assert outbox.count_pending() == 2  # a1 stays for drain
    outbox.close()
