"""Writer verbs: what agents, sub-agents and cron scripts call to move a task along.

They follow the original Live Task Pulse script (verbs, positional messages, output lines), so
existing prompts keep working.
"""

from __future__ import annotations

from collections.abc import Callable

import click

from task_pulse.cli.base import Context, FiniteRange, cli, emit, json_option, pass_ctx
from task_pulse.messages import format_duration, progress_bar, word
from task_pulse.model import MAX_STALL_SECONDS, Task, parse_time

# A message is free text: "-3 duplicates removed" is a message, not an unknown option -3.
FREE_TEXT = {"ignore_unknown_options": True}


def _join(words: tuple[str, ...]) -> str | None:
    return " ".join(words) if words else None


def _change(ctx: Context, id_or_prefix: str, change: Callable[[Task, str], bool | None]) -> tuple[Task, bool]:
    """Resolve the id, then apply `change(task, now_iso)` under the task's lock.

    Returns the task and whether it was written (False: `change` found nothing to change).
    """
    store = ctx.store
    task_id = store.resolve(id_or_prefix)
    now = ctx.settings.now()
    changed = True

    def apply(task: Task) -> bool | None:
        nonlocal changed
        changed = change(task, now.isoformat()) is not False
        return changed

    return store.update(task_id, apply, now), changed


def _note(text: str) -> None:
    """A remark on stderr that does not make the call fail (stdout stays what scripts parse)."""
    click.echo(f"note: {text}", err=True)



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
    emit(ctx, task.task_id, task.to_dict())


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
    text = _join(message)
    task, _ = _change(ctx, task_id, lambda t, now: t.advance(now, text))
    current = task.running_step
    emit(ctx, f"[{task.done_count}/{task.total}] {progress_bar(task.done_count, task.total)} → "
               f"{current.name if current else '—'}", task.to_dict())


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
    text = _join(message)
    task, changed = _change(ctx, task_id, lambda t, _now: t.touch(text, percent))
    if not changed:
        _note(f"task '{task.task_id}' has already ended ({task.status}); nothing to refresh")
    elif (text is not None or percent is not None) and task.running_step is None:
        _note(f"task '{task.task_id}' has no running step ({task.done_count}/{task.total} done); "
              "refreshed, message not kept")
    emit(ctx, "💓 ok", task.to_dict())


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
    text = _join(result)
    task, changed = _change(ctx, task_id, lambda t, now: t.finish(now, text))
    if not changed:
        _note(f"task '{task.task_id}' was already done at {task.finished_at}; nothing changed")
    started, finished = parse_time(task.started_at), parse_time(task.finished_at)
    duration = f" ({format_duration((finished - started).total_seconds())})" if started and finished else ""
    emit(ctx, f"✅ {word('done', ctx.lang)}{duration}", task.to_dict())


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
    text = " ".join(message)
    task, changed = _change(ctx, task_id, lambda t, now: t.fail(now, text))
    if not changed:
        _note(f"task '{task.task_id}' had already failed at {task.finished_at}; nothing changed")
    emit(ctx, f"❌ {task.error if not changed and task.error else text}", task.to_dict())


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

