"""The live card: one chat message that shows a whole task, edited in place as the task moves.

Pure: a function of the task, `now` and the language. Every field from the task file is cleaned
and (unless turned off) stripped of secrets here, because the card is built from the raw snapshot,
not from notifications that were already made safe.

A running task whose name has history (`Task.profile`, set by the state db's `card_view`) also says
how long it has left and whether it runs past its budget or its usual time (task_pulse/history).

A long task stays readable and under `CARD_LIMIT` characters (Telegram refuses messages over
4,096): finished steps before the current window fold into one line ("✅ 1–195"), the steps after
it into another ("⏳ 199–200").
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from task_pulse.history.forecast import eta_seconds, overdue
from task_pulse.markup import PLAIN, escaped
from task_pulse.messages import chat_text, format_duration, format_eta, format_percent, progress_bar, task_duration
from task_pulse.model import Step, Task, parse_time

CARD_LIMIT = 3500
# Steps shown one per line around the current one; the rest fold.
WINDOW_BEFORE, WINDOW_AFTER = 3, 5
# A task this short is shown whole.
UNFOLDED_STEPS = WINDOW_BEFORE + WINDOW_AFTER + 8
MESSAGE_CAP = 120

_HEAD = {
    "zh": {
        "running": "🔄 【{name}】[{done}/{total}] {bar} · {elapsed}",
        "stalled": "⚠️ 【{name}】[{done}/{total}] {bar} · 可能卡住了（{stalled}无更新）",
        "done": "🎉 【{name}】完成 [{done}/{total}] {bar} · {elapsed}",
        "error": "❌ 【{name}】失败 [{done}/{total}] {bar} · {elapsed}",
        "result": "结果: {text}",
        "failure": "错误: {text}",
        "folded_done": "✅ {first}–{last}（{count} 步已完成）",
        "folded_pending": "⏳ {first}–{last}（还有 {count} 步）",
        "detail_open": "（",
        "detail_close": "）",
        "eta": " · 预计还需 {eta}",
        "overdue_step": " · ⏰ {step}超时",
        "overdue_task": " · ⏰ 超时",
    },
    "en": {
        "running": "🔄 \"{name}\" [{done}/{total}] {bar} · {elapsed}",
        "stalled": "⚠️ \"{name}\" [{done}/{total}] {bar} · may be stuck (no update for {stalled})",
        "done": "🎉 \"{name}\" done [{done}/{total}] {bar} · {elapsed}",
        "error": "❌ \"{name}\" failed [{done}/{total}] {bar} · {elapsed}",
        "result": "Result: {text}",
        "failure": "Error: {text}",
        "folded_done": "✅ {first}–{last} ({count} steps done)",
        "folded_pending": "⏳ {first}–{last} ({count} more)",
        "detail_open": " (",
        "detail_close": ")",
        "eta": " · ≈ {eta} left",
        "overdue_step": " · ⏰ {step} overdue",
        "overdue_task": " · ⏰ overdue",
    },
}
_ICONS = {"done": "✅", "running": "🔄", "pending": "⏳", "error": "❌"}
Safe = Callable[..., str]  # (value, cap) -> chat-safe text


def render_card(task: Task, now: datetime, lang: str = "zh", *, stalled: bool = False,
                redact_secrets: bool = True, markup: str = PLAIN) -> str:
    """The card text for `task` as of `now`. `stalled`: the daemon has announced a stall still on. `markup`:
    what the chat makes of the text (markup.py), for which the task's own words are escaped. The time left and
    what is overdue come from `task.profile` (None: the head says neither)."""
    words = _HEAD[lang]

    def safe(value: object, cap: int = MESSAGE_CAP) -> str:
        return escaped(chat_text(value, cap, redact_secrets), markup)

    head_kind = "stalled" if stalled and task.status == "running" else task.status
    updated = parse_time(task.updated_at)
    head = words[head_kind].format(
        name=safe(task.name), done=task.done_count, total=task.total, bar=progress_bar(task.done_count, task.total),
        elapsed=task_duration(task, now, lang) or "—",
        stalled=format_duration((now - updated).total_seconds(), lang) if updated else "—")
    lines = [head + _outlook(task, now, lang, safe)]
    lines += _step_lines(task, words, safe)  # (a failed step's message is the error: said once, below)
    if task.status == "done" and task.result:
        lines.append(words["result"].format(text=safe(task.result, 300)))
    elif task.status == "error" and task.error:
        lines.append(words["failure"].format(text=safe(task.error, 300)))
    return _fit("\n".join(lines))


def _outlook(task: Task, now: datetime, lang: str, safe: Safe) -> str:
    """What the history of the task's name adds to its head line: the time left, and what is overdue."""
    if task.status != "running":
        return ""
    words = _HEAD[lang]
    eta = eta_seconds(task.profile, task, now)
    out = words["eta"].format(eta=format_eta(eta, lang)) if eta is not None else ""
    for limit in overdue(task.profile, task, now):
        out += words["overdue_step"].format(step=safe(limit.step, 80)) if limit.step is not None \
            else words["overdue_task"]
    return out


def _step_line(step: Step, words: dict[str, str], safe: Safe, error: str | None = None) -> str:
    """One step; `error` is the task's, which its failed step need not repeat (the card ends with it)."""
    line = f"{_ICONS.get(step.status, '•')} {safe(step.name, 80)}"
    message = "" if step.status == "error" and error and step.message == error else safe(step.message)
    if step.status == "done":
        return line + (f"{words['detail_open']}{message}{words['detail_close']}" if message else "")
    detail = " ".join(p for p in (format_percent(step.percent) if step.status == "running" else "", message) if p)
    return line + (f": {detail}" if detail else "")


def _step_lines(task: Task, words: dict[str, str], safe: Safe) -> list[str]:
    steps = task.steps
    error = task.error if task.status == "error" else None
    if len(steps) <= UNFOLDED_STEPS:
        return [_step_line(s, words, safe, error) for s in steps]
    # The window: a few steps before the current one (or the first not done), the current, a few after.
    focus = task.current_index
    if focus is None:
        focus = next((i for i, s in enumerate(steps) if s.status != "done"), len(steps) - 1)
    start = max(0, focus - WINDOW_BEFORE)
    end = min(len(steps), focus + WINDOW_AFTER + 1)
    lines = []
    if start > 0:
        folded = steps[:start]
        if all(s.status == "done" for s in folded):
            lines.append(words["folded_done"].format(first=1, last=start, count=start))
        else:  # an unusual file (steps done out of order): name each one that is not done
            lines.append(words["folded_done"].format(first=1, last=start,
                                                     count=sum(s.status == "done" for s in folded)))
            lines += [_step_line(s, words, safe, error) for s in folded if s.status != "done"]
    lines += [_step_line(s, words, safe, error) for s in steps[start:end]]
    if end < len(steps):
        rest = steps[end:]
        lines.append(words["folded_pending"].format(first=end + 1, last=len(steps), count=len(rest)))
        lines += [_step_line(s, words, safe, error) for s in rest if s.status != "pending"]
    return lines


def _fit(text: str) -> str:
    """Cut to CARD_LIMIT characters at a line end, saying that something was cut."""
    if len(text) <= CARD_LIMIT:
        return text
    cut = text[: CARD_LIMIT - 2]
    return cut[: cut.rfind("\n")] + "\n…"
