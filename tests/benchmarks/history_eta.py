"""Issue 25's goals: ETA accuracy, false stall alarms with and without learning, true stalls still caught.

A synthetic recurring job: 30 runs of a 6-step task whose step durations are jittered (each step its
typical time times a uniform 0.8-1.2), whose steps heartbeat at random intervals, except one, which
is always silent for much longer than the stall threshold (a render that prints nothing).

  1) simulated   The pure functions and the tracker (`track`, what the daemon's worker runs) on a
                 simulated clock, minutes-long steps and the default 180 s threshold; the stall and
                 overdue timers fire where the daemon's would. Figures: the ETA's median absolute
                 error at the middle of each run from the 4th on (relative to the time really left,
                 and to the whole run; also at a quarter and three quarters), false stall alarms per
                 run with learning and without (the profile withheld: what the code did before),
                 false overdue alarms, and when a true stall is caught (a heartbeating step gone
                 silent, the silent step stuck).
                 Goals: ETA error <= 15 % by the middle of a run; 0 false stalls with learning.
  2) daemon      The real task-pulsed, time compressed (a 1 s default threshold, the silent step
                 2 s), fed by real atomic writes; with --against-rev REV also the code of REV (the
                 code before this work: "today"), same workload, one after the other. Figures: false
                 stall alarms over the 30 runs and over runs 4-30; then two true stalls per version
                 (a heartbeating step silent 2.5 s, the silent step stuck 7 s) and how late each was
                 caught past the threshold in force (the notice's stalledSeconds, to 0.1 s). Goals: 0
                 false stalls after learning (today one per run); every true stall caught within its
                 threshold + 1 s.

Run from the repository root with the project's virtualenv (part 2 takes about 2.5 minutes per
version on a small machine):

    .venv/bin/python tests/benchmarks/history_eta.py
    .venv/bin/python tests/benchmarks/history_eta.py --against-rev fddf9e0
    .venv/bin/python tests/benchmarks/history_eta.py --parts simulated --runs 100

The script stops every daemon it started and removes its temp dirs, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from _stats import percentile
from daemon_perf import daemon_env, daemon_executable, running_daemon
from scale import Version

from task_pulse.history.forecast import Profile, eta_seconds, learn
from task_pulse.history.runs import Run
from task_pulse.model import Task, task_from_dict
from task_pulse.records import Seen
from task_pulse.store import TaskStore
from task_pulsed.tracker import Policy, track

NAME = "Nightly report"
STEPS = ("fetch", "parse", "enrich", "render", "upload", "notify")
SILENT = 3  # render: never a heartbeat
T0 = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Job:
    """The recurring job, in seconds: each step's typical time, the heartbeat interval, the default stall threshold."""

    typical: tuple[float, ...]
    beat: tuple[float, float]  # heartbeat every uniform(low, high) seconds, in the steps that heartbeat
    threshold: float
    jitter: float = 0.2

    def durations(self, rng: random.Random) -> list[float]:
        return [d * rng.uniform(1 - self.jitter, 1 + self.jitter) for d in self.typical]


SIMULATED = Job(typical=(45, 240, 120, 600, 90, 30), beat=(20, 40), threshold=180)
COMPRESSED = Job(typical=(0.3, 0.8, 0.4, 2.0, 0.3, 0.2), beat=(0.1, 0.2), threshold=1)


def writes(job: Job, durations: list[float], rng: random.Random,
           stuck: tuple[int, float] | None = None) -> list[tuple[float, str]]:
    """The writes of one run as (seconds from its start, what): "beat", "next", "done". `stuck`: (step,
    seconds) that step goes silent for, from its middle, before it goes on."""
    out: list[tuple[float, str]] = []
    at = 0.0
    for i, seconds in enumerate(durations):
        end = at + seconds
        quiet_from, quiet_for = (at + seconds / 2, stuck[1]) if stuck and stuck[0] == i else (end, 0.0)
        if i != SILENT:
            t = at + rng.uniform(*job.beat)
            while t < end:
                out.append((t if t < quiet_from else t + quiet_for, "beat"))
                t += rng.uniform(*job.beat)
        at = end + quiet_for
        out.append((at, "next" if i < len(durations) - 1 else "done"))
    return out


