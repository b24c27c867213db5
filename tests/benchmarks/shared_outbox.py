"""Shared PostgreSQL outbox beside the embedded SQLite one (issue 14): notifications/s, write → outbox latency.

The same workload in one run of this script, the two modes alternated.

Workload (one "run"): --daemons (3) real `task-pulsed` processes (the console script beside
`sys.executable`), each on a fresh tasks dir of its own, and one writer process per dir (multiprocessing,
spawn) that creates --tasks (100) tasks of --steps (20) steps and then advances them step by step, round
robin over its tasks, as fast as it can (or at --rate writes/s per writer). Writes are
`task_pulse.store.TaskStore.create` / `.update` (locked, fsync'd, atomic replace: what `task-pulse` does);
`time.time()` is taken just before each one. Each `next` finishes the running step with a unique message
`b-<writer>-<task>-<step>` (its `step_done` notification's data.message); the last step is finished by
`done` (Task.finish, as `task-pulse done` does: the step's end is told by the `done` notification, no
`step_done`). So each task gives 1 `started` (matched by task id), steps - 1 `step_done` (matched by
message) and 1 `done` (matched by task id): expected = daemons x tasks x (steps + 1).

  sqlite      the daemons as they are by default (no --state): the outbox is each daemon's own
              `<tasks>/.pulse/state.db`; latency = its `created_at` (ISO UTC, ms-truncated: a value may
              read up to 1 ms low) minus the write time.
  postgresql  the same, each daemon with `--state <url> --host-name h<i>`, all on one fresh database
              of a PostgreSQL cluster this script starts in a temp dir (tests/postgres.py's PgServer:
              user nobody, a free port of 127.0.0.1, fsync = off unless --pg-fsync). The outbox is
              `task_pulse.notifications`; latency = its `stored_at` (clock_timestamp() of the insert, same
              machine clock) minus the write time: the notification had to reach the shared outbox. The
              local commit latency (local `created_at`) and the forwarding lag (`stored_at` - local
              `created_at`) are given beside it.

Each run waits for every daemon's "ready:" line (and, for postgresql, its forwarder's "forwarding as host"
line) and for the daemons' CPU to go quiet before the writers start together (a barrier). Reported per
run, then as medians over --repeat (3) runs per mode, the modes alternated (sqlite, postgresql, sqlite,
...), with the ratio postgresql/sqlite:
  notifications/s   expected count / (last outbox timestamp - first write), i.e. from the first write
                    until the outbox holds everything (polled every 50 ms until then; the figure
                    uses the outbox's own timestamps, not the poll)
  latency           write -> outbox p50/p99/max over every notification (started, step_done, done)
  missing           expected notifications not in the outbox once it is complete (or --deadline s
                    after the last write) and the daemons are quiet: must be 0 [max over runs]
  duplicated        rows beyond the first for one write (same host, task, kind and message), plus
                    (host, key) pairs stored twice in PostgreSQL: must be 0 [max over runs]
  unexpected        rows that match no write (e.g. a `progress`): reported, expected 0
  daemon CPU        utime+stime of the daemons (/proc/<pid>/stat) from the writers' start until the
                    daemons are quiet again, summed, per notification; also by thread (worker, forwarder,
                    checkpointer, ...: the daemons get scale.py's `sitecustomize` on PYTHONPATH, naming
                    each thread for the kernel; --no-thread-names leaves it out)
  PostgreSQL CPU    the server's own processes over the same window (the postmaster of
                    <data>/postmaster.pid, its live children and its reaped ones), less the backend
                    of this script's polling connection, per notification

Run from the repository root with the project's virtualenv (psycopg installed, Debian's postgresql
package for initdb and pg_ctl). The defaults (3 x 100 x 20, 3 runs per mode: 6 runs of 6300
notifications) take a few minutes on a 2-CPU machine; --quick is a smoke run of a few seconds per mode:

    .venv/bin/python tests/benchmarks/shared_outbox.py --quick
    .venv/bin/python tests/benchmarks/shared_outbox.py
    .venv/bin/python tests/benchmarks/shared_outbox.py --daemons 3 --tasks 30 --steps 10 --repeat 1
    .venv/bin/python tests/benchmarks/shared_outbox.py --rate 200 --pg-fsync

The script stops every daemon and writer process it started and the PostgreSQL server, and removes its
temp dirs, also on error or Ctrl-C. Exit status 0 when every run completed with nothing missing or
duplicated, 1 otherwise.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import ExitStack, suppress
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from _stats import percentile
from daemon_perf import ANOMALIES, CLK_TCK, Daemon, advance_with, daemon_env, daemon_executable, epoch, now_local
from scale import THREAD_NAMER, WRITERS, Results, Version, stop_writers, thread_cpu_by_name, wait_quiet

from task_pulse.model import Task
from task_pulse.store import TaskStore

if TYPE_CHECKING:
    from multiprocessing.synchronize import Barrier

    import psycopg

    from tests.postgres import PgServer

REPO = Path(__file__).resolve().parents[2]
MODES = ("sqlite", "postgresql")
POLL = 0.05  # seconds between two looks at the outbox while waiting for it to be complete
FORWARDING_MARK = "forwarding as host"

# Writer processes (terminated on the way out, whatever happens).


# -- the writers ---------------------------------------------------------------------------------------------


def finishing(result: str) -> Callable[[Task], None]:
    """`task-pulse done ID RESULT`: the task and its running step done (Task.finish)."""

    def change(task: Task) -> None:
        task.finish(now_local().isoformat(), result)

    return change


def task_ids(n_tasks: int) -> list[str]:
    return [f"b-{j:04d}" for j in range(n_tasks)]


def writer_process(tasks_dir: str, writer_no: int, n_tasks: int, n_steps: int, rate: float | None,
                   barrier: Barrier, out_path: str) -> None:
    """One writer (its own process): create the tasks, then advance them step by step, round robin, each
    write timed just before it; the (task id, kind, message, time) of each write go to `out_path`."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops us
    store = TaskStore(tasks_dir)
    store.ensure_dirs()
    step_names = [f"step {s}" for s in range(n_steps)]
    ids = task_ids(n_tasks)
    writes: list[tuple[str, str, str, float]] = []
    barrier.wait(600)
    cpu0 = os.times()
    t0 = time.time()

    def pace() -> None:
        if rate:
            pause = t0 + len(writes) / rate - time.time()
            if pause > 0.0002:
                time.sleep(pause)

    for j, task_id in enumerate(ids):
        pace()
        at = time.time()
        made = store.create(f"bench {writer_no}-{j}", step_names, now_local(), task_id=task_id)
        if made.task_id != task_id:
            raise RuntimeError(f"task id {task_id} taken: got {made.task_id}")
        writes.append((task_id, "started", "", at))
    for s in range(n_steps):
        for j, task_id in enumerate(ids):
            pace()
            token = f"b-{writer_no}-{j}-{s}"
            last = s + 1 == n_steps
            change = finishing(token) if last else advance_with(token)
            at = time.time()
            store.update(task_id, change, now_local())
            writes.append((task_id, "done", "", at) if last else (task_id, "step_done", token, at))
    cpu1 = os.times()
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump({"t0": t0, "end": time.time(), "writes": writes,
                   "cpu": cpu1.user + cpu1.system - cpu0.user - cpu0.system}, fh)


