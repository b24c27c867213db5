"""End to end against the real thing: task-pulsed → the real OpenClaw CLI → ngircd on 127.0.0.1 → an IRC
client that reads the channel. Skipped where the parts are missing; tests/e2e/README.md sets them up."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task_pulse.store import TaskStore
from tests.conftest import Daemon, clean_env, read_notifications, wait_for

BASE = Path(clean_env().get("TP_E2E_BASE", "/opt/task-pulse-e2e"))
OPENCLAW = BASE / "bin" / "openclaw"
TEMPLATE = BASE / "state-template"
CHANNEL = "#pulse"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (OPENCLAW.exists() and TEMPLATE.is_dir() and shutil.which("ngircd")),
                       reason=f"needs OpenClaw, its IRC plugin and ngircd: run tests/e2e/setup.sh (base {BASE})"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Listener:
    """A minimal IRC client that joins the channel and keeps every PRIVMSG with the time it arrived."""

    port: int
    messages: list[tuple[float, str]] = field(default_factory=list)
    joined: threading.Event = field(default_factory=threading.Event)
    stopping: bool = False

    def run(self) -> None:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.settimeout(0.5)
        sock.sendall(b"NICK watcher\r\nUSER watcher 0 * :watcher\r\n")
        buffer = b""
        while not self.stopping:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                continue
            if not chunk:
                break
            buffer += chunk
            while b"\r\n" in buffer:
                raw, buffer = buffer.split(b"\r\n", 1)
                line = raw.decode("utf-8", "replace")
                parts = line.split(" ", 3)
                command = parts[1] if line.startswith(":") and len(parts) > 1 else parts[0]
                if command == "PING":
                    sock.sendall(b"PONG " + raw.split(b" ", 1)[1] + b"\r\n")
                elif command == "001":
                    sock.sendall(f"JOIN {CHANNEL}\r\n".encode())
                elif command == "366":
                    self.joined.set()
                elif command == "PRIVMSG" and len(parts) == 4:
                    self.messages.append((time.time(), parts[3].removeprefix(":")))
        sock.close()


@pytest.fixture
def irc(tmp_path: Path) -> Iterator[tuple[int, Listener]]:
    port = free_port()
    include = tmp_path / "ngircd.conf.d"
    include.mkdir()
    conf = tmp_path / "ngircd.conf"
    conf.write_text(f"[Global]\n\tName = irc.test.local\n\tInfo = task-pulse e2e\n\tAdminInfo1 = e2e\n"
                    f"\tAdminInfo2 = localhost\n\tAdminEMail = e2e@localhost\n\tListen = 127.0.0.1\n"
                    f"\tPorts = {port}\n\tMotdPhrase = e2e\n[Limits]\n\tMaxConnectionsIP = 0\n"
                    f"\tMaxNickLength = 30\n[Options]\n\tDNS = no\n\tIdent = no\n\tPAM = no\n"
                    f"\tIncludeDir = {include}\n")
    server = subprocess.Popen(["ngircd", "-n", "-f", str(conf)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)

    def listening() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False

    listener = Listener(port)
    try:
        wait_for(listening, 20, "ngircd to listen")
        thread = threading.Thread(target=listener.run, daemon=True)
        thread.start()
        assert listener.joined.wait(20), "the listener did not join"
        yield port, listener
    finally:
        listener.stopping = True
        server.terminate()
        server.wait(10)


def openclaw_state(tmp_path: Path, port: int) -> Path:
    """A copy of the set-up state dir (IRC plugin installed) whose IRC channel is our ngircd."""
    state = tmp_path / "openclaw-state"
    shutil.copytree(TEMPLATE, state, symlinks=True)
    config_path = state / "openclaw.json"
    config = json.loads(config_path.read_text())
    config.setdefault("channels", {})["irc"] = {"enabled": True, "host": "127.0.0.1", "port": port, "tls": False,
                                                "nick": "pulsebot", "channels": [CHANNEL]}
    config_path.write_text(json.dumps(config, indent=2))
    return state


def test_a_task_reaches_an_irc_channel_through_the_real_openclaw(tmp_path: Path, tasks_dir: Path,
                                                                 daemons: list[Daemon],
                                                                 irc: tuple[int, Listener]) -> None:
    port, listener = irc
    env = clean_env(OPENCLAW_STATE_DIR=str(openclaw_state(tmp_path, port)))
    d = Daemon(tasks_dir, "--openclaw", f"irc:{CHANNEL}", "--openclaw-bin", str(OPENCLAW), "--lang", "en",
               "--sink-timeout", "120", env=env).start()
    daemons.append(d)
    store = TaskStore(tasks_dir)
    task = store.create("E2E report", [f"step {i}" for i in range(1, 11)], datetime.now(UTC))
    for _ in range(9):  # an agent's pace: 5 steps a second
        time.sleep(0.2)
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    done_at = time.time()
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "shipped"), datetime.now(UTC))
    wait_for(lambda: any("【E2E report】done!" in text for _, text in listener.messages), 240,
             f"the done message in {CHANNEL} (daemon log:\n{d.log()})")
    wait_for(lambda: all(n["delivered_at"] for n in read_notifications(tasks_dir)), 60, "every row marked")
    texts = [text for _, text in listener.messages]
    arrived = next(at for at, text in listener.messages if "【E2E report】done!" in text)
    print(f"\nIRC lane: {len(texts)} new messages for 12 notifications; done write → in the channel "
          f"{arrived - done_at:.1f} s; messages: {texts}")
    assert texts[0].startswith("🚀 Started【E2E report】")  # IRC flattens the lines into one
    assert len(texts) <= 4  # started, at most a couple of coalesced step messages, done
    assert all(n["delivered_by"] in ("openclaw", "openclaw:card") for n in read_notifications(tasks_dir))


def test_a_failed_send_names_openclaws_reason(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    port = free_port()  # nothing listens there
    env = clean_env(OPENCLAW_STATE_DIR=str(openclaw_state(tmp_path, port)))
    d = Daemon(tasks_dir, "--openclaw", f"irc:{CHANNEL}", "--openclaw-bin", str(OPENCLAW), "--sink-attempts", "1",
               "--sink-timeout", "120", env=env).start()
    daemons.append(d)
    TaskStore(tasks_dir).create("Nobody home", ["a"], datetime.now(UTC))
    wait_for(lambda: "left for task-pulse drain" in d.log(), 120, "the failed send")
    line = next(x for x in d.log().splitlines() if "left for task-pulse drain" in x)
    assert f"connect ECONNREFUSED 127.0.0.1:{port}" in line and "\x1b" not in line
