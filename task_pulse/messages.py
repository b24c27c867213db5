"""Every text a person reads: the `status` view and the chat notifications, in zh and en.

Rules carried over from the original skill: emoji first, `[done/total]`, the current step, one line of
detail, at most three lines. Every field that came from a task file is cleaned (control characters
and terminal escapes removed, newlines flattened) and capped before it is put in a template, because
these texts go to a terminal or a chat.
"""

from __future__ import annotations

import functools
import re
from datetime import datetime

from task_pulse.markup import PLAIN, escaped
from task_pulse.masking import redact
from task_pulse.model import Task, TaskFormatError, parse_time, stalled_for

# Writer calls load this module for a few words and the progress bar: nothing heavy at import time
# (typing only for annotations, the secret patterns compiled on first use: masking.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping
    from typing import Any

    from task_pulse.history.forecast import Outlook

FIELD_CAP = 200

# ESC-introduced sequences first (CSI, OSC, two-character escapes), then any lone control character,
# including C1 controls and the bidi overrides that can make a chat line read backwards.
_ESCAPES = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)?|[@-Z\\-_])|\x9b[0-?]*[ -/]*[@-~]")
_CONTROLS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_LINE_BREAKS = re.compile(r"[\t\n\r\u2028\u2029]+")


_UNSAFE = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def clean(value: Any, cap: int = FIELD_CAP) -> str:
    """One line of safe text from any field value, at most `cap` characters (with … when cut)."""
    if value is None:
        return ""
    text = str(value)
    if not _UNSAFE.search(text):  # the common case: one scan instead of three substitutions
        text = text.strip()
        return text if len(text) <= cap else text[: cap - 1] + "…"
    text = _ESCAPES.sub("", text)
    text = _LINE_BREAKS.sub(" ", text)
    text = _CONTROLS.sub("", text).strip()
    return text if len(text) <= cap else text[: cap - 1] + "…"


@functools.lru_cache(maxsize=4096)  # every notification and log line of a task shows its id again
def shown_id(task_id: str) -> str:
    """A task id as it may appear outside the state database (logs, `drain`, what a sink is given):
    one clean line (a file name may hold a newline, escapes or U+202E), secrets masked."""
    return redact(clean(task_id, cap=len(task_id) + 1))


def chat_text(value: Any, cap: int = FIELD_CAP, redact_secrets: bool = True) -> str:
    """`clean`, secrets masked in the whole text, then capped: a secret the cap cut in half would not
    match its pattern any more, and would reach the chat all but its last characters."""
    if type(value) is str and len(value) <= _REMEMBERED_LEN:
        return _remembered_chat_text(value, cap, redact_secrets)
    return _chat_text(value, cap, redact_secrets)


def _chat_text(value: Any, cap: int, redact_secrets: bool) -> str:
    text = clean(value, cap=len(str(value)) + 1)
    if redact_secrets:
        text = redact(text)
    return text if len(text) <= cap else text[: cap - 1] + "…"


# Task and step names come back in every notification of their task, and masking them is most of what
# building a notification costs: short texts are remembered (at most ~1 MB of them).
_REMEMBERED_LEN = 200
_remembered_chat_text = functools.lru_cache(maxsize=2048)(_chat_text)


def progress_bar(done: int, total: int, width: int = 10) -> str:
    filled = min(width, int(width * done / total)) if total else 0
    return "█" * filled + "░" * (width - filled)


def format_duration(seconds: float, lang: str = "en") -> str:
    """`42s`, `3m12s`, `2h5m`: the original script's form, also what the CLI prints. zh reads as
    Chinese inside Chinese text: `42秒`, `3分12秒`, `5分钟`, `2小时5分`. Negative clock skew shows as 0."""
    whole = int(max(0.0, seconds))
    hours, minutes, secs = whole // 3600, whole % 3600 // 60, whole % 60
    if lang == "zh":
        if whole < 60:
            return f"{secs}秒"
        if whole < 3600:
            return f"{minutes}分{secs}秒" if secs else f"{minutes}分钟"
        return f"{hours}小时{minutes}分" if minutes else f"{hours}小时"
    if whole < 60:
        return f"{secs}s"
    return f"{minutes}m{secs}s" if whole < 3600 else f"{hours}h{minutes}m"


