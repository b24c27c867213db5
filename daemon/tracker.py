"""What one task's announced state becomes, given its file now and the time: diff, stall, resume, throttle.

Pure functions of (what was announced, the task now, now, policy), so every timing rule is tested
without threads or sleeps. The worker applies the result: it records the new `Seen` row and the
notifications in one transaction, and sets the stall and flush timers the result asks for.

The rules:
* stalled: a running task whose `updatedAt` is older than its threshold (the same `stalled_for`
  that `task-pulse status` uses), announced once per episode; the episode is remembered in
  `Seen.stalled_for` (the `updatedAt` that went stale), so a restart neither repeats nor forgets it.
* resumed: the first update of a stalled task, while it still runs, with how long it was stuck.
* progress: at most one push per `progress_interval` per task. Inside the window the latest one is
  held, and goes out when the window ends, unless a step transition or the end of the task
  superseded it first.
* history (task_pulse/history): what the daemon observes of a run is kept with its snapshot
  (`Seen.observed`: each step's longest silence); a run that ends becomes a `Run` to record. The
  profile of the task's name (its past runs) may raise the running step's stall threshold, and sets
  when the step or the task is overdue: `overdue` is announced once per step (and once for the task)
  per run, `Seen.overdue_at` says when to look again.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from task_pulse.history.forecast import Profile, limits
from task_pulse.history.forecast import stall_threshold as threshold_in_force
from task_pulse.history.runs import Observed, Run, finished_run, observe
from task_pulse.messages import format_duration, step_label
from task_pulse.model import Task, parse_time, stall_threshold, stalled_for
from task_pulse.records import Notification, Seen
from task_pulsed.differ import diff_tasks, make_notification, run_key
from task_pulsed.flood import INVALID_BURST, INVALID_WINDOW, NEWS_BURST, NEWS_WINDOW

# `Seen.stalled_for` of a stall adopted silently on the first start: never announced, so its end
# is not announced either.
QUIET = "quiet:"


def _episode(stalled_for: str | None) -> str | None:
    """The `updatedAt` that went stale, whether the stall was announced or adopted quietly."""
    return stalled_for.removeprefix(QUIET) if stalled_for is not None else None


# A stall timer fires this long after the deadline, because a task is stalled only when it is
# strictly older than its threshold.
STALL_MARGIN = timedelta(milliseconds=10)


@dataclass(frozen=True)
class Policy:
    default_stall: float = 180
    progress_interval: float = 30
    lang: str = "zh"
    redact_secrets: bool = True
    invalid_burst: int = INVALID_BURST  # unreadable files told one by one per window, then summed up
    invalid_window: float = INVALID_WINDOW
    news_burst: int = NEWS_BURST  # new tasks, and stall alarms, told one by one per window, then summed up
    news_window: float = NEWS_WINDOW


@dataclass
class Update:
    """The result for one task: the row to store (with its timers) and what to queue."""

    seen: Seen
    notifications: list[Notification] = field(default_factory=list)
    run: Run | None = None  # the run that ended with this read, for the history


def _timed(task: Task, run: int, kind: str, fact: str | None, policy: Policy, **extra: Any) -> Notification:
    """A notification that time, not a write, brought about (stalled, resumed)."""
    fields = {"name": task.name, "step": step_label(task, policy.lang), "done": task.done_count, "total": task.total}
    return make_notification(task.task_id, task.name, kind, (run_key(task, run), fact),
                             {**fields, **extra}, policy.lang, policy.redact_secrets)


def stall_deadline(task: Task, default_stall: float) -> datetime | None:
    """When a running task becomes stalled if nobody updates it (None: it never will)."""
    updated = parse_time(task.updated_at)
    if task.status != "running" or updated is None:
        return None
    try:
        return updated + timedelta(seconds=stall_threshold(task, default_stall))
    except OverflowError:  # an updatedAt near year 9999: it will not stall in our lifetime
        return None


def _check_stall(update: Update, now: datetime, policy: Policy, profile: Profile | None) -> Update:
    """Announce a stall that is due; otherwise say (in `seen.stall_at`) when to look again. The threshold
    is the running step's learned one when its history has one (see task_pulse/history/forecast.py)."""
    seen, task = update.seen, update.seen.snapshot
    default_stall = threshold_in_force(profile, task, policy.default_stall)[0]
    elapsed = stalled_for(task, now, default_stall)
    if elapsed is not None and _episode(seen.stalled_for) != task.updated_at:
        seen.stalled_for = task.updated_at
        update.notifications.append(_timed(task, seen.run, "stalled", task.updated_at, policy,
                                           duration=format_duration(elapsed, policy.lang),
                                           stalledSeconds=round(elapsed, 1)))
    deadline = stall_deadline(task, default_stall)
    seen.stall_at = (deadline + STALL_MARGIN).timestamp() if deadline and seen.stalled_for is None else None
    return update


def _check_clock(update: Update, now: datetime, policy: Policy, profile: Profile | None) -> Update:
    """What time alone may have brought about: a stall, an overdue step or task."""
    return _check_overdue(_check_stall(update, now, policy, profile), now, policy, profile)


