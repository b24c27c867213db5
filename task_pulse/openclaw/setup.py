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
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from task_pulse import service, skill
from task_pulse.errors import BadInput, OperationFailed
from task_pulse.openclaw import VERSION_CHECKED, OpenClawCLI, gateway, locate
from task_pulse.store import TaskStore

CRON_KEY = "task-pulse"  # the cron job's declaration key: adding it again updates, never duplicates
CRON_NAME = "Task pulse"


def drain_argv(tasks_dir: Path) -> list[str]:
    """The cron job's command: this installation's task-pulse by its full path, and the tasks dir (the
    gateway's PATH, HOME and environment are not yours). OpenClaw posts what it prints as Markdown: task
    text is escaped for it (markup.py)."""
    return [str(service.daemon_executable().with_name("task-pulse")), "--dir", str(tasks_dir), "drain", "--digest",
            "--markup", "markdown"]

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
    force: bool = False  # replace a skill folder someone edited (or the original skill's)


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
    store = TaskStore(tasks_dir)
    try:
        path = store.private_path("daemon.lock")  # a .pulse/ someone else planted holds no daemon of ours
        if path is None:
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except (OSError, BadInput):
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
    # What this run adds is recorded step by step: a setup that fails half way can still be undone.
    record = Record(options.dry_run, {"profile": options.profile, "openclawBin": str(cli.install.program),
                                      "stateDir": os.environ.get("OPENCLAW_STATE_DIR"),
                                      "tasksDir": str(options.tasks_dir)})
    workspace = options.workspace or cli.workspace()
    dest = workspace / "skills" / "live-task-pulse"
    if not report.would(f"install the skill into {dest}"):
        report.lines += skill.install(dest, force=options.force)
        record.add(skill=str(dest))
    via = options.via
    if via == "auto":
        via = "sink" if user_manager_reachable() else "cron"
        why = "a systemd user manager answers" if via == "sink" else "no systemd user manager"
        report.note(f"route: {via} ({why})")
    if via == "sink":
        _remove_cron_job(cli, report)  # switching routes: one way in, not two
        _gateway_secret(cli, options, report, record)
        _install_service(options, report, record, ["--openclaw", f"{options.channel}:{options.target}",
                                                   "--openclaw-bin", str(cli.install.program)])
    else:
        record.add(cronJob=_add_cron_job(cli, options, report))
        installed = service.unit_dir() / service.UNIT_NAME
        if installed.is_file():  # the daemon is a service already: keep it, minus an OpenClaw sink of ours
            args = _without_openclaw(service.installed_args(installed.read_text(encoding="utf-8")))
            if args != service.installed_args(installed.read_text(encoding="utf-8")):
                try:
                    _install_service(options, report, record, args)
                except service.NotRunning as exc:  # the cron route runs without a user manager: say it, go on
                    report.note(f"note: {exc}")
        elif user_manager_reachable():
            _install_service(options, report, record, [])  # the daemon queues; the cron job delivers
        elif not daemon_running(options.tasks_dir):
            where = shlex.quote(str(options.tasks_dir))
            report.note(f"task-pulsed is not running on {where}: the cron job only delivers what it queues. "
                        f"Start it and keep it running: task-pulsed --dir {where}")
    if not options.dry_run:
        _check_skill_visible(cli, report)
    return report.lines


class Record:
    """What setup added (~/.config/task-pulse/openclaw-setup.json), written as it goes, for --undo."""

    def __init__(self, dry_run: bool, base: dict[str, Any]) -> None:
        self.dry_run = dry_run
        self.data = {**load_record(), **{k: v for k, v in base.items() if v is not None}}

    def add(self, **fields: Any) -> None:
        self.data.update({k: v for k, v in fields.items() if v is not None})
        if not self.dry_run:
            path = _record_path()
            path.parent.mkdir(parents=True, exist_ok=True)
            service.write_private(path, json.dumps(self.data, indent=2) + "\n")  # it may hold an old unit


