"""Harness verbs: tasks that write themselves from an agent harness's own events.

`hook claude-code` is what Claude Code runs on its hook events (a plain call of it never reaches
click: `task_pulse.entry` runs it directly; this is its help and its way in for tests), and
`claude-code setup` is what a person runs once to put it into Claude Code's settings.
"""

from __future__ import annotations

from pathlib import Path

import click

from task_pulse.cli.base import Context, cli, emit, json_option, pass_ctx


@cli.group("hook")
def hook_group() -> None:
    """Commands an agent harness runs on its own events (set up by `task-pulse claude-code setup`).

    \b
    Example:
      echo '{"session_id": "s1", "hook_event_name": "UserPromptSubmit", "prompt": "Fix the login bug"}' \\
        | task-pulse hook claude-code
    """


@hook_group.command("claude-code")
@pass_ctx
def hook_claude_code(ctx: Context) -> None:
    """Read one Claude Code hook event (JSON) on stdin and write it to its task.

    A prompt starts a task named after it, the model's todo list becomes its steps, tool calls
    are heartbeats, a sub-agent gets a task of its own (parentTaskId), the end of the turn ends
    it: done, or failed on an API error. Always exits 0 and prints nothing, whatever the input:
    what goes wrong is one line in <tasks>/.pulse/claude-code/errors.log. Writes nothing when
    the tasks dir does not exist.

    \b
    Example (what Claude Code runs; `task-pulse claude-code setup` writes it):
      /home/me/.task-pulse/bin/task-pulse hook claude-code < event.json
    """
    from task_pulse.adapters.claude_code.hook import main

    click.get_current_context().exit(main(ctx.flags))


@cli.group("claude-code")
def claude_code_group() -> None:
    """Tasks that write themselves from Claude Code's hooks.

    \b
    Example:
      task-pulse claude-code setup
    """


@claude_code_group.command("setup")
@click.option("--project", type=click.Path(file_okay=False), metavar="DIR",
              help="Set up this project's DIR/.claude/settings.json instead of ~/.claude/settings.json.")
@click.option("--undo", is_flag=True, help="Remove the task-pulse hooks (and nothing else).")
@click.option("--dry-run", is_flag=True, help="Say what would change and show the hooks, change nothing.")
@json_option
@pass_ctx
def claude_code_setup(ctx: Context, project: str | None, undo: bool, dry_run: bool) -> None:
    """Add the task-pulse hook to Claude Code's settings, so every prompt becomes a task.

    Merges one hook entry per event (UserPromptSubmit, PreToolUse, PostToolUse,
    PostToolUseFailure, SubagentStart, SubagentStop, Stop, StopFailure, SessionEnd) into
    ~/.claude/settings.json, or DIR/.claude/settings.json with --project. Other settings and
    other hooks stay as they are; running it again changes nothing; --undo removes exactly the
    task-pulse hooks. The hook runs this installation's task-pulse by its full path, with --dir
    when the tasks dir is not the default. A settings file that is not valid JSON is left alone.

    \b
    Examples:
      task-pulse claude-code setup
      task-pulse --dir ~/agent/tasks claude-code setup --project ~/src/myapp --dry-run
      task-pulse claude-code setup --undo
    """
    import os

    from task_pulse.adapters.claude_code.settings import setup
    from task_pulse.config import DEFAULT_TASKS_DIR

    tasks_dir = ctx.settings.tasks_dir
    default_dir = ctx.settings.tasks_path == os.path.abspath(os.path.expanduser(DEFAULT_TASKS_DIR))
    where = Path(os.path.abspath(os.path.expanduser(project))) if project else None
    done = setup(tasks_dir, default_dir, where, undo_it=undo, dry_run=dry_run)
    lines = done.pop("lines")
    emit(ctx, "\n".join(lines), {**done, "done": lines})
