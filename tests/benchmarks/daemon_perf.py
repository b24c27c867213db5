"""Performance of the real `task-pulsed` process: latency, throughput, cold start, memory, idle CPU.

Every part starts the installed `task-pulsed --dir <fresh temp dir>` (the console script beside
`sys.executable`), waits for its "ready:" log line on stderr and stops it with SIGTERM. Writes are
made from this process with `task_pulse.store.TaskStore` (locked read-modify-write, temp file,
fsync, atomic `os.replace`), exactly what `task-pulse` does; results are read back from
`<tasks>/.pulse/state.db` (table `notifications`).

  a) latency   writes at --rate per second (50) for --duration seconds (10), round-robin over
               10 tasks. Each write gives a notification carrying a unique message (default mode
               `next`: the running step is finished with message `lat-NNNNN`, giving one
               `step_done`; mode `heartbeat`: the running step's message is set, giving one
               `progress`, which the design allows the daemon to throttle). Latency = the
               notification's `created_at` minus `time.time()` taken JUST BEFORE
               `TaskStore.update` (so it includes the writer's own lock/read/fsync/replace: an
               upper bound on replace->outbox). `created_at` has millisecond resolution
               (truncated), so each value may read up to 1 ms low. Goal: p99 <= 20 ms.
  b) throughput  --tasks (100) tasks x --steps (20) steps written as fast as possible (create,
               one update per step, done). Time from the first write until the db holds all
               tasks x (1 started + steps step_done + 1 done) notifications (polled every 20 ms).
               Goal: >= 3000 notifications/s. Each write yields one notification, so this is bounded by
               the writer; the daemon's CPU per notification is printed too.
  b2) catch-up the same workload written while the daemon is paused (SIGSTOP), then SIGCONT: time
               until every notification is in the db (the daemon alone, reading each file's end state).
  d) stalls    --cold-files (10000) running tasks whose stallSeconds are staggered over 20 s: every
               `stalled` notice's lateness after its deadline (p99 goal <= 1 s, never early), and
               the RSS the scheduler adds (same dir size with finished tasks: no timers; goal <= 20 MB).
  c) cold start  --cold-files (10000) task files (half running, half done, 5 steps, stallSeconds
               86400 so no stall fires while idle) written directly as JSON into a fresh dir.
               (i) first start with --announce-existing: time from spawn to "ready:", notifications
               queued; (0) the same on a fresh dir without the flag (tasks adopted silently, the
               default; goal: all read in <= 2 s); (ii) restart on the same dir (db exists, nothing
               changed): time to ready.
               Daemon RSS after ready (VmRSS; goal <= 60 MB) and idle CPU over --idle seconds (60)
               after the restart's ready (utime+stime from /proc/<pid>/stat over wall time; goal
               < 0.5 %), sampled every second so work done right after ready (e.g. a startup
               cleanup pass) shows apart from true idle.

Run from the repository root with the project's virtualenv (about 2 minutes with the defaults):

    .venv/bin/python tests/benchmarks/daemon_perf.py
    .venv/bin/python tests/benchmarks/daemon_perf.py --quick            # small sizes, short idle
    .venv/bin/python tests/benchmarks/daemon_perf.py --parts c --idle 10

The script stops every daemon it started and removes its temp dirs, also on error or Ctrl-C.
Exit status 0 when every part ran (a missed goal is reported as MISS), 1 when a part failed.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import FrameType

from _stats import percentile

from task_pulse.model import Task
from task_pulse.store import TaskStore
from task_pulsed.differ import STEP_FLOOD

CLK_TCK = os.sysconf("SC_CLK_TCK")
READY_MARK = "ready:"


# -- small helpers ----------------------------------------------------------------------------------


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


def now_local() -> datetime:
    return datetime.now().astimezone()


def daemon_executable() -> Path:
    beside = Path(sys.executable).parent / "task-pulsed"
    if beside.exists():
        return beside
    found = shutil.which("task-pulsed")
    if found is None:
        sys.exit(f"cannot find the task-pulsed console script beside {sys.executable} or on PATH")
    return Path(found)


def daemon_env(home: Path) -> dict[str, str]:
    """The caller's environment minus task-pulse settings and journald, with a private HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_PULSE_") and k != "JOURNAL_STREAM"}
    env["HOME"] = os.fspath(home)
    return env


@dataclass
class Row:
    """One line of the final table."""

    part: str
    metric: str
    value: str
    goal: str = ""
    verdict: str = ""


