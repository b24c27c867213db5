"""`task-pulse openclaw setup`: wire a user's OpenClaw to task-pulse in one command, and undo it.

Two routes into the chat:

* `sink` (the default where a systemd user manager answers): the task-pulsed service delivers
  through `--openclaw CHANNEL:TARGET`, a live card per task.
* `cron` (the fallback, and the route without systemd): an OpenClaw command cron job runs
  `task-pulse drain --digest` every minute; it needs no model turn and posts nothing when there is
  no news. The daemon must still run to queue the messages: the service without a sink, or by hand.

Both install the skill into the workspace OpenClaw itself reports. Running it again changes nothing
that is already right (the cron job has a declaration key, the service is re-installed in place);
`--dry-run` prints every command instead of running it; `--undo` removes what setup recorded.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from task_pulse import service, skill
from task_pulse.errors import BadInput, OperationFailed
from task_pulse.openclaw import VERSION_CHECKED, OpenClawCLI, locate

CRON_KEY = "task-pulse"  # the cron job's declaration key: adding it again updates, never duplicates
CRON_NAME = "Task pulse"


def drain_argv(tasks_dir: Path) -> list[str]:
    """The cron job's command. It names the tasks dir: the gateway's HOME and environment are not yours."""
    return ["task-pulse", "--dir", str(tasks_dir), "drain", "--digest"]

RECORD = "~/.config/task-pulse/openclaw-setup.json"  # what setup added, so --undo removes just that
ROUTES = ("auto", "sink", "cron")


@dataclass(frozen=True)
class SetupOptions:
    tasks_dir: Path
    channel: str | None = None
    target: str | None = None
    via: str = "auto"
    workspace: Path | None = None
    profile: str | None = None
    openclaw_bin: str | None = None
    dry_run: bool = False


class Report:
    """What setup did, one line each; in a dry run, what it would run."""

    def __init__(self, dry_run: bool) -> None:
        self.dry_run = dry_run
        self.lines: list[str] = []

    def note(self, line: str) -> None:
        self.lines.append(line)

    def would(self, what: list[str] | str) -> bool:
        """In a dry run, record `what` (a command line or a step) and return True: the caller skips it."""
        if self.dry_run:
            self.lines.append(f"would run: {shlex.join(what)}" if isinstance(what, list) else f"would {what}")
        return self.dry_run


def user_manager_reachable() -> bool:
    systemctl = service.Systemctl()
    return systemctl.run("show-environment", check=False) is not None and systemctl.unavailable is None


def daemon_running(tasks_dir: Path) -> bool:
    """Whether a task-pulsed holds the tasks dir's daemon lock right now."""
    try:
        fd = os.open(tasks_dir / ".pulse" / "daemon.lock", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".") if p.isdigit())


def _open(options: SetupOptions, report: Report) -> OpenClawCLI:
    found = locate(options.openclaw_bin)
    cli = OpenClawCLI(found, options.profile)
    version = cli.version()
    node = f", on Node {found.node_version}" if found.node_version else ""
    report.note(f"OpenClaw {version} at {found.program}{node}")
    if _version_tuple(version) < _version_tuple(VERSION_CHECKED):
        report.note(f"note: task-pulse was checked against OpenClaw {VERSION_CHECKED}; upgrade if a step fails")
    return cli


def setup(options: SetupOptions) -> list[str]:
    if not options.channel or not options.target:
        raise BadInput("openclaw setup needs --channel and --target (e.g. --channel telegram --target 123456789)")
    if options.profile and not os.environ.get("OPENCLAW_STATE_DIR"):
        # What `openclaw --profile NAME` means; the service keeps it, so its openclaw calls use the same state.
        os.environ["OPENCLAW_STATE_DIR"] = os.path.expanduser(f"~/.openclaw-{options.profile}")
    report = Report(options.dry_run)
    cli = _open(options, report)
    workspace = options.workspace or cli.workspace()
    dest = workspace / "skills" / "live-task-pulse"
    if not report.would(f"install the skill into {dest}"):
        report.lines += skill.install(dest)
    via = options.via
    if via == "auto":
        via = "sink" if user_manager_reachable() else "cron"
        why = "a systemd user manager answers" if via == "sink" else "no systemd user manager"
        report.note(f"route: {via} ({why})")
    record: dict[str, Any] = {"skill": str(dest), "route": via, "tasksDir": str(options.tasks_dir)}
    if via == "sink":
        _remove_cron_job(cli, report)  # switching routes: one way in, not two
        _install_service(options, report, ["--openclaw", f"{options.channel}:{options.target}", "--openclaw-bin",
                                           str(cli.install.program)])
        record["service"] = True
    else:
        record["cronJob"] = _add_cron_job(cli, options, report)
        if user_manager_reachable():
            _install_service(options, report, [])  # the daemon queues; the cron job delivers
            record["service"] = True
        elif not daemon_running(options.tasks_dir):
            where = shlex.quote(str(options.tasks_dir))
            report.note(f"task-pulsed is not running on {where}: the cron job only delivers what it queues. "
                        f"Start it and keep it running: task-pulsed --dir {where}")
    if not options.dry_run:
        _check_skill_visible(cli, report)
        _save_record(record)
    return report.lines


