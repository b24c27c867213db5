"""task_pulse.config: flags > environment > config file > defaults, and clear errors for bad values."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from task_pulse.config import Settings, load_settings
from task_pulse.errors import BadInput, ConfigError

# setting name -> (env variable, flag value, env value, file value (TOML literal), expected from each source)
CASES: dict[str, tuple[str, Any, str, str, tuple[Any, Any, Any, Any]]] = {
    "tasks_dir": ("TASK_PULSE_DIR", "/flag/tasks", "/env/tasks", '"/file/tasks"',
                  (Path("/flag/tasks"), Path("/env/tasks"), Path("/file/tasks"),
                   Path(os.path.expanduser("~/.openclaw/workspace/tasks")))),
    "tz_offset_hours": ("TASK_PULSE_TZ", 9.0, "-5.5", "3", (9.0, -5.5, 3.0, None)),
    "stall_seconds": ("TASK_PULSE_STALL", 60.0, "300", "600", (60.0, 300.0, 600.0, 180.0)),
    "lang": ("TASK_PULSE_LANG", "en", "zh", '"en"', ("en", "zh", "en", "zh")),
    "keep_days": ("TASK_PULSE_KEEP_DAYS", 2.0, "3", "4.5", (2.0, 3.0, 4.5, 7.0)),
    "progress_interval": ("TASK_PULSE_PROGRESS_INTERVAL", 5.0, "10", "20", (5.0, 10.0, 20.0, 30.0)),
}


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text, encoding="utf-8")
    return path


def no_file(tmp_path: Path) -> Path:
    return tmp_path / "absent.toml"


@pytest.mark.parametrize("name", list(CASES))
def test_precedence(name: str, tmp_path: Path) -> None:
    var, flag, env_value, file_value, (from_flag, from_env, from_file, default) = CASES[name]
    file = config_file(tmp_path, f"{var.lower()} = {file_value}\n")
    env = {var: env_value}

    assert getattr(load_settings({name: flag}, env, file), name) == from_flag
    assert getattr(load_settings({name: None}, env, file), name) == from_env
    assert getattr(load_settings({}, {}, file), name) == from_file
    assert getattr(load_settings({}, {}, no_file(tmp_path)), name) == default
    # an empty environment value counts as not set
    assert getattr(load_settings({}, {var: ""}, file), name) == from_file


def test_defaults(tmp_path: Path) -> None:
    settings = load_settings({}, {}, no_file(tmp_path))
    expected = Settings(tasks_path=os.path.expanduser("~/.openclaw/workspace/tasks"), tz_offset_hours=None,
                        stall_seconds=180.0, lang="zh", keep_days=7.0, progress_interval=30.0, redact_secrets=True,
                        lang_set=False)
    assert [getattr(settings, n) for n in Settings.__slots__] == [getattr(expected, n) for n in Settings.__slots__]
    assert settings.tasks_dir == Path(expected.tasks_path)


def test_all_from_file(tmp_path: Path) -> None:
    file = config_file(tmp_path, "\n".join(f"{var.lower()} = {value}" for var, _, _, value, _ in CASES.values()))
    settings = load_settings({}, {}, file)
    for name, (*_, expected) in CASES.items():
        assert getattr(settings, name) == expected[2]


def test_unrelated_environment_is_ignored(tmp_path: Path) -> None:
    settings = load_settings({}, {"STALL": "1", "task_pulse_stall": "2"}, no_file(tmp_path))
    assert settings.stall_seconds == 180


def test_env_values_are_stripped_and_dir_expanded(tmp_path: Path) -> None:
    settings = load_settings({}, {"TASK_PULSE_STALL": " 240 ", "TASK_PULSE_DIR": "~/t"}, no_file(tmp_path))
    assert settings.stall_seconds == 240
    assert settings.tasks_dir == Path(os.path.expanduser("~/t"))


def test_environ_used_when_env_not_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_PULSE_STALL", "77")
    assert load_settings({}, None, no_file(tmp_path)).stall_seconds == 77


@pytest.mark.parametrize(("var", "value", "reason"), [
    ("TASK_PULSE_STALL", "abc", "must be a number"),
    ("TASK_PULSE_STALL", "0", "must be a positive number"),
    ("TASK_PULSE_STALL", "-5", "must be a positive number"),
    ("TASK_PULSE_STALL", "nan", "must be a positive number"),
    ("TASK_PULSE_STALL", "inf", "must be a positive number"),
    ("TASK_PULSE_LANG", "fr", "must be one of zh, en"),
    ("TASK_PULSE_TZ", "99", "must be an offset in hours between -24 and 24"),
    ("TASK_PULSE_TZ", "+8h", "must be a number"),
    ("TASK_PULSE_KEEP_DAYS", "week", "must be a number"),
    ("TASK_PULSE_PROGRESS_INTERVAL", "-1", "must be 0 or a positive number"),
])
def test_bad_env_value(var: str, value: str, reason: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({}, {var: value}, no_file(tmp_path))
    message = str(info.value)
    assert message == f"{var}={value!r}: {reason}"
    assert "\n" not in message
    assert isinstance(info.value, BadInput) and info.value.exit_code == 2


def test_bad_env_value_ignored_when_flag_given(tmp_path: Path) -> None:
    assert load_settings({"lang": "en"}, {"TASK_PULSE_LANG": "fr"}, no_file(tmp_path)).lang == "en"


def test_bad_file_value_names_the_key(tmp_path: Path) -> None:
    file = config_file(tmp_path, 'task_pulse_stall = "abc"\n')
    with pytest.raises(ConfigError) as info:
        load_settings({}, {}, file)
    assert "task_pulse_stall" in str(info.value)
    assert "'abc'" in str(info.value)
    # the environment wins over a bad file value, so it is never looked at
    assert load_settings({}, {"TASK_PULSE_STALL": "5"}, file).stall_seconds == 5


def test_broken_toml(tmp_path: Path) -> None:
    file = config_file(tmp_path, "task_pulse_stall = = 3\n")
    with pytest.raises(ConfigError) as info:
        load_settings({}, {}, file)
    assert str(info.value).startswith(f"cannot read config file {file}: ")
    assert "\n" not in str(info.value)


def test_config_file_not_utf8(tmp_path: Path) -> None:
    file = tmp_path / "config.toml"
    file.write_bytes(b'task_pulse_lang = "\xff"\n')
    with pytest.raises(ConfigError) as info:
        load_settings({}, {}, file)
    assert str(file) in str(info.value)


def test_config_file_that_is_a_directory_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "dir.toml").mkdir()
    assert load_settings({}, {}, tmp_path / "dir.toml").stall_seconds == 180


# -- time zone --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("offset", "hours"), [("8", 8), ("-5.5", -5.5), ("0", 0)])
def test_now_honours_tz_offset(offset: str, hours: float, tmp_path: Path) -> None:
    settings = load_settings({}, {"TASK_PULSE_TZ": offset}, no_file(tmp_path))
    before = datetime.now(UTC)
    now = settings.now()
    after = datetime.now(UTC)
    assert now.utcoffset() == timedelta(hours=hours)
    assert before <= now <= after
    assert settings.tz == timezone(timedelta(hours=hours))


def test_now_is_local_and_aware_without_tz(tmp_path: Path) -> None:
    settings = load_settings({}, {}, no_file(tmp_path))
    now = settings.now()
    assert settings.tz is None
    assert now.tzinfo is not None
    assert now.utcoffset() == datetime.now().astimezone().utcoffset()


def test_a_progress_interval_of_0_sends_every_progress_message(tmp_path: Path) -> None:
    """As `task-pulsed --progress-interval 0` does: the environment takes what the flag takes."""
    assert load_settings({}, {"TASK_PULSE_PROGRESS_INTERVAL": "0"}, no_file(tmp_path)).progress_interval == 0


def test_a_state_url_reads_its_secret_from_the_environment(tmp_path: Path) -> None:
    url = "postgresql://pulse:${DB_PW}@db.internal/pulse"
    settings = load_settings({}, {"TASK_PULSE_STATE": url, "DB_PW": "s3cret"}, no_file(tmp_path))
    assert settings.state_url == "postgresql://pulse:s3cret@db.internal/pulse"
    with pytest.raises(ConfigError) as info:
        load_settings({}, {"TASK_PULSE_STATE": url}, no_file(tmp_path))
    assert str(info.value) == "the state database URL: environment variable DB_PW is not set"
