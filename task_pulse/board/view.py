"""What the page shows: pure functions of the tasks, what their history says, and `now`.

Every text that came from a task file or the outbox goes through `chat_text` here (control characters
and terminal escapes removed, secrets masked, capped), exactly as it would in the chat. The page puts
it into the document as text only (board.js never uses innerHTML), and the JSON it travels in has
`<`, `>` and `&` escaped (`page_json`): a co-user's task cannot put markup or script into the page.

Times travel as unix seconds, so the browser can count a running task's elapsed time by itself; a
record changes only when its task does (the time left is an instant, `etaAt`, not a countdown), so
what is pushed to the page is what changed, not every task every second.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from task_pulse.messages import chat_text, shown_id
from task_pulse.model import Task, TaskFormatError, parse_time, stalled_for

if TYPE_CHECKING:
    from collections.abc import Iterable

    from task_pulse.history.forecast import Outlook, Profile
    from task_pulse.history.runs import Run

# Where each state of a task goes on the page: what needs someone first, finished ones last (folded).
RANK = {"invalid": 0, "stalled": 1, "overdue": 1, "error": 2, "running": 3, "waiting": 3, "done": 4}
MESSAGE_CAP = 200
RESULT_CAP = 300
STEP_NAME_CAP = 80
ETA_STEP = 10  # seconds: the instant a task should be done, rounded, so it does not change at every read
NOTE_LINE_CAP = 500


@dataclass(frozen=True)
class Shown:
    """One task the page lists: its key on the page (the task id; host/task id in a shared db)."""

    key: str
    host: str  # "" for the tasks dir's own
    task_id: str
    task: Task | TaskFormatError
    owner: str | None = None  # the file's owner, when it is not the one serving the page


def _at(stamp: str | None) -> float | None:
    moment = parse_time(stamp)
    return None if moment is None else round(moment.timestamp(), 3)


def state_of(task: Task, now: datetime, outlook: Outlook) -> str:
    """stalled, overdue, waiting (running between steps), running, done or error."""
    if stalled_for(task, now, outlook.stall_seconds) is not None:
        return "stalled"
    if task.status == "running" and outlook.overdue:
        return "overdue"
    if task.status == "running" and task.running_step is None:
        return "waiting"
    return task.status


def file_record(shown: Shown, redact_secrets: bool = True) -> dict[str, Any]:
    """What the page shows of a task that its file alone says (an unreadable file: its reason). The same
    for as long as the file is: the board keeps it, and its JSON, until the file changes."""

    def safe(value: object, cap: int = MESSAGE_CAP) -> str | None:
        return chat_text(value, cap, redact_secrets) if value is not None else None

    head: dict[str, Any] = {"key": shown.key, "taskId": shown_id(shown.task_id), "host": safe(shown.host),
                            "owner": safe(shown.owner)}
    task = shown.task
    if isinstance(task, TaskFormatError):
        return {**head, "invalid": safe(str(task))}
    return {
        **head, "name": safe(task.name), "status": task.status, "done": task.done_count, "total": task.total,
        "steps": [{"name": safe(s.name, STEP_NAME_CAP), "status": s.status, "message": safe(s.message),
                   "percent": s.percent, "startedAt": _at(s.started_at), "finishedAt": _at(s.finished_at)}
                  for s in task.steps],
        "startedAt": _at(task.started_at), "updatedAt": _at(task.updated_at), "finishedAt": _at(task.finished_at),
        "result": safe(task.result, RESULT_CAP), "error": safe(task.error, RESULT_CAP),
    }


def outlook_record(task: Task | TaskFormatError, now: datetime, outlook: Outlook | None,
                   redact_secrets: bool = True) -> dict[str, Any]:
    """What the page shows of a task beyond its file, as of `now`: its state, stalled, the stall threshold
    in force, when it should be done, what is overdue."""
    if isinstance(task, TaskFormatError) or outlook is None:
        return {"state": "invalid"}
    eta = outlook.eta_seconds
    return {"state": state_of(task, now, outlook), "stalled": stalled_for(task, now, outlook.stall_seconds) is not None,
            "stallThresholdSeconds": outlook.stall_seconds, "stallThresholdSource": outlook.stall_source,
            "etaAt": None if eta is None else round((now.timestamp() + eta) / ETA_STEP) * ETA_STEP,
            "overdue": [chat_text(limit.step, STEP_NAME_CAP, redact_secrets) if limit.step is not None else None
                        for limit in outlook.overdue]}


def task_record(shown: Shown, now: datetime, outlook: Outlook | None, redact_secrets: bool = True) -> dict[str, Any]:
    """The page's record of one task: what its file says, and what it means now."""
    return {**file_record(shown, redact_secrets), **outlook_record(shown.task, now, outlook, redact_secrets)}