# -- part 1: the pure functions on a simulated clock ------------------------------------------------------


@dataclass
class RunFigures:
    stalls: int = 0
    overdue: int = 0
    eta_error: dict[float, tuple[float, float]] = field(default_factory=dict)  # share of run -> (of left, of run)
    caught: list[tuple[str, float, float]] = field(default_factory=list)  # (step, silent for, threshold)


def simulate(job: Job, durations: list[float], plan: list[tuple[float, str]], start: datetime,
             profile: Profile | None, policy: Policy) -> tuple[RunFigures, Run | None]:
    """One run through `track`, with the stall and overdue timers firing as the daemon's do."""
    raw: dict[str, Any] = {"taskName": NAME, "status": "running", "startedAt": start.isoformat(),
                           "updatedAt": start.isoformat(),
                           "steps": [{"name": s, "status": "pending"} for s in STEPS]}
    raw["steps"][0].update(status="running", startedAt=start.isoformat())
    figures = RunFigures()
    snapshots: list[tuple[float, Task]] = []
    total = plan[-1][0]
    seen: Seen | None = None
    run: Run | None = None

    def look(task: Task, now: datetime) -> None:
        nonlocal seen, run
        update = track(seen, task, now, policy, profile=profile)
        for n in update.notifications:
            if n.kind == "stalled":
                figures.stalls += 1
                figures.caught.append((n.data["step"], n.data["stalledSeconds"], 0.0))
            elif n.kind == "overdue":
                figures.overdue += 1
        seen, run = update.seen, update.run or run

    for offset, what in [(0.0, "create"), *plan]:
        now = start + timedelta(seconds=offset)
        while seen is not None:  # the timers that come before this write
            due = min((t for t in (seen.stall_at, seen.overdue_at) if t is not None), default=None)
            if due is None or due >= now.timestamp():
                break
            before = (seen.stall_at, seen.overdue_at)
            look(seen.snapshot, datetime.fromtimestamp(due, UTC))
            if (seen.stall_at, seen.overdue_at) == before:
                break
        stamp = now.isoformat()
        if what != "create":
            current = next(i for i, s in enumerate(raw["steps"]) if s["status"] == "running")
            if what in ("next", "done"):
                raw["steps"][current].update(status="done", finishedAt=stamp)
                if what == "next":
                    raw["steps"][current + 1].update(status="running", startedAt=stamp)
                else:
                    raw.update(status="done", finishedAt=stamp)
        raw["updatedAt"] = stamp
        task = task_from_dict(json.loads(json.dumps(raw)), "nightly")
        snapshots.append((offset, task))
        look(task, now)
    for share in (0.25, 0.5, 0.75):
        at = share * total
        state = next(t for offset, t in reversed(snapshots) if offset <= at)
        eta = eta_seconds(profile, state, start + timedelta(seconds=at))
        if eta is not None:
            left = total - at
            figures.eta_error[share] = (abs(eta - left) / left, abs(eta - left) / total)
    return figures, run


