"""`task-pulse openclaw setup`, against stand-ins for `openclaw` and `systemctl` that record their argv."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, clean_env

STANDINS = Path(__file__).parent / "standins"
OPENCLAW = STANDINS / "openclaw"


class Machine:
    """A HOME, an OpenClaw workspace and the two stand-ins, as a user's machine would have them."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.workspace = tmp_path / "oc-workspace"
        self.tasks = tmp_path / "tasks"
        self.log = tmp_path / "openclaw.jsonl"
        self.systemctl_log = tmp_path / "systemctl.jsonl"

    def run(self, *args: str, bus: bool = True, umask: int = -1, **env: str) -> subprocess.CompletedProcess[str]:
        extra = {"HOME": str(self.home), "PATH": f"{STANDINS}:{os.environ['PATH']}", "STANDIN_LOG": str(self.log),
                 "STANDIN_SYSTEMCTL_LOG": str(self.systemctl_log), "STANDIN_WORKSPACE": str(self.workspace), **env}
        if not bus:
            extra["STANDIN_NO_BUS"] = "1"
        full = clean_env(**extra)
        full.pop("XDG_CONFIG_HOME", None)
        full.pop("OPENCLAW_STATE_DIR", None)
        return subprocess.run([str(BIN / "task-pulse"), "--dir", str(self.tasks), "openclaw", "setup", *args],
                              capture_output=True, text=True, env=full, timeout=120, umask=umask)

    def stop_daemon(self) -> None:
        """The stand-in systemctl really starts the unit's ExecStart on `restart`: stop what it started."""
        pidfile = self.systemctl_log.with_suffix(".pid")
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)

    def openclaw_calls(self) -> list[list[str]]:
        lines = self.log.read_text().splitlines() if self.log.exists() else []
        return [r["argv"] for r in map(json.loads, lines) if r.get("phase") == "call"]

    def jobs(self) -> list[dict[str, Any]]:
        path = self.log.with_name(self.log.name + ".cron.json")
        return json.loads(path.read_text()) if path.exists() else []

    @property
    def unit(self) -> Path:
        return self.home / ".config" / "systemd" / "user" / "task-pulsed.service"

    @property
    def skill(self) -> Path:
        return self.workspace / "skills" / "live-task-pulse" / "SKILL.md"


@pytest.fixture
def machine(tmp_path: Path) -> Iterator[Machine]:
    m = Machine(tmp_path)
    yield m
    m.stop_daemon()


def test_dry_run_sink_prints_every_step_and_changes_nothing(machine: Machine) -> None:
    proc = machine.run("--channel", "telegram", "--target", "123456789", "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[:5] == [
        f"OpenClaw 2026.9.6 at {OPENCLAW}",
        f"would install the skill into {machine.workspace / 'skills' / 'live-task-pulse'}",
        "route: sink (a systemd user manager answers)",
        f"gateway ws://127.0.0.1:1: no gateway token: neither OPENCLAW_GATEWAY_TOKEN nor gateway.auth.token in "
        f"{machine.home / '.openclaw' / 'openclaw.json'}; the service will use the openclaw CLI until "
        "~/.config/task-pulse/env holds OPENCLAW_GATEWAY_TOKEN=…",
        f"would run: task-pulse --dir {machine.tasks} service install -- --openclaw telegram:123456789 "
        f"--openclaw-bin {OPENCLAW}"]
    assert "systemctl --user daemon-reload" in proc.stdout
    assert not machine.unit.exists() and not machine.skill.exists()
    assert all(c[0] in ("--version", "skills") or c[:2] == ["cron", "list"] for c in machine.openclaw_calls())


def test_dry_run_cron_prints_the_cron_command(machine: Machine) -> None:
    proc = machine.run("--channel", "irc", "--target", "#ops", "--dry-run", bus=False)
    assert proc.returncode == 0, proc.stderr
    assert "route: cron (no systemd user manager)" in proc.stdout
    drain = f'["{BIN / "task-pulse"}", "--dir", "{machine.tasks}", "drain", "--digest", "--markup", "markdown"]'
    assert (f"would run: {OPENCLAW} cron add --name 'Task pulse' --every 1m --command-argv '{drain}' --announce "
            "--channel irc --to '#ops' --declaration-key task-pulse --json") in proc.stdout
    assert machine.jobs() == [] and not machine.skill.exists()


