"""Sink commands leave nothing behind (daemon/delivery/processes.py, reaper.py): whatever a call starts, in a
session of its own too (as `openclaw message send` does), ends with the call, at its timeout, and with the
daemon, kill -9 included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from task_pulsed.delivery.processes import REAPER, ProcessSlots, run_supervised
from task_pulsed.delivery.results import DeliveryError
from tests.conftest import Daemon, clean_env, run_tp, wait_for

STANDIN = Path(__file__).parent / "standins" / "openclaw"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def records(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def pids(log: Path) -> list[int]:
    """Every process the stand-in calls started: the calls themselves and their detached workers."""
    return [r.get("worker") or r["pid"] for r in records(log) if r.get("phase") in ("start", "worker")]


def standin_env(log: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "STANDIN_LOG": str(log), "STANDIN_DETACH": "1", **extra}


def send_argv() -> list[str]:
    return [str(STANDIN), "message", "send", "--channel", "telegram", "--target", "1", "--message", "hi", "--json"]


def test_a_hung_call_and_its_detached_worker_end_at_the_timeout(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    began = time.monotonic()
    with pytest.raises(DeliveryError, match="timed out after 2 s"):
        run_supervised(send_argv(), b"", 2, env=standin_env(log, STANDIN_HANG="1"))
    assert time.monotonic() - began < 10
    started = pids(log)
    assert len(started) == 2  # the call and the worker it started in a session of its own
    assert not any(alive(pid) for pid in started)


def test_what_a_finished_call_left_behind_is_ended_with_it(tmp_path: Path) -> None:
    log = tmp_path / "calls.jsonl"
    code, out, _ = run_supervised(send_argv(), b"", 30, env=standin_env(log))
    assert code == 0 and json.loads(out)["ok"] is True
    assert len(pids(log)) == 2 and not any(alive(pid) for pid in pids(log))


def test_the_command_gets_its_input_and_its_own_exit_code(tmp_path: Path) -> None:
    script = "import sys; data = sys.stdin.read(); print(data.upper()); sys.exit(3)"
    assert run_supervised([sys.executable, "-c", script], b"payload", 30) == (3, b"PAYLOAD\n", b"")
    with pytest.raises(DeliveryError, match="cannot run no-such-program"):
        run_supervised(["no-such-program"], b"", 30)


def test_a_reaper_whose_daemon_died_before_it_armed_its_death_signal_starts_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    argv = [sys.executable, "-I", "-S", str(REAPER), "30", str(os.getpid() + 1_000_000), "--",
            sys.executable, "-c", f"open({str(marker)!r}, 'w').close()"]
    assert subprocess.run(argv, timeout=60).returncode == 1 and not marker.exists()


def test_at_most_the_cap_of_sink_commands_run_at_once(tmp_path: Path) -> None:
    slots, spans = ProcessSlots(1), []
    script = "import time; t = time.time(); time.sleep(0.3); print(t, time.time())"

    def call() -> None:
        _, out, _ = run_supervised([sys.executable, "-c", script], b"", 30, slots=slots)
        spans.append(tuple(map(float, out.split())))

    threads = [threading.Thread(target=call) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    spans.sort()
    assert len(spans) == 3 and all(later[0] >= earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))


def test_no_process_of_a_hung_openclaw_outlives_its_timeout_or_the_daemon(tmp_path: Path, tasks_dir: Path,
                                                                          daemons: list[Daemon]) -> None:
    """The stand-in starts a detached worker (as `openclaw message send` does) and hangs: after the sink
    timeout, and after the daemon is killed with a call in flight, none of it is left."""
    log = tmp_path / "calls.jsonl"
    env = clean_env(STANDIN_LOG=str(log), STANDIN_DETACH="1", STANDIN_HANG="1")
    d = Daemon(tasks_dir, "--openclaw", "telegram:1", "--openclaw-bin", str(STANDIN), "--openclaw-gateway", "none",
               "--sink-timeout", "2", "--sink-backoff", "30", env=env).start()
    daemons.append(d)
    run_tp(tasks_dir, "create", "Hung", "a", "b")
    wait_for(lambda: len(pids(log)) >= 2, 30, "the first call and its worker")
    first = pids(log)[:2]
    wait_for(lambda: "timed out after 2 s" in d.log(), 30, "the timeout")
    wait_for(lambda: not any(alive(pid) for pid in first), 10, "the first call's tree to end at the timeout")
    run_tp(tasks_dir, "create", "Another", "a")  # a second call, in flight when the daemon is killed
    wait_for(lambda: len(pids(log)) >= 4, 30, "the second call and its worker")
    d.kill()
    wait_for(lambda: not any(alive(pid) for pid in pids(log)), 10, "every process to end with the daemon")
