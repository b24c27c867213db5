"""The live card through the real daemon, with a stand-in `openclaw` that sleeps, answers like OpenClaw
and records every call (tests/standins/openclaw)."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.conftest import Daemon, clean_env, read_notifications, run_tp, wait_for

OPENCLAW = Path(__file__).parent / "standins" / "openclaw"


class Chat:
    """The stand-in's record of calls: `start` when a call begins, `end` once it has delivered."""

    def __init__(self, tmp_path: Path) -> None:
        self.log = tmp_path / "openclaw-calls.jsonl"

    def env(self, **extra: str) -> dict[str, str]:
        return clean_env(STANDIN_LOG=str(self.log), **extra)

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def delivered(self) -> list[dict[str, Any]]:
        return [r for r in self.records() if r["phase"] == "end"]

    def sends(self) -> list[dict[str, Any]]:
        return [r for r in self.delivered() if r["verb"] == "send"]

    def edits(self) -> list[dict[str, Any]]:
        return [r for r in self.delivered() if r["verb"] == "edit"]

    def in_flight(self, since: int = 0) -> bool:
        """A call under way among the records from index `since` on (a call killed earlier never ends)."""
        records = self.records()
        ended = {r["pid"] for r in records if r["phase"] == "end"}
        return any(r["phase"] == "start" and r["pid"] not in ended for r in records[since:])


def is_card(text: str, name: str) -> bool:
    """A card names the task (【name】 in Chinese, "name" in English) and shows the bar over its step lines; a ping
    has no bar."""
    return (f"【{name}】" in text or f'"{name}"' in text) and ("█" in text or "░" in text) and "\n" in text


def final_card(chat: Chat, name: str) -> bool:
    """The card's last edit shows the task ended (rows can all be marked before that edit is made)."""
    edits = [e for e in chat.edits() if f"【{name}】" in e["text"]]
    return bool(edits) and edits[-1]["text"].startswith(("🎉", "❌"))


def all_delivered(tasks_dir: Path, count: int) -> bool:
    notes = read_notifications(tasks_dir)
    return len(notes) == count and all(n["delivered_at"] for n in notes)


def openclaw_daemon(tasks_dir: Path, chat: Chat, *args: str, channel: str = "telegram:123456789",
                    **env: str) -> Daemon:
    return Daemon(tasks_dir, "--openclaw", channel, "--openclaw-bin", str(OPENCLAW), *args, env=chat.env(**env))


def test_one_card_edited_in_place_and_a_ping_for_the_end(tmp_path: Path, tasks_dir: Path,
                                                        daemons: list[Daemon]) -> None:
    chat = Chat(tmp_path)
    daemons.append(openclaw_daemon(tasks_dir, chat).start())
    task_id = run_tp(tasks_dir, "create", "Daily", "fetch", "filter", "publish").stdout.strip()
    wait_for(lambda: chat.sends(), 30, "the card")
    run_tp(tasks_dir, "next", task_id, "25 items")
    wait_for(lambda: chat.edits(), 30, "an edit")
    run_tp(tasks_dir, "next", task_id)
    run_tp(tasks_dir, "done", task_id, "published")
    # started, fetch done, filter done, done (publish, finished by `done`, is part of the done message)
    wait_for(lambda: all_delivered(tasks_dir, 4) and final_card(chat, "Daily"), 30, "all four delivered")
    card, ping = chat.sends()  # exactly two new messages: the card and the done ping
    assert card["text"].startswith("🔄 【Daily】[0/3]") and "⏳ publish" in card["text"]
    assert (card["channel"], card["target"], card["json"]) == ("telegram", "123456789", True)
    assert ping["text"].startswith("🎉 【Daily】完成！")
    assert {e["id"] for e in chat.edits()} == {card["messageId"]}  # every edit is of that one card
    assert "✅ fetch（25 items）" in chat.edits()[0]["text"]
    final = chat.edits()[-1]["text"]
    assert final.startswith("🎉 【Daily】完成 [3/3]") and final.endswith("结果: published")
    assert chat.delivered()[-1]["verb"] == "edit"  # the ping rings first, the card gets its final edit after


