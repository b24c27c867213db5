"""End to end against the real thing: task-pulsed → the real OpenClaw CLI → ngircd on 127.0.0.1 → an IRC
client that reads the channel. Skipped where the parts are missing; tests/e2e/README.md sets them up."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task_pulse.store import TaskStore
from tests.conftest import Daemon, read_notifications, wait_for
from tests.e2e.conftest import CHANNEL, IRC_READY, IRC_SKIP, OPENCLAW, Listener, e2e_env, free_port, openclaw_state

# One worker runs the e2e lanes (one OpenClaw install and its gateway): see pyproject.toml.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not IRC_READY, reason=IRC_SKIP),
              pytest.mark.xdist_group("e2e")]


def test_a_task_reaches_an_irc_channel_through_the_real_openclaw(tmp_path: Path, tasks_dir: Path,
                                                                 daemons: list[Daemon],
                                                                 irc: tuple[int, Listener]) -> None:
    port, listener = irc
    env = e2e_env(OPENCLAW_STATE_DIR=str(openclaw_state(tmp_path, port)))
    d = Daemon(tasks_dir, "--openclaw", f"irc:{CHANNEL}", "--openclaw-bin", str(OPENCLAW),
               "--openclaw-gateway", "none", "--lang", "en",
               "--sink-timeout", "120", env=env).start()
    daemons.append(d)
    store = TaskStore(tasks_dir)
    task = store.create("E2E report", [f"step {i}" for i in range(1, 11)], datetime.now(UTC))
    for _ in range(9):  # an agent's pace: 5 steps a second
        time.sleep(0.2)
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    done_at = time.time()
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "shipped"), datetime.now(UTC))
    wait_for(lambda: any('"E2E report" done!' in text for _, text in listener.messages), 240,
             f"the done message in {CHANNEL}")
    wait_for(lambda: all(n["delivered_at"] for n in read_notifications(tasks_dir)), 60, "every row marked")
    texts = [text for _, text in listener.messages]
    arrived = next(at for at, text in listener.messages if '"E2E report" done!' in text)
    print(f"\nIRC lane: {len(texts)} new messages for 12 notifications; done write → in the channel "
          f"{arrived - done_at:.1f} s; messages: {texts}")
    assert '"E2E report"' in texts[0]  # the start (or, on a slow machine, a catch-up): IRC flattens lines
    assert len(texts) <= 4  # started, at most a couple of coalesced step messages, done
    by = {n["delivered_by"] for n in read_notifications(tasks_dir)}
    assert by <= {"openclaw:cli", "openclaw:coalesced"}, by  # sent, or carried by a message that said more


def test_a_send_openclaw_queued_is_handed_over_and_a_refused_one_names_its_reason(
        tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    """The IRC server is not there: `openclaw message send` keeps the message in its own delivery queue (for a
    gateway on its state dir to send once the server is back) and says why it failed: handed over, never sent
    again. A target OpenClaw refuses (not a channel name) is kept for drain with OpenClaw's own reason."""
    import sqlite3

    port = free_port()  # nothing listens there
    state = openclaw_state(tmp_path, port)
    env = e2e_env(OPENCLAW_STATE_DIR=str(state))
    d = Daemon(tasks_dir, "--openclaw", f"irc:{CHANNEL}", "--openclaw-bin", str(OPENCLAW),
               "--openclaw-gateway", "none", "--sink-attempts", "1", "--sink-timeout", "120", env=env).start()
    daemons.append(d)
    TaskStore(tasks_dir).create("Nobody home", ["a"], datetime.now(UTC))
    wait_for(lambda: "kept it in its queue" in d.log(), 120, "the queued send")
    line = next(x for x in d.log().splitlines() if "kept it in its queue" in x)
    assert f"connect ECONNREFUSED 127.0.0.1:{port}" in line and "\x1b" not in line
    assert [n["delivered_by"] for n in read_notifications(tasks_dir)] == ["openclaw:cli queue"]
    queue = sqlite3.connect(state / "state" / "openclaw.sqlite")
    try:
        pending = queue.execute("SELECT count(*) FROM delivery_queue_entries WHERE status = 'pending'").fetchone()[0]
    finally:
        queue.close()
    assert pending == 1  # OpenClaw has it: a gateway on this state dir would deliver it
    d.stop()
    other = tasks_dir.parent / "other"
    other.mkdir()
    refused = Daemon(other, "--openclaw", "irc:bad target with spaces", "--openclaw-bin", str(OPENCLAW),
                     "--openclaw-gateway", "none", "--sink-attempts", "1", "--sink-timeout", "120", env=env).start()
    daemons.append(refused)
    TaskStore(other).create("Bad target", ["a"], datetime.now(UTC))
    wait_for(lambda: "kept for task-pulse drain" in refused.log(), 120, "the refused send")
    line = next(x for x in refused.log().splitlines() if "kept for task-pulse drain" in x)
    assert "Unknown target" in line and "\x1b" not in line
