"""What every `task-pulse` command shares: the group, the settings context, errors and output.

Exit codes: 0 ok, 1 the operation failed, 2 bad usage or bad input; errors are one line on stderr.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import click

from task_pulse import __version__
from task_pulse.config import LANGS, Settings, load_settings
from task_pulse.errors import TaskPulseError, os_error_text
from task_pulse.store import TaskStore


@dataclass
class Context:
    """What every command needs, resolved on first use so `--help` works even with bad settings."""

    flags: dict[str, Any]
    json_output: bool
    _settings: Settings | None = None
    _store: TaskStore | None = None
    _daemon: tuple[str | None] | None = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = load_settings(self.flags)
        return self._settings

    @property
    def store(self) -> TaskStore:
        """One store per command: `.pulse/` is checked once."""
        if self._store is None:
            self._store = TaskStore(self.settings.tasks_path, self.settings.lock_timeout)
        return self._store

    @property
    def daemon_lang(self) -> str | None:
        """The language of the task-pulsed watching the tasks dir ("" unsaid), None when none does."""
        if self._daemon is None:
            self._daemon = (self.store.watching_daemon(),)
        return self._daemon[0]

    @property
    def lang(self) -> str:
        """The language chosen (flag, environment, config file), else the watching daemon's."""
        return self.settings.lang if self.settings.lang_set else self.settings.lang_beside(self.daemon_lang)

    def unwatched(self) -> str | None:
        """The note for stderr when no task-pulsed watches the tasks dir (and the check is on)."""
        if not self.settings.daemon_check or self.daemon_lang is not None:
            return None
        from task_pulse.store import unwatched_note

        return unwatched_note(self.settings.tasks_path)


class _Group(click.Group):
    """Turns our errors into click's one-line `Error: …` with the exit code DESIGN.md fixes."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except TaskPulseError as exc:
            _fail(str(exc), exc.exit_code)
        except OSError as exc:
            _fail(os_error_text(exc), 1)


def _fail(message: str, code: int) -> NoReturn:
    error = click.ClickException(message)
    error.exit_code = code
    raise error


def emit(ctx: Context, text: str, data: Any) -> None:
    """Print `data` as one JSON line under --json, else the human text."""
    if ctx.json_output:
        click.echo(json.dumps(data, ensure_ascii=False))
    else:
        click.echo(text)


pass_ctx = click.make_pass_decorator(Context)


class FiniteRange(click.FloatRange):
    """click's FloatRange lets `nan` (and, without a max, `inf`) through; seconds and days must be finite.

    A whole number comes back as an int, so `--stall 600` is written to a task file as 600, not 600.0.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return int(number) if float(number).is_integer() else number


def state_option(f: Callable[..., Any]) -> Callable[..., Any]:
    """`--state URL`: read the shared state database instead of this dir's (TASK_PULSE_STATE)."""
    return click.option("--state", "state_url", metavar="URL",
                        help="The shared PostgreSQL state database (postgresql://user@host/db; ${VAR} read from "
                             "the environment) [env TASK_PULSE_STATE].")(f)


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


