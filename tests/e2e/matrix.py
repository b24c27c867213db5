"""The Matrix side of the end-to-end lanes: a private Synapse on 127.0.0.1 (stoppable and startable again, for
outages), OpenClaw state dirs whose Matrix account is our bot there, and a real OpenClaw gateway on them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import clean_env, wait_for
from tests.e2e.conftest import BASE, OPENCLAW, channel_state, e2e_env, free_port

TEMPLATE = BASE / "state-template-matrix"
SYNAPSE_PYTHON = BASE / "synapse-venv" / "bin" / "python"
MATRIX_READY = OPENCLAW.exists() and TEMPLATE.is_dir() and SYNAPSE_PYTHON.exists()
MATRIX_SKIP = f"needs OpenClaw, its Matrix plugin and Synapse: run tests/e2e/setup.sh (base {BASE})"
SERVER = "localhost"
BOT = f"@pulsebot:{SERVER}"
GATEWAY_TOKEN = "task-pulse-e2e-token"


@dataclass
class Homeserver:
    url: str
    home: Path
    room_id: str = ""
    bot_token: str = ""
    watcher_token: str = ""
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None, token: str | None = None) -> Any:
        headers = {"Content-Type": "application/json"} | ({"Authorization": f"Bearer {token}"} if token else {})
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.url + path, data=data, headers=headers, method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{method} {path}: HTTP {exc.code} {exc.read()[:300]!r}") from None

    def room_messages(self) -> list[dict[str, Any]]:
        """Every m.room.message in the room, oldest first, as the watcher sees them."""
        events: list[dict[str, Any]] = []
        room = urllib.parse.quote(self.room_id)
        query = {"dir": "f", "limit": "500"}
        while True:
            page = self.call("GET", f"/_matrix/client/v3/rooms/{room}/messages?{urllib.parse.urlencode(query)}",
                             token=self.watcher_token)
            events += [e for e in page.get("chunk", []) if e.get("type") == "m.room.message"]
            if not page.get("chunk") or "end" not in page:
                return events
            query["from"] = page["end"]

    def bot_messages(self) -> list[dict[str, Any]]:
        return [e for e in self.room_messages() if e["sender"] == BOT]

    def start(self) -> None:
        with (self.home / "synapse.out").open("ab") as out:
            self.proc = subprocess.Popen([str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "--config-path",
                                          str(self.home / "homeserver.yaml"), "--config-path",
                                          str(self.home / "local.yaml")], cwd=self.home, stdout=out,
                                         stderr=subprocess.STDOUT, env=clean_env())

        def up() -> bool:
            assert self.proc is not None and self.proc.poll() is None, \
                f"synapse exited:\n{(self.home / 'synapse.out').read_text()[-3000:]}"
            try:
                self.call("GET", "/_matrix/client/versions")
                return True
            except (AssertionError, OSError):
                return False

        wait_for(up, 90, "synapse to answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def is_edit(event: dict[str, Any]) -> bool:
    return event["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"


def register(hs: Homeserver, user: str) -> str:
    reply = hs.call("POST", "/_matrix/client/v3/register",
                    {"username": user, "password": f"{user}-e2e-password", "auth": {"type": "m.login.dummy"}})
    return reply["access_token"]


def make_synapse(home: Path) -> Homeserver:
    """A private Synapse in `home` on a free 127.0.0.1 port (no federation, open registration, no rate limits),
    pulsebot and watcher registered, and a room the watcher made that pulsebot joined."""
    config, port = home / "homeserver.yaml", free_port()
    subprocess.run([str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "--server-name", SERVER,
                    "--config-path", str(config), "--data-directory", str(home / "data"), "--generate-config",
                    "--report-stats=no"], cwd=home, check=True, capture_output=True, timeout=120)
    # A second config file overrides the generated one key by key (JSON is YAML).
    plenty = {"per_second": 1000, "burst_count": 1000}
    (home / "local.yaml").write_text(json.dumps({
        "listeners": [{"port": port, "tls": False, "type": "http", "x_forwarded": False,
                       "bind_addresses": ["127.0.0.1"], "resources": [{"names": ["client"], "compress": False}]}],
        "trusted_key_servers": [], "suppress_key_server_warning": True, "federation_domain_whitelist": [],
        "use_presence": False, "report_stats": False,
        "enable_registration": True, "enable_registration_without_verification": True,
        "rc_message": plenty, "rc_registration": plenty, "rc_joins": {"local": plenty, "remote": plenty},
        "rc_login": {"address": plenty, "account": plenty, "failed_attempts": plenty},
    }))
    hs = Homeserver(f"http://127.0.0.1:{port}", home)
    hs.start()
    hs.bot_token, hs.watcher_token = register(hs, "pulsebot"), register(hs, "watcher")
    hs.room_id = hs.call("POST", "/_matrix/client/v3/createRoom",
                         {"preset": "public_chat", "name": "pulse", "invite": [BOT]}, hs.watcher_token)["room_id"]
    hs.call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(hs.room_id)}", {}, hs.bot_token)
    return hs


def matrix_state(tmp_path: Path, hs: Homeserver, gateway_port: int | None = None) -> Path:
    """An OpenClaw state dir (Matrix plugin installed) whose Matrix account is pulsebot on our Synapse; with
    `gateway_port`, its gateway on that 127.0.0.1 port with token auth."""
    state = channel_state(tmp_path, TEMPLATE, "matrix", {"enabled": True, "homeserver": hs.url, "userId": BOT,
                                                         "accessToken": hs.bot_token,
                                                         "network": {"dangerouslyAllowPrivateNetwork": True}})
    if gateway_port is not None:
        config_path = state / "openclaw.json"
        config = json.loads(config_path.read_text())
        config["gateway"] = {"mode": "local", "port": gateway_port, "bind": "loopback",
                             "auth": {"mode": "token", "token": GATEWAY_TOKEN}}
        config_path.write_text(json.dumps(config, indent=2))
    return state


class Gateway:
    """A real `openclaw gateway run` on a state dir, in its own process group; stoppable and startable again."""

    def __init__(self, state: Path, log: Path, **env: str) -> None:
        self.state, self.log_path = state, log
        self.env = e2e_env(OPENCLAW_STATE_DIR=str(state), NO_COLOR="1", **env)
        self.proc: subprocess.Popen[bytes] | None = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, wait: bool = True) -> Gateway:
        ready_before = self.log().count("[gateway] ready")
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen([str(OPENCLAW), "gateway", "run"], stdout=out, stderr=subprocess.STDOUT,
                                         env=self.env, start_new_session=True, cwd=self.state)
        if wait:
            began = time.monotonic()
            wait_for(lambda: self.log().count("[gateway] ready") > ready_before or self.proc.poll() is not None, 180,
                     "the gateway to be ready")
            assert self.proc.poll() is None, self.log()[-3000:]
            print(f"\ngateway ready in {time.monotonic() - began:.1f} s")
        return self

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@contextmanager
def running_gateway(state: Path, log: Path) -> Iterator[Gateway]:
    gateway = Gateway(state, log).start()
    try:
        yield gateway
    finally:
        gateway.stop()
