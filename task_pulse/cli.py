"""The `task-pulse` command: what writers (agents, sub-agents, cron scripts) and readers call.

Verbs and outputs follow the original Live Task Pulse script, so existing prompts keep working.
Exit codes: 0 ok, 1 the operation failed, 2 bad usage or bad input; errors are one line on stderr.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import click

from task_pulse import __version__
from task_pulse.config import LANGS, Settings, load_settings
from task_pulse.errors import OperationFailed, TaskPulseError
from task_pulse.messages import format_duration, progress_bar, status_view, word
from task_pulse.model import MAX_STALL_SECONDS, Task, TaskFormatError, parse_time, stalled_for
from task_pulse.store import TaskStore

if TYPE_CHECKING:
    from task_pulse.outbox import Outbox, Queued


@dataclass
class Context:
    """What every command needs, resolved on first use so `--help` works even with bad settings."""

    flags: dict[str, Any]
    json_output: bool
    _settings: Settings | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.flags)
        return self._settings

    @property
    def store(self) -> TaskStore:
        return TaskStore(self.settings.tasks_dir)

    @property
    def lang(self) -> str:
        return self.settings.lang


class _Group(click.Group):
    """Turns our errors into click's one-line `Error: …` with the exit code DESIGN.md fixes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TaskPulseError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:
            where = f": {exc.filename}" if exc.filename else ""
            _fail(f"{exc.strerror or exc}{where}", 1)


def _fail(message: str, code: int) -> NoReturn:
    error = click.ClickException(message)
    error.exit_code = code
    raise error


def _emit(ctx: Context, text: str, data: Any) -> None:
    """Print `data` as one JSON line under --json, else the human text."""
    if ctx.json_output:
        click.echo(json.dumps(data, ensure_ascii=False))
    else:
        click.echo(text)


pass_ctx = click.make_pass_decorator(Context)
# How long a drain's claim lasts: a drain that dies mid-way delays its rows this long; one whose
# output blocks longer than this may see another deliverer print them too (at least once).
DRAIN_LEASE_SECONDS = 300


class FiniteRange(click.FloatRange):
    """click's FloatRange lets `nan` (and, without a max, `inf`) through; seconds and days must be finite."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return number


def json_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--json` on a command; the group-level `task-pulse --json VERB` works too."""

    def enable(click_ctx: click.Context, _param: click.Parameter, value: bool) -> None:
        if value:
            click_ctx.find_object(Context).json_output = True

    return click.option("--json", "json_flag", is_flag=True, expose_value=False, callback=enable,
                        help="Print data as JSON.")(f)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dir", "tasks_dir", type=click.Path(file_okay=False), envvar=None,
              help="Tasks directory [env TASK_PULSE_DIR; default ~/.openclaw/workspace/tasks].")
@click.option("--lang", type=click.Choice(LANGS), help="Language of messages [env TASK_PULSE_LANG; default zh].")
@click.option("--json", "json_output", is_flag=True, help="Print data as JSON (any verb).")
@click.version_option(__version__, prog_name="task-pulse")
@click.pass_context
def cli(click_ctx: click.Context, tasks_dir: str | None, lang: str | None, json_output: bool) -> None:
    """Track a multi-step job in a task file that task-pulsed turns into live chat messages.

    \b
    Example:
      id=$(task-pulse create "Daily report" fetch filter write publish)
      task-pulse next "$id" "fetched 25 items"
      task-pulse heartbeat "$id" --percent 60 "filtering"
      task-pulse done "$id" "published"
    """
    click_ctx.obj = Context(flags={"tasks_dir": tasks_dir, "lang": lang}, json_output=json_output)


def _join(words: tuple[str, ...]) -> str | None:
    return " ".join(words) if words else None


def _change(ctx: Context, id_or_prefix: str, change: Callable[[Task, str], None]) -> Task:
    """Resolve the id, then apply `change(task, now_iso)` under the task's lock."""
    store = ctx.store
    task_id = store.resolve(id_or_prefix)
    now = ctx.settings.now()
    return store.update(task_id, lambda task: change(task, now.isoformat()), now)


# -- writer verbs --------------------------------------------------------------------------------------


@cli.command()
@click.argument("name")
@click.argument("steps", nargs=-1, required=True)
@click.option("--stall", type=FiniteRange(min=1, max=MAX_STALL_SECONDS), metavar="SECONDS",
              help="Stall threshold for this task [default: TASK_PULSE_STALL or 180].")
