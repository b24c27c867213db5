"""diff_tasks: what the user must be told, given what they were told before and the file now.

Pure: no clock, no I/O. The worker passes `now`. Every notification gets a stable key built from the
facts it announces (the run; the step, by name and occurrence; its finish time …), so the same
transition seen twice produces the same key and the outbox stores it once.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from task_pulse.messages import (
    FIELD_CAP,
    chat_text,
    format_duration,
    format_percent,
    news_counts,
    plan_of,
    render,
    shown_id,
    step_label,
    word,
)
from task_pulse.model import Step, Task, parse_time
from task_pulse.records import Notification, Queued


def notification_key(task_id: str, kind: str, *facts: object) -> str:
    """`taskId:kind:digest`: the digest keeps keys short whatever a task file contains."""
    digest = hashlib.sha1("\x1f".join(map(str, facts)).encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{task_id}:{kind}:{digest}"


def run_key(task: Task, run: int) -> str:
    """What tells one run of a task from another in every notification key of that run."""
    return f"{task.started_at or ''}#{run}"


@dataclass(frozen=True)
class Diff:
    notifications: list[Notification] = field(default_factory=list)
    run: int = 0  # the run counter to store with the new snapshot


def _baseline(task: Task) -> Task:
    """The task as it was when it started: every step pending, nothing said yet."""
    return task.copy(status="running", finished_at=None, error=None, result=None,
                     steps=[Step(name=s.name) for s in task.steps])


def _match_steps(old: Task, new: Task) -> list[tuple[int, Step | None]]:
    """For each step of `new`: which occurrence of its name it is, and the same step in `old`.

    The k-th step of a name is the k-th step of that name before, so a step inserted, removed or
    moved does not make its neighbours look new (or old).
    """
    by_name: dict[str, list[Step]] = {}
    for step in old.steps:
        by_name.setdefault(step.name, []).append(step)
    count: dict[str, int] = {}  # (a Counter costs a Python call per name: this runs for every write)
    out: list[tuple[int, Step | None]] = []
    for step in new.steps:
        k = count.get(step.name, 0)
        count[step.name] = k + 1
        earlier = by_name.get(step.name, ())
        out.append((k, earlier[k] if k < len(earlier) else None))
    return out


def _current_name(task: Task) -> str | None:
    step = task.current
    return step.name if step else None


# The original script stamps a task's finishedAt and that of the step its `done` finishes a few
# microseconds apart; two separate calls (`next`, then `done`) are a process start apart at least.
SAME_MOMENT_SECONDS = 0.01


def _finished_by_the_end(old: Task | None, new: Task, prior: Step | None, step: Step) -> bool:
    """Whether `step` was finished by the write that finished the task (then one message says both).

    Revisions tell when the daemon saw the write just before this one: a step running then was
    finished by this write. Several task-pulse writes seen at once: its `done` gives the step the
    task's own finishedAt. A writer that knows nothing of `rev` (the original script; `rev` absent or
    unchanged): its stamps are microseconds apart.
    """
    if old is not None and new.rev and new.rev == old.rev + 1:
        return prior is not None and prior.status == "running"
    if new.rev and (old is None or new.rev != old.rev):
        return step.finished_at is not None and step.finished_at == new.finished_at
    if "." not in (step.finished_at or ""):  # whole seconds: two calls in one second look the same, so tell both
        return False
    ta, tb = parse_time(step.finished_at), parse_time(new.finished_at)
    return ta is not None and tb is not None and abs((ta - tb).total_seconds()) <= SAME_MOMENT_SECONDS


# Most step_done messages one write can give: past it, the rest of the steps it finished are one message.
STEP_FLOOD = 10


def _finished_stamp(task: Task, step: Step) -> str:
    """When the writer gives no finishedAt, the task's updatedAt (or rev) tells two completions apart."""
    return step.finished_at or task.updated_at or f"rev {task.rev}"


def _next_name(task: Task, i: int) -> str | None:
    """The step after step `i`, as a step_done shows it: not a pending one once the task ended."""
    following = task.steps[i + 1] if i + 1 < len(task.steps) else None
    show = following is not None and (task.status == "running" or following.status != "pending")
    return following.name if show and following else None


