"""Settings, resolved once per command: flags > environment > config file > defaults.

The environment variable names are those of the original Live Task Pulse skill, so existing agent
prompts and cron lines keep working. A bad value is a `ConfigError` naming where it came from.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Any

from task_pulse.errors import ConfigError

DEFAULT_TASKS_DIR = "~/.openclaw/workspace/tasks"
CONFIG_FILE = "~/.config/task-pulse/config.toml"
LANGS = ("zh", "en")


@dataclass(frozen=True)
class Settings:
    tasks_dir: Path
    tz_offset_hours: float | None  # None: the machine's local zone
    stall_seconds: float
    lang: str
    keep_days: float
    progress_interval: float
    redact_secrets: bool

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


def _path(text: str) -> Path:
    if not text:
        raise ValueError("must not be empty")
    # Absolute from here on: the watcher matches event paths against it, and a service has another cwd.
    path = Path(os.path.abspath(os.path.expanduser(text)))
    if path.exists() and not path.is_dir():  # else each command fails its own way ("File exists", "nothing to drain")
        raise ValueError("must be a directory, not a file")
    return path


# name -> (environment variable, parser, default)
_FIELDS: dict[str, tuple[str, Callable[[str], Any], str | None]] = {
    "tasks_dir": ("TASK_PULSE_DIR", _path, DEFAULT_TASKS_DIR),
    "tz_offset_hours": ("TASK_PULSE_TZ", _offset, None),
    "stall_seconds": ("TASK_PULSE_STALL", _positive, "180"),
    "lang": ("TASK_PULSE_LANG", _lang, "zh"),
    "keep_days": ("TASK_PULSE_KEEP_DAYS", _positive, "7"),
    "progress_interval": ("TASK_PULSE_PROGRESS_INTERVAL", _positive, "30"),
    "redact_secrets": ("TASK_PULSE_REDACT", _switch, "1"),
}


_FLAG_NAMES = {"tasks_dir": "--dir", "lang": "--lang"}


def _read_config_file(path: Path) -> dict[str, str]:
    """The TOML file's keys are the environment names in lower case (`task_pulse_stall = 300`)."""
    if not path.is_file():
        return {}
    import tomllib  # only paid for by users who have a config file

    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    return {str(k).upper(): str(v) for k, v in data.items()}


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Resolve every setting. `flags` holds command-line values (None = not given)."""
    flags = flags or {}
    env = os.environ if env is None else env
    config_path = config_file or Path(os.path.expanduser(CONFIG_FILE))
    file_values = _read_config_file(config_path)
    values: dict[str, Any] = {}
    for name, (var, parse, default) in _FIELDS.items():
        flag = flags.get(name)
        if isinstance(flag, str):  # a path or a choice: the same checks as the environment's
            try:
                values[name] = parse(flag)
            except ValueError as exc:
                raise ConfigError(f"{_FLAG_NAMES.get(name, name)} {flag!r}: {exc}") from None
            continue
        if flag is not None:
            values[name] = flag  # a number: click already checked it
            continue
        for source, mapping in ((var, env), (f"{var.lower()} in {config_path}", file_values)):
            raw = mapping.get(var)
            if raw is not None and raw != "":
                try:
                    values[name] = parse(raw.strip())
                except ValueError as exc:
                    reason = str(exc) if "must" in str(exc) else "must be a number"
                    raise ConfigError(f"{source}={raw!r}: {reason}") from None
                break
        else:
            values[name] = None if default is None else parse(default)
    return Settings(**values)
