"""The scale goals of issue 16, measured on the real `task-pulsed` process, optionally against older code.

Every part starts the installed console scripts beside `sys.executable` (`task-pulsed`, `task-pulse`)
through the helpers of `daemon_perf.py` (Daemon, running_daemon, StateDb). With `--against DIR`, DIR
holding older `task_pulse` and `task_pulsed` packages (say an older checkout's, linked as
`DIR/task_pulse` and `DIR/task_pulsed`), the same console scripts are also run with `PYTHONPATH=DIR`,
which makes them import the older code; every measurement is repeated `--repeat` times (3), the two
versions alternated (current, against, current, against, ...), and the final table gives the median
of each version, the ratio current/against, the issue's goal and PASS/MISS for the current code.

  s) start     --files (100000) task files, a --running (0.3) fraction of them running, the rest
               done, 5 steps each, stallSeconds 86400 (nothing stalls), written directly as JSON
               once per size and reused: between runs only `<dir>/.pulse` is deleted, so each run is
               a first start again. The daemon runs as under systemd: NOTIFY_SOCKET points at a unix
               datagram socket this script binds and reads (datagrams counted, the last STATUS=
               kept), WATCHDOG_USEC=30000000 (a WATCHDOG=1 and a STATUS every 15 s).
               (1) first start (empty state db, default flags: tasks adopted silently): seconds
               from spawn to the "ready:" log line, and to the moment its CPU goes quiet (under 5 ms
               in 1 s: a daemon may adopt the files after ready), VmHWM then; (2) restart on the
               unchanged dir, once the first start was quiet and stopped: seconds to ready; (3) RSS
               (VmRSS) right after the restart's ready and at the end of the idle window, and
               VmHWM; (4) idle CPU over --idle (30) seconds after the restart's ready,
               skipping the first 5 s (utime+stime from /proc/<pid>/stat; the finer sum of
               /proc/<pid>/task/*/schedstat beside it). The daemon's own "scan:" and "ready:" lines
               are printed. With --all-running the part runs again with every task running (the
               issue's "100k, all running" row). Goals: first start <= 4 s, restart <= 0.5 s, RSS
               <= 60 MB (30 % running) / <= 80 MB (all running), idle CPU <= 0.1 %.
  w) writes    --tasks (300) running tasks of 20 steps, adopted by a first start (ready, then CPU
               quiet). Then --writers (3) writer processes (multiprocessing, spawn) write --rate (3000)
               writes/s in total for --duration (10) seconds, each writer round robin over its own share
               of the tasks (never two writers on one file). A write sets the running step's `message`
               to a unique token `w-<writer>-<n>`, bumps `updatedAt` and `rev`, serialises the task
               (compact JSON) into a temp file in `<tasks>/.pulse/tmp/` and os.replace()s it onto
               `<tasks>/<id>.json` (no fsync); time.time() is taken just before the replace. On an ext4
               disk writing a new 2 KB file costs the writer 0.2-0.9 ms of CPU, more than the daemon's
               share, so by default the temp files are STAGED: all written (and synced) before the
               window opens (their updatedAt is the staging time), each write in the window being just
               its os.replace; --inline-writes serialises and writes each one in the window instead (the
               writers then need about a CPU of their own at 3000 writes/s). The daemon runs with
               TASK_PULSE_PROGRESS_INTERVAL=0.000001 (1 us stands for 0, which older code refuses from
               the environment), so every write gives one `progress` notification, whose `data.message`
               is the token. Latency = its `created_at` (UTC, millisecond resolution, truncated: a value
               may read up to 1 ms low) minus the write time. Reported: writes/s achieved,
               notifications/s, latency p50/p99/p99.9/max, tokens missing once the outbox is complete
               (waited for up to 30 s; "coalesced" = a later write of the same task was announced
               instead, "lost" = a task's last write missing), and the daemon's CPU (utime+stime) from
               the writers' start until the outbox is complete plus 1.5 s (the checkpointer's trailing
               WAL checkpoint) divided by the writes = CPU per write (and per notification, which
               differs once writes are coalesced), also per thread, and the writers' own CPU per write.
               Python < 3.14 gives every thread the process's name, so the daemon of this part gets a
               `sitecustomize` (on PYTHONPATH, from a temp dir) that names each thread for the kernel
               (prctl PR_SET_NAME, 15 bytes: worker, checkpointer, APScheduler, and watchdog's
               InotifyFD, InotifyFD-Dispa(tch), InotifyEmitter, InotifyObserver); --no-thread-names
               leaves it out.
               A second row: --slow-rate (200) writes/s for --duration-slow (30) s by 1 writer.
               Goals: daemon CPU per write <= 0.3 ms, p99 <= 20 ms at 3000 writes/s, p99.9 <= 5 ms at
               200 writes/s, no notification missing.
  t) status    `task-pulse --dir D status` and `... status --json` (real processes, output piped
               here) on the dir of part s (--files, --running), first with the daemon stopped (after
               it ran there: each version keeps its own `.pulse`, moved aside while the other runs),
               then with that version's daemon running (1 s after its ready). Wall time, output
               lines (text) and bytes (--json). Goal: <= 1 s at 100k.

Run from the repository root with the project's virtualenv. The defaults take both CPUs of a small
machine for roughly 10 minutes per version (--all-running adds about 5 per version; writing the
100,000 files once takes a minute or two); --quick is a smoke run of about a minute per version:

    .venv/bin/python tests/benchmarks/scale.py --quick
    .venv/bin/python tests/benchmarks/scale.py --against /tmp/base16pkg --all-running
    .venv/bin/python tests/benchmarks/scale.py --parts w --rate 2000 --duration 20 --repeat 5

The script stops every daemon and writer process it started and removes its temp dirs, also on
error or Ctrl-C. Exit status 0 when every part ran (a missed goal is reported as MISS), 1 when a part
failed.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from _stats import percentile
from daemon_perf import (
    ANOMALIES,
    CLK_TCK,
    Daemon,
    StateDb,
    daemon_env,
    daemon_executable,
    epoch,
    judge,
    now_local,
    running_daemon,
    write_cold_files,
)

MB = 1024  # /proc reports kB
IDLE_SKIP = 5.0  # seconds after ready left out of the idle CPU figure
WATCHDOG_USEC = "30000000"
# Every progress message: 1 us stands for 0, which older code (--against) refuses from the environment.
PROGRESS_INTERVAL = "0.000001"
MISSING_WAIT = 30.0  # seconds the outbox is waited for after the last write
CHECKPOINT_TAIL = 1.5  # seconds of daemon CPU counted after the outbox is complete (the WAL checkpoint)
SCAN_RE = re.compile(r"scan: .*")
READY_RE = re.compile(r"ready: .*")
SCAN_MS_RE = re.compile(r"scan: .*?([\d.]+) ms")

# Writer processes started by part w (terminated on the way out, whatever happens).
WRITERS: list[mp.process.BaseProcess] = []


def stop_writers(procs: list[mp.process.BaseProcess] | None = None) -> None:
    """Kill these writer processes if still running (default: every one, after a failed part or Ctrl-C)
    and forget them."""
    for p in list(WRITERS if procs is None else procs):
        if p.is_alive():
            p.kill()
        p.join(5)
        if p in WRITERS:
            WRITERS.remove(p)


# -- the code versions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Version:
    """One code version: the console scripts beside sys.executable, with `path` first on PYTHONPATH."""

    label: str
    path: Path | None = None  # None: the installed (current) code

    def env(self, base: dict[str, str], *extra_paths: Path) -> dict[str, str]:
        env = dict(base)
        paths = [os.fspath(p) for p in (*extra_paths, self.path) if p is not None]
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        else:
            env.pop("PYTHONPATH", None)
        return env

    def describe(self, base: dict[str, str]) -> str:
        """Where this version's packages are imported from, asked of the interpreter with its environment."""
        probe = "import task_pulse, task_pulsed; print(task_pulse.__file__, task_pulsed.__file__)"
        out = subprocess.run([sys.executable, "-c", probe], env=self.env(base), capture_output=True, text=True,
                             timeout=60, cwd=base["HOME"])  # not the cwd: `-c` puts it first on sys.path
        if out.returncode != 0:
            raise RuntimeError(f"{self.label}: cannot import task_pulse/task_pulsed: {out.stderr.strip()}")
        return " ".join(os.path.dirname(p) for p in out.stdout.split())


