"""task_pulse.store: ids, creation, atomic updates, refusing what is not a task file, cleanup."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import stat
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from task_pulse.errors import BadInput, OperationFailed, TaskNotFound
from task_pulse.model import Task, TaskFormatError
from task_pulse.store import TaskStore
from task_pulse.taskfile import MAX_FILE_BYTES, MAX_ID_BYTES, check_task_id
from tests.conftest import wait_for

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 24, 9, 30, 0, tzinfo=CST)


def write_task(root: Path, task_id: str, **fields: Any) -> Path:
    raw: dict[str, Any] = {"taskId": task_id, "taskName": task_id, "status": "running",
                           "startedAt": NOW.isoformat(), "updatedAt": NOW.isoformat(),
                           "steps": [{"name": "a", "status": "running"}, {"name": "b", "status": "pending"}]}
    raw.update(fields)
    root.mkdir(parents=True, exist_ok=True)
    path = root / f"{task_id}.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return path


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def ago(days: float) -> str:
    return (NOW - timedelta(days=days)).isoformat()


# -- ids --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["../../x", "a/b", "/abs", "a\\b", ".hidden", ".", "..", "a\0b", ""])
def test_check_task_id_rejects(bad: str) -> None:
    with pytest.raises(BadInput):
        check_task_id(bad)


def test_check_task_id_byte_limit() -> None:
    assert MAX_ID_BYTES == 200
    assert check_task_id("a" * 200) == "a" * 200
    assert check_task_id("日" * 66) == "日" * 66  # 198 bytes
    with pytest.raises(BadInput, match="201 bytes"):
        check_task_id("日" * 67)
    with pytest.raises(BadInput):
        check_task_id("a" * 201)


@pytest.mark.parametrize("good", ["日报发布-20261124-093000", "nightly_build", "Ünïcødé-ß", "x.y", "a b"])
def test_check_task_id_accepts(good: str) -> None:
    assert check_task_id(good) == good


def test_path_for_refuses_hostile_ids(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    with pytest.raises(BadInput):
        store.path_for("../../x")
    assert store.path_for("日报") == str(tmp_path / "日报.json")


# -- create -----------------------------------------------------------------------------------------


def test_create_original_style_id(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    task = store.create("日报发布", ["抓取", "筛选"], NOW)
    assert task.task_id == "日报发布-20261124-093000"
    on_disk = json.loads((tmp_path / "日报发布-20261124-093000.json").read_text(encoding="utf-8"))
    assert on_disk["taskId"] == task.task_id
    assert on_disk["taskName"] == "日报发布"
    assert on_disk["status"] == "running"
    assert on_disk["rev"] == 1
    assert on_disk["startedAt"] == on_disk["updatedAt"] == NOW.isoformat()
    assert on_disk["steps"] == [
        {"name": "抓取", "status": "running", "startedAt": NOW.isoformat()},
        {"name": "筛选", "status": "pending"},
    ]


def test_create_replaces_non_word_characters(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    assert store.create("Daily report: v2/final", ["a"], NOW).task_id == "Daily-report--v2-final-20261124-093000"
    assert store.create("../../x", ["a"], NOW).task_id == "x-20261124-093000"
    assert store.create(".hidden", ["a"], NOW).task_id == "hidden-20261124-093000"
    assert store.create("!!!", ["a"], NOW).task_id == "task-20261124-093000"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".pulse", "Daily-report--v2-final-20261124-093000.json", "hidden-20261124-093000.json",
        "task-20261124-093000.json", "x-20261124-093000.json"]


def test_create_long_name_fits_the_id_limit(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    for name in ("日" * 100, "a" * 300, "𠀀" * 70):  # 3-byte, 1-byte and 4-byte word characters
        task = store.create(name, ["a"], NOW)
        assert len(task.task_id.encode("utf-8")) <= MAX_ID_BYTES
        assert task.task_id.endswith("-20261124-093000")
        assert store.load(task.task_id).name == name


def test_create_collisions_get_suffixes(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    ids = [store.create("job", ["a"], NOW).task_id for _ in range(3)]
    assert ids == ["job-20261124-093000", "job-20261124-093000-2", "job-20261124-093000-3"]
    assert sorted(store.task_ids()) == sorted(ids)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_create_explicit_id_collision_fails(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.create("first", ["a"], NOW, task_id="mine")
    before = (tmp_path / "mine.json").read_bytes()
    with pytest.raises(OperationFailed, match="'mine' already exists"):
        store.create("second", ["b"], NOW, task_id="mine")
    assert (tmp_path / "mine.json").read_bytes() == before
    assert store.task_ids() == ["mine"]


def test_create_explicit_hostile_id_refused(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks")
    with pytest.raises(BadInput):
        store.create("x", ["a"], NOW, task_id="../../x")
    assert list(tmp_path.iterdir()) == []


def test_create_needs_steps(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks")
    with pytest.raises(BadInput):
        store.create("x", [], NOW)
    with pytest.raises(BadInput):
        store.create("x", ["a", "  "], NOW)
    assert list(tmp_path.iterdir()) == []


def test_create_stall_seconds(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    task = store.create("x", ["a"], NOW, stall_seconds=600)
    assert json.loads(Path(store.path_for(task.task_id)).read_text())["stallSeconds"] == 600


def test_permissions(tmp_path: Path) -> None:
    store = TaskStore(tmp_path / "tasks")
    task = store.create("x", ["a", "b"], NOW)
    assert mode(store.path_for(task.task_id)) == 0o600
    assert mode(tmp_path / "tasks" / ".pulse") == 0o700
    assert mode(tmp_path / "tasks" / ".pulse" / "locks") == 0o700
    assert mode(tmp_path / "tasks" / ".pulse" / "locks" / f"{task.task_id}.lock") == 0o600
    store.update(task.task_id, lambda t: None, NOW + timedelta(seconds=5))
    assert mode(store.path_for(task.task_id)) == 0o600


# -- update -----------------------------------------------------------------------------------------


def test_update_bumps_rev_and_updated_at_and_keeps_unknown_fields(tmp_path: Path) -> None:
    write_task(tmp_path, "t", rev=4, channel="telegram", meta={"k": [1, 2]},
               steps=[{"name": "a", "status": "running", "owner": "sub-agent"}, {"name": "b"}])
    store = TaskStore(tmp_path)
    later = NOW + timedelta(minutes=3)

    def change(task: Task) -> None:
        task.steps[0].message = "half way"

    task = store.update("t", change, later)
    assert task.rev == 5
    raw = json.loads((tmp_path / "t.json").read_text(encoding="utf-8"))
    assert raw["rev"] == 5
    assert raw["updatedAt"] == later.isoformat()
    assert raw["startedAt"] == NOW.isoformat()
    assert raw["channel"] == "telegram"
    assert raw["meta"] == {"k": [1, 2]}
    assert raw["steps"][0] == {"name": "a", "status": "running", "message": "half way", "owner": "sub-agent"}
    assert mode(tmp_path / "t.json") == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == [".pulse", "t.json"]


def test_concurrent_updates_lose_nothing(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.create("x", ["a"], NOW, task_id="c")
    errors: list[BaseException] = []

    def append(n: int) -> None:
        def change(task: Task) -> None:
            task.extra.setdefault("seen", []).append(n)

        try:
            TaskStore(tmp_path).update("c", change, NOW)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=append, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert errors == []
    raw = json.loads((tmp_path / "c.json").read_text())
    assert raw["rev"] == 21
    assert sorted(raw["seen"]) == list(range(20))


def test_update_from_original_file_without_rev(tmp_path: Path) -> None:
    write_task(tmp_path, "t")
    assert TaskStore(tmp_path).update("t", lambda t: None, NOW).rev == 1


def test_update_that_raises_writes_nothing(tmp_path: Path) -> None:
    path = write_task(tmp_path, "t")
    before = path.read_bytes()

    def refuse(task: Task) -> None:
        raise OperationFailed("no")

    with pytest.raises(OperationFailed):
        TaskStore(tmp_path).update("t", refuse, NOW)
    assert path.read_bytes() == before


def test_update_unknown_task(tmp_path: Path) -> None:
    with pytest.raises(TaskNotFound):
        TaskStore(tmp_path).update("nope", lambda t: None, NOW)


# -- what is not a task file ------------------------------------------------------------------------


def test_symlink_never_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    target = write_task(outside, "secret")
    before = target.read_bytes()
    before_stat = os.stat(target)
    tasks = tmp_path / "tasks"
    write_task(tasks, "good")
    (tasks / "x.json").symlink_to(target)
    store = TaskStore(tasks)

    with pytest.raises(OperationFailed, match="symlink"):
        store.load("x")
    with pytest.raises(OperationFailed):
        store.update("x", lambda t: setattr(t, "name", "owned"), NOW)

    entries = dict(store.list_tasks())
    assert isinstance(entries["good"], Task)
    assert isinstance(entries["x"], TaskFormatError)
    assert "symlink" in str(entries["x"])

    store.cleanup(NOW + timedelta(days=365), 1)
    assert target.read_bytes() == before
    assert os.stat(target).st_mtime_ns == before_stat.st_mtime_ns
    assert (tasks / "x.json").is_symlink()


def test_fifo_does_not_block_listing(tmp_path: Path) -> None:
    write_task(tmp_path, "good")
    os.mkfifo(tmp_path / "f.json")
    store = TaskStore(tmp_path)
    result: list[Any] = []
    worker = threading.Thread(target=lambda: result.append(store.list_tasks()), daemon=True)
    worker.start()
    worker.join(timeout=5)
    assert not worker.is_alive(), "list_tasks blocked on a FIFO"
    entries = dict(result[0])
    assert isinstance(entries["good"], Task)
    assert isinstance(entries["f"], TaskFormatError)
    assert str(entries["f"]) == "not a regular file"


def test_directory_named_json_reported(tmp_path: Path) -> None:
    (tmp_path / "d.json").mkdir()
    entries = dict(TaskStore(tmp_path).list_tasks())
    assert str(entries["d"]) == "not a regular file"


def test_list_tasks_skips_dotfiles_tmp_and_pulse(tmp_path: Path) -> None:
    write_task(tmp_path, "good")
    (tmp_path / ".hidden.json").write_text("{}")
    (tmp_path / ".good.json.tmp").write_text("{}")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".pulse").mkdir()
    (tmp_path / ".pulse" / "inner.json").write_text("{}")
    store = TaskStore(tmp_path)
    assert store.task_ids() == ["good"]
    assert [i for i, _ in store.list_tasks()] == ["good"]


def test_list_tasks_reports_invalid_and_missing_dir(tmp_path: Path) -> None:
    write_task(tmp_path, "good")
    (tmp_path / "bad.json").write_text("{not json")
    entries = dict(TaskStore(tmp_path).list_tasks())
    assert isinstance(entries["good"], Task)
    assert str(entries["bad"]).startswith("not valid JSON")
    assert TaskStore(tmp_path / "missing").list_tasks() == []


def test_load_invalid_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "bad.json").write_text('{"taskName": "t", "steps": []}')
    with pytest.raises(OperationFailed) as info:
        TaskStore(tmp_path).load("bad")
    assert str(info.value) == "task file bad.json is not readable: status is missing"
    assert not isinstance(info.value, TaskNotFound)


def test_oversized_file_refused_without_being_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_task(tmp_path, "good")
    big = tmp_path / "big.json"
    with big.open("wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: nothing is actually written
    store = TaskStore(tmp_path)
    reads: list[int] = []
    real_read = os.read

    def spy(fd: int, n: int) -> bytes:
        if os.fstat(fd).st_size > MAX_FILE_BYTES:
            reads.append(n)
        return real_read(fd, n)

    monkeypatch.setattr(os, "read", spy)
    with pytest.raises(OperationFailed, match=r"file too large \(1048577 bytes, limit 1048576\)"):
        store.load("big")
    entries = dict(store.list_tasks())
    assert isinstance(entries["good"], Task)
    assert str(entries["big"]) == "file too large (1048577 bytes, limit 1048576)"
    assert reads == []


# -- resolve ----------------------------------------------------------------------------------------


def test_resolve(tmp_path: Path) -> None:
    for task_id in ("report-20261124-093000", "report-20261124-100000", "build-1", "abc", "abc-2"):
        write_task(tmp_path, task_id)
    store = TaskStore(tmp_path)
    assert store.resolve("build-1") == "build-1"
    assert store.resolve("bui") == "build-1"
    assert store.resolve("report-20261124-10") == "report-20261124-100000"
    assert store.resolve("abc") == "abc"  # exact beats being a prefix of abc-2
    with pytest.raises(BadInput) as info:
        store.resolve("report")
    message = str(info.value)
    assert "ambiguous" in message
    assert "report-20261124-093000" in message and "report-20261124-100000" in message
    with pytest.raises(TaskNotFound, match="'nope' not found"):
        store.resolve("nope")
    with pytest.raises(BadInput):
        store.resolve("../../x")
    with pytest.raises(BadInput):
        store.resolve("")


def test_resolve_unicode_prefix(tmp_path: Path) -> None:
    write_task(tmp_path, "日报发布-20261124-093000")
    assert TaskStore(tmp_path).resolve("日报") == "日报发布-20261124-093000"


# -- cleanup ----------------------------------------------------------------------------------------


def cleanup_fixture(root: Path) -> TaskStore:
    write_task(root, "old-done", status="done", finishedAt=ago(10), updatedAt=ago(10))
    write_task(root, "old-error", status="error", finishedAt=None, updatedAt=ago(9))  # falls back to updatedAt
    write_task(root, "recent-done", status="done", finishedAt=ago(1), updatedAt=ago(1))
    write_task(root, "finished-recently", status="done", finishedAt=ago(2), updatedAt=ago(30))
    write_task(root, "old-running", status="running", updatedAt=ago(30))
    (root / "bad.json").write_text("nope")
    store = TaskStore(root)
    for task_id in store.task_ids():
        with store.locked(task_id):
            pass
    return store


def test_cleanup_removes_old_finished_tasks_and_their_locks(tmp_path: Path) -> None:
    store = cleanup_fixture(tmp_path)
    removed = store.cleanup(NOW, 7)
    assert sorted(removed) == ["old-done", "old-error"]
    assert store.task_ids() == ["bad", "finished-recently", "old-running", "recent-done"]
    locks = sorted(p.name for p in (tmp_path / ".pulse" / "locks").iterdir())
    assert locks == ["bad.lock", "finished-recently.lock", "old-running.lock", "recent-done.lock"]


def test_cleanup_dry_run_removes_nothing(tmp_path: Path) -> None:
    store = cleanup_fixture(tmp_path)
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert sorted(store.cleanup(NOW, 7, dry_run=True)) == ["old-done", "old-error"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == before


def test_cleanup_age_threshold(tmp_path: Path) -> None:
    store = cleanup_fixture(tmp_path)
    assert sorted(store.cleanup(NOW, 1.5, dry_run=True)) == ["finished-recently", "old-done", "old-error"]
    assert store.cleanup(NOW, 30) == []


def test_cleanup_empty_or_missing_dir(tmp_path: Path) -> None:
    assert TaskStore(tmp_path / "missing").cleanup(NOW, 7) == []
    assert not (tmp_path / "missing").exists()


def test_cleanup_sweeps_lock_files_of_tasks_deleted_by_hand(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    kept = store.create("Kept", ["a"], NOW)
    gone = store.create("Gone", ["a"], NOW)
    os.unlink(store.path_for(gone.task_id))  # removed without task-pulse
    busy = store.locks_dir / "busy-writer.lock"
    with store.locked("busy-writer"):  # a writer holding a lock whose task file is not written yet
        store.cleanup(NOW, 7)
        assert busy.exists()
    assert sorted(p.name for p in store.locks_dir.iterdir()) == sorted(["busy-writer.lock", f"{kept.task_id}.lock"])


def test_a_lock_swept_while_waited_for_is_taken_again_not_shared(tmp_path: Path) -> None:
    """A writer blocked on a lock file that a sweep then removes must not think it holds the lock."""
    store = TaskStore(tmp_path)
    store.ensure_dirs()
    lock_path = store.locks_dir / "t.lock"
    holder_in, release = threading.Event(), threading.Event()
    inside: list[str] = []

    def holder() -> None:
        with store.locked("t"):
            holder_in.set()
            release.wait(10)
            os.unlink(lock_path)  # what a sweep does, while holding the lock
            inside.append("holder-out")

    def waiter() -> None:
        holder_in.wait(10)
        with store.locked("t"):
            third = os.open(lock_path, os.O_RDWR | os.O_CREAT)  # a third writer arriving now must wait
            try:
                with pytest.raises(BlockingIOError):
                    fcntl.flock(third, fcntl.LOCK_EX | fcntl.LOCK_NB)
            finally:
                os.close(third)
            inside.append("waiter-in")  # only reached if the check above held

    def waiter_blocked() -> bool:
        """The waiter has the old lock file open too (two of this process's fds on its inode), waiting for it."""
        inode = os.stat(lock_path).st_ino
        fds = []
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                fds.append(os.stat(f"/proc/self/fd/{fd}").st_ino)
        return fds.count(inode) >= 2

    threads = [threading.Thread(target=holder), threading.Thread(target=waiter)]
    for t in threads:
        t.start()
    holder_in.wait(10)
    wait_for(waiter_blocked, 30, "the waiter blocked on the file about to be swept")
    release.set()
    for t in threads:
        t.join(10)
    assert inside == ["holder-out", "waiter-in"] and lock_path.exists()


def test_create_needs_a_name(tmp_path: Path) -> None:
    for name in ("", "   ", "\t"):
        with pytest.raises(BadInput, match="needs a name"):
            TaskStore(tmp_path).create(name, ["a"], NOW)


def test_sweeping_skips_names_no_task_can_have(tmp_path: Path) -> None:
    store = TaskStore(tmp_path)
    store.ensure_dirs()
    for odd in (".lock", ".x.lock", "notes.txt"):
        (store.locks_dir / odd).write_text("")
    assert store.sweep_locks() == 0
    assert sorted(p.name for p in store.locks_dir.iterdir()) == [".lock", ".x.lock", "notes.txt"]