def ordered(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stalled and overdue first (unreadable files before them), failed next, running, finished last;
    the latest first within each."""
    def latest(record: dict[str, Any]) -> float:
        return -(record.get("finishedAt") if record.get("status") != "running" and record.get("finishedAt")
                 else record.get("updatedAt") or 0.0)

    return sorted(records, key=lambda r: (RANK[r["state"]], latest(r), r["key"]))


def run_record(run: Run, redact_secrets: bool = True) -> dict[str, Any]:
    """One past run, as the history chart draws it: when, how it ended, how long, each step's share."""
    return {"at": run.at, "outcome": run.outcome, "seconds": run.seconds, "taskId": shown_id(run.task_id),
            "steps": [{"name": chat_text(s.name, STEP_NAME_CAP, redact_secrets), "status": s.status,
                       "seconds": s.seconds} for s in run.steps]}


def history_record(name: str, runs: list[Run], profile: Profile | None, redact_secrets: bool = True) -> dict[str, Any]:
    """A task name's past runs (`runs` newest first), oldest first for the chart, and what they teach."""
    return {"name": chat_text(name, MESSAGE_CAP, redact_secrets),
            "typicalSeconds": profile.total.typical if profile is not None else None,
            "overdueAfterSeconds": profile.total.overdue_after if profile is not None else None,
            "runs": [run_record(r, redact_secrets) for r in reversed(runs)]}


def multiline(text: str | None, redact_secrets: bool = True) -> str | None:
    """A stored chat text (several lines) made safe line by line: its lines kept, nothing else."""
    if text is None:
        return None
    return "\n".join(chat_text(line, NOTE_LINE_CAP, redact_secrets) for line in text.split("\n"))


def notification_record(row: tuple[Any, ...], redact_secrets: bool = True) -> dict[str, Any]:
    """A notification row (seq, kind, created_at, text, delivered_at, delivered_by, attempts, last_error):
    what was said, and when and where it was delivered."""
    seq, kind, created_at, text, delivered_at, delivered_by, attempts, last_error = row
    return {"seq": seq, "kind": chat_text(kind, 40), "createdAt": chat_text(created_at, 40),
            "text": multiline(text, redact_secrets),
            "deliveredAt": chat_text(delivered_at, 40) if delivered_at else None,
            "deliveredBy": chat_text(delivered_by, MESSAGE_CAP, redact_secrets) if delivered_by else None,
            "attempts": attempts,
            "lastError": chat_text(last_error, RESULT_CAP, redact_secrets) if last_error else None}


def card_record(row: tuple[Any, ...], redact_secrets: bool = True) -> dict[str, Any]:
    """A live card row (sink, message id, updated_at): which chat holds the task's card."""
    sink, message_id, updated_at = row
    return {"sink": chat_text(sink, MESSAGE_CAP, redact_secrets), "messageId": chat_text(message_id, 80),
            "updatedAt": chat_text(updated_at, 40)}


_ESCAPED = str.maketrans({"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def page_json(value: Any) -> str:
    """JSON for the page: one line, with `<`, `>` and `&` escaped (no text can close a tag or start one,
    wherever the JSON ends up) and the two line separators JavaScript once refused in strings."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).translate(_ESCAPED)