def format_eta(seconds: float, lang: str = "en") -> str:
    """Time left as a forecast says it: whole minutes (`3m`, `3分`; `2h5m`, `2小时5分`), or under a
    minute (`<1m`, `不到1分`). A forecast is no stopwatch: seconds would claim a precision it has not."""
    minutes = int(max(0.0, seconds) / 60 + 0.5)
    hours, minutes = divmod(minutes, 60)
    if lang == "zh":
        if not hours:
            return f"{minutes}分" if minutes else "不到1分"
        return f"{hours}小时{minutes}分" if minutes else f"{hours}小时"
    if not hours:
        return f"{minutes}m" if minutes else "<1m"
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"


def task_duration(task: Task, now: datetime, lang: str = "en") -> str:
    """Start to finish, or start to now for a task still running; empty when there is no start."""
    started = parse_time(task.started_at)
    if started is None:
        return ""
    end = parse_time(task.finished_at) if task.status != "running" else None
    return format_duration(((end or now) - started).total_seconds(), lang)


def step_label(task: Task, lang: str) -> str | None:
    """What "current step" means for `task`: the running (or failed) step's name; for a running task
    between steps, what it is waiting for, rather than a bare "—"."""
    step = task.current
    if step is not None:
        return step.name
    if task.steps and task.done_count == task.total:
        return word("all_steps_done", lang)
    return word("between_steps", lang) if task.status == "running" and task.steps else None


def format_percent(percent: float | None) -> str:
    if percent is None:
        return ""
    return f"{int(percent)}%" if float(percent).is_integer() else f"{percent:.1f}%"


# -- notifications ------------------------------------------------------------------------------------
# `<<…>>` is an optional part: kept only when every field inside it is non-empty. Lines that end up
# empty are dropped. Fields are filled by str.format once, so braces in user text are harmless.

NOTIFICATION_KINDS = ("started", "step_done", "progress", "done", "failed", "stalled", "resumed", "invalid",
                      "overdue", "summary")

