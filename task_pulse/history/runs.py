"""Finished runs as the state db keeps them, and what the daemon observes of a run while it runs.

Runs of a task are matched by task name; their steps by name and occurrence (the k-th step of a name
is the k-th step of that name in every run), so a step inserted or removed does not shift the others.

Pure: no clock, no I/O. The worker updates `Observed` at every read of a task file (`observe`) and,
when the task ends, turns it and the file into a `Run` (`finished_run`), recorded in the same
transaction as the notifications of that read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime

from task_pulse.model import Step, Task, parse_time

# A step counts as watched from its start when the daemon read the task within this long of the step's
# startedAt (writers stamp a step's start and the task's updatedAt in the same write, or microseconds apart).
WATCHED_FROM_START = 1.0


def step_key(name: str, occurrence: int) -> str:
    """How a step is matched across runs: its name and which occurrence of that name it is."""
    return f"{occurrence}:{name}"


def key_at(steps: list[Step], i: int) -> str:
    """`step_key` of `steps[i]` alone (a write of a 1,000-step task needs one or two, not all)."""
    name = steps[i].name
    return step_key(name, sum(1 for s in steps[:i] if s.name == name))


def running_index(task: Task) -> int | None:
    return next((i for i, s in enumerate(task.steps) if s.status == "running"), None)


def step_keys(names: list[str]) -> list[str]:
    """`step_key` of each step, in order."""
    count: dict[str, int] = {}
    out = []
    for name in names:
        k = count.get(name, 0)
        count[name] = k + 1
        out.append(step_key(name, k))
    return out


def step_started(task: Task, i: int) -> datetime | None:
    """When step `i` started: its startedAt, else the end of the step before it, else (the first step)
    the task's start. Hand-written files often give only some of these."""
    step = task.steps[i]
    started = parse_time(step.started_at)
    if started is None and i > 0:
        started = parse_time(task.steps[i - 1].finished_at)
    if started is None and i == 0:
        started = parse_time(task.started_at)
    return started


def _seconds(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    seconds = (end - start).total_seconds()
    return round(seconds, 3) if seconds >= 0 else None


@dataclass
class Observed:
    """What the daemon saw of one run of a task while it ran: stored with the task's snapshot.

    `silences`: for each step watched from its start (by `step_key`), the longest time between two
    updates of the task while that step ran, the update that ended it included. A step the daemon did
    not see begin (a file written whole, a step started and finished between two reads) has none: its
    silences are not known, and are not learned from. `overdue`: the limits (`Limit.key`) already told.
    """

    silences: dict[str, float] = field(default_factory=dict)
    overdue: list[str] = field(default_factory=list)

    def to_json(self) -> str | None:
        """As stored with the snapshot; None when nothing was observed (most tasks: no JSON to write)."""
        if not self.silences and not self.overdue:
            return None
        return json.dumps({"silences": self.silences, "overdue": self.overdue}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | None) -> Observed:
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(dict(raw.get("silences") or {}), list(raw.get("overdue") or []))


def observe(before: Observed | None, old: Task | None, new: Task) -> Observed:
    """`before` brought up to date with a read of the task that found `new` (`old`: the read before, of
    the same run; None when this is the run's first read, and `before` is dropped)."""
    out = Observed(dict(before.silences), list(before.overdue)) if before is not None and old is not None \
        else Observed()
    if old is not None and old.updated_at == new.updated_at:
        return out  # no update: no gap to measure, no step begun
    updated = parse_time(new.updated_at)
    if updated is None:
        return out
    if old is not None and (i := running_index(old)) is not None:
        last = parse_time(old.updated_at)
        key = key_at(old.steps, i)
        if last is not None and updated > last and key in out.silences:
            end = updated
            # The same step now (its index, unless steps were added or removed: then by its key): the gap
            # ends at its finish if it finished meanwhile.
            same = i if i < len(new.steps) and key_at(new.steps, i) == key else next(
                (k for k in range(len(new.steps)) if new.steps[k].name == old.steps[i].name
                 and key_at(new.steps, k) == key), None)
            step = new.steps[same] if same is not None else None
            finished = parse_time(step.finished_at) if step is not None and step.status in ("done", "error") else None
            if finished is not None and last <= finished <= updated:
                end = finished
            out.silences[key] = max(out.silences[key], round((end - last).total_seconds(), 3))
    j = running_index(new)
    if j is not None:
        key = key_at(new.steps, j)
        started = step_started(new, j) if key not in out.silences else None
        if started is not None and abs((updated - started).total_seconds()) <= WATCHED_FROM_START:
            out.silences[key] = max(0.0, round((updated - started).total_seconds(), 3))
    return out


@dataclass(frozen=True)
class StepRun:
    """One step of a finished run: how it ended, how long it took, its longest silence (None: not known)."""

    name: str
    status: str
    seconds: float | None
    silence: float | None = None



@dataclass(frozen=True)
class Run:
    """A finished run of a task, as the history keeps it (outliving its file)."""

    key: str  # unique per run: task id, start, run counter
    task_id: str
    name: str
    outcome: str  # done | error
    at: float  # unix time it started (else finished, else was recorded): orders runs, ages them
    started_at: float | None
    finished_at: float | None
    steps: tuple[StepRun, ...]

    @property
    def seconds(self) -> float | None:
        if self.started_at is None or self.finished_at is None or self.finished_at < self.started_at:
            return None
        return round(self.finished_at - self.started_at, 3)

    def steps_json(self) -> str:
        """The steps as stored: one [name, status, seconds, silence] array each (compact: runs are many)."""
        return json.dumps([[s.name, s.status, s.seconds, s.silence] for s in self.steps], ensure_ascii=False)

    @staticmethod
    def parse_steps(text: str) -> tuple[StepRun, ...]:
        return tuple(StepRun(*step) for step in json.loads(text))


def run_key(task: Task, run: int) -> str:
    """Which run of which task file: a run recorded twice (a file put back, a restart) is stored once."""
    return "\x1f".join((task.task_id, task.started_at or task.finished_at or "", str(run)))


def finished_run(task: Task, run: int, observed: Observed | None, recorded_at: float) -> Run:
    """The history record of an ended task (`run`: the daemon's run counter for its id)."""
    started, finished = parse_time(task.started_at), parse_time(task.finished_at) or parse_time(task.updated_at)
    silences = observed.silences if observed is not None else {}
    keys = step_keys([s.name for s in task.steps]) if silences else None
    steps = []
    ended = started  # the end of the step before: where a step without its own startedAt began
    for i, step in enumerate(task.steps):
        begun = parse_time(step.started_at) if step.started_at else ended if i else started
        ended = parse_time(step.finished_at) if step.status in ("done", "error") else None
        steps.append(StepRun(step.name, step.status, _seconds(begun, ended),
                             silences.get(keys[i]) if keys is not None and ended is not None else None))
    at = started or finished
    return Run(key=run_key(task, run), task_id=task.task_id, name=task.name, outcome=task.status,
               at=at.timestamp() if at is not None else recorded_at,
               started_at=started.timestamp() if started is not None else None,
               finished_at=finished.timestamp() if finished is not None else None, steps=tuple(steps))
