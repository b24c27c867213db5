"""Every error a person sees is one line, in our words: click's usage errors too (they were four lines:
Usage, Try, a blank, Error) and its wording ("'abc' is not a valid float range")."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.conftest import BIN, clean_env

CLICK_WORDS = ("Usage:", "Try '", "is not a valid", "float range", "is not in the range", "Invalid value for",
               "No such option", "Missing argument", "Got unexpected", "is not one of")


def one_error_line(proc: subprocess.CompletedProcess[str], *wanted: str) -> str:
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), proc.stderr
    assert not any(w in lines[0] for w in CLICK_WORDS), lines[0]
    assert all(w in lines[0] for w in wanted), lines[0]
    return lines[0]


@pytest.mark.parametrize(("args", "wanted"), [
    (["create", "only-a-name"], ("task-pulse create needs STEPS", "task-pulse create --help")),
    (["create"], ("needs NAME",)),
    (["heartbeat", "t", "--percent", "abc"], ("--percent 'abc': must be a number from 0 to 100",)),
    (["heartbeat", "t", "--percent", "101"], ("--percent '101': must be a number from 0 to 100",)),
    (["heartbeat", "t", "--percent", "nan"], ("must be a number from 0 to 100",)),
    (["create", "--stall", "0", "n", "a"], ("--stall '0': must be a number from 1 to",)),
    (["cleanup", "--days", "-1"], ("--days '-1': must be a number of at least 0",)),
    (["status", "--limit", "0"], ("--limit 0: must be a whole number of at least 1",)),
    (["status", "--limit", "x"], ("--limit 'x': must be a whole number",)),
    (["--lang", "fr", "status"], ("--lang 'fr': must be zh or en",)),
    (["status", "--al"], ("task-pulse status has no option --al", "did you mean --all")),
    (["frobnicate"], ("task-pulse has no command 'frobnicate'",)),
    (["--dir"], ("--dir needs a value",)),
    (["run", "--", "echo", "hi"], ("give the task a name",)),
    (["run", "Backup", "backup.sh"], ("give the command after --",)),
    (["run", "Nightly", "backup", "--", "backup.sh"], ("more words than it takes", "quote words with spaces")),
    (["openclaw", "setup", "--via", "x"], ("--via 'x': must be auto, sink or cron",)),
    (["service", "install", "--bogus"], ("task-pulse service install has no option --bogus",)),
])
def test_task_pulse_usage_errors(tmp_path: Path, args: list[str], wanted: tuple[str, ...]) -> None:
    proc = subprocess.run([str(BIN / "task-pulse"), "--dir", str(tmp_path / "tasks"), *args] if args[0] != "--dir"
                          else [str(BIN / "task-pulse"), *args], capture_output=True, text=True, env=clean_env(),
                          timeout=60)
    one_error_line(proc, *wanted)
    assert not (tmp_path / "tasks").exists() or not list((tmp_path / "tasks").glob("*.json"))  # nothing made


@pytest.mark.parametrize(("args", "wanted"), [
    (["--stall", "abc"], ("--stall 'abc': must be a number above 0",)),
    (["--sink-concurrency", "100"], ("--sink-concurrency 100: must be a whole number from 1 to 64",)),
    (["--style", "x"], ("--style 'x': must be card or stream",)),
    (["--bogus"], ("task-pulsed has no option --bogus",)),
    (["--exec", "a", "--webhook", "http://x"], ("exclusive",)),
    (["--dir", "/etc/passwd"], ("--dir '/etc/passwd': must be a directory, not a file",)),
])
def test_task_pulsed_usage_errors(args: list[str], wanted: tuple[str, ...]) -> None:
    proc = subprocess.run([str(BIN / "task-pulsed"), *args, "--check"], capture_output=True, text=True,
                          env=clean_env(), timeout=60)
    one_error_line(proc, *wanted)


def test_help_and_version_still_work(tmp_path: Path) -> None:
    for args in (["--help"], ["run", "--help"], ["--version"]):
        proc = subprocess.run([str(BIN / "task-pulse"), *args], capture_output=True, text=True, env=clean_env(),
                              timeout=60)
        assert proc.returncode == 0 and proc.stderr == "" and proc.stdout, args
    assert "task-pulse run [OPTIONS] [NAME] -- CMD [ARGS]..." in subprocess.run(
        [str(BIN / "task-pulse"), "run", "--help"], capture_output=True, text=True, env=clean_env(), timeout=60).stdout
