"""The state database: one transaction per file, UNIQUE keys, claims that never hand a row out twice."""

from __future__ import annotations

import json
import sqlite3
import stat
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from task_pulse.cli import cli
from task_pulse.model import task_from_dict
from task_pulse.records import Card, Notification, Queued, Seen
from task_pulse.state.outbox import Outbox
from task_pulse.state.sql_sqlite import SCHEMA_VERSION
from tests.conftest import drained_keys, start_drain_loop, wait_for


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
    assert outbox.get_meta("schema_version") == str(SCHEMA_VERSION)
    outbox.close()


def test_a_database_of_schema_1_is_migrated_in_place(tasks_dir: Path) -> None:
    """What task-pulse 0.1 made: `seen` without gone_at. Its rows and notifications survive the upgrade."""
    (tasks_dir / ".pulse").mkdir(mode=0o700)
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db")
    db.executescript("""
        CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO meta VALUES ('schema_version', '1');
        CREATE TABLE seen (task_id TEXT PRIMARY KEY, snapshot TEXT NOT NULL, run INTEGER NOT NULL, file_sig TEXT,
                           digest TEXT, stalled_for TEXT, progress_at REAL, held TEXT, stall_at REAL, ended_at REAL);
    """)
    db.execute("INSERT INTO seen (task_id, snapshot, run) VALUES ('t1', ?, 0)",
               (json.dumps(snapshot().snapshot.to_dict()),))
    db.commit()
    db.close()
    outbox = Outbox.for_tasks_dir(tasks_dir)  # the rest of the schema is new to it: made as it opens
    outbox.record("t2", snapshot("t2"), [note("k1")])
    outbox.close()
    again = Outbox.for_tasks_dir(tasks_dir)
    assert again.get_meta("schema_version") == str(SCHEMA_VERSION)
    seen = again.seen("t1")
    assert seen is not None and seen.gone_at is None
    assert again.mark_gone("t1", 1000.0) and again.seen("t1").gone_at == 1000.0  # type: ignore[union-attr]
    assert [n.key for n in again.claim("me")] == ["k1"]
    again.close()


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
    lease = 1.0  # long enough not to lapse between the first two claims on a slow machine
    claimed_at = time.time()
    assert len(outbox.claim("dead", lease_seconds=lease)) == 1
    assert outbox.claim("alive") == []
    taken = wait_for(lambda: outbox.claim("alive"), 10 * lease, "the claim taken again once its lease ran out")
    assert time.time() - claimed_at >= lease  # and not before
    assert [r.key for r in taken] == ["k1"]
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


def fill_delivered(outbox: Outbox, count: int) -> None:
    """`count` notifications of about 1 KB each, delivered long ago."""
    rows = [{"key": f"old:{i}", "task_id": f"t{i % 100}", "task_name": "Old", "kind": "progress",
             "created_at": "2020-01-01T00:00:00.000+00:00", "text": "x" * 1000, "data": "{}"} for i in range(count)]
    with outbox.transaction() as db:
        db.executemany("INSERT INTO notifications (key, task_id, task_name, kind, created_at, text, data, "
                       "delivered_at, delivered_by) VALUES (:key, :task_id, :task_name, :kind, :created_at, :text, "
                       ":data, :created_at, 'test')", rows)


def db_bytes(outbox: Outbox) -> int:
    outbox.db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
    return outbox.path.stat().st_size


@pytest.mark.parametrize("made_before_incremental_vacuum", [False, True])
def test_a_big_purge_gives_the_space_back_to_the_disk(tasks_dir: Path, made_before_incremental_vacuum: bool) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    if made_before_incremental_vacuum:  # a state db of an older task-pulse: no auto_vacuum
        outbox.db.execute("PRAGMA auto_vacuum = NONE")
        outbox.db.execute("VACUUM")
    outbox.record("t1", snapshot(), [note("k1")])  # pending: stays
    fill_delivered(outbox, 20_000)
    full = db_bytes(outbox)
    assert outbox.reclaim() == 0  # nothing free yet: nothing done
    assert outbox.purge_delivered(before=time.time()) == 20_000
    assert outbox.reclaim() > 2048
    assert db_bytes(outbox) < full / 4
    assert outbox.db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
    assert outbox.count_pending() == 1
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


def keys(rows: list[Queued]) -> list[str]:
    return [r.key for r in rows]