def thread_delta_text(before: dict[int, float], after: dict[int, float]) -> str:
    """Per-thread CPU seconds spent between two samples, main thread first, then by thread id."""
    return ", ".join(f"{after[t] - before.get(t, 0.0):.2f}" for t in sorted(after))


# Daemons that did not exit 0 on SIGTERM (printed again under the table).
ANOMALIES: list[str] = []


def judge(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# -- the daemon process ------------------------------------------------------------------------------


class Daemon:
    """A running `task-pulsed`, its stderr read by a thread (never let the pipe fill up)."""

    registry: list[Daemon] = []

    def __init__(self, exe: Path, tasks_dir: Path, env: dict[str, str], extra: Sequence[str] = ()) -> None:
        self.argv = [os.fspath(exe), "--dir", os.fspath(tasks_dir), *extra]
        self.env = env
        self.tasks_dir = tasks_dir
        self.proc: subprocess.Popen[bytes] | None = None
        self.spawned_at = 0.0
        self.ready_at: float | None = None
        self.ready_line = ""
        self.ready = threading.Event()
        self.lines = 0
        self.tail: collections.deque[str] = collections.deque(maxlen=40)
        self.scan_lines: list[str] = []
        self.warnings: list[str] = []
        self._reader: threading.Thread | None = None
        self.stopped: tuple[int | None, float] | None = None  # (exit code, seconds SIGTERM -> exit)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        self.spawned_at = time.monotonic()
        self.proc = subprocess.Popen(self.argv, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, start_new_session=True)
        Daemon.registry.append(self)
        self._reader = threading.Thread(target=self._read, name="daemon-stderr", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stderr is not None
        for raw in self.proc.stderr:
            at = time.monotonic()
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self.lines += 1
            self.tail.append(line)
            if " scan: " in line:
                self.scan_lines.append(line)
            if " WARNING " in line or " ERROR " in line:
                self.warnings.append(line)
            if self.ready_at is None and READY_MARK in line:
                self.ready_at, self.ready_line = at, line
                self.ready.set()
        self.ready.set()  # EOF: wake anyone waiting for ready

    def wait_ready(self, timeout: float) -> float:
        """Seconds from spawn to the "ready:" line. Raises if the daemon died or never got ready."""
        self.ready.wait(timeout)
        if self.ready_at is None:
            state = "exited" if self.proc is not None and self.proc.poll() is not None else "still starting"
            raise RuntimeError(f"task-pulsed not ready after {timeout:.0f} s ({state}); log tail:\n"
                               + "\n".join(self.tail))
        return self.ready_at - self.spawned_at

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> tuple[int | None, float]:
        """SIGTERM, wait; SIGKILL if it does not exit. Returns (exit code, seconds it took)."""
        if self.proc is None:
            return None, 0.0
        started = time.monotonic()
        if self.proc.poll() is None:
            with suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with suppress(ProcessLookupError):
                    self.proc.kill()
                self.proc.wait(5)
        if self._reader is not None:
            self._reader.join(5)
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        if self in Daemon.registry:
            Daemon.registry.remove(self)
        self.stopped = (self.proc.returncode, time.monotonic() - started)
        return self.stopped

    # -- /proc ---------------------------------------------------------------------------------------

    def status_kb(self, field_name: str) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
        raise KeyError(field_name)

    def threads(self) -> int:
        return self.status_kb("Threads")

    def cpu_seconds(self) -> float:
        with open(f"/proc/{self.pid}/stat") as fh:
            rest = fh.read().rsplit(")", 1)[1].split()
        return (int(rest[11]) + int(rest[12])) / CLK_TCK  # utime, stime (fields 14, 15)

    def thread_cpu(self) -> dict[int, float]:
        """CPU seconds per thread id (the main thread's id is the pid; the others in start order)."""
        out: dict[int, float] = {}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            with suppress(OSError), open(f"/proc/{self.pid}/task/{tid}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
                out[int(tid)] = (int(rest[11]) + int(rest[12])) / CLK_TCK
        return out

    @classmethod
    def stop_all(cls) -> None:
        for d in list(cls.registry):
            with suppress(Exception):
                d.stop(timeout=5)


@contextmanager
def running_daemon(exe: Path, tasks_dir: Path, env: dict[str, str], extra: Sequence[str] = (),
                   ready_timeout: float = 120.0) -> Iterator[tuple[Daemon, float]]:
    daemon = Daemon(exe, tasks_dir, env, extra)
    daemon.start()
    try:
        yield daemon, daemon.wait_ready(ready_timeout)
    finally:
        code, took = daemon.stop()
        if code not in (0, None):
            ANOMALIES.append(f"task-pulsed {' '.join(daemon.argv[1:])} exited {code} {took:.1f} s after SIGTERM")
            print(f"  note: task-pulsed exited {code} {took:.1f} s after SIGTERM; log tail:\n    "
                  + "\n    ".join(list(daemon.tail)[-15:]))


# -- the database ------------------------------------------------------------------------------------


class StateDb:
    """A reader on the daemon's state db (separate connection, never writes)."""

    def __init__(self, tasks_dir: Path) -> None:
        path = tasks_dir / ".pulse" / "state.db"
        if not path.exists():
            raise RuntimeError(f"{path} does not exist after ready")
        self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10, isolation_level=None)

    def count(self, where: str = "1", params: Sequence[object] = ()) -> int:
        return self.db.execute(f"SELECT count(*) FROM notifications WHERE {where}", params).fetchone()[0]

    def by_kind(self) -> dict[str, int]:
        return dict(self.db.execute("SELECT kind, count(*) FROM notifications GROUP BY kind ORDER BY kind"))

    def rows(self, kind: str) -> list[tuple[str, str]]:
        return self.db.execute("SELECT created_at, data FROM notifications WHERE kind = ?", (kind,)).fetchall()

    def max_created(self) -> str | None:
        return self.db.execute("SELECT max(created_at) FROM notifications").fetchone()[0]

    def wait_count(self, expected: int, deadline_s: float, where: str = "1", params: Sequence[object] = (),
                   every: float = 0.02) -> tuple[int, float]:
        """Poll until count >= expected or the deadline; (last count, monotonic time it was seen)."""
        end = time.monotonic() + deadline_s
        while True:
            n = self.count(where, params)
            at = time.monotonic()
            if n >= expected or at >= end:
                return n, at
            time.sleep(every)

    def close(self) -> None:
        self.db.close()


# -- writer helpers ------------------------------------------------------------------------------------


def advance_with(message: str) -> Callable[[Task], None]:
    """The `next` verb: running step done (with message), next pending step running."""

    def change(task: Task) -> None:
        stamp = now_local().isoformat()
        i = next(i for i, s in enumerate(task.steps) if s.status == "running")
        step = task.steps[i]
        step.status, step.finished_at, step.message = "done", stamp, message
        following = next((s for s in task.steps[i + 1:] if s.status == "pending"), None)
        if following is not None:
            following.status, following.started_at = "running", stamp

    return change


def heartbeat_with(message: str) -> Callable[[Task], None]:
    def change(task: Task) -> None:
        step = task.running_step
        assert step is not None
        step.message = message

    return change


def finish(task: Task) -> None:
    stamp = now_local().isoformat()
    task.status, task.finished_at, task.result = "done", stamp, "ok"
    for step in task.steps:
        if step.status == "running":
            step.status, step.finished_at = "done", stamp


# -- a) latency ----------------------------------------------------------------------------------------


def bench_latency(exe: Path, root: Path, env: dict[str, str], rate: float, duration: float, mode: str,
                  n_tasks: int = 10) -> list[Row]:
    tasks_dir = root / "latency"
    writes = max(1, round(rate * duration))
    per_task = -(-writes // n_tasks)
    kind = "step_done" if mode == "next" else "progress"
    print(f"\n[a] latency: {writes} writes at {rate:g}/s over {n_tasks} tasks, mode {mode} (-> {kind})")
    with running_daemon(exe, tasks_dir, env) as (daemon, ready_s):
        print(f"  daemon pid {daemon.pid} ready in {ready_s * 1000:.0f} ms")
        store = TaskStore(tasks_dir)
        ids = []
        for k in range(n_tasks):
            steps = [f"step {s}" for s in range(per_task + 2)]
            ids.append(store.create(f"latency {k}", steps, now_local(), task_id=f"lat-task-{k:02d}").task_id)
        db = StateDb(tasks_dir)
        got, _ = db.wait_count(n_tasks, 10)
        if got < n_tasks:
            raise RuntimeError(f"only {got}/{n_tasks} started notifications after 10 s")

        before: dict[str, float] = {}
        after: dict[str, float] = {}
        late = 0
        t0 = time.monotonic()
        for i in range(writes):
            target = t0 + i / rate
            pause = target - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            elif pause < -1 / rate:
                late += 1
            message = f"lat-{i:05d}"
            change = advance_with(message) if mode == "next" else heartbeat_with(message)
            before[message] = time.time()
            store.update(ids[i % n_tasks], change, now_local())
            after[message] = time.time()
        span = time.monotonic() - t0
        where, params = "kind = ? AND json_extract(data, '$.message') LIKE 'lat-%'", (kind,)
        got, _ = db.wait_count(writes, 10, where, params)
        created: dict[str, float] = {}
        for created_at, data in db.rows(kind):
            message = json.loads(data).get("message") or ""
            if message in before:
                created[message] = min(created.get(message, float("inf")), epoch(created_at))
        db.close()

    lat = [(created[m] - before[m]) * 1000 for m in created]
    lat_after = [(created[m] - after[m]) * 1000 for m in created]
    write_ms = [(after[m] - before[m]) * 1000 for m in before]
    missing = writes - len(created)
    print(f"  wrote {writes} in {span:.2f} s ({writes / span:.1f}/s, {late} writes behind schedule); "
          f"matched {len(created)} notifications, {missing} missing")
    if lat:
        print("  latency = created_at - time.time() just BEFORE TaskStore.update (upper bound; created_at is "
              "ms-truncated)")
        print(f"    p50 {percentile(lat, 50):.2f}  p90 {percentile(lat, 90):.2f}  p99 {percentile(lat, 99):.2f}  "
              f"max {max(lat):.2f}  min {min(lat):.2f} ms")
        print(f"  same, from just AFTER update returned: p50 {percentile(lat_after, 50):.2f}  "
              f"p99 {percentile(lat_after, 99):.2f}  max {max(lat_after):.2f} ms")
        print(f"  the writer's own update (lock+read+write+fsync+replace): p50 {percentile(write_ms, 50):.2f}  "
              f"p99 {percentile(write_ms, 99):.2f} ms")
    if missing and mode == "heartbeat":
        print("  note: progress notifications may be throttled by the daemon (one per task per interval); "
              "use --latency-mode next")
    p99 = percentile(lat, 99) if lat else float("inf")
    rows = [
        Row("a", "latency p50 (ms)", f"{percentile(lat, 50):.1f}" if lat else "-"),
        Row("a", "latency p90 (ms)", f"{percentile(lat, 90):.1f}" if lat else "-"),
        Row("a", "latency p99 (ms)", f"{p99:.1f}", "<= 20", judge(p99 <= 20 and not missing)),
        Row("a", "latency max (ms)", f"{max(lat):.1f}" if lat else "-"),
        Row("a", "writes matched", f"{len(created)}/{writes}", f"{writes}/{writes}", judge(not missing)),
    ]
    return rows


# -- b) throughput ---------------------------------------------------------------------------------------


def bench_throughput(exe: Path, root: Path, env: dict[str, str], n_tasks: int, n_steps: int,
                     deadline: float) -> list[Row]:
    tasks_dir = root / "throughput"
    expected = n_tasks * (n_steps + 2)
    writes = n_tasks * (n_steps + 2)
    print(f"\n[b] throughput: {n_tasks} tasks x {n_steps} steps, {writes} writes as fast as possible, "
          f"expecting {expected} notifications")
    with running_daemon(exe, tasks_dir, env) as (daemon, ready_s):
        print(f"  daemon pid {daemon.pid} ready in {ready_s * 1000:.0f} ms")
        store = TaskStore(tasks_dir)
        store.ensure_dirs()
        db = StateDb(tasks_dir)
        steps = [f"step {s}" for s in range(n_steps)]
        cpu0, threads0 = daemon.cpu_seconds(), daemon.thread_cpu()
        lines0 = daemon.lines
        first_wall = time.time()
        first = time.monotonic()
        for j in range(n_tasks):
            task_id = store.create(f"throughput {j}", steps, now_local(), task_id=f"tp-{j:04d}").task_id
            for s in range(n_steps):
                store.update(task_id, advance_with(f"did {s}"), now_local())
            store.update(task_id, finish, now_local())
        writer_s = time.monotonic() - first
        got, reached = db.wait_count(expected, deadline)
        cpu1, threads1 = daemon.cpu_seconds(), daemon.thread_cpu()
        last_created = db.max_created()
        kinds = db.by_kind()
        db.close()
        log_lines = daemon.lines - lines0

    total_s = reached - first
    rate = got / total_s if total_s > 0 else float("inf")
    by_db = (epoch(last_created) - first_wall) if last_created else float("nan")
    cpu = cpu1 - cpu0
    print(f"  writer: {writer_s:.2f} s for {writes} writes ({writes / writer_s:.0f} writes/s, "
          f"{writer_s / writes * 1000:.2f} ms each)")
    print(f"  notifications: {got}/{expected} after {total_s:.2f} s from the first write "
          f"(last created_at at +{by_db:.2f} s; tail after the writer finished {total_s - writer_s:.2f} s)")
    print(f"  by kind: {kinds}")
    print(f"  daemon CPU during the run: {cpu:.2f} s = {cpu / max(got, 1) * 1e6:.0f} us per notification "
          f"-> at most {got / cpu if cpu else float('inf'):.0f} notifications per "
          f"daemon CPU-second; {log_lines} log lines")
    print(f"  daemon CPU by thread (main first, then in start order): {thread_delta_text(threads0, threads1)} s")
    print("  note: every write yields exactly one notification here, so this rate cannot exceed the writer's "
          "write rate")
    return [
        Row("b", "notifications/s (first write -> all in db)", f"{rate:.0f}", ">= 3000",
            judge(rate >= 3000 and got >= expected)),
        Row("b", "writer time (s) / writes per s", f"{writer_s:.2f} / {writes / writer_s:.0f}"),
        Row("b", "db complete after writer done (s)", f"{total_s - writer_s:.2f}"),
        Row("b", "daemon CPU per notification (us)", f"{cpu / max(got, 1) * 1e6:.0f}"),
        Row("b", "notifications in db", f"{got}/{expected}", f"{expected}", judge(got == expected)),
    ]


def bench_catch_up(exe: Path, root: Path, env: dict[str, str], n_tasks: int, n_steps: int,
                   deadline: float) -> list[Row]:
    """The daemon alone: SIGSTOP it, write the same workload, SIGCONT, time until all is in the db.

    The daemon then reads each task's file once or a few times, not once per write, and one read
    that finishes more than STEP_FLOOD steps tells them in STEP_FLOOD messages: so the end is when
    every task's `done` is in, and the rate counts what is there then."""
    tasks_dir = root / "catch-up"
    expected = n_tasks * (min(n_steps, STEP_FLOOD) + 2)  # at least: one read per task
    print(f"\n[b2] catch-up: same workload written while the daemon is paused (SIGSTOP), then SIGCONT; "
          f"time until all {n_tasks} tasks are done in the db")
    with running_daemon(exe, tasks_dir, env) as (daemon, _ready_s):
        store = TaskStore(tasks_dir)
        db = StateDb(tasks_dir)
        steps = [f"step {s}" for s in range(n_steps)]
        os.kill(daemon.pid, signal.SIGSTOP)
        try:
            for j in range(n_tasks):
                task_id = store.create(f"catch-up {j}", steps, now_local(), task_id=f"cu-{j:04d}").task_id
                for s in range(n_steps):
                    store.update(task_id, advance_with(f"did {s}"), now_local())
                store.update(task_id, finish, now_local())
        finally:
            cpu0 = daemon.cpu_seconds()
            resumed = time.monotonic()
            os.kill(daemon.pid, signal.SIGCONT)
        db.wait_count(n_tasks, deadline, "kind = 'done'")
        got, reached = db.count(), time.monotonic()
        cpu = daemon.cpu_seconds() - cpu0
        db.close()
        overflow = any("overflow" in w for w in daemon.warnings)
    took = reached - resumed
    rate = got / took if took > 0 else float("inf")
    print(f"  {got}/{expected} notifications {took:.2f} s after SIGCONT = {rate:.0f}/s; daemon CPU {cpu:.2f} s"
          f"{'; inotify queue overflowed (rescan)' if overflow else ''}")
    return [Row("b2", "catch-up notifications/s (daemon alone)", f"{rate:.0f}", "(>= 3000)",
                judge(rate >= 3000 and got >= expected))]


# -- c) cold start ------------------------------------------------------------------------------------------


def write_cold_files(tasks_dir: Path, n: int, running: float = 0.5, prefix: str = "cold") -> int:
    """n task files written directly (indent 2, as task-pulse writes them; no fsync), a `running` fraction
    of them running (spread evenly: 0..4 steps done, the next one running), the others done; 5 steps,
    no stall for a day. Returns the notifications --announce-existing owes for them."""
    tasks_dir.mkdir(parents=True)
    stamp = now_local().isoformat()
    names = ["fetch", "filter", "write", "review", "publish"]
    n_running = round(n * running)
    expected = 0
    for i in range(n):
        is_running = (i + 1) * n_running // n != i * n_running // n
        done = i % len(names) if is_running else len(names)
        steps: list[dict[str, object]] = []
        for k, name in enumerate(names):
            if k < done:
                steps.append({"name": name, "status": "done", "startedAt": stamp, "finishedAt": stamp,
                              "message": f"{name} ok"})
            elif k == done:
                steps.append({"name": name, "status": "running", "startedAt": stamp})
            else:
                steps.append({"name": name, "status": "pending"})
        expected += 1 + done + (0 if is_running else 1)  # started, each step done, the end
        task_id = f"{prefix}-{i:06d}"
        task = {"taskId": task_id, "taskName": f"{prefix} {i}", "status": "running" if is_running else "done",
                "startedAt": stamp, "updatedAt": stamp, "finishedAt": None if is_running else stamp,
                "steps": steps, "error": None, "result": None if is_running else "published", "rev": 3,
                "stallSeconds": 86400}
        with open(tasks_dir / f"{task_id}.json", "w", encoding="utf-8") as fh:
            json.dump(task, fh, ensure_ascii=False, indent=2)
    return expected


def _stop_text(daemon: Daemon) -> str:
    if daemon.stopped is None:
        return "?"
    code, took = daemon.stopped
    return f"{took:.2f} s (exit {code})"


def bench_cold(exe: Path, root: Path, env: dict[str, str], n_files: int, idle: float) -> list[Row]:
    tasks_dir = root / "cold"
    print(f"\n[c] cold start: {n_files} task files (half running, half done, 5 steps), idle window {idle:g} s")
    started = time.monotonic()
    expected = write_cold_files(tasks_dir, n_files)
    print(f"  wrote {n_files} files in {time.monotonic() - started:.1f} s (page cache warm); "
          f"--announce-existing owes {expected} notifications")
    rows: list[Row] = []

    adopt_dir = root / "cold-adopt"
    write_cold_files(adopt_dir, n_files)
    with running_daemon(exe, adopt_dir, env, ready_timeout=600) as (daemon, ready0):
        rss0 = daemon.status_kb("VmRSS")
        print(f"  (0) first start, existing tasks adopted silently (the default): ready in {ready0:.2f} s; "
              f"{daemon.scan_lines[-1].split(' INFO ', 1)[-1] if daemon.scan_lines else 'no scan line'}")
        print(f"      RSS after ready {rss0 / 1024:.1f} MB")
    shutil.rmtree(adopt_dir, ignore_errors=True)
    rows += [
        Row("c", f"first start (adopt) to ready, {n_files} files (s)", f"{ready0:.2f}", "<= 2", judge(ready0 <= 2)),
        Row("c", "RSS after adopt ready (MB)", f"{rss0 / 1024:.1f}", "<= 60", judge(rss0 / 1024 <= 60)),
    ]

    with running_daemon(exe, tasks_dir, env, ["--announce-existing"], ready_timeout=600) as (daemon, ready1):
        rss1, hwm1 = daemon.status_kb("VmRSS"), daemon.status_kb("VmHWM")
        db = StateDb(tasks_dir)
        queued, kinds = db.count(), db.by_kind()
        db.close()
        print(f"  (i) first start --announce-existing: ready in {ready1:.2f} s; {queued} notifications {kinds}")
        print(f"      {daemon.scan_lines[-1].split(' INFO ', 1)[-1] if daemon.scan_lines else 'no scan line'}")
        print(f"      RSS after ready {rss1 / 1024:.1f} MB (peak {hwm1 / 1024:.1f} MB); {daemon.lines} log lines")
        first = daemon
    rows += [
        Row("c", f"first start to ready, {n_files} files (s)", f"{ready1:.2f}"),
        Row("c", "notifications from first start", f"{queued}/{expected}", f"{expected}", judge(queued == expected)),
        Row("c", "RSS after first ready (MB)", f"{rss1 / 1024:.1f}", "<= 60", judge(rss1 / 1024 <= 60)),
    ]

    with running_daemon(exe, tasks_dir, env, ready_timeout=600) as (daemon, ready2):
        rss2, hwm2 = daemon.status_kb("VmRSS"), daemon.status_kb("VmHWM")
        print(f"  (ii) restart, nothing changed: ready in {ready2:.2f} s; "
              f"{daemon.scan_lines[-1].split(' INFO ', 1)[-1] if daemon.scan_lines else 'no scan line'}")
        print(f"      RSS after ready {rss2 / 1024:.1f} MB (peak {hwm2 / 1024:.1f} MB); threads {daemon.threads()}")
        lines0 = daemon.lines
        cpu0, wall0 = daemon.cpu_seconds(), time.monotonic()
        samples: list[tuple[float, float]] = [(0.0, cpu0)]  # (seconds since the window opened, cpu seconds)
        end = wall0 + idle
        while (now := time.monotonic()) < end:
            time.sleep(min(1.0, end - now))
            if not daemon.alive():
                raise RuntimeError("task-pulsed exited during the idle window:\n" + "\n".join(daemon.tail))
            samples.append((time.monotonic() - wall0, daemon.cpu_seconds()))
        cpu1, wall1 = samples[-1][1], wall0 + samples[-1][0]
        rss3, hwm3 = daemon.status_kb("VmRSS"), daemon.status_kb("VmHWM")
        idle_pct = (cpu1 - cpu0) / (wall1 - wall0) * 100
        busy = [t for (t, c), (_, c_prev) in zip(samples[1:], samples, strict=False) if c - c_prev > 1.5 / CLK_TCK]
        head = next((c for t, c in samples if t >= 5), cpu1) - cpu0
        print(f"      idle {wall1 - wall0:.1f} s: CPU {cpu1 - cpu0:.2f} s = {idle_pct:.3f} % "
              f"(clock tick {1000 / CLK_TCK:.0f} ms); {daemon.lines - lines0} log lines while idle")
        print(f"      CPU in the first 5 s after ready {head:.2f} s, after that {cpu1 - cpu0 - head:.2f} s; "
              f"last busy second ends at +{max(busy) if busy else 0:.0f} s")
        print(f"      RSS at end of idle {rss3 / 1024:.1f} MB (peak {hwm3 / 1024:.1f} MB)")
    print(f"      stop (SIGTERM -> exit): first {_stop_text(first)}, restart {_stop_text(daemon)}")
    rows += [
        Row("c", "restart to ready, unchanged dir (s)", f"{ready2:.2f}"),
        Row("c", "RSS after restart ready (MB)", f"{rss2 / 1024:.1f}", "<= 60", judge(rss2 / 1024 <= 60)),
        Row("c", "RSS at end of idle window (MB)", f"{rss3 / 1024:.1f}", "<= 60", judge(rss3 / 1024 <= 60)),
        Row("c", "peak RSS after restart, VmHWM (MB)", f"{hwm3 / 1024:.1f}", "(<= 60)", judge(hwm3 / 1024 <= 60)),
        Row("c", f"idle CPU over {idle:g} s after ready (%)", f"{idle_pct:.3f}", "< 0.5", judge(idle_pct < 0.5)),
        Row("c", "idle CPU after the first 5 s (%)",
            f"{(cpu1 - cpu0 - head) / max(wall1 - wall0 - 5, 1e-9) * 100:.3f}" if wall1 - wall0 > 5 else "-"),
    ]
    return rows


# -- d) stall detection at scale ------------------------------------------------------------------------------


def write_stall_files(tasks_dir: Path, n: int, status: str, base: float, spread: float) -> dict[str, float]:
    """n one-step tasks updated now; running ones get staggered `stallSeconds`. Returns id -> deadline."""
    tasks_dir.mkdir(parents=True)
    updated = now_local()
    deadlines = {}
    for i in range(n):
        task_id = f"stall-{i:05d}"
        stall = round(base + spread * i / n, 3)
        task = {"taskId": task_id, "taskName": f"stall {i}", "status": status, "startedAt": updated.isoformat(),
                "updatedAt": updated.isoformat(), "finishedAt": None if status == "running" else updated.isoformat(),
                "steps": [{"name": "work", "status": "running" if status == "running" else "done"}],
                "stallSeconds": stall}
        with open(tasks_dir / f"{task_id}.json", "w", encoding="utf-8") as fh:
            json.dump(task, fh)
        deadlines[task_id] = updated.timestamp() + stall
    return deadlines


def bench_stall(exe: Path, root: Path, env: dict[str, str], n: int) -> list[Row]:
    base, spread = max(10.0, n / 1000), 20.0
    print(f"\n[d] stalls: {n} running tasks, deadlines staggered over {spread:g} s starting {base:g} s after writing")
    running_dir, done_dir = root / "stall-running", root / "stall-done"
    deadlines = write_stall_files(running_dir, n, "running", base, spread)
    with running_daemon(exe, running_dir, env, ready_timeout=600) as (daemon, ready):
        rss_jobs = daemon.status_kb("VmRSS")
        db = StateDb(running_dir)
        got, _ = db.wait_count(n, max(deadlines.values()) - time.time() + 30, "kind = 'stalled'")
        late = sorted((datetime.fromisoformat(c).timestamp() - deadlines[json.loads(d)["taskId"]]) * 1000
                      for c, d in db.rows("stalled"))
        db.close()
        cpu = daemon.cpu_seconds()
    early = sum(1 for x in late if x < 0)
    p99 = percentile(late, 99)
    print(f"  ready in {ready:.2f} s with {n} stall timers; {got}/{n} stalled notices; {early} early")
    print(f"  lateness after the deadline (ms): p50 {percentile(late, 50):.1f}  p99 {percentile(late, 99):.1f}  "
          f"max {late[-1]:.1f}  (createdAt is ms-truncated; the timer fires 10 ms after the deadline by design)")
    print(f"  daemon CPU for the whole run {cpu:.2f} s")
    write_stall_files(done_dir, n, "done", base, spread)
    with running_daemon(exe, done_dir, env, ready_timeout=600) as (daemon, _):
        rss_none = daemon.status_kb("VmRSS")
    added = (rss_jobs - rss_none) / 1024
    print(f"  RSS after ready: {rss_jobs / 1024:.1f} MB with {n} timers, {rss_none / 1024:.1f} MB with none "
          f"(same number of finished tasks): the scheduler adds {added:.1f} MB")
    return [
        Row("d", "stalled notices", f"{got}/{n}", f"{n}", judge(got == n)),
        Row("d", "stall lateness p99 (ms)", f"{p99:.1f}", "<= 1000", judge(early == 0 and p99 <= 1000)),
        Row("d", "stall lateness max (ms)", f"{late[-1]:.1f}"),
        Row("d", f"scheduler RSS for {n} timers (MB)", f"{added:.1f}", "<= 20", judge(added <= 20)),
    ]


# -- main ------------------------------------------------------------------------------------------------------


def print_table(rows: list[Row]) -> None:
    w = max(len(r.metric) for r in rows)
    v = max(max(len(r.value) for r in rows), 5)
    print(f"\n{'part':<4}  {'metric':<{w}}  {'value':>{v}}  {'goal':<8}  result")
    print("-" * (4 + w + v + 26))
    for r in rows:
        print(f"{r.part:<4}  {r.metric:<{w}}  {r.value:>{v}}  {r.goal:<8}  {r.verdict}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: 3 s latency, 20x20, 1000 files, idle 10 s")
    parser.add_argument("--parts", default="abcd", help="which parts to run, e.g. 'ac' (default abcd)")
    parser.add_argument("--rate", type=float, default=50, help="[a] writes per second (default 50)")
    parser.add_argument("--duration", type=float, help="[a] seconds of writing (default 10, quick 3)")
    parser.add_argument("--latency-mode", choices=("next", "heartbeat"), default="next",
                        help="[a] next: step_done per write (never throttled); heartbeat: progress per write")
    parser.add_argument("--tasks", type=int, help="[b] tasks (default 100, quick 20)")
    parser.add_argument("--steps", type=int, default=20, help="[b] steps per task (default 20)")
    parser.add_argument("--deadline", type=float, default=120, help="[b] seconds to wait for the db (default 120)")
    parser.add_argument("--cold-files", type=int, help="[c] task files (default 10000, quick 1000)")
    parser.add_argument("--idle", type=float, help="[c] idle window in seconds (default 60, quick 10)")
    parser.add_argument("--tmp", type=Path, help="parent of the temp dirs (default: the system temp dir)")
    args = parser.parse_args(argv)
    duration = args.duration if args.duration is not None else (3 if args.quick else 10)
    n_tasks = args.tasks if args.tasks is not None else (20 if args.quick else 100)
    cold_files = args.cold_files if args.cold_files is not None else (1000 if args.quick else 10000)
    idle = args.idle if args.idle is not None else (10 if args.quick else 60)

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(f"interrupted by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    exe = daemon_executable()
    root = Path(tempfile.mkdtemp(prefix="tp-daemon-perf-", dir=args.tmp))
    home = root / "home"
    home.mkdir()
    env = daemon_env(home)
    print(f"daemon_perf: {exe}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; temp dir {root}")
    rows: list[Row] = []
    failed = False
    parts: dict[str, Callable[[], list[Row]]] = {
        "a": lambda: bench_latency(exe, root, env, args.rate, duration, args.latency_mode),
        "b": lambda: bench_throughput(exe, root, env, n_tasks, args.steps, args.deadline)
        + bench_catch_up(exe, root, env, n_tasks, args.steps, args.deadline),
        "c": lambda: bench_cold(exe, root, env, cold_files, idle),
        "d": lambda: bench_stall(exe, root, env, cold_files),
    }
    try:
        for key in args.parts:
            if key not in parts:
                parser.error(f"unknown part {key!r}")
            try:
                rows += parts[key]()
            except Exception as exc:  # report, clean up, go on with the next part
                failed = True
                traceback.print_exc()
                rows.append(Row(key, "part failed", type(exc).__name__, "", "FAIL"))
        if rows:
            print_table(rows)
        for anomaly in ANOMALIES:
            print(f"ANOMALY: {anomaly}")
    finally:
        Daemon.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
