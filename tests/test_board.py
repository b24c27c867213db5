"""`task-pulse board`: the real server as a process, against real task dirs, a real daemon, and the real
PostgreSQL for several hosts. What must hold: the page lists what `status --json` lists; a write reaches an
open event stream within a second; off loopback nothing is served without the token; hostile task text
arrives masked and escaped; the board writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.boardproc import Board, EventStream
from tests.conftest import BIN, Daemon, clean_env, run_tp, wait_for
from tests.test_shared import HOSTS, host_daemon

# The deadline for a write to reach an open page (the "within a second"): waited for, never timed.
LIVE_DEADLINE = 1.0


@pytest.fixture
def boards() -> Any:
    """Append every Board you start; whatever still runs at the end is killed."""
    started: list[Board] = []
    yield started
    for board in started:
        board.kill()


def start_board(boards: list[Board], tasks_dir: Path, *args: str, env: dict[str, str] | None = None) -> Board:
    board = Board(tasks_dir, *args, env=env).start()
    boards.append(board)
    return board


def iso(moment: datetime) -> str:
    return moment.isoformat()


def write_file(tasks_dir: Path, task_id: str, task: dict[str, Any] | str) -> None:
    """A task file written whole, as a sub-agent writing JSON by hand would (atomically)."""
    tmp = tasks_dir / ".pulse" / "tmp" / f"{task_id}.json.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(task if isinstance(task, str) else json.dumps(task, ensure_ascii=False))
    os.replace(tmp, tasks_dir / f"{task_id}.json")


def past_run(name: str, started: datetime, seconds: tuple[float, ...]) -> dict[str, Any]:
    steps, at = [], started
    for i, length in enumerate(seconds):
        steps.append({"name": f"step{i}", "status": "done", "startedAt": iso(at),
                      "finishedAt": iso(at + timedelta(seconds=length))})
        at += timedelta(seconds=length)
    return {"taskName": name, "status": "done", "startedAt": iso(started), "updatedAt": iso(at),
            "finishedAt": iso(at), "steps": steps}


def a_mixed_dir(tasks_dir: Path) -> dict[str, str]:
    """Tasks of every kind the page shows differently, written while a daemon watches: running with a
    message, done, failed, stalled, overdue, with a history (so an ETA), and an unreadable file."""
    now = datetime.now(UTC)
    ids = {}
    for n in range(3):  # the history of "Nightly": 60 s + 120 s, three times
        write_file(tasks_dir, f"nightly-{n}", past_run("Nightly", now - timedelta(days=3 - n), (60, 120)))
    wait_for(lambda: len(json.loads(run_tp(tasks_dir, "history", "Nightly", "--json").stdout)["runs"]) == 3
             if run_tp(tasks_dir, "history", "--json").stdout.strip() not in ("", "[]") else False, 30,
             "three runs of Nightly recorded")
    write_file(tasks_dir, "nightly-3", {"taskName": "Nightly", "status": "running",
                                        "startedAt": iso(now - timedelta(seconds=10)), "updatedAt": iso(now),
                                        "steps": [{"name": "step0", "status": "running",
                                                   "startedAt": iso(now - timedelta(seconds=10))},
                                                  {"name": "step1", "status": "pending"}]})
    ids["eta"] = "nightly-3"
    store = TaskStore(tasks_dir)
    running = store.create("Daily report", ["fetch", "filter", "write"], now).task_id
    run_tp(tasks_dir, "next", running, "fetched 25 items")
    run_tp(tasks_dir, "heartbeat", running, "--percent", "60", "filtering")
    ids["running"] = running
    done = store.create("Upload", ["send"], now).task_id
    run_tp(tasks_dir, "done", done, "uploaded")
    ids["done"] = done
    failed = store.create("Deploy", ["build", "push"], now).task_id
    run_tp(tasks_dir, "error", failed, "HTTP 502")
    ids["failed"] = failed
    write_file(tasks_dir, "stuck", {"taskName": "Stuck", "status": "running", "stallSeconds": 60,
                                    "startedAt": iso(now - timedelta(minutes=20)),
                                    "updatedAt": iso(now - timedelta(minutes=10)),
                                    "steps": [{"name": "wait", "status": "running"}]})
    ids["stalled"] = "stuck"
    write_file(tasks_dir, "late", {"taskName": "Late", "status": "running", "budgetSeconds": 30,
                                   "startedAt": iso(now - timedelta(minutes=10)), "updatedAt": iso(now),
                                   "steps": [{"name": "work", "status": "running"}]})
    ids["overdue"] = "late"
    write_file(tasks_dir, "broken", "{not json")
    ids["invalid"] = "broken"
    return ids


def by_id(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["taskId"]: r for r in records}


def test_the_page_lists_what_status_json_lists(tasks_dir: Path, daemon: Daemon, boards: list[Board]) -> None:
    ids = a_mixed_dir(tasks_dir)
    board = start_board(boards, tasks_dir)
    status = by_id(json.loads(run_tp(tasks_dir, "status", "--json").stdout))
    view = board.json("/api/board")
    page = by_id(view["tasks"])
    assert set(page) == set(status) and len(status) == 10, (sorted(page), sorted(status))
    for task_id, said in status.items():
        shown = page[task_id]
        if "invalid" in said:
            assert shown["state"] == "invalid" and shown["invalid"] == said["invalid"]
            continue
        assert shown["name"] == said["taskName"] and shown["status"] == said["status"], task_id
        assert [s["status"] for s in shown["steps"]] == [s["status"] for s in said["steps"]], task_id
        assert [s["name"] for s in shown["steps"]] == [s["name"] for s in said["steps"]], task_id
        assert shown["done"] == sum(s["status"] == "done" for s in said["steps"]), task_id
        assert (shown["stalled"], bool(shown["overdue"])) == (said["stalled"], said["overdue"]), task_id
        assert shown["stallThresholdSeconds"] == said["stallThresholdSeconds"], task_id
        if said["etaSeconds"] is None:
            assert shown["etaAt"] is None, task_id
        else:  # an instant on the page (rounded to 10 s), seconds from now in status
            assert abs(shown["etaAt"] - view["generatedAt"] - said["etaSeconds"]) <= 15, (shown, said)
    assert page[ids["eta"]]["etaAt"] is not None and page[ids["stalled"]]["state"] == "stalled"
    assert page[ids["overdue"]]["state"] == "overdue" and page[ids["failed"]]["error"] == "HTTP 502"
    assert page[ids["running"]]["steps"][1]["message"] == "filtering"
    # The order worth reading in: the unreadable file, stalled and overdue, failed, running, finished.
    states = [r["state"] for r in view["tasks"]]
    assert states[0] == "invalid" and set(states[1:3]) == {"stalled", "overdue"} and states[3] == "error"
    assert set(states[-4:]) == {"done"} and view["counts"] == {"running": 3, "stalled": 1, "done": 4, "error": 1,
                                                               "unreadable": 1}
    assert view["more"] == 0 and view["note"] is None


def test_a_page_beyond_its_limit_shows_the_tasks_status_picks(tasks_dir: Path, daemon: Daemon,
                                                              boards: list[Board]) -> None:
    """More tasks than the page lists: the state db's overview picks them, as `status --limit` does."""
    store = TaskStore(tasks_dir)
    now = datetime.now(UTC)
    for n in range(12):
        task = store.create(f"job {n}", ["a", "b"], now, task_id=f"job-{n:02d}")
        if n % 3 == 0:
            run_tp(tasks_dir, "done", task.task_id)
    wait_for(lambda: run_tp(tasks_dir, "status", "--limit", "5").stdout.count("job") == 5, 30, "the daemon's overview")
    board = start_board(boards, tasks_dir, "--limit", "5")
    view = board.json("/api/board")
    picked = json.loads(run_tp(tasks_dir, "status", "--json", "--limit", "5").stdout)
    assert sorted(r["taskId"] for r in view["tasks"]) == sorted(r["taskId"] for r in picked)
    assert view["more"] == 7 and view["counts"]["running"] == 8 and view["counts"]["done"] == 4


