"""What the Claude Code hook costs per call, beside a plain `task-pulse heartbeat`.

Claude Code runs `task-pulse hook claude-code` on every tool call (PreToolUse and PostToolUse), and
waits for it. The goal: under 50 ms a call (median wall time), measured beside a plain writer call.
Measured, all as subprocesses of the installed console script, alternated in one run (the order
rotates every iteration, so drift and noise hit every variant alike), as in writer_cost.py:

  heartbeat  `task-pulse --dir D heartbeat ID MSG` (the plain writer call, for reference)
  pre        `task-pulse --dir D hook claude-code` < a PreToolUse event (Bash): a heartbeat with the
             call's summary, under the session's lock (one task write)
  post       the same call's PostToolUse: as a rule nothing to write (its PreToolUse wrote just now)
  todo       a PostToolUse of TodoWrite whose list changed: the steps redrawn (one task write and
             the session's state)
  floor      `python -c pass` (interpreter start-up alone; for reference)

Each variant has its own session (and task) in one temp tasks dir. For each call, wall time (spawn
to exit) and CPU time (user + system of the child, from `os.wait4`) are recorded; the report gives
median and p90 of both, the goal's verdict per hook variant, and ratios to the heartbeat's medians.

Then `-X importtime` of one hook call: what it loads beyond interpreter start-up (median of several
runs), and a FAIL if click or anything writer_cost.py forbids for a writer is among it. Exit status 1
on a FAIL, else 0 (a missed timing goal is reported, not fatal).

Run from the repository root with the project's virtualenv:

    .venv/bin/python tests/benchmarks/hook_cost.py            # 60 iterations
    .venv/bin/python tests/benchmarks/hook_cost.py --n 200
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from _stats import percentile
from writer_cost import (
    FORBIDDEN,
    ImportEntry,
    bench_args,
    console_script,
    forbidden_in,
    isolated_env,
    make_task,
    parse_importtime,
)

from task_pulse.store import TaskStore

GOAL_MS = 50.0
HOOK_FORBIDDEN = (*FORBIDDEN, "click")


@dataclass
class Variant:
    name: str
    argv: list[str]
    stdin: list[bytes] = field(default_factory=list)  # cycled through, one per call (empty: no input)
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    runs: int = 0

    def next_input(self) -> bytes:
        return self.stdin[self.runs % len(self.stdin)] if self.stdin else b""


def event(session: str, name: str, **fields: object) -> bytes:
    return json.dumps({"session_id": session, "transcript_path": f"/home/u/.claude/projects/p/{session}.jsonl",
                       "cwd": "/home/u/my-project", "permission_mode": "default", "hook_event_name": name,
                       **fields}).encode()


def run_once(variant: Variant, env: dict[str, str], cwd: Path) -> tuple[float, float]:
    with tempfile.TemporaryFile() as inp, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        inp.write(variant.next_input())
        inp.seek(0)
        started = time.perf_counter()
        proc = subprocess.Popen(variant.argv, env=env, cwd=cwd, stdin=inp, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if proc.returncode != 0 or (variant.name not in ("heartbeat", "floor") and (stdout or stderr)):
        raise RuntimeError(f"{variant.name}: exited {proc.returncode}, stdout {stdout!r}, stderr {stderr!r}")
    variant.runs += 1
    return elapsed, usage.ru_utime + usage.ru_stime


def import_report(runs: int, script: Path, tasks_dir: Path, stdin: bytes, env: dict[str, str], cwd: Path) -> bool:
    """Print what a hook call loads; False when a forbidden module is among it."""

    def sample(argv: list[str], data: bytes) -> dict[str, ImportEntry]:
        proc = subprocess.run([sys.executable, "-X", "importtime", *argv], input=data, env=env, cwd=cwd,
                              capture_output=True)
        if proc.returncode != 0:
            raise RuntimeError(f"importtime {argv} exited {proc.returncode}: {proc.stderr[-2000:]!r}")
        return parse_importtime(proc.stderr.decode(errors="replace"))

    def cumulative_ms(module: str) -> float:
        return statistics.median(s[module].cumulative_us for s in samples if module in s) / 1000

    hook_argv = [str(script), "--dir", str(tasks_dir), "hook", "claude-code"]
    startup = set(sample(["-c", "pass"], b""))
    samples = [sample(hook_argv, stdin) for _ in range(runs)]
    modules = set().union(*(set(s) for s in samples)) - startup
    top_level = sorted(m for m in modules if all(s[m].depth == 0 for s in samples if m in s))
    total_ms = sum(cumulative_ms(m) for m in top_level)
    print(f"\nImports of one hook call (median of {runs} runs of -X importtime, beyond interpreter start-up)")
    print(f"  total (top-level imports {', '.join(top_level)}): {total_ms:.1f} ms; modules loaded: {len(modules)}")
    ranked = sorted(modules, key=lambda m: -cumulative_ms(m))
    print("  top 8 by cumulative time (ms): " + ", ".join(f"{m} {cumulative_ms(m):.2f}" for m in ranked[:8]))
    bad = forbidden_in(modules) + sorted(m for m in modules if m == "click" or m.startswith("click."))
    print(f"  FAIL: forbidden modules imported by a hook call: {', '.join(sorted(set(bad)))}" if bad
          else f"  ok: none of {', '.join(HOOK_FORBIDDEN)} imported by a hook call")
    return not bad


def main(argv: Sequence[str] | None = None) -> int:
    args = bench_args(__doc__.split("\n", 1)[0], argv)
    script = console_script("task-pulse")
    tmp = Path(tempfile.mkdtemp(prefix="tp-hook-cost-"))
    try:
        tasks_dir = tmp / "tasks"
        env = isolated_env(tmp)
        store = TaskStore(tasks_dir)
        make_task(store, "bench-heartbeat")
        hook = [os.fspath(script), "--dir", os.fspath(tasks_dir), "hook", "claude-code"]
        bash = {"command": "npm test", "description": "Run test suite"}
        lists = [[{"content": "Find the page", "status": "in_progress", "activeForm": "Finding"},
                  {"content": "Add the toggle", "status": "pending", "activeForm": "Adding"}],
                 [{"content": "Find the page", "status": "completed", "activeForm": "Finding"},
                  {"content": "Add the toggle", "status": "in_progress", "activeForm": "Adding"}]]
        variants = [
            Variant("heartbeat", [os.fspath(script), "--dir", os.fspath(tasks_dir), "heartbeat", "bench-heartbeat",
                                  "Bash: Run test suite"]),
            Variant("pre", hook, [event("s-pre", "PreToolUse", tool_name="Bash", tool_input=bash,
                                        tool_use_id=f"toolu_{i}") for i in range(2)]),
            Variant("post", hook, [event("s-pre", "PostToolUse", tool_name="Bash", tool_input=bash,
                                         tool_response={"stdout": "ok"}, tool_use_id="toolu_0")]),
            Variant("todo", hook, [event("s-todo", "PostToolUse", tool_name="TodoWrite", tool_input={"todos": todos},
                                         tool_response={}, tool_use_id="toolu_t") for todos in lists]),
            Variant("floor", [sys.executable, "-c", "pass"]),
        ]
        for session in ("s-pre", "s-todo"):  # each session's turn begins, as a prompt would begin it
            subprocess.run(hook, input=event(session, "UserPromptSubmit", prompt=f"Benchmark {session}"), env=env,
                           check=True)
        revs_before = {t.name: t.rev for _, t in store.iter_tasks() if not isinstance(t, Exception)}

        print(f"hook_cost: python {sys.version.split()[0]} at {sys.executable}")
        print(f"  console script {script}; tasks dir {tasks_dir}")
        print(f"  {args.n} timed iterations (+{args.warmup} warm-up), order rotating")
        if any(m.startswith("__editable__") for m in sys.modules):
            print("  note: an editable install's import finder runs at every start-up of this interpreter (every "
                  "variant pays it, floor included)")
        for i in range(args.warmup + args.n):
            k = i % len(variants)
            for v in variants[k:] + variants[:k]:
                elapsed, cpu = run_once(v, env, tmp)
                if i >= args.warmup:
                    v.times.append(elapsed)
                    v.cpu.append(cpu)

        # Every call did its work: the heartbeats and the pre calls wrote, the todo lists were redrawn.
        revs = {t.name: t.rev for _, t in store.iter_tasks() if not isinstance(t, Exception)}
        total = args.warmup + args.n
        assert revs["Writer cost benchmark"] == revs_before["Writer cost benchmark"] + total
        assert revs["Benchmark s-pre"] >= revs_before["Benchmark s-pre"] + total
        assert revs["Benchmark s-todo"] == revs_before["Benchmark s-todo"] + total

        wall = {v.name: statistics.median(v.times) for v in variants}
        cpu = {v.name: statistics.median(v.cpu) for v in variants}
        print(f"\n  {'variant':<10} {'wall median':>11} {'p90':>7} {'min':>7}   {'CPU median':>10} {'p90':>7}   "
              f"{'wall/heartbeat':>14} {'goal <= 50 ms':>13}   (ms)")
        for v in variants:
            goal = "" if v.name in ("heartbeat", "floor") else ("PASS" if wall[v.name] * 1000 <= GOAL_MS else "MISS")
            print(f"  {v.name:<10} {wall[v.name] * 1000:>11.1f} {percentile(v.times, 90) * 1000:>7.1f} "
                  f"{min(v.times) * 1000:>7.1f}   {cpu[v.name] * 1000:>10.1f} {percentile(v.cpu, 90) * 1000:>7.1f}   "
                  f"{wall[v.name] / wall['heartbeat']:>14.2f} {goal:>13}")

        imports_ok = import_report(args.import_runs, script, tasks_dir, variants[1].stdin[0], env, tmp)
        summary = {"n": args.n, **{f"{v.name}_wall_ms": round(wall[v.name] * 1000, 2) for v in variants},
                   **{f"{v.name}_cpu_ms": round(cpu[v.name] * 1000, 2) for v in variants},
                   **{f"{v}_wall_ratio": round(wall[v] / wall["heartbeat"], 3) for v in ("pre", "post", "todo")},
                   "imports_ok": imports_ok}
        print(f"\nsummary: {json.dumps(summary)}")
        return 0 if imports_ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