# Every message names its task (two tasks at once must never read alike) and says "{done}/{total}"
# only as the count of steps done: beside a progress bar, or in words ("已完成 1/4", "1/4 done"), never
# right after a step's name, where it would read as that step's position.
_TEMPLATES: dict[str, dict[str, str]] = {
    "zh": {
        "started": "🚀 开始【{name}】\n📋 {plan}\n<<🔄 当前: {current}>>",
        "step_done": "✅ 【{name}】{step}完成<<（{message}）>>\n🔄 已完成 {done}/{total}<< → {next}>>",
        "progress": "🔄 【{name}】{step}<< {percent}>><<: {message}>>（已完成 {done}/{total}）",
        "done": "🎉 【{name}】完成！<<（{duration}）>>\n<<结果: {result}>>",
        "failed": "❌ 【{name}】失败\n错误: {error}\n当前步骤: {step}（已完成 {done}/{total}）",
        "stalled": "⚠️ 【{name}】可能卡住了（{duration}无更新）\n当前步骤: {step}（已完成 {done}/{total}）",
        "resumed": "🔄 【{name}】恢复（卡住了{duration}）\n当前步骤: {step}（已完成 {done}/{total}）",
        "invalid": "⚠️ 任务文件无法读取: {file}（{reason}）",
        # more new tasks and stall alarms in a window than are told one by one (daemon/flood.py)
        "summary": "🌊 {window}内另有{count}个任务的消息合并为一条: {names}\n{what}（task-pulse status 可查看）",
        "overdue": "⏰ 【{name}】<<{step}>>超时（已用{duration}<<，通常{expected}>><<，预算{budget}>>）",
        # drain --digest: one message per task, head / what happened / detail
        "digest_running": "🔄 【{name}】[{done}/{total}] {bar}<< → {step}>>",
        "digest_stalled": "⚠️ 【{name}】可能卡住了（{duration}无更新）<< → {step}>>",
        "digest_done": "🎉 【{name}】完成！<<（{duration}）>>",
        "digest_failed": "❌ 【{name}】失败<<: {error}>>",
        "digest_started": "🚀 开始: {plan}",
        "digest_steps": "✅ {steps}完成",
        "digest_message": "💬 {message}",
        "digest_result": "结果: {result}",
        "digest_at": "当前步骤: {step}（已完成 {done}/{total}）",
    },
    "en": {
        "started": "🚀 \"{name}\" started\n📋 {plan}\n<<🔄 Now: {current}>>",
        "step_done": "✅ \"{name}\": {step} done<< ({message})>>\n🔄 {done}/{total} done<< → {next}>>",
        "progress": "🔄 \"{name}\": {step}<< {percent}>><<: {message}>> ({done}/{total} done)",
        "done": "🎉 \"{name}\" done!<< ({duration})>>\n<<Result: {result}>>",
        "failed": "❌ \"{name}\" failed\nError: {error}\nAt step: {step} ({done}/{total} done)",
        "stalled": "⚠️ \"{name}\" may be stuck (no update for {duration})\nAt step: {step} ({done}/{total} done)",
        "resumed": "🔄 \"{name}\" resumed (stuck for {duration})\nAt step: {step} ({done}/{total} done)",
        "invalid": "⚠️ Task file unreadable: {file} ({reason})",
        "summary": "🌊 {count} more tasks within {window}, told in one message: {names}\n{what} "
                   "(task-pulse status shows them)",
        "digest_running": "🔄 \"{name}\" [{done}/{total}] {bar}<< → {step}>>",
        "digest_stalled": "⚠️ \"{name}\" may be stuck (no update for {duration})<< → {step}>>",
        "digest_done": "🎉 \"{name}\" done!<< ({duration})>>",
        "digest_failed": "❌ \"{name}\" failed<<: {error}>>",
        "overdue": "⏰ \"{name}\" <<{step} >>overdue ({duration} so far<<, usually {expected}>><<, budget {budget}>>)",
        "digest_started": "🚀 Started: {plan}",
        "digest_steps": "✅ Done: {steps}",
        "digest_message": "💬 {message}",
        "digest_result": "Result: {result}",
        "digest_at": "At step: {step} ({done}/{total} done)",
    },
}
_OPTIONAL = re.compile(r"<<(.*?)>>", re.S)
_FIELD = re.compile(r"{(\w+)}")


def has_template(kind: str) -> bool:
    """Whether `render` knows `kind` (a newer task-pulse's rows may come with kinds this one does not)."""
    return kind in _TEMPLATES["en"]


def render(kind: str, fields: Mapping[str, Any], lang: str = "zh", markup: str = PLAIN) -> str:
    """The chat text of one notification. Unknown or missing fields render as `—` (never a crash).
    `markup`: what the chat makes of the text (see markup.py): the fields, not the template, are escaped."""
    values = {k: escaped(clean(v), markup) for k, v in fields.items()}

    def keep_if_filled(match: re.Match[str]) -> str:
        inner = match.group(1)
        return inner if all(values.get(f) for f in _FIELD.findall(inner)) else ""

    template = _OPTIONAL.sub(keep_if_filled, _TEMPLATES[lang][kind])
    needed = {f: values.get(f) or "—" for f in _FIELD.findall(template)}
    lines = template.format(**needed).split("\n")
    return "\n".join(line for line in lines if line.strip())


