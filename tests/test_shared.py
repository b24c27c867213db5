"""Daemons of several hosts sharing one PostgreSQL outbox (`--state postgresql://…`), against a real
server (tests/postgres.py: a cluster of the tests' own, or TASK_PULSE_TEST_PG_URL; skipped without).

Each "host" is a real `task-pulsed` on a tasks dir of its own with its own `--host-name`; writers
are real fsync'd atomic writes (TaskStore, as `task-pulse` does them). What must hold: every
notification a host's daemon queued locally is in the shared outbox exactly once, in the same order
per (host, task), through races, kill -9 and the server going away.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.conftest import BIN, Daemon, clean_env, read_notifications, wait_for
from tests.postgres import PgServer
from tests.test_card import OPENCLAW, Chat
from tests.test_systemd import NotifySocket

HOSTS = ("alpha", "beta")
# One worker runs them all, on one server: see addopts in pyproject.toml.
pytestmark = pytest.mark.xdist_group("postgresql")


def shared_rows(url: str) -> list[dict[str, Any]]:
    import psycopg

    with psycopg.connect(url) as conn:
        cur = conn.execute("SELECT seq, host, key, task_id, kind, text, delivered_at, delivered_by "
                           "FROM task_pulse.notifications ORDER BY seq")
        names = [c.name for c in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def shared_snapshot(url: str, host: str, task_id: str) -> str | None:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT snapshot FROM task_pulse.tasks WHERE host = %s AND task_id = %s",
                           (host, task_id)).fetchone()
        return None if row is None else row[0]


def host_daemon(tasks_dir: Path, url: str, host: str, *args: str, env: dict[str, str] | None = None) -> Daemon:
    tasks_dir.mkdir(exist_ok=True)
    return Daemon(tasks_dir, "--state", url, "--host-name", host, *args, env=env)


def advance(store: TaskStore, task_id: str, message: str) -> None:
    """`task-pulse next ID MESSAGE`, or on the last step `task-pulse done ID` (one message for both)."""
    def change(task: Any) -> None:
        now = datetime.now(UTC).isoformat()
        i = next(i for i, s in enumerate(task.steps) if s.status == "running")
        if i + 1 == len(task.steps):
            task.finish(now, "all done")
            return
        task.steps[i].status, task.steps[i].message, task.steps[i].finished_at = "done", message, now
        task.steps[i + 1].status = "running"

    store.update(task_id, change, datetime.now(UTC))


def write_tasks(tasks_dir: Path, count: int, steps: int, pause: float = 0.0, prefix: str = "job",
                label: str = "") -> list[str]:
    """`count` tasks with the same ids on every host (names start with `label`), each run to its end,
    step by step."""
    store = TaskStore(tasks_dir)
    ids = [store.create(f"{label}{prefix} {i}", [f"s{k}" for k in range(steps)], datetime.now(UTC),
                        task_id=f"{prefix}-{i}").task_id for i in range(count)]
    for k in range(steps):
        for task_id in ids:
            advance(store, task_id, f"{label}step {k} of {task_id}")
            time.sleep(pause)
    return ids


def local_keys(tasks_dir: Path) -> list[str]:
    return [n["key"] for n in read_notifications(tasks_dir)]


def assert_exactly_once_in_order(url: str, dirs: dict[str, Path]) -> list[dict[str, Any]]:
    """Every host's local notifications are in the shared outbox once each, in the same order per task."""
    rows = shared_rows(url)
    by_host_key = Counter((r["host"], r["key"]) for r in rows)
    assert max(by_host_key.values()) == 1, [k for k, n in by_host_key.items() if n > 1][:5]
    for host, tasks_dir in dirs.items():
        local = read_notifications(tasks_dir)
        assert {r["key"] for r in rows if r["host"] == host} == {n["key"] for n in local}, host
        for task_id in {n["task_id"] for n in local}:
            assert [r["key"] for r in rows if r["host"] == host and r["task_id"] == task_id] == \
                [n["key"] for n in local if n["task_id"] == task_id], (host, task_id)
    return rows


def all_forwarded(url: str, dirs: dict[str, Path]) -> bool:
    expected = sum(len(local_keys(d)) for d in dirs.values())
    return expected > 0 and len(shared_rows(url)) == expected