def test_a_slow_sender_gets_everything_coalesced(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    """20 steps at 5 steps/s, then done, through a sender that takes 2 s a call."""
    chat = Chat(tmp_path)
    daemons.append(openclaw_daemon(tasks_dir, chat, STANDIN_DELAY="2").start())
    store = TaskStore(tasks_dir)
    task = store.create("Batch", [f"step {i}" for i in range(1, 21)], datetime.now(UTC))
    for _ in range(19):
        time.sleep(0.2)  # the writer's own pace, not a wait for the daemon
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "all good"), datetime.now(UTC))
    wait_for(lambda: all_delivered(tasks_dir, 21) and final_card(chat, "Batch"), 60,
             "21 notifications delivered")  # started, 19 steps by `next`, done (which finishes step 20)
    card, ping = [s["text"] for s in chat.sends()]  # the card and the done ping, nothing else
    assert is_card(card, "Batch") and ping.startswith("🎉 【Batch】完成！")
    assert len(chat.delivered()) < 10, [r["verb"] for r in chat.delivered()]  # not one call per step
    assert chat.edits()[-1]["text"].startswith("🎉 【Batch】完成 [20/20]")
    starts = sorted((r["at"], r["phase"]) for r in chat.records())
    depth = max(sum(1 if p == "start" else -1 for _, p in starts[: i + 1]) for i in range(len(starts)))
    assert depth == 1  # one call in flight for the task, never two


def test_tasks_are_delivered_in_parallel_each_in_its_own_order(tmp_path: Path, tasks_dir: Path,
                                                               daemons: list[Daemon]) -> None:
    chat = Chat(tmp_path)
    daemons.append(openclaw_daemon(tasks_dir, chat, "--sink-concurrency", "3", STANDIN_DELAY="3").start())
    store = TaskStore(tasks_dir)
    now = datetime.now(UTC)
    ids = [store.create(f"T{i}", ["a", "b"], now).task_id for i in range(3)]
    for task_id in ids:
        store.update(task_id, lambda t: t.advance(datetime.now(UTC).isoformat()), datetime.now(UTC))
        store.update(task_id, lambda t: t.finish(datetime.now(UTC).isoformat()), datetime.now(UTC))
    wait_for(lambda: all_delivered(tasks_dir, 9), 60, "nine notifications delivered")  # started, a, done each
    first_starts = sorted(r["at"] for r in chat.records() if r["phase"] == "start")[:3]
    first_end = min(r["at"] for r in chat.delivered())
    assert first_starts[-1] < first_end  # three tasks' first calls were all under way at once
    for i in range(3):
        own = [r for r in chat.delivered() if f"【T{i}】" in r["text"]]
        card, ping = [r["text"] for r in own if r["verb"] == "send"]
        assert own[0]["verb"] == "send" and is_card(card, f"T{i}")  # its card came first (in whatever state)
        assert ping.startswith(f"🎉 【T{i}】完成！")