def test_cron_route_twice_is_one_job_and_undo_removes_it_all(machine: Machine) -> None:
    first = machine.run("--channel", "irc", "--target", "#ops", bus=False)
    assert first.returncode == 0, first.stderr
    assert "cron job 'Task pulse' added (id job-1)" in first.stdout and machine.skill.exists()
    assert "task-pulsed is not running" in first.stdout  # the cron job only delivers what the daemon queues
    assert "does not find task-pulse on its PATH" in first.stdout  # the stand-in's skills info says it is missing
    second = machine.run("--channel", "irc", "--target", "#ops", bus=False, STANDIN_BINS_OK="1")
    assert second.returncode == 0, second.stderr
    assert "already there" in second.stdout and "skill live-task-pulse: ready" in second.stdout
    (job,) = machine.jobs()
    assert job["payload"]["argv"] == [str(BIN / "task-pulse"), "--dir", str(machine.tasks), "drain", "--digest",
                                      "--markup", "markdown"]
    assert job["delivery"] == {
        "channel": "irc", "to": "#ops"}
    undo = machine.run("--undo", bus=False)
    assert undo.returncode == 0, undo.stderr
    assert "removed cron job 'Task pulse' (id job-1)" in undo.stdout
    assert machine.jobs() == [] and not machine.skill.exists() and not machine.skill.parent.exists()
    assert machine.run("--undo", bus=False).stdout.count("removed") == 0  # twice: nothing left to remove


def test_sink_route_twice_is_one_service_and_undo_uninstalls_it(machine: Machine) -> None:
    for _ in range(2):
        proc = machine.run("--channel", "telegram", "--target", "123", STANDIN_BINS_OK="1")
        assert proc.returncode == 0, proc.stderr
    unit = machine.unit.read_text()
    assert f'"--openclaw" "telegram:123" "--openclaw-bin" "{OPENCLAW}"' in unit
    assert len(list(machine.unit.parent.iterdir())) == 1  # one unit, re-installed in place
    undo = machine.run("--undo")
    assert undo.returncode == 0, undo.stderr
    assert not machine.unit.exists() and not machine.skill.exists()


def test_switching_to_the_sink_removes_the_cron_job(machine: Machine) -> None:
    assert machine.run("--channel", "telegram", "--target", "1", "--via", "cron", bus=False).returncode == 0
    assert len(machine.jobs()) == 1
    proc = machine.run("--channel", "telegram", "--target", "1", "--via", "sink")
    assert proc.returncode == 0, proc.stderr
    assert machine.jobs() == [] and "removed cron job" in proc.stdout


def test_an_edited_skill_is_kept_by_undo(machine: Machine) -> None:
    assert machine.run("--channel", "irc", "--target", "#ops", bus=False).returncode == 0
    machine.skill.write_text("my notes\n")
    undo = machine.run("--undo", bus=False)
    assert "kept edited files" in undo.stdout and machine.skill.read_text() == "my notes\n"


@pytest.mark.parametrize("args, env, code, message", [
    ([], {}, 2, "needs --channel and --target"),
    (["--channel", "irc", "--target", "#x", "--via", "cron"], {"STANDIN_NO_GATEWAY": "1"}, 1,
     "Gateway not reachable at ws://127.0.0.1:18789 (ECONNREFUSED). OpenClaw's gateway runs its cron jobs"),
    (["--channel", "irc", "--target", "#x", "--openclaw-bin", "/nonexistent/openclaw"], {}, 1,
     "no openclaw program at /nonexistent/openclaw"),
])
def test_what_is_missing_is_said_plainly(machine: Machine, args: list[str], env: dict[str, str], code: int,
                                         message: str) -> None:
    proc = machine.run(*args, **env)
    assert proc.returncode == code and proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    machine.run("--undo", **env)  # what a failed setup did add is recorded, and undone
    assert not machine.skill.exists()


def test_an_old_openclaw_is_named(machine: Machine) -> None:
    proc = machine.run("--channel", "irc", "--target", "#x", "--dry-run", STANDIN_VERSION="OpenClaw 2026.3.1 (x)")
    assert "checked against OpenClaw 2026.9.6" in proc.stdout