@click.option("--id", "task_id", metavar="ID", help="Use this id instead of NAME-YYYYmmdd-HHMMSS.")
@json_option
@pass_ctx
def create(ctx: Context, name: str, steps: tuple[str, ...], stall: float | None, task_id: str | None) -> None:
    """Create a task whose first step is running; prints its id.

    \b
    Example:
      task-pulse create "日报发布" 抓取 筛选 写稿 发布
      task-pulse create --stall 600 --id nightly-build "Nightly build" compile test package
    """
    task = ctx.store.create(name, list(steps), ctx.settings.now(), stall_seconds=stall, task_id=task_id)
    _emit(ctx, task.task_id, task.to_dict())


@cli.command("next")
@click.argument("task_id", metavar="ID")
@click.argument("message", nargs=-1)
@json_option
@pass_ctx
def next_(ctx: Context, task_id: str, message: tuple[str, ...]) -> None:
    """Finish the running step (keeping MESSAGE) and start the next one.

    ID may be a unique prefix of the task id.

    \b
    Example:
      task-pulse next 日报发布-20261124-093000 "抓取了25条数据"
    """
    text = _join(message)
    task = _change(ctx, task_id, lambda t, now: t.advance(now, text))
    current = task.running_step
    _emit(ctx, f"[{task.done_count}/{task.total}] {progress_bar(task.done_count, task.total)} → "
               f"{current.name if current else '—'}", task.to_dict())


@cli.command()
@click.argument("task_id", metavar="ID")
@click.argument("message", nargs=-1)
@click.option("--percent", type=FiniteRange(0, 100), help="Progress of the running step, 0-100.")
@json_option
@pass_ctx
def heartbeat(ctx: Context, task_id: str, message: tuple[str, ...], percent: float | None) -> None:
    """Say the task is alive; optionally set the running step's MESSAGE and --percent.

    A heartbeat resets the stall timer. Message changes reach the chat at most once per
    TASK_PULSE_PROGRESS_INTERVAL seconds (the latest wins).

    \b
    Example:
      task-pulse heartbeat 日报发布 "已处理60%" --percent 60
    """
    text = _join(message)
    task = _change(ctx, task_id, lambda t, _now: t.touch(text, percent))
    _emit(ctx, "💓 ok", task.to_dict())


@cli.command()
@click.argument("task_id", metavar="ID")
@click.argument("result", nargs=-1)
@json_option
@pass_ctx
def done(ctx: Context, task_id: str, result: tuple[str, ...]) -> None:
    """Mark the task done (its running step too), with an optional RESULT.

    \b
    Example:
      task-pulse done 日报发布 "已发布 https://example.com/daily"
    """
    text = _join(result)
    task = _change(ctx, task_id, lambda t, now: t.finish(now, text))
    started, finished = parse_time(task.started_at), parse_time(task.finished_at)
    duration = f" ({format_duration((finished - started).total_seconds())})" if started and finished else ""
    _emit(ctx, f"✅ {word('done', ctx.lang)}{duration}", task.to_dict())


@cli.command()
@click.argument("task_id", metavar="ID")
@click.argument("message", nargs=-1, required=True)
@json_option
@pass_ctx
def error(ctx: Context, task_id: str, message: tuple[str, ...]) -> None:
    """Mark the task failed with MESSAGE (its running step too).

    \b
    Example:
      task-pulse error 日报发布 "发布接口返回 502"
    """
    text = " ".join(message)
    task = _change(ctx, task_id, lambda t, now: t.fail(now, text))
    _emit(ctx, f"❌ {text}", task.to_dict())


# -- reader verbs --------------------------------------------------------------------------------------


def _status_record(task: Task, now: datetime, default_stall: float) -> dict[str, Any]:
    stalled = stalled_for(task, now, default_stall)
    return {**task.to_dict(), "stalled": stalled is not None,
            "stalledSeconds": None if stalled is None else round(stalled, 1)}


@cli.command()
@click.argument("task_id", metavar="[ID]", required=False)
@json_option
@pass_ctx
def status(ctx: Context, task_id: str | None) -> None:
    """Show every task (stalled ones flagged), or one task as JSON.

    A running task is stalled when its updatedAt is older than its stallSeconds (else
    TASK_PULSE_STALL, default 180 s). Unreadable files are named, never hidden.

    \b
    Example:
      task-pulse status
      task-pulse status --json | jq '.[] | select(.stalled)'
      task-pulse status 日报发布
    """
    settings, store = ctx.settings, ctx.store
    now = settings.now()
    if task_id is not None:
        task = store.load(store.resolve(task_id))
        click.echo(json.dumps(_status_record(task, now, settings.stall_seconds), ensure_ascii=False, indent=2))
        return
    entries = store.list_tasks()
    if ctx.json_output:
        records = [
            {"taskId": tid, "invalid": str(t)} if isinstance(t, TaskFormatError)
            else _status_record(t, now, settings.stall_seconds)
            for tid, t in entries
        ]
        click.echo(json.dumps(records, ensure_ascii=False))
        return
    click.echo(status_view(entries, now, settings.stall_seconds, ctx.lang))


