"""What the end-to-end lanes share: the set-up OpenClaw, a private IRC server and a client reading it."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import clean_env, wait_for

BASE = Path(clean_env().get("TP_E2E_BASE", "/opt/task-pulse-e2e"))


def e2e_env(**extra: str) -> dict[str, str]:
    """clean_env for the real OpenClaw: it finds its gateway through its own state dir (OPENCLAW_STATE_DIR)."""
    env = clean_env(**extra)
    if "OPENCLAW_GATEWAY_URL" not in extra:
        del env["OPENCLAW_GATEWAY_URL"]
    return env
OPENCLAW = BASE / "bin" / "openclaw"
TEMPLATE = BASE / "state-template"
CHANNEL = "#pulse"
IRC_READY = OPENCLAW.exists() and TEMPLATE.is_dir() and shutil.which("ngircd") is not None
IRC_SKIP = f"needs OpenClaw, its IRC plugin and ngircd: run tests/e2e/setup.sh (base {BASE})"


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


def channel_state(tmp_path: Path, template: Path, channel: str, settings: dict[str, object]) -> Path:
    """A copy of a set-up OpenClaw state dir (its channel plugin installed) with `channels.<channel>` set."""
    state = tmp_path / "openclaw-state"
    shutil.copytree(template, state, symlinks=True)
    config_path = state / "openclaw.json"
    config = json.loads(config_path.read_text())
    config.setdefault("channels", {})[channel] = settings
    config_path.write_text(json.dumps(config, indent=2))
    return state


def openclaw_state(tmp_path: Path, port: int) -> Path:
    """An OpenClaw state dir whose IRC channel is our ngircd."""
    return channel_state(tmp_path, TEMPLATE, "irc", {"enabled": True, "host": "127.0.0.1", "port": port,
                                                     "tls": False, "nick": "pulsebot", "channels": [CHANNEL]})
