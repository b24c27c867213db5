"""`task-pulse service`: install task-pulsed as a systemd user service, remove it, report on it.

The unit is rendered from the template in systemd/ with the absolute path of the task-pulsed
that belongs to this installation (the one beside this `task-pulse`), so the service runs the same
code the user just installed, whatever PATH systemd has.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
import urllib.parse
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path

from task_pulse.errors import BadInput, OperationFailed
from task_pulse.store import TaskStore

UNIT_NAME = "task-pulsed.service"
# The board (`task-pulse board`), a unit of its own beside the daemon's (`service install --board`).
BOARD_UNIT = "task-pulse-board.service"
# Settings the service should keep when they were set where `service install` ran.
_PASSED_ON = ("TASK_PULSE_LANG", "TASK_PULSE_STALL", "TASK_PULSE_TZ", "TASK_PULSE_KEEP_DAYS",
              "TASK_PULSE_PROGRESS_INTERVAL", "TASK_PULSE_REDACT", "OPENCLAW_STATE_DIR", "OPENCLAW_WORKSPACE_DIR",
              "OPENCLAW_CONFIG_PATH", "OPENCLAW_GATEWAY_URL", "OPENCLAW_GATEWAY_PORT")
# Secrets for a sink, read by the unit (EnvironmentFile=-%h/.config/task-pulse/env).
SECRETS_FILE = "~/.config/task-pulse/env"
LINGER_HINT = "to keep it running without a login session: loginctl enable-linger $USER"


class NotRunning(OperationFailed):
    """The unit is written, but no user manager is there to run it (exit 1: no daemon runs)."""


def unit_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "systemd" / "user"


def daemon_executable() -> Path:
    """The task-pulsed installed next to this task-pulse (or this Python), else the one on PATH."""
    # resolve(): run through a link in ~/.local/bin, the unit still names the installation itself
    candidates = [Path(sys.argv[0]).resolve().parent / "task-pulsed", Path(sys.executable).parent / "task-pulsed"]
    found = shutil.which("task-pulsed")
    if found:
        candidates.append(Path(found))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate.absolute()
    raise OperationFailed("cannot find the task-pulsed executable of this installation (reinstall task-pulse)")


def _quote(value: str, *, command: bool = True) -> str:
    """One word of a unit file line, quoted (quotes keep spaces in): `%` is a systemd specifier everywhere; `$` is
    a variable only in a command line (`ExecStart=`), where `$$` stands for it. In `Environment=` it has no meaning
    at all (systemd.exec), and `$$` would reach the daemon as two dollars (`~/tasks$team` became `tasks$$team`)."""
    if "\n" in value or "\r" in value:
        raise BadInput(f"a line break cannot go into a unit file: {value!r}")
    escaped = value.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%")
    return f'"{escaped.replace("$", "$$") if command else escaped}"'


def render_unit(executable: Path, tasks_dir: Path, environment: dict[str, str], daemon_args: list[str],
                template: str = UNIT_NAME) -> str:
    """A unit from its template in systemd/ (task-pulsed's, or the board's): its command and environment."""
    text = (files("task_pulse") / template).read_text(encoding="utf-8")
    env = {"TASK_PULSE_DIR": str(tasks_dir), **environment}
    lines = "\n".join(f"Environment={_quote(f'{k}={v}', command=False)}" for k, v in env.items())
    command = " ".join(_quote(word) for word in [str(executable), *daemon_args])
    return text.replace("@TASK_PULSED@", command).replace("@COMMAND@", command).replace("@ENVIRONMENT@", lines)


def board_command(daemon: Path, daemon_args: list[str]) -> list[str]:
    """The board's command line for its unit: the `task-pulse` beside this task-pulsed, reading the shared
    state db when the daemon forwards to one (its `--state`). BadInput without the board extra."""
    try:
        import starlette  # noqa: F401 - only whether they are there
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise BadInput(f"--board needs the board extra ({exc.name} is missing), nothing written: "
                       "pip install 'task-pulse[board]'") from None
    program = daemon.parent / "task-pulse"
    if not program.is_file():
        found = shutil.which("task-pulse")
        if found is None:
            raise OperationFailed("cannot find the task-pulse executable of this installation (reinstall task-pulse)")
        program = Path(found).absolute()
    state: list[str] = []
    for i, arg in enumerate(daemon_args):
        if arg == "--state" and i + 1 < len(daemon_args):
            state = ["--state", daemon_args[i + 1]]
        elif arg.startswith("--state="):
            state = ["--state", arg.split("=", 1)[1]]
    return [str(program), "board", *state]


def _unescape(word: str, *, command: bool = True) -> str:
    """Undo `_quote`'s specifier escapes (`%%`, and `$$` in a command line) in one word read back from a unit."""
    word = word.replace("%%", "%")
    return word.replace("$$", "$") if command else word