@cli.command()
@click.option("--days", type=FiniteRange(min=0, min_open=True), metavar="N",
              help="Age in days [env TASK_PULSE_KEEP_DAYS; default 7].")
@click.option("--dry-run", is_flag=True, help="List what would be removed, remove nothing.")
@json_option
@pass_ctx
def cleanup(ctx: Context, days: float | None, dry_run: bool) -> None:
    """Remove done/error tasks that finished more than N days ago.

    \b
    Example:
      task-pulse cleanup --days 3 --dry-run
    """
    days = days if days is not None else ctx.settings.keep_days
    removed = ctx.store.cleanup(ctx.settings.now(), days, dry_run=dry_run)
    shown_days = f"{days:g}"
    text = word("cleanup_dry" if dry_run else "cleanup", ctx.lang).format(n=len(removed), days=shown_days)
    if dry_run and removed:
        text += "".join(f"\n  {i}" for i in removed)
    _emit(ctx, text, {"removed": removed, "dryRun": dry_run, "days": days})


def main() -> None:
    cli.main(prog_name="task-pulse")


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N notifications.")
@click.option("--digest", is_flag=True, help="One message per task for everything pending (at most 3 lines).")
@json_option
@pass_ctx
def drain(ctx: Context, limit: int | None, digest: bool) -> None:
    """Print pending notifications, oldest first, then mark them delivered.

    Each message is printed and flushed before it is marked delivered: if the caller dies in
    between, the next drain prints it again (at least once, never lost). Two drains running at
    once never print the same notification. --json prints one object per line with seq, key,
    taskId, taskName, kind, text, createdAt, done, total, step. --digest sums up each task in
    one message, for a parent that drains only every half hour.

    \b
    Examples (a parent agent's heartbeat):
      task-pulse drain
      task-pulse drain --digest --json | while read -r line; do send-to-chat "$line"; done
    """
    import sqlite3  # only for readers that need it

    from task_pulse.outbox import DB_NAME, Outbox

    db_path = ctx.store.pulse_dir / DB_NAME
    if not db_path.exists():
        click.echo(f"no state database in {ctx.store.root} yet (task-pulsed has not run there): nothing to drain",
                   err=True)
        return
    try:
        _drain(ctx, Outbox(db_path, create=False), limit, digest)
    except sqlite3.Error as exc:  # locked for too long, corrupt, unreadable: one line, not a traceback
        raise OperationFailed(f"state database {db_path}: {exc}") from None


def _drain(ctx: Context, outbox: Outbox, limit: int | None, digest: bool) -> None:
    import os
    import uuid

    owner = f"drain:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    try:
        rows = outbox.claim(owner, limit, lease_seconds=DRAIN_LEASE_SECONDS)
        try:
            for text, data in _digests(rows, ctx.lang) if digest else ((r.text, r.to_json()) for r in rows):
                click.echo(json.dumps(data, ensure_ascii=False) if ctx.json_output else f"{text}\n")
            sys.stdout.flush()
        except BaseException:
            outbox.release([r.seq for r in rows], owner)  # not printed for sure: hand them straight back
            raise
        outbox.mark_delivered([r.seq for r in rows], owner, by="drain")
    finally:
        outbox.close()


def _digests(rows: list[Queued], lang: str) -> list[tuple[str, dict[str, Any]]]:
    """(text, --json object) per task, tasks in the order of their oldest pending notification."""
    from task_pulse.messages import digest

    by_task: dict[str, list[Queued]] = {}
    for row in rows:
        by_task.setdefault(row.task_id, []).append(row)
    out = []
    for task_id, group in by_task.items():
        text = digest([(r.kind, r.data) for r in group], lang)
        last = group[-1].to_json()
        out.append((text, {**last, "kind": "digest", "text": text, "latestKind": group[-1].kind,
                           "count": len(group), "seqs": [r.seq for r in group], "keys": [r.key for r in group],
                           "taskId": task_id}))
    return out


@cli.command(context_settings={"ignore_unknown_options": False})
@click.argument("name")
@click.option("--step", "steps", multiple=True, metavar="S", help="A step name (repeatable) [default: the command].")
@click.option("--heartbeat", "heartbeat_every", type=FiniteRange(min=1), default=60, show_default=True,
              metavar="SECONDS", help="How often to say the command is alive (with its latest output line).")
