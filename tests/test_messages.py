"""task_pulse.messages: bars, durations, cleaning, notification texts and the status view."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from task_pulse.messages import (
    _TEMPLATES,
    FIELD_CAP,
    NOTIFICATION_KINDS,
    clean,
    format_duration,
    format_percent,
    plan_of,
    progress_bar,
    render,
    status_view,
)
from task_pulse.model import Step, Task, TaskFormatError

CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=CST)

# -- bars and durations -----------------------------------------------------------------------------


@pytest.mark.parametrize(("done", "total", "bar"), [
    (0, 4, "░░░░░░░░░░"),
    (1, 3, "███░░░░░░░"),
    (2, 4, "█████░░░░░"),
    (4, 4, "██████████"),
    (5, 4, "██████████"),
    (0, 0, "░░░░░░░░░░"),
])
def test_progress_bar(done: int, total: int, bar: str) -> None:
    assert progress_bar(done, total) == bar


def test_progress_bar_width() -> None:
    assert progress_bar(1, 2, width=4) == "██░░"


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (42, "42s"), (42.9, "42s"), (59.99, "59s"), (60, "1m0s"), (192, "3m12s"), (3599, "59m59s"),
    (3600, "1h0m"), (7500, "2h5m"), (90061, "25h1m"), (-5, "0s"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0秒"), (23, "23秒"), (60, "1分钟"), (192, "3分12秒"), (300, "5分钟"), (3600, "1小时"), (7500, "2小时5分"),
    (-5, "0秒"),
])
def test_format_duration_zh(seconds: float, text: str) -> None:
    """Chinese units inside Chinese text ("卡住了23秒", not "卡住了23s")."""
    assert format_duration(seconds, "zh") == text


def test_format_percent() -> None:
    assert format_percent(None) == ""
    assert format_percent(60) == "60%"
    assert format_percent(60.0) == "60%"
    assert format_percent(12.345) == "12.3%"


# -- clean ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "expected"), [
    ("\x1b[31mred\x1b[0m text", "red text"),
    ("\x1b[1;32;48;5;200mbold", "bold"),
    ("\x1b]0;evil title\x07after", "after"),
    ("\x1b]8;;https://evil.example\x1b\\link\x1b]8;;\x1b\\", "link"),
    ("a\x1bMb", "ab"),
    ("a\x1bcb", "acb"),  # RIS: the ESC goes, the harmless letter stays
    ("\x9b31mc1 csi", "c1 csi"),
    ("a\x00b\x07c\x08d\x7fe", "abcde"),
    ("a\x85b\x90c\x9fd", "abcd"),
    ("\u202egnp.exe\u202c", "gnp.exe"),
    ("\u2066iso\u2069 \u200eltr\u200f", "iso ltr"),
    ("line1\nline2\r\nline3\rline4", "line1 line2 line3 line4"),
    ("a\tb\u2028c\u2029d", "a b c d"),
    ("  padded  ", "padded"),
    ("日报 ✅ 😀", "日报 ✅ 😀"),
    (42, "42"),
    (None, ""),
])
def test_clean(raw: Any, expected: str) -> None:
    assert clean(raw) == expected


def test_clean_caps_at_200() -> None:
    assert FIELD_CAP == 200
    assert clean("x" * 200) == "x" * 200
    capped = clean("y" * 250)
    assert len(capped) == 200
    assert capped == "y" * 199 + "…"
    assert clean("日" * 201) == "日" * 199 + "…"
    assert clean("abcdef", cap=4) == "abc…"


def test_clean_caps_after_stripping() -> None:
    assert clean("\x1b[31m" * 100 + "z" * 200) == "z" * 200


# -- render -----------------------------------------------------------------------------------------

TYPICAL: dict[str, dict[str, Any]] = {
    "started": {"name": "日报发布", "plan": plan_of(["抓取", "筛选", "写稿"]), "current": "抓取"},
    "step_done": {"name": "日报发布", "done": 1, "total": 3, "step": "抓取", "message": "抓取了25条数据",
                  "next": "筛选"},
    "progress": {"name": "日报发布", "done": 1, "total": 3, "step": "筛选", "message": "已处理60%"},
    "done": {"name": "日报发布", "duration": "3分12秒", "result": "已发布"},
    "failed": {"name": "日报发布", "error": "发布接口返回 502", "step": "发布", "done": 3, "total": 4},
    "stalled": {"name": "日报发布", "duration": "5分钟", "step": "筛选", "done": 1, "total": 3},
    "resumed": {"name": "日报发布", "duration": "7分3秒", "step": "筛选", "done": 1, "total": 3},
    "invalid": {"file": "x.json", "reason": "not valid JSON"},
    "summary": {"count": 12, "window": "1分钟", "names": "部署 1, 部署 2", "what": "12个开始，3个可能卡住"},
    "overdue": {"name": "日报发布", "step": "写稿", "duration": "15分钟", "expected": "20秒"},
}

ZH: dict[str, str] = {
    "started": "🚀 开始【日报发布】\n📋 抓取 → 筛选 → 写稿\n🔄 当前: 抓取",
    "step_done": "✅ 【日报发布】抓取完成（抓取了25条数据）\n🔄 已完成 1/3 → 筛选",
    "progress": "🔄 【日报发布】筛选: 已处理60%（已完成 1/3）",
    "done": "🎉 【日报发布】完成！（3分12秒）\n结果: 已发布",
    "failed": "❌ 【日报发布】失败\n错误: 发布接口返回 502\n当前步骤: 发布（已完成 3/4）",
    "stalled": "⚠️ 【日报发布】可能卡住了（5分钟无更新）\n当前步骤: 筛选（已完成 1/3）",
    "resumed": "🔄 【日报发布】恢复（卡住了7分3秒）\n当前步骤: 筛选（已完成 1/3）",
    "invalid": "⚠️ 任务文件无法读取: x.json（not valid JSON）",
    "summary": "🌊 1分钟内另有12个任务的消息合并为一条: 部署 1, 部署 2\n"
               "12个开始，3个可能卡住（task-pulse status 可查看）",
    "overdue": "⏰ 【日报发布】写稿超时（已用15分钟，通常20秒）",
}

EN: dict[str, str] = {
    "started": "🚀 \"日报发布\" started\n📋 抓取 → 筛选 → 写稿\n🔄 Now: 抓取",
    "step_done": "✅ \"日报发布\": 抓取 done (抓取了25条数据)\n🔄 1/3 done → 筛选",
    "progress": "🔄 \"日报发布\": 筛选: 已处理60% (1/3 done)",
    "done": "🎉 \"日报发布\" done! (3m12s)\nResult: 已发布",
    "failed": "❌ \"日报发布\" failed\nError: 发布接口返回 502\nAt step: 发布 (3/4 done)",
    "stalled": "⚠️ \"日报发布\" may be stuck (no update for 5m0s)\nAt step: 筛选 (1/3 done)",
    "resumed": "🔄 \"日报发布\" resumed (stuck for 7m3s)\nAt step: 筛选 (1/3 done)",
    "invalid": "⚠️ Task file unreadable: x.json (not valid JSON)",
    "summary": "🌊 12 more tasks within 1m, told in one message: 部署 1, 部署 2\n12 started, 3 may be stuck "
               "(task-pulse status shows them)",
    "overdue": '⏰ "日报发布" 写稿 overdue (15m0s so far, usually 20s)',
}


def test_every_kind_has_a_typical_case() -> None:
    assert set(TYPICAL) == set(NOTIFICATION_KINDS) == set(ZH) == set(EN)


@pytest.mark.parametrize("kind", NOTIFICATION_KINDS)
def test_render_zh_matches_design(kind: str) -> None:
    assert render(kind, TYPICAL[kind], "zh") == ZH[kind]
    assert render(kind, TYPICAL[kind]) == ZH[kind]  # zh is the default


# The daemon formats durations in the language it renders in.
EN_DURATIONS = {"done": "3m12s", "stalled": "5m0s", "resumed": "7m3s", "overdue": "15m0s"}
# What the daemon words in English.
EN_FIELDS = {"summary": {"window": "1m", "what": "12 started, 3 may be stuck"}, "overdue": {"expected": "20s"}}


@pytest.mark.parametrize("kind", NOTIFICATION_KINDS)
def test_render_en(kind: str) -> None:
    fields = {**TYPICAL[kind], **({"duration": EN_DURATIONS[kind]} if kind in EN_DURATIONS else {}),
              **EN_FIELDS.get(kind, {})}
    assert render(kind, fields, "en") == EN[kind]


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("kind", NOTIFICATION_KINDS)
def test_render_at_most_three_lines_with_hostile_fields(kind: str, lang: str) -> None:
    hostile = "l1\nl2\r\nl3\nl4\x1b[2J\x1b]0;t\x07 {name} {0} {} {__class__} }{ <<x>>"
    fields = {key: hostile for key in ("name", "plan", "current", "step", "message", "next", "percent",
                                       "duration", "result", "error", "minutes", "file", "reason", "count",
                                       "window", "names", "what")}
    fields.update(done=1, total=2)
    text = render(kind, fields, lang)
    assert len(text.split("\n")) <= 3
    assert "\x1b" not in text and "\x07" not in text
    assert "l1 l2 l3 l4 {name} {0} {} {__class__} }{ <<x>>" in text
    assert "—" not in text


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("kind", NOTIFICATION_KINDS)
def test_render_missing_fields_never_crash(kind: str, lang: str) -> None:
    text = render(kind, {}, lang)
    assert 1 <= len(text.split("\n")) <= 3
    assert "{" not in text and "<<" not in text and ">>" not in text


def test_render_braces_in_user_text() -> None:
    text = render("done", {"name": "{result}", "duration": "1s", "result": "{{x}} {name!r} {0:>{1}}"})
    assert text == "🎉 【{result}】完成！（1s）\n结果: {{x}} {name!r} {0:>{1}}"


def test_step_done_without_message() -> None:
    fields = {**TYPICAL["step_done"], "message": None}
    assert render("step_done", fields) == "✅ 【日报发布】抓取完成\n🔄 已完成 1/3 → 筛选"
    assert render("step_done", {**fields, "message": ""}, "en") == "✅ \"日报发布\": 抓取 done\n🔄 1/3 done → 筛选"


def test_step_done_after_the_last_step_has_no_next() -> None:
    fields = {"name": "日报发布", "done": 3, "total": 3, "step": "发布", "message": "ok", "next": None}
    assert render("step_done", fields) == "✅ 【日报发布】发布完成（ok）\n🔄 已完成 3/3"


def test_done_without_result_or_duration() -> None:
    assert render("done", {"name": "日报发布", "duration": "3分12秒"}) == "🎉 【日报发布】完成！（3分12秒）"
    assert render("done", {"name": "日报发布", "result": None, "duration": ""}) == "🎉 【日报发布】完成！"
    assert render("done", {"name": "x", "duration": "1s"}, "en") == "🎉 \"x\" done! (1s)"


def test_progress_optional_parts() -> None:
    base = {"name": "n", "done": 0, "total": 2, "step": "抓取"}
    assert render("progress", {**base, "percent": "60%", "message": "m"}) == "🔄 【n】抓取 60%: m（已完成 0/2）"
    assert render("progress", {**base, "percent": "60%"}) == "🔄 【n】抓取 60%（已完成 0/2）"
    assert render("progress", base) == "🔄 【n】抓取（已完成 0/2）"
    assert render("progress", base, "en") == "🔄 \"n\": 抓取 (0/2 done)"


@pytest.mark.parametrize("lang", ["zh", "en"])
@pytest.mark.parametrize("kind", [k for k in NOTIFICATION_KINDS if k not in ("invalid", "summary")])
def test_every_notification_names_its_task_and_counts_only_steps_done(kind: str, lang: str) -> None:
    """Two tasks at once must never read alike; "2/4" is the count of steps done, said so, never a bare
    "[2/4]" beside a step's name (it would read as that step's position)."""
    fields = {**TYPICAL[kind], "name": "Nightly build", "step": "test", "done": 2, "total": 4}
    text = render(kind, fields, lang)
    assert "Nightly build" in text.split("\n")[0]
    assert len(text.split("\n")) <= 3
    assert "[2/4]" not in text
    if "{done}" in _TEMPLATES[lang][kind]:
        assert ("已完成 2/4" if lang == "zh" else "2/4 done") in text


@pytest.mark.parametrize("kind", NOTIFICATION_KINDS)
def test_english_reads_as_english(kind: str) -> None:
    """No full-width brackets or Chinese words in English texts (the task's own words aside)."""
    text = render(kind, {**TYPICAL[kind], "name": "Daily report", "step": "fetch", "next": "filter",
                         "message": "25 items", "current": "fetch", "plan": "fetch → filter", "duration": "5m0s",
                         "expected": "20s", "error": "HTTP 502", "result": "ok", "names": "Daily report",
                         "window": "1m", "what": "1 started"}, "en")
    assert not any("\u3000" <= c <= "\u9fff" or "\uff00" <= c <= "\uffef" for c in text), text


def test_started_without_current_drops_line() -> None:
    assert render("started", {"name": "n", "plan": "a → b"}) == "🚀 开始【n】\n📋 a → b"


def test_render_required_field_missing_shows_dash() -> None:
    assert render("failed", {"name": "x"}) == "❌ 【x】失败\n错误: —\n当前步骤: —（已完成 —/—）"


def test_render_caps_each_field() -> None:
    text = render("failed", {**TYPICAL["failed"], "error": "e" * 500})
    assert ("e" * 199 + "…") in text
    assert "e" * 200 not in text


def test_plan_of() -> None:
    assert plan_of(["a", "b\nc", "\x1b[31md"]) == "a → b c → d"


# -- status view ------------------------------------------------------------------------------------


def make_task(task_id: str, status: str, steps: list[tuple[str, str]], *, updated_s_ago: float = 10,
              started_s_ago: float = 192, **kw: Any) -> Task:
    return Task(task_id=task_id, name=task_id, status=status,
                steps=[Step(name=n, status=s) for n, s in steps],
                started_at=(NOW - timedelta(seconds=started_s_ago)).isoformat(),
                updated_at=(NOW - timedelta(seconds=updated_s_ago)).isoformat(), **kw)


def test_status_view_every_icon_and_summary() -> None:
    running = make_task("写稿任务", "running", [("抓取", "done"), ("筛选", "running"), ("写稿", "pending")])
    running.steps[1].message, running.steps[1].percent = "已处理", 60
    stalled = make_task("stuck", "running", [("a", "running"), ("b", "pending")], updated_s_ago=600)
    waiting = make_task("waiting", "running", [("a", "done"), ("b", "done")])
    done = make_task("finished", "done", [("a", "done")], started_s_ago=7500,
                     finished_at=(NOW - timedelta(seconds=0)).isoformat())
    failed = make_task("broken", "error", [("a", "done"), ("b", "error")], error="boom\x1b[31m!",
                       finished_at=(NOW - timedelta(seconds=150)).isoformat())
    bad = TaskFormatError("not valid JSON (Expecting value at line 1 column 1)")
    entries: list[tuple[str, Task | TaskFormatError]] = [
        ("写稿任务", running), ("stuck", stalled), ("waiting", waiting), ("finished", done),
        ("broken", failed), ("bad", bad)]
    text = status_view(entries, NOW, 180, "zh")
    assert text.split("\n") == [
        "🔄 写稿任务 [1/3] ███░░░░░░░ 执行中（3分12秒）",
        "   当前: 筛选 — 60% 已处理",
        "⚠️ stuck [0/2] ░░░░░░░░░░ 卡住（10分钟无更新）",
        "   当前: a",
        "⏳ waiting [2/2] ██████████ 等待结束（3分12秒）",
        "   当前: 步骤已全部完成",
        "✅ finished [1/1] ██████████ 完成（2小时5分）",
        "❌ broken [1/2] █████░░░░░ 失败（42秒）",
        "   错误: boom!",
        "🚫 bad.json: 无法读取（not valid JSON (Expecting value at line 1 column 1)）",
        "",
        "📊 🔄2 ⚠️1 ✅1 ❌1 🚫1",
    ]
    assert "STALLED" not in status_view(entries, NOW, 180, "en")


def test_status_view_en_and_stall_threshold() -> None:
    task = make_task("job", "running", [("a", "running")], updated_s_ago=300, stall_seconds=600)
    assert status_view([("job", task)], NOW, 180, "en").split("\n") == [
        "🔄 job [0/1] ░░░░░░░░░░ running (3m12s)", "   now: a", "", "📊 🔄1 ⚠️0 ✅0 ❌0"]
    assert "stalled" not in status_view([("job", task)], NOW, 180, "en")
    task.stall_seconds = 200
    assert status_view([("job", task)], NOW, 180, "en").split("\n")[0] == (
        "⚠️ job [0/1] ░░░░░░░░░░ stalled (no update for 5m0s)")


def test_status_view_without_start_time() -> None:
    task = Task(task_id="t", name="t", status="running", steps=[Step(name="a", status="running")])
    assert status_view([("t", task)], NOW, 180).split("\n")[0] == "🔄 t [0/1] ░░░░░░░░░░ 执行中"


def test_status_view_cleans_hostile_name_and_file() -> None:
    task = make_task("x", "running", [("a", "running")])
    task.name = "evil\x1b]0;pwn\x07\nname"
    lines = status_view([("x", task), ("b\u202ead", TaskFormatError("empty file"))], NOW, 180).split("\n")
    assert lines[0].startswith("🔄 evil name [0/1]")
    assert lines[2] == "🚫 bad.json: 无法读取（empty file）"


def test_status_view_only_unreadable() -> None:
    text = status_view([("bad", TaskFormatError("empty file"))], NOW, 180, "en")
    assert text == "🚫 bad.json: unreadable (empty file)\n\n📊 🔄0 ⚠️0 ✅0 ❌0 🚫1"


def test_status_view_empty() -> None:
    assert status_view([], NOW, 180, "zh") == "📭 没有任务"
    assert status_view([], NOW, 180, "en") == "📭 no tasks"
