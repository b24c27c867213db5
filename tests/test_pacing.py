"""The chat's pace (daemon/delivery/pacing.py): pure, driven by a clock the test holds."""

from __future__ import annotations

import pytest

from task_pulsed.delivery.pacing import (
    CHANNEL_LIMITS,
    TELEGRAM_GROUP_PER_MINUTE,
    UNPACED,
    Limits,
    Pacer,
    channel_limits,
    describe,
    parse_pace,
)


def test_new_messages_go_one_per_second_on_telegram() -> None:
    pacer = Pacer(channel_limits("telegram", "123"))
    assert pacer.take_send(100.0) == 100.0  # the first goes at once
    assert pacer.next_send(100.0) == pytest.approx(101.0)
    assert pacer.take_send(100.2) == pytest.approx(101.0)  # two asking together get two slots
    assert pacer.take_send(100.2) == pytest.approx(102.0)
    assert pacer.next_send(105.0) == 105.0  # the debt is paid off by then


def test_a_telegram_group_also_keeps_twenty_a_minute() -> None:
    assert channel_limits("telegram", "123").per_minute is None
    pacer = Pacer(channel_limits("telegram", "-100123"))
    assert pacer.limits.per_minute == TELEGRAM_GROUP_PER_MINUTE
    times = [pacer.take_send(float(t)) for t in range(0, 40, 2)]  # 20 messages 2 s apart: within the rate
    assert times == [float(t) for t in range(0, 40, 2)]
    assert pacer.next_send(40.0) == pytest.approx(60.0)  # the 21st waits for the first to leave the minute


def test_edits_of_one_card_are_three_seconds_apart_and_other_cards_are_not_held() -> None:
    pacer = Pacer(CHANNEL_LIMITS["telegram"])
    assert pacer.next_edit("a", 10.0) == 10.0
    pacer.take_edit("a", 10.0)
    assert pacer.next_edit("a", 11.0) == pytest.approx(13.0)
    assert pacer.next_edit("b", 11.0) == 11.0
    assert pacer.next_send(11.0) == 11.0  # a ping does not wait behind edits
    pacer.forget("a")
    assert pacer.next_edit("a", 11.0) == 11.0


def test_the_next_edit_waits_from_when_the_last_one_came_back() -> None:
    pacer = Pacer(CHANNEL_LIMITS["telegram"])
    pacer.take_edit("a", 10.0)
    pacer.edit_done("a", 12.0)  # that call took 2 s
    assert pacer.next_edit("a", 12.5) == pytest.approx(15.0)
    pacer.edit_done("b", 12.0)  # a card never edited: nothing to wait for
    assert pacer.next_edit("b", 12.5) == 12.5


def test_on_matrix_edits_count_against_the_budget_but_leave_pings_a_reserve() -> None:
    pacer = Pacer(CHANNEL_LIMITS["matrix"])  # 0.2/s, burst 10, edits count
    edited = 0
    while pacer.next_edit(f"card{edited}", 0.0) == 0.0:
        pacer.take_edit(f"card{edited}", 0.0)
        edited += 1
    assert edited == 5  # half the burst: the rest is kept for new messages
    assert pacer.next_edit("another", 0.0) == pytest.approx(5.0)  # one token more above the reserve
    assert [pacer.take_send(0.0) for _ in range(5)] == [0.0] * 5  # five pings go at once, none behind the edits
    assert pacer.next_send(0.0) == pytest.approx(5.0)


def test_a_rate_limit_pauses_the_whole_chat() -> None:
    pacer = Pacer(CHANNEL_LIMITS["telegram"])
    pacer.pause(30.0)
    assert pacer.next_send(10.0) == 30.0
    assert pacer.next_edit("a", 10.0) == 30.0
    pacer.pause(20.0)  # an earlier end never shortens it
    assert pacer.paused_until == 30.0


def test_unpaced_never_waits() -> None:
    pacer = Pacer(UNPACED)
    assert [pacer.take_send(1.0) for _ in range(100)] == [1.0] * 100
    pacer.take_edit("a", 1.0)
    assert pacer.next_edit("a", 1.0) == 1.0


def test_pace_settings_change_the_channel_defaults() -> None:
    base = CHANNEL_LIMITS["telegram"]
    assert parse_pace("messages=0.5,edit=5", base) == Limits(per_second=0.5, burst=1, edit_every=5.0)
    assert parse_pace("minute=10, burst=3 ,edits-count=yes", base).per_minute == 10
    assert parse_pace("off", base) == UNPACED
    assert describe(base) == "1 new message/s (burst 1), an edit per card every 3 s"
    assert describe(UNPACED) == "unpaced"


@pytest.mark.parametrize("spec", ["messages", "messages=0", "messages=inf", "burst=0", "edit=-1", "edits-count=maybe",
                                  "minute=1.5"])
def test_a_bad_pace_setting_is_one_clear_error(spec: str) -> None:
    with pytest.raises(ValueError, match=r"^--pace: .* is not a valid setting"):
        parse_pace(spec, UNPACED)


def test_an_unknown_pace_setting_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown setting 'speed'.*messages, burst, minute, edit"):
        parse_pace("speed=1", UNPACED)
