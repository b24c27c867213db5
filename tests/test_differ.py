"""diff_tasks is pure: every transition is checked with hand-built tasks and a fixed `now`."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from task_pulse.model import Task, task_from_dict
from task_pulsed.differ import diff_tasks

NOW = datetime(2026, 11, 24, 10, 0, 0, tzinfo=UTC)
T0 = "2026-11-24T09:30:00+00:00"


def task(status: str = "running", steps: list[tuple[str, str] | tuple[str, str, str]] | None = None,
         **extra: Any) -> Task:
    """A task from (name, status[, message]) triples."""
    raw_steps = []
    for s in steps if steps is not None else [("fetch", "running"), ("filter", "pending"), ("write", "pending")]:
        step: dict[str, Any] = {"name": s[0], "status": s[1]}
        if s[1] in ("done", "error"):
            step["finishedAt"] = f"2026-11-24T09:3{len(raw_steps) + 1}:00+00:00"
        if len(s) == 3:
            step["message"] = s[2]
        raw_steps.append(step)
    raw = {"taskId": "t1", "taskName": "Daily", "status": status, "startedAt": T0, "steps": raw_steps, **extra}
    return task_from_dict(raw, "t1")


def kinds_of(old: Task | None, new: Task, run: int = 0) -> list[str]:
    return [n.kind for n in diff_tasks(old, new, NOW, run=run).notifications]


def test_first_sight_of_a_fresh_task_is_started_only() -> None:
    diff = diff_tasks(None, task(), NOW)
    assert [n.kind for n in diff.notifications] == ["started"]
    started = diff.notifications[0]
    assert started.text == "🚀 开始【Daily】\n📋 fetch → filter → write\n🔄 当前: fetch"
    assert started.data["total"] == 3 and started.data["done"] == 0
    assert diff.run == 0


def test_no_change_gives_nothing() -> None:
    t = task(steps=[("fetch", "done", "25 items"), ("filter", "running", "60%"), ("write", "pending")])
    assert kinds_of(t, t) == []


def test_one_step_done() -> None:
    old = task()
    new = task(steps=[("fetch", "done", "25 items"), ("filter", "running"), ("write", "pending")])
    notes = diff_tasks(old, new, NOW).notifications
    assert [n.kind for n in notes] == ["step_done"]
    assert notes[0].text == "✅ 【Daily】fetch完成（25 items）\n🔄 已完成 1/3 → filter"
    assert (notes[0].data["done"], notes[0].data["total"], notes[0].data["step"]) == (1, 3, "fetch")


def test_several_transitions_in_one_read_all_come_out_in_order() -> None:
    """A writer faster than the daemon: created, advanced twice and finished before the first read."""
    new = task("done", [("fetch", "done", "a"), ("filter", "done", "b"), ("write", "done")], result="ok",
               finishedAt="2026-11-24T09:33:12+00:00")
    notes = diff_tasks(None, new, NOW).notifications
    assert [n.kind for n in notes] == ["started", "step_done", "step_done", "step_done", "done"]
    # each step_done counts the steps done once THAT step finished
    assert [n.data["done"] for n in notes if n.kind == "step_done"] == [1, 2, 3]
    assert [n.data.get("next") for n in notes if n.kind == "step_done"] == ["filter", "write", None]
    assert notes[-1].text == "🎉 【Daily】完成！（3分12秒）\n结果: ok"


def test_done_counts_include_steps_already_announced() -> None:
    old = task(steps=[("fetch", "done"), ("filter", "running"), ("write", "pending")])
    new = task(steps=[("fetch", "done"), ("filter", "done"), ("write", "done")])
    notes = diff_tasks(old, new, NOW).notifications
    assert [(n.kind, n.data["done"]) for n in notes] == [("step_done", 2), ("step_done", 3)]


def test_progress_when_the_running_step_message_or_percent_changes() -> None:
    old = task(steps=[("fetch", "running"), ("filter", "pending")])
    new = task(steps=[("fetch", "running", "60%"), ("filter", "pending")])
    notes = diff_tasks(old, new, NOW).notifications
    assert [n.kind for n in notes] == ["progress"]
    assert notes[0].text == "🔄 【Daily】fetch: 60%（已完成 0/2）"
    with_percent = task_from_dict({**new.to_dict(), "steps": [
        {"name": "fetch", "status": "running", "message": "60%", "percent": 60}, {"name": "filter"}]}, "t1")
    assert [n.text for n in diff_tasks(new, with_percent, NOW).notifications] == [
        "🔄 【Daily】fetch 60%: 60%（已完成 0/2）"]


def test_failed_reports_the_failing_step() -> None:
    old = task(steps=[("fetch", "done"), ("filter", "running"), ("write", "pending")])
    new = task("error", [("fetch", "done"), ("filter", "error", "HTTP 502"), ("write", "pending")],
               error="HTTP 502", finishedAt="2026-11-24T09:35:00+00:00")
    notes = diff_tasks(old, new, NOW).notifications
    assert [n.kind for n in notes] == ["failed"]
    assert notes[0].text == "❌ 【Daily】失败\n错误: HTTP 502\n当前步骤: filter（已完成 1/3）"


def test_step_list_that_grows_and_shrinks() -> None:
    old = task(steps=[("fetch", "done"), ("filter", "running")])
    grown = task(steps=[("fetch", "done"), ("filter", "done"), ("write", "running"), ("publish", "pending")])
    notes = diff_tasks(old, grown, NOW).notifications
    assert [(n.kind, n.data["step"], n.data["done"], n.data["total"]) for n in notes] == [
        ("step_done", "filter", 2, 4)]
    # a step replaced by another name at the same index is a different step
    renamed = task(steps=[("fetch", "done"), ("review", "done")])
    assert [(n.kind, n.data["step"]) for n in diff_tasks(old, renamed, NOW).notifications] == [
        ("step_done", "review")]
    shrunk = task(steps=[("fetch", "done")])
    assert kinds_of(old, shrunk) == []


def test_task_going_back_from_done_to_running_is_a_new_run() -> None:
    ended = task("done", [("fetch", "done"), ("filter", "done")], finishedAt="2026-11-24T09:40:00+00:00")
    again = task("running", [("fetch", "done"), ("filter", "running")])
    diff = diff_tasks(ended, again, NOW, run=0)
    assert [n.kind for n in diff.notifications] == ["started"]  # done steps are not repeated
    assert diff.run == 1
    assert diff.notifications[0].data["current"] == "filter"
    first_started = diff_tasks(None, task(), NOW).notifications[0]
    assert diff.notifications[0].key != first_started.key
    finished_again = task("done", [("fetch", "done"), ("filter", "done")], finishedAt="2026-11-24T09:50:00+00:00")
    later = diff_tasks(again, finished_again, NOW, run=1).notifications
    assert [n.kind for n in later] == ["step_done", "done"]
    assert later[-1].key != diff_tasks(task(), ended, NOW).notifications[-1].key


def test_error_to_running_restarts_too() -> None:
    failed = task("error", [("fetch", "error")], error="x")
    assert kinds_of(failed, task(steps=[("fetch", "running")])) == ["started"]


def test_missing_optional_fields() -> None:
    """A hand-written file: no taskId, no timestamps, bare step names, no rev."""
    bare = task_from_dict({"taskName": "Bare", "status": "running", "steps": ["a", "b"]}, "bare")
    notes = diff_tasks(None, bare, NOW).notifications
    assert [n.kind for n in notes] == ["started"]
    assert notes[0].task_id == "bare"
    finished = task_from_dict({"taskName": "Bare", "status": "done",
                               "steps": [{"name": "a", "status": "done"}, {"name": "b", "status": "done"}]}, "bare")
    notes = diff_tasks(bare, finished, NOW).notifications
    assert [n.kind for n in notes] == ["step_done", "step_done", "done"]
    assert notes[-1].text == "🎉 【Bare】完成！"  # no duration without startedAt, no result line


def test_keys_are_stable_and_distinct() -> None:
    new = task("done", [("fetch", "done"), ("filter", "done"), ("write", "done")])
    first = diff_tasks(None, new, NOW).notifications
    again = diff_tasks(None, new, datetime(2030, 1, 1, tzinfo=UTC)).notifications
    assert [n.key for n in first] == [n.key for n in again]  # re-applying gives the same keys
    assert len({n.key for n in first}) == len(first)
    assert all(n.key.startswith("t1:") for n in first)


def test_english() -> None:
    notes = diff_tasks(None, task("done", [("fetch", "done", "25 items")], result="ok"), NOW, lang="en").notifications
    assert notes[1].text == "✅ \"Daily\": fetch done (25 items)\n🔄 1/1 done"
    assert notes[2].text.startswith("🎉 \"Daily\" done!")


def test_a_step_inserted_in_the_middle_does_not_repeat_its_neighbours() -> None:
    old = task(steps=[("a", "done"), ("b", "done"), ("c", "running")])
    new = task(steps=[("a", "done"), ("x", "pending"), ("b", "done"), ("c", "running")])
    assert kinds_of(old, new) == []
    removed = task(steps=[("b", "done"), ("c", "done")])
    assert [(n.kind, n.data["step"]) for n in diff_tasks(old, removed, NOW).notifications] == [("step_done", "c")]


def test_a_retried_step_without_finished_at_is_announced_twice() -> None:
    """Hand-written files often have no finishedAt: the second completion must not be taken for the first."""
    def hand(status: str, updated: str) -> Task:
        return task_from_dict({"taskName": "H", "status": "running", "updatedAt": updated,
                               "steps": [{"name": "a", "status": status}, {"name": "b", "status": "pending"}]},
                              "h")

    first = diff_tasks(hand("running", "t0"), hand("done", "t1"), NOW).notifications
    retried = diff_tasks(hand("running", "t2"), hand("done", "t3"), NOW).notifications
    assert [n.kind for n in first] == [n.kind for n in retried] == ["step_done"]
    assert first[0].key != retried[0].key


# -- one message per event, a result is what `next` said ----------------------------------------------


def test_done_that_finishes_the_running_step_is_one_message() -> None:
    """`done` on the last step: the done message says it all, no "✅ [3/3] write完成" straight before it."""
    old = task(steps=[("fetch", "done"), ("filter", "done"), ("write", "running")])
    end = "2026-11-24T09:33:12.000100+00:00"
    new = task("done", [("fetch", "done"), ("filter", "done"), ("write", "done")],
               finishedAt="2026-11-24T09:33:12+00:00")
    new.steps[2].finished_at = end  # the original stamps the task and its step microseconds apart
    notes = diff_tasks(old, new, NOW).notifications
    assert [n.kind for n in notes] == ["done"]
    assert notes[0].data["done"] == 3


def test_a_step_finished_with_its_own_result_in_the_ending_write_is_still_told() -> None:
    old = task(steps=[("fetch", "done"), ("filter", "done"), ("write", "running")])
    new = task("done", [("fetch", "done"), ("filter", "done"), ("write", "done", "3 posts")],
               finishedAt="2026-11-24T09:33:00+00:00")
    assert kinds_of(old, new) == ["step_done", "done"]


def test_a_step_done_long_before_the_end_is_still_told() -> None:
    """A fast writer seen in one read: steps that finished earlier are events of their own."""
    old = task(steps=[("fetch", "done"), ("filter", "running"), ("write", "pending")])
    new = task("done", [("fetch", "done"), ("filter", "done"), ("write", "done")],
               finishedAt="2026-11-24T09:50:00+00:00")
    assert kinds_of(old, new) == ["step_done", "step_done", "done"]


def test_the_last_heartbeat_is_not_the_step_result() -> None:
    """`heartbeat "筛选中 90%"` then `next` without a message (the original keeps the text in the step)."""
    old = task(steps=[("fetch", "done"), ("filter", "running", "筛选中 90%"), ("write", "pending")])
    new = task(steps=[("fetch", "done"), ("filter", "done", "筛选中 90%"), ("write", "running")])
    notes = diff_tasks(old, new, NOW).notifications
    assert [n.text for n in notes] == ["✅ 【Daily】filter完成\n🔄 已完成 2/3 → write"]
    assert notes[0].data["message"] is None
    said = task(steps=[("fetch", "done"), ("filter", "done", "12 kept"), ("write", "running")])
    assert diff_tasks(old, said, NOW).notifications[0].text == (
        "✅ 【Daily】filter完成（12 kept）\n🔄 已完成 2/3 → write")


def test_failed_between_steps_names_where_the_task_was() -> None:
    old = task(steps=[("fetch", "done"), ("filter", "done")])
    new = task("error", [("fetch", "done"), ("filter", "done")], error="publish refused")
    assert diff_tasks(old, new, NOW).notifications[0].text.endswith("当前步骤: 步骤已全部完成（已完成 2/2）")
    en = diff_tasks(old, new, NOW, lang="en").notifications[0].text
    assert en.endswith("At step: all steps done (2/2 done)")


def test_a_next_just_before_done_is_still_told_when_both_are_seen_in_one_read() -> None:
    """task-pulse files carry `rev`: a step finished by an earlier write (`next` 0.5 ms before `done`) is news."""
    old = task(steps=[("fetch", "running"), ("filter", "pending")], rev=1)
    new = task("done", [("fetch", "done"), ("filter", "done")], rev=3, finishedAt="2026-11-24T09:40:00.000500+00:00")
    new.steps[0].finished_at = "2026-11-24T09:40:00+00:00"  # `next`
    new.steps[1].finished_at = new.finished_at  # finished by `done`, stamped alike
    assert kinds_of(old, new) == ["step_done", "done"]
    assert diff_tasks(old, new, NOW).notifications[0].data["step"] == "fetch"


def test_with_revisions_the_write_before_tells_which_step_done_finished() -> None:
    old = task(steps=[("fetch", "done"), ("filter", "running")], rev=4)
    new = task("done", [("fetch", "done"), ("filter", "done")], rev=5, finishedAt="2026-11-24T09:50:00+00:00")
    assert kinds_of(old, new) == ["done"]  # its stamp differs (a hand edit), but rev says `done` finished it


def test_whole_second_stamps_cannot_tell_a_next_from_the_done_so_both_are_told() -> None:
    """A writer stamping whole seconds, `next` and `done` in one second, seen in one read: nothing is dropped."""
    old = task(steps=[("fetch", "running"), ("filter", "pending")])
    new = task("done", [("fetch", "done"), ("filter", "done")], finishedAt="2026-11-24T09:40:00+00:00")
    for step in new.steps:
        step.finished_at = "2026-11-24T09:40:00+00:00"
    assert kinds_of(old, new) == ["step_done", "step_done", "done"]


def test_a_write_that_finishes_a_flood_of_steps_is_told_in_ten_messages() -> None:
    names = [f"s{i}" for i in range(40)]
    old = task(steps=[(n, "running" if i == 0 else "pending") for i, n in enumerate(names)])
    new = task(steps=[(n, "done" if i < 30 else "running" if i == 30 else "pending") for i, n in enumerate(names)])
    steps = [n for n in diff_tasks(old, new, NOW).notifications if n.kind == "step_done"]
    assert len(steps) == 10
    assert [n.data["step"] for n in steps[:9]] == names[:9]
    assert steps[-1].text == "✅ 【Daily】21个步骤（s9 … s29）完成\n🔄 已完成 30/40 → s30"
    assert steps[-1].data["done"] == 30 and steps[-1].data["index"] == 29
    assert len({n.key for n in steps}) == 10
    assert [n.kind for n in diff_tasks(old, new.copy(), NOW).notifications] == [n.kind for n in steps]  # same keys
    en = diff_tasks(old, new, NOW, lang="en").notifications[-1]
    assert en.text == "✅ \"Daily\": 21 steps (s9 … s29) done\n🔄 30/40 done → s30"


def test_ten_steps_at_once_are_still_told_one_by_one() -> None:
    names = [f"s{i}" for i in range(12)]
    old = task(steps=[(n, "running" if i == 0 else "pending") for i, n in enumerate(names)])
    new = task(steps=[(n, "done" if i < 10 else "running" if i == 10 else "pending") for i, n in enumerate(names)])
    assert [n.data["step"] for n in diff_tasks(old, new, NOW).notifications] == names[:10]