# -- PostgreSQL -------------------------------------------------------------------------------------------------


def _repo_on_path() -> None:
    """tests/postgres.py is imported as `tests.postgres`: the repository root must be on sys.path."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def start_pg(base: Path, fsync: bool) -> PgServer:
    """tests/postgres.py's throwaway cluster in `base` (its pytest.skip turned into a RuntimeError)."""
    _repo_on_path()
    import pytest

    from tests.postgres import PgServer

    try:
        server = PgServer(base)
        if fsync:  # PgServer writes fsync = off; a later line wins
            with (server.data / "postgresql.conf").open("a") as conf:
                conf.write("fsync = on\nsynchronous_commit = on\n")
            server.stop()
            server.start()
    except pytest.skip.Exception as exc:
        raise RuntimeError(f"cannot start PostgreSQL: {exc}") from None
    return server


def stop_pg(server: PgServer | None, base: Path) -> None:
    """Fast shutdown; immediate if that fails (also when PgServer never finished starting)."""
    _repo_on_path()
    from tests.postgres import _pg_bin

    data = base / "data"
    if not (data / "postmaster.pid").exists():
        return
    pg_ctl = (server.pg_ctl if server is not None else None) or _pg_bin("pg_ctl") or "pg_ctl"
    as_user = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []
    for mode in ("fast", "immediate"):
        with suppress(subprocess.SubprocessError, OSError):
            done = subprocess.run([*as_user, pg_ctl, "-D", os.fspath(data), "-m", mode, "-w", "-t", "30", "stop"],
                                  capture_output=True, timeout=60)
            if done.returncode == 0 and not (data / "postmaster.pid").exists():
                return


