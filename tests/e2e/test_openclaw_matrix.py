"""End to end against the real thing, on a channel that edits: task-pulsed → the real OpenClaw CLI and its
Matrix plugin → a private Synapse on 127.0.0.1 → the room read back through the client-server API. The live
card is sent once and edited in place. Skipped where the parts are missing; tests/e2e/setup.sh sets them up."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.conftest import Daemon, clean_env, read_notifications, wait_for
from tests.e2e.conftest import BASE, OPENCLAW, channel_state, free_port

TEMPLATE = BASE / "state-template-matrix"
SYNAPSE_PYTHON = BASE / "synapse-venv" / "bin" / "python"
SERVER = "localhost"
BOT = f"@pulsebot:{SERVER}"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (OPENCLAW.exists() and TEMPLATE.is_dir() and SYNAPSE_PYTHON.exists()),
                       reason=f"needs OpenClaw, its Matrix plugin and Synapse: run tests/e2e/setup.sh (base {BASE})"),
    pytest.mark.xdist_group("e2e"),  # one worker runs the e2e lanes: one OpenClaw install (see pyproject.toml)
]


@dataclass
class Homeserver:
    url: str
    room_id: str
    bot_token: str
    watcher_token: str

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


def register(hs: Homeserver, user: str) -> str:
    reply = hs.call("POST", "/_matrix/client/v3/register",
                    {"username": user, "password": f"{user}-e2e-password", "auth": {"type": "m.login.dummy"}})
    return reply["access_token"]


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    """A private Synapse on a free 127.0.0.1 port (no federation, open registration), pulsebot and watcher
    registered, and a room the watcher made that pulsebot joined."""
    home = tmp_path_factory.mktemp("synapse")
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
    with (home / "synapse.out").open("wb") as out:
        server = subprocess.Popen([str(SYNAPSE_PYTHON), "-m", "synapse.app.homeserver", "--config-path", str(config),
                                   "--config-path", str(home / "local.yaml")], cwd=home, stdout=out,
                                  stderr=subprocess.STDOUT, env=clean_env())
    hs = Homeserver(f"http://127.0.0.1:{port}", "", "", "")

    def up() -> bool:
        assert server.poll() is None, f"synapse exited:\n{(home / 'synapse.out').read_text()[-3000:]}"
        try:
            hs.call("GET", "/_matrix/client/versions")
            return True
        except (AssertionError, OSError):
            return False

    try:
        wait_for(up, 60, "synapse to answer")
        hs.bot_token, hs.watcher_token = register(hs, "pulsebot"), register(hs, "watcher")
        hs.room_id = hs.call("POST", "/_matrix/client/v3/createRoom",
                             {"preset": "public_chat", "name": "pulse", "invite": [BOT]}, hs.watcher_token)["room_id"]
        hs.call("POST", f"/_matrix/client/v3/join/{urllib.parse.quote(hs.room_id)}", {}, hs.bot_token)
        yield hs
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def openclaw_state(tmp_path: Path, hs: Homeserver) -> Path:
    """An OpenClaw state dir (Matrix plugin installed) whose Matrix account is pulsebot on our Synapse."""
    return channel_state(tmp_path, TEMPLATE, "matrix", {"enabled": True, "homeserver": hs.url, "userId": BOT,
                                                        "accessToken": hs.bot_token,
                                                        "network": {"dangerouslyAllowPrivateNetwork": True}})


def is_edit(event: dict[str, Any]) -> bool:
    return event["content"].get("m.relates_to", {}).get("rel_type") == "m.replace"


def test_a_task_card_is_sent_once_and_edited_in_a_matrix_room(tmp_path: Path, tasks_dir: Path,
                                                              daemons: list[Daemon], synapse: Homeserver) -> None:
    hs = synapse
    name = "E2E matrix"
    env = clean_env(OPENCLAW_STATE_DIR=str(openclaw_state(tmp_path, hs)))
    d = Daemon(tasks_dir, "--openclaw", f"matrix:room:{hs.room_id}", "--openclaw-bin", str(OPENCLAW), "--lang", "en",
               "--sink-timeout", "120", env=env).start()
    daemons.append(d)
    store = TaskStore(tasks_dir)
    task = store.create(name, [f"step {i}" for i in range(1, 6)], datetime.now(UTC))
    for _ in range(4):  # an agent's pace: 5 steps a second
        time.sleep(0.2)
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    done_at = time.time()
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "shipped"), datetime.now(UTC))

    def bot_messages() -> list[dict[str, Any]]:
        time.sleep(0.5)  # one read of the room every half second is plenty: each OpenClaw call takes 10-15 s
        return [e for e in hs.room_messages() if e["sender"] == BOT]

    def final_edit(events: list[dict[str, Any]]) -> str | None:
        edits = [e for e in events if is_edit(e)]
        return edits[-1]["content"]["m.new_content"]["body"] if edits else None

    def card_now(events: list[dict[str, Any]]) -> str | None:
        """The card as the room shows it: its last edit, or the card itself (sent late, it may be final already)."""
        new = [e for e in events if not is_edit(e)]
        return final_edit(events) or (new[0]["content"].get("body") if new else None)

    def settled() -> list[dict[str, Any]] | None:
        events = bot_messages()
        pinged = any(e["content"].get("body", "").startswith(f'🎉 "{name}" done!') for e in events if not is_edit(e))
        final = card_now(events)
        return events if pinged and final is not None and final.startswith(f'🎉 "{name}" done') else None

    try:
        wait_for(settled, 240, "the done ping and the final card edit in the room")
    except AssertionError as exc:  # the log as it is now, not as it was when the wait began
        bodies = [e["content"].get("body") for e in bot_messages()]
        raise AssertionError(f"{exc}\nroom: {bodies}\ndaemon log:\n{d.log()}") from None
    wait_for(lambda: all(n["delivered_at"] for n in read_notifications(tasks_dir)), 60, "every row marked")
    events = bot_messages()  # final: each call's event is in the room before its rows are marked

    new = [e for e in events if not is_edit(e)]
    edits = [e for e in events if is_edit(e)]
    card, ping = new[0], next(e for e in new if e["content"]["body"].startswith(f'🎉 "{name}" done!'))
    rows = read_notifications(tasks_dir)
    print(f"\nMatrix lane: {len(events)} sink calls seen in the room for {len(rows)} notifications: {len(new)} new "
          f"messages, {len(edits)} edits of the card; done write → ping in the room "
          f"{ping['origin_server_ts'] / 1000 - done_at:.1f} s, → final card edit "
          f"{(edits or new)[-1]['origin_server_ts'] / 1000 - done_at:.1f} s\n"
          f"card first sent as: {card['content']['body']!r}\nfinal card: {final_edit(events)!r}\n"
          f"ping: {ping['content']['body']!r}")
    assert len(new) == 2 and ping is new[1], [e["content"].get("body") for e in new]
    assert f'"{name}"' in card["content"]["body"] and "\n✅ step 1" in card_now(events)
    assert all(e["content"]["m.relates_to"]["event_id"] == card["event_id"] for e in edits)  # only the card
    assert card_now(events).startswith(f'🎉 "{name}" done [5/5]')
    assert all(n["delivered_at"] and n["delivered_by"] in ("openclaw", "openclaw:card") for n in rows)