@click.option("--stall", type=FiniteRange(min=1, max=MAX_STALL_SECONDS), metavar="SECONDS",
              help="Stall threshold for this task.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD [ARGS]...")
@pass_ctx
def run(ctx: Context, name: str, steps: tuple[str, ...], heartbeat_every: float, stall: float | None,
        command: tuple[str, ...]) -> None:
    """Run CMD as a tracked task: done with its last output line on exit 0, error otherwise.

    Output passes through; the exit code is CMD's own. SIGINT/SIGTERM go to CMD and end the task
    as failed. CMD sees TASK_PULSE_TASK_ID, so it may report its own steps with `task-pulse next`.

    \b
    Examples (crontab):
      0 3 * * * task-pulse run "Nightly backup" -- /usr/local/bin/backup.sh --full
      0 9 * * * task-pulse run 日报发布 --step 抓取 --step 发布 -- python3 daily.py
    """
    from task_pulse.runner import run_wrapped

    code = run_wrapped(ctx.store, ctx.settings, name, list(steps), list(command), heartbeat_every=heartbeat_every,
                       stall_seconds=stall)
    click.get_current_context().exit(code)


@cli.group()
def skill() -> None:
    """The OpenClaw skill that teaches an agent to use task-pulse.

    \b
    Example:
      task-pulse skill install
    """


@skill.command("install")
@click.option("--dest", type=click.Path(file_okay=False), metavar="DIR",
              help="Skill folder [default: ~/.openclaw/workspace/skills/live-task-pulse].")
@click.option("--force", is_flag=True, help="Replace files that were edited or come from another skill.")
@json_option
@pass_ctx
def skill_install(ctx: Context, dest: str | None, force: bool) -> None:
    """Install (or update) the live-task-pulse skill: SKILL.md and its integration guide.

    An older copy written by this command is updated; a copy someone edited, or another skill in
    the same folder (such as the original Live Task Pulse), is kept unless --force.

    \b
    Example:
      task-pulse skill install --dest ~/.openclaw/workspace/skills/live-task-pulse
    """
    import os

    from task_pulse import skill as skill_files

    done = skill_files.install(Path(os.path.expanduser(dest or skill_files.DEFAULT_DEST)), force=force)
    _emit(ctx, "\n".join(done), {"done": done})


@cli.group()
def service() -> None:
    """Run task-pulsed as a systemd user service.

    \b
    Example:
      task-pulse service install            # write the unit, enable and start it
      task-pulse service status
      journalctl --user -u task-pulsed -f   # its log
    """


@service.command("install")
@click.option("--no-start", is_flag=True, help="Only write the unit file.")
@click.argument("daemon_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- TASK-PULSED OPTIONS...]")
@json_option
@pass_ctx
def service_install(ctx: Context, no_start: bool, daemon_args: tuple[str, ...]) -> None:
    """Write ~/.config/systemd/user/task-pulsed.service for the tasks dir, enable and start it.

    The unit runs the task-pulsed of this installation on the tasks dir (--dir before the verb,
    else TASK_PULSE_DIR, else the default), with the options after `--` (a sink, say). Secrets
    such as a webhook token go in ~/.config/task-pulse/env (KEY=value lines), which the unit
    reads. Run it again after an upgrade or to change anything.

    \b
    Examples:
      task-pulse --dir ~/agent/tasks service install
      task-pulse service install -- --exec "openclaw message send --channel telegram --target 123 --message"
    """
    from task_pulse import service as svc

    done = svc.install(ctx.settings.tasks_dir, start=not no_start, daemon_args=list(daemon_args))
    _emit(ctx, "\n".join(done), {"done": done})


@service.command("uninstall")
@json_option
@pass_ctx
def service_uninstall(ctx: Context) -> None:
    """Stop and disable the service and remove its unit file (tasks and state stay).

    \b
    Example:
      task-pulse service uninstall
    """
    from task_pulse import service as svc

    done = svc.uninstall()
    _emit(ctx, "\n".join(done), {"done": done})


@service.command("status")
@json_option
@pass_ctx
def service_status(ctx: Context) -> None:
    """Whether the service is installed, enabled and active.

    \b
    Example:
      task-pulse service status --json
    """
    from task_pulse import service as svc

    state = svc.status()
    text = "\n".join(f"{k}: {'-' if v is None else v}" for k, v in state.items())
    _emit(ctx, text, state)
