"""`task-pulse service`: install task-pulsed as a systemd user service, remove it, report on it.

The unit is rendered from the template in systemd/ with the absolute path of the task-pulsed
that belongs to this installation (the one beside this `task-pulse`), so the service runs the same
code the user just installed, whatever PATH systemd has.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from task_pulse.errors import OperationFailed

UNIT_NAME = "task-pulsed.service"
# Settings the service should keep when they were set where `service install` ran.
_PASSED_ON = ("TASK_PULSE_LANG", "TASK_PULSE_STALL", "TASK_PULSE_TZ", "TASK_PULSE_KEEP_DAYS",
              "TASK_PULSE_PROGRESS_INTERVAL", "TASK_PULSE_REDACT")
LINGER_HINT = "to keep it running without a login session: loginctl enable-linger $USER"


def unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user"


def daemon_executable() -> Path:
    """The task-pulsed installed next to this task-pulse (or this Python), else the one on PATH."""
    candidates = [Path(sys.argv[0]).absolute().parent / "task-pulsed", Path(sys.executable).parent / "task-pulsed"]
    found = shutil.which("task-pulsed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.absolute()
    raise OperationFailed("cannot find the task-pulsed executable of this installation (reinstall task-pulse)")


def _quote(value: str) -> str:
    """One word of a unit file line: `%` and `$` are systemd's specifiers, quotes keep spaces in."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%").replace("$", "$$")
    return f'"{escaped}"'


def render_unit(executable: Path, tasks_dir: Path, environment: dict[str, str], daemon_args: list[str]) -> str:
    template = (files("task_pulse") / UNIT_NAME).read_text(encoding="utf-8")
    env = {"TASK_PULSE_DIR": str(tasks_dir), **environment}
    lines = "\n".join(f"Environment={_quote(f'{k}={v}')}" for k, v in env.items())
    command = " ".join(_quote(word) for word in [str(executable), *daemon_args])
    return template.replace("@TASK_PULSED@", command).replace("@ENVIRONMENT@", lines)


@dataclass
class Systemctl:
    """`systemctl --user`, or the reason it cannot be used here."""

    unavailable: str | None = None
    ran: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if shutil.which("systemctl") is None:
            self.unavailable = "systemctl is not installed"

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str] | None:
        if self.unavailable:
            return None
        cmd = ["systemctl", "--user", *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            reason = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[0]
            if "bus" in reason.lower() or "XDG_RUNTIME_DIR" in reason:
                self.unavailable = f"systemctl --user cannot reach a user manager ({reason})"
                return None
            if check:
                raise OperationFailed(f"{' '.join(cmd)} failed: {reason}")
        self.ran.append(" ".join(cmd))
        return proc


def install(tasks_dir: Path, *, start: bool, daemon_args: list[str] | None = None) -> list[str]:
    """Write the unit; unless `start` is False, reload, enable and start it. Returns what was done.

    `daemon_args` are added to task-pulsed's command line (a sink, say: `--exec "…"`).
    """
    directory = unit_dir()
    directory.mkdir(parents=True, exist_ok=True)
    unit_path = directory / UNIT_NAME
    environment = {k: os.environ[k] for k in _PASSED_ON if os.environ.get(k)}
    text = render_unit(daemon_executable(), tasks_dir.absolute(), environment, daemon_args or [])
    tmp = unit_path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, unit_path)
    done = [f"wrote {unit_path} (tasks dir {tasks_dir.absolute()})"]
    if daemon_args:
        done.append(f"task-pulsed runs with: {' '.join(daemon_args)}")
    done += [f"kept {k}={v} from your environment" for k, v in environment.items()]
    if not start:
        return done + ["not started (--no-start): systemctl --user enable --now task-pulsed"]
    systemctl = Systemctl()
    systemctl.run("daemon-reload")
    systemctl.run("enable", "--now", UNIT_NAME)
    done += [f"ran {c}" for c in systemctl.ran]
    if systemctl.unavailable:
        raise OperationFailed(f"the unit is written to {unit_path}, but it is not running: {systemctl.unavailable}. "
                              "Start it in a user session with: systemctl --user enable --now task-pulsed")
    return done + [LINGER_HINT]


def uninstall() -> list[str]:
    unit_path = unit_dir() / UNIT_NAME
    systemctl = Systemctl()
    systemctl.run("disable", "--now", UNIT_NAME, check=False)
    done = [f"ran {c}" for c in systemctl.ran]
    if unit_path.exists():
        unit_path.unlink()
        done.append(f"removed {unit_path}")
        systemctl.run("daemon-reload", check=False)
    else:
        done.append(f"no unit at {unit_path}")
    if systemctl.unavailable:
        done.append(f"note: {systemctl.unavailable}")
    return done


def status() -> dict[str, object]:
    unit_path = unit_dir() / UNIT_NAME
    systemctl = Systemctl()
    enabled = systemctl.run("is-enabled", UNIT_NAME, check=False)
    active = systemctl.run("is-active", UNIT_NAME, check=False)
    return {
        "unit": str(unit_path),
        "installed": unit_path.exists(),
        "enabled": None if enabled is None else enabled.stdout.strip() or "unknown",
        "active": None if active is None else active.stdout.strip() or "unknown",
        "systemctl": systemctl.unavailable or "ok",
    }
