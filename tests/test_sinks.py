"""Live delivery by the real daemon: an exec sink script and a webhook receiver on 127.0.0.1."""

from __future__ import annotations

import json
import shlex
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.conftest import BIN, Daemon, clean_env, read_notifications, run_tp, wait_for

RECORDER = """\
import json, sys, time
payload = json.load(sys.stdin)
with open(sys.argv[1], "a", encoding="utf-8") as fh:
    fh.write(json.dumps({"argv_text": sys.argv[-1], "key": payload["key"], "kind": payload["kind"],
                         "taskId": payload["taskId"]}) + "\\n")
time.sleep(float(sys.argv[2]))
sys.exit(int(sys.argv[3]))
"""


def exec_sink(tmp_path: Path, *, sleep: float = 0, exit_code: int = 0) -> tuple[str, Path]:
    """An --exec command line that records what it receives in a JSON-lines file."""
    script, log = tmp_path / "record.py", tmp_path / "received.jsonl"
    script.write_text(RECORDER)
    return shlex.join([sys.executable, str(script), str(log), str(sleep), str(exit_code)]) + " --message", log


def attempts(tasks_dir: Path) -> list[tuple[str, int]]:
    """(kind, attempts) of every notification not delivered yet, in queue order."""
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db", timeout=30)
    try:
        return db.execute("SELECT kind, attempts FROM notifications WHERE delivered_at IS NULL ORDER BY seq").fetchall()
    finally:
        db.close()


def received(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_exec_sink_gets_every_message_in_order(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    command, log = exec_sink(tmp_path)
    daemons.append(Daemon(tasks_dir, "--exec", command, "--style", "stream").start())
    task_id = run_tp(tasks_dir, "create", "Daily", "fetch", "write").stdout.strip()
    run_tp(tasks_dir, "next", task_id, "25 items")
    run_tp(tasks_dir, "done", task_id, "ok")
    # Wait for what is asserted: the rows marked (the recorder sees a call before the daemon marks it).
    wait_for(lambda: [n["delivered_by"] for n in read_notifications(tasks_dir)] == ["exec"] * 3, 30, "3 marked")
    got = received(log)
    assert [g["kind"] for g in got] == ["started", "step_done", "done"]  # `done` finishes write: one message
    assert got[1]["argv_text"] == "✅ 【Daily】fetch完成（25 items）\n🔄 已完成 1/2 → write"  # the last argument
    notes = read_notifications(tasks_dir)
    assert [g["key"] for g in got] == [n["key"] for n in notes]
    assert run_tp(tasks_dir, "drain").stdout == ""


def test_a_hostile_task_name_is_only_text(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    command, log = exec_sink(tmp_path)
    marker = tmp_path / "X"
    daemons.append(Daemon(tasks_dir, "--exec", command, "--style", "stream").start())
    name = f"$(touch {marker}); touch {marker} `touch {marker}`"
    run_tp(tasks_dir, "create", name, "step")
    wait_for(lambda: len(received(log)) == 1, 15, "delivery")
    assert name[:150] in received(log)[0]["argv_text"]  # verbatim (capped at 200 characters)
    assert not marker.exists()


def test_an_always_failing_sink_leaves_everything_to_drain(tmp_path: Path, tasks_dir: Path,
                                                          daemons: list[Daemon]) -> None:
    command, log = exec_sink(tmp_path, exit_code=3)
    d = Daemon(tasks_dir, "--exec", command, "--style", "stream", "--sink-attempts", "2",
               "--sink-backoff", "0.1").start()
    daemons.append(d)
    task_id = run_tp(tasks_dir, "create", "Doomed", "a", "b").stdout.strip()
    run_tp(tasks_dir, "next", task_id)
    # A task's rows move together (per-task order): a failed call counts an attempt for all of them.
    wait_for(lambda: attempts(tasks_dir) == [("started", 2), ("step_done", 2)], 30, "both given up")
    assert received(log)[:2] == [received(log)[0]] * 2 and received(log)[0]["kind"] == "started"
    assert "kept for task-pulse drain" in d.log() and d.alive()
    drained = run_tp(tasks_dir, "drain", "--json").stdout.splitlines()
    assert [json.loads(line)["kind"] for line in drained] == ["started", "step_done"]
    assert {n["delivered_by"] for n in read_notifications(tasks_dir)} == {"drain"}
    run_tp(tasks_dir, "done", task_id)  # the daemon still watches and still tries
    wait_for(lambda: attempts(tasks_dir) == [("done", 2)], 30, "the later one given up")  # it finished b too


def test_a_sink_and_drain_racing_deliver_each_notification_once(tmp_path: Path, tasks_dir: Path,
                                                                daemons: list[Daemon]) -> None:
    command, log = exec_sink(tmp_path, sleep=0.005)
    daemons.append(Daemon(tasks_dir, "--exec", command, "--style", "stream").start())
    store = TaskStore(tasks_dir)
    for i in range(20):  # 20 tasks x (started + 8 step_done + done) = 200 notifications
        task = store.create(f"race {i}", [f"s{j}" for j in range(8)], datetime.now(UTC))
        for _ in range(8):  # every step by `next`, then `done`
            store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat()), datetime.now(UTC))
        store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat()), datetime.now(UTC))
    drained: list[str] = []

    def drain_until_empty() -> bool:
        out = run_tp(tasks_dir, "drain", "--json", "--limit", "5").stdout
        drained.extend(json.loads(line)["key"] for line in out.splitlines())
        notes = read_notifications(tasks_dir)
        return len(notes) == 200 and all(n["delivered_at"] for n in notes)

    wait_for(drain_until_empty, 60, "all 200 delivered")
    by_sink = [r["key"] for r in received(log)]
    assert drained and by_sink, "both deliverers should have taken a share"
    assert sorted(drained + by_sink) == sorted(n["key"] for n in read_notifications(tasks_dir))
    assert len(set(drained + by_sink)) == 200