def test_a_sink_takes_a_task_at_a_time_keeps_its_order_and_gives_up_to_drain(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("a", snapshot("a"), [note("a1", task_id="a"), note("a2", task_id="a")])
    outbox.record("b", snapshot("b"), [note("b1", task_id="b")])
    first = outbox.claim_task_batch("sink", max_attempts=2, call_seconds=60)
    assert keys(first) == ["a1", "a2"]  # the whole task, for one call
    outbox.record("a", snapshot("a"), [note("a3", task_id="a")])
    # while a1 and a2 are out, a3 must wait: b is free
    assert keys(outbox.claim_task_batch("sink", max_attempts=2, call_seconds=60)) == ["b1"]
    assert outbox.claim_task_batch("sink", max_attempts=2, call_seconds=60) == []
    outbox.retry_later([r.seq for r in first], "sink", "HTTP 500", retry_at=time.time() + 60)
    assert outbox.claim_task_batch("sink", max_attempts=2, call_seconds=60) == []  # a1 waits, a3 behind it
    assert 0 < (outbox.sink_next_free(2) or 0) - time.time() <= 60
    outbox.retry_later([first[0].seq], "sink", "x", 0)  # not claimed by "sink" any more: no effect
    # a drain takes anything undelivered, the retry delay notwithstanding
    assert keys(outbox.claim("drain")) == ["a1", "a2", "a3"]
    outbox.close()


def test_after_its_last_attempt_a_row_no_longer_holds_its_task(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("a", snapshot("a"), [note("a1", task_id="a")])
    (row,) = outbox.claim_task_batch("sink", max_attempts=1, call_seconds=60)
    outbox.retry_later([row.seq], "sink", "exit 1", retry_at=time.time() + 3600)
    outbox.record("a", snapshot("a"), [note("a2", task_id="a")])
    assert keys(outbox.claim_task_batch("sink", max_attempts=1, call_seconds=60)) == ["a2"]
    assert outbox.count_pending() == 2  # a1 stays for drain
    outbox.close()


def test_a_card_is_stored_with_its_rows_and_forgotten_with_its_task(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("a", snapshot("a"), [note("a1", task_id="a", kind="started")])
    (row,) = outbox.claim_task_batch("sink", max_attempts=3, call_seconds=60)
    outbox.delivered([row.seq], "sink", "exec", task_id="a", sink="chat-1", card=Card("m-17", "card text", "a1"))
    assert outbox.card("a", "chat-1") == Card("m-17", "card text", "a1")
    assert outbox.card("a", "chat-2") is None  # another channel does not know that message
    assert outbox.count_pending() == 0
    outbox.purge_cards()
    assert outbox.card("a", "chat-1") is not None  # the task is still known
    outbox.record("a", None, [])
    assert outbox.purge_cards() == 1 and outbox.card("a", "chat-1") is None
    outbox.close()


def test_drain_streams_a_backlog_in_batches(tasks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """1,203 pending rows come out in order, each once, claimed 500 at a time (--limit still counts)."""
    (tasks_dir / ".pulse").mkdir(mode=0o700)
    outbox = Outbox.for_tasks_dir(tasks_dir)
    with outbox.batch():
        for i in range(1203):
            outbox.record(f"t{i % 7}", None, [note(f"k{i:04d}", task_id=f"t{i % 7}")])
    outbox.close()
    claims: list[int | None] = []
    real_claim = Outbox.claim

    def counting_claim(self: Outbox, owner: str, limit: int | None = None, lease_seconds: float = 300) -> list[Queued]:
        claims.append(limit)
        return real_claim(self, owner, limit, lease_seconds)

    monkeypatch.setattr(Outbox, "claim", counting_claim)
    first = CliRunner().invoke(cli, ["--dir", str(tasks_dir), "drain", "--json", "--limit", "700"])
    assert [json.loads(line)["key"] for line in first.stdout.splitlines()] == [f"k{i:04d}" for i in range(700)]
    assert claims == [500, 200]
    claims.clear()
    rest = CliRunner().invoke(cli, ["--dir", str(tasks_dir), "drain", "--json"])
    assert [json.loads(line)["key"] for line in rest.stdout.splitlines()] == [f"k{i:04d}" for i in range(700, 1203)]
    assert claims == [500, 500, 500]  # the last claim finds nothing: done
