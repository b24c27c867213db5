"""Who can read and write what, and what happens when the disk says no."""

from __future__ import annotations

import contextlib
import os
import stat
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.conftest import BIN, Daemon, clean_env, kinds, run_tp, wait_for


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_private_files_and_dirs(tasks_dir: Path, daemon: Daemon) -> None:
    task_id = run_tp(tasks_dir, "create", "Private", "a").stdout.strip()
    wait_for(lambda: kinds(tasks_dir) == ["started"], 30, "started")
    pulse = tasks_dir / ".pulse"
    assert mode(pulse) == 0o700 and mode(pulse / "locks") == 0o700
    assert mode(tasks_dir / f"{task_id}.json") == 0o600
    assert mode(pulse / "locks" / f"{task_id}.lock") == 0o600
    assert mode(pulse / "daemon.lock") == 0o600
    for name in ("state.db", "state.db-wal", "state.db-shm"):
        if (pulse / name).exists():
            assert mode(pulse / name) == 0o600, name


def test_an_existing_open_pulse_dir_is_made_private(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir(mode=0o755)
    os.chmod(tasks_dir / ".pulse", 0o755)
    run_tp(tasks_dir, "create", "x", "a")
    assert mode(tasks_dir / ".pulse") == 0o700


def test_a_world_writable_tasks_dir_without_the_sticky_bit_is_refused(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir(mode=0o700)  # made while it was private: still refused, as anyone could swap it
    os.chmod(tasks_dir, 0o777)
    proc = run_tp(tasks_dir, "create", "x", "a", check=False)
    assert proc.returncode == 2 and "chmod +t" in proc.stderr and len(proc.stderr.splitlines()) == 1
    daemon = run_daemon_once(tasks_dir)
    assert daemon.returncode == 2 and "chmod +t" in daemon.stderr


@pytest.mark.parametrize("dir_mode", [0o1777])
def test_a_world_writable_tasks_dir_gets_a_loud_warning(tasks_dir: Path, daemons: list[Daemon], dir_mode: int) -> None:
    os.chmod(tasks_dir, dir_mode)
    d = Daemon(tasks_dir).start()
    daemons.append(d)
    (line,) = [x for x in d.log().splitlines() if "SECURITY" in x]
    assert "WARNING" in line and "every local user" in line and "chmod o-w" in line


def test_a_private_tasks_dir_gets_no_warning(tasks_dir: Path, daemon: Daemon) -> None:
    assert "SECURITY" not in daemon.log()


@contextmanager
def small_filesystem(where: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` at `where` (root only: skipped elsewhere)."""
    where.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)], capture_output=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def one_clear_error(proc: subprocess.CompletedProcess[str], *words: str) -> None:
    assert proc.returncode == 1, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if " ERROR " in line]
    assert len(errors) == 1 and all(w in errors[0] for w in words), proc.stderr
    assert "Traceback" not in proc.stderr


def run_daemon_once(tasks_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "task-pulsed"), "--dir", str(tasks_dir), *args], capture_output=True,
                          text=True, env=clean_env(), timeout=60)


def test_a_read_only_disk_is_one_clear_error(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "ro", "1m") as fs:
        tasks = fs / "tasks"
        tasks.mkdir()
        run_tp(tasks, "create", "x", "a")  # creates .pulse/ too
        subprocess.run(["mount", "-o", "remount,ro", str(fs)], check=True)
        one_clear_error(run_daemon_once(tasks), "Read-only file system")


def test_a_read_only_state_db_is_one_clear_error(tmp_path: Path, tasks_dir: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    d = Daemon(tasks_dir).start()  # leaves a state db behind
    assert d.stop() == 0
    db = tasks_dir / ".pulse" / "state.db"
    if subprocess.run(["mount", "--bind", str(db), str(db)], capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(db)], check=True)
        one_clear_error(run_daemon_once(tasks_dir), "state.db", "readonly")
    finally:
        subprocess.run(["umount", str(db)], check=False)


def test_a_full_disk_is_one_clear_error(tmp_path: Path) -> None:
    with small_filesystem(tmp_path / "full", "400k") as fs:
        tasks = fs / "tasks"
        tasks.mkdir()
        for i in range(60):
            run_tp(tasks, "create", f"task {i}", "fetch", "filter", "write", "publish")
        filler = fs / "filler"
        with open(filler, "wb", buffering=0) as fh, contextlib.suppress(OSError):
            while True:  # take every block that is left
                fh.write(b"\0" * 4096)
        one_clear_error(run_daemon_once(tasks, "--announce-existing"), "full")


def test_a_corrupt_state_db_is_one_clear_error_for_drain_and_daemon(tasks_dir: Path) -> None:
    (tasks_dir / ".pulse").mkdir(mode=0o700)
    (tasks_dir / ".pulse" / "state.db").write_bytes(b"this is not a database" * 100)
    drain = run_tp(tasks_dir, "drain", check=False)
    assert drain.returncode == 1 and drain.stderr.startswith("Error: state database")
    assert drain.stderr.count("\n") == 1
    one_clear_error(run_daemon_once(tasks_dir), "state.db", "not a database")


@pytest.mark.parametrize("planted", ["a file", "a symlink", "locks as a symlink"])
def test_a_pulse_entry_that_is_not_a_directory_of_ours_is_refused(tasks_dir: Path, tmp_path: Path,
                                                                  planted: str) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    if planted == "a file":
        (tasks_dir / ".pulse").write_text("")
    elif planted == "a symlink":
        (tasks_dir / ".pulse").symlink_to(elsewhere)
    else:
        (tasks_dir / ".pulse").mkdir(mode=0o700)
        (tasks_dir / ".pulse" / "locks").symlink_to(elsewhere)
    proc = run_tp(tasks_dir, "create", "x", "a", check=False)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
    assert ("not a directory" if planted == "a file" else "is a symlink") in proc.stderr
    assert list(elsewhere.iterdir()) == [] and not list(tasks_dir.glob("*.json"))


# -- sharing that does not show in the mode bits (privatedir.py) ------------------------------------------


def refused_everywhere(tasks_dir: Path, *words: str) -> None:
    """Every command that opens `.pulse` refuses, with one line naming the sharing, exit 2; the daemon too."""
    for verb in (["create", "x", "a"], ["drain"]):
        proc = run_tp(tasks_dir, *verb, check=False)
        assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1, proc.stderr
        assert all(w in proc.stderr for w in words), proc.stderr
    daemon = run_daemon_once(tasks_dir)
    assert daemon.returncode == 2 and all(w in daemon.stderr for w in words), daemon.stderr


@pytest.fixture
def setfacl() -> str:
    import shutil

    found = shutil.which("setfacl")
    if found is None:
        pytest.skip("needs setfacl (Debian's acl package; .ci/run installs it)")
    return found


def test_an_acl_that_lets_another_user_write_is_sharing(tasks_dir: Path, setfacl: str) -> None:
    """`setfacl -m u:nobody:rwx` leaves the mode 0770 with a private group: the mode bits say private."""
    os.chmod(tasks_dir, 0o770)
    subprocess.run([setfacl, "-m", "u:nobody:rwx", str(tasks_dir)], check=True)
    assert mode(tasks_dir) == 0o770
    refused_everywhere(tasks_dir, "user nobody (an ACL", "chmod +t")
    os.chmod(tasks_dir, 0o1770)  # sticky: she may add tasks, not move `.pulse`
    assert run_tp(tasks_dir, "create", "x", "a").returncode == 0


def test_an_acl_on_pulse_itself_is_refused_or_taken_away(tasks_dir: Path, setfacl: str) -> None:
    """One that lets another user write is refused (what is in `.pulse` may be theirs); one that lets them read
    is taken away, as read bits in its mode are."""
    run_tp(tasks_dir, "create", "x", "a")
    pulse = tasks_dir / ".pulse"
    subprocess.run([setfacl, "-m", "u:nobody:rwx", str(pulse)], check=True)
    refused_everywhere(tasks_dir, f"{pulse} is writable by user nobody (an ACL", "setfacl -b")
    subprocess.run([setfacl, "-m", "u:nobody:r-x", str(pulse)], check=True)
    run_tp(tasks_dir, "create", "y", "a")
    assert mode(pulse) == 0o700
    acl = subprocess.run(["getfacl", "-c", str(pulse)], capture_output=True, text=True).stdout
    assert "nobody" not in acl, acl


@pytest.mark.parametrize("parent_mode", [0o777, 0o770])
def test_a_directory_above_the_tasks_dir_that_others_can_write_is_sharing(tmp_path: Path, parent_mode: int,
                                                                          setfacl: str) -> None:
    """Whoever can write the directory above may rename the tasks dir itself and put another in its place."""
    parent = tmp_path / "shared"
    tasks = parent / "tasks"
    tasks.mkdir(parents=True)
    os.chmod(parent, parent_mode)
    if parent_mode == 0o770:  # group: root's, held by nobody else here; an ACL gives it to nobody
        subprocess.run([setfacl, "-m", "u:nobody:rwx", str(parent)], check=True)
    refused_everywhere(tasks, f"{parent} is writable by", "could move")
    os.chmod(parent, 0o1777 if parent_mode == 0o777 else 0o1770)  # sticky, and the tasks dir is ours
    assert run_tp(tasks, "create", "x", "a").returncode == 0


def test_a_directory_above_owned_by_another_user_is_sharing(tmp_path: Path) -> None:
    parent = tmp_path / "someone-elses"
    tasks = parent / "tasks"
    tasks.mkdir(parents=True)
    os.chown(parent, 65534, 65534)  # nobody's
    refused_everywhere(tasks, f"{parent} belongs to uid 65534", "use a tasks dir outside")


def test_the_state_db_is_opened_through_the_checked_handle(tasks_dir: Path) -> None:
    """`.pulse` moved away after it was checked, another put in its place: what the process opens is the one it
    checked (by name, it would have opened the other)."""
    from task_pulse.state.outbox import Outbox
    from task_pulse.store import TaskStore

    run_tp(tasks_dir, "create", "mine", "a")
    Outbox.for_store(TaskStore(tasks_dir)).close()
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    os.rename(tasks_dir / ".pulse", tasks_dir / ".pulse-moved")
    planted = tasks_dir / ".pulse"
    planted.mkdir(mode=0o700)
    import sqlite3

    sqlite3.connect(planted / "state.db").executescript("CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT);"
                                                        "INSERT INTO meta VALUES ('schema_version', '999');")
    path = store.private_path("state.db")
    assert path is not None
    outbox = Outbox(Path(path), create=False)  # schema 999 would be refused: it is the checked db that opens
    try:
        assert outbox.db.execute("PRAGMA database_list").fetchone()[2] == str(tasks_dir / ".pulse-moved" / "state.db")
    finally:
        outbox.close()
    with store.locked("mine"):
        assert (tasks_dir / ".pulse-moved" / "locks" / "mine.lock").exists()
    assert not (planted / "locks").exists()