def digest(events: list[tuple[str, Mapping[str, Any]]], lang: str = "zh", markup: str = PLAIN) -> str:
    """One message (at most 3 lines) for everything pending about one task, oldest event first.

    For a parent that drains rarely (OpenClaw's heartbeat is 30 minutes): the task's latest state,
    the steps finished since the last drain, and the one detail that matters now.
    """
    kinds = [k for k, _ in events]
    if all(k == "invalid" for k in kinds):
        return render("invalid", events[-1][1], lang, markup)
    last_kind, last = next((k, d) for k, d in reversed(events) if k != "invalid")
    current = last.get("next") if last_kind == "step_done" else last.get("step")
    fields: dict[str, Any] = {**last, "step": current or last.get("step")}
    if "duration" not in fields and "minutes" in fields:  # a stall queued by an older task-pulse
        fields["duration"] = format_duration(float(fields["minutes"] or 0) * 60, lang)
    fields["bar"] = progress_bar(int(last.get("done") or 0), int(last.get("total") or 0))
    finished = [d.get("step") for k, d in events if k == "step_done"]
    latest_message = next((d.get("message") for k, d in reversed(events) if k == "progress"), None)
    end = last_kind if last_kind in ("done", "failed") else None
    head = {"done": "digest_done", "failed": "digest_failed"}.get(end or "", "digest_running")
    if last_kind in ("stalled", "overdue"):
        head = "digest_stalled" if last_kind == "stalled" else "overdue"
    lines = [render(head, fields, lang, markup)]
    if finished:
        sep = "、" if lang == "zh" else ", "
        lines.append(render("digest_steps", {"steps": sep.join(clean(s, 40) for s in finished[-6:])}, lang, markup))
    elif "started" in kinds:
        lines.append(render("digest_started", next(d for k, d in events if k == "started"), lang, markup))
    if end == "done" and last.get("result"):
        lines.append(render("digest_result", fields, lang, markup))
    elif end == "failed":
        lines.append(render("digest_at", fields, lang, markup))
    elif latest_message and head == "digest_running":
        lines.append(render("digest_message", {"message": latest_message}, lang, markup))
    return "\n".join(lines[:3])


def plan_of(step_names: Iterable[str], redact_secrets: bool = True) -> str:
    """`s1 → s2 → …`, capped as one field. Each name is masked before it is capped: a secret cut in
    half by a cap would no longer match its pattern."""
    names = (redact(n) if redact_secrets else n for n in step_names)
    return clean(" → ".join(clean(n) for n in names), cap=FIELD_CAP + 100)


# -- the status view ----------------------------------------------------------------------------------

_WORDS = {
    "zh": {"running": "执行中", "done": "完成", "error": "失败", "waiting": "等待结束",
           "stalled": "卡住（{silence}无更新）", "current": "当前", "error_line": "错误", "empty": "📭 没有任务",
           "unreadable": "无法读取", "all_steps_done": "步骤已全部完成", "between_steps": "等待下一步",
           "steps_range": "{count}个步骤（{first} … {last}）", "files": "{count}个文件: {names}",
           "too_many_unreadable": "{window}内超过{burst}个，合并为一条；task-pulse status 可查看",
           "cleanup": "🧹 清理 {n} 个过期任务（>{days}天）", "cleanup_dry": "🧹 将清理 {n} 个过期任务（>{days}天）",
           "more_tasks": "…… 还有 {count} 个任务（全部: task-pulse status --all）",
           "task_id": "ID", "started_at": "开始", "updated_at": "更新", "finished_at": "结束",
           "eta": "预计还需 {eta}", "overdue": "⏰ 超时", "stall_after": "卡住阈值 {duration}（{source}）",
           "default": "默认", "explicit": "stallSeconds", "learned": "按历史",
           # tasks an agent harness writes itself (task_pulse.adapters)
           "agent_working": "处理中", "agent_interrupted": "被打断：本轮结束前来了新的提示",
           "agent_session_ended": "会话已结束（{reason}），本轮尚未完成"},
    "en": {"running": "running", "done": "done", "error": "failed", "waiting": "waiting",
           "stalled": "stalled (no update for {silence})", "current": "now", "error_line": "error",
           "empty": "📭 no tasks", "unreadable": "unreadable", "all_steps_done": "all steps done",
           "between_steps": "waiting for the next step",
           "steps_range": "{count} steps ({first} … {last})", "files": "{count} files: {names}",
           "too_many_unreadable": "more than {burst} within {window}, told in one message; see task-pulse status",
           "cleanup": "🧹 removed {n} finished {tasks} (>{days} days)",
           "cleanup_dry": "🧹 would remove {n} finished {tasks} (>{days} days)",
           "more_tasks": "… {count} more {tasks} (all of them: task-pulse status --all)",
           "task_id": "id", "started_at": "started", "updated_at": "updated", "finished_at": "finished",
           "eta": "≈ {eta} left", "overdue": "⏰ overdue", "stall_after": "stall after {duration} ({source})",
           "default": "default", "explicit": "stallSeconds", "learned": "learned",
           "agent_working": "working", "agent_interrupted": "interrupted: a new prompt came before this turn ended",
           "agent_session_ended": "the session ended ({reason}) before this turn finished"},
}


