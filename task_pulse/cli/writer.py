"""Writer verbs: what agents, sub-agents and cron scripts call to move a task along.

They follow the original Live Task Pulse script (verbs, positional messages, output lines), so
existing prompts keep working. This is their click front end (arguments, options, help); what they
do is `task_pulse.writer`, which a plain call reaches without click (`task_pulse.entry`).
"""

from __future__ import annotations

from typing import Any

import click

from task_pulse import writer
from task_pulse.cli.base import Context, FiniteRange, cli, emit, json_option, pass_ctx
from task_pulse.model import MAX_STALL_SECONDS

# A message is free text: "-3 duplicates removed" is a message, not an unknown option -3.
FREE_TEXT = {"ignore_unknown_options": True}


class StepBudget(click.ParamType):
    """`NAME=SECONDS`: a budget for the steps named NAME (the last `=` splits, so a name may hold one)."""

    name = "NAME=SECONDS"
    seconds = FiniteRange(min=1, max=MAX_STALL_SECONDS)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> tuple[str, float]:
        if isinstance(value, tuple):
            return value
        step, eq, seconds = str(value).rpartition("=")
        if not eq or not step:
            self.fail(f"{value!r} is not NAME=SECONDS (e.g. write=600).", param, ctx)
        return step, self.seconds.convert(seconds, param, ctx)


def _show(ctx: Context, outcome: writer.Outcome) -> None:
    for note in outcome.notes:
        click.echo(f"note: {note}", err=True)
    emit(ctx, outcome.text, outcome.data)


@cli.command()
@click.argument("name")
@click.argument("steps", nargs=-1, required=True)
@click.option("--stall", type=FiniteRange(min=1, max=MAX_STALL_SECONDS), metavar="SECONDS",
              help="Stall threshold for this task [default: TASK_PULSE_STALL or 180].")
@click.option("--id", "task_id", metavar="ID", help="Use this id instead of NAME-YYYYmmdd-HHMMSS.")
@click.option("--budget", type=FiniteRange(min=1, max=MAX_STALL_SECONDS), metavar="SECONDS",
              help="The task is overdue (one ⏰ message) once it runs longer than this.")
@click.option("--step-budget", "step_budgets", type=StepBudget(), multiple=True,
              help="The step NAME is overdue once it runs longer than SECONDS (repeatable).")
@json_option
@pass_ctx
def create(ctx: Context, name: str, steps: tuple[str, ...], stall: float | None, task_id: str | None,
           budget: float | None, step_budgets: tuple[tuple[str, float], ...]) -> None:
    """Create a task whose first step is running; prints its id.

    A budget is separate from the stall threshold: a step that heartbeats but runs too long is
    overdue, not stalled. Without budgets, a task whose name has 3 successful runs before it is
    overdue once it runs clearly longer than usual (see `task-pulse history`).

    \b
    Example:
      task-pulse create "日报发布" 抓取 筛选 写稿 发布
      task-pulse create --stall 600 --id nightly-build "Nightly build" compile test package
      task-pulse create --budget 3600 --step-budget test=900 "Nightly build" compile test package
    """
    _show(ctx, writer.create(ctx.settings, name, list(steps), stall, task_id, budget, dict(step_budgets)))


@cli.command("next", context_settings=FREE_TEXT)
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
    _show(ctx, writer.advance(ctx.settings, task_id, message))


@cli.command(context_settings=FREE_TEXT)
@click.argument("task_id", metavar="ID")
@click.argument("message", nargs=-1)
@click.option("--percent", type=FiniteRange(0, 100), help="Progress of the running step, 0-100.")
@json_option
@pass_ctx
def heartbeat(ctx: Context, task_id: str, message: tuple[str, ...], percent: float | None) -> None:
    """Say the task is alive; optionally set the running step's MESSAGE and --percent.

    A heartbeat resets the stall timer of a running task, also between steps (MESSAGE is then
    dropped, with a note). Message changes reach the chat at most once per
    TASK_PULSE_PROGRESS_INTERVAL seconds (the latest wins). An ended task is left as it is.

    \b
    Example:
      task-pulse heartbeat 日报发布 "已处理60%" --percent 60
    """
    _show(ctx, writer.heartbeat(ctx.settings, task_id, message, percent))


