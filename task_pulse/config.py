"""Settings, resolved once per command: flags > environment > config file > defaults.

The environment variable names are those of the original Live Task Pulse skill, so existing agent
prompts and cron lines keep working. A bad value is a `ConfigError` naming where it came from.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta, timezone, tzinfo

from task_pulse.errors import ConfigError

# A writer call loads this module: no pathlib, dataclasses or typing at run time (writer_cost.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from typing import Any

DEFAULT_TASKS_DIR = "~/.openclaw/workspace/tasks"
CONFIG_FILE = "~/.config/task-pulse/config.toml"
LANGS = ("zh", "en")


class Settings:
    """Every setting, resolved. `tasks_path` is the absolute tasks dir as a string; `tasks_dir` the same
    as a Path, for everything but the writer's hot path."""

    __slots__ = ("tasks_path", "tz_offset_hours", "stall_seconds", "lang", "keep_days", "progress_interval",
                 "redact_secrets", "lock_timeout", "state_url", "_host_name", "daemon_check", "lang_set",
                 "history_runs", "history_days")

    def __init__(self, tasks_path: str, tz_offset_hours: float | None, stall_seconds: float, lang: str,
                 keep_days: float, progress_interval: float, redact_secrets: bool, lock_timeout: float = 10,
                 state_url: str | None = None, host_name: str | None = None, daemon_check: bool = True,
                 lang_set: bool = True, history_runs: int = 50, history_days: float = 90) -> None:
        self.tasks_path = tasks_path
        self.tz_offset_hours = tz_offset_hours  # None: the machine's local zone
        self.stall_seconds, self.lang, self.keep_days = stall_seconds, lang, keep_days
        self.progress_interval, self.redact_secrets = progress_interval, redact_secrets
        self.lock_timeout = lock_timeout  # how long a writer waits for a task's lock
        self.state_url = state_url  # a shared state db (postgresql://…), None for the local one
        self._host_name = host_name
        # Say on stderr when no task-pulsed watches the tasks dir (TASK_PULSE_DAEMON_CHECK=0: a dir watched
        # from another container, a test suite).
        self.daemon_check = daemon_check
        # The language was chosen (flag, environment, config file); else the daemon's is spoken, if one runs.
        self.lang_set = lang_set
        # The history of finished runs (task_pulse/history): runs kept per task name, and for how long.
        self.history_runs, self.history_days = history_runs, history_days

    def lang_beside(self, daemon_lang: str | None) -> str:
        """The language to print in beside a daemon that speaks `daemon_lang` (None: none runs)."""
        return daemon_lang if not self.lang_set and daemon_lang in LANGS else self.lang

    @property
    def host_name(self) -> str:
        """This daemon's name in a shared state db: TASK_PULSE_HOST, else the machine's host name."""
        if self._host_name is None:
            import socket

            try:
                self._host_name = _host_name(socket.gethostname().split(".")[0])
            except ValueError:  # a host name no daemon can go by: set TASK_PULSE_HOST
                self._host_name = "localhost"
        return self._host_name

    @property
    def tasks_dir(self) -> Path:
        from pathlib import Path

        return Path(self.tasks_path)

    @property
    def tz(self) -> tzinfo | None:
        if self.tz_offset_hours is None:
            return None
        return timezone(timedelta(hours=self.tz_offset_hours))

    def now(self) -> datetime:
        """The current time in the zone timestamps are written in."""
        return datetime.now(self.tz).astimezone(self.tz)


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or value == float("inf"):  # `not >` also refuses nan
        raise ValueError("must be a positive number")
    if value > 1e9:  # seconds or days: beyond any real setting, and past the calendar's end
        raise ValueError("must be at most 1e9")
    return value


def _count(text: str) -> int:
    """A whole number from 1 up (a number of runs)."""
    value = int(text)
    if not 1 <= value <= 1_000_000:
        raise ValueError("must be a whole number from 1 to 1000000")
    return value


def _not_negative(text: str) -> float:
    """0 too: a progress interval of 0 sends every progress message (as `--progress-interval 0` does)."""
    value = float(text)
    if value == 0:
        return 0.0
    if not value > 0:
        raise ValueError("must be 0 or a positive number")
    return _positive(text)


_ENV_REFERENCE = r"\$\{(\w+)\}"


