"""`task-pulse openclaw setup --via cron` against the real OpenClaw: a gateway on 127.0.0.1, its cron job
draining into a private IRC server, then `--undo`. Skipped where the parts are missing (tests/e2e/README.md)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, Daemon, kinds, run_tp, wait_for
from tests.e2e.conftest import CHANNEL, IRC_READY, IRC_SKIP, OPENCLAW, Listener, e2e_env, free_port, openclaw_state

# One worker runs the e2e lanes (one OpenClaw install and its gateway): see pyproject.toml.
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not IRC_READY, reason=IRC_SKIP),
              pytest.mark.xdist_group("e2e")]


@pytest.fixture
def gateway(tmp_path: Path, irc: tuple[int, Listener]) -> Iterator[dict[str, str]]:
    """An OpenClaw gateway (it runs the cron jobs) on its own state dir; yields the environment to reach it."""
    state = openclaw_state(tmp_path, irc[0])
    config_path = state / "openclaw.json"
    config = json.loads(config_path.read_text())
    config["gateway"] = {"mode": "local", "port": free_port(), "bind": "loopback",
                         "auth": {"mode": "token", "token": "task-pulse-e2e"}}
    config_path.write_text(json.dumps(config, indent=2))
    # The gateway's PATH is the one that counts: the cron job runs `task-pulse` from it.
    env = e2e_env(OPENCLAW_STATE_DIR=str(state), NO_COLOR="1", PATH=f"{BIN}:{os.environ['PATH']}")
    log = tmp_path / "gateway.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(OPENCLAW), "gateway", "run"], stdout=out, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True, cwd=tmp_path)
    try:
        wait_for(lambda: "[gateway] ready" in log.read_text(errors="replace") or proc.poll() is not None, 90,
                 "the gateway")
        assert proc.poll() is None, log.read_text(errors="replace")
        yield env
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def openclaw(env: dict[str, str], *args: str) -> Any:
    proc = subprocess.run([str(OPENCLAW), *args], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def setup(tasks_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return run_tp(tasks_dir, "openclaw", "setup", "--openclaw-bin", str(OPENCLAW), *args,
                  env={**env, "HOME": env["HOME"]})


def test_setup_via_cron_drains_into_the_channel_and_undo_takes_it_back(tmp_path: Path, tasks_dir: Path,
                                                                       daemons: list[Daemon],
                                                                       irc: tuple[int, Listener],
                                                                       gateway: dict[str, str]) -> None:
    _, listener = irc
    home = tmp_path / "home"
    home.mkdir()
    env = {**gateway, "HOME": str(home)}
    first = setup(tasks_dir, env, "--channel", "irc", "--target", CHANNEL, "--via", "cron")
    second = setup(tasks_dir, env, "--channel", "irc", "--target", CHANNEL, "--via", "cron")
    print(f"\nfirst run:\n{first.stdout}\nsecond run:\n{second.stdout}")
    assert "cron job 'Task pulse' added" in first.stdout and "already there" in second.stdout
    assert "skill live-task-pulse: ready" in second.stdout
    (job,) = [j for j in openclaw(env, "cron", "list", "--all", "--json")["jobs"] if j["name"] == "Task pulse"]
    info = openclaw(env, "skills", "info", "live-task-pulse", "--json")
    assert info["eligible"] and info["missing"]["bins"] == [] and info["requirements"]["os"] == ["linux"]

    daemons.append(Daemon(tasks_dir, "--lang", "en").start())  # no sink: the cron job delivers
    task_id = run_tp(tasks_dir, "create", "Via cron", "fetch", "send").stdout.strip()
    run_tp(tasks_dir, "next", task_id, "25 items")
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started", "step_done"], 30, "both notifications queued")
    run = openclaw(env, "cron", "run", job["id"], "--wait", "--json")["run"]
    print(f"cron run: { {k: run.get(k) for k in ('status', 'completionStatus', 'summary', 'deliveryStatus')} }")
    assert run["completionStatus"] == "succeeded" and run["deliveryStatus"] == "delivered"
    wait_for(lambda: any('"Via cron"' in text for _, text in listener.messages), 30, "the digest in the channel")
    empty = openclaw(env, "cron", "run", job["id"], "--wait", "--json")["run"]
    assert empty.get("deliverySuppressionReason") == "empty"  # nothing new: nothing posted

    undo = setup(tasks_dir, env, "--undo")
    print(f"undo:\n{undo.stdout}")
    assert f"removed cron job 'Task pulse' (id {job['id']})" in undo.stdout
    assert not [j for j in openclaw(env, "cron", "list", "--all", "--json")["jobs"] if j["name"] == "Task pulse"]
