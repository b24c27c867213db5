"""An ordinary task's latency while hostile 1 MB task files are rewritten in a loop (issue: hardening).

The real `task-pulsed` watches a fresh dir. Three hostile writer processes each rewrite one file of
about 1 MB as fast as they can, each its own way:

  steps    a valid task of 1,000 steps with ~1 KB messages; one message changes per rewrite
           (atomic replace): the most a legal file can make the daemon parse, diff and store;
  flood    34k tiny steps (over the step limit: invalid), rewritten in place with open('w'):
           a writer that is never done writing, and a file refused on every read;
  junk     1 MB of nested JSON that never parses, atomic replace.

Meanwhile this process makes an ordinary task take a `next` every 1/--rate s (TaskStore.update,
what `task-pulse next` does). Latency = the `step_done` notification's `created_at` minus the time
just before the write. The same is measured first with no hostile writer, in the same run, so the
two columns compare. Goal: p99 <= 100 ms under attack.

    .venv/bin/python tests/benchmarks/hostile_files.py               # 3 x 20 s
    .venv/bin/python tests/benchmarks/hostile_files.py --duration 5  # quick look
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from _stats import percentile
from daemon_perf import StateDb, advance_with, daemon_env, daemon_executable, epoch, now_local, running_daemon

from task_pulse.store import TaskStore

FILE_BYTES = 1024 * 1024


def _steps_file(n: int) -> bytes:
    steps = [{"name": f"s{i}", "status": "done", "message": f"{n}-{i}-" + "x" * 950} for i in range(999)]
    steps.append({"name": "last", "status": "running", "message": str(n)})
    return json.dumps({"taskName": "hostile steps", "status": "running", "steps": steps}).encode()[:FILE_BYTES]


def _flood_file(n: int) -> bytes:
    body = ",".join(['{"name":"a","status":"done"}'] * 34_000)
    return f'{{"taskName":"flood {n}","status":"running","steps":[{body}]}}'.encode()[:FILE_BYTES]


def _junk_file(n: int) -> bytes:
    depth = FILE_BYTES // 2 - 16
    return (f'{{"n":{n},"x":' + "[" * depth + "]" * (depth - 1)).encode()  # one bracket short: never parses


def hostile(tasks_dir: str, kind: str, stop: multiprocessing.synchronize.Event, counter: multiprocessing.Value) -> None:
    path = os.path.join(tasks_dir, f"hostile-{kind}.json")
    make = {"steps": _steps_file, "flood": _flood_file, "junk": _junk_file}[kind]
    n = 0
    while not stop.is_set():
        data = make(n)
        if kind == "flood":
            with open(path, "wb") as f:  # in place, in two halves: a slow writer
                f.write(data[: len(data) // 2])
                f.flush()
                f.write(data[len(data) // 2:])
        else:
            tmp = os.path.join(tasks_dir, f".hostile-{kind}.tmp")
            with open(tmp, "wb") as f:
                f.write(data)
            os.replace(tmp, path)
        n += 1
        with counter.get_lock():
            counter.value += 1


def measure(exe: Path, root: Path, env: dict[str, str], rate: float, duration: float, attackers: Sequence[str],
            label: str) -> list[float]:
    tasks_dir = root / label
    writes = max(1, round(rate * duration))
    with running_daemon(exe, tasks_dir, env) as (_daemon, _ready):
        store = TaskStore(tasks_dir)
        task_id = store.create("ordinary", [f"step {i}" for i in range(writes + 2)], now_local()).task_id
        db = StateDb(tasks_dir)
        if db.wait_count(1, 10)[0] < 1:
            raise RuntimeError("the ordinary task was not announced")
        stop = multiprocessing.Event()
        counter = multiprocessing.Value("q", 0)
        procs = [multiprocessing.Process(target=hostile, args=(str(tasks_dir), k, stop, counter)) for k in attackers]
        for p in procs:
            p.start()
        time.sleep(1.0 if procs else 0)  # let the attack get going
        before: dict[str, float] = {}
        t0 = time.monotonic()
        for i in range(writes):
            pause = t0 + i / rate - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            message = f"lat-{i:05d}"
            before[message] = time.time()
            store.update(task_id, advance_with(message), now_local())
        where = "kind = 'step_done' AND json_extract(data, '$.message') LIKE 'lat-%'"
        db.wait_count(writes, 60, where)
        stop.set()
        for p in procs:
            p.join(10)
        created = {json.loads(data)["message"]: epoch(at) for at, data in db.rows("step_done")
                   if (json.loads(data).get("message") or "").startswith("lat-")}
        kinds = db.by_kind()
        db.close()
    lat = [(created[m] - before[m]) * 1000 for m in created]
    print(f"  {label}: {len(created)}/{writes} matched; hostile rewrites {counter.value} "
          f"({counter.value / (duration + 1):.0f}/s); notifications by kind {kinds}")
    if len(created) < writes:
        print(f"  {label}: MISSING {writes - len(created)} notifications")
    return lat


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=10.0, help="ordinary writes per second (10)")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per part (20)")
    parser.add_argument("--runs", type=int, default=3, help="runs of each part (3); medians reported")
    args = parser.parse_args(argv)
    exe = daemon_executable()
    with tempfile.TemporaryDirectory(prefix="tp-hostile-") as tmp:
        root = Path(tmp)
        env = daemon_env(root)
        table: dict[str, list[tuple[float, float, float]]] = {"quiet": [], "attacked": []}
        for run in range(args.runs):
            for label, attackers in (("quiet", ()), ("attacked", ("steps", "flood", "junk"))):
                lat = measure(exe, root, env, args.rate, args.duration, attackers, f"{label}-{run}")
                table[label].append((percentile(lat, 50), percentile(lat, 99), max(lat)))
        print("\nordinary task latency, ms (median of runs)      p50     p99     max")
        for label, runs in table.items():
            cols = [sorted(r[k] for r in runs)[len(runs) // 2] for k in range(3)]
            print(f"  {label:<44} {cols[0]:7.1f} {cols[1]:7.1f} {cols[2]:7.1f}")
        p99 = sorted(r[1] for r in table["attacked"])[len(table["attacked"]) // 2]
        print(f"goal p99 <= 100 ms under attack: {'PASS' if p99 <= 100 else 'MISS'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