# -- results: one series of values per (metric, version) ------------------------------------------------------


@dataclass
class Metric:
    part: str
    name: str
    fmt: str = ".2f"
    goal: str = ""
    ok: Callable[[float], bool] | None = None
    worst: bool = False  # report the maximum over the runs, not the median (counts that must stay 0)
    values: dict[str, list[float]] = field(default_factory=dict)

    def summary(self, label: str) -> float | None:
        got = [v for v in self.values.get(label, []) if not math.isnan(v)]
        if not got:
            return None
        return max(got) if self.worst else statistics.median(got)

    def text(self, value: float | None) -> str:
        return "-" if value is None else format(value, self.fmt)


class Results:
    def __init__(self) -> None:
        self.metrics: dict[tuple[str, str], Metric] = {}

    def add(self, version: Version, part: str, name: str, value: float, fmt: str = ".2f", goal: str = "",
            ok: Callable[[float], bool] | None = None, worst: bool = False) -> None:
        metric = self.metrics.setdefault((part, name), Metric(part, name, fmt, goal, ok, worst))
        metric.values.setdefault(version.label, []).append(value)

    def failed(self, part: str, exc: BaseException) -> None:
        self.metrics[(part, f"part failed: {type(exc).__name__}")] = Metric(part, f"part failed: {type(exc).__name__}")

    def print_table(self, versions: Sequence[Version], repeat: int) -> None:
        if not self.metrics:
            return
        current = versions[0].label
        against = versions[1].label if len(versions) > 1 else None
        rows = []
        for m in self.metrics.values():
            a = m.summary(current)
            b = m.summary(against) if against else None
            ratio = f"{a / b:.2f}" if a is not None and b not in (None, 0) else "-"
            verdict = "FAIL" if m.name.startswith("part failed") else ""
            if m.ok is not None and a is not None:
                verdict = judge(m.ok(a))
            rows.append((m.part, m.name + (" [max]" if m.worst else ""), m.text(a), m.text(b), ratio, m.goal, verdict))
        heads = ("part", "metric", current, against or "", "ratio", "goal", "result")
        keep = [0, 1, 2, 3, 4, 5, 6] if against else [0, 1, 2, 5, 6]
        table = [[r[i] for i in keep] for r in [heads, *rows]]
        widths = [max(len(r[i]) for r in table) for i in range(len(keep))]
        left = {keep.index(i) for i in (0, 1, 5)}
        print(f"\nmedian of {repeat} run(s) per version" + (f", alternated; ratio = {current}/{against}" if against
                                                            else ""))
        for n, r in enumerate(table):
            print("  ".join(f"{c:<{w}}" if i in left else f"{c:>{w}}"
                            for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
            if n == 0:
                print("-" * (sum(widths) + 2 * (len(widths) - 1)))


# -- small helpers ----------------------------------------------------------------------------------------


def alternate(versions: Sequence[Version], repeat: int) -> list[tuple[int, Version]]:
    """(run number, version): current, against, current, against, ..."""
    return [(i, v) for i in range(repeat) for v in versions]


def sched_seconds(pid: int) -> float:
    """CPU seconds of the live threads of `pid`, in ns resolution (/proc/<pid>/task/*/schedstat)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as fh:
                total += int(fh.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def thread_cpu_by_name(pid: int) -> dict[str, float]:
    """CPU seconds (utime+stime) per thread, keyed `name` (tid == pid: `main`; same names numbered)."""
    out: dict[str, float] = {}
    for tid in sorted(os.listdir(f"/proc/{pid}/task"), key=int):
        try:
            with open(f"/proc/{pid}/task/{tid}/comm") as fh:
                comm = fh.read().strip()
            with open(f"/proc/{pid}/task/{tid}/stat") as fh:
                rest = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        name = "main" if int(tid) == pid else comm
        key, n = name, 2
        while key in out:
            key, n = f"{name}#{n}", n + 1
        out[key] = (int(rest[11]) + int(rest[12])) / CLK_TCK
    return out


def log_text(line: str) -> str:
    """A daemon log line without its timestamp and level."""
    return line.split(" INFO ", 1)[-1]


def scan_ms(daemon: Daemon) -> float:
    """The duration the daemon's last "scan:" line states (nan when it has none or another format)."""
    match = SCAN_MS_RE.search(daemon.scan_lines[-1]) if daemon.scan_lines else None
    return float(match.group(1)) if match else float("nan")


def said(daemon: Daemon, most: int = 6) -> None:
    """Print the daemon's last "scan:" line, its "ready:" line and what it logged after ready."""
    tail = list(daemon.tail)
    after = tail[tail.index(daemon.ready_line) + 1:] if daemon.ready_line in tail else []
    for line in [*daemon.scan_lines[-1:], daemon.ready_line, *after[:most]]:
        print(f"      said: {log_text(line)}")
    if len(after) > most:
        print(f"      said: ... ({len(after) - most} more lines)")


def wait_quiet(daemon: Daemon, quiet: float = 1.0, timeout: float = 600.0) -> tuple[float, float]:
    """Wait until the daemon used under 5 ms of CPU in `quiet` seconds (work it does after ready, such
    as adopting a first start's files, is over). Returns (monotonic time the quiet began, CPU seconds
    of the process then)."""
    samples: list[tuple[float, float]] = []
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not daemon.alive():
            raise RuntimeError("task-pulsed exited after ready:\n" + "\n".join(daemon.tail))
        samples.append((time.monotonic(), sched_seconds(daemon.pid)))
        while len(samples) > 1 and samples[-1][0] - samples[1][0] >= quiet:
            samples.pop(0)
        if samples[-1][0] - samples[0][0] >= quiet and samples[-1][1] - samples[0][1] < 0.005:
            return samples[0][0], daemon.cpu_seconds()
        time.sleep(0.1)
    raise RuntimeError(f"task-pulsed still busy {timeout:.0f} s after ready")


class NotifyListener:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET, read by a thread."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(os.fspath(path))
        self.sock.settimeout(0.2)
        self.lock = threading.Lock()
        self.datagrams = 0
        self.watchdog: list[float] = []  # monotonic times of WATCHDOG=1
        self.ready_at: float | None = None
        self.status = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="notify-socket", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            at = time.monotonic()
            with self.lock:
                self.datagrams += 1
                for line in data.decode("utf-8", errors="replace").split("\n"):
                    if line == "WATCHDOG=1":
                        self.watchdog.append(at)
                    elif line == "READY=1" and self.ready_at is None:
                        self.ready_at = at
                    elif line.startswith("STATUS="):
                        self.status = line.removeprefix("STATUS=")

    def wait_ready(self, since: float, timeout: float = 2.0) -> str:
        """Wait a moment for READY=1 (sent just after the "ready:" line); says when it came."""
        end = time.monotonic() + timeout
        while self.ready_at is None and time.monotonic() < end:
            time.sleep(0.01)
        return f"READY=1 at +{self.ready_at - since:.2f} s" if self.ready_at is not None else "no READY=1"

    def counts(self) -> tuple[int, int]:
        with self.lock:
            return self.datagrams, len(self.watchdog)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()
        self.path.unlink(missing_ok=True)


class Bench:
    """What every part shares: the temp root, the environment, the versions, the files made once."""

    def __init__(self, root: Path, versions: Sequence[Version], results: Results, repeat: int) -> None:
        self.root, self.versions, self.results, self.repeat = root, versions, results, repeat
        home = root / "home"
        home.mkdir()
        self.base_env = daemon_env(home)
        self.exe = daemon_executable()
        self.writer_exe = self.exe.with_name("task-pulse")
        self._files: dict[tuple[int, float], Path] = {}
        self._occupant: dict[Path, str | None] = {}  # tasks dir -> the version whose .pulse is in it
        self._sockets = 0

    # -- task files written once per size, each version's .pulse kept aside -------------------------------

    def files(self, n: int, running: float) -> Path:
        key = (n, running)
        if key not in self._files:
            tasks_dir = self.root / f"files-{n}-{round(running * 100)}" / "tasks"
            started = time.monotonic()
            write_cold_files(tasks_dir, n, running, prefix="scale")
            print(f"  wrote {n} task files ({running:.0%} running) in {time.monotonic() - started:.1f} s: {tasks_dir}")
            self._files[key] = tasks_dir
            self._occupant[tasks_dir] = None
        return self._files[key]

    def _stash(self, tasks_dir: Path, label: str) -> Path:
        return tasks_dir.parent / f"pulse-{label}"

    def fresh_pulse(self, tasks_dir: Path, version: Version) -> None:
        """No .pulse at all: the next daemon's start is a first start."""
        shutil.rmtree(tasks_dir / ".pulse", ignore_errors=True)
        self._occupant[tasks_dir] = version.label

    def use_pulse(self, tasks_dir: Path, version: Version) -> None:
        """Put `version`'s own .pulse in place (the other version's moved aside), if it has one."""
        occupant = self._occupant.get(tasks_dir)
        if occupant == version.label:
            return
        here = tasks_dir / ".pulse"
        if here.exists():
            here.rename(self._stash(tasks_dir, occupant or "unknown"))
        if (kept := self._stash(tasks_dir, version.label)).exists():
            kept.rename(here)
        self._occupant[tasks_dir] = version.label

    def listener(self) -> NotifyListener:
        self._sockets += 1
        return NotifyListener(self.root / f"notify-{self._sockets}.sock")


# -- s) start, restart, memory, idle CPU ------------------------------------------------------------------


def rss_goal(running: float) -> float:
    return 60.0 if running <= 0.3 else 80.0


def bench_start_once(bench: Bench, version: Version, tasks_dir: Path, idle: float) -> dict[str, float]:
    env = version.env(bench.base_env)
    env["WATCHDOG_USEC"] = WATCHDOG_USEC
    got: dict[str, float] = {}

    bench.fresh_pulse(tasks_dir, version)
    notify = bench.listener()
    env["NOTIFY_SOCKET"] = os.fspath(notify.path)
    try:
        with running_daemon(bench.exe, tasks_dir, env, ready_timeout=600) as (daemon, ready):
            got["first"], got["first_scan_ms"] = ready, scan_ms(daemon)
            got["first_rss"] = daemon.status_kb("VmRSS") / MB
            ready_note = notify.wait_ready(daemon.spawned_at)
            quiet_at, cpu = wait_quiet(daemon)
            got["first_quiet"], got["first_hwm"] = quiet_at - daemon.spawned_at, daemon.status_kb("VmHWM") / MB
            print(f"    first start: ready in {ready:.2f} s ({ready_note}), RSS then {got['first_rss']:.1f} MB; "
                  f"CPU quiet from +{got['first_quiet']:.2f} s ({cpu:.2f} s of CPU by then), peak RSS "
                  f"{got['first_hwm']:.1f} MB")
            said(daemon)
    finally:
        notify.close()

    notify = bench.listener()
    env["NOTIFY_SOCKET"] = os.fspath(notify.path)
    try:
        with running_daemon(bench.exe, tasks_dir, env, ready_timeout=600) as (daemon, ready):
            rss_ready = daemon.status_kb("VmRSS") / MB
            got["restart"], got["restart_scan_ms"], got["rss_ready"] = ready, scan_ms(daemon), rss_ready
            ready_note = notify.wait_ready(daemon.spawned_at)
            print(f"    restart: ready in {ready:.2f} s ({ready_note}), RSS {rss_ready:.1f} MB")
            wall0, cpu0, fine0 = time.monotonic(), daemon.cpu_seconds(), sched_seconds(daemon.pid)
            counts0 = notify.counts()
            skip: tuple[float, float, float] | None = None
            end = wall0 + idle
            while (now := time.monotonic()) < end:
                time.sleep(min(0.5, end - now))
                if not daemon.alive():
                    raise RuntimeError("task-pulsed exited during the idle window:\n" + "\n".join(daemon.tail))
                if skip is None and time.monotonic() - wall0 >= IDLE_SKIP:
                    skip = (time.monotonic(), daemon.cpu_seconds(), sched_seconds(daemon.pid))
            wall1, cpu1, fine1 = time.monotonic(), daemon.cpu_seconds(), sched_seconds(daemon.pid)
            counts1 = notify.counts()
            got["rss_idle"], got["hwm"] = daemon.status_kb("VmRSS") / MB, daemon.status_kb("VmHWM") / MB
            assert skip is not None
            got["idle_pct"] = (cpu1 - skip[1]) / (wall1 - skip[0]) * 100
            got["idle_fine_pct"] = (fine1 - skip[2]) / (wall1 - skip[0]) * 100
            got["head_cpu"] = skip[1] - cpu0
            got["pings"] = counts1[1] - counts0[1]
            print(f"    idle {wall1 - wall0:.1f} s: CPU in the first {IDLE_SKIP:g} s {skip[1] - cpu0:.2f} s "
                  f"(schedstat {skip[2] - fine0:.3f} s), after that {cpu1 - skip[1]:.2f} s = {got['idle_pct']:.3f} % "
                  f"(schedstat {got['idle_fine_pct']:.4f} %; clock tick {1000 / CLK_TCK:.0f} ms)")
            said(daemon)
            print(f"      RSS at the end {got['rss_idle']:.1f} MB, peak (VmHWM) {got['hwm']:.1f} MB; threads "
                  f"{daemon.threads()}; sd_notify datagrams in the window {counts1[0] - counts0[0]} "
                  f"({got['pings']:.0f} WATCHDOG=1); last STATUS={notify.status!r}")
    finally:
        notify.close()
    return got


def bench_start(bench: Bench, n_files: int, running: float, idle: float) -> None:
    label = f"{n_files // 1000}k" if n_files >= 1000 else str(n_files)
    tag = f"{label}, {running:.0%} run"
    print(f"\n[s] start: {n_files} task files, {running:.0%} running; idle window {idle:g} s "
          f"(the first {IDLE_SKIP:g} s left out); under a stand-in systemd (NOTIFY_SOCKET, WATCHDOG_USEC)")
    tasks_dir = bench.files(n_files, running)
    goal_mb = rss_goal(running)
    for run, version in alternate(bench.versions, bench.repeat):
        print(f"  run {run + 1}, {version.label}:")
        got = bench_start_once(bench, version, tasks_dir, idle)
        add = bench.results.add
        add(version, "s", f"first start to ready (s) [{tag}]", got["first"], ".2f", "<= 4", lambda v: v <= 4)
        add(version, "s", f"  daemon's own first scan (ms) [{tag}]", got["first_scan_ms"], ".0f")
        add(version, "s", f"  first start until CPU quiet (s) [{tag}]", got["first_quiet"], ".2f", "(<= 4)",
            lambda v: v <= 4)
        add(version, "s", f"RSS after first start ready (MB) [{tag}]", got["first_rss"], ".1f")
        add(version, "s", f"VmHWM of the first start (MB) [{tag}]", got["first_hwm"], ".1f")
        add(version, "s", f"restart to ready (s) [{tag}]", got["restart"], ".2f", "<= 0.5", lambda v: v <= 0.5)
        add(version, "s", f"  daemon's own restart scan (ms) [{tag}]", got["restart_scan_ms"], ".0f")
        add(version, "s", f"RSS after restart ready (MB) [{tag}]", got["rss_ready"], ".1f", f"<= {goal_mb:g}",
            lambda v: v <= goal_mb)
        add(version, "s", f"RSS at end of idle (MB) [{tag}]", got["rss_idle"], ".1f", f"<= {goal_mb:g}",
            lambda v: v <= goal_mb)
        add(version, "s", f"VmHWM after restart (MB) [{tag}]", got["hwm"], ".1f", f"(<= {goal_mb:g})",
            lambda v: v <= goal_mb)
        add(version, "s", f"idle CPU after {IDLE_SKIP:g} s (%) [{tag}]", got["idle_pct"], ".3f", "<= 0.1",
            lambda v: v <= 0.1)
        add(version, "s", f"  same, by schedstat (%) [{tag}]", got["idle_fine_pct"], ".4f", "(<= 0.1)",
            lambda v: v <= 0.1)
        add(version, "s", f"  CPU in the first {IDLE_SKIP:g} s after ready (s) [{tag}]", got["head_cpu"], ".2f")
        add(version, "s", f"  WATCHDOG=1 pings in the idle window [{tag}]", got["pings"], ".0f")


def bench_starts(bench: Bench, n_files: int, fractions: Sequence[float], idle: float) -> None:
    for running in dict.fromkeys(fractions):  # --running 1.0 with --all-running: once
        bench_start(bench, n_files, running, idle)


# -- w) writes ----------------------------------------------------------------------------------------------


THREAD_NAMER = '''"""Written by tests/benchmarks/scale.py for one benchmark run: names each Python thread for the
kernel (prctl PR_SET_NAME), so /proc/<pid>/task/*/comm tells the daemon's threads apart."""
import sys
import threading

if sys.version_info < (3, 14):  # 3.14 names native threads itself
    try:
        import ctypes

        _prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError, ImportError):
        _prctl = None
    _inner = threading.Thread._bootstrap_inner

    def _named(self):
        if _prctl is not None:
            name = self.name
            if name.startswith("task-pulsed-"):
                name = name[len("task-pulsed-"):]
            elif name.startswith("ThreadPoolExecutor"):
                name = "pool" + name[len("ThreadPoolExecutor"):]
            elif name.startswith("Thread-") or name.startswith("Dummy-"):
                name = type(self).__name__
            _prctl(15, name.encode("utf-8", "replace")[:15], 0, 0, 0)
        _inner(self)

    threading.Thread._bootstrap_inner = _named
'''


def write_running_tasks(tasks_dir: Path, n: int, n_steps: int = 20) -> list[str]:
    """n running tasks of n_steps steps (task j: j % n_steps steps done, the next one running)."""
    tasks_dir.mkdir(parents=True)
    stamp = now_local().isoformat()
    ids = []
    for j in range(n):
        task_id = f"w-task-{j:04d}"
        done = j % n_steps
        steps: list[dict[str, object]] = []
        for k in range(n_steps):
            if k < done:
                steps.append({"name": f"step {k}", "status": "done", "startedAt": stamp, "finishedAt": stamp,
                              "message": f"step {k} ok"})
            elif k == done:
                steps.append({"name": f"step {k}", "status": "running", "startedAt": stamp})
            else:
                steps.append({"name": f"step {k}", "status": "pending"})
        task = {"taskId": task_id, "taskName": f"write load {j}", "status": "running", "startedAt": stamp,
                "updatedAt": stamp, "finishedAt": None, "steps": steps, "error": None, "result": None, "rev": 1,
                "stallSeconds": 86400}
        (tasks_dir / f"{task_id}.json").write_text(json.dumps(task, ensure_ascii=False, indent=2), encoding="utf-8")
        ids.append(task_id)
    return ids


def writer_process(tasks_dir: str, task_ids: list[str], writer_no: int, rate: float, count: int, staged: bool,
                   barrier: threading.Barrier, out_path: str) -> None:
    """One writer (run in its own process): `count` writes at `rate` per second, round robin over
    `task_ids`, each one a heartbeat-like change replaced atomically; the write times go to `out_path`.

    `staged`: every write's temp file is written (and synced to disk) before the start, so a write in
    the window is only its os.replace. Else each write serialises the task, writes the temp file and
    replaces (what a writer really does, but on a slow disk this costs the writer more than the
    daemon, and a 2-core machine cannot run both at 3000 writes/s)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    tmp_dir = os.path.join(tasks_dir, ".pulse", "tmp")
    os.makedirs(tmp_dir, mode=0o700, exist_ok=True)
    tasks, running, paths, tmps = [], [], [], []
    for task_id in task_ids:
        path = os.path.join(tasks_dir, f"{task_id}.json")
        with open(path, encoding="utf-8") as fh:
            task = json.load(fh)
        tasks.append(task)
        running.append(next(s for s in task["steps"] if s["status"] == "running"))
        paths.append(path)
        tmps.append(os.path.join(tmp_dir, f"{task_id}.tmp"))
    n = len(tasks)

    def change(i: int) -> str:
        """Write i: the task it goes to gets its token; returns the serialised task."""
        k = i % n
        running[k]["message"] = f"w-{writer_no}-{i}"
        tasks[k]["updatedAt"] = now_local().isoformat()
        tasks[k]["rev"] += 1
        return json.dumps(tasks[k], ensure_ascii=False)

    staged_paths: list[str] = []
    stage_s = 0.0
    if staged:
        started = time.monotonic()
        for i in range(count):
            staged_paths.append(os.path.join(tmp_dir, f"{task_ids[i % n]}.{writer_no}-{i}.tmp"))
            with open(staged_paths[-1], "w", encoding="utf-8") as fh:
                fh.write(change(i))
        os.sync()  # no dirty data left for the window's renames to flush
        stage_s = time.monotonic() - started
    times = [0.0] * count
    behind = 0.0
    barrier.wait(600)
    cpu0 = os.times()
    t0 = time.time()
    for i in range(count):
        pause = t0 + i / rate - time.time()
        if pause > 0.0002:
            time.sleep(pause)
        elif pause < 0:
            behind = max(behind, -pause)
        k = i % n
        if staged:
            times[i] = time.time()
            os.replace(staged_paths[i], paths[k])
        else:
            data = change(i)
            with open(tmps[k], "w", encoding="utf-8") as fh:
                fh.write(data)
            times[i] = time.time()
            os.replace(tmps[k], paths[k])
    cpu1 = os.times()
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump({"t0": t0, "times": times, "behind": behind, "stage_s": stage_s,
                   "cpu": cpu1.user + cpu1.system - cpu0.user - cpu0.system}, fh)


@dataclass
class WriteRun:
    writes: int = 0
    writes_per_s: float = 0.0
    notes_per_s: float = 0.0
    lat: list[float] = field(default_factory=list)
    missing: int = 0
    lost: int = 0
    cpu_per_write_ms: float = 0.0
    writer_cpu_per_write_ms: float = 0.0
    threads: dict[str, float] = field(default_factory=dict)
    behind: float = 0.0
    stage_s: float = 0.0


def bench_writes_once(bench: Bench, version: Version, n_tasks: int, writers: int, rate: float, duration: float,
                      staged: bool, name_threads: bool, tag: str) -> WriteRun:
    run_dir = bench.root / f"w-{tag}-{version.label}-{time.monotonic_ns()}"
    tasks_dir = run_dir / "tasks"
    ids = write_running_tasks(tasks_dir, n_tasks)
    hook = run_dir / "hook"
    if name_threads:
        hook.mkdir()
        (hook / "sitecustomize.py").write_text(THREAD_NAMER, encoding="utf-8")
    env = version.env(bench.base_env, *([hook] if name_threads else []))
    env["TASK_PULSE_PROGRESS_INTERVAL"] = PROGRESS_INTERVAL
    per_writer = [ids[k::writers] for k in range(writers)]
    counts = [max(1, round(rate / writers * duration)) for _ in range(writers)]
    total = sum(counts)
    result = WriteRun(writes=total)
    ctx = mp.get_context("spawn")
    with running_daemon(bench.exe, tasks_dir, env, ready_timeout=120) as (daemon, ready):
        barrier = ctx.Barrier(writers + 1)
        outs = [run_dir / f"writer-{k}.json" for k in range(writers)]
        procs = [ctx.Process(target=writer_process, name=f"scale-writer-{k}",
                             args=(os.fspath(tasks_dir), per_writer[k], k, rate / writers, counts[k], staged, barrier,
                                   os.fspath(outs[k])), daemon=True) for k in range(writers)]
        for p in procs:
            p.start()
            WRITERS.append(p)
        db = StateDb(tasks_dir)
        try:
            quiet_at, _ = wait_quiet(daemon)  # a first start may adopt its files after ready
            settle = quiet_at - daemon.spawned_at
            barrier.wait(600)  # every writer has loaded its tasks (and staged its writes)
            cpu0, threads0 = daemon.cpu_seconds(), thread_cpu_by_name(daemon.pid)
            for p in procs:
                p.join(duration * 5 + 60)
                if p.exitcode != 0:
                    raise RuntimeError(f"writer {p.name} exited with {p.exitcode}")
            data = [json.loads(o.read_text(encoding="utf-8")) for o in outs]
            written: dict[str, float] = {}
            last: dict[str, str] = {}  # task id -> its last token
            for k, d in enumerate(data):
                for i, at in enumerate(d["times"]):
                    token = f"w-{k}-{i}"
                    written[token] = at
                    last[per_writer[k][i % len(per_writer[k])]] = token
            finals = list(last.values())
            query = ("SELECT count(*) FROM notifications WHERE kind = 'progress' "
                     "AND json_extract(data, '$.message') LIKE 'w-%'")
            final_q = ("SELECT count(*) FROM notifications WHERE kind = 'progress' AND json_extract(data, '$.message') "
                       f"IN ({','.join('?' * len(finals))})")
            deadline = time.monotonic() + MISSING_WAIT
            seen, stable_since = -1, time.monotonic()
            while True:  # complete: every token in, or every task's last one in and nothing new for 1 s
                got = db.db.execute(query).fetchone()[0]
                now = time.monotonic()
                if got != seen:
                    seen, stable_since = got, now
                if got >= total or now >= deadline:
                    break
                if now - stable_since >= 1.0 and db.db.execute(final_q, finals).fetchone()[0] == len(finals):
                    break
                time.sleep(0.05)
            time.sleep(CHECKPOINT_TAIL)
            cpu1, threads1 = daemon.cpu_seconds(), thread_cpu_by_name(daemon.pid)
            rows = db.db.execute("SELECT created_at, json_extract(data, '$.message') FROM notifications "
                                 "WHERE kind = 'progress' AND json_extract(data, '$.message') LIKE 'w-%'").fetchall()
        finally:
            db.close()
            stop_writers(procs)
        log_lines = daemon.lines
    created: dict[str, float] = {}
    for created_at, token in rows:
        if token in written:
            created[token] = min(created.get(token, math.inf), epoch(created_at))
    t0 = min(d["t0"] for d in data)
    t_last = max(max(d["times"]) for d in data)
    result.writes_per_s = total / max(t_last - t0, 1e-9)
    result.notes_per_s = len(created) / max(max(created.values(), default=t0) - t0, 1e-9)
    result.lat = sorted((created[t] - written[t]) * 1000 for t in created)
    result.missing = total - len(created)
    result.lost = sum(1 for t in finals if t not in created)
    result.cpu_per_write_ms = (cpu1 - cpu0) / total * 1000
    result.writer_cpu_per_write_ms = sum(d["cpu"] for d in data) / total * 1000
    result.behind = max(d["behind"] for d in data)
    result.stage_s = max(d["stage_s"] for d in data)
    result.threads = {k: v - threads0.get(k, 0.0) for k, v in threads1.items()}
    cpu = cpu1 - cpu0
    lat = result.lat
    staging = f"; writes staged in {result.stage_s:.1f} s before the start" if staged else ""
    print(f"    ready in {ready:.2f} s, CPU quiet from +{settle:.2f} s{staging}")
    print(f"    {total} writes by {writers} writer(s) in {t_last - t0:.2f} s = "
          f"{result.writes_per_s:.0f}/s (a writer at most {result.behind * 1000:.0f} ms behind its schedule; "
          f"writer CPU {result.writer_cpu_per_write_ms * 1000:.0f} us per write)")
    print(f"    {len(created)} notifications matched = {result.notes_per_s:.0f}/s; missing {result.missing} "
          f"({result.missing - result.lost} coalesced with a later write of the task, {result.lost} lost)")
    if lat:
        print(f"    latency (ms): p50 {percentile(lat, 50):.2f}  p99 {percentile(lat, 99):.2f}  "
              f"p99.9 {percentile(lat, 99.9):.2f}  max {lat[-1]:.2f}  min {lat[0]:.2f}  "
              f"({sum(1 for x in lat if x > 20)} over 20 ms, {sum(1 for x in lat if x < 0)} below 0: ms-truncated)")
    shares = sorted(result.threads.items(), key=lambda kv: -kv[1])
    print(f"    daemon CPU {cpu:.2f} s = {result.cpu_per_write_ms * 1000:.0f} us per write, "
          f"{cpu / max(len(created), 1) * 1e6:.0f} us per notification; by thread: "
          + ", ".join(f"{k} {v:.2f} s ({v / cpu * 100 if cpu else 0:.0f} %)" for k, v in shares))
    print(f"    {log_lines} daemon log lines")
    shutil.rmtree(run_dir, ignore_errors=True)
    return result


def bench_writes(bench: Bench, n_tasks: int, writers: int, rate: float, duration: float, slow_rate: float,
                 slow_duration: float, staged: bool, name_threads: bool) -> None:
    rows = [("fast", writers, rate, duration), ("slow", 1, slow_rate, slow_duration)]
    add = bench.results.add
    mode = "staged: only the os.replace in the window" if staged else "inline: serialise, write, replace"
    for tag, n_writers, r, d in rows:
        print(f"\n[w] writes: {n_tasks} running tasks x 20 steps; {n_writers} writer process(es), {r:g} writes/s for "
              f"{d:g} s, {mode}; "
              f"TASK_PULSE_PROGRESS_INTERVAL={PROGRESS_INTERVAL} (one progress per write)")
        at = f"@{r:g}/s"
        for run, version in alternate(bench.versions, bench.repeat):
            print(f"  run {run + 1}, {version.label}:")
            got = bench_writes_once(bench, version, n_tasks, n_writers, r, d, staged, name_threads, tag)
            lat = got.lat or [math.nan]
            add(version, "w", f"writes/s achieved {at}", got.writes_per_s, ".0f", f">= {r * 0.95:g}",
                lambda v, r=r: v >= r * 0.95)
            add(version, "w", f"notifications/s {at}", got.notes_per_s, ".0f")
            add(version, "w", f"latency p50 (ms) {at}", percentile(lat, 50), ".2f")
            if tag == "fast":
                add(version, "w", f"latency p99 (ms) {at}", percentile(lat, 99), ".2f", "<= 20", lambda v: v <= 20)
                add(version, "w", f"latency p99.9 (ms) {at}", percentile(lat, 99.9), ".2f")
            else:
                add(version, "w", f"latency p99 (ms) {at}", percentile(lat, 99), ".2f")
                add(version, "w", f"latency p99.9 (ms) {at}", percentile(lat, 99.9), ".2f", "<= 5", lambda v: v <= 5)
            add(version, "w", f"latency max (ms) {at}", max(lat), ".2f")
            add(version, "w", f"notifications missing {at}", got.missing, ".0f", "0", lambda v: v == 0, worst=True)
            add(version, "w", f"daemon CPU per write (ms) {at}", got.cpu_per_write_ms, ".3f", "<= 0.3",
                lambda v: v <= 0.3)
            add(version, "w", f"  daemon CPU per notification (ms) {at}",
                got.cpu_per_write_ms * got.writes / max(got.writes - got.missing, 1), ".3f")
            cpu = sum(got.threads.values())
            for name, value in sorted(got.threads.items(), key=lambda kv: -kv[1]):
                if value > 0 or name in ("main", "worker"):
                    add(version, "w", f"  {name} thread share (%) {at}", value / cpu * 100 if cpu else math.nan,
                        ".0f")
            add(version, "w", f"  writer CPU per write (ms) {at}", got.writer_cpu_per_write_ms, ".3f")


# -- t) status ----------------------------------------------------------------------------------------------


def timed_status(bench: Bench, version: Version, tasks_dir: Path, as_json: bool) -> tuple[float, int, int]:
    """Wall seconds of one `task-pulse --dir D status [--json]` process, its output lines and bytes."""
    argv = [os.fspath(bench.writer_exe), "--dir", os.fspath(tasks_dir), "status", *(["--json"] if as_json else [])]
    started = time.monotonic()
    out = subprocess.run(argv, env=version.env(bench.base_env), stdin=subprocess.DEVNULL, capture_output=True,
                         timeout=600)
    took = time.monotonic() - started
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {out.returncode}: {out.stderr.decode(errors='replace')[-500:]}")
    return took, out.stdout.count(b"\n"), len(out.stdout)


def bench_status(bench: Bench, n_files: int, running: float) -> None:
    label = f"{n_files // 1000}k" if n_files >= 1000 else str(n_files)
    print(f"\n[t] status: `task-pulse --dir D status [--json]` on {n_files} task files ({running:.0%} running), "
          "the daemon stopped, then running")
    tasks_dir = bench.files(n_files, running)
    add = bench.results.add
    for run, version in alternate(bench.versions, bench.repeat):
        bench.use_pulse(tasks_dir, version)
        if not (tasks_dir / ".pulse" / "state.db").exists():  # part s did not run: let the daemon run there once
            with running_daemon(bench.exe, tasks_dir, version.env(bench.base_env), ready_timeout=600):
                pass
        figures: list[tuple[str, float, int, int]] = []
        for as_json in (False, True):
            figures.append(("stopped", *timed_status(bench, version, tasks_dir, as_json)))
        with running_daemon(bench.exe, tasks_dir, version.env(bench.base_env), ready_timeout=600) as (daemon, _):
            time.sleep(1.0)
            for as_json in (False, True):
                figures.append(("running", *timed_status(bench, version, tasks_dir, as_json)))
        print(f"  run {run + 1}, {version.label}: " + "; ".join(
            f"{state} {'--json' if i % 2 else 'text'} {took:.2f} s, {lines} lines, {size} bytes"
            for i, (state, took, lines, size) in enumerate(figures)))
        for i, (state, took, lines, size) in enumerate(figures):
            what = "status --json" if i % 2 else "status"
            add(version, "t", f"{what}, daemon {state} (s) [{label}]", took, ".2f", "<= 1", lambda v: v <= 1)
            if state == "stopped":
                add(version, "t", f"  {what} output {'bytes' if i % 2 else 'lines'} [{label}]",
                    size if i % 2 else lines, ".0f")


# -- main ------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 2000 files, idle 10 s, writes for 3 s (slow row 5 s), repeat 1")
    parser.add_argument("--parts", default="swt", help="which parts to run, e.g. 'sw' (default swt)")
    parser.add_argument("--against", type=Path, metavar="DIR",
                        help="also run the code in DIR (holding task_pulse/ and task_pulsed/) via PYTHONPATH=DIR")
    parser.add_argument("--repeat", type=int, help="runs per version, alternated (default 3, quick 1)")
    parser.add_argument("--tmp", type=Path, help="parent of the temp dirs (default: the system temp dir)")
    parser.add_argument("--files", type=int, help="[s, t] task files (default 100000, quick 2000)")
    parser.add_argument("--running", type=float, default=0.3, help="[s, t] fraction running (default 0.3)")
    parser.add_argument("--all-running", action="store_true", help="[s] run again with every task running")
    parser.add_argument("--idle", type=float, help="[s] idle seconds after the restart's ready (default 30, quick 10)")
    parser.add_argument("--tasks", type=int, default=300, help="[w] running tasks written to (default 300)")
    parser.add_argument("--writers", type=int, default=3, help="[w] writer processes (default 3)")
    parser.add_argument("--rate", type=float, default=3000, help="[w] writes per second in total (default 3000)")
    parser.add_argument("--duration", type=float, help="[w] seconds of writing (default 10, quick 3)")
    parser.add_argument("--slow-rate", type=float, default=200, help="[w] second row's rate, 1 writer (default 200)")
    parser.add_argument("--duration-slow", type=float, help="[w] seconds of the second row (default 30, quick 5)")
    parser.add_argument("--inline-writes", action="store_true",
                        help="[w] serialise and write each temp file inside the window (default: staged before it)")
    parser.add_argument("--no-thread-names", action="store_true",
                        help="[w] no sitecustomize naming the daemon's threads (they are then numbered in start order)")
    args = parser.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    n_files = args.files if args.files is not None else (2000 if args.quick else 100_000)
    idle = args.idle if args.idle is not None else (10 if args.quick else 30)
    duration = args.duration if args.duration is not None else (3 if args.quick else 10)
    slow_duration = args.duration_slow if args.duration_slow is not None else (5 if args.quick else 30)
    if unknown := set(args.parts) - set("swt"):
        parser.error(f"unknown part(s) {''.join(sorted(unknown))!r}")
    if repeat < 1 or n_files < 1 or args.tasks < 1 or args.writers < 1 or args.rate <= 0 or args.slow_rate <= 0:
        parser.error("--repeat, --files, --tasks, --writers and the rates must be positive")
    if not 0 <= args.running <= 1:
        parser.error("--running is a fraction between 0 and 1")
    if idle <= IDLE_SKIP:
        parser.error(f"--idle must be over {IDLE_SKIP:g} s (the first {IDLE_SKIP:g} s are left out)")
    if args.writers > args.tasks:
        parser.error("--writers must not exceed --tasks (each writer has tasks of its own)")
    versions = [Version("current")]
    if args.against is not None:
        against = args.against.resolve()
        if not (against / "task_pulse").is_dir() or not (against / "task_pulsed").is_dir():
            parser.error(f"--against {args.against}: needs task_pulse/ and task_pulsed/ in it")
        versions.append(Version("against", against))

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(f"interrupted by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    root = Path(tempfile.mkdtemp(prefix="tp-scale-", dir=args.tmp))
    results = Results()
    failed = False
    try:
        bench = Bench(root, versions, results, repeat)
        print(f"scale: {bench.exe}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; temp dir {root}; "
              f"{repeat} run(s) per version")
        for version in versions:
            print(f"  {version.label}: {version.describe(bench.base_env)}")
        parts: dict[str, Callable[[], None]] = {
            "s": lambda: bench_starts(bench, n_files, [args.running, *([1.0] if args.all_running else [])], idle),
            "w": lambda: bench_writes(bench, args.tasks, args.writers, args.rate, duration, args.slow_rate,
                                      slow_duration, not args.inline_writes, not args.no_thread_names),
            "t": lambda: bench_status(bench, n_files, args.running),
        }
        for key in args.parts:
            try:
                parts[key]()
            except Exception as exc:  # report, clean up, go on with the next part
                failed = True
                traceback.print_exc()
                results.failed(key, exc)
                Daemon.stop_all()
        results.print_table(versions, repeat)
        for anomaly in ANOMALIES:
            print(f"ANOMALY: {anomaly}")
    finally:
        stop_writers()
        Daemon.stop_all()
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