def expand_env(text: str, where: str, env: Mapping[str, str] | None = None) -> str:
    """`text` with each `${VAR}` taken from the environment (a missing variable is an error naming
    `where`): a token or password in a URL stays out of `ps`, unit files and logs."""
    import re

    values = os.environ if env is None else env

    def expand(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise ValueError(f"{where}: environment variable {match.group(1)} is not set")
        return values[match.group(1)]

    return re.sub(_ENV_REFERENCE, expand, text)


def _state_url(text: str) -> str:
    """A shared state database: a postgresql:// URL, `${VAR}` in it read from the environment."""
    if not text.startswith(("postgresql://", "postgres://")):
        raise ValueError("must be a postgresql:// URL")
    return text  # its ${VAR}s are read by `load_settings`, from the environment it was given


def _host_name(text: str) -> str:
    if not text or len(text) > 64 or any(c.isspace() or not c.isprintable() or c in ":/" for c in text):
        raise ValueError("must be a name of 1 to 64 printable characters, without spaces, ':' or '/'")
    return text


def _offset(text: str) -> float:
    value = float(text)
    if not -24 < value < 24:
        raise ValueError("must be an offset in hours between -24 and 24")
    return value


def _lang(text: str) -> str:
    if text not in LANGS:
        raise ValueError(f"must be one of {', '.join(LANGS)}")
    return text


def _switch(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError("must be 1 or 0 (true/false, yes/no, on/off)")


def _path(text: str) -> str:
    if not text:
        raise ValueError("must not be empty")
    # Absolute from here on: the watcher matches event paths against it, and a service has another cwd.
    path = os.path.abspath(os.path.expanduser(text))
    if os.path.exists(path) and not os.path.isdir(path):  # else each command fails its own way
        raise ValueError("must be a directory, not a file")
    return path


# name -> (environment variable, parser, default)
_FIELDS: dict[str, tuple[str, Callable[[str], Any], str | None]] = {
    "tasks_path": ("TASK_PULSE_DIR", _path, DEFAULT_TASKS_DIR),
    "tz_offset_hours": ("TASK_PULSE_TZ", _offset, None),
    "stall_seconds": ("TASK_PULSE_STALL", _positive, "180"),
    "lang": ("TASK_PULSE_LANG", _lang, "zh"),
    "keep_days": ("TASK_PULSE_KEEP_DAYS", _positive, "7"),
    "progress_interval": ("TASK_PULSE_PROGRESS_INTERVAL", _not_negative, "30"),
    "redact_secrets": ("TASK_PULSE_REDACT", _switch, "1"),
    "lock_timeout": ("TASK_PULSE_LOCK_TIMEOUT", _positive, "10"),
    "state_url": ("TASK_PULSE_STATE", _state_url, None),  # None: the local state db in <tasks>/.pulse/
    "host_name": ("TASK_PULSE_HOST", _host_name, None),  # None: this machine's host name
    "daemon_check": ("TASK_PULSE_DAEMON_CHECK", _switch, "1"),
    "history_runs": ("TASK_PULSE_HISTORY_RUNS", _count, "50"),
    "history_days": ("TASK_PULSE_HISTORY_DAYS", _positive, "90"),
}


_FLAG_NAMES = {"tasks_path": "--dir", "lang": "--lang", "state_url": "--state", "host_name": "--host-name"}


def _read_config_file(path: str) -> dict[str, str]:
    """The TOML file's keys are the environment names in lower case (`task_pulse_stall = 300`)."""
    if not os.path.isfile(path):
        return {}
    import tomllib  # only paid for by users who have a config file

    try:
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return {str(k).upper(): str(v) for k, v in data.items()}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: str | os.PathLike[str] | None = None,
) -> Settings:
    """Resolve every setting. `flags` holds command-line values (None = not given); `tasks_dir` is
    accepted as the name of the `--dir` flag."""
    flags = dict(flags or {})
    if "tasks_dir" in flags:
        flags["tasks_path"] = flags.pop("tasks_dir")
    env = os.environ if env is None else env
    config_path = os.fspath(config_file) if config_file is not None else os.path.expanduser(CONFIG_FILE)
    file_values = _read_config_file(config_path)
    values: dict[str, Any] = {}
    chosen: set[str] = set()  # settings given by a flag, the environment or the config file
    for name, (var, parse, default) in _FIELDS.items():
        flag = flags.get(name)
        if isinstance(flag, str):  # a path or a choice: the same checks as the environment's
            try:
                values[name] = parse(flag)
            except ValueError as exc:
                raise ConfigError(f"{_FLAG_NAMES.get(name, name)} {flag!r}: {exc}") from None
            chosen.add(name)
            continue
        if flag is not None:
            values[name] = flag  # a number: click already checked it
            chosen.add(name)
            continue
        for source, mapping in ((var, env), (f"{var.lower()} in {config_path}", file_values)):
            raw = mapping.get(var)
            if raw is not None and raw != "":
                try:
                    values[name] = parse(raw.strip())
                except ValueError as exc:
                    reason = str(exc) if "must" in str(exc) else "must be a number"
                    raise ConfigError(f"{source}={raw!r}: {reason}") from None
                chosen.add(name)
                break
        else:
            values[name] = None if default is None else parse(default)
    if values["state_url"] is not None:
        try:
            values["state_url"] = expand_env(values["state_url"], "the state database URL", env)
        except ValueError as exc:
            raise ConfigError(str(exc)) from None
    return Settings(**values, lang_set="lang" in chosen)
