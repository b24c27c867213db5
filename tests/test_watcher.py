"""The watcher with a real watchdog observer on a real temp dir, and the worker's rescan."""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task_pulse.store import TaskStore
from task_pulsed import worker as worker_module
from task_pulsed import workqueue
from task_pulsed.scheduler import Timers
from task_pulsed.watcher import INOTIFY_LOGGER, OverflowHook, start_observer
from task_pulsed.worker import Worker, WorkerOptions
from task_pulsed.workqueue import RESCAN, WorkQueue
from tests.conftest import kinds, wait_for


@contextmanager
def running_worker(store: TaskStore, **options: bool) -> Iterator[tuple[Worker, WorkQueue]]:
    """A worker with its real timers, as the daemon runs it, without the watcher."""
    queue = WorkQueue()
    timers = Timers(queue, rescan_seconds=300, cleanup_seconds=3600)
    timers.start()
    worker = Worker(store, queue, timers, WorkerOptions(**options))
    worker.start()
    try:
        assert worker.ready.wait(30), "the worker's first scan did not finish"
        assert worker.error is None
        yield worker, queue
    finally:
        queue.close()
        worker.join(10)
        timers.shutdown()
    assert worker.error is None


def seen_rows(tasks_dir: Path) -> int:
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db")
    try:
        return db.execute("SELECT count(*) FROM seen WHERE gone_at IS NULL").fetchone()[0]  # files still there
    finally:
        db.close()


class Seen:
    def __init__(self) -> None:
        self.ids: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, task_id: str) -> None:
        with self.lock:
            self.ids.append(task_id)

    def has(self, task_id: str) -> bool:
        with self.lock:
            return task_id in self.ids


def test_events_become_task_ids_and_noise_is_ignored(tasks_dir: Path) -> None:
    seen = Seen()
    observer = start_observer(tasks_dir, seen)
    try:
        (tasks_dir / ".pulse").mkdir()
        (tasks_dir / ".pulse" / "x.json").write_text("{}")  # inside .pulse/
        (tasks_dir / ".hidden.json").write_text("{}")  # dotfile
        (tasks_dir / ".a.json.tmp").write_text("{}")  # a writer's temp file
        (tasks_dir / "notes.txt").write_text("x")  # not json
        (tasks_dir / "sub").mkdir()
        (tasks_dir / "sub" / "deep.json").write_text("{}")  # not top level
        (tasks_dir / "created.json").write_text("{}")
        tmp = tasks_dir / ".replaced.json.tmp"
        tmp.write_text("{}")
        os.replace(tmp, tasks_dir / "replaced.json")  # atomic writer: a move, dest counts
        (tasks_dir / "created.json").rename(tasks_dir / "renamed.json")  # source counts too (it is gone)
        wait_for(lambda: all(map(seen.has, ("created", "replaced", "renamed"))), 30, "events")
        (tasks_dir / "renamed.json").unlink()
        wait_for(lambda: seen.ids.count("renamed") >= 2, 30, "delete event")
    finally:
        observer.stop()
        observer.join()
    assert set(seen.ids) == {"created", "replaced", "renamed"}


def test_overflow_warning_from_watchdog_triggers_the_callback() -> None:
    calls: list[int] = []
    hook = OverflowHook(lambda: calls.append(1))
    hook.install()
    try:
        logger = logging.getLogger(INOTIFY_LOGGER)
        logger.warning("Inotify queue overflowed; filesystem events were lost")  # watchdog 7's own words
        logger.warning("something else")
    finally:
        hook.remove()
    assert calls == [1]