def _proc_stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 on (state); None when the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pg_cpu(data: Path, exclude: Sequence[int] = ()) -> dict[int, float]:
    """CPU seconds of the server: {pid: seconds} for the postmaster (its own and its reaped children's,
    keyed by its pid) and each live child, less the `exclude`d ones."""
    try:
        postmaster = int((data / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    out: dict[int, float] = {}
    rest = _proc_stat(postmaster)
    if rest is None:
        return {}
    out[postmaster] = sum(int(x) for x in rest[11:15]) / CLK_TCK  # utime, stime, cutime, cstime
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) in exclude:
            continue
        rest = _proc_stat(int(name))
        if rest is not None and int(rest[1]) == postmaster:
            out[int(name)] = (int(rest[11]) + int(rest[12])) / CLK_TCK
    return out


def pg_cpu_delta(before: dict[int, float], after: dict[int, float]) -> float:
    """Seconds spent between two samples of pg_cpu: a child gone since is counted in the postmaster's
    reaped-children time, one born since is all in the window."""
    return sum(after.values()) - sum(before.values()) if before and after else math.nan


def drop_database(admin_url: str, url: str) -> None:
    import psycopg

    name = url.rsplit("/", 1)[1]
    with suppress(psycopg.Error), psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- one run ------------------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """What one run measured."""

    mode: str
    expected: int
    rows: int = 0
    missing: int = 0
    duplicated: int = 0
    unexpected: int = 0
    notes_per_s: float = math.nan
    writes_per_s: float = math.nan
    tail_s: float = math.nan  # last outbox timestamp - last write
    lat: list[float] = field(default_factory=list)  # write -> outbox (ms)
    local_lat: list[float] = field(default_factory=list)  # write -> local commit (ms)
    lag: list[float] = field(default_factory=list)  # local commit -> PostgreSQL (ms)
    not_forwarded: int = 0  # local rows not in PostgreSQL (and the reverse)
    daemon_cpu: float = math.nan
    threads: dict[str, float] = field(default_factory=dict)  # the daemons' CPU seconds by thread name, summed
    pg_cpu: float = math.nan
    writer_cpu: float = math.nan
    notes: list[str] = field(default_factory=list)


@dataclass
class Setup:
    root: Path
    exe: Path
    env: dict[str, str]
    daemons: int
    tasks: int
    steps: int
    rate: float | None
    deadline: float
    server: PgServer | None = None


def match_key(host: str, task_id: str, kind: str, data: str) -> tuple[str, str, str, str]:
    """(host, task id, kind, message): a step_done's message tells it from the task's other steps."""
    message = ""
    if kind == "step_done":
        with suppress(ValueError, AttributeError):
            message = json.loads(data).get("message") or ""
    return host, task_id, kind, message


def local_rows(tasks_dir: Path) -> list[tuple[str, str, str, str, str]]:
    """(key, task id, kind, created_at, data) of every row of a daemon's own outbox."""
    db = sqlite3.connect(f"file:{tasks_dir / '.pulse' / 'state.db'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT key, task_id, kind, created_at, data FROM notifications ORDER BY seq").fetchall()
    finally:
        db.close()


class Poller:
    """Counts the outbox's rows while the run goes on: the daemons' own dbs, or the shared one."""

    def __init__(self, dirs: Sequence[Path], url: str | None) -> None:
        self.dbs = [sqlite3.connect(f"file:{d / '.pulse' / 'state.db'}?mode=ro", uri=True, timeout=10,
                                    isolation_level=None) for d in dirs]
        self.pg: psycopg.Connection[Any] | None = None
        self.backend = 0
        if url is not None:
            import psycopg

            self.pg = psycopg.connect(url, autocommit=True, application_name="shared_outbox-bench")
            row = self.pg.execute("SELECT pg_backend_pid()").fetchone()
            self.backend = int(row[0]) if row else 0

    def count(self) -> int:
        if self.pg is not None:
            row = self.pg.execute("SELECT count(*) FROM task_pulse.notifications").fetchone()
            return int(row[0]) if row else 0
        return sum(db.execute("SELECT count(*) FROM notifications").fetchone()[0] for db in self.dbs)

    def close(self) -> None:
        for db in self.dbs:
            db.close()
        if self.pg is not None:
            self.pg.close()


def run_once(setup: Setup, mode: str, run_no: int) -> Outcome:
    n = setup.daemons
    expected = n * setup.tasks * (setup.steps + 1)
    out = Outcome(mode, expected)
    run_dir = setup.root / f"{mode}-{run_no}"
    dirs = [run_dir / f"h{i}" / "tasks" for i in range(n)]
    url = setup.server.new_database() if mode == "postgresql" and setup.server is not None else None
    if mode == "postgresql" and url is None:
        raise RuntimeError("no PostgreSQL server")
    ctx = mp.get_context("spawn")
    daemons: list[Daemon] = []
    procs: list[mp.process.BaseProcess] = []
    poller: Poller | None = None
    try:
        with ExitStack() as stack:
            for i, tasks_dir in enumerate(dirs):
                tasks_dir.mkdir(parents=True)
                extra = ["--state", url, "--host-name", f"h{i}"] if url else []
                daemon = Daemon(setup.exe, tasks_dir, setup.env, extra)
                daemon.start()
                stack.callback(_stop_daemon, daemon)
                daemons.append(daemon)
            for daemon in daemons:
                daemon.wait_ready(120)
            if url:
                _wait_forwarding(daemons, 30)
            for daemon in daemons:
                wait_quiet(daemon, timeout=60)
            outs = [run_dir / f"writer-{i}.json" for i in range(n)]
            barrier = ctx.Barrier(n + 1)
            procs = [ctx.Process(target=writer_process, name=f"shared-outbox-writer-{i}", daemon=True,
                                 args=(os.fspath(dirs[i]), i, setup.tasks, setup.steps, setup.rate, barrier,
                                       os.fspath(outs[i]))) for i in range(n)]
            for p in procs:
                p.start()
                WRITERS.append(p)
            poller = Poller(dirs, url)
            data_dir = setup.server.data if url and setup.server is not None else None
            cpu0 = {d.pid: d.cpu_seconds() for d in daemons}
            threads0 = {d.pid: thread_cpu_by_name(d.pid) for d in daemons}
            pg0 = pg_cpu(data_dir, [poller.backend]) if data_dir else {}
            barrier.wait(600)  # go
            writers_done: float | None = None
            got = 0
            while True:
                if writers_done is None and all(not p.is_alive() for p in procs):
                    writers_done = time.monotonic()
                    for p in procs:
                        if p.exitcode != 0:
                            raise RuntimeError(f"writer {p.name} exited with {p.exitcode}")
                got = poller.count()
                if got >= expected or (writers_done is not None and time.monotonic() - writers_done > setup.deadline):
                    break
                for daemon in daemons:
                    if not daemon.alive():
                        raise RuntimeError(f"task-pulsed {' '.join(daemon.argv[1:])} exited "
                                           f"{daemon.proc.returncode if daemon.proc else '?'}:\n"
                                           + "\n".join(daemon.tail))
                time.sleep(POLL)
            for p in procs:  # the outbox may be complete before a writer has written its results
                p.join(60)
                if p.exitcode != 0:
                    raise RuntimeError(f"writer {p.name} exited with {p.exitcode}")
            if got < expected:
                out.notes.append(f"outbox incomplete {setup.deadline:g} s after the last write: {got}/{expected}")
                for i, daemon in enumerate(daemons):
                    out.notes += [f"h{i} log: {line}" for line in list(daemon.tail)[-5:]]
            for daemon in daemons:  # whatever is still on its way lands; the CPU window closes when all is done
                try:
                    wait_quiet(daemon, timeout=30)
                except RuntimeError:
                    if not daemon.alive():
                        raise
                    out.notes.append(f"daemon {daemon.pid} still busy 30 s after the outbox was complete")
            out.daemon_cpu = sum(d.cpu_seconds() - cpu0[d.pid] for d in daemons)
            for d in daemons:
                for name, seconds in thread_cpu_by_name(d.pid).items():
                    out.threads[name] = out.threads.get(name, 0.0) + seconds - threads0[d.pid].get(name, 0.0)
            if data_dir:
                out.pg_cpu = pg_cpu_delta(pg0, pg_cpu(data_dir, [poller.backend]))
            written = [json.loads(o.read_text(encoding="utf-8")) for o in outs]
            local = {f"h{i}": local_rows(d) for i, d in enumerate(dirs)}
            shared: list[tuple[Any, ...]] = []
            if poller.pg is not None:
                shared = poller.pg.execute("SELECT host, key, task_id, kind, created_at, stored_at, data "
                                           "FROM task_pulse.notifications ORDER BY seq").fetchall()
            for daemon in daemons:
                out.notes += [f"h{daemons.index(daemon)} said: {w}" for w in daemon.warnings[:5]]
    finally:
        if poller is not None:
            poller.close()
        stop_writers(procs)
        if url and setup.server is not None:
            drop_database(setup.server.url(), url)
    tally(out, written, local, shared)
    shutil.rmtree(run_dir, ignore_errors=True)
    return out


def _stop_daemon(daemon: Daemon) -> None:
    code, took = daemon.stop()
    if code not in (0, None):
        ANOMALIES.append(f"task-pulsed {' '.join(daemon.argv[1:])} exited {code} {took:.1f} s after SIGTERM")
        print(f"  note: task-pulsed exited {code} {took:.1f} s after SIGTERM; log tail:\n    "
              + "\n    ".join(list(daemon.tail)[-15:]))


def _wait_forwarding(daemons: Sequence[Daemon], timeout: float) -> None:
    """Every daemon's forwarder has connected to the shared db (its first log line after ready)."""
    end = time.monotonic() + timeout
    while not all(any(FORWARDING_MARK in line for line in d.tail) for d in daemons):
        if time.monotonic() > end:
            raise RuntimeError(f"no {FORWARDING_MARK!r} line after {timeout:g} s:\n"
                               + "\n".join(line for d in daemons for line in list(d.tail)[-5:]))
        for d in daemons:
            if not d.alive():
                raise RuntimeError("task-pulsed exited before forwarding:\n" + "\n".join(d.tail))
        time.sleep(0.02)


def tally(out: Outcome, written: list[dict[str, Any]], local: dict[str, list[tuple[str, str, str, str, str]]],
          shared: list[tuple[Any, ...]]) -> None:
    """Match every outbox row to its write: latencies, missing, duplicated, unexpected."""
    at: dict[tuple[str, str, str, str], float] = {}
    for i, w in enumerate(written):
        for task_id, kind, message, t in w["writes"]:
            at[(f"h{i}", task_id, kind, message)] = t
    first = min(min(t for *_, t in w["writes"]) for w in written)
    last = max(max(t for *_, t in w["writes"]) for w in written)
    out.writes_per_s = len(at) / max(last - first, 1e-9)
    out.writer_cpu = sum(w["cpu"] for w in written)
    if len(at) != out.expected:
        out.notes.append(f"the writers made {len(at)} distinct writes, {out.expected} expected")

    local_at: dict[tuple[str, str, str, str], float] = {}
    local_seen: Counter[tuple[str, str, str, str]] = Counter()
    for host, rows in local.items():
        for _key, task_id, kind, created_at, data in rows:
            k = match_key(host, task_id, kind, data)
            local_seen[k] += 1
            local_at[k] = min(local_at.get(k, math.inf), epoch(created_at))
    out.local_lat = sorted((local_at[k] - t) * 1000 for k, t in at.items() if k in local_at)

    if out.mode == "sqlite":
        seen, stored, pairs = local_seen, local_at, Counter[tuple[str, str]]()
        out.rows = sum(len(rows) for rows in local.values())
    else:
        seen, stored = Counter(), {}
        pairs = Counter((host, key) for host, key, *_ in shared)
        for host, _key, task_id, kind, created_at, stored_at, data in shared:
            k = match_key(host, task_id, kind, data)
            seen[k] += 1
            stored[k] = min(stored.get(k, math.inf), stored_at.timestamp())
            if k in local_at:
                out.lag.append((stored_at.timestamp() - epoch(created_at)) * 1000)
        out.lag.sort()
        out.rows = len(shared)
        local_pairs = {(host, key) for host, rows in local.items() for key, *_ in rows}
        out.not_forwarded = len(local_pairs ^ set(pairs))
    out.lat = sorted((stored[k] - t) * 1000 for k, t in at.items() if k in stored)
    out.missing = sum(1 for k in at if k not in stored)
    out.duplicated = sum(c - 1 for k, c in seen.items() if c > 1) + sum(c - 1 for c in pairs.values() if c > 1)
    out.unexpected = sum(c for k, c in seen.items() if k not in at)
    if stored:
        end = max(stored.values())
        out.notes_per_s = min(len(at), len(stored)) / max(end - first, 1e-9)
        out.tail_s = end - last


# -- report ------------------------------------------------------------------------------------------------------


def show(out: Outcome) -> None:
    def stats(values: list[float]) -> str:
        if not values:
            return "-"
        return (f"p50 {percentile(values, 50):.1f}  p99 {percentile(values, 99):.1f}  max {values[-1]:.1f}  "
                f"min {values[0]:.1f}")

    print(f"    {out.rows}/{out.expected} rows in the outbox; missing {out.missing}, duplicated {out.duplicated}, "
          f"unexpected {out.unexpected}" + (f"; local <-> PostgreSQL differ by {out.not_forwarded} (host, key)"
                                            if out.mode == "postgresql" else ""))
    print(f"    writes {out.writes_per_s:.0f}/s (all writers; writers' CPU {out.writer_cpu:.2f} s); "
          f"{out.notes_per_s:.0f} notifications/s first write -> outbox complete; outbox complete "
          f"{out.tail_s:.2f} s after the last write")
    print(f"    write -> outbox (ms): {stats(out.lat)}")
    if out.mode == "postgresql":
        print(f"    write -> local commit (ms): {stats(out.local_lat)}")
        print(f"    local commit -> PostgreSQL (ms): {stats(out.lag)}")
    per = max(out.expected, 1)
    print(f"    daemons' CPU {out.daemon_cpu:.2f} s = {out.daemon_cpu / per * 1e6:.0f} us per notification"
          + (f"; PostgreSQL server CPU {out.pg_cpu:.2f} s = {out.pg_cpu / per * 1e6:.0f} us per notification"
             if out.mode == "postgresql" else ""))
    busy = sorted(((k, v) for k, v in out.threads.items() if v > 0), key=lambda kv: -kv[1])
    print("    daemons' CPU by thread: " + (", ".join(f"{k} {v:.2f} s ({v / per * 1e6:.0f} us per notification)"
                                                 for k, v in busy) or "-"))
    for note in out.notes:
        print(f"    note: {note}")


def record(results: Results, version: Version, out: Outcome) -> None:
    add = results.add
    lat = out.lat or [math.nan]
    local = out.local_lat or [math.nan]
    per = max(out.expected, 1)
    add(version, "o", "notifications/s, first write -> outbox complete", out.notes_per_s, ".0f")
    add(version, "o", "write -> outbox latency p50 (ms)", percentile(lat, 50), ".1f")
    add(version, "o", "write -> outbox latency p99 (ms)", percentile(lat, 99), ".1f")
    add(version, "o", "write -> outbox latency max (ms)", max(lat), ".1f")
    add(version, "o", "notifications missing", out.missing, ".0f", "0", lambda v: v == 0, worst=True)
    add(version, "o", "notifications duplicated", out.duplicated, ".0f", "0", lambda v: v == 0, worst=True)
    add(version, "o", "  rows matching no write", out.unexpected, ".0f", "0", lambda v: v == 0, worst=True)
    add(version, "o", "daemons' CPU per notification (ms)", out.daemon_cpu / per * 1000, ".3f")
    add(version, "o", "  write -> local commit p50 (ms)", percentile(local, 50), ".1f")
    add(version, "o", "  write -> local commit p99 (ms)", percentile(local, 99), ".1f")
    add(version, "o", "  writes/s (all writers)", out.writes_per_s, ".0f")
    add(version, "o", "  outbox complete after the last write (ms)", out.tail_s * 1000, ".0f")
    add(version, "o", "  daemons' CPU (s)", out.daemon_cpu, ".2f")
    for name, seconds in sorted(out.threads.items(), key=lambda kv: -kv[1]):
        if seconds > 0 or name in ("main", "worker", "forwarder"):
            add(version, "o", f"  {name} threads' CPU per notification (ms)", seconds / per * 1000, ".3f")
    if out.mode == "postgresql":
        add(version, "o", "  local commit -> PostgreSQL p50 (ms)", percentile(out.lag or [math.nan], 50), ".1f")
        add(version, "o", "  local commit -> PostgreSQL p99 (ms)", percentile(out.lag or [math.nan], 99), ".1f")
        add(version, "o", "  local rows not in PostgreSQL or back", out.not_forwarded, ".0f", "0", lambda v: v == 0,
            worst=True)
        add(version, "o", "  PostgreSQL server CPU per notification (ms)", out.pg_cpu / per * 1000, ".3f")


# -- main --------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 daemons x 10 tasks x 5 steps, repeat 1")
    parser.add_argument("--daemons", type=int, help="daemons (tasks dirs, writers, hosts) (default 3, quick 2)")
    parser.add_argument("--tasks", type=int, help="tasks per daemon (default 100, quick 10)")
    parser.add_argument("--steps", type=int, help="steps per task (default 20, quick 5)")
    parser.add_argument("--repeat", type=int, help="runs per mode, alternated (default 3, quick 1)")
    parser.add_argument("--rate", type=float, help="writes per second per writer (default: as fast as it can)")
    parser.add_argument("--modes", default=",".join(MODES), help="comma-separated, in run order (default "
                        "sqlite,postgresql)")
    parser.add_argument("--deadline", type=float, default=120,
                        help="seconds the outbox is waited for after the last write (default 120)")
    parser.add_argument("--pg-fsync", action="store_true",
                        help="PostgreSQL with fsync = on (tests/postgres.py's cluster has it off, like the daemon's "
                             "SQLite WAL with synchronous = NORMAL commits without a flush)")
    parser.add_argument("--no-thread-names", action="store_true",
                        help="no sitecustomize naming the daemons' threads (scale.py's; CPU by thread then by number)")
    parser.add_argument("--tmp", type=Path, help="parent of the temp dirs (default: the system temp dir)")
    args = parser.parse_args(argv)
    daemons = args.daemons if args.daemons is not None else (2 if args.quick else 3)
    n_tasks = args.tasks if args.tasks is not None else (10 if args.quick else 100)
    n_steps = args.steps if args.steps is not None else (5 if args.quick else 20)
    repeat = args.repeat if args.repeat is not None else (1 if args.quick else 3)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not modes or set(modes) - set(MODES) or len(set(modes)) != len(modes):
        parser.error(f"--modes: a comma-separated list of {', '.join(MODES)}, each once")
    if min(daemons, n_tasks, n_steps, repeat) < 1 or (args.rate is not None and args.rate <= 0):
        parser.error("--daemons, --tasks, --steps, --repeat and --rate must be positive")

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(f"interrupted by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    root = Path(tempfile.mkdtemp(prefix="tp-shared-outbox-", dir=args.tmp))
    pg_base: Path | None = None
    setup: Setup | None = None
    results = Results()
    failed = False
    outcomes: list[Outcome] = []
    try:
        home = root / "home"
        home.mkdir()
        env = daemon_env(home)
        if not args.no_thread_names:  # scale.py's sitecustomize: each thread's name for the kernel (/proc)
            hook = root / "hook"
            hook.mkdir()
            (hook / "sitecustomize.py").write_text(THREAD_NAMER, encoding="utf-8")
            env["PYTHONPATH"] = os.pathsep.join([os.fspath(hook), *filter(None, [env.get("PYTHONPATH")])])
        setup = Setup(root, daemon_executable(), env, daemons, n_tasks, n_steps, args.rate, args.deadline)
        expected = daemons * n_tasks * (n_steps + 1)
        print(f"shared_outbox: {setup.exe}; python {sys.version.split()[0]}; {os.cpu_count()} CPUs; temp dir {root}")
        print(f"  {daemons} daemons x {n_tasks} tasks x {n_steps} steps, one writer per daemon "
              f"({'as fast as it can' if args.rate is None else f'{args.rate:g} writes/s each'}): "
              f"{daemons * n_tasks * (n_steps + 1)} writes, {expected} notifications expected per run "
              f"(per task: 1 started, {n_steps - 1} step_done, 1 done)")
        if "postgresql" in modes:
            pg_base = Path(tempfile.mkdtemp(prefix="tp-shared-outbox-pg-", dir=args.tmp))  # its own: nobody's
            setup.server = start_pg(pg_base, args.pg_fsync)
            version = subprocess.run([*setup.server.as_user, "postgres", "--version"], capture_output=True, text=True,
                                     env={**os.environ, "PATH": f"{Path(setup.server.pg_ctl or '').parent}:"
                                                                f"{os.environ.get('PATH', '')}"}).stdout.strip()
            print(f"  PostgreSQL: {version or '?'} at {setup.server.url()} (data {setup.server.data}), "
                  f"fsync {'on' if args.pg_fsync else 'off'}")
        versions = {m: Version(m) for m in modes}
        for run in range(repeat):
            for mode in modes:
                print(f"\n  run {run + 1}, {mode}:")
                try:
                    out = run_once(setup, mode, run)
                except Exception as exc:  # report, clean up, go on with the next run
                    failed = True
                    traceback.print_exc()
                    results.failed("o", exc)
                    Daemon.stop_all()
                    continue
                outcomes.append(out)
                show(out)
                record(results, versions[mode], out)
        order = [versions[m] for m in ("postgresql", "sqlite") if m in versions]
        print(f"\n{daemons} daemons x {n_tasks} tasks x {n_steps} steps = {expected} notifications per run")
        results.print_table(order, repeat)
        for out in outcomes:
            if out.missing or out.duplicated or out.rows < out.expected:
                failed = True
                ANOMALIES.append(f"{out.mode}: {out.missing} missing, {out.duplicated} duplicated, "
                                 f"{out.rows}/{out.expected} rows")
        for anomaly in ANOMALIES:
            print(f"ANOMALY: {anomaly}")
    finally:
        stop_writers()
        Daemon.stop_all()
        if pg_base is not None:
            stop_pg(setup.server if setup is not None else None, pg_base)
            shutil.rmtree(pg_base, ignore_errors=True)
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed or ANOMALIES else 0


if __name__ == "__main__":
    sys.exit(main())