def test_a_write_reaches_an_open_event_stream_within_a_second(tasks_dir: Path, daemon: Daemon,
                                                              boards: list[Board]) -> None:
    store = TaskStore(tasks_dir)
    task_id = store.create("Daily report", ["fetch", "filter", "write"], datetime.now(UTC)).task_id
    other = store.create("Other", ["x"], datetime.now(UTC)).task_id
    board = start_board(boards, tasks_dir)
    stream = EventStream(board.port)
    try:
        _, first, _ = stream.wait(lambda name, data: name == "board" and len(data["tasks"]) == 2, 30, "the whole view")
        for n, message in enumerate(("fetched 25 items", "filtered 60", "drafted")):
            run_tp(tasks_dir, "next", task_id, message)  # done when it returns: the file is written
            _, delta, _ = stream.wait(
                lambda name, data, n=n: name == "delta" and any(
                    t["key"] == task_id and t["done"] == n + 1 for t in data["changed"]),
                LIVE_DEADLINE, f"step {n + 1} of {task_id} on the open stream")
            assert [t["key"] for t in delta["changed"]] == [task_id]  # what changed, not every task
            assert delta["version"] > first["version"]
        assert other in {t["key"] for t in first["tasks"]}
    finally:
        stream.close()


def test_without_a_daemon_the_page_still_follows_the_files(tasks_dir: Path, boards: list[Board]) -> None:
    """No daemon: the page says so, and a write renamed into the dir (every task-pulse write) still reaches it."""
    board = start_board(boards, tasks_dir)
    stream = EventStream(board.port)
    try:
        _, first, _ = stream.wait(lambda name, _data: name == "board", 30)
        assert "no task-pulsed watches" in first["note"] and first["tasks"] == []
        task_id = TaskStore(tasks_dir).create("Lonely", ["a"], datetime.now(UTC)).task_id
        stream.wait(lambda name, data: name == "delta" and [t["key"] for t in data["changed"]] == [task_id],
                    LIVE_DEADLINE, "the new task on the open stream")
    finally:
        stream.close()