def installed_environment(unit_text: str) -> dict[str, str]:
    """The `Environment=` assignments of a unit this module wrote (undoing `_quote`)."""
    found: dict[str, str] = {}
    for match in re.finditer(r'^Environment="((?:[^"\\]|\\.)*)"$', unit_text, re.M):
        word = _unescape(re.sub(r"\\(.)", r"\1", match.group(1)), command=False)
        name, _, value = word.partition("=")
        found[name] = value
    return found


def _reason(stderr: str, returncode: int) -> str:
    """The line of systemctl's stderr that says what went wrong, not "Created symlink …"."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if line.startswith(("Job for", "Failed to", "Unit ")) or "failed" in line.lower():
            return line
    return lines[-1] if lines else f"exit {returncode}"


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
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            reason = _reason(proc.stderr, proc.returncode)
            if "bus" in reason.lower() or "XDG_RUNTIME_DIR" in reason:
                self.unavailable = f"systemctl --user cannot reach a user manager ({reason})"
                return None
            if check:
                raise OperationFailed(f"{' '.join(cmd)} failed: {reason} "
                                      f"(its log: journalctl --user -u {UNIT_NAME.removesuffix('.service')} -n 50)")
        self.ran.append(" ".join(cmd))
        return proc


def read_env_file(path: Path) -> dict[str, str]:
    """`KEY=value` lines of the unit's EnvironmentFile (comments, blanks and quotes as systemd reads them)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (FileNotFoundError, IsADirectoryError):
        return {}
    values: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.strip().partition("=")
        if sep and name and not name.startswith(("#", ";")):
            value = value.strip()
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            values[name.strip()] = value
    return values


def write_private(path: Path, text: str) -> None:
    """Replace `path` with `text`, readable by its owner only from the first byte."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        os.fchmod(fd, 0o600)  # an older .tmp left by a crash keeps its mode otherwise
        fh.write(text)
    os.replace(tmp, path)


def set_secret(name: str, value: str | None) -> bool:
    """Put `NAME=value` into the service's secrets file (None: take NAME out), written private whatever the
    umask. Returns whether the file changed."""
    path = Path(os.path.expanduser(SECRETS_FILE))
    if value is not None and ("\n" in value or "\r" in value):
        raise BadInput(f"{name}: a line break cannot go into {SECRETS_FILE}")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        lines = []
    kept = [line for line in lines if line.strip().partition("=")[0].strip() != name]
    new = kept + ([f"{name}={value}"] if value is not None else [])
    if new == lines:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, "".join(f"{line}\n" for line in new))
    return True


def _private_secrets_file() -> list[str]:
    """The secrets file is for secrets: make it the owner's alone if it is not."""
    path = Path(os.path.expanduser(SECRETS_FILE))
    try:
        st = path.lstat()
    except FileNotFoundError:
        return []
    if stat.S_ISREG(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o600)
        return [f"made {path} private (mode 600): it holds secrets"]
    return []


# A header value that names its secret instead of holding it (`Bearer ${CHAT_TOKEN}`): fine to show.
_REFERENCE_ONLY = re.compile(r"(?:[A-Za-z-]+[ \t]+)?\$\{[A-Za-z_][A-Za-z0-9_]*\}")


def shown_args(daemon_args: list[str]) -> str:
    """The options as a person may see them: webhook URLs by scheme and host, header values and
    anything that looks like a secret masked. A header that only names its secret (`${VAR}`) is shown."""
    from task_pulse.masking import redact

    shown = []
    for i, arg in enumerate(daemon_args):
        option = daemon_args[i - 1] if i else ""
        name, eq, value = arg.partition("=")
        if eq and name in ("--webhook", "--webhook-header"):
            option, arg = name, value
        if option == "--state" or name == "--state" and eq:
            from task_pulse.state.shared import shown_url

            arg = shown_url(value if name == "--state" and eq else arg)
        elif option == "--webhook":
            parts = urllib.parse.urlsplit(arg)
            arg = f"{parts.scheme}://{parts.netloc.rpartition('@')[2] or '?'}/…"  # no user:password, no path
        elif option == "--webhook-header" and not _REFERENCE_ONLY.fullmatch(arg.partition(":")[2].strip()):
            arg = f"{arg.partition(':')[0]}: …"
        else:
            arg = redact(arg)
        shown.append(f"{name}={arg}" if eq and name in ("--webhook", "--webhook-header", "--state") else arg)
    return shlex.join(shown)