def test_rescan_finds_what_no_event_announced(tasks_dir: Path) -> None:
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    with running_worker(store, announce_existing=True) as (_worker, queue):
        task = store.create("Quiet", ["a", "b"], datetime.now(UTC))  # no observer: nobody tells the worker
        store.update(task.task_id, lambda t: t.steps[0].__setattr__("status", "done"), datetime.now(UTC))
        queue.put(RESCAN)
        wait_for(lambda: kinds(tasks_dir) == ["started", "step_done"], 30, "rescan result")
        (tasks_dir / f"{task.task_id}.json").unlink()
        queue.put(RESCAN)
        wait_for(lambda: seen_rows(tasks_dir) == 0, 30, "forgotten after rescan")


def test_work_queue_coalesces_and_delays() -> None:
    queue = WorkQueue()
    queue.put(("file", "a"))
    queue.put(("file", "a"))
    queue.put(("file", "b"), attempt=1, delay=0.05)
    queue.put(("file", "c"))
    assert queue.get() == (("file", "a"), 0)
    assert queue.get() == (("file", "c"), 0)
    assert queue.get() == (("file", "b"), 1)  # blocks until due
    queue.close()
    assert queue.get() is None


def test_heavy_files_wait_in_their_own_lane(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workqueue, "HEAVY_WAIT", 60.0)
    queue = WorkQueue()
    for name in ("huge-1", "huge-2"):
        queue.mark_heavy(("file", name), True)
        queue.put(("file", name))
    queue.put(("file", "small-1"))
    queue.put(("file", "small-2"))
    assert [queue.get()[0][1] for _ in range(3)] == ["small-1", "small-2", "huge-1"]  # none else ready: heavy
    queue.put(("file", "huge-1"))
    for name in ("small-3", "small-4"):
        queue.put(("file", name))
    monkeypatch.setattr(workqueue, "HEAVY_WAIT", 0.0)  # waited long enough: in turn with the small ones
    assert [queue.get()[0][1] for _ in range(4)] == ["small-3", "huge-2", "small-4", "huge-1"]
    queue.mark_heavy(("file", "huge-1"), False)  # smaller now: back with the rest, in arrival order
    queue.put(("file", "huge-1"))
    queue.put(("file", "small-5"))
    assert [queue.get()[0][1] for _ in range(2)] == ["huge-1", "small-5"]


def test_json_written_by_hand_without_task_id(tasks_dir: Path) -> None:
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    (tasks_dir / "by-hand.json").write_text(json.dumps(
        {"taskName": "By hand", "status": "running", "steps": ["one", "two"]}))
    with running_worker(store, announce_existing=True):
        wait_for(lambda: kinds(tasks_dir, "by-hand") == ["started"], 30, "started from a hand-written file")


def test_a_group_commit_undone_by_a_busy_db_loses_none_of_its_files(tasks_dir: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Files waiting together are committed together; when the db turns busy in the middle, the whole
    group is undone and every file in it is handled again (not only the one the retry starts with)."""
    monkeypatch.setattr(worker_module, "GROUP_SECONDS", 30.0)  # the whole burst in one group, however slow
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    ids = [store.create(f"Group {i}", ["a"], datetime.now(UTC)).task_id for i in range(12)]
    with running_worker(store) as (worker, queue):
        handled: list[str] = []
        real_handle = worker.handle

        def busy_once(item: object, attempt: int) -> None:
            handled.append(str(item))
            if len(handled) == 5:
                exc = sqlite3.OperationalError("database is locked")
                exc.sqlite_errorcode = sqlite3.SQLITE_BUSY  # type: ignore[attr-defined]
                raise exc
            real_handle(item, attempt)

        monkeypatch.setattr(worker, "handle", busy_once)
        for task_id in ids:  # rewritten while the worker looks away: each file has news
            store.update(task_id, lambda t: t.steps[0].__setattr__("message", "x"), datetime.now(UTC))
        with queue._cond:  # all of them waiting at once: one group
            for task_id in ids:
                queue.put(("file", task_id))
        wait_for(lambda: len(kinds(tasks_dir)) == len(ids), 30, "every file of the undone group handled")
        assert sorted(n for n in kinds(tasks_dir)) == ["progress"] * len(ids)