class Receiver(BaseHTTPRequestHandler):
    answers: list[int] = []
    posts: list[dict[str, Any]] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        status = self.answers.pop(0) if self.answers else 200
        self.posts.append({"status": status, "auth": self.headers.get("Authorization"), "body": body,
                           "path": self.path})
        reply = json.dumps({"ok": True, "result": {"messageId": f"w{len(self.posts)}"}}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, type[Receiver]]]:
    handler = type("Handler", (Receiver,), {"answers": [500], "posts": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/bot-SECRET-PATH/send", handler
    server.shutdown()
    server.server_close()


def test_webhook_retries_a_500_then_delivers(tasks_dir: Path, daemons: list[Daemon],
                                             receiver: tuple[str, type[Receiver]]) -> None:
    url, handler = receiver
    env = clean_env(CHAT_TOKEN="s3cr3t-token")
    d = Daemon(tasks_dir, "--webhook", url, "--webhook-header", "Authorization: Bearer ${CHAT_TOKEN}",
               "--sink-backoff", "0.2", "--style", "stream", env=env).start()
    daemons.append(d)
    task_id = run_tp(tasks_dir, "create", "Hooked", "a").stdout.strip()
    run_tp(tasks_dir, "done", task_id)
    wait_for(lambda: [p["status"] for p in handler.posts] == [500, 200, 200], 15, "500, then retried")
    kinds = [p["body"]["kind"] for p in handler.posts]
    assert kinds == ["started", "started", "done"]
    assert {p["auth"] for p in handler.posts} == {"Bearer s3cr3t-token"}
    assert {"seq", "key", "taskId", "text", "createdAt", "done", "total", "step"} <= handler.posts[1]["body"].keys()
    wait_for(lambda: all(n["delivered_by"] == "webhook" for n in read_notifications(tasks_dir)), 10, "marked")
    assert "s3cr3t" not in d.log() and "SECRET-PATH" not in d.log()
    assert "HTTP 500" in d.log()


def test_a_webhook_that_names_the_message_gets_a_live_card(tasks_dir: Path, daemons: list[Daemon],
                                                           receiver: tuple[str, type[Receiver]]) -> None:
    url, handler = receiver
    handler.answers.clear()
    daemons.append(Daemon(tasks_dir, "--webhook", url, "--lang", "en").start())
    task_id = run_tp(tasks_dir, "create", "Hooked card", "a", "b").stdout.strip()
    wait_for(lambda: handler.posts, 30, "the card")
    run_tp(tasks_dir, "next", task_id)
    wait_for(lambda: any(p["body"].get("action") == "edit" for p in handler.posts), 30, "an edit")
    card, edit = handler.posts[0]["body"], next(p["body"] for p in handler.posts if p["body"].get("action"))
    assert card["kind"] == "card" and card["text"].startswith("🔄 \"Hooked card\" [0/2]")
    assert edit["messageId"] == "w1" and edit["text"].startswith("🔄 \"Hooked card\" [1/2]")


def test_a_malformed_http_answer_is_a_failed_attempt_not_a_dead_sink(tasks_dir: Path, daemons: list[Daemon]) -> None:
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    answers = [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"]
    bodies: list[bytes] = []

    def serve() -> None:
        while len(bodies) < 3:
            conn, _ = server.accept()
            with conn:
                bodies.append(conn.recv(65536))
                conn.sendall(answers.pop(0) if answers[1:] else answers[0])

    threading.Thread(target=serve, daemon=True).start()
    url = f"http://127.0.0.1:{server.getsockname()[1]}/hook"
    d = Daemon(tasks_dir, "--webhook", url, "--sink-backoff", "0.1", "--style", "stream").start()
    daemons.append(d)
    task_id = run_tp(tasks_dir, "create", "Odd server", "a").stdout.strip()
    run_tp(tasks_dir, "next", task_id)
    wait_for(lambda: all(n["delivered_by"] == "webhook" for n in read_notifications(tasks_dir))
             and len(read_notifications(tasks_dir)) == 2, 15, "both delivered after the bad answer")
    assert "answered badly" in d.log() and "Exception in thread" not in d.log()
    server.close()


@pytest.mark.parametrize("args, message", [
    (["--exec", "true", "--webhook", "http://127.0.0.1:9/"], "exclusive"),
    (["--webhook-header", "A: b"], "needs --webhook"),
    (["--webhook", "http://127.0.0.1:9/", "--webhook-header", "X-Token: ${NOPE_NOT_SET}"], "NOPE_NOT_SET is not set"),
    (["--webhook", "ftp://example/"], "http(s) URL"),
    (["--exec", "'unbalanced"], "--exec"),
    (["--exec", "no-such-sender-program --message"], "no program 'no-such-sender-program' on PATH"),
    (["--exec-edit", "true"], "--exec-edit needs --exec"),
    (["--openclaw", "telegram"], "expected CHANNEL:TARGET"),
    (["--openclaw", "irc:#ops", "--openclaw-bin", "/nonexistent/openclaw"], "is not an executable program"),
    (["--openclaw", "irc:#ops", "--exec", "true"], "exclusive"),
])
def test_sink_usage_errors(tasks_dir: Path, args: list[str], message: str) -> None:
    proc = subprocess.run([str(BIN / "task-pulsed"), "--dir", str(tasks_dir), *args], capture_output=True,
                          text=True, env=clean_env(), timeout=30)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


class Redirector(BaseHTTPRequestHandler):
    """An endpoint that answers every POST with a redirect to `target` (another host, in the attack)."""

    target = ""
    seen: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        self.seen.append(self.path)
        self.send_response(302)
        self.send_header("Location", self.target)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


class Thief(BaseHTTPRequestHandler):
    """The other host: answers anything with 200, and writes down what reached it."""

    seen: list[tuple[str, str, str | None]] = []

    def _take(self) -> None:
        self.seen.append((self.command, self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_GET = do_POST = _take  # noqa: N815 - the stdlib's names

    def log_message(self, *args: Any) -> None:
        pass


def _serve(handler: type[BaseHTTPRequestHandler]) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def test_a_redirect_is_not_followed_and_is_not_delivery(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """A 302 to another host must not carry the token there, and must not count as delivered."""
    thief = type("AThief", (Thief,), {"seen": []})
    thief_server, thief_url = _serve(thief)
    redirector = type("Redirect", (Redirector,), {"target": f"{thief_url}/steal", "seen": []})
    server, url = _serve(redirector)
    try:
        d = Daemon(tasks_dir, "--webhook", f"{url}/hook", "--webhook-header", "Authorization: Bearer ${CHAT_TOKEN}",
                   "--sink-attempts", "2", "--sink-backoff", "0.1", "--style", "stream",
                   env=clean_env(CHAT_TOKEN="s3cr3t-token")).start()
        daemons.append(d)
        run_tp(tasks_dir, "create", "Moved", "a")
        wait_for(lambda: "kept for task-pulse drain" in d.log(), 30, "the sink giving up")
        assert redirector.seen == ["/hook", "/hook"]  # two attempts, both answered 302
        assert thief.seen == []  # nothing, and no token, went to the other host
        assert "HTTP 302 (a redirect: not followed, not delivered)" in d.log()
        assert [n["delivered_at"] for n in read_notifications(tasks_dir)] == [None]
        assert json.loads(run_tp(tasks_dir, "drain", "--json").stdout)["kind"] == "started"  # kept, not lost
    finally:
        for s in (server, thief_server):
            s.shutdown()
            s.server_close()


def test_the_webhook_url_names_its_token_by_variable(tasks_dir: Path, daemons: list[Daemon],
                                                     receiver: tuple[str, type[Receiver]]) -> None:
    """`--webhook 'https://…/bot${TG_TOKEN}/sendMessage'`: the token is in the daemon's environment, not its argv."""
    url, handler = receiver
    handler.answers = []
    base = url.split("/bot")[0]
    d = Daemon(tasks_dir, "--webhook", base + "/bot${TG_TOKEN}/sendMessage", "--style", "stream",
               env=clean_env(TG_TOKEN="123456:token-value")).start()
    daemons.append(d)
    run_tp(tasks_dir, "create", "Hooked", "a")
    wait_for(lambda: handler.posts, 30, "the post")
    assert handler.posts[0]["path"] == "/bot123456:token-value/sendMessage"
    assert d.proc is not None
    assert "token-value" not in Path(f"/proc/{d.proc.pid}/cmdline").read_text()  # what `ps` shows
    assert "token-value" not in d.log()
    missing = subprocess.run([str(BIN / "task-pulsed"), "--dir", str(tasks_dir), "--webhook", base + "/${NOPE}",
                              "--check"], capture_output=True, text=True, env=clean_env(), timeout=60)
    assert missing.returncode == 2 and "--webhook: environment variable NOPE is not set" in missing.stderr


def test_a_hostile_task_id_is_cleaned_and_masked_wherever_it_is_shown(tmp_path: Path, tasks_dir: Path,
                                                                      daemons: list[Daemon]) -> None:
    """A file name is task content too: escapes, U+202E and a token in it reach no log line, drain or sink raw."""
    token = "ghp_0123456789abcdefghijABCDEFGHIJ012345"
    names = {f"deploy-{token}": "deploy-ghp_***", "evil\x1b[2J\u202etxt.exe": "eviltxt.exe"}
    command, log = exec_sink(tmp_path)
    d = Daemon(tasks_dir, "--exec", command, "--style", "stream", "--sink-attempts", "1").start()
    daemons.append(d)
    for task_id in names:
        run_tp(tasks_dir, "create", "--id", task_id, "Hostile id", "a")
    wait_for(lambda: len(received(log)) == 2, 30, "both delivered")
    shown = {r["taskId"] for r in received(log)}
    assert shown == set(names.values()), shown
    assert all(r["key"].startswith(tuple(names.values())) for r in received(log))
    assert token not in d.log() and "\x1b" not in d.log() and "\u202e" not in d.log()
    assert "deploy-ghp_***: started" in d.log()
    d.stop()
    daemons.append(Daemon(tasks_dir).start())  # no sink: what it queues waits for a drain
    run_tp(tasks_dir, "create", "--id", f"again-{token}", "Hostile id", "a")
    wait_for(lambda: any(n["task_id"].startswith("again") for n in read_notifications(tasks_dir)), 30, "queued")
    drained = run_tp(tasks_dir, "drain", "--json").stdout
    assert token not in drained and "again-ghp_***" in drained
