"""Two real accounts sharing a tasks dir: `tp-victim-N` runs task-pulse, `tp-mallory-N` (same group)
tries to get into its state, or to pass her tasks off as the victim's. Making accounts changes the
machine, so these run only when asked: TASK_PULSE_TEST_ACCOUNTS=1 (.ci/run sets it), as root, with an
interpreter both accounts can run (a venv on the system Python, or one under a readable path); else
they skip and say why.

The accounts and their group are named after this run (N: its pid), so runs side by side never share
them, and are removed when the module is done.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import shutil
import sqlite3
import subprocess
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import Daemon, clean_env, wait_for

_RUN = os.getpid()
GROUP, VICTIM, MALLORY = f"tp-share-{_RUN}", f"tp-victim-{_RUN}", f"tp-mallory-{_RUN}"
ALIAS = f"tp-alias-{_RUN}"  # a second name for the victim's own group id (groupadd -o), made by one test
ASKED = os.environ.get("TASK_PULSE_TEST_ACCOUNTS") == "1"
# Runs a console script's main with this test run's site-packages (and so its editable install).
_BOOT = ("import site, sys; site.addsitedir(sys.argv.pop(1)); name = sys.argv.pop(1); sys.argv[0] = name; "
         "from task_pulse.entry import main as tp; from task_pulsed.cli import main as tpd; "
         "(tp if name == 'task-pulse' else tpd)()")


@dataclass
class Account:
    name: str
    uid: int
    gid: int
    share_gid: int
    python: str
    home: Path

    def popen_args(self) -> dict[str, object]:
        return {"user": self.uid, "group": self.gid, "extra_groups": [self.share_gid], "cwd": str(self.home),
                "env": clean_env(HOME=str(self.home), LANG="C.UTF-8")}

    def command(self, program: str) -> list[str]:
        return [self.python, "-c", _BOOT, sysconfig.get_paths()["purelib"], program]

    def run(self, program: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.command(program), *args], capture_output=True, text=True, timeout=60,
                              **self.popen_args())  # type: ignore[call-overload]

    def python_code(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([self.python, "-c", code, *args], capture_output=True, text=True, timeout=60,
                              **self.popen_args())  # type: ignore[call-overload]


def _ensure(cmd: list[str], exists: Callable[[], bool]) -> None:
    """Run useradd/groupadd unless done; another test run may hold the lock on /etc/passwd for a moment."""
    for _ in range(50):
        if exists():
            return
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode == 0 or exists():
            return
        time.sleep(0.1)
    pytest.skip(f"cannot run {' '.join(cmd)}: {proc.stderr.strip()}")


def _exists(lookup: Callable[[str], object], name: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            lookup(name)
            return True
        except KeyError:
            return False
    return check


def _interpreters() -> list[str]:
    """This Python, or a system one of the same version (a venv's may sit under an unreadable /root)."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    found = [os.path.realpath(sys.executable), f"/usr/bin/python{version}", f"/usr/local/bin/python{version}"]
    return [p for p in dict.fromkeys(found) if os.path.exists(p)]


def _remove(cmd: list[str], exists: Callable[[], bool]) -> None:
    """userdel/groupdel, retried while another run holds the lock on /etc/passwd."""
    for _ in range(50):
        if not exists():
            return
        subprocess.run(cmd, capture_output=True, text=True)
        if not exists():
            return
        time.sleep(0.1)
    raise AssertionError(f"could not remove what the tests made: {' '.join(cmd)}")


@pytest.fixture(scope="module")
def base() -> Iterator[Path]:
    if not ASKED:
        pytest.skip("creates OS accounts and a group: runs only when asked, TASK_PULSE_TEST_ACCOUNTS=1 "
                    "(.ci/run sets it)")
    if os.geteuid() != 0 or not shutil.which("useradd"):
        pytest.skip("needs root and useradd to create two accounts")
    path = Path(tempfile.mkdtemp(prefix="tp-cross-user-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def accounts(base: Path) -> Iterator[dict[str, Account]]:
    """The two accounts and their shared group, made for this run and removed after it."""
    try:
        yield _make_accounts(base)
    finally:
        for name in (VICTIM, MALLORY):
            _remove(["userdel", name], _exists(pwd.getpwnam, name))
            _remove(["groupdel", name], _exists(grp.getgrnam, name))  # the user's own group, if userdel left it
        _remove(["groupdel", "--force", ALIAS], _exists(grp.getgrnam, ALIAS))  # its gid is the victim's primary
        _remove(["groupdel", GROUP], _exists(grp.getgrnam, GROUP))


def _make_accounts(base: Path) -> dict[str, Account]:
    _ensure(["groupadd", GROUP], _exists(grp.getgrnam, GROUP))
    made: dict[str, Account] = {}
    for name in (VICTIM, MALLORY):
        _ensure(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", "--user-group", "--groups", GROUP,
                 name], _exists(pwd.getpwnam, name))
        entry = pwd.getpwnam(name)
        home = base / f"home-{name}"
        home.mkdir()
        os.chown(home, entry.pw_uid, entry.pw_gid)
        made[name] = Account(name, entry.pw_uid, entry.pw_gid, grp.getgrnam(GROUP).gr_gid, "", home)
    probe = "import site, sys; site.addsitedir(sys.argv[1]); import task_pulse.entry, task_pulsed.cli"
    reasons = []
    for python in _interpreters():
        for account in made.values():
            account.python = python
        try:
            proc = made[VICTIM].python_code(probe, sysconfig.get_paths()["purelib"])
        except OSError as exc:  # not executable for them (under a private /root, say)
            reasons.append(f"{python}: {exc.strerror}")
            continue
        if proc.returncode == 0:
            return made
        reasons.append(f"{python}: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    pytest.skip("no interpreter the test accounts can run with this test run's packages (install into a venv made "
                f"from the system Python, under a world-readable path): {reasons}")


@pytest.fixture
def share(base: Path, accounts: dict[str, Account]) -> Iterator[Path]:
    """A tasks dir owned by the victim, group tp-share, group-writable (setgid, no sticky bit yet)."""
    path = base / f"share-{time.monotonic_ns()}"
    path.mkdir()
    os.chown(path, accounts[VICTIM].uid, accounts[VICTIM].share_gid)
    path.chmod(0o2770)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def running(accounts: dict[str, Account]) -> Iterator[list[Daemon]]:
    started: list[Daemon] = []
    yield started
    for d in started:
        if d.alive():
            d.kill()


def victim_daemon(share: Path, victim: Account) -> Daemon:
    return Daemon(share, "--stall", "60", command=victim.command("task-pulsed"), **victim.popen_args())


def one_error_line(proc: subprocess.CompletedProcess[str], *words: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert all(w in lines[0] for w in words), lines[0]
    return lines[0]


def daemon_refuses(share: Path, victim: Account, *words: str) -> None:
    d = victim_daemon(share, victim).start(wait_ready=False)
    assert d.proc is not None
    assert d.proc.wait(60) == 2, d.log()
    errors = [line for line in d.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and all(w in errors[0] for w in words), d.log()


def test_a_shared_dir_without_the_sticky_bit_gets_no_pulse_dir(share: Path, accounts: dict[str, Account]) -> None:
    victim = accounts[VICTIM]
    one_error_line(victim.run("task-pulse", "--dir", str(share), "create", "deploy", "push"), "chmod +t", GROUP)
    daemon_refuses(share, victim, "chmod +t")
    assert list(share.iterdir()) == []  # no task file, no .pulse: nothing half made
    share.chmod(0o3770)
    assert victim.run("task-pulse", "--dir", str(share), "create", "deploy", "push").returncode == 0
    pulse = (share / ".pulse").lstat()
    assert pulse.st_uid == victim.uid and pulse.st_mode & 0o777 == 0o700  # (setgid comes from the dir)


def test_with_the_sticky_bit_mallory_can_neither_read_nor_move_the_victims_state(
        share: Path, accounts: dict[str, Account], running: list[Daemon]) -> None:
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    share.chmod(0o3770)
    running.append(victim_daemon(share, victim).start())
    task_id = victim.run("task-pulse", "--dir", str(share), "create", "deploy", "push").stdout.strip()
    assert task_id
    # Mallory may add tasks (she shares the dir for that), and the victim's daemon announces them...
    made = mallory.python_code("import json, sys; open(sys.argv[1], 'w').write(json.dumps({'taskName': 'hers', "
                               "'status': 'running', 'steps': [{'name': 'a', 'status': 'running'}]}))",
                               str(share / "hers.json"))
    assert made.returncode == 0, made.stderr
    drained: list[str] = []

    def drain() -> bool:
        drained.append(victim.run("task-pulse", "--dir", str(share), "drain").stdout)
        return "hers" in "".join(drained)
    wait_for(drain, 30, "her task announced")
    # ...but she can neither read the state nor take its place.
    steal = mallory.python_code("import sys; open(sys.argv[1], 'rb').read()", str(share / ".pulse" / "state.db"))
    assert steal.returncode != 0 and "PermissionError" in steal.stderr
    swap = mallory.python_code("import os, sys; os.rename(sys.argv[1], sys.argv[1] + '-old')", str(share / ".pulse"))
    assert swap.returncode != 0 and "PermissionError" in swap.stderr
    assert (share / ".pulse").lstat().st_uid == victim.uid


def _mallorys_state_db(path: Path) -> None:
    """What mallory would leave for the victim to print: a state db of hers with one pending row."""
    db = sqlite3.connect(path)
    db.executescript("CREATE TABLE notifications (seq INTEGER PRIMARY KEY, key TEXT, task_id TEXT, kind TEXT, "
                     "text TEXT, data TEXT, created_at REAL, delivered_at REAL, delivered_by TEXT, "
                     "claimed_by TEXT, claimed_until REAL, attempts INTEGER DEFAULT 0);"
                     "INSERT INTO notifications (key, task_id, kind, text, data, created_at) VALUES "
                     "('k', 't', 'progress', 'MALLORY: pay 1 BTC to bc1q...', '{}', 0);")
    db.close()


@pytest.mark.parametrize("plant", ["her own dir", "symlink to the victim's dir", "world-writable dir of the victim's"])
def test_a_planted_pulse_dir_is_refused_by_every_command(share: Path, accounts: dict[str, Account], plant: str) -> None:
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    share.chmod(0o3770)
    app = victim.home / "app"
    app.mkdir(exist_ok=True)
    bookmarks = app / "bookmarks.sqlite"
    sqlite3.connect(bookmarks).executescript("CREATE TABLE IF NOT EXISTS bookmarks (url TEXT);")
    os.chown(app, victim.uid, victim.gid)
    os.chown(bookmarks, victim.uid, victim.gid)
    before = bookmarks.read_bytes()
    pulse = share / ".pulse"
    if plant == "her own dir":
        made = mallory.python_code("import os, sys; os.mkdir(sys.argv[1], 0o777); os.chmod(sys.argv[1], 0o777)",
                                   str(pulse))
        assert made.returncode == 0, made.stderr
        _mallorys_state_db(pulse / "state.db")
        os.chown(pulse / "state.db", mallory.uid, mallory.gid)
        words: tuple[str, ...] = ("belongs to", MALLORY)
    elif plant == "symlink to the victim's dir":
        made = mallory.python_code("import os, sys; os.symlink(sys.argv[2], sys.argv[1])", str(pulse), str(app))
        assert made.returncode == 0, made.stderr
        os.symlink(bookmarks, app / "state.db")  # what mallory hoped the daemon would open as its state
        words = ("is a symlink",)
    else:  # made by the victim, but open to the group: mallory may have planted anything in it
        pulse.mkdir()
        os.chown(pulse, victim.uid, victim.share_gid)
        pulse.chmod(0o770)
        made = mallory.python_code("import os, sys; os.symlink(sys.argv[2], sys.argv[1])", str(pulse / "state.db"),
                                   str(bookmarks))
        assert made.returncode == 0, made.stderr
        words = ("writable by group", GROUP, "chmod go-w")
    one_error_line(victim.run("task-pulse", "--dir", str(share), "create", "deploy", "push"), *words)
    drained = victim.run("task-pulse", "--dir", str(share), "drain")
    one_error_line(drained, *words)
    assert "MALLORY" not in drained.stdout
    daemon_refuses(share, victim, *words)
    assert not list(share.glob("*.json"))
    assert bookmarks.read_bytes() == before


def test_a_pulse_dir_swapped_under_a_running_daemon_is_not_used(
        share: Path, accounts: dict[str, Account], running: list[Daemon]) -> None:
    """The daemon started while the dir was private; then the dir was opened to the group without the
    sticky bit, and mallory moved the victim's `.pulse` aside and put hers there. The running daemon
    goes on with the database it opened; every new open (a writer, a drain) refuses the dir."""
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    share.chmod(0o2700)
    assert victim.run("task-pulse", "--dir", str(share), "create", "first", "a").returncode == 0
    running.append(victim_daemon(share, victim).start())
    share.chmod(0o2770)
    swap = mallory.python_code("import os, sys; os.rename(sys.argv[1], sys.argv[1] + '-old'); os.mkdir(sys.argv[1]);"
                               "os.chmod(sys.argv[1], 0o777)", str(share / ".pulse"))
    assert swap.returncode == 0, swap.stderr
    one_error_line(victim.run("task-pulse", "--dir", str(share), "create", "second", "a"), "chmod +t")
    one_error_line(victim.run("task-pulse", "--dir", str(share), "drain"), "chmod +t")
    hers = mallory.python_code("import json, sys; open(sys.argv[1], 'w').write(json.dumps({'taskName': 'hers', "
                               "'status': 'running', 'steps': [{'name': 'a', 'status': 'running'}]}))",
                               str(share / "hers.json"))
    assert hers.returncode == 0, hers.stderr
    real_db = share / ".pulse-old" / "state.db"

    def announced() -> bool:
        db = sqlite3.connect(real_db)
        try:
            return db.execute("SELECT count(*) FROM notifications WHERE task_id = 'hers'").fetchone()[0] == 1
        finally:
            db.close()
    wait_for(announced, 30, "her task announced into the victim's own (moved) state db")
    assert sorted(p.name for p in (share / ".pulse").iterdir()) == []  # nothing of the victim's went into hers


# -- sharing the mode bits do not show (privatedir.py) ----------------------------------------------------


@pytest.fixture
def private_dir(base: Path, accounts: dict[str, Account]) -> Iterator[Path]:
    """A tasks dir of the victim's, 0770 with the victim's private group: private by its mode bits."""
    victim = accounts[VICTIM]
    path = base / f"own-{time.monotonic_ns()}"
    path.mkdir()
    os.chown(path, victim.uid, victim.gid)
    path.chmod(0o770)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def refused_for_the_victim(tasks: Path, victim: Account, *words: str) -> None:
    one_error_line(victim.run("task-pulse", "--dir", str(tasks), "create", "deploy", "push"), *words)
    one_error_line(victim.run("task-pulse", "--dir", str(tasks), "drain"), *words)
    daemon_refuses(tasks, victim, *words)


def test_an_acl_for_mallory_is_sharing(private_dir: Path, accounts: dict[str, Account]) -> None:
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    assert victim.run("task-pulse", "--dir", str(private_dir), "create", "before", "a").returncode == 0
    if not shutil.which("setfacl"):
        pytest.skip("needs setfacl (Debian's acl package; .ci/run installs it)")
    subprocess.run(["setfacl", "-m", f"u:{MALLORY}:rwx", str(private_dir)], check=True)
    assert private_dir.stat().st_mode & 0o7777 == 0o770  # the mode bits still say private
    refused_for_the_victim(private_dir, victim, f"user {MALLORY} (an ACL", "chmod +t")
    # What the ACL gave her: renaming the victim's `.pulse` (what the check now refuses to work beside).
    moved = mallory.python_code("import os, sys; os.rename(sys.argv[1], sys.argv[1] + '-old')",
                                str(private_dir / ".pulse"))
    assert moved.returncode == 0, moved.stderr


def test_a_second_name_for_the_victims_group_id_is_sharing(private_dir: Path, accounts: dict[str, Account]) -> None:
    """`groupadd -o -g GID`: mallory holds the victim's private group under another name."""
    victim = accounts[VICTIM]
    _ensure(["groupadd", "-o", "-g", str(victim.gid), ALIAS], _exists(grp.getgrnam, ALIAS))
    try:
        _ensure(["gpasswd", "-a", MALLORY, ALIAS], lambda: MALLORY in grp.getgrnam(ALIAS).gr_mem)
        refused_for_the_victim(private_dir, victim, "writable by group", MALLORY, "chmod +t")
    finally:
        _remove(["groupdel", "--force", ALIAS], _exists(grp.getgrnam, ALIAS))
    assert victim.run("task-pulse", "--dir", str(private_dir), "create", "after", "a").returncode == 0


def test_a_directory_above_that_mallory_can_write_is_sharing(base: Path, accounts: dict[str, Account]) -> None:
    """She could rename the whole tasks dir (the victim's, private) and put one of hers in its place."""
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    above = base / f"above-{time.monotonic_ns()}"
    above.mkdir()
    os.chown(above, victim.uid, victim.share_gid)
    above.chmod(0o2770)
    tasks = above / "tasks"
    tasks.mkdir()
    os.chown(tasks, victim.uid, victim.gid)
    tasks.chmod(0o700)
    try:
        refused_for_the_victim(tasks, victim, f"{above} is writable by group {GROUP}", "could move")
        swapped = mallory.python_code("import os, sys; os.rename(sys.argv[1], sys.argv[1] + '-old'); "
                                      "os.mkdir(sys.argv[1])", str(tasks))
        assert swapped.returncode == 0, swapped.stderr  # what the refusal is about
        above.chmod(0o3770)  # sticky: she can no longer move the victim's tasks dir
        (above / "tasks").rmdir()
        os.rename(above / "tasks-old", tasks)
        assert victim.run("task-pulse", "--dir", str(tasks), "create", "after", "a").returncode == 0
    finally:
        shutil.rmtree(above, ignore_errors=True)


def test_a_foreign_pulse_of_any_mode_is_exit_2_naming_its_owner(share: Path, accounts: dict[str, Account]) -> None:
    """Mode 0700: the victim cannot even read it. Refused with its owner and the fix, exit 2 (systemd does not
    restart into it), never exit 1 with a permission error."""
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    share.chmod(0o3770)
    made = mallory.python_code("import os, sys; os.mkdir(sys.argv[1], 0o700)", str(share / ".pulse"))
    assert made.returncode == 0, made.stderr
    words = (f"belongs to uid {mallory.uid} ({MALLORY})", f"have {MALLORY} or root remove it", "rm -r")
    refused_for_the_victim(share, victim, *words)


# -- what mallory's tasks can do in the victim's chat and state ------------------------------------------


def mallorys_task(mallory: Account, path: Path, name: str, **fields: object) -> None:
    raw = {"taskName": name, "status": "running", "startedAt": "2026-11-25T10:00:00+00:00",
           "updatedAt": "2026-11-25T10:00:00+00:00", "steps": [{"name": "push", "status": "running"}], **fields}
    made = mallory.python_code("import sys; open(sys.argv[1], 'w').write(sys.argv[2])", str(path), json.dumps(raw))
    assert made.returncode == 0, made.stderr


def test_mallorys_task_never_reads_as_the_victims_own(share: Path, accounts: dict[str, Account],
                                                      running: list[Daemon]) -> None:
    """She named hers "Deploy prod" and pinged `🎉 done` for it: every message of it now says it is hers, and
    `status` says so too, her text masked."""
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    share.chmod(0o3770)
    running.append(victim_daemon(share, victim).start())
    assert victim.run("task-pulse", "--dir", str(share), "create", "Deploy prod", "push").returncode == 0
    mallorys_task(mallory, share / "hers.json", "Deploy prod")
    mallorys_task(mallory, share / "hers.json", "Deploy prod", status="done", result="🎉 shipped",
                  finishedAt="2026-11-25T10:05:00+00:00")
    wait_for(lambda: any(n["task_id"] == "hers" and n["kind"] == "done" for n in readable(share, victim)), 30,
             "her done ping")
    mark = f"👤{MALLORY} · Deploy prod"
    hers = [n for n in readable(share, victim) if n["task_id"] == "hers"]
    assert hers and all(mark in n["text"].split("\n")[0] for n in hers), [n["text"] for n in hers]
    assert all("👤" not in n["text"] for n in readable(share, victim) if n["task_id"] != "hers")
    status = victim.run("task-pulse", "--dir", str(share), "--lang", "en", "status")
    assert mark in status.stdout and status.stdout.count("👤") == 1, status.stdout


def readable(share: Path, victim: Account) -> list[dict[str, object]]:
    """The victim's outbox, as the victim reads it (drain --json would take the rows)."""
    proc = victim.python_code(
        "import json, sqlite3, sys; db = sqlite3.connect(sys.argv[1]); print(json.dumps([dict(zip(('task_id', "
        "'kind', 'text'), r)) for r in db.execute('SELECT task_id, kind, text FROM notifications ORDER BY seq')]))",
        str(share / ".pulse" / "state.db"))
    return json.loads(proc.stdout) if proc.returncode == 0 else []


def test_mallorys_big_files_written_and_deleted_do_not_fill_the_victims_disk(
        share: Path, accounts: dict[str, Account], running: list[Daemon]) -> None:
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    share.chmod(0o3770)
    running.append(victim_daemon(share, victim).start())
    churn = mallory.python_code(
        "import json, os, sys, time\n"
        "for i in range(15):\n"
        "    p = os.path.join(sys.argv[1], f'big-{i}.json')\n"
        "    open(p, 'w').write(json.dumps({'taskName': f'big {i}', 'status': 'running', 'steps': "
        "[{'name': 's', 'status': 'running', 'message': 'x' * 900000}]}))\n"
        "    time.sleep(0.3)\n"
        "    os.unlink(p)\n", str(share))
    assert churn.returncode == 0, churn.stderr
    wait_for(lambda: len([n for n in readable(share, victim) if n["kind"] == "started"]) >= 10, 30, "her files read")
    size = victim.python_code("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("
                              "'SELECT sum(length(CAST(snapshot AS BLOB))) FROM seen').fetchone()[0])",
                              str(share / ".pulse" / "state.db"))
    assert int(size.stdout) < 15 * 2000, size.stdout  # was 15 x 900 KB, kept 7 days


def test_cleanup_skips_what_it_may_not_remove_and_does_the_rest(base: Path, accounts: dict[str, Account],
                                                                running: list[Daemon]) -> None:
    """In a root-owned sticky dir, unlinking mallory's file is EPERM: it escaped the cleanup loop, so nothing was
    removed or purged again, a traceback every hour, and `cleanup` exited 1 (her `finishedAt: 1970` put it first)."""
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    sticky = base / f"sticky-{time.monotonic_ns()}"
    sticky.mkdir()
    sticky.chmod(0o1777)
    try:
        old = {"status": "done", "finishedAt": "1970-01-02T00:00:00+00:00", "updatedAt": "1970-01-02T00:00:00+00:00"}
        mallorys_task(mallory, sticky / "hers.json", "hers", **old)
        made = victim.python_code("import json, sys; open(sys.argv[1], 'w').write(json.dumps(dict(taskName='mine', "
                                  "steps=[], **json.loads(sys.argv[2]))))", str(sticky / "mine.json"), json.dumps(old))
        assert made.returncode == 0, made.stderr
        proc = victim.run("task-pulse", "--dir", str(sticky), "cleanup", "--json")
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["removed"] == ["mine"] and json.loads(proc.stdout)["notRemoved"] == ["hers"]
        assert proc.stderr.count("\n") == 1 and "hers.json cannot be removed" in proc.stderr
        mallorys_task(mallory, sticky / "hers2.json", "hers2", **old)
        victim.python_code("import json, sys; open(sys.argv[1], 'w').write(json.dumps(dict(taskName='mine2', "
                           "steps=[], **json.loads(sys.argv[2]))))", str(sticky / "mine2.json"), json.dumps(old))
        d = Daemon(sticky, "--cleanup-interval", "1", "--announce-existing", command=victim.command("task-pulsed"),
                   **victim.popen_args()).start()
        running.append(d)
        wait_for(lambda: not (sticky / "mine2.json").exists(), 30, "the victim's own expired task removed")
        wait_for(lambda: d.log().count("cleanup:") >= 3, 30, "more cleanup rounds")
        assert "Traceback" not in d.log() and d.log().count("hers2.json cannot be removed") == 1, d.log()
    finally:
        shutil.rmtree(sticky, ignore_errors=True)


def test_the_skill_under_a_group_umask_is_no_way_in(base: Path, accounts: dict[str, Account]) -> None:
    """In a setgid group workspace with `umask 002`, SKILL.md, the record and their folders were group-writable:
    mallory pointed the record's `paths` at her package, and the victim's next `status` ran her code."""
    victim, mallory = accounts[VICTIM], accounts[MALLORY]
    workspace = base / f"workspace-{time.monotonic_ns()}"
    workspace.mkdir()
    os.chown(workspace, victim.uid, victim.share_gid)
    workspace.chmod(0o2770)
    dest = workspace / "skills" / "live-task-pulse"
    install = (f"import os, sys; os.umask(0o002); site = sys.argv.pop(1); import site as s; s.addsitedir(site); "
               f"from task_pulse.cli import main; main(['skill', 'install', '--dest', {str(dest)!r}])")
    made = victim.python_code(install, sysconfig.get_paths()["purelib"])
    assert made.returncode == 0, made.stderr
    evil = base / f"evil-{time.monotonic_ns()}"
    marker = evil / "ran"
    for target in (dest / "SKILL.md", dest / ".task-pulse.json"):
        tamper = mallory.python_code("import sys; open(sys.argv[1], 'a').write('pwned')", str(target))
        assert tamper.returncode != 0 and "PermissionError" in tamper.stderr, target
    # An older install's folder, group-writable: she swaps the record for hers; the script does not follow it.
    os.chown(dest, victim.uid, victim.share_gid)
    dest.chmod(0o2775)
    (evil / "task_pulse").mkdir(parents=True)
    (evil / "task_pulse" / "__init__.py").write_text("")
    (evil / "task_pulse" / "entry.py").write_text(f"def main(args=None):\n    open({str(marker)!r}, 'w')\n")
    evil.chmod(0o777)
    record = json.dumps({"python": sys.executable, "version": list(sys.version_info[:2]), "paths": [str(evil)]})
    swap = mallory.python_code("import os, sys; open(sys.argv[1] + '.new', 'w').write(sys.argv[2]); "
                               "os.replace(sys.argv[1] + '.new', sys.argv[1])", str(dest / ".task-pulse.json"), record)
    assert swap.returncode == 0, swap.stderr
    ran = victim.python_code("import runpy, sys; sys.argv = ['task_pulse.py', 'status']; "
                             f"runpy.run_path({str(dest / 'scripts' / 'task_pulse.py')!r}, run_name='__main__')")
    assert not marker.exists(), ran.stderr
    assert "not yours alone" in ran.stderr
    shutil.rmtree(workspace, ignore_errors=True)
    shutil.rmtree(evil, ignore_errors=True)
