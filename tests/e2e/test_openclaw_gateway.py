"""End to end through the real OpenClaw gateway: task-pulsed → `openclaw gateway run` (its WebSocket, protocol 4)
→ its Matrix plugin → a private Synapse on 127.0.0.1 → the room read back as another user.

Each task's card is sent once and edited in place; the done ping reaches the homeserver within a second of
the write (its `origin_server_ts`); with Synapse stopped 30 s mid-task, then started, every message is in the
room exactly once (what the gateway queued it delivers itself); with the gateway restarted mid-task nothing
is lost and nothing comes twice. `-s` shows the figures."""

from __future__ import annotations

import json
import statistics
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.conftest import Daemon, read_notifications, wait_for
from tests.e2e.conftest import OPENCLAW, e2e_env, free_port
from tests.e2e.matrix import (
    GATEWAY_TOKEN,
    MATRIX_READY,
    MATRIX_SKIP,
    Gateway,
    Homeserver,
    is_edit,
    make_synapse,
    matrix_state,
)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not MATRIX_READY, reason=MATRIX_SKIP),
              pytest.mark.xdist_group("e2e")]


@pytest.fixture
def synapse(tmp_path: Path) -> Iterator[Homeserver]:
    """A Synapse of the test's own: these tests stop and start it, and count what reached its room."""
    home = tmp_path / "synapse"
    home.mkdir()
    hs = make_synapse(home)
    try:
        yield hs
    finally:
        hs.stop()


@pytest.fixture
def gateway(tmp_path: Path, synapse: Homeserver) -> Iterator[Gateway]:
    gw = Gateway(matrix_state(tmp_path, synapse, gateway_port=free_port()), tmp_path / "gateway.log").start()
    try:
        yield gw
    finally:
        gw.stop()


def daemon(tasks_dir: Path, gateway: Gateway, hs: Homeserver, *args: str) -> Daemon:
    """task-pulsed finding the gateway as OpenClaw's clients do (OPENCLAW_STATE_DIR's config), token in its env.
    The pace follows this Synapse, whose rc_message is raised (the default, 0.2 events/s with a burst of 10, would
    space ten tasks' pings 5 s apart): new messages unlimited, card edits still 3 s apart."""
    env = e2e_env(OPENCLAW_STATE_DIR=str(gateway.state), OPENCLAW_GATEWAY_TOKEN=GATEWAY_TOKEN)
    d = Daemon(tasks_dir, "--openclaw", f"matrix:room:{hs.room_id}", "--openclaw-bin", str(OPENCLAW), "--lang", "en",
               "--sink-timeout", "120", "--pace", "messages=1000,burst=1000", *args, env=env).start()
    wait_for(lambda: "delivering through gateway ws://127.0.0.1" in d.log(), 60, "the gateway route")
    return d


def head(event: dict[str, Any]) -> str:
    content = event["content"]
    body = content["m.new_content"]["body"] if is_edit(event) else content.get("body", "")
    return body.splitlines()[0] if body else ""


def room_by_task(hs: Homeserver, names: list[str]) -> dict[str, dict[str, list[dict[str, Any]]]]:
    """For each task name: its new messages and the edits of them, as the room shows them."""
    events = hs.bot_messages()
    by_id = {e["event_id"]: e for e in events if not is_edit(e)}
    out: dict[str, dict[str, list[dict[str, Any]]]] = {n: {"new": [], "edits": []} for n in names}
    for e in events:
        original = by_id.get(e["content"]["m.relates_to"]["event_id"]) if is_edit(e) else e
        name = next((n for n in names if original is not None and n in head(original)), None)
        if name is not None:
            out[name]["edits" if is_edit(e) else "new"].append(e)
    return out


def settled(hs: Homeserver, names: list[str], steps: int, final_card: bool = True) -> bool:
    """Every task has its done ping in the room and (`final_card`) its card shows the end."""
    for parts in room_by_task(hs, names).values():
        pings = [e for e in parts["new"] if head(e).startswith("🎉") and "done!" in head(e)]
        cards = [e for e in parts["new"] if e not in pings]
        shown = head((parts["edits"] or cards or [{"content": {}}])[-1]) if cards else ""
        if not pings or (final_card and not (shown.startswith("🎉") and f"{steps}/{steps}" in shown)):
            return False
    return True