def test_kill_9_mid_call_keeps_the_card_and_pings_exactly_once(tmp_path: Path, tasks_dir: Path,
                                                                daemons: list[Daemon]) -> None:
    """A daemon killed while a call is in flight: the call dies with it and is done once after the restart."""
    chat, hold = Chat(tmp_path), tmp_path / "hold"

    def start() -> Daemon:
        d = openclaw_daemon(tasks_dir, chat, STANDIN_DELAY="0.5", STANDIN_HOLD=str(hold)).start()
        daemons.append(d)
        return d

    def kill_mid_call(d: Daemon, *write: str) -> None:
        """Hold calls, make the write, kill the daemon while its call is surely under way, then release.

        (Without the hold, a loaded machine can let the call finish between the look and the kill:
        the one window of at-least-once, sender done and not yet recorded, which this test is not about.)
        """
        hold.touch()
        calls_before = len(chat.records())
        run_tp(tasks_dir, *write)
        # A call this write caused: the one killed by the kill before never ends, and must not count.
        wait_for(lambda: chat.in_flight(since=calls_before), 30, "a call in flight")
        d.kill()
        wait_for(lambda: all(not _alive(r["pid"]) for r in chat.records()), 30, "the call to die with the daemon")
        hold.unlink()

    d = start()
    task_id = "resilient"
    kill_mid_call(d, "create", "--id", task_id, "Resilient", "one", "two", "three")  # during the card's first send
    d = start()
    wait_for(lambda: chat.sends(), 30, "the card, sent again")
    kill_mid_call(d, "next", task_id, "first")  # during an edit
    run_tp(tasks_dir, "next", task_id, "second")  # written while the daemon is down
    d = start()
    wait_for(lambda: all_delivered(tasks_dir, 3), 30, "the steps delivered")
    kill_mid_call(d, "done", task_id)  # during the done ping
    start()
    # started, one, two, done (three is finished by `done`)
    wait_for(lambda: all_delivered(tasks_dir, 4) and final_card(chat, "Resilient"), 30, "everything delivered")
    sends = Counter(s["text"].split()[0] for s in chat.sends())
    assert sends == {"🔄": 1, "🎉": 1}, chat.sends()  # one card, one done ping: nothing twice, nothing lost
    card_id = chat.sends()[0]["messageId"]
    assert {e["id"] for e in chat.edits()} == {card_id}  # the restarted daemons edited the same card
    assert chat.edits()[-1]["text"].startswith("🎉 【Resilient】完成 [3/3]")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"


def test_a_channel_that_cannot_edit_gets_coalesced_new_messages(tmp_path: Path, tasks_dir: Path,
                                                                daemons: list[Daemon]) -> None:
    chat = Chat(tmp_path)
    daemons.append(openclaw_daemon(tasks_dir, chat, channel="irc:#ops", STANDIN_DELAY="1").start())
    store = TaskStore(tasks_dir)
    task = store.create("Plain", ["a", "b", "c", "d", "e"], datetime.now(UTC))
    wait_for(chat.in_flight, 30, "the first message under way")
    for _ in range(3):
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat()), datetime.now(UTC))
    wait_for(lambda: all_delivered(tasks_dir, 4), 30, "four notifications delivered")
    texts = [s["text"] for s in chat.sends()]
    assert chat.edits() == [] and texts[0].startswith("🚀 开始【Plain】")
    assert len(texts) == 2 and "a、b、c完成" in texts[1], texts  # three steps in one message


def test_a_sender_without_an_id_still_delivers_as_new_messages(tmp_path: Path, tasks_dir: Path,
                                                               daemons: list[Daemon]) -> None:
    chat = Chat(tmp_path)
    d = openclaw_daemon(tasks_dir, chat, STANDIN_NO_ID="1").start()
    daemons.append(d)
    task_id = run_tp(tasks_dir, "create", "NoId", "a", "b").stdout.strip()
    wait_for(lambda: all_delivered(tasks_dir, 1), 30, "the first message")
    run_tp(tasks_dir, "next", task_id)
    run_tp(tasks_dir, "done", task_id)
    wait_for(lambda: all_delivered(tasks_dir, 3), 30, "all delivered")  # started, a, done
    assert chat.edits() == [] and "gave no message id" in d.log()
    assert chat.sends()[-1]["text"].startswith("🎉 【NoId】完成")


