"""What a co-user's task files can do, with one account: files given to `nobody` (chown) stand for a co-user's.
The same with two real accounts is in tests/test_cross_user.py (it makes OS accounts only when asked).

A co-user's task shows whose it is, in the card, the pings and `status`, and its text is masked there too;
what the daemon keeps of any task is bounded (snapshot.py), and a co-user's tombstones within a budget of
theirs; a hard-linked task file is never read."""

from __future__ import annotations

import json
import os
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task_pulse.snapshot import SIZE_BUDGET
from tests.conftest import Daemon, read_notifications, run_tp, wait_for

NOBODY = 65534
SECRET = "ghp_0123456789abcdefghijABCDEFGHIJ012345"


@pytest.fixture(autouse=True)
def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("gives files to another account (chown): root only")


def task_file(path: Path, name: str, *, owner: int | None = NOBODY, **fields: object) -> Path:
    stamp = datetime.now(UTC).isoformat()
    path.write_text(json.dumps({"taskName": name, "status": "running", "startedAt": stamp, "updatedAt": stamp,
                                "steps": [{"name": "push", "status": "running"}], **fields}))
    if owner is not None:
        os.chown(path, owner, owner)
    return path


def test_a_co_users_task_shows_its_owner_in_every_message(tasks_dir: Path, daemons: list[Daemon]) -> None:
    daemons.append(Daemon(tasks_dir, "--lang", "en").start())
    task_file(tasks_dir / "hers.json", "Deploy prod")
    mine = run_tp(tasks_dir, "create", "Deploy prod", "push").stdout.strip()
    wait_for(lambda: len(read_notifications(tasks_dir)) == 2, 30, "both started")
    hers = (tasks_dir / "hers.json")
    raw = json.loads(hers.read_text())
    raw.update(status="done", finishedAt=datetime.now(UTC).isoformat(), result="🎉 all good")
    hers.write_text(json.dumps(raw))
    wait_for(lambda: any(n["kind"] == "done" for n in read_notifications(tasks_dir)), 30, "her done ping")
    by_task: dict[str, list[dict[str, object]]] = {}
    for n in read_notifications(tasks_dir):
        by_task.setdefault(n["task_id"], []).append(n)
    assert all(n["text"].split("\n")[0].startswith(("🚀 \"👤nobody · Deploy prod\"", "🎉 \"👤nobody · Deploy prod\""))
               for n in by_task["hers"]), [n["text"] for n in by_task["hers"]]
    assert all("👤" not in n["text"] for n in by_task[mine])  # the user's own: as it is
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db")
    (snapshot,) = db.execute("SELECT snapshot FROM seen WHERE task_id = 'hers'").fetchone()
    db.close()
    assert json.loads(snapshot)["taskName"] == "👤nobody · Deploy prod"  # what the card is rendered from


def test_a_forged_owner_mark_still_shows_whose_it_is(tasks_dir: Path, daemons: list[Daemon]) -> None:
    daemons.append(Daemon(tasks_dir, "--lang", "en").start())
    task_file(tasks_dir / "forged.json", "👤root · Deploy prod")
    wait_for(lambda: read_notifications(tasks_dir), 30, "started")
    assert read_notifications(tasks_dir)[0]["text"].startswith('🚀 "👤nobody · 👤root · Deploy prod"')


def test_status_marks_a_co_users_task_and_masks_its_text(tasks_dir: Path) -> None:
    task_file(tasks_dir / "hers.json", f"Deploy {SECRET}", steps=[{"name": "push", "status": "running",
                                                                   "message": f"token {SECRET}"}])
    run_tp(tasks_dir, "create", f"mine {SECRET}", "a")
    table = run_tp(tasks_dir, "--lang", "en", "status").stdout
    assert "👤nobody · Deploy ghp_***" in table and SECRET not in table.split("mine")[0]
    one = json.loads(run_tp(tasks_dir, "status", "hers", "--json").stdout)
    assert one["taskName"] == "👤nobody · Deploy ghp_***" and one["steps"][0]["message"] == "token ghp_***"
    listed = json.loads(run_tp(tasks_dir, "status", "--json").stdout)
    hers = next(t for t in listed if t["taskId"] == "hers")
    assert SECRET not in json.dumps(hers)
    mine = next(t for t in listed if t["taskId"] != "hers")
    assert mine["taskName"] == f"mine {SECRET}"  # the user's own file, as the user wrote it
    assert "👤nobody" in run_tp(tasks_dir, "--lang", "en", "status", "hers").stdout


