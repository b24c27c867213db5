"""The systemd side: the rendered unit verified by the real systemd-analyze, and sd_notify on a real socket."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import BIN, Daemon, clean_env, kinds, run_tp, wait_for

STANDINS = Path(__file__).parent / "standins"


def install_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment of someone installing the service in `home` (whose own OpenClaw config, if any, is there:
    no gateway URL of ours for the unit to keep)."""
    env = clean_env(HOME=str(home), **extra)
    env.pop("XDG_CONFIG_HOME", None)
    env.pop("OPENCLAW_GATEWAY_URL", None)
    return env


def install(home: Path, tasks_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "service", "install", *args],
                          capture_output=True, text=True, env=install_env(home, **env), timeout=60)


def unit_value(unit: str, key: str) -> list[str]:
    return re.findall(rf"^{key}=(.*)$", unit, re.M)


def test_install_writes_exactly_one_unit_running_this_installation(tmp_path: Path, tasks_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    proc = install(home, tasks_dir, "--no-start", TASK_PULSE_LANG="en")
    assert proc.returncode == 0, proc.stderr
    units = list(home.rglob("*.service"))
    assert units == [home / ".config" / "systemd" / "user" / "task-pulsed.service"]
    unit = units[0].read_text()
    (exec_start,) = unit_value(unit, "ExecStart")
    binary = Path(exec_start.strip('"'))
    assert binary.is_absolute() and binary.is_file() and os.access(binary, os.X_OK)
    assert binary.parent == BIN  # the task-pulsed beside this task-pulse, not whatever PATH finds
    assert f'"TASK_PULSE_DIR={tasks_dir}"' in unit_value(unit, "Environment")
    assert '"TASK_PULSE_LANG=en"' in unit_value(unit, "Environment")
    assert unit_value(unit, "Type") == ["notify"] and unit_value(unit, "NoNewPrivileges") == ["yes"]
    assert "@" not in exec_start and "@ENVIRONMENT@" not in unit
    assert str(units[0]) in proc.stdout


@pytest.mark.parametrize("dir_name", ["tasks", "my tasks 100%"])
def test_rendered_unit_passes_systemd_analyze_verify(tmp_path: Path, dir_name: str) -> None:
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is part of this machine's image; the unit must be verified by it"
    home, runtime = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    tasks = tmp_path / dir_name
    assert install(home, tasks, "--no-start").returncode == 0
    unit_path = home / ".config" / "systemd" / "user" / "task-pulsed.service"
    proc = subprocess.run([analyze, "--user", "verify", str(unit_path)], capture_output=True, text=True,
                          env=install_env(home, XDG_RUNTIME_DIR=str(runtime)), timeout=60)
    ours = [line for line in (proc.stdout + proc.stderr).splitlines() if "task-pulsed" in line]
    assert ours == [] and proc.returncode == 0, proc.stdout + proc.stderr
    (env_line,) = unit_value(unit_path.read_text(), "Environment")
    assert "%%" in env_line if "%" in dir_name else True  # systemd specifiers are escaped


def test_install_passes_sink_options_through_and_verifies(tmp_path: Path, tasks_dir: Path) -> None:
    home, runtime = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    sink = f"{STANDINS / 'openclaw'} message send --channel telegram --target 123 --message"
    secrets = home / ".config" / "task-pulse" / "env"  # where the unit reads ${CHAT_TOKEN} from
    secrets.parent.mkdir(parents=True)
    secrets.write_text("# sink secrets\nCHAT_TOKEN='s3cret'\n")
    proc = install(home, tasks_dir, "--no-start", "--", "--webhook", "https://chat.example/h",
                   "--webhook-header", "Authorization: Bearer ${CHAT_TOKEN}", "--lang", "en")
    assert proc.returncode == 0, proc.stderr
    unit_path = home / ".config" / "systemd" / "user" / "task-pulsed.service"
    (exec_start,) = unit_value(unit_path.read_text(), "ExecStart")
    # ${CHAT_TOKEN} reaches task-pulsed literally ($$ in a unit), which reads it from its environment file
    assert '"--webhook-header" "Authorization: Bearer $${CHAT_TOKEN}"' in exec_start
    assert unit_value(unit_path.read_text(), "EnvironmentFile") == ["-%h/.config/task-pulse/env"]
    verify = subprocess.run(["systemd-analyze", "--user", "verify", str(unit_path)], capture_output=True, text=True,
                            env=install_env(home, XDG_RUNTIME_DIR=str(runtime)), timeout=60)
    assert verify.returncode == 0 and "task-pulsed" not in verify.stderr, verify.stderr
    assert install(home, tasks_dir, "--no-start", "--", "--exec", sink).returncode == 0
    assert f'"--exec" "{sink}"' in unit_path.read_text()


def test_verify_does_catch_a_broken_unit(tmp_path: Path) -> None:
    """The check above can fail: the same verify rejects a unit whose binary is missing."""
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    broken = tmp_path / "task-pulsed.service"
    broken.write_text("[Service]\nType=notify\nExecStart=/nonexistent/task-pulsed\nBogusKey=1\n")
    proc = subprocess.run(["systemd-analyze", "--user", "verify", str(broken)], capture_output=True, text=True,
                          env=clean_env(XDG_RUNTIME_DIR=str(runtime)), timeout=60)
    assert "task-pulsed" in proc.stderr


def test_without_systemctl_the_unit_is_written_and_the_way_to_run_it_is_said(tmp_path: Path, tasks_dir: Path) -> None:
    """Nothing runs the unit: exit 1 (no daemon runs, so nothing reaches the chat), with the command that runs it."""
    home = tmp_path / "home"
    home.mkdir()
    proc = install(home, tasks_dir, PATH=str(tmp_path))  # a PATH with no systemctl on it
    unit = home / ".config" / "systemd" / "user" / "task-pulsed.service"
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == (f"Error: wrote {unit}, but nothing runs it: systemctl is not installed. Nothing reaches "
                           f"the chat until task-pulsed runs: start it yourself and keep it running: "
                           f"{BIN / 'task-pulsed'} --dir {tasks_dir}\n")
    assert unit.exists()
    status = subprocess.run([str(BIN / "task-pulse"), "service", "status", "--json"], capture_output=True,
                            text=True, env=install_env(home, PATH=str(tmp_path)), timeout=60)
    assert '"installed": true' in status.stdout


def test_uninstall_removes_the_unit(tmp_path: Path, tasks_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    assert install(home, tasks_dir, "--no-start").returncode == 0
    proc = subprocess.run([str(BIN / "task-pulse"), "service", "uninstall"], capture_output=True, text=True,
                          env=install_env(home, PATH=str(tmp_path)), timeout=60)
    assert proc.returncode == 0 and "removed" in proc.stdout
    assert list(home.rglob("*.service")) == []


class NotifySocket:
    """An abstract AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self) -> None:
        self.name = f"task-pulse-test-{os.getpid()}-{time.monotonic_ns()}"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + self.name)
        self.sock.settimeout(0.2)
        self.messages: list[str] = []

    def receive(self) -> list[str]:
        try:
            while True:
                self.messages.append(self.sock.recv(4096).decode())
        except TimeoutError:
            pass
        return self.messages

    def assignments(self) -> list[str]:
        return [line for m in self.receive() for line in m.splitlines()]


def test_ready_after_the_scan_then_watchdog_then_stopping(tasks_dir: Path, daemons: list[Daemon]) -> None:
    task_id = run_tp(tasks_dir, "create", "Existing", "a", "b").stdout.strip()
    notify = NotifySocket()
    d = Daemon(tasks_dir, "--announce-existing",
               env=clean_env(NOTIFY_SOCKET="@" + notify.name, WATCHDOG_USEC="2000000"))
    d.start(wait_ready=False)
    daemons.append(d)
    wait_for(lambda: "READY=1" in notify.assignments(), 20, "READY=1")
    assert kinds(tasks_dir, task_id) == ["started"]  # the first scan was done before READY
    status = [a for a in notify.assignments() if a.startswith("STATUS=")]
    assert status and status[0] == "STATUS=watching 1 task, 0 stalled, 1 notification pending"  # English plurals
    ready_at = notify.assignments().index("READY=1")
    wait_for(lambda: notify.assignments()[ready_at:].count("WATCHDOG=1") >= 2, 30, "two watchdog pings")
    assert d.proc is not None
    d.proc.send_signal(signal.SIGTERM)
    assert d.proc.wait(15) == 0
    assert "STOPPING=1" in notify.assignments()


def test_watchdog_pid_of_another_process_means_no_pings(tasks_dir: Path, daemons: list[Daemon]) -> None:
    notify = NotifySocket()
    d = Daemon(tasks_dir, env=clean_env(NOTIFY_SOCKET="@" + notify.name, WATCHDOG_USEC="200000",
                                        WATCHDOG_PID="1"))
    daemons.append(d.start())
    wait_for(lambda: "READY=1" in notify.assignments(), 20, "READY=1")
    time.sleep(1)  # five watchdog intervals: none of them may ping
    assert "WATCHDOG=1" not in notify.assignments()


def test_no_notify_socket_is_a_silent_no_op(tasks_dir: Path, daemon: Daemon) -> None:
    assert "sd_notify" not in daemon.log() and "Traceback" not in daemon.log()


def test_logs_have_timestamps_unless_journald_adds_them(tasks_dir: Path, daemons: list[Daemon]) -> None:
    plain = Daemon(tasks_dir).start()
    daemons.append(plain)
    assert plain.stop() == 0
    journald = Daemon(tasks_dir, env=clean_env(JOURNAL_STREAM="8:12345")).start()
    daemons.append(journald)
    assert journald.stop() == 0
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ", plain.log())
    assert journald.log().startswith("INFO ")


# -- service install against a recording stand-in for systemctl ---------------------------------------------


class Manager:
    """The stand-in `systemctl` on PATH, its record of calls, and the daemon it started."""

    def __init__(self, tmp_path: Path) -> None:
        self.home = tmp_path / "home"
        self.home.mkdir()
        self.log = tmp_path / "systemctl.jsonl"
        self.path = f"{STANDINS}:{os.environ['PATH']}"

    def install(self, tasks_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return install(self.home, tasks_dir, *args, PATH=self.path, STANDIN_LOG=str(self.log), **env)

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def running_argv(self) -> list[str]:
        pid = int(self.log.with_suffix(".pid").read_text())
        return Path(f"/proc/{pid}/cmdline").read_text().split("\0")[:-1]

    def stop(self) -> None:
        pidfile = self.log.with_suffix(".pid")
        if pidfile.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pidfile.read_text()), signal.SIGTERM)

    @property
    def unit(self) -> Path:
        return self.home / ".config" / "systemd" / "user" / "task-pulsed.service"


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path)
    yield m
    m.stop()


START = [["--user", "daemon-reload"], ["--user", "enable", "task-pulsed.service"],
         ["--user", "restart", "task-pulsed.service"]]


def test_reinstall_restarts_the_running_daemon_with_the_new_command_line(manager: Manager, tasks_dir: Path) -> None:
    first = manager.install(tasks_dir, "--", "--lang", "en")
    assert first.returncode == 0, first.stderr
    assert manager.calls() == START
    wait_for(lambda: "--lang" in manager.running_argv(), 30, "the first daemon")
    old_argv = manager.running_argv()
    second = manager.install(tasks_dir, "--", "--lang", "zh", "--stall", "60")
    assert second.returncode == 0, second.stderr
    assert manager.calls() == START + START  # `restart`, not `enable --now`, which leaves the old process
    argv = manager.running_argv()
    assert argv != old_argv and argv[-4:] == ["--lang", "zh", "--stall", "60"]
    assert "journalctl --user -u task-pulsed" in second.stdout


def test_bad_daemon_options_exit_2_and_write_nothing(manager: Manager, tasks_dir: Path) -> None:
    proc = manager.install(tasks_dir, "--", "--bogus-flag")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "task-pulsed has no option --bogus-flag" in proc.stderr and "nothing written" in proc.stderr
    assert not manager.unit.exists() and manager.calls() == []
    missing = manager.install(tasks_dir, "--", "--webhook", "https://h.example/", "--webhook-header",
                              "Authorization: Bearer ${NOT_SET_ANYWHERE}")
    assert missing.returncode == 2 and "~/.config/task-pulse/env" in missing.stderr
    assert not manager.unit.exists()


def test_a_usage_error_is_not_restarted_by_systemd(manager: Manager, tasks_dir: Path) -> None:
    assert manager.install(tasks_dir, "--no-start").returncode == 0
    assert unit_value(manager.unit.read_text(), "RestartPreventExitStatus") == ["2"]
    bad = subprocess.run([str(BIN / "task-pulsed"), "--no-such-option"], capture_output=True, timeout=60)
    assert bad.returncode == 2  # what RestartPreventExitStatus=2 relies on


def test_a_failed_start_names_the_reason_and_the_log(manager: Manager, tasks_dir: Path) -> None:
    proc = manager.install(tasks_dir, STANDIN_FAIL="restart")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "Job for task-pulsed.service failed because the control process exited" in proc.stderr
    assert "journalctl --user -u task-pulsed" in proc.stderr
    failed_enable = manager.install(tasks_dir, STANDIN_FAIL="enable")
    assert "Failed to enable unit" in failed_enable.stderr and "Created symlink" not in failed_enable.stderr


def test_no_user_manager_says_nothing_runs_and_what_to_run(manager: Manager, tasks_dir: Path,
                                                            daemons: list[Daemon]) -> None:
    proc = manager.install(tasks_dir, STANDIN_NO_BUS="1")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1, proc.stderr
    assert "but nothing runs it: systemctl --user cannot reach a user manager (Failed to connect to bus" in proc.stderr
    assert f"keep it running: {BIN / 'task-pulsed'} --dir {tasks_dir}" in proc.stderr and manager.unit.exists()
    daemons.append(Daemon(tasks_dir).start())  # the user did as told: installing again is fine
    again = manager.install(tasks_dir, STANDIN_NO_BUS="1")
    assert again.returncode == 0, again.stderr
    assert f"a task-pulsed runs on {tasks_dir} already (started by hand)" in again.stdout


def test_reinstall_keeps_settings_the_unit_had(manager: Manager, tasks_dir: Path) -> None:
    assert manager.install(tasks_dir, "--no-start", TASK_PULSE_LANG="en", TASK_PULSE_STALL="60").returncode == 0
    again = manager.install(tasks_dir, "--no-start", TASK_PULSE_STALL="90")  # TASK_PULSE_LANG not set here
    assert again.returncode == 0, again.stderr
    env_lines = unit_value(manager.unit.read_text(), "Environment")
    assert '"TASK_PULSE_LANG=en"' in env_lines and '"TASK_PULSE_STALL=90"' in env_lines
    assert "kept TASK_PULSE_LANG=en from the installed unit" in again.stdout


def fake_openclaw(bin_dir: Path, node_version: str) -> None:
    """An `openclaw` that runs on `env node`, and the `node` PATH finds for it."""
    bin_dir.mkdir(parents=True, exist_ok=True)
    (bin_dir / "openclaw").write_text("#!/usr/bin/env node\nconsole.log('stand-in')\n")
    (bin_dir / "node").write_text(f"#!/bin/sh\necho {node_version}\n")
    for name in ("openclaw", "node"):
        (bin_dir / name).chmod(0o755)


def test_install_pins_openclaw_and_its_node_for_the_service(manager: Manager, tasks_dir: Path,
                                                             tmp_path: Path) -> None:
    bin_dir = tmp_path / "node-24" / "bin"
    fake_openclaw(bin_dir, "v24.21.0")
    manager.path = f"{bin_dir}:{manager.path}"
    proc = manager.install(tasks_dir, "--no-start", "--", "--openclaw", "telegram:123")
    assert proc.returncode == 0, proc.stderr
    unit = manager.unit.read_text()
    (exec_start,) = unit_value(unit, "ExecStart")
    assert exec_start.endswith(f'"--openclaw" "telegram:123" "--openclaw-bin" "{bin_dir / "openclaw"}"')
    assert f'"PATH={bin_dir}:/usr/local/bin:/usr/bin:/bin"' in unit_value(unit, "Environment")
    assert f"node: {bin_dir / 'node'} v24.21.0" in proc.stdout


def test_install_refuses_a_node_openclaw_cannot_run_on(manager: Manager, tasks_dir: Path, tmp_path: Path) -> None:
    bin_dir = tmp_path / "node-20" / "bin"
    fake_openclaw(bin_dir, "v20.20.2")
    manager.path = f"{bin_dir}:{manager.path}"
    proc = manager.install(tasks_dir, "--no-start", "--", "--openclaw", "irc:#ops")
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "v20.20.2; OpenClaw needs Node >=24.16 <25 || >=26.1" in proc.stderr
    assert not manager.unit.exists()


def test_run_through_a_link_the_unit_names_the_installation(tmp_path: Path, tasks_dir: Path) -> None:
    home = tmp_path / "home"
    (home / ".local" / "bin").mkdir(parents=True)
    link = home / ".local" / "bin" / "task-pulse"
    link.symlink_to(BIN / "task-pulse")
    proc = subprocess.run([str(link), "--dir", str(tasks_dir), "service", "install", "--no-start"],
                          capture_output=True, text=True, env=install_env(home), timeout=60)
    assert proc.returncode == 0, proc.stderr
    unit = (home / ".config" / "systemd" / "user" / "task-pulsed.service").read_text()
    assert unit_value(unit, "ExecStart") == [f'"{BIN / "task-pulsed"}"']


def test_reinstall_without_options_keeps_the_units_options_and_dir(manager: Manager, tmp_path: Path) -> None:
    other_dir = tmp_path / "agent-tasks"
    assert manager.install(other_dir, "--no-start", "--", "--lang", "en", "--stall", "60").returncode == 0
    home = manager.home
    again = subprocess.run([str(BIN / "task-pulse"), "service", "install", "--no-start"], capture_output=True,
                           text=True, env=install_env(home, PATH=manager.path, STANDIN_LOG=str(manager.log)),
                           timeout=60)  # an upgrade: no options, no --dir
    assert again.returncode == 0, again.stderr
    unit = manager.unit.read_text()
    assert unit_value(unit, "ExecStart")[0].endswith('"--lang" "en" "--stall" "60"')
    assert f'"TASK_PULSE_DIR={other_dir}"' in unit_value(unit, "Environment")
    assert "kept task-pulsed options from the installed unit: --lang en --stall 60" in again.stdout
    fresh = subprocess.run([str(BIN / "task-pulse"), "service", "install", "--no-start", "--fresh"],
                           capture_output=True, text=True, env=install_env(home), timeout=60)
    assert fresh.returncode == 0 and "--lang" not in manager.unit.read_text()


def test_the_unit_and_the_secrets_file_are_private_and_no_secret_is_echoed(manager: Manager, tasks_dir: Path) -> None:
    """A token written into the options (not by ${VAR}) must not reach other local users, nor the terminal."""
    token = "123456789:AAF-secret-token-value-0123456789abcde"
    secrets = manager.home / ".config" / "task-pulse" / "env"
    secrets.parent.mkdir(parents=True)
    secrets.write_text("CHAT_TOKEN=s3cr3t\n")
    secrets.chmod(0o644)
    proc = manager.install(tasks_dir, "--no-start", "--", "--webhook", f"https://api.telegram.org/bot{token}/send",
                           "--webhook-header", "X-Api-Key: plain-key-value", "--webhook-header",
                           "Authorization: Bearer ${CHAT_TOKEN}")
    assert proc.returncode == 0, proc.stderr
    assert token not in proc.stdout + proc.stderr and "plain-key-value" not in proc.stdout + proc.stderr
    assert "--webhook 'https://api.telegram.org/…' --webhook-header 'X-Api-Key: …'" in proc.stdout
    assert "'Authorization: Bearer ${CHAT_TOKEN}'" in proc.stdout  # a reference is no secret: shown
    assert stat.S_IMODE(manager.unit.stat().st_mode) == 0o600 and token in manager.unit.read_text()
    assert stat.S_IMODE(secrets.stat().st_mode) == 0o600 and "made" in proc.stdout
    again = manager.install(tasks_dir, "--no-start")  # the options kept from the unit are shown masked too
    assert again.returncode == 0 and token not in again.stdout and "kept task-pulsed options" in again.stdout


def test_status_counts_follow_what_other_processes_commit(tasks_dir: Path, daemons: list[Daemon]) -> None:
    notify = NotifySocket()
    d = Daemon(tasks_dir, env=clean_env(NOTIFY_SOCKET="@" + notify.name, WATCHDOG_USEC="400000"))
    daemons.append(d.start())

    def last_status() -> str:
        return [a for a in notify.assignments() if a.startswith("STATUS=")][-1]
    run_tp(tasks_dir, "create", "Counted", "a")
    wait_for(lambda: last_status().endswith("1 task, 0 stalled, 1 notification pending"), 30, "1 pending")
    run_tp(tasks_dir, "drain")  # another process's commit: the daemon counts again
    wait_for(lambda: last_status().endswith("1 task, 0 stalled, 0 notifications pending"), 30, "0 pending")


def test_a_dollar_in_the_tasks_dir_reaches_the_daemon_as_written(manager: Manager, tmp_path: Path) -> None:
    """In `Environment=` systemd gives `$` no meaning (systemd.exec): `$$` there reached the daemon as two dollars,
    and it created and watched `tasks$$team`. In `ExecStart=` `$$` is still how a `$` is written."""
    tasks = tmp_path / "tasks$team"
    tasks.mkdir()
    proc = manager.install(tasks, "--", "--webhook-header", "Authorization: Bearer ${CHAT_TOKEN}",
                           "--webhook", "https://chat.example/h", CHAT_TOKEN="t")
    assert proc.returncode == 0, proc.stderr
    unit = manager.unit.read_text()
    assert f'"TASK_PULSE_DIR={tasks}"' in unit_value(unit, "Environment")
    assert '"Authorization: Bearer $${CHAT_TOKEN}"' in unit_value(unit, "ExecStart")[0]
    wait_for(lambda: (tasks / ".pulse" / "daemon.lock").exists(), 30, "the daemon on the dir as written")
    assert not (tmp_path / "tasks$$team").exists()
    from task_pulse.service import installed_args, installed_environment

    assert installed_environment(unit)["TASK_PULSE_DIR"] == str(tasks)  # read back as written, too
    assert "Authorization: Bearer ${CHAT_TOKEN}" in installed_args(unit)


# -- the board's unit (`service install --board`) -------------------------------------------------------------


def test_install_with_the_board_writes_its_unit_which_systemd_analyze_verifies(tmp_path: Path,
                                                                               tasks_dir: Path) -> None:
    home, runtime = tmp_path / "home", tmp_path / "xdg"
    home.mkdir()
    runtime.mkdir(mode=0o700)
    proc = install(home, tasks_dir, "--no-start", "--board", TASK_PULSE_LANG="en")
    assert proc.returncode == 0, proc.stderr
    units = home / ".config" / "systemd" / "user"
    assert sorted(p.name for p in units.iterdir()) == ["task-pulse-board.service", "task-pulsed.service"]
    board = (units / "task-pulse-board.service").read_text()
    assert unit_value(board, "ExecStart") == [f'"{BIN / "task-pulse"}" "board"']
    assert f'"TASK_PULSE_DIR={tasks_dir}"' in unit_value(board, "Environment")
    assert '"TASK_PULSE_LANG=en"' in unit_value(board, "Environment")
    assert unit_value(board, "EnvironmentFile") == ["-%h/.config/task-pulse/env"]
    assert stat.S_IMODE((units / "task-pulse-board.service").stat().st_mode) == 0o600
    assert "systemctl --user enable task-pulsed task-pulse-board" in proc.stdout
    for unit in ("task-pulsed.service", "task-pulse-board.service"):
        verify = subprocess.run(["systemd-analyze", "--user", "verify", str(units / unit)], capture_output=True,
                                text=True, env=install_env(home, XDG_RUNTIME_DIR=str(runtime)), timeout=60)
        assert verify.returncode == 0 and "task-pulse" not in verify.stderr, verify.stderr
    again = install(home, tasks_dir, "--no-start")  # an upgrade keeps the board's unit, written anew
    assert again.returncode == 0 and "task-pulse-board.service" in again.stdout


def test_the_board_follows_the_daemons_shared_state_db() -> None:
    from task_pulse.service import board_command

    assert board_command(BIN / "task-pulsed", ["--state", "postgresql://pulse@db/pulse", "--lang", "en"]) == [
        str(BIN / "task-pulse"), "board", "--state", "postgresql://pulse@db/pulse"]
    assert board_command(BIN / "task-pulsed", ["--state=postgresql://${PG}@db/p"])[-1] == "postgresql://${PG}@db/p"
    assert board_command(BIN / "task-pulsed", []) == [str(BIN / "task-pulse"), "board"]


def test_install_with_the_board_starts_it_and_uninstall_stops_both(manager: Manager, tasks_dir: Path) -> None:
    proc = manager.install(tasks_dir, "--board", TASK_PULSE_BOARD_PORT="0")
    board_pid = manager.log.with_suffix(".task-pulse-board.service.pid")
    try:
        assert proc.returncode == 0, proc.stderr
        assert manager.calls() == [*START, ["--user", "enable", "task-pulse-board.service"],
                                   ["--user", "restart", "task-pulse-board.service"]]
        wait_for(board_pid.exists, 30, "the board started by the manager")
        pid = int(board_pid.read_text())
        assert Path(f"/proc/{pid}/cmdline").read_text().split("\0")[-3:-1] == [str(BIN / "task-pulse"), "board"]
        status = subprocess.run([str(BIN / "task-pulse"), "service", "status", "--json"], capture_output=True,
                                text=True, env=install_env(manager.home, PATH=manager.path,
                                                           STANDIN_LOG=str(manager.log)), timeout=60)
        assert '"board": ' in status.stdout and '"board": "not installed"' not in status.stdout
        gone = subprocess.run([str(BIN / "task-pulse"), "service", "uninstall"], capture_output=True, text=True,
                              env=install_env(manager.home, PATH=manager.path, STANDIN_LOG=str(manager.log)),
                              timeout=60)
        assert gone.returncode == 0 and "removed" in gone.stdout and "task-pulse-board.service" in gone.stdout
        assert ["--user", "disable", "--now", "task-pulse-board.service"] in manager.calls()
        wait_for(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in _state(pid), 30, "the board stopped")
        assert list(manager.home.rglob("*.service")) == []
    finally:
        if board_pid.exists():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(board_pid.read_text()), signal.SIGKILL)


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (FileNotFoundError, IndexError):
        return "gone"


def test_the_board_needs_its_extra_and_nothing_is_written_without(tmp_path: Path, tasks_dir: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    shadow = tmp_path / "shadow" / "uvicorn"  # first on the path: as if uvicorn were not installed
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('not installed', name='uvicorn')\n")
    proc = install(home, tasks_dir, "--no-start", "--board", PYTHONPATH=str(shadow.parent))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "pip install 'task-pulse[board]'" in proc.stderr and "nothing written" in proc.stderr
    assert list(home.rglob("*.service")) == []