def test_a_hanging_sender_is_killed_and_a_failure_names_openclaws_reason(tmp_path: Path, tasks_dir: Path,
                                                                         daemons: list[Daemon]) -> None:
    chat = Chat(tmp_path)
    hung = openclaw_daemon(tasks_dir, chat, "--sink-timeout", "1", "--sink-attempts", "1", STANDIN_HANG="1").start()
    daemons.append(hung)
    run_tp(tasks_dir, "create", "Hung", "a")
    wait_for(lambda: "kept for task-pulse drain" in hung.log(), 30, "given up")
    assert "openclaw timed out after 1 s" in hung.log()
    wait_for(lambda: not any(_alive(r["pid"]) for r in chat.records()), 30, "the hung sender killed")
    assert hung.stop() == 0
    failing = openclaw_daemon(tasks_dir, chat, "--sink-attempts", "1", STANDIN_FAIL="send").start()
    daemons.append(failing)
    run_tp(tasks_dir, "create", "Refused", "a")
    wait_for(lambda: "Refused" in failing.log() and "kept for task-pulse drain" in failing.log(), 30, "given up")
    line = next(x for x in failing.log().splitlines() if "delivered after" in x)
    assert "Gateway not reachable at ws://127.0.0.1:18899 (ECONNREFUSED)." in line
    assert "Bind: loopback" not in failing.log() and "\x1b" not in failing.log()
    assert [json.loads(x)["kind"] for x in run_tp(tasks_dir, "drain", "--json").stdout.splitlines()] == \
        ["started", "started"]  # nothing lost: both stay for drain


def test_the_generic_exec_sink_edits_with_its_edit_command(tmp_path: Path, tasks_dir: Path,
                                                           daemons: list[Daemon]) -> None:
    chat = Chat(tmp_path)
    send = f"{OPENCLAW} message send --channel slack --target C1 --json --message"
    edit = f"{OPENCLAW} message edit --channel slack --target C1 --message-id {{id}} --json --message"
    daemons.append(Daemon(tasks_dir, "--exec", send, "--exec-edit", edit, env=chat.env()).start())
    task_id = run_tp(tasks_dir, "create", "Generic", "a", "b").stdout.strip()
    wait_for(lambda: chat.sends(), 30, "the card")
    run_tp(tasks_dir, "next", task_id)
    wait_for(lambda: all_delivered(tasks_dir, 2), 30, "both delivered")
    (card,) = chat.sends()
    assert [e["id"] for e in chat.edits()] == [card["messageId"]]


@pytest.mark.parametrize("style", ["stream"])
def test_stream_style_keeps_one_message_per_notification(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon],
                                                         style: str) -> None:
    chat = Chat(tmp_path)
    daemons.append(openclaw_daemon(tasks_dir, chat, "--style", style).start())
    task_id = run_tp(tasks_dir, "create", "Streamed", "a", "b").stdout.strip()
    run_tp(tasks_dir, "next", task_id)
    wait_for(lambda: all_delivered(tasks_dir, 2), 30, "both delivered")
    assert [s["text"].split()[0] for s in chat.sends()] == ["🚀", "✅"] and chat.edits() == []


def test_an_outage_longer_than_the_retries_loses_nothing(tmp_path: Path, tasks_dir: Path,
                                                          daemons: list[Daemon]) -> None:
    """Rows a sink gave up on are not only left for a drain nobody runs: they go out once it works again."""
    chat, outage = Chat(tmp_path), tmp_path / "gateway-down"
    outage.touch()
    d = openclaw_daemon(tasks_dir, chat, "--sink-attempts", "2", "--sink-backoff", "0.1",
                        STANDIN_FAIL_WHILE=str(outage)).start()
    daemons.append(d)
    first = run_tp(tasks_dir, "create", "During", "a").stdout.strip()
    run_tp(tasks_dir, "done", first)
    wait_for(lambda: "kept for task-pulse drain" in d.log(), 30, "the sink giving up")
    outage.unlink()  # the chat service is back
    run_tp(tasks_dir, "create", "After", "a")
    wait_for(lambda: all_delivered(tasks_dir, 3), 30, "everything delivered")  # During: started, done; After
    texts = [s["text"] for s in chat.sends()]
    assert any(is_card(t, "During") for t in texts) and any(t.startswith("🎉 【During】完成！") for t in texts)
    assert any(is_card(t, "After") for t in texts)