def test_off_loopback_the_board_needs_a_token(tmp_path: Path, tasks_dir: Path, boards: list[Board]) -> None:
    env = clean_env(HOME=str(tmp_path))
    refused = subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "board", "--bind", "0.0.0.0"],
                             capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "token" in refused.stderr
    token = "s3cret-board-token-0123456789"
    token_file = tmp_path / "board-token"
    token_file.write_text(token + "\n")
    token_file.chmod(0o644)
    open_file = subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "board", "--bind", "0.0.0.0",
                                "--token-file", str(token_file)], capture_output=True, text=True, env=env, timeout=60)
    assert open_file.returncode == 2 and "chmod 600" in open_file.stderr and token not in open_file.stderr
    token_file.chmod(0o600)
    TaskStore(tasks_dir).create("Secret work", ["a"], datetime.now(UTC))
    # Bound to every address; the test talks to it on 127.0.0.1 only.
    board = start_board(boards, tasks_dir, "--bind", "0.0.0.0", "--token-file", str(token_file), env=env)
    assert board.info["token"] is True
    for path in ("/api/board", "/events", "/api/task?key=x", "/static/board.js"):
        status, headers, body = board.request(path)
        assert status == 401 and b"Secret" not in body, path
        assert headers["content-security-policy"].startswith("default-src 'none'")
    status, headers, _ = board.request("/")
    assert status == 303 and headers["location"] == "/login"
    assert board.request("/login")[0] == 200 and board.request("/static/board.css")[0] == 200
    assert board.request("/api/board", headers={"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
    assert board.json("/api/board", headers={"Authorization": f"Bearer {token}"})["tasks"][0]["name"] == "Secret work"
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert board.request("/login", "POST", form, b"token=not-it")[0] == 401
    status, headers, _ = board.request("/login", "POST", form, f"token={token}".encode())
    assert status == 303 and headers["location"] == "/"
    cookie = headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and token not in cookie
    session = {"Cookie": cookie.split(";")[0]}
    assert board.json("/api/board", headers=session)["tasks"][0]["name"] == "Secret work"
    assert board.request("/", headers=session)[0] == 200
    stream = EventStream(board.port, session)
    try:
        assert stream.status == 200
        stream.wait(lambda name, _data: name == "board", 30)
    finally:
        stream.close()
    assert EventStream(board.port).status == 401
    assert token not in board.output()


def test_a_token_in_the_env_file_is_needed_on_loopback_too(tmp_path: Path, tasks_dir: Path,
                                                           boards: list[Board]) -> None:
    secrets = tmp_path / ".config" / "task-pulse" / "env"
    secrets.parent.mkdir(parents=True)
    secrets.write_text("TASK_PULSE_BOARD_TOKEN=from-the-env-file-0123456789\n")
    board = start_board(boards, tasks_dir, env=clean_env(HOME=str(tmp_path)))
    assert board.request("/api/board")[0] == 401
    assert board.request("/api/board", headers={"Authorization": "Bearer from-the-env-file-0123456789"})[0] == 200


def test_without_a_token_only_a_loopback_host_is_answered(tasks_dir: Path, boards: list[Board]) -> None:
    """A page elsewhere that rebinds its own name to 127.0.0.1 (DNS rebinding) is not answered."""
    board = start_board(boards, tasks_dir)
    for host in (f"127.0.0.1:{board.port}", f"localhost:{board.port}", f"[::1]:{board.port}"):
        assert board.request("/api/board", headers={"Host": host})[0] == 200, host
    assert board.request("/api/board", headers={"Host": f"evil.example:{board.port}"})[0] == 421
    assert board.request("/events", headers={"Host": "evil.example"})[0] == 421


HOSTILE_NAME = "<img src=x onerror=alert(1)> deploy ghp_abcdefghijklmnopqrstuvwxyz0123"
HOSTILE_MESSAGE = "\x1b[31mred\x1b[0m \u202eevil</script><script>alert(1)</script> password=hunter2"


def test_hostile_task_text_arrives_masked_and_escaped(tasks_dir: Path, daemon: Daemon, boards: list[Board]) -> None:
    store = TaskStore(tasks_dir)
    task_id = store.create(HOSTILE_NAME, ["<b>step</b>", "two"], datetime.now(UTC)).task_id
    run_tp(tasks_dir, "heartbeat", task_id, HOSTILE_MESSAGE)
    wait_for(lambda: any(n for n in json.loads(run_tp(tasks_dir, "status", task_id, "--json").stdout)["steps"]
                         if n.get("message")), 30, "the heartbeat")
    board = start_board(boards, tasks_dir)
    status, headers, body = board.request("/api/board")
    assert status == 200 and headers["content-type"] == "application/json"
    stream = EventStream(board.port)
    try:
        stream.wait(lambda name, data: name == "board" and data["tasks"] and data["tasks"][0]["steps"][0]["message"],
                    30)
        wait_for(lambda: board.detail(task_id)["notifications"], 30, "its notifications")
        _, _, detail = board.request(f"/api/task?key={task_id}")
        for raw in (body, b"".join(stream.raw), detail):
            assert b"<" not in raw and b">" not in raw and b"\x1b" not in raw, raw[:200]
            assert b"hunter2" not in raw and b"abcdefghijklmnop" not in raw
    finally:
        stream.close()
    task = board.tasks()[0]
    assert task["name"] == "<img src=x onerror=alert(1)> deploy ghp_***"
    assert task["steps"][0]["name"] == "<b>step</b>"
    assert task["steps"][0]["message"] == "red evil</script><script>alert(1)</script> password=***"
    status, headers, page = board.request("/")
    assert b"deploy" not in page and "script-src 'self'" in headers["content-security-policy"]
    assert "'unsafe-inline'" not in headers["content-security-policy"]


def test_the_detail_of_a_task_says_what_was_delivered_where_and_its_history(tasks_dir: Path, daemon: Daemon,
                                                                          boards: list[Board]) -> None:
    now = datetime.now(UTC)
    for n in range(3):
        write_file(tasks_dir, f"nightly-{n}", past_run("Nightly", now - timedelta(days=3 - n), (60, 120 + n)))
    store = TaskStore(tasks_dir)
    task_id = store.create("Nightly", ["step0", "step1"], now).task_id
    run_tp(tasks_dir, "next", task_id, "half")
    wait_for(lambda: "step_done" in run_tp(tasks_dir, "drain", "--json").stdout, 30, "a drain of its step")
    board = start_board(boards, tasks_dir)
    detail = wait_for(lambda: (d := board.detail(task_id)) and len(d["history"]["runs"]) == 3 and d, 30)
    kinds = {n["kind"]: n for n in detail["notifications"]}
    assert kinds["step_done"]["deliveredBy"] == "drain" and kinds["step_done"]["deliveredAt"]
    assert "Nightly" in detail["card"] and detail["task"]["key"] == task_id
    runs = detail["history"]["runs"]
    assert [[s["seconds"] for s in r["steps"]] for r in runs] == [[60.0, 120.0], [60.0, 121.0], [60.0, 122.0]]
    assert detail["history"]["typicalSeconds"] == 181.0
    assert board.request("/api/task?key=no-such-task")[0] == 404


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a task file to another account")
def test_a_co_users_task_is_marked_with_its_owner(tasks_dir: Path, daemon: Daemon, boards: list[Board]) -> None:
    import pwd

    nobody = pwd.getpwnam("nobody")
    now = datetime.now(UTC)
    write_file(tasks_dir, "theirs", {"taskName": "Their job", "status": "running", "startedAt": iso(now),
                                     "updatedAt": iso(now), "steps": [{"name": "a", "status": "running"}]})
    os.chown(tasks_dir / "theirs.json", nobody.pw_uid, nobody.pw_gid)
    mine = TaskStore(tasks_dir).create("My job", ["a"], now).task_id
    board = start_board(boards, tasks_dir)
    tasks = by_id(board.tasks())
    assert tasks["theirs"]["owner"] == "nobody" and tasks[mine]["owner"] is None
    assert board.detail("theirs")["task"]["owner"] == "nobody"


def fingerprint(tasks_dir: Path) -> dict[str, tuple[str, int]]:
    """Every task file and the state db: content digest and mtime."""
    files = [*tasks_dir.glob("*.json"), tasks_dir / ".pulse" / "state.db"]
    return {p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns) for p in files}


def test_the_board_writes_nothing(tasks_dir: Path, boards: list[Board]) -> None:
    daemon = Daemon(tasks_dir).start()
    try:
        task_id = TaskStore(tasks_dir).create("Daily report", ["a", "b"], datetime.now(UTC)).task_id
        run_tp(tasks_dir, "next", task_id, "one")
        wait_for(lambda: len(json.loads(run_tp(tasks_dir, "drain", "--json", "--limit", "1").stdout or "{}")) > 0,
                 30, "a notification")
    finally:
        assert daemon.stop() == 0
    before = fingerprint(tasks_dir)
    board = start_board(boards, tasks_dir)
    stream = EventStream(board.port)
    try:
        stream.wait(lambda name, data: name == "board" and data["tasks"], 30)
        assert board.detail(task_id)["notifications"]
        assert board.tasks()[0]["key"] == task_id
    finally:
        stream.close()
    assert board.stop() == 0
    assert fingerprint(tasks_dir) == before
    pending = run_tp(tasks_dir, "drain", "--json").stdout.splitlines()
    assert [json.loads(line)["kind"] for line in pending] == ["step_done"]  # still there: the board took none


def test_several_hosts_on_one_board(tmp_path: Path, pg_url: str, daemons: list[Daemon], boards: list[Board]) -> None:
    dirs = {host: tmp_path / host for host in HOSTS}
    for host, tasks_dir in dirs.items():
        daemons.append(host_daemon(tasks_dir, pg_url, host).start())
    ids = {host: TaskStore(d).create(f"job on {host}", ["a", "b"], datetime.now(UTC)).task_id
           for host, d in dirs.items()}
    run_tp(dirs["alpha"], "next", ids["alpha"], "half way")
    status_all = ["status", "--all-hosts", "--json", "--state", pg_url]
    wait_for(lambda: len(json.loads(run_tp(dirs["alpha"], *status_all).stdout)) == 2, 30, "both hosts' tasks")
    board = start_board(boards, tmp_path / "alpha", "--state", pg_url)
    assert board.info["shared"] is True and "postgresql://" in board.info["where"]
    status = {(r["host"], r["taskId"]): r for r in json.loads(run_tp(dirs["alpha"], *status_all).stdout)}
    view = board.json("/api/board")
    page = {(r["host"], r["taskId"]): r for r in view["tasks"]}
    assert set(page) == set(status) == {(h, i) for h, i in ids.items()}
    for key, said in status.items():
        assert [s["status"] for s in page[key]["steps"]] == [s["status"] for s in said["steps"]]
    assert sorted(view["hosts"]) == sorted(HOSTS)
    detail = board.detail(f"alpha/{ids['alpha']}")
    assert detail["task"]["host"] == "alpha" and {n["kind"] for n in detail["notifications"]} >= {"started",
                                                                                                   "step_done"}
    stream = EventStream(board.port)
    try:
        stream.wait(lambda name, data: name == "board" and len(data["tasks"]) == 2, 30)
        run_tp(dirs["beta"], "heartbeat", ids["beta"], "--percent", "40", "from beta")  # a snapshot, no new row yet
        stream.wait(lambda name, data: name == "delta" and any(
            t["host"] == "beta" and t["steps"][0]["message"] == "from beta" for t in data["changed"]),
            LIVE_DEADLINE, "beta's heartbeat on the open stream")
    finally:
        stream.close()


def test_without_the_extra_the_board_says_how_to_get_it(tmp_path: Path, tasks_dir: Path) -> None:
    shadow = tmp_path / "shadow" / "uvicorn"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed', name='uvicorn')\n")
    proc = subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "board"], capture_output=True, text=True,
                          env=clean_env(PYTHONPATH=str(shadow.parent)), timeout=60)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == ("Error: task-pulse board needs its web parts (uvicorn is missing): "
                           "pip install 'task-pulse[board]'\n")