def test_a_user_unit_is_put_back_by_undo_and_the_cron_route_keeps_its_other_options(machine: Machine) -> None:
    machine.unit.parent.mkdir(parents=True)
    assert subprocess.run([str(BIN / "task-pulse"), "--dir", str(machine.tasks), "service", "install", "--no-start",
                           "--", "--lang", "en"], env=clean_env(HOME=str(machine.home)), timeout=60).returncode == 0
    mine = machine.unit.read_text()
    assert machine.run("--channel", "telegram", "--target", "1", "--via", "sink").returncode == 0
    assert '"--openclaw" "telegram:1"' in machine.unit.read_text() and '"--lang" "en"' not in machine.unit.read_text()
    cron = machine.run("--channel", "telegram", "--target", "1", "--via", "cron")
    assert cron.returncode == 0, cron.stderr
    assert "--openclaw" not in machine.unit.read_text()  # the sink route's sink is gone, one way in
    undo = machine.run("--undo")
    assert undo.returncode == 0 and machine.unit.read_text() == mine  # the user's own unit, as it was
    assert "put back the unit" in undo.stdout


def test_undo_finds_the_profile_setup_used(machine: Machine, tmp_path: Path) -> None:
    assert machine.run("--channel", "irc", "--target", "#ops", "--via", "cron", "--profile", "work",
                       bus=False).returncode == 0
    calls_before = len(machine.openclaw_calls())
    assert machine.run("--undo", bus=False).returncode == 0
    undo_calls = machine.openclaw_calls()[calls_before:]
    assert all(c[:2] == ["--profile", "work"] for c in undo_calls) and machine.jobs() == []


def test_sink_setup_puts_the_gateway_token_in_the_private_env_file_and_undo_takes_it_out(machine: Machine) -> None:
    """The service talks to the running gateway with the token from OpenClaw's own config (JSON5), read from the
    file, kept in task-pulse's env file (mode 600) and never on a command line."""
    from tests.e2e.conftest import free_port

    config = machine.home / ".openclaw" / "openclaw.json"
    config.parent.mkdir(parents=True)
    port = free_port()
    config.write_text("// OpenClaw's config is JSON5\n{gateway: {mode: 'local', port: " + str(port) +
                      ", auth: {mode: 'token', token: 'gw-s3cret',},},}\n")
    env_file = machine.home / ".config" / "task-pulse" / "env"
    proc = machine.run("--channel", "telegram", "--target", "123", OPENCLAW_GATEWAY_URL="", STANDIN_BINS_OK="1")
    assert proc.returncode == 0, proc.stderr
    assert f"gateway ws://127.0.0.1:{port}: OPENCLAW_GATEWAY_TOKEN from OpenClaw's config is in " \
           "~/.config/task-pulse/env (mode 600)" in proc.stdout
    assert f"route: gateway ws://127.0.0.1:{port}: not answering" in proc.stdout  # the service install's --check
    assert "OPENCLAW_GATEWAY_TOKEN=gw-s3cret" in env_file.read_text()
    assert env_file.stat().st_mode & 0o777 == 0o600
    assert "gw-s3cret" not in machine.unit.read_text() + proc.stdout
    record = machine.home / ".config" / "task-pulse" / "openclaw-setup.json"
    assert record.stat().st_mode & 0o777 == 0o600
    undo = machine.run("--undo", OPENCLAW_GATEWAY_URL="")
    assert undo.returncode == 0, undo.stderr
    assert "took OPENCLAW_GATEWAY_TOKEN out of ~/.config/task-pulse/env" in undo.stdout
    assert "gw-s3cret" not in env_file.read_text()


def test_what_setup_keeps_of_an_old_unit_is_private_whatever_the_umask(machine: Machine) -> None:
    """The unit setup replaces may hold a sink's token: its copy in the setup record, and the unit `--undo` puts
    back, are the user's alone, also under `umask 000`."""
    machine.unit.parent.mkdir(parents=True)
    old_unit = "[Service]\nExecStart=/usr/bin/task-pulsed --webhook https://chat.example/bot123:SECRET/send\n"
    machine.unit.write_text(old_unit)
    proc = machine.run("--channel", "telegram", "--target", "123", STANDIN_BINS_OK="1", umask=0)
    assert proc.returncode == 0, proc.stderr
    record = machine.home / ".config" / "task-pulse" / "openclaw-setup.json"
    assert "bot123:SECRET" in record.read_text() and record.stat().st_mode & 0o777 == 0o600
    undo = machine.run("--undo", umask=0)
    assert undo.returncode == 0, undo.stderr
    assert machine.unit.read_text() == old_unit and machine.unit.stat().st_mode & 0o777 == 0o600
