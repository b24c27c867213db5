"""Admin verbs: what the person who runs task-pulse calls once or now and then.

`cleanup`, the systemd user service and the OpenClaw skill.
"""

from __future__ import annotations

from pathlib import Path

import click

from task_pulse.cli.base import Context, FiniteRange, cli, emit, json_option, pass_ctx
from task_pulse.messages import word


@cli.command()
@click.option("--days", type=FiniteRange(min=0), metavar="N",
              help="Age in days; 0 removes every finished task [env TASK_PULSE_KEEP_DAYS; default 7].")
@click.option("--dry-run", is_flag=True, help="List what would be removed, remove nothing.")
@json_option
@pass_ctx
def cleanup(ctx: Context, days: float | None, dry_run: bool) -> None:
    """Remove done/error tasks that finished more than N days ago.

    A task file this user may not remove (another user's, in a shared dir with the sticky bit)
    is left as it is, with a line on stderr; the others are removed all the same.

    \b
    Example:
      task-pulse cleanup --days 3 --dry-run
    """
    from task_pulse.messages import shown_id

    days = days if days is not None else ctx.settings.keep_days
    refused: dict[str, str] = {}
    removed = ctx.store.cleanup(ctx.settings.now(), days, dry_run=dry_run, refused=refused)
    for reason in refused.values():
        click.echo(f"note: not removed: {reason}", err=True)
    shown_days = f"{days:g}"
    text = word("cleanup_dry" if dry_run else "cleanup", ctx.lang).format(
        n=len(removed), days=shown_days, tasks="task" if len(removed) == 1 else "tasks")
    if dry_run and removed:
        text += "".join(f"\n  {i}" for i in removed)
    emit(ctx, text, {"removed": removed, "dryRun": dry_run, "days": days,
                     "notRemoved": [shown_id(i) for i in refused]})


@cli.group()
def skill() -> None:
    """The OpenClaw skill that teaches an agent to use task-pulse.

    \b
    Example:
      task-pulse skill install
    """


@skill.command("install")
@click.option("--dest", type=click.Path(file_okay=False), metavar="DIR",
              help="Skill folder [default: skills/live-task-pulse in OpenClaw's workspace: $OPENCLAW_WORKSPACE_DIR, "
                   "else $OPENCLAW_STATE_DIR/workspace, else ~/.openclaw/workspace].")
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
    from task_pulse.openclaw import default_workspace

    target = Path(os.path.expanduser(dest)) if dest else default_workspace() / "skills" / "live-task-pulse"
    done = skill_files.install(target, force=force)
    emit(ctx, "\n".join(done), {"done": done})


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
@click.option("--board", is_flag=True,
              help="Also run the board (task-pulse board, a live page on 127.0.0.1:8765) as a unit of its own; "
                   "needs the board extra. Once installed, it is kept on every install.")
@click.option("--fresh", is_flag=True,
              help="Forget the installed unit's options, tasks dir and settings instead of keeping them.")
@click.argument("daemon_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- TASK-PULSED OPTIONS...]")
@json_option
@pass_ctx
def service_install(ctx: Context, no_start: bool, board: bool, fresh: bool, daemon_args: tuple[str, ...]) -> None:
    """Write ~/.config/systemd/user/task-pulsed.service for the tasks dir, enable and start it.

    The unit runs the task-pulsed of this installation on the tasks dir (--dir before the verb,
    else TASK_PULSE_DIR, else the installed unit's, else the default), with the options after `--`
    (a sink, say; none given: the installed unit's are kept). Secrets such as a webhook token go
    in ~/.config/task-pulse/env (KEY=value lines), which the unit reads. Run it again after an
    upgrade or to change anything: it restarts the service.

    \b
    Examples:
      task-pulse --dir ~/agent/tasks service install
      task-pulse service install -- --openclaw telegram:123456789
      task-pulse service install --board      # and the live page, beside it
    """
    import os

    from task_pulse import service as svc

    dir_given = bool(ctx.flags.get("tasks_dir") or os.environ.get("TASK_PULSE_DIR"))
    done = svc.install(ctx.settings.tasks_dir, start=not no_start, daemon_args=list(daemon_args) or None,
                       keep=not fresh, dir_given=dir_given, board=board)
    emit(ctx, "\n".join(done), {"done": done})


@service.command("uninstall")
@json_option
@pass_ctx
def service_uninstall(ctx: Context) -> None:
    """Stop and disable the service (and the board's) and remove its unit file (tasks and state stay).

    \b
    Example:
      task-pulse service uninstall
    """
    from task_pulse import service as svc

    done = svc.uninstall()
    emit(ctx, "\n".join(done), {"done": done})


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
    emit(ctx, text, state)


@cli.group("openclaw")
def openclaw_group() -> None:
    """Wire OpenClaw to task-pulse: the skill, and a way into the chat.

    \b
    Example:
      task-pulse openclaw setup --channel telegram --target 123456789
    """


@openclaw_group.command("setup")
@click.option("--channel", metavar="CHANNEL", help="OpenClaw channel: telegram, discord, matrix, slack, irc, …")
@click.option("--target", metavar="TARGET", help="Chat id, room or #channel on that channel.")
@click.option("--via", type=click.Choice(("auto", "sink", "cron")), default="auto", show_default=True,
              help="sink: the service sends and edits a live card; cron: an OpenClaw cron job drains every minute; "
                   "auto: sink where a systemd user manager answers, else cron.")
@click.option("--workspace", type=click.Path(file_okay=False), metavar="DIR",
              help="OpenClaw workspace for the skill [default: the one OpenClaw reports].")
@click.option("--profile", metavar="NAME", help="OpenClaw profile (openclaw --profile NAME).")
@click.option("--openclaw-bin", metavar="PATH", help="The openclaw program [default: the one on PATH].")
@click.option("--dry-run", is_flag=True, help="Print every command it would run, change nothing.")
@click.option("--undo", is_flag=True, help="Remove what setup added (cron job, service, skill unless edited).")
@click.option("--force", is_flag=True, help="Replace a skill folder that was edited or holds another skill.")
@json_option
@pass_ctx
def openclaw_setup(ctx: Context, channel: str | None, target: str | None, via: str, workspace: str | None,
                   profile: str | None, openclaw_bin: str | None, dry_run: bool, undo: bool, force: bool) -> None:
    """Install the skill and connect task-pulse to your chat through OpenClaw, in one go.

    Checks OpenClaw and its Node, installs the skill into OpenClaw's workspace, then either
    installs the task-pulsed service with a live-card sink (--via sink) or adds an OpenClaw cron
    job that runs `task-pulse drain --digest` every minute (--via cron; needs the gateway).
    Running it twice changes nothing; --undo takes it all back.

    \b
    Examples:
      task-pulse openclaw setup --channel telegram --target 123456789
      task-pulse openclaw setup --channel irc --target '#ops' --via cron --dry-run
      task-pulse openclaw setup --undo
    """
    import os

    from task_pulse.openclaw import setup as setup_

    options = setup_.SetupOptions(tasks_dir=ctx.settings.tasks_dir, channel=channel, target=target, via=via,
                                  workspace=Path(os.path.expanduser(workspace)) if workspace else None,
                                  profile=profile, openclaw_bin=openclaw_bin, dry_run=dry_run, force=force)
    done = setup_.undo(options) if undo else setup_.setup(options)
    emit(ctx, "\n".join(done), {"done": done, "dryRun": dry_run})