def make_notification(task_id: str, task_name: str, kind: str, key_facts: tuple[object, ...],
                      fields: dict[str, Any], lang: str = "zh", redact_secrets: bool = True) -> Notification:
    """The one place a notification is built, so every one is chat-safe.

    Text fields are cleaned (control characters and terminal escapes removed, capped) and, unless
    turned off, stripped of secrets, in the rendered text and in the structured data alike, before
    anything reaches the outbox. Numbers stay numbers.
    """

    def safe(value: Any) -> Any:
        return chat_text(value, FIELD_CAP, redact_secrets) if isinstance(value, str) else value

    fields = {k: safe(v) for k, v in fields.items()}
    name = safe(task_name)
    return Notification(key=notification_key(task_id, kind, *key_facts), task_id=task_id, task_name=name,
                        kind=kind, text=render(kind, fields, lang),
                        data={"taskId": shown_id(task_id), "taskName": name, "lang": lang, **fields})


class _Builder:
    """Collects the notifications of one diff, with the fields every kind shares."""

    def __init__(self, task: Task, run: int, lang: str, redact_secrets: bool) -> None:
        self.task, self.lang, self.redact_secrets = task, lang, redact_secrets
        self.run_key = run_key(task, run)
        self.out: list[Notification] = []

    def add(self, kind: str, facts: tuple[object, ...], **fields: Any) -> None:
        fields.setdefault("name", self.task.name)
        fields.setdefault("total", self.task.total)
        self.out.append(make_notification(self.task.task_id, self.task.name, kind, (self.run_key, *facts), fields,
                                          self.lang, self.redact_secrets))


def diff_tasks(old: Task | None, new: Task, now: datetime, run: int = 0, lang: str = "zh",
               redact_secrets: bool = True) -> Diff:
    """The notifications that take the user from `old` (None: never announced) to `new`, in order.

    A task seen for the first time is replayed from its start (started, each done step, its end),
    so a writer faster than the daemon loses nothing. A task running again after it ended counts
    as a new run (`started` again); steps already announced as done are not repeated.
    """
    restarted = old is not None and old.status != "running" and new.status == "running"
    if restarted:
        run += 1
    b = _Builder(new, run, lang, redact_secrets)
    before = _baseline(new) if old is None else old

    if old is None or restarted:
        current = new.steps[0].name if old is None and new.steps else _current_name(new)
        b.add("started", (), plan=plan_of((s.name for s in new.steps), redact_secrets), current=current,
              step=current,
              done=0 if old is None else new.done_count)

    # Steps that became done, in step order; `done` counts the steps done once that one finished.
    matches = _match_steps(before, new)
    newly_done = []
    already_done = 0
    for i, step in enumerate(new.steps):
        if step.status != "done":
            continue
        prior = matches[i][1]
        if prior is not None and prior.status == "done":
            already_done += 1
        else:
            newly_done.append(i)
    done_so_far = already_done
    ended = new.status in ("done", "error") and (old is None or restarted or old.status != new.status)
    ends_done = ended and new.status == "done"
    told: list[tuple[int, str | None, int]] = []  # (step index, its result, steps done once it finished)
    for i in newly_done:
        step = new.steps[i]
        done_so_far += 1
        prior = matches[i][1]
        result = step.message
        if prior is not None and prior.status == "running" and prior.message == result:
            result = None  # what a heartbeat said while the step ran, not what the step produced
        if ends_done and not result and _finished_by_the_end(old, new, prior, step):
            continue  # finished by the task's `done`: the done message says it; one message, not two
        told.append((i, result, done_so_far))
    # A write that finished a flood of steps at once (up to MAX_STEPS) is told in STEP_FLOOD messages.
    flood = told[STEP_FLOOD - 1:] if len(told) > STEP_FLOOD else []
    for i, result, done in told[:len(told) - len(flood)]:
        step = new.steps[i]
        b.add("step_done", (step.name, matches[i][0], _finished_stamp(new, step)), step=step.name, index=i,
              message=result, next=_next_name(new, i), done=done)
    if flood:
        first, last = new.steps[flood[0][0]], new.steps[flood[-1][0]]
        span = word("steps_range", lang).format(count=len(flood), first=first.name, last=last.name)
        b.add("step_done", ("steps", flood[0][0], flood[-1][0], _finished_stamp(new, last)), step=span,
              index=flood[-1][0], message=None, next=_next_name(new, flood[-1][0]), done=flood[-1][2])

    # The running step's message or percent changed: progress (the daemon throttles these).
    if new.status == "running":
        i = new.current_index
        step = new.running_step
        if step is not None and i is not None and (step.message or step.percent is not None):
            occurrence, prior = matches[i]
            if prior is None or (prior.message, prior.percent) != (step.message, step.percent):
                b.add("progress", (step.name, occurrence, new.updated_at, step.message, step.percent),
                      step=step.name, index=i, message=step.message, percent=format_percent(step.percent),
                      done=new.done_count)

    if ends_done:
        started = parse_time(new.started_at)
        finished = parse_time(new.finished_at) or now
        b.add("done", (new.finished_at,), result=new.result, done=new.done_count,
              duration=format_duration((finished - started).total_seconds(), lang) if started else None)
    elif ended:
        b.add("failed", (new.finished_at,), error=new.error, step=step_label(new, lang), done=new.done_count)
    return Diff(b.out, run)


