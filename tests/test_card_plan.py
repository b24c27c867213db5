"""The pure parts of live delivery: the card's text, the plan of calls, reading a chat's reply."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from task_pulse.card import CARD_LIMIT, render_card
from task_pulse.model import Step, Task
from task_pulse.records import Card, Queued
from task_pulse.store import TaskStore
from task_pulsed.delivery.plan import plan_batch
from task_pulsed.delivery.sinks import first_reason, message_id_in
from tests.conftest import wait_for

NOW = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def task(steps: list[Step], status: str = "running", **fields: Any) -> Task:
    started = (NOW - timedelta(minutes=30)).isoformat()
    return Task(task_id="t", name=fields.pop("name", "日报发布"), status=status, steps=steps, started_at=started,
                updated_at=fields.pop("updated_at", (NOW - timedelta(minutes=2)).isoformat()), **fields)


def daily() -> list[Step]:
    return [Step("抓取", "done", message="抓取了25条数据"), Step("筛选", "running", message="已处理60%", percent=60),
            Step("写稿"), Step("发布")]


def test_the_card_shows_the_whole_task() -> None:
    assert render_card(task(daily()), NOW) == (
        "🔄 【日报发布】[1/4] ██░░░░░░░░ · 30分钟\n"
        "✅ 抓取（抓取了25条数据）\n"
        "🔄 筛选: 60% 已处理60%\n"
        "⏳ 写稿\n"
        "⏳ 发布")


def test_the_card_in_english_when_stalled_done_and_failed() -> None:
    assert render_card(task(daily()), NOW, "en", stalled=True).splitlines()[0] == \
        "⚠️ \"日报发布\" [1/4] ██░░░░░░░░ · may be stuck (no update for 2m0s)"
    steps = [Step("a", "done"), Step("b", "done")]
    done = task(steps, "done", result="published", finished_at=(NOW - timedelta(minutes=1)).isoformat())
    assert render_card(done, NOW, "en").splitlines() == [
        "🎉 \"日报发布\" done [2/2] ██████████ · 29m0s", "✅ a", "✅ b", "Result: published"]
    failed = task([Step("a", "done"), Step("b", "error", message="502")], "error", error="upstream 502")
    assert render_card(failed, NOW).splitlines()[-2:] == ["❌ b: 502", "错误: upstream 502"]
    # `task-pulse error` gives the failed step the task's error: the card says it once, at its end
    said_once = task([Step("a", "done"), Step("b", "error", message="upstream 502")], "error", error="upstream 502")
    assert render_card(said_once, NOW).splitlines()[-2:] == ["❌ b", "错误: upstream 502"]
    assert render_card(said_once, NOW, "en").count("upstream 502") == 1
    assert render_card(task(daily()), NOW, stalled=True).startswith(
        "⚠️ 【日报发布】[1/4] ██░░░░░░░░ · 可能卡住了（2分钟无更新）")


def test_a_200_step_card_folds_and_stays_under_the_limit() -> None:
    steps = [Step(f"step {i}", "done" if i < 196 else "running" if i == 196 else "pending", message="x" * 400)
             for i in range(1, 201)]
    for lang in ("zh", "en"):
        card = render_card(task(steps, name="Big"), NOW, lang)
        lines = card.splitlines()
        assert len(card) <= CARD_LIMIT and len(lines) == 10  # head, fold, 3 before, current, 4 after
        assert lines[1] == ("✅ 1–192（192 步已完成）" if lang == "zh" else "✅ 1–192 (192 steps done)")
        assert lines[5].startswith("🔄 step 196: ") and lines[-1].startswith("⏳ step 200")


def test_a_card_of_huge_fields_is_cut_at_the_limit() -> None:
    steps = [Step("s" * 5000, "pending", message="m" * 5000) for _ in range(16)]
    card = render_card(task(steps, name="n" * 5000, result="r" * 5000), NOW)
    assert len(card) <= CARD_LIMIT


def test_the_card_is_chat_safe() -> None:
    steps = [Step("push\x1b[31m", "running", message="token sk-abcdefghijklmnopqrstuvwxyz012345 \u202e")]
    card = render_card(task(steps, name="x\ny"), NOW)
    assert "\x1b" not in card and "\u202e" not in card and "abcdefghijklmnop" not in card and "sk-***" in card
    assert card.splitlines()[0].startswith("🔄 【x y】")
    assert "abcdefghijklmnop" in render_card(task(steps), NOW, redact_secrets=False)
    # A secret that the cap cuts through is masked all the same (masking runs before the cap).
    cut = [Step("a", "running", message="x" * 100 + " https://bob:Sup3rS3cretPassw0rd@github.com/x")]
    assert "Sup3r" not in render_card(task(cut), NOW)


def row(seq: int, kind: str, key: str | None = None) -> Queued:
    return Queued(seq=seq, key=key or f"t:{kind}:{seq}", task_id="t", task_name="T", kind=kind, created_at="",
                  text=f"{kind} {seq}", data={"name": "T", "step": f"s{seq}", "done": seq, "total": 9}, attempts=0)


def shape(plan: Any) -> list[tuple[str, str, list[int], bool]]:
    return [(c.op, c.text, [r.seq for r in c.rows], c.card) for c in plan.calls]


def test_plan_a_new_card_then_what_rings() -> None:
    rows = [row(1, "started"), row(2, "step_done"), row(3, "done")]
    plan = plan_batch(rows, style="card", lang="zh", card_text="CARD")
    assert shape(plan) == [("send", "CARD", [1, 2], True), ("send", "done 3", [3], False)]


def test_plan_an_edit_after_the_pings_and_nothing_when_the_card_is_unchanged() -> None:
    card = Card("m1", "OLD", "t:started:1")
    rows = [row(4, "step_done"), row(5, "stalled"), row(6, "progress")]
    assert shape(plan_batch(rows, style="card", lang="zh", card_text="NEW", card=card)) == [
        ("send", "stalled 5", [5], False), ("edit", "NEW", [4, 6], True)]
    same = plan_batch(rows, style="card", lang="zh", card_text="OLD", card=card)
    assert shape(same) == [("send", "stalled 5", [5], False)] and [r.seq for r in same.settled] == [4, 6]


def test_plan_a_new_run_gets_a_new_card() -> None:
    card = Card("m1", "OLD", "t:started:1")
    rows = [row(7, "started", key="t:started:7")]
    assert shape(plan_batch(rows, style="card", lang="zh", card_text="RUN 2", card=card)) == [
        ("send", "RUN 2", [7], True)]
    replayed = [row(1, "started", key="t:started:1")]  # the same run's started, redelivered after a crash
    assert shape(plan_batch(replayed, style="card", lang="zh", card_text="C", card=card))[0][0] == "edit"


def test_plan_without_edits_coalesces_and_an_end_needs_no_step_messages() -> None:
    steps = [row(2, "step_done"), row(3, "step_done"), row(4, "step_done")]
    (call,) = plan_batch(steps, style="card", lang="zh").calls
    assert call.op == "send" and [r.seq for r in call.rows] == [2, 3, 4] and "s2、s3、s4完成" in call.text
    ended = plan_batch([*steps, row(5, "done")], style="card", lang="zh")
    assert shape(ended) == [("send", "done 5", [5], False)] and [r.seq for r in ended.settled] == [2, 3, 4]
    assert shape(plan_batch([row(1, "started")], style="card", lang="zh")) == [("send", "started 1", [1], False)]


def test_plan_stream_is_one_message_each() -> None:
    rows = [row(1, "started"), row(2, "step_done"), row(3, "done")]
    assert shape(plan_batch(rows, style="stream", lang="zh", card_text="CARD")) == [
        ("send", "started 1", [1], False), ("send", "step_done 2", [2], False), ("send", "done 3", [3], False)]


@pytest.mark.parametrize("reply, expected", [
    ({"action": "send", "messageId": "uuid-1", "payload": {"result": {"messageId": "uuid-1"}}}, "uuid-1"),
    ({"ok": True, "result": {"chat": {"id": 42}, "message": {"message_id": 9001}}}, "9001"),
    ({"payload": {"result": {"target": {"id": "#pulse"}}}}, None),  # a nested id of something else
    ({"id": "top"}, "top"),
    ({"messageId": True}, None),
    ([{"messageId": "in-a-list"}], "in-a-list"),
    ("sent", None),
    (None, None),
])
def test_message_id_in_a_reply(reply: Any, expected: str | None) -> None:
    assert message_id_in(reply) == expected


def test_first_reason_skips_info_lines_and_colour() -> None:
    stderr = (b"\x1b[2mConfig: /home/u/.openclaw/openclaw.json\x1b[0m\nBind: loopback\n"
              b"\x1b[31mGateway not reachable at ws://127.0.0.1:18899 (ECONNREFUSED).\x1b[0m\n")
    assert first_reason(stderr) == "Gateway not reachable at ws://127.0.0.1:18899 (ECONNREFUSED)."
    assert first_reason(b"just one line\n") == "just one line"
    assert first_reason(b"") == ""


def test_plan_a_new_run_rings_for_the_old_run_first() -> None:
    card = Card("m1", "RUN 1", "t:started:1")
    rows = [row(5, "done"), row(6, "started", key="t:started:6")]
    assert shape(plan_batch(rows, style="card", lang="zh", card_text="RUN 2", card=card)) == [
        ("send", "done 5", [5], False), ("send", "RUN 2", [6], True)]


def test_plan_a_stall_already_over_does_not_ring() -> None:
    card = Card("m1", "OLD", "t:started:1")
    plan = plan_batch([row(3, "stalled"), row(4, "resumed")], style="card", lang="zh", card_text="NEW", card=card)
    assert shape(plan) == [("edit", "NEW", [3, 4], True)]


def test_plan_a_task_whose_sink_gave_no_id_gets_new_messages_until_its_next_run() -> None:
    marker = Card("", "CARD", "t:started:1")  # the card send printed no id
    assert shape(plan_batch([row(2, "step_done")], style="card", lang="zh", card_text="C2", card=marker)) == [
        ("send", "step_done 2", [2], False)]
    again = plan_batch([row(9, "started", key="t:started:9")], style="card", lang="zh", card_text="C9", card=marker)
    assert shape(again) == [("send", "C9", [9], True)]


def test_a_courier_outlives_an_unexpected_error(tmp_path: Path) -> None:
    """Whatever one round raises, the courier hands its claims back and goes on (here: the sink's first call)."""
    from task_pulse.records import Notification
    from task_pulse.state.outbox import Outbox
    from task_pulsed.delivery import LocalState
    from task_pulsed.delivery.courier import Courier, DeliveryOptions, Doorbell
    from task_pulsed.delivery.pacing import UNPACED, Pacer
    from task_pulsed.delivery.results import Sent
    from task_pulsed.delivery.sinks import Sink

    class FlakySink(Sink):
        name, timeout, can_edit = "exec", 5.0, False

        def __init__(self) -> None:
            self.sent: list[str] = []

        def identity(self) -> str:
            if not self.sent:
                self.sent.append("boom")
                raise RuntimeError("a bug in one round")
            return "flaky"

        def send(self, text: str, payload: dict[str, Any], key: str, before_write: object = None) -> Sent:
            self.sent.append(text)
            return Sent()

        def edit(self, message_id: str, text: str, payload: dict[str, Any], key: str) -> Sent:
            raise AssertionError("cannot edit")

        def describe(self) -> str:
            return "flaky"

    (tmp_path / ".pulse").mkdir()
    outbox = Outbox.for_tasks_dir(tmp_path)
    outbox.record("t", None, [Notification("t:started:1", "t", "T", "started", "hello", {})])
    sink, bell = FlakySink(), Doorbell()
    courier = Courier(0, LocalState(TaskStore(tmp_path)), sink, DeliveryOptions(), bell, Pacer(UNPACED))
    courier.start()
    try:
        wait_for(lambda: outbox.count_pending() == 0, 30, "the row delivered after the error")
    finally:
        courier.stop()
        courier.join(10)
        outbox.close()
    assert sink.sent == ["boom", "hello"] and not courier.is_alive()


def test_a_give_up_warning_counts_each_row_once(caplog: pytest.LogCaptureFixture) -> None:
    """A row that joined a failing call with fewer attempts is not given up with the older one: each row is
    counted in one warning (they used to overlap: "2 notifications" then "1 notifications" for 2 rows)."""
    import logging
    from dataclasses import replace
    from types import SimpleNamespace

    from task_pulsed.delivery.courier import Courier, DeliveryOptions, Doorbell
    from task_pulsed.delivery.pacing import UNPACED, Pacer
    from task_pulsed.delivery.results import DeliveryError

    class Outbox:
        def __init__(self) -> None:
            self.retried: list[list[int]] = []

        def retry_later(self, seqs: list[int], owner: str, error: str, retry_at: float, *, count: bool = True) -> None:
            self.retried.append(list(seqs))

    state = SimpleNamespace(owner_prefix="test:", errors=())
    sink = SimpleNamespace(name="exec", timeout=1.0, can_edit=False)
    courier = Courier(0, state, sink, DeliveryOptions(attempts=2, backoff=0.0), Doorbell(),  # type: ignore[arg-type]
                      Pacer(UNPACED))
    old, new = replace(row(1, "started"), attempts=1), row(2, "step_done")  # `new` came during the first tries
    outbox = Outbox()
    with caplog.at_level(logging.INFO, logger="task-pulsed"):
        courier._failed(outbox, old, [old, new], DeliveryError("boom"), edit=False)  # type: ignore[arg-type]
        courier._failed(outbox, new, [replace(new, attempts=1)], DeliveryError("boom"), edit=False)  # type: ignore[arg-type]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and all(": 1 notification not delivered after 2 attempts" in w for w in warnings)
