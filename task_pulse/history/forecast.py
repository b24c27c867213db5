"""What past runs of a task name say about the run in progress: time left, overdue, a learned stall threshold.

Pure functions of (past runs, the task, now). Robust statistics throughout: typical durations are
medians, never means (one run stuck for an hour must not move every forecast after it), and the
"longest normal" value of a step leaves the single longest run out once there are five or more.
History speaks only once it has `MIN_RUNS` successful runs of a step (or of the task): with fewer,
there is no ETA, no learned limit, and the default stall threshold.

* ETA: the remaining steps' typical durations, plus what is typically left of the running step
  given how long it has run (the median of what past runs needed beyond that). Unknown (None) when a
  remaining step has too little history, or the running step has run longer than any past run did.
* Overdue: a step (or the task) past its explicit `budgetSeconds`, else past a limit learned from its
  history with a clear margin: `max(2 × typical, 1.5 × longest normal, typical + 60 s)`.
* Learned stall threshold: a step whose watched past runs were silent longer than the default
  threshold gets `1.5 × its longest normal silence` while it runs. An explicit `stallSeconds` wins;
  a step never seen before, or never that silent, keeps the default.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cached_property

from task_pulse.history.runs import Run, key_at, running_index, step_keys, step_started
from task_pulse.model import Task, parse_time

MIN_RUNS = 3  # successful runs before history says anything
WINDOW = 20  # the latest successful runs of a name that forecasts are made from
OVERDUE_FACTOR = 2.0  # overdue past this many times the typical duration …
OVERDUE_MARGIN = 1.5  # … and past this many times the longest normal one …
OVERDUE_FLOOR = 60.0  # … and at least this many seconds past the typical one (short steps jitter)
STALL_MARGIN = 1.5  # a learned stall threshold: the longest normal silence times this
# Where the stall threshold in force comes from (what `status` says).
DEFAULT, EXPLICIT, LEARNED = "default", "explicit", "learned"


def median(values: Iterable[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def longest_normal(values: Iterable[float]) -> float:
    """The longest value, leaving the single longest out once there are five or more: one run that
    went wrong does not teach that going wrong is normal."""
    ordered = sorted(values)
    return ordered[-2] if len(ordered) >= 5 else ordered[-1]


@dataclass(frozen=True)
class Norm:
    """What past successful runs say of one step (or of the whole task), newest first."""

    durations: tuple[float, ...] = ()
    silences: tuple[float, ...] = ()  # the longest silence of each run that the daemon watched

    # Cached: the worker keeps a name's profile for every write of its tasks (a frozen dataclass keeps its
    # __dict__, where cached_property puts the value).
    @cached_property
    def typical(self) -> float | None:
        return median(self.durations) if len(self.durations) >= MIN_RUNS else None

    @cached_property
    def overdue_after(self) -> float | None:
        """Seconds after its start past which it is clearly overdue (None: too little history)."""
        typical = self.typical
        if typical is None:
            return None
        return max(OVERDUE_FACTOR * typical, OVERDUE_MARGIN * longest_normal(self.durations),
                   typical + OVERDUE_FLOOR)

    @cached_property
    def quiet(self) -> float | None:
        """The stall threshold its silences teach (None: too few watched runs)."""
        if len(self.silences) < MIN_RUNS:
            return None
        return float(math.ceil(STALL_MARGIN * longest_normal(self.silences)))

    def left_after(self, elapsed: float) -> float | None:
        """What is typically left once it has run `elapsed` seconds: the median of what the past runs
        that took longer needed beyond that. None when no past run took that long."""
        beyond = [d - elapsed for d in self.durations if d > elapsed]
        return median(beyond) if beyond else None


@dataclass(frozen=True)
class Profile:
    """What the history of one task name says: its runs (successful ones) as a whole and per step."""

    name: str
    runs: int = 0  # successful runs learned from (at most WINDOW)
    total: Norm = field(default_factory=Norm)
    steps: dict[str, Norm] = field(default_factory=dict)  # by `step_key`


def learn(name: str, runs: Iterable[Run]) -> Profile:
    """The profile of a task name from its past runs (any order; only the latest WINDOW done ones count)."""
    done = sorted((r for r in runs if r.outcome == "done"), key=lambda r: r.at, reverse=True)[:WINDOW]
    durations: dict[str, list[float]] = {}
    silences: dict[str, list[float]] = {}
    for run in done:
        for step, key in zip(run.steps, step_keys([s.name for s in run.steps]), strict=True):
            if step.status != "done":
                continue
            if step.seconds is not None:
                durations.setdefault(key, []).append(step.seconds)
            if step.silence is not None:
                silences.setdefault(key, []).append(step.silence)
    totals = tuple(s for r in done if (s := r.seconds) is not None)
    return Profile(name, len(done), Norm(totals),
                   {k: Norm(tuple(durations.get(k, ())), tuple(silences.get(k, ())))
                    for k in durations.keys() | silences.keys()})


def _elapsed(since: datetime | None, now: datetime) -> float:
    return max(0.0, (now - since).total_seconds()) if since is not None else 0.0


def eta_seconds(profile: Profile | None, task: Task, now: datetime) -> float | None:
    """Seconds until a running task is done, by its history; None when history cannot say it honestly."""
    if profile is None or task.status != "running" or profile.runs < MIN_RUNS:
        return None
    left = 0.0
    for i, (step, key) in enumerate(zip(task.steps, step_keys([s.name for s in task.steps]), strict=True)):
        if step.status in ("done", "error"):
            continue
        norm = profile.steps.get(key)
        typical = norm.typical if norm is not None else None
        if norm is None or typical is None:
            return None
        if step.status == "running":
            rest = norm.left_after(_elapsed(step_started(task, i), now))
            if rest is None:
                return None
            left += rest
        else:
            left += typical
    return left


@dataclass(frozen=True)
class Limit:
    """When a step or the task becomes overdue in this run."""

    key: str  # "task", or "step:" + its step_key: once per key per run
    step: str | None  # the step's name; None: the whole task
    started: datetime
    seconds: float  # the limit, from its start
    budget: float | None  # the explicit budget (None: the limit is learned)
    expected: float | None  # its typical duration, when history knows one

    @property
    def due(self) -> datetime:
        try:
            return self.started + timedelta(seconds=self.seconds)
        except OverflowError:  # a start near year 9999
            return datetime.max.replace(tzinfo=self.started.tzinfo)


def limits(profile: Profile | None, task: Task) -> list[Limit]:
    """The limits of a running task now: the task's own and its running step's (explicit budgets first)."""
    if task.status != "running":
        return []
    out: list[Limit] = []
    if profile is None and task.budget_seconds is None and not any(s.budget_seconds for s in task.steps):
        return out  # neither history nor budgets: the common case, at every write
    started = parse_time(task.started_at)
    expected = profile.total.typical if profile is not None else None
    learned = profile.total.overdue_after if profile is not None else None
    limit = task.budget_seconds if task.budget_seconds is not None else learned
    if started is not None and limit is not None:
        out.append(Limit("task", None, started, limit, task.budget_seconds, expected))
    i = running_index(task)
    if i is not None and (profile is not None or task.steps[i].budget_seconds is not None):
        step, key = task.steps[i], key_at(task.steps, i)
        norm = profile.steps.get(key) if profile is not None else None
        limit = step.budget_seconds if step.budget_seconds is not None else (norm.overdue_after if norm else None)
        step_start = step_started(task, i)
        if step_start is not None and limit is not None:
            out.append(Limit(f"step:{key}", step.name, step_start, limit, step.budget_seconds,
                             norm.typical if norm else None))
    return out


def overdue(profile: Profile | None, task: Task, now: datetime) -> list[Limit]:
    """The limits a running task is past at `now`."""
    return [limit for limit in limits(profile, task) if now > limit.due]


def stall_threshold(profile: Profile | None, task: Task, default: float) -> tuple[float, str]:
    """The stall threshold in force for a task now, and where it comes from (DEFAULT, EXPLICIT, LEARNED)."""
    if task.stall_seconds is not None:
        return task.stall_seconds, EXPLICIT
    i = running_index(task) if profile is not None else None
    if profile is not None and i is not None:
        norm = profile.steps.get(key_at(task.steps, i))
        quiet = norm.quiet if norm is not None else None
        if quiet is not None and quiet > default:
            return quiet, LEARNED
    return default, DEFAULT


@dataclass(frozen=True)
class Outlook:
    """What `status` and the card say of a running task beyond its file."""

    eta_seconds: float | None
    stall_seconds: float
    stall_source: str
    overdue: list[Limit]
    known: bool  # its name has enough history to speak of

    @classmethod
    def of(cls, profile: Profile | None, task: Task, now: datetime, default_stall: float) -> Outlook:
        stall, source = stall_threshold(profile, task, default_stall)
        return cls(eta_seconds(profile, task, now), stall, source, overdue(profile, task, now),
                   profile is not None and profile.runs >= MIN_RUNS)
