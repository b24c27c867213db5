"""What a writer call costs: `task-pulse heartbeat` against the smallest programs doing the same I/O.

Measured, all as subprocesses of the same interpreter (`sys.executable`), alternated in one run
(the order rotates every iteration, so drift and noise hit every variant alike):

  stdlib    `python tests/benchmarks/_original_heartbeat.py --dir D heartbeat ID MSG`
            the original Live Task Pulse script's heartbeat, stdlib only (argv parsed by hand),
            plus what task-pulse guarantees: flock, rev+1, temp file in the same dir, fsync,
            os.replace. The reference of the drop-in goal.
  baseline  `python tests/benchmarks/_baseline_heartbeat.py --dir D heartbeat ID MSG`
            the same work with click + stdlib
  script    the installed console script `task-pulse --dir D heartbeat ID MSG`
  module    `python -m task_pulse --dir D heartbeat ID MSG`
  skill     `python3 <skill>/scripts/task_pulse.py heartbeat ID MSG` (TASK_PULSE_DIR=D): what prompts
            written for the original call, run by the base interpreter (no task-pulse in it); its
            ratios are against `stdlib-base`, the stdlib script run by that same interpreter
            (whose own start-up may differ from the venv's: .pth files in its site-packages)
  floor     `python -c pass` (interpreter start-up alone; for reference, not compared)

Each variant heartbeats its own task file (same shape: 5 steps, one done, one running) in one temp
dir. For each subprocess, wall time (spawn to exit, in the parent) and CPU time (the child's user +
system time, from `os.wait4`) are recorded; the report gives median and p90 of both, and ratios of
medians: ours/stdlib for CPU (goal <= 1.3) and wall (goal <= 1.5), and ours/baseline for wall
(goal <= 1.3; click is then paid by both sides).

Then `python -X importtime -c "import task_pulse.writer"` (what a plain writer call loads; median
over several runs): the total import
cost of the writer, the top 8 modules by cumulative time, and a FAIL if watchdog, apscheduler,
sqlite3 or the daemon package is on the writer's import path (the heartbeat command's full run is
checked too). Exit status 1 on a FAIL, else 0 (a missed timing goal is reported, not fatal).

Run from the repository root with the project's virtualenv:

    .venv/bin/python tests/benchmarks/writer_cost.py            # 60 iterations
    .venv/bin/python tests/benchmarks/writer_cost.py --n 200
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from _stats import percentile

from task_pulse.model import Task
from task_pulse.skill import install as install_skill
from task_pulse.store import TaskStore

HERE = Path(__file__).resolve().parent
BASELINE_SCRIPT = HERE / "_baseline_heartbeat.py"
ORIGINAL_SCRIPT = HERE / "_original_heartbeat.py"
BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)  # what `python3` in a prompt would be
REFERENCE = {"skill": "stdlib-base"}  # what a variant is compared with, when not `stdlib`
RATIO_GOAL = 1.3  # wall, ours / click baseline
CPU_GOAL = 1.3  # CPU, ours / stdlib
WALL_GOAL = 1.5  # wall, ours / stdlib
OURS = ("script", "module", "skill")
FORBIDDEN = ("watchdog", "apscheduler", "sqlite3", "_sqlite3", "task_pulsed", "tzlocal")
IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


# -- helpers ----------------------------------------------------------------------------------------


def console_script(name: str) -> Path:
    """The console script installed beside the running interpreter (the venv's bin/)."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return beside
    found = shutil.which(name)
    if found is None:
        sys.exit(f"cannot find the console script {name!r} beside {sys.executable} or on PATH")
    return Path(found)


def shebang_interpreter(script: Path) -> str:
    with script.open("rb") as fh:
        first = fh.readline().decode(errors="replace").strip()
    return first[2:].strip() if first.startswith("#!") else "?"


@dataclass
class Variant:
    name: str
    argv_prefix: list[str]  # the command up to (not including) the heartbeat arguments
    task_id: str | None  # None: not a heartbeat (the floor)
    dir_flag: bool = True  # False: the original's conventions, the dir from TASK_PULSE_DIR
    times: list[float] = field(default_factory=list)  # wall seconds
    cpu: list[float] = field(default_factory=list)  # the child's user + system seconds
    last_message: str | None = None
    runs: int = 0

    def argv(self, tasks_dir: Path, message: str) -> list[str]:
        if self.task_id is None:
            return list(self.argv_prefix)
        where = ["--dir", os.fspath(tasks_dir)] if self.dir_flag else []
        return [*self.argv_prefix, *where, "heartbeat", self.task_id, message]


def make_task(store: TaskStore, task_id: str) -> None:
    """A typical task: 5 steps, the first done with a message, the second running."""
    now = datetime.now().astimezone()
    store.create("Writer cost benchmark", ["fetch", "filter", "write", "review", "publish"], now, task_id=task_id)

    def advance(task: Task) -> None:
        steps = task.steps
        stamp = now.isoformat()
        steps[0].status, steps[0].finished_at, steps[0].message = "done", stamp, "fetched 25 items"
        steps[1].status, steps[1].started_at = "running", stamp

    store.update(task_id, advance, now)


def run_once(variant: Variant, tasks_dir: Path, message: str, env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Run one call; its wall time and its CPU time (user + system of the child, from wait4)."""
    argv = variant.argv(tasks_dir, message)
    # Output goes to files, not pipes: the child never blocks on a full pipe while we wait4 for it.
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"{variant.name}: {argv} exited {proc.returncode}: {stderr.decode(errors='replace')}")
    if variant.task_id is not None and "ok" not in stdout.decode(errors="replace"):
        raise RuntimeError(f"{variant.name}: unexpected output {stdout!r}")
    variant.runs += 1
    variant.last_message = message
    return elapsed, usage.ru_utime + usage.ru_stime


def verdict(ratio: float, goal: float) -> str:
    return f"{ratio:.2f} {'PASS' if ratio <= goal else 'MISS'}"


# -- import time ------------------------------------------------------------------------------------


@dataclass
class ImportEntry:
    self_us: int
    cumulative_us: int
    depth: int


def parse_importtime(stderr: str) -> dict[str, ImportEntry]:
    """`-X importtime` lines by module name (a module is imported once per process)."""
    out: dict[str, ImportEntry] = {}
    for line in stderr.splitlines():
        m = IMPORT_LINE.match(line)
        if m:
            out[m.group(4)] = ImportEntry(int(m.group(1)), int(m.group(2)), len(m.group(3)) // 2)
    return out


def importtime(args: list[str], env: dict[str, str], cwd: Path) -> dict[str, ImportEntry]:
    proc = subprocess.run([sys.executable, "-X", "importtime", *args], env=env, cwd=cwd,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"importtime {args} exited {proc.returncode}: {proc.stderr[-2000:]}")
    return parse_importtime(proc.stderr)


def forbidden_in(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in FORBIDDEN))


def import_report(runs: int, env: dict[str, str], cwd: Path, hb_argv: list[str]) -> bool:
    """Print the import-time report. Returns False when a forbidden module is on the writer's path."""
    importtime(["-c", "import task_pulse.writer"], env, cwd)  # warm: make sure every .pyc exists
    startup = set(importtime(["-c", "pass"], env, cwd))
    samples = [importtime(["-c", "import task_pulse.writer"], env, cwd) for _ in range(runs)]
    path_modules = set().union(*(set(s) for s in samples)) - startup

    def med(name: str, attr: str) -> float:
        return statistics.median(getattr(s[name], attr) for s in samples if name in s)

    # The statement's cost: every top-level import it triggered (task_pulse itself, then task_pulse.writer).
    top_level = sorted(m for m in path_modules if all(s.get(m, ImportEntry(0, 0, 1)).depth == 0 for s in samples))
    total_ms = statistics.median(sum(s[m].cumulative_us for m in top_level if m in s) for s in samples) / 1000
    cli_ms = med("task_pulse.writer", "cumulative_us") / 1000
    print(f"\nImport time of `import task_pulse.writer` (median of {runs} runs of -X importtime; "
          "modules beyond interpreter start-up)")
    print(f"  total (top-level imports {', '.join(top_level)}): {total_ms:.1f} ms")
    print(f"  task_pulse.writer cumulative: {cli_ms:.1f} ms; modules loaded: {len(path_modules)}")
    ranked = sorted((m for m in path_modules if m != "task_pulse.writer"), key=lambda m: -med(m, "cumulative_us"))
    print(f"  top 8 by cumulative time:\n    {'module':<28} {'cumul ms':>9} {'self ms':>8}")
    for m in ranked[:8]:
        print(f"    {m:<28} {med(m, 'cumulative_us') / 1000:>9.2f} {med(m, 'self_us') / 1000:>8.2f}")

    # What task-pulse adds on top of click (the baseline imports click too): the self time of every
    # module that `import click` alone does not load.
    click_only = set(importtime(["-c", "import click"], env, cwd)) - startup
    extra = sorted(path_modules - click_only, key=lambda m: -med(m, "self_us"))
    extra_ms = sum(med(m, "self_us") for m in extra) / 1000
    largest = ", ".join(f"{m} {med(m, 'self_us') / 1000:.2f}" for m in extra[:6])
    print(f"  beyond `import click` ({len(click_only)} modules): {len(extra)} more modules, "
          f"{extra_ms:.1f} ms self time; largest (ms): {largest}")

    hb_modules = set(importtime(hb_argv, env, cwd)) - startup  # the whole heartbeat command, lazy imports included
    ok = True
    for what, modules in (("by importing task_pulse.writer", path_modules),
                          (f"by a full `heartbeat` run ({len(hb_modules)} modules)", hb_modules)):
        bad = forbidden_in(modules)
        ok = ok and not bad
        print(f"  FAIL: forbidden modules imported {what}: {', '.join(bad)}" if bad
              else f"  ok: none of {', '.join(FORBIDDEN)} imported {what}")
    return ok


# -- main -------------------------------------------------------------------------------------------


def bench_args(description: str, argv: Sequence[str] | None) -> argparse.Namespace:
    """--n, --warmup and --import-runs, as the call-cost benchmarks (this one, hook_cost.py) take them."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--n", type=int, default=60, help="timed iterations per variant (default 60)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first (default 3)")
    parser.add_argument("--import-runs", type=int, default=7, help="-X importtime runs (default 7)")
    args = parser.parse_args(argv)
    if args.n < 1:
        parser.error("--n must be >= 1")
    return args


def isolated_env(tmp: Path) -> dict[str, str]:
    """The measured calls' environment: no TASK_PULSE_* variables, and a HOME (`tmp/home`) without a
    ~/.config/task-pulse file."""
    home = tmp / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASK_PULSE_")}
    env["HOME"] = os.fspath(home)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n", 1)[0], argv)
    script = console_script("task-pulse")
    tmp = Path(tempfile.mkdtemp(prefix="tp-writer-cost-"))
    try:
        tasks_dir = tmp / "tasks"
        env = isolated_env(tmp)
        env["TASK_PULSE_DIR"] = os.fspath(tasks_dir)  # for the skill's script; the others pass --dir
        store = TaskStore(tasks_dir)
        skill_dir = tmp / "skill"
        install_skill(skill_dir)
        variants = [
            Variant("stdlib", [sys.executable, os.fspath(ORIGINAL_SCRIPT)], "bench-stdlib"),
            Variant("baseline", [sys.executable, os.fspath(BASELINE_SCRIPT)], "bench-baseline"),
            Variant("script", [os.fspath(script)], "bench-script"),
            Variant("module", [sys.executable, "-m", "task_pulse"], "bench-module"),
            Variant("skill", [BASE_PYTHON, os.fspath(skill_dir / "scripts" / "task_pulse.py")], "bench-skill",
                    dir_flag=False),
            Variant("stdlib-base", [BASE_PYTHON, os.fspath(ORIGINAL_SCRIPT)], "bench-stdlib-base"),
            Variant("floor", [sys.executable, "-c", "pass"], None),
        ]
        for v in variants:
            if v.task_id is not None:
                make_task(store, v.task_id)
        revs_before = {v.name: store.load(v.task_id).rev for v in variants if v.task_id}

        print(f"writer_cost: python {sys.version.split()[0]} at {sys.executable}")
        print(f"  console script {script} (interpreter {shebang_interpreter(script)})")
        print(f"  tasks dir {tasks_dir}; {args.n} timed iterations (+{args.warmup} warm-up), order rotating")
        if any(m.startswith("__editable__") for m in sys.modules):
            print("  note: an editable install's import finder runs at every start-up of this interpreter (every "
                  "variant pays it, floor included); users of a normal install do not, so their ratios are higher")
        total = args.warmup + args.n
        for i in range(total):
            k = i % len(variants)
            for v in variants[k:] + variants[:k]:
                elapsed, cpu = run_once(v, tasks_dir, f"heartbeat {i:05d} from {v.name}", env, tmp)
                if i >= args.warmup:
                    v.times.append(elapsed)
                    v.cpu.append(cpu)

        # Every heartbeat must really have happened (the baseline does the same work as ours).
        for v in variants:
            if v.task_id is None:
                continue
            task = store.load(v.task_id)
            running = task.running_step
            assert running is not None and running.message == v.last_message, (v.name, running)
            assert task.rev == revs_before[v.name] + total, (v.name, task.rev, revs_before[v.name], total)

        by_name = {v.name: v for v in variants}
        wall = {v.name: statistics.median(v.times) for v in variants}
        cpu = {v.name: statistics.median(v.cpu) for v in variants}
        print(f"\n  {'variant':<10} {'wall median':>11} {'p90':>7} {'min':>7}   "
              f"{'CPU median':>10} {'p90':>7} {'min':>7}   (ms)")
        for v in variants:
            print(f"  {v.name:<10} {wall[v.name] * 1000:>11.1f} {percentile(v.times, 90) * 1000:>7.1f} "
                  f"{min(v.times) * 1000:>7.1f}   {cpu[v.name] * 1000:>10.1f} {percentile(v.cpu, 90) * 1000:>7.1f} "
                  f"{min(v.cpu) * 1000:>7.1f}")

        print("\n  (skill: against stdlib-base)")
        print(f"  ratios of medians     {'CPU/stdlib':>14} {'wall/stdlib':>14} {'wall/baseline':>14} "
              f"{'CPU/baseline':>13}")
        print(f"  {'goal':<21} {'<= ' + str(CPU_GOAL):>14} {'<= ' + str(WALL_GOAL):>14} {'<= ' + str(RATIO_GOAL):>14} "
              f"{'(info)':>13}")
        ratios: dict[str, float] = {}
        for name in (*OURS, "baseline", "floor"):
            ref = REFERENCE.get(name, "stdlib")
            r_cpu, r_wall = cpu[name] / cpu[ref], wall[name] / wall[ref]
            r_base, r_base_cpu = wall[name] / wall["baseline"], cpu[name] / cpu["baseline"]
            if name in OURS:
                ratios |= {f"{name}_cpu_ratio": r_cpu, f"{name}_wall_ratio": r_wall, f"{name}_ratio": r_base}
                print(f"  {name:<21} {verdict(r_cpu, CPU_GOAL):>14} {verdict(r_wall, WALL_GOAL):>14} "
                      f"{verdict(r_base, RATIO_GOAL):>14} {r_base_cpu:>13.2f}")
            else:
                note = "  (click's cost)" if name == "baseline" else "  (interpreter start-up)"
                print(f"  {name:<21} {r_cpu:>14.2f} {r_wall:>14.2f} {r_base:>14.2f} {r_base_cpu:>13.2f}{note}")

        floor_wall, floor_cpu = wall["floor"], cpu["floor"]
        print("  above the interpreter floor (CPU / wall ms): " + ", ".join(
            f"{name} +{(cpu[name] - floor_cpu) * 1000:.1f} / +{(wall[name] - floor_wall) * 1000:.1f}"
            for name in by_name if name != "floor"))

        hb_argv = ["-m", "task_pulse", "--dir", os.fspath(tasks_dir), "heartbeat", "bench-module", "import check"]
        imports_ok = import_report(args.import_runs, env, tmp, hb_argv)

        summary = {"n": args.n, **{f"{k}_wall_ms": round(wall[k] * 1000, 2) for k in ("stdlib", "baseline")},
                   **{f"{k}_cpu_ms": round(cpu[k] * 1000, 2) for k in ("stdlib", "baseline")},
                   **{k: round(r, 3) for k, r in ratios.items()}, "imports_ok": imports_ok}
        print(f"\nsummary: {json.dumps(summary)}")
        return 0 if imports_ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
