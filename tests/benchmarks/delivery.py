"""Live delivery against slow senders: how many calls and new messages a task costs, how late its end is.

The real `task-pulsed` runs with `--openclaw CHANNEL:1 --openclaw-bin tests/standins/openclaw`; the
stand-in takes `--delay` seconds per call (2 and 10 by default) and records when each call starts
and ends. A writer (this process, `TaskStore`, as `task-pulse` writes) creates a 20-step task,
finishes a step every 0.2 s (5 steps/s), then marks it done; the "10 tasks" case runs ten such
writers at once. Channels: `telegram` (can edit: the live card) and `irc` (cannot: coalesced new
messages).

Reported per case, as medians over the tasks (max in brackets):
  calls/task        sink calls that completed
  new msgs/task     sends (card, done ping, coalesced messages); goal <= 3
  done → sent       from the `done` write to the end of the call that sent the done message
                    (the message is in the chat); goal <= one call time + 1 s
  done → call start from the `done` write to the start of that call (how long it waited)

Run from the repository root (about 4 minutes with the defaults):

    .venv/bin/python tests/benchmarks/delivery.py
    .venv/bin/python tests/benchmarks/delivery.py --delays 2 --tasks 1 --channels telegram
    .venv/bin/python tests/benchmarks/delivery.py --delays 2 --tasks 1 --styles card stream  # side by side
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from task_pulse.store import TaskStore  # noqa: E402

STANDIN = ROOT / "tests" / "standins" / "openclaw"
BIN = Path(sys.executable).parent


def write_task(store: TaskStore, name: str, steps: int, done_at: dict[str, float]) -> None:
    task = store.create(name, [f"step {i}" for i in range(1, steps + 1)], datetime.now(UTC))
    for _ in range(steps - 1):
        time.sleep(0.2)
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    time.sleep(0.2)
    done_at[name] = time.time()
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "all good"), datetime.now(UTC))


def all_delivered(db_path: Path, expected: int) -> bool:
    if not db_path.exists():
        return False
    db = sqlite3.connect(db_path, timeout=30)
    try:
        total, pending = db.execute("SELECT count(*), count(*) - count(delivered_at) FROM notifications").fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()
    return total == expected and pending == 0


def run_case(channel: str, delay: float, tasks: int, steps: int, concurrency: int,
             style: str = "card") -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="tp-delivery-"))
    tasks_dir, log = work / "tasks", work / "calls.jsonl"
    tasks_dir.mkdir()
    env = {**os.environ, "STANDIN_LOG": str(log), "STANDIN_DELAY": str(delay)}
    env = {k: v for k, v in env.items() if not k.startswith("TASK_PULSE_")}
    daemon_log = (work / "daemon.log").open("wb")
    proc = subprocess.Popen([str(BIN / "task-pulsed"), "--dir", str(tasks_dir), "--openclaw", f"{channel}:1",
                             "--openclaw-bin", str(STANDIN), "--sink-concurrency", str(concurrency),
                             "--style", style],
                            stdout=daemon_log, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + 30
        while b"ready:" not in (work / "daemon.log").read_bytes():
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError((work / "daemon.log").read_text())
            time.sleep(0.05)
        store, done_at = TaskStore(tasks_dir), {}
        writers = [threading.Thread(target=write_task, args=(store, f"T{i:02d}", steps, done_at))
                   for i in range(tasks)]
        started = time.monotonic()
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        expected = tasks * (steps + 2)  # started, a step_done per step (the last one by done), done
        while not all_delivered(tasks_dir / ".pulse" / "state.db", expected):
            if time.monotonic() - started > 1200:
                raise RuntimeError("not delivered after 20 minutes")
            time.sleep(0.1)
        records = [json.loads(line) for line in log.read_text().splitlines()]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        daemon_log.close()
        shutil.rmtree(work, ignore_errors=True)
    starts = {r["pid"]: r["at"] for r in records if r["phase"] == "start"}
    calls, sends, done_sent, done_start = [], [], [], []
    ended = [r for r in records if r["phase"] == "end"]
    for name in sorted(done_at):
        own = [r for r in ended if f"【{name}】" in r["text"]]
        if style == "stream":  # step messages do not name their task: share the calls out evenly
            calls.append(len(ended) / tasks)
            sends.append(sum(r["verb"] == "send" for r in ended) / tasks)
        else:
            calls.append(len(own))
            sends.append(sum(r["verb"] == "send" for r in own))
        ping = next(r for r in own if r["verb"] == "send" and r["text"].startswith("🎉"))
        done_sent.append(ping["at"] - done_at[name])
        done_start.append(starts[ping["pid"]] - done_at[name])
    return {"calls": calls, "sends": sends, "done_sent": done_sent, "done_start": done_start}


def show(values: list[float], fmt: str) -> str:
    return f"{format(statistics.median(values), fmt)} [{format(max(values), fmt)}]"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delays", type=float, nargs="+", default=[2.0, 10.0])
    parser.add_argument("--tasks", type=int, nargs="+", default=[1, 10])
    parser.add_argument("--channels", nargs="+", default=["telegram", "irc"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=4, help="--sink-concurrency of the daemon")
    parser.add_argument("--styles", nargs="+", default=["card"], help="card and/or stream (the old behaviour)")
    args = parser.parse_args()
    print(f"{'style':6} {'channel':9} {'sender':>6} {'tasks':>5} | {'calls/task':>10} {'new msgs/task':>13} | "
          f"{'done → sent (s)':>16} {'done → call start (s)':>22}")
    for channel in args.channels:
        for delay in args.delays:
            for tasks in args.tasks:
                for style in args.styles:
                    r = run_case(channel, delay, tasks, args.steps, args.concurrency, style)
                    print(f"{style:6} {channel:9} {delay:>5g}s {tasks:>5} | {show(r['calls'], 'g'):>10} "
                          f"{show(r['sends'], 'g'):>13} | {show(r['done_sent'], '.1f'):>16} "
                          f"{show(r['done_start'], '.1f'):>22}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
