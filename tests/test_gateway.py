"""Delivery through the OpenClaw gateway's WebSocket (daemon/delivery/gateway/): the real daemon against a
stand-in gateway that speaks the protocol's subset (tests/standins/gateway.py), the stand-in CLI behind it.

What must hold: one connection for many calls; a message the gateway queued is never sent again by any
route; a lost reply is asked again with the same key, never through the CLI; the CLI takes only what was
never written to the gateway; a gateway restart (1012) loses nothing and sends nothing twice; the chat's
pace holds (edits of a card apart, pings not behind edits, a rate limit honoured); kill -9 mid-call leaves
one card and one done ping.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.conftest import BIN, Daemon, clean_env, read_notifications, run_tp, wait_for
from tests.standins.gateway import StandInGateway

STANDIN_CLI = Path(__file__).parent / "standins" / "openclaw"
TOKEN = "test-token"


@pytest.fixture
def gateway() -> Iterator[StandInGateway]:
    gw = StandInGateway(TOKEN).start()
    yield gw
    gw.stop()


def cli_calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def gateway_daemon(tasks_dir: Path, gateway: StandInGateway | None, cli_log: Path, *args: str,
                   channel: str = "telegram:1", url: str | None = None, **env: str) -> Daemon:
    """task-pulsed --openclaw CHANNEL with the gateway found through the environment, the stand-in CLI behind it."""
    return Daemon(tasks_dir, "--openclaw", channel, "--openclaw-bin", str(STANDIN_CLI), "--lang", "en", *args,
                  env=clean_env(OPENCLAW_GATEWAY_URL=url or (gateway.url if gateway else "ws://127.0.0.1:1"),
                                OPENCLAW_GATEWAY_TOKEN=TOKEN, STANDIN_LOG=str(cli_log), **env))


def delivered(tasks_dir: Path, n: int) -> bool:
    notes = read_notifications(tasks_dir)
    return len(notes) == n and all(r["delivered_at"] for r in notes)


def sends(gw: StandInGateway) -> list[dict[str, Any]]:
    return [r for r in gw.requests if r["method"] == "send"]


def final_card(text: str, name: str, steps: int) -> bool:
    """The card of a task that ended well: its head names it, done, every step counted."""
    head = text.splitlines()[0]
    return head.startswith("🎉") and name in head and f"{steps}/{steps}" in head


def test_one_connection_carries_every_call_and_the_card_is_edited_in_place(tmp_path: Path, tasks_dir: Path,
                                                                           gateway: StandInGateway,
                                                                           daemons: list[Daemon]) -> None:
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off").start()
    daemons.append(d)
    wait_for(lambda: "delivering through gateway ws://127.0.0.1" in d.log(), 20, "the gateway route")
    store = TaskStore(tasks_dir)
    task = store.create("Nightly", [f"s{i}" for i in range(1, 6)], datetime.now(UTC))
    for i in range(4):
        wait_for(lambda i=i: delivered(tasks_dir, 1 + i), 20, "caught up")  # started, then each step_done
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "all good"), datetime.now(UTC))
    wait_for(lambda: delivered(tasks_dir, 6), 30, "every notification delivered")  # started, 4 steps, done
    wait_for(lambda: final_card(gateway.sends()[0].shown, "Nightly", 5), 20, "the final card")
    assert gateway.connections == 1  # every call over one connection

    def cards() -> list[tuple[str, str]]:
        db = sqlite3.connect(tasks_dir / ".pulse" / "state.db")
        try:
            return db.execute("SELECT task_id, text FROM cards").fetchall()
        finally:
            db.close()

    # The last edit carried no row (the done ping told it): it is stored as the task's card all the same.
    wait_for(lambda: cards() == [(task.task_id, gateway.sends()[0].shown)], 10, "the card as the chat shows it")
    assert [m.text.split()[0] for m in gateway.sends()] == ["🔄", "🎉"]  # the card, then the done ping
    assert cli_calls(tmp_path / "cli.jsonl") == []
    assert {n["delivered_by"].split(":")[-1] for n in read_notifications(tasks_dir)} <= {"gateway", "card"}


def test_a_message_the_gateway_queued_is_never_sent_again(tmp_path: Path, tasks_dir: Path,
                                                          gateway: StandInGateway, daemons: list[Daemon]) -> None:
    """OUTBOUND_DELIVERY_QUEUED: OpenClaw owns it now. Not resent over the socket, not through the CLI."""
    gateway.queue_sends = 2  # the card and the next new message: the chat service is away
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off").start()
    daemons.append(d)
    task_id = run_tp(tasks_dir, "create", "Queued", "a").stdout.strip()
    wait_for(lambda: delivered(tasks_dir, 1), 20, "the card handed over")
    run_tp(tasks_dir, "done", task_id, "fine")
    wait_for(lambda: delivered(tasks_dir, 2), 20, "the done ping handed over")
    assert [n["delivered_by"] for n in read_notifications(tasks_dir)] == ["openclaw:gateway queue"] * 2
    assert gateway.sends() == [] and len(sends(gateway)) == 2
    gateway.flush_queue()  # the chat service is back: OpenClaw delivers what it queued
    time.sleep(0)  # nothing to wait for: the daemon must not act again
    assert [m.text.split()[0] for m in gateway.sends()] == ["🔄", "🎉"]
    assert len(sends(gateway)) == 2 and cli_calls(tmp_path / "cli.jsonl") == []
    d.stop()
    d2 = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off").start()  # nor after a restart
    daemons.append(d2)
    wait_for(lambda: "delivering through gateway" in d2.log(), 20, "the gateway route")
    assert len(sends(gateway)) == 2


def test_a_cli_send_openclaw_queued_is_not_sent_again(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    """The CLI route: OpenClaw writes its own queue row first and keeps it when the chat fails; its gateway
    delivers it later. The reply says so (`stage: platform_send`): handed over, not retried."""
    cli_log, away = tmp_path / "cli.jsonl", tmp_path / "away"
    away.touch()
    d = gateway_daemon(tasks_dir, None, cli_log, "--pace", "off", "--openclaw-gateway", "none", "--sink-backoff", "0.2",
                       STANDIN_QUEUE="1", STANDIN_FAIL_WHILE=str(away)).start()
    daemons.append(d)
    run_tp(tasks_dir, "create", "Queued by the CLI", "a")
    wait_for(lambda: delivered(tasks_dir, 1), 20, "the card handed over")
    assert [n["delivered_by"] for n in read_notifications(tasks_dir)] == ["openclaw:cli queue"]
    assert [c["phase"] for c in cli_calls(cli_log)] == ["start", "queued"]  # one call, no retry
    assert "failed (fetch failed: fetch failed) and OpenClaw kept it in its queue" in d.log()


def test_a_lost_reply_is_asked_again_with_the_same_key_and_shows_once(tmp_path: Path, tasks_dir: Path,
                                                                      gateway: StandInGateway,
                                                                      daemons: list[Daemon]) -> None:
    gateway.lose_replies = 1  # the card reaches the chat, its reply never comes
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off", "--sink-timeout", "2").start()
    daemons.append(d)
    run_tp(tasks_dir, "create", "Lost", "a", "b")
    wait_for(lambda: delivered(tasks_dir, 1), 30, "the card settled")
    keys = [r["params"]["idempotencyKey"] for r in sends(gateway)]
    assert len(keys) == 2 and keys[0] == keys[1]  # asked again, the same request
    assert len(gateway.sends()) == 1  # and it is in the chat once
    assert "asking again with the same key" in d.log() and "settled by asking again" in d.log()
    assert cli_calls(tmp_path / "cli.jsonl") == []


def test_a_send_in_doubt_waits_for_the_gateway_and_never_takes_the_cli(tmp_path: Path, tasks_dir: Path,
                                                                       gateway: StandInGateway,
                                                                       daemons: list[Daemon]) -> None:
    """The reply is lost and the gateway goes away: the send is not made through the CLI (it may be in the chat
    already); once the gateway is back it is asked again with its key."""
    gateway.lose_replies = 1
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off", "--sink-timeout", "2").start()
    daemons.append(d)
    run_tp(tasks_dir, "create", "Doubt", "a")
    wait_for(lambda: len(sends(gateway)) == 1, 20, "the card written")
    port = gateway.port
    gateway.stop()
    wait_for(lambda: "a send in doubt waits for the gateway" in d.log(), 30, "the send in doubt held back")
    assert cli_calls(tmp_path / "cli.jsonl") == []
    back = StandInGateway(TOKEN)
    back.chat, back._replies = gateway.chat, gateway._replies  # the same gateway process, listening again
    back.start(port)
    try:
        wait_for(lambda: delivered(tasks_dir, 1), 30, "the card settled through the gateway")
        assert len(back.chat) == 1 and cli_calls(tmp_path / "cli.jsonl") == []
    finally:
        back.stop()


def test_the_cli_takes_what_was_never_written_and_the_gateway_takes_over_when_it_comes(
        tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    from tests.e2e.conftest import free_port

    port, cli_log = free_port(), tmp_path / "cli.jsonl"
    d = gateway_daemon(tasks_dir, None, cli_log, "--pace", "off", url=f"ws://127.0.0.1:{port}").start()
    daemons.append(d)
    wait_for(lambda: "delivering through openclaw CLI (gateway down" in d.log(), 20, "the CLI route")
    task_id = run_tp(tasks_dir, "create", "Fallback", "a", "b").stdout.strip()
    wait_for(lambda: delivered(tasks_dir, 1), 30, "the card sent by the CLI")
    assert [c["verb"] for c in cli_calls(cli_log) if c["phase"] == "end"] == ["send"]
    gateway = StandInGateway(TOKEN).start(port)
    try:
        wait_for(lambda: "delivering through gateway" in d.log(), 30, "the gateway found again")
        run_tp(tasks_dir, "done", task_id, "ok")
        wait_for(lambda: delivered(tasks_dir, 2), 30, "done through the gateway")
        assert [m.text.split()[0] for m in gateway.sends()] == ["🎉"]
        card_id = next(c["messageId"] for c in cli_calls(cli_log) if c["phase"] == "end")
        edits = wait_for(lambda: [r for r in gateway.requests if r["method"] == "message.action"], 20, "an edit")
        assert edits[-1]["params"]["params"]["messageId"] == card_id  # the card the CLI sent, edited here
        assert len([c for c in cli_calls(cli_log) if c["phase"] == "end"]) == 1
    finally:
        gateway.stop()


def test_a_gateway_restart_loses_nothing_and_sends_nothing_twice(tmp_path: Path, tasks_dir: Path,
                                                                  gateway: StandInGateway,
                                                                  daemons: list[Daemon]) -> None:
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off", "--openclaw-gateway",
                       gateway.url).start()
    daemons.append(d)
    store = TaskStore(tasks_dir)
    task = store.create("Restarted", [f"s{i}" for i in range(1, 9)], datetime.now(UTC))
    for i in range(7):
        if i == 3:
            gateway.restart(down_for=2.0)  # 1012, then connections refused for a while
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
        time.sleep(0.4)  # an agent's pace
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "done"), datetime.now(UTC))
    wait_for(lambda: delivered(tasks_dir, 9), 60, "every notification delivered")
    assert "closed 1012" in d.log()
    wait_for(lambda: gateway.connections >= 2, 30, "the gateway found again after its restart")
    news = [m.text for m in gateway.sends()] + [c["text"] for c in cli_calls(tmp_path / "cli.jsonl")
                                                 if c["phase"] == "end" and c["verb"] == "send"]
    assert sorted(t.split()[0] for t in news) == ["🎉", "🔄"], news  # one card, one done ping, whatever the route


def test_edits_keep_the_channels_pace_and_the_done_ping_is_not_held_behind_them(
        tmp_path: Path, tasks_dir: Path, gateway: StandInGateway, daemons: list[Daemon]) -> None:
    """A 20-step task written at 10 steps/s to Telegram: edits of its card at least 3 s apart, at most 3 new
    messages, the final card exact, and the done ping out at once."""
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl").start()
    daemons.append(d)
    store = TaskStore(tasks_dir)
    task = store.create("Fast", [f"step {i}" for i in range(1, 21)], datetime.now(UTC))
    for _ in range(19):
        time.sleep(0.1)
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat()), datetime.now(UTC))
    done_at = time.time()
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "shipped"), datetime.now(UTC))
    wait_for(lambda: delivered(tasks_dir, 21), 60, "every notification delivered")
    messages = gateway.sends()
    assert len(messages) <= 3 and [m.text.split()[0] for m in messages] == ["🔄", "🎉"]
    card, ping = messages
    assert ping.at - done_at < 2.0  # not behind the card's next edit
    wait_for(lambda: final_card(card.shown, "Fast", 20), 20, "the final card")
    times = gateway.edit_times(card.id)
    assert all(b - a >= 2.9 for a, b in zip(times, times[1:], strict=False)), times
    assert all(line.startswith("✅") for line in card.shown.splitlines()[1:21] if line[:1] in "✅🔄⏳")


def test_a_rate_limit_reply_pauses_the_chat_and_loses_nothing(tmp_path: Path, tasks_dir: Path,
                                                              gateway: StandInGateway, daemons: list[Daemon]) -> None:
    gateway.rate_limit, gateway.retry_after_ms = 1, 2000
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl").start()
    daemons.append(d)
    task_id = run_tp(tasks_dir, "create", "Limited", "a").stdout.strip()
    run_tp(tasks_dir, "done", task_id, "ok")
    wait_for(lambda: delivered(tasks_dir, 2), 30, "both delivered")
    attempts = sends(gateway)
    assert attempts[1]["at"] - attempts[0]["at"] >= 1.9  # nothing went before the time it named
    assert len(gateway.sends()) == 2
    assert "the chat asked to wait 2.0 s" in d.log()
    assert all(n["delivered_at"] for n in read_notifications(tasks_dir))


def test_a_permanent_refusal_keeps_the_rows_for_drain_with_openclaws_reason(tmp_path: Path, tasks_dir: Path,
                                                                            gateway: StandInGateway,
                                                                            daemons: list[Daemon]) -> None:
    gateway.fail_sends = [{"code": "INVALID_REQUEST", "message": "unsupported channel: nosuch"}]
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off").start()
    daemons.append(d)
    run_tp(tasks_dir, "create", "Refused", "a")
    wait_for(lambda: "refused (gateway send: INVALID_REQUEST unsupported channel: nosuch)" in d.log(), 20,
             "OpenClaw's reason in the log")
    assert len(sends(gateway)) == 1 and cli_calls(tmp_path / "cli.jsonl") == []  # no retry, no other route
    drained = run_tp(tasks_dir, "drain", "--json").stdout
    assert '"kind": "started"' in drained


def test_kill_9_mid_call_gives_one_card_and_one_done_ping(tmp_path: Path, tasks_dir: Path, gateway: StandInGateway,
                                                          daemons: list[Daemon]) -> None:
    """The daemon is killed while the gateway holds its reply (the card is in the chat, unanswered): the
    restarted daemon asks again with the noted key and the gateway answers from memory."""
    gateway.hold_replies = threading.Event()
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off").start()
    daemons.append(d)
    task_id = run_tp(tasks_dir, "create", "Killed", "a", "b").stdout.strip()
    wait_for(lambda: len(gateway.sends()) == 1, 20, "the card in the chat, its reply held")
    d.kill()
    gateway.hold_replies.set()
    gateway.hold_replies = None
    run_tp(tasks_dir, "next", task_id, "one")
    run_tp(tasks_dir, "done", task_id, "two")
    d2 = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off").start()
    daemons.append(d2)
    wait_for(lambda: delivered(tasks_dir, 3), 30, "everything delivered")
    wait_for(lambda: final_card(gateway.sends()[0].shown, "Killed", 2), 20, "the final card")
    assert [m.text.split()[0] for m in gateway.sends()] == ["🔄", "🎉"]


def test_check_names_the_route(tmp_path: Path, tasks_dir: Path, gateway: StandInGateway) -> None:
    def check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN / "task-pulsed"), "--dir", str(tasks_dir), "--openclaw", "telegram:1",
                               "--openclaw-bin", str(STANDIN_CLI), *args, "--check"], capture_output=True, text=True,
                              env=clean_env(OPENCLAW_GATEWAY_URL=gateway.url, **env), timeout=60)

    ok = check(OPENCLAW_GATEWAY_TOKEN=TOKEN)
    assert ok.returncode == 0 and f"route: gateway {gateway.url}: ok, OpenClaw 2026.9.6" in ok.stdout
    wrong = check(OPENCLAW_GATEWAY_TOKEN="nope")
    assert wrong.returncode == 0 and "refused the token (AUTH_TOKEN_MISMATCH)" in wrong.stdout
    assert "the openclaw CLI will be used" in wrong.stdout
    assert "nope" not in wrong.stdout + wrong.stderr
    cli_only = check("--openclaw-gateway", "none")
    assert cli_only.returncode == 0 and "route: the openclaw CLI" in cli_only.stdout
    newer = StandInGateway(TOKEN, protocol=5).start()
    try:
        mismatch = check("--openclaw-gateway", newer.url, OPENCLAW_GATEWAY_TOKEN=TOKEN)
    finally:
        newer.stop()
    assert mismatch.returncode == 2 and "protocol" in mismatch.stdout and "4" in mismatch.stdout


def test_status_says_the_route_and_when_it_changes(tmp_path: Path, tasks_dir: Path, gateway: StandInGateway,
                                                   daemons: list[Daemon]) -> None:
    from tests.test_systemd import NotifySocket

    notify = NotifySocket()
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", NOTIFY_SOCKET="@" + notify.name).start()
    daemons.append(d)

    def status(route: str) -> bool:
        return any(a.startswith("STATUS=") and f"delivering through {route}" in a for a in notify.assignments())

    wait_for(lambda: status(f"gateway {gateway.url} (OpenClaw 2026.9.6)"), 20, "the gateway route in STATUS")
    gateway.restart(down_for=3.0)
    wait_for(lambda: status("openclaw CLI (gateway down"), 20, "the CLI route in STATUS")
    wait_for(lambda: d.log().count(f"delivering through gateway {gateway.url}") == 2, 30, "the gateway again")
    assert "WARNING delivering through openclaw CLI (gateway down: " in d.log()


def test_a_refused_token_is_one_clear_line_and_the_cli_delivers(tmp_path: Path, tasks_dir: Path,
                                                                gateway: StandInGateway, daemons: list[Daemon]) -> None:
    cli_log = tmp_path / "cli.jsonl"
    d = Daemon(tasks_dir, "--openclaw", "telegram:1", "--openclaw-bin", str(STANDIN_CLI), "--pace", "off",
               env=clean_env(OPENCLAW_GATEWAY_URL=gateway.url, OPENCLAW_GATEWAY_TOKEN="wrong-token",
                             STANDIN_LOG=str(cli_log))).start()
    daemons.append(d)
    run_tp(tasks_dir, "create", "Refused token", "a")
    wait_for(lambda: delivered(tasks_dir, 1), 30, "the card through the CLI")
    assert [c["verb"] for c in cli_calls(cli_log) if c["phase"] == "end"] == ["send"]
    refusals = [line for line in d.log().splitlines() if "refused the token" in line]
    assert len(refusals) == 1 and "AUTH_TOKEN_MISMATCH" in refusals[0] and "wrong-token" not in d.log()
    assert gateway.sends() == []


def test_a_gateway_still_starting_is_tried_again_within_seconds(tmp_path: Path, tasks_dir: Path,
                                                               gateway: StandInGateway, daemons: list[Daemon]) -> None:
    """`connect` answered "gateway starting; retry shortly" (retryable) is a moment, not a refused token."""
    gateway.starting_until = time.monotonic() + 2.0
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl").start()
    daemons.append(d)
    wait_for(lambda: f"delivering through gateway {gateway.url}" in d.log(), 15, "the gateway once it started")
    assert "refused" not in d.log()


def test_the_last_edit_the_pace_held_back_is_made_when_it_is_due(tmp_path: Path, tasks_dir: Path,
                                                                 gateway: StandInGateway,
                                                                 daemons: list[Daemon]) -> None:
    """The done ping tells the end, so the card's last edit carries no notification of its own; held back by
    the pace (an edit came less than 3 s before), it is owed on the card and made once due."""
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl").start()  # Telegram's pace: an edit per 3 s
    daemons.append(d)
    store = TaskStore(tasks_dir)
    task = store.create("Owed", ["a", "b", "c"], datetime.now(UTC))
    wait_for(lambda: delivered(tasks_dir, 1), 20, "the card sent")
    store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat()), datetime.now(UTC))
    wait_for(lambda: gateway.sends() and gateway.sends()[0].edits, 20, "an edit of the card")
    store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat()), datetime.now(UTC))
    wait_for(lambda: delivered(tasks_dir, 3), 20, "the second step's row, held for the pace then told")
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "fine"), datetime.now(UTC))
    wait_for(lambda: delivered(tasks_dir, 4), 20, "the done ping")
    wait_for(lambda: final_card(gateway.sends()[0].shown, "Owed", 3), 20, "the card's last edit, once due")
    times = gateway.edit_times(gateway.sends()[0].id)
    assert all(b - a >= 2.9 for a, b in zip(times, times[1:], strict=False)), times