def test_two_daemons_on_two_dirs_meet_in_one_outbox(tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    dirs = {host: tmp_path / host for host in HOSTS}
    for host, tasks_dir in dirs.items():
        daemons.append(host_daemon(tasks_dir, pg_url, host).start())
    for tasks_dir in dirs.values():
        write_tasks(tasks_dir, 4, 3)  # the same ids on both hosts: (host, task id) keeps them apart
    wait_for(lambda: all(len(local_keys(d)) == 4 * 4 for d in dirs.values()), 30, "every host's notifications")
    wait_for(lambda: all_forwarded(pg_url, dirs), 30, "everything forwarded")
    rows = assert_exactly_once_in_order(pg_url, dirs)
    assert Counter(r["host"] for r in rows) == {"alpha": 16, "beta": 16}
    assert all(n["delivered_by"] == "shared" for d in dirs.values() for n in read_notifications(d))

    status = subprocess.run([str(BIN / "task-pulse"), "--lang", "en", "status", "--all-hosts", "--state", pg_url],
                            capture_output=True, text=True, env=clean_env(), timeout=60)
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[-1] == "📊 🔄0 ⚠️0 ✅8 ❌0"
    assert {line.split()[1] for line in status.stdout.splitlines() if line.startswith("✅")} == {"[alpha]", "[beta]"}
    as_json = subprocess.run([str(BIN / "task-pulse"), "status", "--all-hosts", "--json", "--state", pg_url],
                             capture_output=True, text=True, env=clean_env(), timeout=60)
    records = json.loads(as_json.stdout)
    assert sorted((r["host"], r["taskId"]) for r in records) == sorted((h, f"job-{i}") for h in HOSTS for i in range(4))
    assert {r["taskName"] for r in records} == {f"job {i}" for i in range(4)}  # the host is a field of its own
    drained = subprocess.run([str(BIN / "task-pulse"), "drain", "--json"], capture_output=True, text=True,
                             env=clean_env(TASK_PULSE_STATE=pg_url), timeout=60)  # from any host, by the env
    assert drained.returncode == 0, drained.stderr
    printed = [json.loads(line) for line in drained.stdout.splitlines()]
    assert sorted((p["host"], p["key"]) for p in printed) == sorted((r["host"], r["key"]) for r in rows)
    again = subprocess.run([str(BIN / "task-pulse"), "drain", "--state", pg_url], capture_output=True, text=True,
                           env=clean_env(), timeout=60)
    assert (again.returncode, again.stdout) == (0, "")
    local = subprocess.run([str(BIN / "task-pulse"), "--dir", str(dirs["alpha"]), "drain"], capture_output=True,
                           text=True, env=clean_env(), timeout=60)  # this dir's outbox is the spool: not for it
    assert local.returncode == 2 and "forwards to the shared state database" in local.stderr
    store = TaskStore(dirs["beta"])  # a write that tells nothing (a bare heartbeat) still reaches the snapshot
    store.create("Quiet", ["a"], datetime.now(UTC), task_id="quiet")
    wait_for(lambda: shared_snapshot(pg_url, "beta", "quiet"), 30, "the new task's snapshot")
    store.update("quiet", lambda t: t.touch(None), datetime.now(UTC))
    updated = json.loads((dirs["beta"] / "quiet.json").read_text())["updatedAt"]
    wait_for(lambda: json.loads(shared_snapshot(pg_url, "beta", "quiet") or "{}").get("updatedAt") == updated, 30,
             "the heartbeat's updatedAt in the shared db")
    for d in daemons:
        assert d.stop() == 0


_DRAIN_LOOP = """
import json, subprocess, sys, time, os
printed, idle = [], 0
while idle < 20:
    out = subprocess.run([sys.argv[1], "drain", "--json", "--limit", "7", "--state", sys.argv[2]],
                         capture_output=True, text=True, check=True).stdout
    got = [[json.loads(line)["host"], json.loads(line)["key"]] for line in out.splitlines()]
    printed += got
    idle = 0 if got or not os.path.exists(sys.argv[3]) else idle + 1
    time.sleep(0.02)
print(json.dumps(printed))
"""


def test_two_drains_and_a_sink_racing_deliver_each_notification_once(tmp_path: Path, pg_url: str,
                                                                     daemons: list[Daemon]) -> None:
    """alpha's daemon delivers every host's notifications through a sink, one message each; two drains
    on the shared outbox take what they can meanwhile: together they deliver each one exactly once."""
    chat = Chat(tmp_path)
    dirs = {host: tmp_path / host for host in HOSTS}
    daemons.append(host_daemon(dirs["alpha"], pg_url, "alpha", "--openclaw", "telegram:1", "--openclaw-bin",
                               str(OPENCLAW), "--style", "stream", env=chat.env()).start())
    daemons.append(host_daemon(dirs["beta"], pg_url, "beta").start())
    done_flag = tmp_path / "all-queued"
    loops = [subprocess.Popen([sys.executable, "-c", _DRAIN_LOOP, str(BIN / "task-pulse"), pg_url, str(done_flag)],
                              stdout=subprocess.PIPE, text=True, env=clean_env()) for _ in range(2)]
    writers = [threading.Thread(target=write_tasks, args=(d, 5, 6, 0.01), kwargs={"label": f"{host} "})
               for host, d in dirs.items()]  # the same ids, told apart in the chat by their names
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join()
    wait_for(lambda: all_forwarded(pg_url, dirs), 60, "everything forwarded")
    done_flag.touch()
    drained = [tuple(p) for loop in loops for p in json.loads(loop.communicate(timeout=120)[0])]
    wait_for(lambda: all(r["delivered_at"] for r in shared_rows(pg_url)), 60, "every row delivered")
    rows = assert_exactly_once_in_order(pg_url, dirs)
    assert len(drained) == len(set(drained)), "a drain printed a row twice"
    by_sink = {(r["host"], r["key"]) for r in rows if r["delivered_by"] == "openclaw:cli"}
    assert by_sink.isdisjoint(drained), "printed by a drain and sent by the sink"
    assert by_sink | set(drained) == {(r["host"], r["key"]) for r in rows}
    assert len(chat.sends()) == len(by_sink)  # one message per row the sink took, none twice
    texts = {(r["host"], r["key"]): r["text"] for r in rows}
    for host in HOSTS:  # the sink keeps each task's order, for the other host's tasks too
        for i in range(5):
            mine = [texts[k] for k in sorted(by_sink, key=lambda k: next(r["seq"] for r in rows
                                                                          if (r["host"], r["key"]) == k))
                    if k[0] == host and k[1].startswith(f"job-{i}:")]
            sent = [s["text"] for s in chat.sends() if s["text"] in mine]
            assert sent == mine, (host, i)
    assert not [r for r in rows if r["delivered_by"] not in ("openclaw:cli", "drain")]


def test_a_courier_wakes_for_another_hosts_notification(tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    """Nothing happens on alpha, whose daemon has the sink: beta's NOTIFY alone must wake its couriers
    (they never poll), and the card of beta's task is alpha's to keep."""
    chat = Chat(tmp_path)
    daemons.append(host_daemon(tmp_path / "alpha", pg_url, "alpha", "--openclaw", "telegram:1", "--openclaw-bin",
                               str(OPENCLAW), env=chat.env()).start())
    daemons.append(host_daemon(tmp_path / "beta", pg_url, "beta").start())
    time.sleep(1.5)  # both idle: every courier of alpha asleep on its doorbell
    store = TaskStore(tmp_path / "beta")
    task_id = store.create("Far away", ["a", "b"], datetime.now(UTC)).task_id
    written = time.monotonic()
    wait_for(lambda: chat.sends(), 15, "the card of beta's task, sent by alpha")
    assert time.monotonic() - written < 10
    advance(store, task_id, "half")
    wait_for(lambda: chat.edits(), 15, "the card edited for beta's next step")
    assert {e["id"] for e in chat.edits()} == {chat.sends()[0]["messageId"]}
    assert chat.sends()[0]["text"].startswith("🔄 【Far away】")


def test_kill_9_of_one_daemon_under_load(tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    dirs = {host: tmp_path / host for host in HOSTS}
    alpha = host_daemon(dirs["alpha"], pg_url, "alpha").start()
    daemons.append(alpha)
    daemons.append(host_daemon(dirs["beta"], pg_url, "beta").start())
    writers = [threading.Thread(target=write_tasks, args=(d, 6, 12, 0.005)) for d in dirs.values()]
    for writer in writers:
        writer.start()
    wait_for(lambda: len(local_keys(dirs["alpha"])) >= 20, 30, "alpha under load")
    alpha.kill()
    killed_at = len(local_keys(dirs["alpha"]))
    again = host_daemon(dirs["alpha"], pg_url, "alpha").start()
    daemons.append(again)
    for writer in writers:
        writer.join()
    expected = 6 * (1 + 12)  # started, then 11 steps and the done that finishes the 12th
    wait_for(lambda: all(len(local_keys(d)) == expected for d in dirs.values()), 60, "every notification")
    wait_for(lambda: all_forwarded(pg_url, dirs), 60, "everything forwarded")
    assert_exactly_once_in_order(pg_url, dirs)
    assert 0 < killed_at < expected
    assert "Traceback" not in alpha.log() + again.log()


def test_the_database_away_for_10_s_under_load_loses_nothing(tmp_path: Path, pg_url: str, own_pg_server: PgServer,
                                                            daemons: list[Daemon]) -> None:
    notify = NotifySocket()
    dirs = {host: tmp_path / host for host in HOSTS}
    env = clean_env(NOTIFY_SOCKET="@" + notify.name, WATCHDOG_USEC="2000000")
    # Two new tasks every few hundred ms: far past the flood limit, which this test is not about.
    daemons.extend(host_daemon(d, pg_url, host, "--news-burst", "10000", env=env).start() for host, d in dirs.items())
    stop = threading.Event()

    def keep_writing(tasks_dir: Path) -> None:
        n = 0
        while not stop.is_set():
            write_tasks(tasks_dir, 2, 4, 0.02, prefix=f"round{n}")
            n += 1

    writers = [threading.Thread(target=keep_writing, args=(d,)) for d in dirs.values()]
    for writer in writers:
        writer.start()
    try:
        wait_for(lambda: len(shared_rows(pg_url)) >= 10, 30, "forwarding under load")
        own_pg_server.stop()
        down_at = time.monotonic()
        before = {h: len(local_keys(d)) for h, d in dirs.items()}
        wait_for(lambda: any("STATUS=degraded: the shared state database is unreachable" in a
                             for a in notify.assignments()), 20, "a degraded STATUS")
        wait_for(lambda: time.monotonic() - down_at >= 10, 15, "10 s of outage")
        assert all(len(local_keys(d)) > before[h] for h, d in dirs.items()), "the daemons stopped watching"
        own_pg_server.start()
    finally:
        stop.set()
        for writer in writers:
            writer.join()
    wait_for(lambda: all_forwarded(pg_url, dirs), 90, "the spool sent once the database is back")
    assert_exactly_once_in_order(pg_url, dirs)
    wait_for(lambda: not [a for a in notify.assignments()[-4:] if "degraded" in a], 30, "STATUS back to normal")
    for d in daemons:
        assert d.stop() == 0
        assert "unreachable" in d.log() and "reachable again" in d.log()


def test_a_newer_schema_stops_the_daemon_and_the_readers(tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    first = host_daemon(tmp_path / "alpha", pg_url, "alpha").start()  # sets the schema up
    assert first.stop() == 0
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE task_pulse.meta SET value = '99' WHERE name = 'schema_version'")
    newer = host_daemon(tmp_path / "alpha", pg_url, "alpha")
    daemons.append(newer.start(wait_ready=False))
    assert newer.proc is not None and newer.proc.wait(30) == 1
    assert "has schema 99, newer than this task-pulse's" in newer.log()
    drain = subprocess.run([str(BIN / "task-pulse"), "drain", "--state", pg_url], capture_output=True, text=True,
                           env=clean_env(), timeout=60)
    assert drain.returncode == 1 and "newer than this task-pulse's" in drain.stderr


def test_a_bad_state_url_is_a_usage_error(tmp_path: Path) -> None:
    proc = subprocess.run([str(BIN / "task-pulsed"), "--dir", str(tmp_path), "--state", "mysql://x", "--check"],
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert proc.returncode == 2 and "must be a postgresql:// URL" in proc.stderr
    proc = subprocess.run([str(BIN / "task-pulse"), "status", "--all-hosts"], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    assert proc.returncode == 2 and "--all-hosts reads the shared state database" in proc.stderr


@pytest.fixture(autouse=True)
def _needs_psycopg() -> None:
    pytest.importorskip("psycopg", reason="needs psycopg: pip install -e '.[test]'")