def word(key: str, lang: str) -> str:
    return _WORDS[lang][key]


# What a flood summary holds, by kind, in the order things happen (daemon/flood.py).
_NEWS = {
    "zh": {"started": "{n}个开始", "step_done": "{n}个步骤完成", "progress": "{n}条进度", "done": "{n}个完成",
           "failed": "{n}个失败", "stalled": "{n}个可能卡住", "resumed": "{n}个恢复"},
    "en": {"started": "{n} started", "step_done": "{n} steps done", "progress": "{n} progress updates",
           "done": "{n} done", "failed": "{n} failed", "stalled": "{n} may be stuck", "resumed": "{n} resumed"},
}


def news_counts(kinds: Iterable[str], lang: str) -> str:
    """`2 started, 5 may be stuck`: what a flood summary holds, by kind."""
    words = _NEWS[lang]
    counts = {k: 0 for k in words}
    for kind in kinds:
        if kind in counts:
            counts[kind] += 1
    sep = "，" if lang == "zh" else ", "
    return sep.join(words[k].format(n=n) for k, n in counts.items() if n)


def counted(count: int, noun: str) -> str:
    """`1 notification`, `2 notifications`: English plurals for the nouns our lines count."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _in_parens(text: str, lang: str) -> str:
    return f"（{text}）" if lang == "zh" else f" ({text})"


def status_line(task: Task, now: datetime, default_stall: float, lang: str) -> str:
    """One task's head line: icon, name, steps done of all with the bar, state and how long."""
    silence = stalled_for(task, now, default_stall)
    duration = task_duration(task, now, lang)
    if silence is not None:
        icon, label = "⚠️", word("stalled", lang).format(silence=format_duration(silence, lang))
        duration = ""  # the silence is what matters, and it is said
    elif task.status == "running" and task.running_step is None:
        icon, label = "⏳", word("waiting", lang)
    else:
        icon, label = {"running": "🔄", "done": "✅", "error": "❌"}[task.status], word(task.status, lang)
    return (f"{icon} {clean(task.name)} [{task.done_count}/{task.total}] {progress_bar(task.done_count, task.total)} "
            f"{label}" + (_in_parens(duration, lang) if duration else ""))