@cli.command(context_settings=FREE_TEXT)
@click.argument("task_id", metavar="ID")
@click.argument("result", nargs=-1)
@json_option
@pass_ctx
def done(ctx: Context, task_id: str, result: tuple[str, ...]) -> None:
    """Mark the task done (its running step too), with an optional RESULT.

    Done already: nothing changes (exit 0, a note says so). Failed already: exit 1.

    \b
    Example:
      task-pulse done 日报发布 "已发布 https://example.com/daily"
    """
    _show(ctx, writer.done(ctx.settings, task_id, result))


@cli.command(context_settings=FREE_TEXT)
@click.argument("task_id", metavar="ID")
@click.argument("message", nargs=-1, required=True)
@json_option
@pass_ctx
def error(ctx: Context, task_id: str, message: tuple[str, ...]) -> None:
    """Mark the task failed with MESSAGE (its running step too).

    Failed already: nothing changes (exit 0, a note says so). Done already: exit 1.

    \b
    Example:
      task-pulse error 日报发布 "发布接口返回 502"
    """
    _show(ctx, writer.fail(ctx.settings, task_id, message))


class _RunCommand(click.Command):
    """`run`: the options and the task's name come before `--`, the command after it, word for word.

    Without the `--` there is no telling where the name ends (`run make test`), and a wrong guess
    would run the wrong command as a failing task the chat announces: a usage error instead.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if "--" not in args:
            if not any(a in ("-h", "--help") for a in args):
                raise click.UsageError("give the command after --: task-pulse run NAME -- CMD [ARGS]...", ctx)
            return super().parse_args(ctx, args)
        cut = args.index("--")
        ctx.meta["run_command"] = args[cut + 1:]
        return super().parse_args(ctx, args[:cut])

    def collect_usage_pieces(self, ctx: click.Context) -> list[str]:
        return [*super().collect_usage_pieces(ctx), "-- CMD [ARGS]..."]


@cli.command(cls=_RunCommand)
@click.argument("name", required=False)
@click.option("--name", "name_option", metavar="NAME", help="The task's name (instead of NAME before --).")
@click.option("--step", "steps", multiple=True, metavar="S", help="A step name (repeatable) [default: the command].")
@click.option("--heartbeat", "heartbeat_every", type=FiniteRange(min=1), default=60, show_default=True,
              metavar="SECONDS", help="How often to say the command is alive (with its latest output line).")
@click.option("--stall", type=FiniteRange(min=1, max=MAX_STALL_SECONDS), metavar="SECONDS",
              help="Stall threshold for this task.")
@click.option("--budget", type=FiniteRange(min=1, max=MAX_STALL_SECONDS), metavar="SECONDS",
              help="The task is overdue (one ⏰ message) once it runs longer than this.")
@pass_ctx
def run(ctx: Context, name: str | None, name_option: str | None, steps: tuple[str, ...], heartbeat_every: float,
        stall: float | None, budget: float | None) -> None:
    """Run CMD (everything after --) as task NAME: done with its last output line on exit 0, error
    otherwise.

    Output passes through; the exit code is CMD's own. CMD runs in a process group of its own:
    SIGINT/SIGTERM/SIGHUP go to all of it and end the task as failed. The task ends when CMD
    exits, even if a background child it started still holds its output (that goes on being
    passed through). CMD sees TASK_PULSE_TASK_ID, so it may report its own steps with
    `task-pulse next`.

    \b
    Examples (crontab):
      0 3 * * * task-pulse run "Nightly backup" -- /usr/local/bin/backup.sh --full
      0 9 * * * task-pulse run 日报发布 --step 抓取 --step 发布 -- python3 daily.py
      */5 * * * * task-pulse run --name "Sync" -- rsync -a src/ dest/
      0 4 * * * task-pulse run "Nightly backup" --budget 5400 -- /usr/local/bin/backup.sh
    """
    from task_pulse.runner import run_wrapped

    click_ctx = click.get_current_context()
    command = click_ctx.meta.get("run_command") or []
    if name is not None and name_option is not None:
        raise click.UsageError(f"two names ({name!r} and --name {name_option!r}): give one", click_ctx)
    name = name if name is not None else name_option
    if name is None:
        raise click.UsageError("give the task a name before --: task-pulse run NAME -- CMD [ARGS]... "
                               "(or --name NAME)", click_ctx)
    if not command:
        raise click.UsageError("give the command after --: task-pulse run NAME -- CMD [ARGS]...", click_ctx)
    code = run_wrapped(ctx.store, ctx.settings, name, list(steps), list(command), heartbeat_every=heartbeat_every,
                       stall_seconds=stall, budget_seconds=budget)
    click_ctx.exit(code)
