"""The board at scale: its page's first load, the time from a write to the browser's update, and its memory,
with 1,000 and with 100,000 tasks in the database, measured side by side in one run.

For each size: --running (0.3) of the task files running, the rest done, 5 steps each, written directly as
JSON (daemon_perf.write_cold_files); the real `task-pulsed` adopts them (first start, then its CPU quiet and
no file left unadopted), then the real `task-pulse board --port 0` starts on the dir (the page lists at most
--limit, 1000, tasks: the most worth seeing, picked by the state db's overview at 100,000) and Debian's
Chromium, headless (tests/chromium.py), opens the page.

  server ready  seconds from spawning `task-pulse board` to its first answer of /api/board.
  /api/board    milliseconds for the whole view as JSON (median of 5), and its size.
  first load    the page's own figure (`taskPulseBoard.renderedAt`: ms from the navigation's start until the
                whole view is on the page), in a new tab each time, --loads (5) times: median and max.
  write→page    --writes (30) heartbeats, each setting a unique message on a running task shown on the page
                (TaskStore.update, as `task-pulse heartbeat` writes: lock, fsync'd temp file, rename), 0.2 s
                apart, on one open page: from time.time() just before the write to the page's own time of
                the update that showed it (`taskPulseBoard.lastUpdateAt`, Date.now() after the DOM was
                changed): median, p90, max. Nothing polls: the daemon's commit (or the dir's rename) rings,
                the server pushes.
  board CPU     the board process's CPU (all threads) during the writes, per write.
  RSS           the board's VmRSS after the writes, and VmHWM (its peak).

Run it by hand: `python tests/benchmarks/board.py` (needs chromium: apt-get install chromium).
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _stats import percentile
from daemon_perf import daemon_env, daemon_executable, heartbeat_with, running_daemon, write_cold_files
from scale import sched_seconds, wait_quiet

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from task_pulse.store import TaskStore  # noqa: E402
from tests.boardproc import Board  # noqa: E402
from tests.chromium import Chromium, chromium_path  # noqa: E402


def proc_status(pid: int, field: str) -> float:
    """A /proc/<pid>/status field in MB (VmRSS, VmHWM)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def unadopted(tasks_dir: Path) -> int:
    db = sqlite3.connect(f"{(tasks_dir / '.pulse' / 'state.db').as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        return int(db.execute("SELECT count(*) FROM seen WHERE adopt_at IS NOT NULL").fetchone()[0])
    finally:
        db.close()


def measure(size: int, root: Path, args: argparse.Namespace, browser: Chromium) -> dict[str, Any]:
    tasks_dir = root / f"tasks-{size}"
    print(f"{size:,} tasks: writing the files …", flush=True)
    write_cold_files(tasks_dir, size, running=args.running)
    env = daemon_env(root / "home")
    env["TASK_PULSE_DAEMON_CHECK"] = "0"
    with running_daemon(daemon_executable(), tasks_dir, env) as (daemon, ready):
        print(f"  task-pulsed ready in {ready:.1f} s; waiting for it to adopt every file …", flush=True)
        wait_quiet(daemon, timeout=900)
        while unadopted(tasks_dir):
            time.sleep(0.5)
        board = Board(tasks_dir, "--limit", str(args.limit), env=env)
        spawned = time.monotonic()
        board.start()
        board.json("/api/board")
        server_ready = time.monotonic() - spawned
        try:
            api_ms, api_bytes = [], 0
            for _ in range(5):
                began = time.perf_counter()
                status, _, body = board.request("/api/board")
                api_ms.append((time.perf_counter() - began) * 1000)
                api_bytes = len(body)
                assert status == 200
            view = json.loads(body)
            loads = []
            for _ in range(args.loads):
                page = browser.page(board.url)
                page.wait("window.taskPulseBoard && window.taskPulseBoard.renderedAt > 0", 60)
                loads.append(float(page.js("window.taskPulseBoard.renderedAt")))
                rows = int(page.js("document.querySelectorAll('#tasks .task').length"))
                page.close()
            running = [t["key"] for t in view["tasks"] if t["status"] == "running"][:10]
            assert running, "no running task on the page"
            page = browser.page(board.url)
            page.wait("window.taskPulseBoard && window.taskPulseBoard.renderedAt > 0", 60)
            store = TaskStore(tasks_dir)
            latencies = []
            cpu_before = sched_seconds(board.proc.pid)
            for n in range(args.writes):
                task_id, message = running[n % len(running)], f"bench-{size}-{n}"
                written = time.time()
                store.update(task_id, heartbeat_with(message), datetime.now(UTC))
                probe = (f"(r => !!r && r.steps.some(s => s.message === {json.dumps(message)}))"
                         f"(window.taskPulseBoard.records.get({json.dumps(task_id)}))")
                page.wait(probe, 30, f"{message} on the page")
                latencies.append(float(page.js("window.taskPulseBoard.lastUpdateAt")) / 1000 - written)
                time.sleep(0.2)
            cpu = sched_seconds(board.proc.pid) - cpu_before
            rss, hwm = proc_status(board.proc.pid, "VmRSS"), proc_status(board.proc.pid, "VmHWM")
        finally:
            board.stop()
    return {"size": size, "shown": len(view["tasks"]), "rows": rows, "server_ready": server_ready,
            "api_ms": statistics.median(api_ms), "api_kb": api_bytes / 1024,
            "load_ms": statistics.median(loads), "load_max": max(loads),
            "lat_ms": [x * 1000 for x in latencies], "cpu_ms": cpu * 1000 / args.writes, "rss": rss, "hwm": hwm}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,100000", help="task counts, comma-separated [1000,100000]")
    parser.add_argument("--running", type=float, default=0.3, help="share of the tasks running [0.3]")
    parser.add_argument("--limit", type=int, default=1000, help="the board's --limit [1000]")
    parser.add_argument("--loads", type=int, default=5, help="first loads per size [5]")
    parser.add_argument("--writes", type=int, default=30, help="writes per size [30]")
    args = parser.parse_args(argv)
    if chromium_path() is None:
        sys.exit("needs Chromium: apt-get install chromium")
    results = []
    browser = Chromium()
    try:
        with tempfile.TemporaryDirectory(prefix="tp-board-bench-") as tmp:
            for size in (int(s) for s in args.sizes.split(",")):
                results.append(measure(size, Path(tmp), args, browser))
    finally:
        browser.close()
    print()
    print("| tasks in the db | listed | server ready | /api/board | first load (median / max) | write → page "
          "(median / p90 / max) | board CPU per write | RSS / peak |")
    print("|---|---|---|---|---|---|---|---|")
    for r in results:
        lat = r["lat_ms"]
        print(f"| {r['size']:,} | {r['shown']:,} | {r['server_ready']:.2f} s | {r['api_ms']:.1f} ms, "
              f"{r['api_kb']:.0f} KB | {r['load_ms']:.0f} / {r['load_max']:.0f} ms | "
              f"{statistics.median(lat):.0f} / {percentile(lat, 90):.0f} / {max(lat):.0f} ms | "
              f"{r['cpu_ms']:.1f} ms | {r['rss']:.0f} / {r['hwm']:.0f} MB |")
    if len(results) == 2:
        a, b = results
        print(f"\nratios {b['size']:,} / {a['size']:,}: first load {b['load_ms'] / a['load_ms']:.2f}×, write → page "
              f"{statistics.median(b['lat_ms']) / statistics.median(a['lat_ms']):.2f}×, RSS {b['rss'] / a['rss']:.2f}×")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TASK_PULSE_DAEMON_CHECK", "0")
    sys.exit(main())
