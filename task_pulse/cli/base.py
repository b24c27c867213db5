"""What every `task-pulse` command shares: the group, the settings context, errors and output.

Exit codes: 0 ok, 1 the operation failed, 2 bad usage or bad input; errors are one line on stderr.
"""

from __future__ import annotations

import json
import math
import re
import sys
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


class OneLineErrors:
    """For a click command or group: every error is one `Error: …` line on stderr (see `one_line`), with
    click's exit code (2 for usage) or ours."""

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)  # type: ignore[misc]
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)  # type: ignore[misc]
        except click.ClickException as exc:
            click.echo(f"Error: {one_line(exc)}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:  # Ctrl-C at a prompt
            click.echo("Error: interrupted", err=True)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


class OneLineCommand(OneLineErrors, click.Command):
    """A click command whose errors are one line (task-pulsed's)."""


class _Group(OneLineErrors, click.Group):
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


class FiniteRange(click.ParamType):
    """A finite number within bounds, said in our words when it is not ("'abc': must be a number from 0
    to 100"): click's FloatRange lets `nan` (and, without a max, `inf`) through and says "float range".

    A whole number comes back as an int, so `--stall 600` is written to a task file as 600, not 600.0.
    """

    name = "number"

    def __init__(self, min: float | None = None, max: float | None = None, min_open: bool = False) -> None:
        self.min, self.max, self.min_open = min, max, min_open

    def wanted(self) -> str:
        low, high = (None if n is None else f"{n:.0f}" if float(n).is_integer() else f"{n}"
                     for n in (self.min, self.max))
        if low is not None and self.min_open:
            return f"a number above {low}" + (f" and at most {high}" if high is not None else "")
        if low is not None and high is not None:
            return f"a number from {low} to {high}"
        if low is not None:
            return f"a number of at least {low}"
        return f"a number of at most {high}" if high is not None else "a number"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        try:
            number = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r}: must be {self.wanted()}", param, ctx)
        too_low = self.min is not None and (number <= self.min if self.min_open else number < self.min)
        if not math.isfinite(number) or too_low or (self.max is not None and number > self.max):
            self.fail(f"{value!r}: must be {self.wanted()}", param, ctx)
        return int(number) if number.is_integer() else number


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
@click.option("--dir", "tasks_dir", metavar="DIR",
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




# -- errors in one line ---------------------------------------------------------------------------------
# click reports a usage error in four lines (Usage, Try, a blank, Error) and in its own words ("'abc' is
# not a valid float range."). Every error a user sees here is one line, in ours.

_RANGE = re.compile(r"^(?:(?P<low>-?[\d.e+]+)(?P<lop><=?))?x(?:(?P<hop><=?|>=?)(?P<high>-?[\d.e+]+))?$")


def _range_words(spec: str, whole: bool) -> str:
    """click's range notation (`0<=x<=100`, `x>=1`, `0<x`) in words."""
    kind = "a whole number" if whole else "a number"
    found = _RANGE.match(spec.replace(" ", ""))
    if not found:
        return f"{kind} in {spec}"
    low, lop, hop, high = found.group("low", "lop", "hop", "high")
    if hop in (">=", ">"):  # x>=1: a lower bound written on the right
        low, lop, high, hop = high, "<=" if hop == ">=" else "<", None, None
    if low is not None and high is not None:
        return f"{kind} from {low} to {high}"
    if low is not None:
        return f"{kind} of at least {low}" if lop == "<=" else f"{kind} above {low}"
    if high is not None:
        return f"{kind} of at most {high}" if hop == "<=" else f"{kind} below {high}"
    return kind


def _param_name(param: click.Parameter | None) -> str:
    if isinstance(param, click.Option):
        return max(param.opts, key=len)
    return param.human_readable_name if param is not None else "a value"


def one_line(exc: click.ClickException, ctx: click.Context | None = None) -> str:
    """The one line (without `Error: `) that says what went wrong, in our words."""
    ctx = ctx or getattr(exc, "ctx", None)
    path = ctx.command_path if ctx is not None else "task-pulse"
    usage = f"{path} {' '.join(ctx.command.collect_usage_pieces(ctx))}" if ctx is not None else path
    see = f"see {path} --help"
    message = exc.format_message().strip()
    message = message[:-1] if message.endswith(".") and not message.endswith("...") else message
    if isinstance(exc, click.NoSuchOption):
        maybe = f" (did you mean {' or '.join(sorted(exc.possibilities))}?)" if exc.possibilities else ""
        return f"{path} has no option {exc.option_name}{maybe}; {see}"
    if isinstance(exc, click.MissingParameter):
        return f"{path} needs {_param_name(exc.param)}: {usage} ({see})"
    if isinstance(exc, click.BadParameter):
        name = _param_name(exc.param)
        text = message.split(": ", 1)[1] if message.startswith("Invalid value for") and ": " in message else message
        if found := re.match(r"^(.*) is not a valid (float|integer)(?: range)?$", text):
            return f"{name} {found.group(1)}: must be {'a whole number' if found.group(2) == 'integer' else 'a number'}"
        if found := re.match(r"^(.*) is not in the range (\S+)$", text):
            whole = exc.param is not None and isinstance(exc.param.type, click.IntRange)
            return f"{name} {found.group(1)}: must be {_range_words(found.group(2), whole)}"
        if found := re.match(r"^(.*) is not (?:one of )?(.*)$", text):
            *others, last = [c.strip("'") for c in found.group(2).split(", ")]
            choices = f"{', '.join(others)} or {last}" if others else last
            return f"{name} {found.group(1)}: must be {choices}"
        return f"{name} {text}"
    if found := re.match(r"^Got unexpected extra arguments? \((.*)\)$", message):
        return f"{path} got more words than it takes ({found.group(1)}): {usage} (quote words with spaces; {see})"
    if found := re.match(r"^No such command '(.*)'$", message):
        return f"task-pulse has no command '{found.group(1)}'; see task-pulse --help"
    if found := re.match(r"^Option '(.*)' requires an argument$", message):
        return f"{found.group(1)} needs a value ({see})"
    return message