def status_view(
    entries: list[tuple[str, Task | TaskFormatError]], now: datetime, default_stall: float, lang: str = "zh",
    totals: dict[str, int] | None = None, more: int = 0, outlooks: Mapping[str, Outlook] | None = None,
) -> str:
    """The original script's `status` table: one block per task, unreadable files named, a summary.

    A view of some tasks of many (see `pick_for_status`) says how many `more` there are, and sums up
    all of them (`totals`: running, stalled, done, error, unreadable) rather than the ones it shows.
    `outlooks` (by task id) are what the history of a running task's name says: its ETA and overdue
    limits on its first line, the stall threshold in force and where it comes from on the second (only
    for a name with history: a task without keeps the original's two lines).
    """
    outlooks = outlooks or {}
    if not entries:
        return word("empty", lang)
    counts = {"running": 0, "stalled": 0, "done": 0, "error": 0, "unreadable": 0}
    lines: list[str] = []
    for task_id, task in entries:
        if isinstance(task, TaskFormatError):
            counts["unreadable"] += 1
            lines.append(f"🚫 {clean(task_id)}.json: {word('unreadable', lang)}{_in_parens(clean(str(task)), lang)}")
            continue
        running = task.running_step
        outlook = outlooks.get(task_id)
        stall = outlook.stall_seconds if outlook else default_stall
        counts[_status_bucket(task, now, stall)] += 1
        head = status_line(task, now, stall, lang)
        if task.status == "running" and outlook is not None:
            if outlook.eta_seconds is not None:
                head += " · " + word("eta", lang).format(eta=format_eta(outlook.eta_seconds, lang))
            if outlook.overdue:
                head += " · " + word("overdue", lang)
        lines.append(head)
        if task.status == "running":
            current = f"   {word('current', lang)}: {clean(running.name) if running else step_label(task, lang) or '—'}"
            if running is not None and (running.message or running.percent is not None):
                detail = " ".join(p for p in (format_percent(running.percent), clean(running.message)) if p)
                current += f" — {detail}"
            if outlook is not None and outlook.known:
                current += " · " + word("stall_after", lang).format(
                    duration=format_duration(outlook.stall_seconds, lang), source=word(outlook.stall_source, lang))
            lines.append(current)
        if task.status == "error" and task.error:
            lines.append(f"   {word('error_line', lang)}: {clean(task.error)}")
    if more:
        lines.append(word("more_tasks", lang).format(count=more, tasks="task" if more == 1 else "tasks"))
    lines.append("")
    c = {**counts, **(totals or {})}
    unreadable = max(c.get("unreadable", 0), counts["unreadable"])
    lines.append(f"📊 🔄{c['running']} ⚠️{c['stalled']} ✅{c['done']} ❌{c['error']}"
                 + (f" 🚫{unreadable}" if unreadable else ""))
    return "\n".join(lines)


def _status_bucket(task: Task, now: datetime, default_stall: float) -> str:
    """running, stalled, done or error: what `status` counts a task as."""
    return "stalled" if stalled_for(task, now, default_stall) is not None else task.status


def pick_for_status(entries: list[tuple[str, Task | TaskFormatError]], now: datetime, default_stall: float,
                    limit: int | None, outlooks: Mapping[str, Outlook] | None = None,
                    ) -> tuple[list[tuple[str, Task | TaskFormatError]], dict[str, int]]:
    """The `limit` tasks most worth showing (None: all of them), in the order `status` shows them, and
    the counts of all of them (see `status_view`).

    Unreadable files first (someone has to fix them), then stalled tasks, failed, running and done
    ones, the latest first in each: the order the state db's overview picks in too.
    """
    outlooks = outlooks or {}
    totals = {"running": 0, "stalled": 0, "done": 0, "error": 0, "unreadable": 0}
    ranked: list[tuple[tuple[int, float, str], str, Task | TaskFormatError]] = []
    rank = {"stalled": 1, "error": 2, "running": 3, "done": 4}
    for task_id, task in entries:
        if isinstance(task, TaskFormatError):
            totals["unreadable"] += 1
            ranked.append(((0, 0.0, task_id), task_id, task))
            continue
        outlook = outlooks.get(task_id)
        bucket = _status_bucket(task, now, outlook.stall_seconds if outlook else default_stall)
        totals[bucket] += 1
        when = parse_time((task.finished_at if task.status != "running" else None) or task.updated_at)
        ranked.append(((rank[bucket], -when.timestamp() if when else 0.0, task_id), task_id, task))
    ranked.sort(key=lambda r: r[0])
    return [(task_id, task) for _, task_id, task in ranked[:limit]], totals