def load_record() -> dict[str, Any]:
    try:
        data = json.loads(_record_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _without_openclaw(args: list[str]) -> list[str]:
    """task-pulsed options without `--openclaw X` and `--openclaw-bin X` (the sink route's)."""
    out: list[str] = []
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("--openclaw", "--openclaw-bin"):
            skip = True
        elif not arg.startswith(("--openclaw=", "--openclaw-bin=")):
            out.append(arg)
    return out


def _dashboard_token(cli: OpenClawCLI) -> str | None:
    """The shared token as the running gateway hands it out (`openclaw dashboard --json`: a sign-in URL
    ending `#token=…`); None when no gateway answers or it gives none."""
    try:
        reply = cli.call("dashboard", "--json", "--no-open", timeout=60)
    except OperationFailed:
        return None
    url = reply.get("url") if isinstance(reply, dict) else None
    fragment = urllib.parse.urlsplit(url).fragment if isinstance(url, str) else ""
    return urllib.parse.parse_qs(fragment).get("token", [None])[0]


def _gateway_secret(cli: OpenClawCLI, options: SetupOptions, report: Report, record: Record) -> None:
    """The service talks to the running gateway: it needs the gateway's token (or password), which it reads
    from its private env file, never from its command line."""
    try:
        found = gateway.find_gateway(profile=options.profile)
    except gateway.GatewayConfigError as exc:
        report.note(f"warning: {exc}; the service will use the openclaw CLI")
        return
    name, value = ("OPENCLAW_GATEWAY_PASSWORD", found.password) if found.password else \
        ("OPENCLAW_GATEWAY_TOKEN", found.token)
    where = "OpenClaw's config"
    if value is None and not options.dry_run:
        value, where = _dashboard_token(cli), "the running gateway"
    if value is None:
        why = found.secret_note or "no token found"
        report.note(f"gateway {found.url}: {why}; the service will use the openclaw CLI until {service.SECRETS_FILE} "
                    f"holds OPENCLAW_GATEWAY_TOKEN=…")
        return
    if report.would(f"put {name} (from {where}) into {service.SECRETS_FILE}, mode 600"):
        return
    if service.set_secret(name, value):
        record.add(secret=name)
    report.note(f"gateway {found.url}: {name} from {where} is in {service.SECRETS_FILE} (mode 600)")


def _install_service(options: SetupOptions, report: Report, record: Record, daemon_args: list[str]) -> None:
    command = ["task-pulse", "--dir", str(options.tasks_dir), "service", "install",
               *(["--", *daemon_args] if daemon_args else [])]
    if report.would(command):
        report.note("  (it checks the options, writes ~/.config/systemd/user/task-pulsed.service, then runs "
                    "systemctl --user daemon-reload, enable task-pulsed.service, restart task-pulsed.service)")
        return
    unit = service.unit_dir() / service.UNIT_NAME
    if "service" not in record.data:  # what was there before the first setup: undo puts it back
        record.add(service={"before": unit.read_text(encoding="utf-8") if unit.is_file() else None})
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


def undo(options: SetupOptions) -> list[str]:
    """Remove what setup added: the cron job, the service (or the unit it replaced, put back), the skill."""
    report = Report(options.dry_run)
    record = load_record()
    if record.get("stateDir") and not os.environ.get("OPENCLAW_STATE_DIR"):
        os.environ["OPENCLAW_STATE_DIR"] = record["stateDir"]  # the OpenClaw setup talked to, profile and all
    recorded = SetupOptions(tasks_dir=options.tasks_dir, profile=options.profile or record.get("profile"),
                            openclaw_bin=options.openclaw_bin or record.get("openclawBin"))
    try:
        cli = _open(recorded, report)
    except OperationFailed as exc:
        report.note(f"cron job not checked: {exc}")
    else:
        _remove_cron_job(cli, report)
    installed = record.get("service")
    if isinstance(installed, dict):  # setup installed the service; `before` is the unit it replaced, if any
        before = installed.get("before")
        if before is None:
            if not report.would(["task-pulse", "service", "uninstall"]):
                report.lines += service.uninstall()
        elif not report.would("put back the service unit setup replaced, and restart it"):
            unit = service.unit_dir() / service.UNIT_NAME
            service.write_private(unit, before)  # a unit may hold a webhook URL with its token
            report.note(f"put back the unit that was there before setup: {unit}")
            report.lines += service.restart()
    secret = record.get("secret")
    if secret in ("OPENCLAW_GATEWAY_TOKEN", "OPENCLAW_GATEWAY_PASSWORD") and \
            not report.would(f"take {secret} out of {service.SECRETS_FILE}") and service.set_secret(secret, None):
        report.note(f"took {secret} out of {service.SECRETS_FILE}")
    dest = Path(record["skill"]) if record.get("skill") else (options.workspace / "skills" / "live-task-pulse"
                                                             if options.workspace else None)
    if dest is not None and not report.would(f"remove the skill from {dest}"):
        report.lines += skill.remove(dest)
    if not options.dry_run and _record_path().exists():
        _record_path().unlink()
    if len(report.lines) <= 1:
        report.note("nothing to undo")
    return report.lines
