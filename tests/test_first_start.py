"""The very first start: existing tasks are stored as read before READY and adopted silently after it.

A first start reads every file but parses none (that is most of what a file costs): each one's text
is taken as what was announced at that moment, and parsed later, by a background pass after READY or
at the file's next change, whichever comes first. These tests hold the pass back to see the files
in between, and kill the real daemon in the middle of it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task_pulse.store import TaskStore
from task_pulsed import worker as worker_module
from task_pulsed.worker import Worker
from task_pulsed.workqueue import ADOPT
from tests.conftest import Daemon, kinds, read_notifications, wait_for
from tests.test_watcher import running_worker


def unadopted(tasks_dir: Path) -> int:
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db", timeout=30)
    try:
        return db.execute("SELECT count(*) FROM seen WHERE adopt_at IS NOT NULL").fetchone()[0]
    finally:
        db.close()


def seen_column(tasks_dir: Path, task_id: str, column: str) -> object:
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db", timeout=30)
    try:
        return db.execute(f"SELECT {column} FROM seen WHERE task_id = ?", (task_id,)).fetchone()[0]
    finally:
        db.close()


def advance(store: TaskStore, task_id: str, message: str) -> None:
    def change(task: object) -> None:
        steps = task.steps  # type: ignore[attr-defined]
        i = next(i for i, s in enumerate(steps) if s.status == "running")
        steps[i].status, steps[i].message = "done", message
        steps[i + 1].status = "running"

    store.update(task_id, change, datetime.now(UTC))


@pytest.fixture
def held_adoption(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The background pass is put off until the event is set (the worker goes on with everything else)."""
    go = threading.Event()
    adopt_some = Worker._adopt_some

    def held(self: Worker) -> None:
        if go.is_set():
            adopt_some(self)
        else:
            self.queue.put(ADOPT, delay=0.05)

    monkeypatch.setattr(Worker, "_adopt_some", held)
    return go


def test_existing_files_are_adopted_silently_after_ready(tasks_dir: Path, held_adoption: threading.Event) -> None:
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    now = datetime.now(UTC)
    running = [store.create(f"Running {i}", ["a", "b", "c"], now).task_id for i in range(30)]
    finished = store.create("Finished", ["a"], now).task_id
    store.update(finished, lambda t: t.finish(now.isoformat(), "ok"), now)
    old = (now - timedelta(hours=1)).isoformat()
    stale = store.create("Stale", ["a"], now - timedelta(hours=1), stall_seconds=60).task_id
    (tasks_dir / "broken.json").write_text('{"taskName": "Broken", "status": "running", "steps": [')
    with running_worker(store):
        assert unadopted(tasks_dir) == 33  # stored as read, the broken one too: none parsed before READY
        assert kinds(tasks_dir) == []
        held_adoption.set()
        wait_for(lambda: unadopted(tasks_dir) == 0, 30, "every file adopted")
        wait_for(lambda: kinds(tasks_dir) == ["invalid"], 30, "the broken file reported")
    assert seen_column(tasks_dir, stale, "stalled_for") == f"quiet:{old}"  # stale already: adopted quietly
    assert seen_column(tasks_dir, stale, "stall_at") is None
    assert all(seen_column(tasks_dir, t, "stall_at") is not None for t in running)
    assert seen_column(tasks_dir, finished, "ended_at") is not None  # a cleanup candidate once it is old
    assert read_notifications(tasks_dir)[0]["task_id"] == "broken"


def test_a_change_before_its_adoption_is_told_against_the_file_as_it_was(tasks_dir: Path,
                                                                          held_adoption: threading.Event) -> None:
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    ids = [store.create(f"Early {i}", ["a", "b", "c"], datetime.now(UTC)).task_id for i in range(5)]
    with running_worker(store) as (_worker, queue):
        advance(store, ids[0], "fetched")  # after READY, while the background pass is held
        queue.put(("file", ids[0]))
        wait_for(lambda: kinds(tasks_dir, ids[0]) == ["step_done"], 30, "the step that changed, only it")
        assert unadopted(tasks_dir) == 4
        held_adoption.set()
        wait_for(lambda: unadopted(tasks_dir) == 0, 30, "the rest adopted")
        advance(store, ids[1], "filtered")
        queue.put(("file", ids[1]))
        wait_for(lambda: kinds(tasks_dir, ids[1]) == ["step_done"], 30, "a change after adoption")
    assert kinds(tasks_dir) == ["step_done", "step_done"]
    assert "fetched" in read_notifications(tasks_dir)[0]["text"]


def test_a_task_that_stalls_before_its_adoption_is_flagged(tasks_dir: Path, held_adoption: threading.Event,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Adopted as it was when the start read it (not stalled then): the stall that came since is news."""
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    task_id = store.create("Soon stuck", ["a", "b"], datetime.now(UTC), stall_seconds=1).task_id
    with running_worker(store):
        wait_for(lambda: seen_column(tasks_dir, task_id, "adopt_at") is not None, 5, "stored unread")
        started = datetime.fromtimestamp(seen_column(tasks_dir, task_id, "adopt_at"), UTC)  # type: ignore[arg-type]
        wait_for(lambda: datetime.now(UTC) > started + timedelta(seconds=1.2), 5, "the stall threshold passed")
        held_adoption.set()
        wait_for(lambda: kinds(tasks_dir, task_id) == ["stalled"], 30, "the stall announced")


def test_kill_9_during_the_background_pass_then_restart(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """However much of the pass a killed daemon did, the next one does the rest, and tells nothing."""
    now = datetime.now().astimezone().isoformat()
    steps = [{"name": f"s{k}", "status": "done" if k < 10 else "pending", "message": f"step {k} ok"}
             for k in range(20)]
    steps[10]["status"] = "running"
    for i in range(4000):
        (tasks_dir / f"many-{i:04d}.json").write_text(json.dumps(
            {"taskName": f"Many {i}", "status": "running", "startedAt": now, "updatedAt": now, "steps": steps,
             "stallSeconds": 86400}))
    first = Daemon(tasks_dir).start()
    daemons.append(first)
    first.kill()
    left = unadopted(tasks_dir)
    second = Daemon(tasks_dir).start()
    daemons.append(second)
    wait_for(lambda: unadopted(tasks_dir) == 0, 60, f"the rest of the pass ({left} left at the kill)")
    assert left > 0, "the kill came after the pass: this test proves nothing (make the files more)"
    task_id = "many-0001"
    steps[10]["status"], steps[10]["message"], steps[11]["status"] = "done", "after the restart", "running"
    (tasks_dir / f"{task_id}.json").write_text(json.dumps(
        {"taskName": "Many 1", "status": "running", "startedAt": now, "updatedAt": now, "steps": steps,
         "stallSeconds": 86400}))
    wait_for(lambda: kinds(tasks_dir), 30, "the change told")
    assert kinds(tasks_dir) == ["step_done"] and "after the restart" in read_notifications(tasks_dir)[0]["text"]
    assert second.stop() == 0
    assert "Traceback" not in first.log() + second.log()


def test_a_big_first_start_is_stored_in_batches(tasks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(worker_module, "SCAN_BATCH", 7)
    monkeypatch.setattr(worker_module, "ADOPT_BATCH", 3)
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    for i in range(20):
        store.create(f"Batch {i}", ["a"], datetime.now(UTC))
    with running_worker(store):
        wait_for(lambda: unadopted(tasks_dir) == 0, 30, "every file adopted, three at a time")
    assert kinds(tasks_dir) == []