def run_tasks(store: TaskStore, names: list[str], steps: int, pause: float = 0.2,
              during: Any = None) -> dict[str, float]:
    """Each task written at an agent's pace (a step every `pause` s), then done; `during(i)` runs before step
    i. Returns when each task's done was written."""
    tasks = {n: store.create(n, [f"step {i}" for i in range(1, steps + 1)], datetime.now(UTC)) for n in names}
    done_at: dict[str, float] = {}
    for i in range(steps - 1):
        if during is not None:
            during(i)
        for task in tasks.values():
            store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
        time.sleep(pause)
    for name, task in tasks.items():
        done_at[name] = time.time()
        store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "shipped"), datetime.now(UTC))
    return done_at


def openclaw_queue(gateway: Gateway) -> int:
    """Messages OpenClaw's gateway still has in its own delivery queue (its state db, OpenClaw 2026.9.6)."""
    import sqlite3

    db = sqlite3.connect(f"file:{gateway.state / 'state' / 'openclaw.sqlite'}?mode=ro", uri=True, timeout=30)
    try:
        return db.execute("SELECT count(*) FROM delivery_queue_entries WHERE status = 'pending'").fetchone()[0]
    finally:
        db.close()


def exactly_once(hs: Homeserver, names: list[str], card_and_ping: bool = True) -> None:
    """Nothing twice: one done ping per task, no message body twice, edits of the task's first message only.
    `card_and_ping`: nothing else either (a card OpenClaw had to queue has no id to edit, so what follows it
    comes as new messages)."""
    for name, parts in room_by_task(hs, names).items():
        bodies = [e["content"].get("body") for e in parts["new"]]
        assert len(bodies) == len(set(bodies)), (name, bodies)
        assert sum("done!" in head(e) for e in parts["new"]) == 1, (name, bodies)
        if card_and_ping:
            assert len(bodies) == 2, (name, bodies)  # the card, and the done ping
        card = parts["new"][0]
        assert all(e["content"]["m.relates_to"]["event_id"] == card["event_id"] for e in parts["edits"])


def test_ten_tasks_reach_the_room_through_the_gateway_within_a_second(tmp_path: Path, tasks_dir: Path,
                                                                      daemons: list[Daemon], synapse: Homeserver,
                                                                      gateway: Gateway) -> None:
    d = daemon(tasks_dir, gateway, synapse, "--sink-concurrency", "10")
    daemons.append(d)
    # The first calls after a gateway starts take seconds (its Matrix client syncs): measured warm.
    run_tasks(TaskStore(tasks_dir), ["Warm-up"], steps=2)
    wait_for(lambda: settled(synapse, ["Warm-up"], 2), 120, "the warm-up task in the room")
    names = [f"Gateway task {i}" for i in range(10)]
    done_at = run_tasks(TaskStore(tasks_dir), names, steps=5)
    wait_for(lambda: settled(synapse, names, 5), 180, "every done ping and final card in the room")
    wait_for(lambda: all(n["delivered_at"] for n in read_notifications(tasks_dir)), 60, "every row marked")
    exactly_once(synapse, names)
    lags = []
    for name, parts in room_by_task(synapse, names).items():
        ping = next(e for e in parts["new"] if "done!" in head(e))
        lags.append(ping["origin_server_ts"] / 1000 - done_at[name])
    lags.sort()
    print(f"\nGateway lane, 10 tasks: done write → done message at the homeserver: median "
          f"{statistics.median(lags):.2f} s, p95 {lags[int(0.95 * (len(lags) - 1))]:.2f} s, max {lags[-1]:.2f} s")
    rows = read_notifications(tasks_dir)
    assert {r["delivered_by"] for r in rows} <= {"openclaw:gateway", "openclaw:card"}, {r["delivered_by"] for r in rows}
    assert statistics.median(lags) < 5  # a sanity bound only: the figures are the benchmark's business


