"""History, ETA, budgets and learned stall thresholds as pure functions: runs, `now` passed in, no threads."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from task_pulse.card import render_card
from task_pulse.history.forecast import (
    DEFAULT,
    EXPLICIT,
    LEARNED,
    Outlook,
    eta_seconds,
    learn,
    limits,
    longest_normal,
    median,
    overdue,
    stall_threshold,
)
from task_pulse.history.runs import Observed, Run, StepRun, finished_run, observe
from task_pulse.messages import format_eta, status_view
from task_pulse.model import Task, TaskFormatError, parse_task, task_from_dict
from task_pulse.records import Seen
from task_pulsed.tracker import Policy, Update, track
from tests.conftest import original_file

T0 = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)
POLICY = Policy(default_stall=180, progress_interval=30, lang="zh")
STEPS = ("fetch", "filter", "write")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def past_run(n: int, durations: tuple[float, ...], silences: tuple[float | None, ...] | None = None,
             outcome: str = "done", name: str = "Daily") -> Run:
    """The n-th past run (a day apart, before T0), its steps taking `durations`."""
    start = (T0 - timedelta(days=10 - n)).timestamp()
    steps = tuple(StepRun(s, "done", d, (silences or (None,) * len(STEPS))[i])
                  for i, (s, d) in enumerate(zip(STEPS, durations, strict=True)))
    return Run(f"daily-{n}\x1f{start}\x1f0", f"daily-{n}", name, outcome, start, start, start + sum(durations), steps)


def running(elapsed_in_step: float, step: int = 1, *, step_started: float = 100.0, budget: float | None = None,
            step_budget: float | None = None, stall: float | None = None, updated: float | None = None) -> Task:
    """A run of Daily at T0: the steps before `step` done, `step` running since `step_started` seconds in."""
    steps: list[dict[str, Any]] = []
    for i, name in enumerate(STEPS):
        s: dict[str, Any] = {"name": name, "status": "pending"}
        if i < step:
            s.update(status="done", startedAt=at(0).isoformat(), finishedAt=at(step_started).isoformat())
        elif i == step:
            s.update(status="running", startedAt=at(step_started).isoformat())
            if step_budget is not None:
                s["budgetSeconds"] = step_budget
        steps.append(s)
    raw: dict[str, Any] = {"taskName": "Daily", "status": "running", "startedAt": T0.isoformat(),
                           "updatedAt": at(updated if updated is not None else step_started + elapsed_in_step)
                           .isoformat(), "steps": steps}
    if budget is not None:
        raw["budgetSeconds"] = budget
    if stall is not None:
        raw["stallSeconds"] = stall
    return task_from_dict(raw, "daily-today")


THREE = [past_run(1, (100, 200, 300)), past_run(2, (110, 180, 330)), past_run(3, (90, 220, 270))]


# -- robust statistics --------------------------------------------------------------------------------

def test_median_and_longest_normal() -> None:
    assert median([3, 1, 2]) == 2 and median([4, 1, 2, 3]) == 2.5
    assert longest_normal([1, 2, 3, 4]) == 4  # too few to leave one out
    assert longest_normal([1, 2, 3, 4, 600]) == 4  # one run that went wrong teaches nothing


def test_learn_takes_the_latest_successful_runs_by_step_name_and_occurrence() -> None:
    failed = past_run(4, (5000, 5000, 5000), outcome="error")
    profile = learn("Daily", [*THREE, failed])
    assert profile.runs == 3
    assert profile.steps["0:filter"].durations == (220, 180, 200)  # newest first
    assert profile.steps["0:filter"].typical == 200
    assert profile.total.typical == 600
    repeated = Run("r", "r", "Twice", "done", 0, 0, 30, (StepRun("a", "done", 10), StepRun("a", "done", 20)))
    assert set(learn("Twice", [repeated]).steps) == {"0:a", "1:a"}


# -- ETA ----------------------------------------------------------------------------------------------

def test_eta_of_a_fourth_run() -> None:
    profile = learn("Daily", THREE)
    # 50 s into filter: what filter runs typically had left after 50 s (median of 130, 150, 170), then write
    assert eta_seconds(profile, running(50), at(150)) == 150 + 300
    assert eta_seconds(profile, running(0, step=0, step_started=0), at(0)) == 100 + 200 + 300


def test_no_eta_without_enough_history_or_past_every_run() -> None:
    assert eta_seconds(None, running(50), at(150)) is None
    assert eta_seconds(learn("Daily", THREE[:2]), running(50), at(150)) is None  # two runs: not yet
    assert eta_seconds(learn("Daily", THREE), running(230), at(330)) is None  # filter longer than ever before
    renamed = running(50)
    renamed.steps[2].name = "publish"  # a step history has never seen
    assert eta_seconds(learn("Daily", THREE), renamed, at(150)) is None


def test_format_eta_reads_as_a_forecast() -> None:
    assert [format_eta(s, "en") for s in (20, 170, 3 * 3600 + 300, 7200)] == ["<1m", "3m", "3h5m", "2h"]
    assert [format_eta(s, "zh") for s in (20, 170, 3 * 3600 + 300, 7200)] == ["不到1分", "3分", "3小时5分", "2小时"]


# -- budgets and overdue ------------------------------------------------------------------------------

def test_an_explicit_budget_wins_over_history() -> None:
    task = running(10, step_budget=60, budget=900)
    found = {limit.key: limit for limit in limits(learn("Daily", THREE), task)}
    assert found["step:0:filter"].seconds == 60 and found["step:0:filter"].budget == 60
    assert found["step:0:filter"].expected == 200
    assert found["task"].seconds == 900
    assert [limit.key for limit in overdue(None, task, at(100 + 60.5))] == ["step:0:filter"]


def test_learned_limits_need_a_clear_margin_and_three_runs() -> None:
    profile = learn("Daily", THREE)
    step = next(limit for limit in limits(profile, running(10)) if limit.step == "filter")
    assert step.seconds == max(2 * 200, 1.5 * 220, 200 + 60) and step.budget is None
    assert overdue(profile, running(0), at(100 + 399)) == []
    assert [limit.key for limit in overdue(profile, running(0), at(100 + 401))] == ["step:0:filter"]
    assert limits(learn("Daily", THREE[:2]), running(10)) == []  # two runs say nothing
    assert limits(None, running(10)) == []  # no history, no budget: never overdue


# -- learned stall thresholds -------------------------------------------------------------------------

QUIET_RUNS = [past_run(i, (100, 900, 300), (20, 600 + 30 * i, 40)) for i in range(1, 4)]


def test_a_step_that_is_normally_silent_learns_its_threshold() -> None:
    profile = learn("Daily", QUIET_RUNS)
    assert stall_threshold(profile, running(10), 180) == (1.5 * 690, LEARNED)  # filter: silent 630-690 s
    assert stall_threshold(profile, running(10, step=0, step_started=0), 180) == (180, DEFAULT)  # fetch: 20 s
    assert stall_threshold(profile, running(10, stall=60), 180) == (60, EXPLICIT)  # an explicit one always wins
    assert stall_threshold(learn("Daily", QUIET_RUNS[:2]), running(10), 180) == (180, DEFAULT)
    assert stall_threshold(None, running(10), 180) == (180, DEFAULT)


# -- what the daemon observes --------------------------------------------------------------------------

def beat(task: Task, seconds: float) -> Task:
    out = parse_task(task.to_json(), task.task_id)
    out.updated_at = at(seconds).isoformat()
    return out


def advance(task: Task, seconds: float) -> Task:
    out = parse_task(task.to_json(), task.task_id)
    out.advance(at(seconds).isoformat())
    out.updated_at = at(seconds).isoformat()
    return out


def test_silences_are_the_longest_gaps_of_steps_watched_from_their_start() -> None:
    created = running(0, step=0, step_started=0)
    seen = observe(None, None, created)
    assert seen.silences == {"0:fetch": 0.0}
    t1 = beat(created, 30)
    seen = observe(seen, created, t1)
    t2 = beat(t1, 100)
    seen = observe(seen, t1, t2)
    t3 = advance(t2, 110)  # fetch ends 10 s after its last update; filter starts with this write
    seen = observe(seen, t2, t3)
    assert seen.silences == {"0:fetch": 70.0, "0:filter": 0.0}
    t4 = advance(t3, 500)  # filter silent for 390 s, then done; write starts
    seen = observe(seen, t3, t4)
    assert seen.silences["0:filter"] == 390.0
    run = finished_run(t4.copy(status="done", finished_at=t4.updated_at), 0, seen, 0.0)
    assert [(s.name, s.seconds, s.silence) for s in run.steps] == [("fetch", 110.0, 70.0), ("filter", 390.0, 390.0),
                                                                   ("write", None, None)]


def test_a_file_written_whole_teaches_durations_but_no_silences() -> None:
    written = advance(advance(advance(running(0, step=0, step_started=0), 100), 300), 450)
    written = written.copy(status="done", finished_at=written.updated_at)
    seen = observe(None, None, written)
    assert seen.silences == {}
    run = finished_run(written, 0, seen, 0.0)
    assert [(s.seconds, s.silence) for s in run.steps] == [(100.0, None), (200.0, None), (150.0, None)]
    assert run.seconds == 450.0 and run.started_at == T0.timestamp()


def test_observed_round_trips_through_json() -> None:
    seen = Observed({"0:a": 1.5}, ["task"])
    assert Observed.from_json(seen.to_json()) == seen
    assert Observed.from_json(None) == Observed()


# -- the tracker: learned stalls, overdue once, runs recorded ---------------------------------------------

def kinds(update: Update) -> list[str]:
    return [n.kind for n in update.notifications]


def test_no_stall_in_a_step_historically_silent_longer_but_one_where_it_never_was() -> None:
    profile = learn("Daily", QUIET_RUNS)
    seen = track(None, running(0), at(100), POLICY, profile=profile).seen
    assert kinds(track(seen, running(0), at(100 + 600), POLICY, profile=profile)) == []  # filter: 1035 s learned
    assert kinds(track(seen, running(0), at(100 + 1036), POLICY, profile=profile)) == ["stalled"]
    fetch = running(0, step=0, step_started=0)
    seen = track(None, fetch, at(0), POLICY, profile=profile).seen
    assert seen.stall_at == (at(180) + timedelta(milliseconds=10)).timestamp()  # never that silent: the default
    assert kinds(track(seen, fetch, at(181), POLICY, profile=profile)) == ["stalled"]


def test_an_explicit_stall_seconds_wins_over_a_learned_threshold() -> None:
    profile = learn("Daily", QUIET_RUNS)
    task = running(0, stall=200)
    seen = track(None, task, at(100), POLICY, profile=profile).seen
    assert kinds(track(seen, task, at(100 + 201), POLICY, profile=profile)) == ["stalled"]


def test_overdue_once_per_step_per_run_even_while_it_heartbeats() -> None:
    task = running(0, step_budget=60)
    first = track(None, task, at(100), POLICY)
    assert first.seen.overdue_at == (at(160) + timedelta(milliseconds=10)).timestamp()
    seen = first.seen
    told: list[str] = []
    for t in (130, 161, 190, 220, 250):  # heartbeats all along: never stalled, overdue once
        update = track(seen, beat(task, t), at(t), POLICY)
        told += kinds(update)
        seen = update.seen
    assert told == ["overdue"]
    note = next(n for n in track(first.seen, beat(task, 161), at(161), POLICY).notifications)
    assert note.text == "⏰ 【Daily】filter超时（已用1分1秒，预算1分钟）"
    assert note.data["budgetSeconds"] == 60 and note.data["scope"] == "step"
    assert seen.overdue_at is None  # nothing more to come for this step


def test_overdue_by_history_names_the_usual_time_and_the_task_has_its_own() -> None:
    profile = learn("Daily", THREE)
    task = running(0, budget=500)
    seen = track(None, task, at(100), POLICY, profile=profile).seen
    update = track(seen, beat(task, 501), at(501), Policy(lang="en"), profile=profile)
    assert [n.data["scope"] for n in update.notifications] == ["task", "step"]
    assert update.notifications[0].text == '⏰ "Daily" overdue (8m21s so far, usually 10m0s, budget 8m20s)'
    assert update.notifications[1].text == '⏰ "Daily" filter overdue (6m41s so far, usually 3m20s)'
    assert update.notifications[0].key != update.notifications[1].key


def test_a_first_start_takes_what_is_overdue_already_as_told() -> None:
    task = running(0, step_budget=60)
    adopted = track(None, task, at(300), POLICY, adopt=True)
    assert kinds(adopted) == [] and adopted.seen.observed is not None
    assert kinds(track(adopted.seen, beat(task, 310), at(310), POLICY)) == []


def test_a_run_is_recorded_once_when_it_ends() -> None:
    task = running(0, step=0, step_started=0)
    seen = track(None, task, at(0), POLICY).seen
    ended = advance(task, 50).copy(status="done", finished_at=at(50).isoformat())
    update = track(seen, ended, at(50), POLICY)
    assert update.run is not None and update.run.outcome == "done" and update.run.steps[0].silence == 50.0
    again = track(update.seen, ended.copy(result="edited later"), at(60), POLICY)
    assert again.run is None
    whole = track(None, ended, at(70), POLICY)  # seen for the first time already done: a file written whole
    assert whole.run is not None and whole.run.steps[0].silence is None


def test_a_new_run_of_the_same_file_starts_its_memory_afresh() -> None:
    task = running(0, step_budget=60)
    seen = track(None, task, at(100), POLICY).seen
    seen = track(seen, beat(task, 170), at(170), POLICY).seen
    assert seen.observed is not None and seen.observed.overdue == ["step:0:filter"]
    done = task.copy(status="done", finished_at=at(180).isoformat(), updated_at=at(180).isoformat())
    seen = track(seen, done, at(180), POLICY).seen
    again = track(seen, beat(task, 900).copy(started_at=at(800).isoformat()), at(900), POLICY)
    assert kinds(again)[:1] == ["started"] and "overdue" in kinds(again)


# -- what readers show -----------------------------------------------------------------------------------

def test_the_card_says_what_is_left_and_what_is_overdue() -> None:
    task = running(50)
    plain = render_card(task, at(150), "en")
    assert "left" not in plain.split("\n")[0]
    task.profile = learn("Daily", THREE)
    assert render_card(task, at(150), "en").split("\n")[0] == '🔄 "Daily" [1/3] ███░░░░░░░ · 2m30s · ≈ 8m left'
    assert render_card(task, at(150), "zh").split("\n")[0] == "🔄 【Daily】[1/3] ███░░░░░░░ · 2分30秒 · 预计还需 8分"
    late = running(0, step_budget=60)
    late.profile = task.profile
    assert render_card(late, at(200), "en").split("\n")[0].endswith(" · ≈ 7m left · ⏰ filter overdue")
    assert render_card(late, at(200), "en").split("\n")[1:] == plain.split("\n")[1:]


def test_status_shows_eta_and_the_threshold_in_force_only_with_history() -> None:
    profile = learn("Daily", QUIET_RUNS)
    task = running(50)
    outlook = Outlook.of(profile, task, at(150), 180)
    lines = status_view([("daily-today", task)], at(150), 180, "en", outlooks={"daily-today": outlook}).split("\n")
    assert lines[0] == "🔄 Daily [1/3] ███░░░░░░░ running (2m30s) · ≈ 19m left"
    assert lines[1] == "   now: filter · stall after 17m15s (learned)"
    without = Outlook.of(None, task, at(150), 180)
    assert status_view([("daily-today", task)], at(150), 180, "en", outlooks={"daily-today": without}) == \
        status_view([("daily-today", task)], at(150), 180, "en")


# -- the task file ------------------------------------------------------------------------------------------

def test_budget_seconds_is_read_checked_and_written_back() -> None:
    raw = original_file()
    raw["budgetSeconds"] = 3600
    raw["steps"][1]["budgetSeconds"] = 600
    task = parse_task(json.dumps(raw), "x")
    assert task.budget_seconds == 3600 and task.steps[1].budget_seconds == 600
    assert json.loads(task.to_json())["steps"][1]["budgetSeconds"] == 600
    assert task.to_dict()["budgetSeconds"] == 3600
    for bad in (0, "600", True, -1):
        with pytest.raises(TaskFormatError, match="budgetSeconds"):
            parse_task(json.dumps({**raw, "budgetSeconds": bad}), "x")
    raw["budgetSeconds"] = None
    raw["steps"][1]["budgetSeconds"] = "soon"
    with pytest.raises(TaskFormatError, match=r"steps\[1\].budgetSeconds"):
        parse_task(json.dumps(raw), "x")


def test_an_original_file_reads_and_writes_back_as_before() -> None:
    raw = original_file()
    task = parse_task(json.dumps(raw), raw["taskId"])
    assert task.budget_seconds is None and all(s.budget_seconds is None for s in task.steps)
    assert {k: v for k, v in task.to_dict().items() if k != "rev"} == raw


def test_seen_keeps_its_observation_separate_from_the_snapshot() -> None:
    seen = Seen("t", running(0))
    assert seen.observed is None and seen.overdue_at is None