def test_bad_input_is_one_line(tmp_path: Path, tasks_dir: Path, boards: list[Board]) -> None:
    def board(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "board", *args], capture_output=True,
                              text=True, env=clean_env(HOME=str(tmp_path), **env), timeout=60)

    short = tmp_path / "short"
    short.write_text("abc\n")
    short.chmod(0o600)
    cases = [(board("--token-file", str(short)), 2, "at least 16 characters"),
             (board("--token-file", str(tmp_path / "none")), 2, "No such file"),
             (board("--port", "99999"), 2, "--port"),
             (subprocess.run([str(BIN / "task-pulse"), "--dir", str(tmp_path / "nope"), "board"], capture_output=True,
                             text=True, env=clean_env(HOME=str(tmp_path)), timeout=60), 2, "no tasks dir")]
    taken = start_board(boards, tasks_dir)
    cases.append((board("--port", str(taken.port)), 1, f"cannot listen on 127.0.0.1:{taken.port}"))
    for proc, code, words in cases:
        assert proc.returncode == code and proc.stderr.count("\n") == 1 and words in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_writer_call_imports_nothing_of_the_board(tmp_path: Path) -> None:
    """`python -X importtime` of a heartbeat and of the click CLI: no web library, no board module."""
    TaskStore(tmp_path).create("t", ["a"], datetime.now(UTC), task_id="t")
    for args in (["-m", "task_pulse", "--dir", str(tmp_path), "heartbeat", "t", "x"],
                 ["-m", "task_pulse", "--dir", str(tmp_path), "heartbeat", "t", "--percent", "5"],
                 ["-m", "task_pulse", "--dir", str(tmp_path), "status"]):
        proc = subprocess.run([sys.executable, "-X", "importtime", *args], capture_output=True, text=True,
                              env=clean_env(), timeout=60)
        assert proc.returncode == 0, proc.stderr[-500:]
        imported = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
        assert imported and not {m for m in imported if m.split(".")[0] in ("starlette", "uvicorn", "anyio", "h11")
                                 or m.startswith("task_pulse.board")}, args


def test_the_page_has_no_inline_script_and_nothing_from_elsewhere() -> None:
    import re
    from importlib.resources import files

    static = files("task_pulse.board") / "static"
    assert sorted(p.name for p in static.iterdir()) == ["board.css", "board.js", "index.html", "login.html"]
    for page in ("index.html", "login.html"):
        text = (static / page).read_text()
        assert all('src="/static/' in tag for tag in re.findall(r"<script[^>]*>", text))  # no inline script
        assert not re.search(r"\son\w+\s*=", text) and "style=" not in text  # no handlers or styles inline
        assert not re.search(r"(?:src|href)=\"(?:https?:)?//", text)  # nothing from a CDN: works offline
    script = (static / "board.js").read_text()
    assert "innerHTML" not in script and "eval(" not in script and "insertAdjacentHTML" not in script