def test_a_homeserver_away_for_30_s_loses_nothing_and_sends_nothing_twice(tmp_path: Path, tasks_dir: Path,
                                                                          daemons: list[Daemon],
                                                                          synapse: Homeserver,
                                                                          gateway: Gateway) -> None:
    d = daemon(tasks_dir, gateway, synapse)
    daemons.append(d)
    names = ["Outage A", "Outage B"]
    store = TaskStore(tasks_dir)
    outage: dict[str, float] = {}

    def during(step: int) -> None:
        if step == 2:
            synapse.stop()
            outage["from"] = time.monotonic()

    run_tasks(store, names, steps=6, pause=1.0, during=during)
    time.sleep(max(0.0, 30 - (time.monotonic() - outage["from"])))  # the outage lasts 30 s
    synapse.start()
    # A card OpenClaw had to queue cannot be edited (its id comes to nobody): done pings, then every row.
    wait_for(lambda: settled(synapse, names, 6, final_card=False), 240, "every done ping after the outage")
    wait_for(lambda: all(n["delivered_at"] for n in read_notifications(tasks_dir)), 120, "every row marked")
    # What the gateway queued it delivers once; anything more would come from its queue, so that must be empty.
    wait_for(lambda: openclaw_queue(gateway) == 0, 300, "OpenClaw's own delivery queue to be empty")
    exactly_once(synapse, names, card_and_ping=False)
    print(f"\nOutage lane: {sorted({r['delivered_by'] for r in read_notifications(tasks_dir)})}")


def test_a_gateway_restart_mid_task_loses_nothing_and_sends_nothing_twice(tmp_path: Path, tasks_dir: Path,
                                                                          daemons: list[Daemon],
                                                                          synapse: Homeserver,
                                                                          gateway: Gateway) -> None:
    d = daemon(tasks_dir, gateway, synapse)
    daemons.append(d)
    names = ["Restart A", "Restart B"]

    def during(step: int) -> None:
        if step == 2:
            gateway.stop()
            gateway.start(wait=False)

    run_tasks(TaskStore(tasks_dir), names, steps=6, pause=1.0, during=during)
    wait_for(lambda: settled(synapse, names, 6), 300, "every done ping and final card after the restart")
    wait_for(lambda: all(n["delivered_at"] for n in read_notifications(tasks_dir)), 120, "every row marked")
    wait_for(lambda: d.log().count("delivering through gateway ws://") >= 2, 180, "the gateway found again")
    exactly_once(synapse, names)


def openclaw(gateway: Gateway, *args: str) -> Any:
    """The real openclaw CLI on the gateway's state dir (it reaches the gateway through its config)."""
    proc = subprocess.run([str(OPENCLAW), *args, "--json"], capture_output=True, text=True, env=gateway.env,
                          timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def test_a_real_cron_run_becomes_a_task_with_its_card_and_its_done_ping(tmp_path: Path, tasks_dir: Path,
                                                                        daemons: list[Daemon], synapse: Homeserver,
                                                                        gateway: Gateway) -> None:
    """A real OpenClaw cron command job (no model involved) is run: OpenClaw's task ledger tells the daemon, which
    makes it a task; its card reaches the room and its end comes as the done ping."""
    daemons.append(daemon(tasks_dir, gateway, synapse))
    added = openclaw(gateway, "cron", "add", "--name", "E2E probe", "--every", "1h", "--no-deliver",
                     "--command-argv", json.dumps(["sh", "-c", "sleep 20; echo probe-ok"]))
    job_id = added.get("job", added)["id"]
    openclaw(gateway, "cron", "run", job_id)
    store = TaskStore(tasks_dir)

    def the_task() -> Any:
        ids = [t for t in store.task_ids() if t.startswith("openclaw-")]
        return store.load(ids[0]) if ids else None

    task = wait_for(the_task, 120, "the cron run as a task")
    assert task.name == "cron: E2E probe" and task.status == "running"
    wait_for(lambda: the_task().status == "done", 180, "the run's end")
    assert the_task().result == "probe-ok"
    name = "cron: E2E probe"
    wait_for(lambda: settled(synapse, [name], 1), 120, "its card and done ping in the room")
    exactly_once(synapse, [name])