def check_daemon_args(executable: Path, tasks_dir: Path, daemon_args: list[str]) -> list[str]:
    """Let task-pulsed's own parser judge the options before anything is written.

    A unit with an option task-pulsed refuses could never start; this runs `task-pulsed … --check`,
    which parses everything (and builds the sink) the way the service will, then exits. Returns what it
    says about the way into the chat (`route: …`, e.g. whether the OpenClaw gateway answers).
    """
    env = {**os.environ, **read_env_file(Path(os.path.expanduser(SECRETS_FILE))), "TASK_PULSE_DIR": str(tasks_dir)}
    proc = subprocess.run([str(executable), *daemon_args, "--check"], capture_output=True, text=True, env=env,
                          timeout=60)
    routes = [line for line in proc.stdout.splitlines() if line.startswith("route: ")]
    if proc.returncode != 0:
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        reason = next((line for line in lines if line.startswith("Error:")), lines[-1] if lines else "")
        reason = reason.removeprefix("Error: ") or (routes[-1] if routes else f"exit {proc.returncode}")
        if "environment variable" in reason:
            reason += f" (the service reads secrets from {SECRETS_FILE}: put it there as NAME=value)"
        raise BadInput(f"task-pulsed refuses these options, nothing written: {reason}")
    return routes


def _absolute_commands(daemon_args: list[str]) -> list[str]:
    """`--exec`/`--exec-edit` commands with their program as a full path: the service has no login PATH."""
    out = list(daemon_args)
    for i, arg in enumerate(out[:-1]):
        if arg in ("--exec", "--exec-edit"):
            words = shlex.split(out[i + 1])
            found = shutil.which(words[0]) if words else None
            if found:
                out[i + 1] = shlex.join([os.path.abspath(found), *words[1:]])
    return out


def _pin_openclaw(daemon_args: list[str]) -> tuple[list[str], dict[str, str], list[str]]:
    """Write down the openclaw (and the Node) found here: a user service does not get the login PATH."""
    from task_pulse import openclaw

    given = next((daemon_args[i + 1] for i, a in enumerate(daemon_args[:-1]) if a == "--openclaw-bin"), None)
    given = given or next((a.split("=", 1)[1] for a in daemon_args if a.startswith("--openclaw-bin=")), None)
    found = openclaw.locate(given)
    given_at = {i for i, a in enumerate(daemon_args) if a == "--openclaw-bin"}
    args = [a for i, a in enumerate(daemon_args)
            if i not in given_at and i - 1 not in given_at and not a.startswith("--openclaw-bin=")]
    args += ["--openclaw-bin", str(found.program)]  # absolute, whatever was given
    notes = [f"openclaw: {found.program}"]
    if found.node_dir is None:
        return args, {}, notes
    path = os.pathsep.join([str(found.node_dir), "/usr/local/bin", "/usr/bin", "/bin"])
    return args, {"PATH": path}, [*notes, f"node: {found.node_dir / 'node'} {found.node_version} (first on the "
                                          "service's PATH)"]


def installed_args(unit_text: str) -> list[str]:
    """task-pulsed's options in a unit this module wrote (its ExecStart after the program)."""
    found = re.search(r"^ExecStart=(.*)$", unit_text, re.M)
    words = shlex.split(found.group(1)) if found else []
    return [_unescape(w) for w in words[1:]]