def part_simulated(runs: int, seed: int) -> list[tuple[str, str, str, str]]:
    job, rng = SIMULATED, random.Random(seed)
    policy = Policy(default_stall=job.threshold, lang="en")
    history: list[Run] = []
    learned: list[RunFigures] = []
    blind: list[RunFigures] = []
    for n in range(runs):
        durations = job.durations(rng)
        plan = writes(job, durations, rng)
        start = T0 + timedelta(days=n)
        profile = learn(NAME, history) if history else None
        with_learning, run = simulate(job, durations, plan, start, profile, policy)
        without, _ = simulate(job, durations, plan, start, None, policy)
        learned.append(with_learning)
        blind.append(without)
        assert run is not None
        history.append(run)
    rows = []
    for share in (0.25, 0.5, 0.75):
        errors = [f.eta_error[share] for f in learned[3:] if share in f.eta_error]
        missing = len(learned[3:]) - len(errors)
        rows.append((f"ETA median abs error at {share:.0%} of a run (runs 4-{runs})",
                     f"{percentile([e[0] for e in errors], 50):.1%} of the time left, "
                     f"{percentile([e[1] for e in errors], 50):.1%} of the run; p90 "
                     f"{percentile([e[0] for e in errors], 90):.1%} of the time left"
                     + (f"; no ETA in {missing} runs" if missing else ""),
                     "<= 15 %" if share == 0.5 else "",
                     ("PASS" if percentile([e[0] for e in errors], 50) <= 0.15 else "MISS") if share == 0.5 else ""))
    rows.append((f"false stall alarms over {runs} runs, with learning (runs 1-3 / runs 4-{runs})",
                 f"{sum(f.stalls for f in learned[:3])} / {sum(f.stalls for f in learned[3:])}", "0 after learning",
                 "PASS" if sum(f.stalls for f in learned[3:]) == 0 else "MISS"))
    rows.append((f"false stall alarms over {runs} runs, without learning (what the code did before)",
                 f"{sum(f.stalls for f in blind)} ({sum(f.stalls for f in blind) / runs:.2f} per run)", "", ""))
    rows.append((f"false overdue alarms over runs 4-{runs} (learned limits, no budget)",
                 str(sum(f.overdue for f in learned[3:])), "0", "PASS" if not any(f.overdue for f in learned[3:])
                 else "MISS"))
    # True stalls after the 30 runs: a heartbeating step silent 10 min, the silent step stuck an hour.
    profile = learn(NAME, history)
    for step, silent_for in ((1, 600.0), (SILENT, 3600.0)):
        durations = job.durations(rng)
        figures, _ = simulate(job, durations, writes(job, durations, rng, stuck=(step, silent_for)),
                              T0 + timedelta(days=runs + step), profile, policy)
        caught = [c for c in figures.caught if c[0] == STEPS[step]]
        norm = profile.steps.get(f"0:{STEPS[step]}")
        threshold = max(job.threshold, norm.quiet or 0) if norm else job.threshold
        rows.append((f"true stall: {STEPS[step]} silent {silent_for / 60:.0f} min",
                     f"caught after {caught[0][1]:.1f} s (threshold {threshold:.0f} s)" if caught else "NOT caught",
                     "<= threshold + 1 s", "PASS" if caught and caught[0][1] <= threshold + 1 else "MISS"))
    return rows


# -- part 2: the real daemon, time compressed --------------------------------------------------------------


