"""What the daemon keeps of a task file: what diffing, the card and "put back" detection need, bounded.

A task file may be up to 1 MB (taskfile.MAX_FILE_BYTES), and anyone who may write the tasks dir may write
one. Kept as it is, announced snapshots grew the user's state db by 836 MB in 19 s of a co-user writing
and deleting such files (each kept 7 days as a tombstone), and were copied as they were into a shared
state db. So the daemon diffs and stores a compact form instead, the same for the file it reads and the
snapshot it stored:

* every text is what a chat would show of it: cleaned, masked, and capped (a step's name and message at
  what a notification shows, the result and error at what the card shows); unknown fields are dropped;
* a long task keeps the messages and times of the steps the card shows (a few around the current one),
  not those of every step, once its snapshot is past SIZE_BUDGET.

Two texts that would read alike in the chat are the same here, so a write that changes only what no
message would show (the end of a 5 KB message, a masked secret) is no news. Pure: no I/O.
"""

from __future__ import annotations

import json
import os

from task_pulse.messages import FIELD_CAP, chat_text
from task_pulse.model import Step, Task

NAME_CAP = FIELD_CAP
STEP_NAME_CAP = 120
MESSAGE_CAP = FIELD_CAP
OUTCOME_CAP = 300  # the card shows this much of a result or an error
STAMP_CAP = 64  # an ISO timestamp is 32 characters: past this it is no timestamp anyway
# Past this many bytes of JSON, the steps away from the current one keep their name and status only.
SIZE_BUDGET = 16 * 1024
WINDOW = (3, 5)  # steps before and after the current one that keep everything (the card's window, card.py)
_KEPT_EXTRA = ("parentTaskId",)  # unknown fields the product itself writes (adapters), kept capped


def _text(value: str | None, cap: int, redact_secrets: bool) -> str | None:
    return None if value is None else chat_text(value, cap, redact_secrets)


def _stamp(value: str | None) -> str | None:
    return None if value is None else value[:STAMP_CAP]


def compact(task: Task, *, redact_secrets: bool = True) -> Task:
    """`task` as the daemon diffs and stores it (see the module's docstring)."""
    steps = [Step(name=_text(s.name, STEP_NAME_CAP, redact_secrets) or "", status=s.status,
                  started_at=_stamp(s.started_at), finished_at=_stamp(s.finished_at),
                  message=_text(s.message, MESSAGE_CAP, redact_secrets), percent=s.percent,
                  budget_seconds=s.budget_seconds) for s in task.steps]
    extra = {k: chat_text(v, NAME_CAP, redact_secrets) for k, v in task.extra.items()
             if k in _KEPT_EXTRA and isinstance(v, str)}
    out = Task(task_id=task.task_id, name=_text(task.name, NAME_CAP, redact_secrets) or "", status=task.status,
               steps=steps, started_at=_stamp(task.started_at), updated_at=_stamp(task.updated_at),
               finished_at=_stamp(task.finished_at), error=_text(task.error, OUTCOME_CAP, redact_secrets),
               result=_text(task.result, OUTCOME_CAP, redact_secrets), rev=task.rev, stall_seconds=task.stall_seconds,
               budget_seconds=task.budget_seconds, extra=extra)
    if len(steps) > sum(WINDOW) + 1 and len(to_json(out)) > SIZE_BUDGET:
        focus = out.current_index
        if focus is None:
            focus = next((i for i, s in enumerate(steps) if s.status != "done"), len(steps) - 1)
        for i, step in enumerate(steps):
            if not focus - WINDOW[0] <= i <= focus + WINDOW[1] and step.status in ("done", "pending"):
                step.message = step.started_at = step.finished_at = None
    return out


def owner_name(uid: int) -> str | None:
    """Who a task file belongs to, when that is not the user running task-pulse (None: the user's own)."""
    if uid == os.geteuid():
        return None
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def owned(task: Task, uid: int) -> Task:
    """`task` with its owner in front of its name when its file is not the user's own ("👤mallory · Deploy"): a
    co-user's task never reads as the user's, in the card, the pings or `status`. The mark comes first, so a
    name that forges one ("👤alice · …") still shows whose it is."""
    owner = owner_name(uid)
    if owner is not None:
        task.name = f"👤{chat_text(owner, 32)} · {task.name}"
    return task


def to_json(task: Task) -> str:
    """The stored text of a compact task (compact JSON: no indent)."""
    return json.dumps(task.to_dict(), ensure_ascii=False, separators=(",", ":"))