def install(tasks_dir: Path, *, start: bool, daemon_args: list[str] | None = None, keep: bool = True,
            dir_given: bool = True, board: bool = False) -> list[str]:
    """Check the options, write the unit; unless `start` is False, (re)start it. Returns what was done.

    `daemon_args` are added to task-pulsed's command line (a sink, say: `--exec "…"`; None: not
    given, [] explicitly none). Running it
    again applies the new unit: the service is restarted, so an upgrade, a new sink or a new dir
    takes effect at once. With `keep`, what the installed unit had and this call does not say is
    kept: its options when `daemon_args` is None, its tasks dir unless `dir_given`, settings
    the environment no longer sets (re-installing from another shell must not drop TASK_PULSE_LANG,
    nor an upgrade the sink).
    """
    unit_path = unit_dir() / UNIT_NAME
    before_text = unit_path.read_text(encoding="utf-8") if keep and unit_path.is_file() else ""
    before = installed_environment(before_text)
    kept_notes = []
    if daemon_args is None and installed_args(before_text):
        daemon_args = installed_args(before_text)
        kept_notes.append(f"kept task-pulsed options from the installed unit: {shown_args(daemon_args)} "
                          "(--fresh drops them)")
    if not dir_given and before.get("TASK_PULSE_DIR"):
        tasks_dir = Path(before["TASK_PULSE_DIR"])
    daemon_args = list(daemon_args or [])
    executable = daemon_executable()
    board_path = unit_dir() / BOARD_UNIT
    board_line = board_command(executable, daemon_args) if board or board_path.is_file() else None
    routes = check_daemon_args(executable, tasks_dir.absolute(), daemon_args)
    notes: list[str] = []
    path_env: dict[str, str] = {}
    daemon_args = _absolute_commands(daemon_args)
    if "--openclaw" in daemon_args or any(a.startswith("--openclaw=") for a in daemon_args):
        daemon_args, path_env, notes = _pin_openclaw(daemon_args)
    unit_path.parent.mkdir(parents=True, exist_ok=True)
    from_env = {k: os.environ[k] for k in _PASSED_ON if os.environ.get(k)}
    kept = {k: v for k, v in before.items() if k in _PASSED_ON and k not in from_env}
    environment = {**kept, **from_env, **path_env}
    text = render_unit(executable, tasks_dir.absolute(), environment, daemon_args)
    write_private(unit_path, text)  # its command line may hold a webhook URL with a token in it
    done = [f"wrote {unit_path} (tasks dir {tasks_dir.absolute()})"]
    if board_line is not None:
        write_private(board_path, render_unit(Path(board_line[0]), tasks_dir.absolute(), environment, board_line[1:],
                                              BOARD_UNIT))
        done.append(f"wrote {board_path} (the board: http://127.0.0.1:8765/; TASK_PULSE_BOARD_BIND, "
                    f"TASK_PULSE_BOARD_PORT and TASK_PULSE_BOARD_TOKEN in {SECRETS_FILE})")
    done += _private_secrets_file()
    if daemon_args:
        done.append(f"task-pulsed runs with: {shown_args(daemon_args)}")
    done += kept_notes + notes + routes
    done += [f"kept {k}={v} from your environment" for k, v in from_env.items()]
    done += [f"kept {k}={v} from the installed unit" for k, v in kept.items()]
    units = [UNIT_NAME] + ([BOARD_UNIT] if board_line is not None else [])
    if not start:
        names = " ".join(u.removesuffix(".service") for u in units)
        return done + [f"not started (--no-start): systemctl --user daemon-reload && "
                       f"systemctl --user enable {names} && systemctl --user restart {names}"]
    systemctl = Systemctl()
    systemctl.run("daemon-reload")
    for unit in units:
        systemctl.run("enable", unit)
        systemctl.run("restart", unit)  # starts it if stopped; a running one picks up the new unit
    done += [f"ran {c}" for c in systemctl.ran]
    if systemctl.unavailable:
        # A container, or a machine without a user session: no user manager, so nothing runs the unit.
        where = tasks_dir.absolute()
        command = f"{executable} --dir {shlex.quote(str(where))}"
        if TaskStore(where).daemon_running():
            return done + [f"not started as a service: {systemctl.unavailable}",
                           f"a task-pulsed runs on {where} already (started by hand): keep it running ({command})"]
        board_too = f" (and the board: {shlex.join(board_line)})" if board_line is not None else ""
        raise NotRunning(f"wrote {unit_path}, but nothing runs it: {systemctl.unavailable}. Nothing reaches the "
                         f"chat until task-pulsed runs: start it yourself and keep it running: {command}{board_too}")
    return done + ["running: journalctl --user -u task-pulsed -f shows its log", LINGER_HINT]


def restart() -> list[str]:
    """Reload the units and restart the service (after its unit was changed by hand)."""
    systemctl = Systemctl()
    systemctl.run("daemon-reload", check=False)
    systemctl.run("restart", UNIT_NAME, check=False)
    return [f"ran {c}" for c in systemctl.ran] + ([f"note: {systemctl.unavailable}"] if systemctl.unavailable else [])


def uninstall() -> list[str]:
    """Stop and remove task-pulsed's unit, and the board's if it is installed."""
    unit_path, board_path = unit_dir() / UNIT_NAME, unit_dir() / BOARD_UNIT
    systemctl = Systemctl()
    systemctl.run("disable", "--now", UNIT_NAME, check=False)
    if board_path.exists():
        systemctl.run("disable", "--now", BOARD_UNIT, check=False)
    done = [f"ran {c}" for c in systemctl.ran]
    if board_path.exists():
        board_path.unlink()
        done.append(f"removed {board_path}")
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
    board_path = unit_dir() / BOARD_UNIT
    board = systemctl.run("is-active", BOARD_UNIT, check=False) if board_path.exists() else None
    return {
        "unit": str(unit_path),
        "installed": unit_path.exists(),
        "enabled": None if enabled is None else enabled.stdout.strip() or "unknown",
        "active": None if active is None else active.stdout.strip() or "unknown",
        "board": "not installed" if not board_path.exists() else None if board is None
        else board.stdout.strip() or "unknown",
        "systemctl": systemctl.unavailable or "ok",
    }