def invalid_notification(task_id: str, file_name: str, reason: str, last_good: str | None, lang: str = "zh",
                         redact_secrets: bool = True) -> Notification:
    """`invalid`, once per spell: keyed by the last good content the file had (`last_good`, its digest;
    None if it never had one), so a file rewritten broken again and again is told once, and again
    only after it was readable in between."""
    return make_notification(task_id, file_name, "invalid", (last_good or "never readable",),
                             {"file": file_name, "reason": reason}, lang, redact_secrets)


# Where a summary of unreadable files is queued: a dotted id is never a task's (check_task_id).
UNREADABLE_SUMMARY_ID = ".unreadable"
_NAMES_SHOWN = 5


def invalid_summary(files: list[str], window_id: str, burst: int, window_seconds: float, lang: str = "zh",
                    redact_secrets: bool = True) -> Notification:
    """One `invalid` for the files past the flood limit of one window (the worker's `InvalidFlood`)."""
    shown = ", ".join(sorted(files)[:_NAMES_SHOWN]) + (f" … (+{len(files) - _NAMES_SHOWN})"
                                                        if len(files) > _NAMES_SHOWN else "")
    summary = word("files", lang).format(count=len(files), names=shown)
    reason = word("too_many_unreadable", lang).format(burst=burst, window=format_duration(window_seconds, lang))
    note = make_notification(UNREADABLE_SUMMARY_ID, "", "invalid", (window_id,), {"file": summary, "reason": reason},
                             lang, redact_secrets)
    note.data["files"] = [chat_text(f, FIELD_CAP, redact_secrets) for f in sorted(files)[:100]]
    return note


# Where a flood summary of new tasks and stall alarms is queued: a dotted id is never a task's.
NEWS_SUMMARY_ID = ".flooded"


def news_summary(held: list[Queued], window_id: str, window_seconds: float, lang: str = "zh",
                 redact_secrets: bool = True) -> Notification:
    """One message for what a flood window held (the worker's `NewsFlood`): how many tasks, their names, what
    happened to them."""
    names = list(dict.fromkeys(n.task_name for n in held))
    more = f" … (+{len(names) - _NAMES_SHOWN})" if len(names) > _NAMES_SHOWN else ""
    shown = ", ".join(names[:_NAMES_SHOWN]) + more
    note = make_notification(NEWS_SUMMARY_ID, "", "summary", (window_id,),
                             {"count": len(names), "window": format_duration(window_seconds, lang), "names": shown,
                              "what": news_counts((n.kind for n in held), lang)}, lang, redact_secrets)
    note.data["tasks"] = [chat_text(n, FIELD_CAP, redact_secrets) for n in names[:100]]
    return note