def notes(tasks_dir: Path, kind: str | None = None) -> list[tuple[str, str, dict[str, Any]]]:
    """(task id, kind, data) of every notification, in queue order."""
    db = sqlite3.connect(f"file:{tasks_dir / '.pulse' / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        rows = db.execute("SELECT task_id, kind, data FROM notifications ORDER BY seq").fetchall()
    finally:
        db.close()
    return [(t, k, json.loads(d)) for t, k, d in rows if kind is None or k == kind]


def wait(predicate: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.02)
    return value


def play(store: TaskStore, plan: list[tuple[float, str]], stall_seconds: float | None = None) -> str:
    """Write one run as planned, in real time; its task id."""
    started = time.monotonic()
    task_id = store.create(NAME, list(STEPS), datetime.now(UTC), stall_seconds=stall_seconds).task_id
    for offset, what in plan:
        time.sleep(max(0.0, started + offset - time.monotonic()))
        now = datetime.now(UTC)
        stamp = now.isoformat()
        change: Callable[[Task], object] = {"beat": lambda t: t.touch(),
                                            "next": lambda t, stamp=stamp: t.advance(stamp),
                                            "done": lambda t, stamp=stamp: t.finish(stamp)}[what]
        store.update(task_id, change, now)
    return task_id


def part_daemon(version: Version, runs: int, seed: int, root: Path) -> list[tuple[str, str, str, str]]:
    job, rng = COMPRESSED, random.Random(seed)
    tasks_dir = root / version.label / "tasks"
    tasks_dir.mkdir(parents=True)
    env = version.env(daemon_env(root))
    env["TASK_PULSE_STALL"] = f"{job.threshold:g}"
    print(f"  {version.label}: {version.describe(env)}", flush=True)
    store = TaskStore(tasks_dir)
    ids: list[str] = []
    rows = []
    with running_daemon(daemon_executable(), tasks_dir, env):
        for n in range(runs):
            task_id = play(store, writes(job, job.durations(rng), rng))
            wait(lambda task_id=task_id: any(t == task_id and k == "done" for t, k, _ in notes(tasks_dir)), 30,
                 f"run {n + 1} done")
            ids.append(task_id)
        stalls = [t for t, _, _ in notes(tasks_dir, "stalled")]
        early, late = sum(stalls.count(t) for t in ids[:3]), sum(stalls.count(t) for t in ids[3:])
        rows.append((f"false stall alarms, {runs} runs (runs 1-3 / runs 4-{runs})", f"{early} / {late}",
                     "0 after learning", "PASS" if late == 0 else "MISS"))
        for step, silent_for in ((1, 2.5), (SILENT, 7.0)):
            threshold = learned_threshold(tasks_dir, step, job.threshold)  # in force for this step now
            task_id = play(store, writes(job, job.durations(rng), rng, stuck=(step, silent_for)))
            wait(lambda task_id=task_id: any(t == task_id and k == "done" for t, k, _ in notes(tasks_dir)), 60,
                 "the stuck run done")
            caught = [d for t, _, d in notes(tasks_dir, "stalled") if t == task_id and d["step"] == STEPS[step]]
            lateness = caught[0]["stalledSeconds"] - threshold if caught else None
            rows.append((f"true stall: {STEPS[step]} silent {silent_for:g} s",
                         f"caught {lateness:.1f} s past its threshold of {threshold:g} s" if lateness is not None
                         else "NOT caught", "<= threshold + 1 s",
                         "PASS" if lateness is not None and lateness <= 1 else "MISS"))
    return rows


def learned_threshold(tasks_dir: Path, step: int, default: float) -> float:
    """The threshold a step had learned from the runs before (older code: none, the default)."""
    db = sqlite3.connect(f"file:{tasks_dir / '.pulse' / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        if not db.execute("SELECT 1 FROM sqlite_master WHERE name = 'runs'").fetchone():
            return default
        from task_pulse.history.reader import RunReader

        norm = RunReader(db).profile(NAME).steps.get(f"0:{STEPS[step]}")
    finally:
        db.close()
    quiet = norm.quiet if norm is not None else None
    return quiet if quiet is not None and quiet > default else default


def against(rev: str, root: Path) -> Version:
    """The code of `rev` (task_pulse/ and daemon/ as task_pulsed/), from git, in a dir of its own."""
    where = root / f"rev-{rev}"
    where.mkdir()
    archive = subprocess.run(["git", "archive", rev, "task_pulse", "daemon"], capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(where)], input=archive.stdout, check=True)
    (where / "daemon").rename(where / "task_pulsed")
    return Version(rev, where)


def show(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    print(f"\n{title}")
    width = max(len(r[0]) for r in rows)
    for metric, value, goal, result in rows:
        print(f"  {metric:<{width}}  {value}" + (f"   [goal {goal}: {result}]" if goal else ""))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="simulated,daemon", help="simulated, daemon, or both (default)")
    parser.add_argument("--runs", type=int, default=30, help="runs of the job (default 30)")
    parser.add_argument("--seed", type=int, default=25)
    parser.add_argument("--against-rev", metavar="REV", help="the daemon part with the code of REV too (git)")
    args = parser.parse_args(argv)
    parts = set(args.parts.split(","))
    if "simulated" in parts:
        show(f"1) simulated clock: {args.runs} runs of {len(STEPS)} steps, typical "
             f"{', '.join(f'{d:g}' for d in SIMULATED.typical)} s ±20 %, heartbeats every 20-40 s except "
             f"{STEPS[SILENT]}, default threshold {SIMULATED.threshold:g} s", part_simulated(args.runs, args.seed))
    if "daemon" in parts:
        root = Path(tempfile.mkdtemp(prefix="tp-history-bench-"))
        try:
            versions = [Version("current")] + ([against(args.against_rev, root)] if args.against_rev else [])
            print(f"\n2) real task-pulsed, compressed: {args.runs} runs, typical "
                  f"{', '.join(f'{d:g}' for d in COMPRESSED.typical)} s ±20 %, heartbeats every 0.1-0.2 s except "
                  f"{STEPS[SILENT]}, default threshold {COMPRESSED.threshold:g} s")
            for version in versions:
                show(f"   {version.label}", part_daemon(version, args.runs, args.seed, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