def _install_service(options: SetupOptions, report: Report, daemon_args: list[str]) -> None:
    command = ["task-pulse", "--dir", str(options.tasks_dir), "service", "install",
               *(["--", *daemon_args] if daemon_args else [])]
    if report.would(command):
        report.note("  (it checks the options, writes ~/.config/systemd/user/task-pulsed.service, then runs "
                    "systemctl --user daemon-reload, enable task-pulsed.service, restart task-pulsed.service)")
        return
    report.lines += service.install(options.tasks_dir, start=True, daemon_args=daemon_args)


def _add_cron_job(cli: OpenClawCLI, options: SetupOptions, report: Report) -> str | None:
    assert options.channel and options.target
    drain = drain_argv(options.tasks_dir)
    args = ["cron", "add", "--name", CRON_NAME, "--every", "1m", "--command-argv", json.dumps(drain),
            "--announce", "--channel", options.channel, "--to", options.target, "--declaration-key", CRON_KEY,
            "--json"]
    if report.would(cli.argv(*args)):
        return None
    try:
        reply = cli.call(*args)
    except OperationFailed as exc:
        if "not reachable" in str(exc):
            raise OperationFailed(f"{exc} OpenClaw's gateway runs its cron jobs: start it (openclaw gateway run), "
                                  "or choose --via sink") from None
        raise
    reply = reply if isinstance(reply, dict) else {}
    job = reply.get("job", reply)
    state = "added" if reply.get("created", True) else "updated" if reply.get("updated") else "already there"
    report.note(f"cron job {CRON_NAME!r} {state} (id {job.get('id', '?')}): every minute, "
                f"{shlex.join(drain)} → {options.channel} {options.target}")
    report.note("it runs on the gateway's PATH: task-pulse must be on it (the README links it into ~/.local/bin)")
    return job.get("id")


def _remove_cron_job(cli: OpenClawCLI, report: Report) -> None:
    try:
        jobs = cli.cron_jobs()
    except OperationFailed:
        return  # no gateway, so no cron job of ours can be running either
    ours = [j for j in jobs if j.get("declarationKey") == CRON_KEY]
    for job in ours:
        if not report.would(cli.argv("cron", "rm", str(job["id"]), "--json")):
            cli.call("cron", "rm", str(job["id"]), "--json")
            report.note(f"removed cron job {CRON_NAME!r} (id {job['id']})")


def _check_skill_visible(cli: OpenClawCLI, report: Report) -> None:
    try:
        info = cli.call("skills", "info", "live-task-pulse", "--json")
    except OperationFailed as exc:
        report.note(f"warning: OpenClaw does not list the skill: {exc}")
        return
    missing = (info.get("missing") or {}).get("bins") if isinstance(info, dict) else None
    if missing:
        report.note(f"warning: OpenClaw does not find {', '.join(missing)} on its PATH, so the skill is hidden "
                    "from the model: link the commands into ~/.local/bin and put that on the gateway's PATH")
    else:
        report.note("skill live-task-pulse: ready (visible to the model)")


def _record_path() -> Path:
    return Path(os.path.expanduser(RECORD))


def _save_record(record: dict[str, Any]) -> None:
    path = _record_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def undo(options: SetupOptions) -> list[str]:
    """Remove what setup added: the cron job, the service it installed, the skill (unless edited)."""
    report = Report(options.dry_run)
    try:
        record = json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    try:
        cli = _open(options, report)
    except OperationFailed as exc:
        report.note(f"cron job not checked: {exc}")
    else:
        _remove_cron_job(cli, report)
    if record.get("service") and not report.would(["task-pulse", "service", "uninstall"]):
        report.lines += service.uninstall()
    dest = Path(record["skill"]) if record.get("skill") else (options.workspace / "skills" / "live-task-pulse"
                                                             if options.workspace else None)
    if dest is not None and not report.would(f"remove the skill from {dest}"):
        report.lines += skill.remove(dest)
    if not options.dry_run and _record_path().exists():
        _record_path().unlink()
    if not report.lines:
        report.note("nothing to undo")
    return report.lines