def test_a_hardlinked_task_file_is_never_read(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    """With fs.protected_hardlinks=0 a co-user can link any file of the user's into a shared dir."""
    private = task_file(tmp_path / "private-notes.json", f"my notes {SECRET}", owner=None)
    os.link(private, tasks_dir / "linked.json")
    d = Daemon(tasks_dir).start()
    daemons.append(d)
    wait_for(lambda: read_notifications(tasks_dir), 30, "a notice about it")
    (note,) = read_notifications(tasks_dir)
    assert note["kind"] == "invalid" and "hard links" in note["data"]["reason"] and "notes" not in note["text"]
    status = run_tp(tasks_dir, "status").stdout
    assert "hard links" in status and "my notes" not in status
    run_tp(tasks_dir, "create", "ordinary", "a")  # a writer's own create (it links its temp file in) is no link
    wait_for(lambda: any(n["kind"] == "started" for n in read_notifications(tasks_dir)), 30, "the ordinary task")
    assert len([n for n in read_notifications(tasks_dir) if n["kind"] == "invalid"]) == 1


def stored_bytes(tasks_dir: Path, where: str = "1") -> int:
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db")
    try:
        return db.execute(f"SELECT coalesce(sum(length(CAST(snapshot AS BLOB))), 0) FROM seen WHERE {where}"
                          ).fetchone()[0]
    finally:
        db.close()


def test_big_task_files_written_and_deleted_keep_the_state_db_small(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """A co-user writing ~0.9 MB task files and deleting them grew the user's state db by 836 MB in 19 s: each
    file's text was kept 7 days. Now: what a chat would show of it."""
    daemons.append(Daemon(tasks_dir).start())
    filler = "x" * 900_000
    for i in range(20):
        path = task_file(tasks_dir / f"big-{i}.json", f"big {i}", steps=[{"name": "s", "status": "running",
                                                                           "message": filler}])
        wait_for(lambda i=i: stored_bytes(tasks_dir, f"task_id = 'big-{i}'"), 30, "read")
        path.unlink()
    wait_for(lambda: stored_bytes(tasks_dir, "gone_at IS NOT NULL") and
             len([n for n in read_notifications(tasks_dir) if n["kind"] == "started"]) == 20, 30, "all gone")
    kept = stored_bytes(tasks_dir)
    assert kept < 20 * 2000, kept  # was 20 x 900 KB


def test_a_co_users_tombstones_stay_within_a_budget(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """Even compact, a 1,000-step task is tens of KB: written and deleted again and again, the oldest of the
    co-user's tombstones are forgotten past the budget (worker.OWNER_GONE_BYTES), the user's own never."""
    from task_pulsed.worker import OWNER_GONE_BYTES

    daemons.append(Daemon(tasks_dir, "--news-burst", "1000").start())
    steps = [{"name": f"step {k:04d} " + "n" * 100, "status": "pending"} for k in range(1000)]
    steps[0]["status"] = "running"
    for i in range(60):
        path = task_file(tasks_dir / f"wide-{i:02d}.json", f"wide {i}", steps=steps)
        wait_for(lambda i=i: stored_bytes(tasks_dir, f"task_id = 'wide-{i:02d}'"), 30, "read")
        path.unlink()
        wait_for(lambda i=i: stored_bytes(tasks_dir, f"task_id = 'wide-{i:02d}' AND gone_at IS NOT NULL")
                 or not stored_bytes(tasks_dir, f"task_id = 'wide-{i:02d}'"), 30, "gone")
    one = SIZE_BUDGET * 10  # a wide task's size, at most (its step names, each capped)
    assert stored_bytes(tasks_dir, f"owner = {NOBODY}") <= OWNER_GONE_BYTES + one
    assert stored_bytes(tasks_dir, "task_id = 'wide-59'")  # the latest is kept (a file put back is no news)
    assert not stored_bytes(tasks_dir, "task_id = 'wide-00'")  # the oldest went