def _check_overdue(update: Update, now: datetime, policy: Policy, profile: Profile | None,
                   quiet: bool = False) -> Update:
    """Announce each limit the running task is past (its budget, else what its history calls normal),
    once per run; `seen.overdue_at` says when the next one comes. `quiet` (a first start): past limits
    are taken as told."""
    seen, task = update.seen, update.seen.snapshot
    seen.overdue_at = None
    if task.status != "running":
        return update
    observed = seen.observed = seen.observed or Observed()
    for limit in limits(profile, task):
        if limit.key in observed.overdue:
            continue
        due = limit.due + STALL_MARGIN
        if now < due:
            at = due.timestamp()
            seen.overdue_at = at if seen.overdue_at is None else min(seen.overdue_at, at)
            continue
        observed.overdue.append(limit.key)
        if quiet:
            continue
        elapsed = (now - limit.started).total_seconds()
        update.notifications.append(_timed(
            task, seen.run, "overdue", limit.key, policy, step=limit.step,
            scope="task" if limit.step is None else "step", duration=format_duration(elapsed, policy.lang),
            expected=format_duration(limit.expected, policy.lang) if limit.expected is not None else None,
            budget=format_duration(limit.budget, policy.lang) if limit.budget is not None else None,
            elapsedSeconds=round(elapsed, 1), expectedSeconds=limit.expected, budgetSeconds=limit.budget))
    return update


def _ended(update: Update, previous: Task | None, now: datetime) -> Update:
    """The run's history record, if this read is where it ended."""
    seen, task = update.seen, update.seen.snapshot
    if task.status in ("done", "error") and (previous is None or previous.status == "running"):
        update.run = finished_run(task, seen.run, seen.observed, now.timestamp())
    return update


def track(old: Seen | None, task: Task, now: datetime, policy: Policy, *, adopt: bool = False,
          profile: Profile | None = None) -> Update:
    """The task's file was read: everything to announce, and the new announced state. `profile`: what the
    history of the task's name says (None: nothing)."""
    if adopt:  # first start: take the task as already announced, an old stall or overdue included
        seen = Seen(task.task_id, task, observed=observe(None, None, task))
        if stalled_for(task, now, threshold_in_force(profile, task, policy.default_stall)[0]) is not None:
            seen.stalled_for = f"{QUIET}{task.updated_at}"
        update = _check_overdue(_check_stall(Update(seen), now, policy, profile), now, policy, profile, quiet=True)
        return _ended(update, None, now)
    previous, run = (old.snapshot, old.run) if old is not None else (None, 0)
    if old is not None and old.gone_at is not None and old.snapshot.started_at != task.started_at:
        # The id is back after its file was removed, with another run in it: that run is new. (A file
        # put back as it was, or as it went on, is diffed against what was announced: not news.)
        previous, run, old = None, old.run + 1, None
    diff = diff_tasks(previous, task, now, run=run, lang=policy.lang, redact_secrets=policy.redact_secrets)
    seen = Seen(task.task_id, task, run=diff.run)
    if old is not None:
        seen.stalled_for, seen.progress_at, seen.held = old.stalled_for, old.progress_at, old.held
        seen.quiet_run = old.quiet_run
    same_run = old is not None and previous is not None and diff.run == old.run
    seen.observed = observe(old.observed if same_run and old is not None else None,
                            previous if same_run else None, task)
    out: list[Notification] = []

    if seen.stalled_for is not None and task.updated_at != _episode(seen.stalled_for):
        # Updated again after a stall: the episode is over. Say so if the task still runs (an end says it)
        # and the stall was announced.
        if task.status == "running" and not seen.stalled_for.startswith(QUIET):
            stuck_since, back_at = parse_time(seen.stalled_for), parse_time(task.updated_at) or now
            stuck = format_duration((back_at - stuck_since).total_seconds(), policy.lang) if stuck_since else None
            out.append(_timed(task, seen.run, "resumed", seen.stalled_for, policy, duration=stuck))
        seen.stalled_for = None

    progress = [n for n in diff.notifications if n.kind == "progress"]
    others = [n for n in diff.notifications if n.kind != "progress"]
    out.extend(others)
    if others:
        seen.held = None  # a step transition or the end supersedes a held progress message
    if progress:
        latest = progress[-1]
        if seen.progress_at is None or now.timestamp() - seen.progress_at >= policy.progress_interval:
            out.append(latest)
            seen.progress_at, seen.held = now.timestamp(), None
        else:
            seen.held = asdict(latest)
    if task.status != "running":
        seen.held = seen.stalled_for = None  # an ended task holds nothing back and is not stuck
    return _ended(_check_clock(Update(seen, out), now, policy, profile), previous if same_run else None, now)


def flush_held(seen: Seen, now: datetime, policy: Policy, profile: Profile | None = None) -> Update:
    """The throttle window may be over: send the held progress message if it is due."""
    update = Update(seen)
    if seen.held is not None and seen.progress_at is not None and \
            now.timestamp() - seen.progress_at >= policy.progress_interval:
        update.notifications.append(Notification(**seen.held))
        seen.progress_at, seen.held = now.timestamp(), None
    return _check_clock(update, now, policy, profile)


def flush_due(seen: Seen, policy: Policy) -> float | None:
    """When the held progress message may go out (unix time), or None when nothing is held."""
    if seen.held is None or seen.progress_at is None:
        return None
    return seen.progress_at + policy.progress_interval
