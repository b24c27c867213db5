"""Stall, resume and throttle decisions, with `now` passed in: no threads, no sleeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from task_pulse.model import Task, task_from_dict
from task_pulse.records import Seen
from task_pulsed.tracker import STALL_MARGIN, Policy, Update, flush_due, flush_held, track

T0 = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
POLICY = Policy(default_stall=180, progress_interval=30, lang="zh")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def task(updated: float, *, message: str | None = None, percent: float | None = None, step: int = 0,
         status: str = "running", stall: float | None = None) -> Task:
    steps = []
    for i, name in enumerate(("fetch", "filter", "write")):
        s: dict[str, object] = {"name": name, "status": "done" if i < step else "pending"}
        if i == step and status == "running":
            s["status"] = "running"
            if message is not None:
                s["message"] = message
            if percent is not None:
                s["percent"] = percent
        steps.append(s)
    raw: dict[str, object] = {"taskName": "Daily", "status": status, "startedAt": T0.isoformat(),
                              "updatedAt": at(updated).isoformat(), "steps": steps}
    if stall is not None:
        raw["stallSeconds"] = stall
    return task_from_dict(raw, "t1")


def kinds(update: Update) -> list[str]:
    return [n.kind for n in update.notifications]


def step(old: Seen | None, new: Task, now: float, policy: Policy = POLICY) -> Update:
    return track(old, new, at(now), policy)


# -- stall and resume -------------------------------------------------------------------------------


def test_stall_timer_is_set_at_the_deadline_and_moves_with_each_update() -> None:
    first = step(None, task(0), 0)
    assert kinds(first) == ["started"]
    assert first.seen.stall_at == (at(180) + STALL_MARGIN).timestamp()
    beat = step(first.seen, task(100), 100)
    assert kinds(beat) == []  # a heartbeat that changes nothing visible only moves the timer
    assert beat.seen.stall_at == (at(280) + STALL_MARGIN).timestamp()


def test_per_task_threshold_wins() -> None:
    assert step(None, task(0, stall=600), 0).seen.stall_at == (at(600) + STALL_MARGIN).timestamp()
    assert step(None, task(0), 0, Policy(default_stall=5)).seen.stall_at == (at(5) + STALL_MARGIN).timestamp()


def test_stalled_once_per_episode() -> None:
    seen = step(None, task(0), 0).seen
    assert kinds(step(seen, task(0), 180)) == []  # exactly at the threshold: not yet (strict >)
    stalled = step(seen, task(0), 181)
    assert kinds(stalled) == ["stalled"]
    note = stalled.notifications[0]
    assert note.text == "⚠️ 【Daily】可能卡住了（3分1秒无更新）\n当前步骤: fetch（已完成 0/3）"
    assert note.data["stalledSeconds"] == 181
    assert stalled.seen.stall_at is None  # no timer while the episode lasts
    assert kinds(step(stalled.seen, task(0), 500)) == []  # never twice for one episode


def test_resumed_then_a_new_episode() -> None:
    first_episode = step(step(None, task(0), 0).seen, task(0), 200)
    stalled = first_episode.seen
    resumed = step(stalled, task(300, message="back"), 300)
    assert kinds(resumed) == ["resumed", "progress"]
    assert resumed.notifications[0].text == "🔄 【Daily】恢复（卡住了5分钟）\n当前步骤: fetch（已完成 0/3）"
    assert resumed.seen.stalled_for is None
    assert resumed.seen.stall_at == (at(480) + STALL_MARGIN).timestamp()
    again = step(resumed.seen, task(300, message="back"), 500)
    assert kinds(again) == ["stalled"]
    assert again.notifications[0].key != first_episode.notifications[0].key


def test_a_task_that_ends_after_a_stall_is_not_also_resumed() -> None:
    stalled = step(step(None, task(0), 0).seen, task(0), 200).seen
    ended = step(stalled, task(250, status="done", step=3), 250)
    assert "resumed" not in kinds(ended)
    assert kinds(ended)[-1] == "done"
    assert ended.seen.stall_at is None


def test_restart_mid_stall_neither_repeats_nor_forgets() -> None:
    stalled = step(step(None, task(0), 0).seen, task(0), 200).seen
    # after a restart the worker has the stored row: the same file gives nothing new
    assert kinds(step(stalled, task(0), 400)) == []
    assert kinds(step(stalled, task(400), 400)) == ["resumed"]


def test_first_start_adopts_an_old_stall_silently() -> None:
    adopted = track(None, task(0), at(1000), POLICY, adopt=True)
    assert kinds(adopted) == []
    assert adopted.seen.stalled_for is not None and adopted.seen.stall_at is None
    assert kinds(step(adopted.seen, task(0), 2000)) == []
    back = step(adopted.seen, task(2000), 2000)
    assert kinds(back) == []  # a stall nobody was told about has no "resumed" either
    assert back.seen.stalled_for is None
    assert kinds(step(back.seen, task(2000), 2200)) == ["stalled"]  # the next episode is announced


def test_an_ended_task_is_not_counted_as_stalled() -> None:
    stalled = step(step(None, task(0), 0).seen, task(0), 200).seen
    assert stalled.stalled_for is not None
    ended = step(stalled, task(0, status="done", step=3), 300)  # done without a new updatedAt
    assert ended.seen.stalled_for is None


def test_ended_and_timestampless_tasks_have_no_stall_timer() -> None:
    assert step(None, task(0, status="done", step=3), 0).seen.stall_at is None
    bare = task_from_dict({"taskName": "x", "status": "running", "steps": ["a"]}, "bare")
    assert step(None, bare, 10_000).seen.stall_at is None


# -- progress throttle -----------------------------------------------------------------------------


def test_first_progress_goes_out_and_the_next_ones_are_held_latest_wins() -> None:
    seen = step(None, task(0), 0).seen
    first = step(seen, task(1, message="10%"), 1)
    assert kinds(first) == ["progress"]
    held = step(first.seen, task(5, message="20%"), 5)
    assert kinds(held) == []
    held = step(held.seen, task(9, message="30%"), 9)
    assert kinds(held) == []
    assert held.seen.held is not None and held.seen.held["data"]["message"] == "30%"
    assert flush_due(held.seen, POLICY) == at(31).timestamp()
    assert kinds(flush_held(held.seen, at(20), POLICY)) == []  # not due yet
    flushed = flush_held(held.seen, at(31), POLICY)
    assert [n.data["message"] for n in flushed.notifications] == ["30%"]
    assert flushed.seen.held is None and flush_due(flushed.seen, POLICY) is None


def test_a_progress_after_the_window_goes_out_at_once() -> None:
    first = step(step(None, task(0), 0).seen, task(1, message="a"), 1)
    assert kinds(step(first.seen, task(40, message="b"), 40)) == ["progress"]


def test_a_step_transition_supersedes_the_held_message() -> None:
    first = step(step(None, task(0), 0).seen, task(1, message="a"), 1)
    held = step(first.seen, task(2, message="b"), 2)
    assert held.seen.held is not None
    advanced = step(held.seen, task(3, step=1), 3)
    assert kinds(advanced) == ["step_done"]
    assert advanced.seen.held is None
    assert kinds(flush_held(advanced.seen, at(60), POLICY)) == []


def test_the_end_supersedes_the_held_message() -> None:
    first = step(step(None, task(0), 0).seen, task(1, message="a"), 1)
    held = step(first.seen, task(2, message="b"), 2)
    done = step(held.seen, task(3, status="done", step=3), 3)
    assert kinds(done)[-1] == "done" and done.seen.held is None


def test_percent_alone_is_progress() -> None:
    first = step(step(None, task(0), 0).seen, task(1, percent=40), 1)
    assert [n.text for n in first.notifications] == ["🔄 【Daily】fetch 40%（已完成 0/3）"]


def test_twelve_heartbeats_in_one_window_give_two_pushes_and_the_last_message() -> None:
    seen = step(None, task(0), 0).seen
    pushed: list[str] = []
    for i in range(12):
        update = step(seen, task(1 + i, message=f"beat {i}"), 1 + i)
        pushed += [n.data["message"] for n in update.notifications]
        seen = update.seen
    pushed += [n.data["message"] for n in flush_held(seen, at(31), POLICY).notifications]
    assert pushed == ["beat 0", "beat 11"]


def test_a_stall_says_how_long_it_really_was() -> None:
    """A 5 s threshold is not "1 minute"; zh durations read as zh."""
    policy = Policy(default_stall=5, lang="zh")
    stalled = step(step(None, task(0), 0, policy).seen, task(0), 5.5, policy)
    assert stalled.notifications[0].text.startswith("⚠️ 【Daily】可能卡住了（5秒无更新）")
    en = step(step(None, task(0), 0, POLICY).seen, task(0), 200, Policy(default_stall=180, lang="en"))
    assert en.notifications[0].text.startswith("⚠️ \"Daily\" may be stuck (no update for 3m20s)")


def test_a_stall_between_steps_says_where_the_task_is() -> None:
    all_done = task(0, step=3)
    assert step(step(None, all_done, 0).seen, all_done, 200).notifications[0].text.endswith(
        "当前步骤: 步骤已全部完成（已完成 3/3）")
    between = task_from_dict({"taskName": "Daily", "status": "running", "startedAt": T0.isoformat(),
                              "updatedAt": T0.isoformat(), "steps": [{"name": "a", "status": "done"},
                                                                     {"name": "b", "status": "pending"}]}, "t1")
    assert step(step(None, between, 0).seen, between, 200).notifications[0].text.endswith(
        "当前步骤: 等待下一步（已完成 1/2）")
