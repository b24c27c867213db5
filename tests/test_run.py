"""`task-pulse run` wrapping real commands."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import BIN, Daemon, clean_env, kinds, wait_for


def run(tasks_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "run", *args], capture_output=True,
                          text=True, env=clean_env(), timeout=60)


def only_task(tasks_dir: Path) -> dict[str, Any]:
    (path,) = tasks_dir.glob("*.json")
    return json.loads(path.read_text())


def test_success_ends_done_with_the_last_output_line(tasks_dir: Path) -> None:
    proc = run(tasks_dir, "Backup", "--", sys.executable, "-c", "print('copying'); print('42 files copied')")
    assert proc.returncode == 0
    assert proc.stdout == "copying\n42 files copied\n"  # passed through unchanged
    task = only_task(tasks_dir)
    assert (task["status"], task["result"]) == ("done", "42 files copied")
    assert task["steps"][0]["name"] == Path(sys.executable).name  # no --step: the command is the step


def test_failure_keeps_the_exit_code_and_the_last_stderr_line(tasks_dir: Path) -> None:
    code = "import sys; print('partial'); print('disk full', file=sys.stderr); sys.exit(3)"
    proc = run(tasks_dir, "Backup", "--step", "copy", "--step", "verify", "--", sys.executable, "-c", code)
    assert proc.returncode == 3 and proc.stderr == "disk full\n"
    task = only_task(tasks_dir)
    assert (task["status"], task["error"]) == ("error", "exit 3: disk full")
    assert [s["status"] for s in task["steps"]] == ["error", "pending"]


def test_heartbeats_carry_the_latest_line(tasks_dir: Path) -> None:
    code = "import time\nfor i in range(5):\n    print(f'chunk {i}', flush=True)\n    time.sleep(0.5)\n"
    proc = run(tasks_dir, "Slow", "--heartbeat", "1", "--", sys.executable, "-c", code)
    assert proc.returncode == 0
    task = only_task(tasks_dir)
    assert task["rev"] >= 3  # create, at least one heartbeat, done
    assert task["steps"][0]["message"].startswith("chunk ")


def test_sigterm_is_forwarded_and_ends_the_task_as_failed(tasks_dir: Path) -> None:
    wrapper = subprocess.Popen([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "run", "Long", "--",
                                sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                               stdout=subprocess.PIPE, text=True, env=clean_env())
    assert wrapper.stdout is not None
    assert wrapper.stdout.readline() == "started\n"  # the child runs
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(20) == 128 + signal.SIGTERM
    task = only_task(tasks_dir)
    assert (task["status"], task["error"]) == ("error", "interrupted by SIGTERM")


def test_a_command_that_reports_its_own_steps_keeps_its_word(tasks_dir: Path) -> None:
    script = (f"import os, subprocess\ntp = {str(BIN / 'task-pulse')!r}\nt = os.environ['TASK_PULSE_TASK_ID']\n"
              "subprocess.run([tp, 'next', t, 'fetched'], check=True, capture_output=True)\n"
              "subprocess.run([tp, 'done', t, 'all good'], check=True, capture_output=True)\n"
              "print('bye')\n")
    proc = run(tasks_dir, "Self", "--step", "fetch", "--step", "write", "--", sys.executable, "-c", script)
    assert proc.returncode == 0
    task = only_task(tasks_dir)
    assert (task["status"], task["result"], task["steps"][0]["message"]) == ("done", "all good", "fetched")


def test_heartbeats_go_on_after_the_command_reported_its_last_step(tasks_dir: Path) -> None:
    script = (f"import os, subprocess, time\ntp = {str(BIN / 'task-pulse')!r}\n"
              "subprocess.run([tp, 'next', os.environ['TASK_PULSE_TASK_ID']], check=True, capture_output=True)\n"
              "for i in range(5):\n    print(f'tail {i}', flush=True)\n    time.sleep(0.5)\n")
    proc = run(tasks_dir, "Tail", "--heartbeat", "1", "--", sys.executable, "-c", script)
    assert proc.returncode == 0
    task = only_task(tasks_dir)
    assert task["rev"] >= 4  # create, next, at least one heartbeat without a running step, done
    assert task["status"] == "done"


def test_a_missing_command(tasks_dir: Path) -> None:
    proc = run(tasks_dir, "Nope", "--", "/nonexistent/command")
    assert proc.returncode == 127 and "cannot run /nonexistent/command" in proc.stderr
    assert only_task(tasks_dir)["status"] == "error"


def test_the_daemon_announces_a_wrapped_command(tasks_dir: Path, daemon: Daemon) -> None:
    proc = run(tasks_dir, "Cron job", "--", sys.executable, "-c", "print('ok')")
    assert proc.returncode == 0
    task_id = only_task(tasks_dir)["taskId"]
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started", "done"], 30, "announced")  # one step, ended by done
