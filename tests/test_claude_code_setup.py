"""`task-pulse claude-code setup`: our hooks merged into a settings.json that already has a life of its own."""

from __future__ import annotations

import copy
import json
import os
import shlex
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from task_pulse.adapters.claude_code.events import EVENTS
from task_pulse.adapters.claude_code.settings import SettingsFile, is_ours, merge, undo
from task_pulse.cli import cli
from task_pulse.errors import OperationFailed
from tests.conftest import BIN, clean_env

# A user's settings as Claude Code keeps them: other settings, and hooks of their own on some of our events.
THEIRS: dict[str, Any] = {
    "$schema": "https://json.schemastore.org/claude-code-settings.json",
    "model": "opus",
    "permissions": {"allow": ["Bash(npm run lint)", "Read(~/.zshrc)"], "deny": ["Read(./.env)"]},
    "env": {"FOO": "bar"},
    "hooks": {
        "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "~/.claude/hooks/block-rm.sh"}]}],
        "Stop": [{"hooks": [{"type": "command", "command": "notify-send 'Claude is done'", "timeout": 5}]}],
        "Notification": [{"matcher": "", "hooks": [{"type": "command", "command": "say hi"}]}],
    },
    "statusLine": {"type": "command", "command": "~/.claude/statusline.sh"},
}


class Home:
    """A temp HOME with `~/.claude/settings.json`, and the real `task-pulse` run in it."""

    def __init__(self, tmp_path: Path, settings: dict[str, Any] | None = THEIRS) -> None:
        self.home = tmp_path / "home"
        self.settings = self.home / ".claude" / "settings.json"
        self.settings.parent.mkdir(parents=True)
        if settings is not None:
            self.settings.write_text(json.dumps(settings, indent=2) + "\n")
            self.settings.chmod(0o640)
        self.tasks = tmp_path / "tasks"

    def run(self, *args: str, tasks_dir: bool = True) -> subprocess.CompletedProcess[str]:
        where = ["--dir", str(self.tasks)] if tasks_dir else []
        return subprocess.run([str(BIN / "task-pulse"), *where, "claude-code", "setup", *args], capture_output=True,
                              text=True, env=clean_env(HOME=str(self.home)), timeout=60)

    def ok(self, *args: str, tasks_dir: bool = True) -> str:
        proc = self.run(*args, tasks_dir=tasks_dir)
        assert (proc.returncode, proc.stderr) == (0, ""), proc
        return proc.stdout

    def data(self) -> dict[str, Any]:
        return json.loads(self.settings.read_text())


def ours(settings: dict[str, Any]) -> dict[str, list[str]]:
    """Our hook commands, per event."""
    return {event: [h["command"] for g in groups for h in g.get("hooks", []) if is_ours(h)]
            for event, groups in settings.get("hooks", {}).items() if any(is_ours(h) for g in groups
                                                                          for h in g.get("hooks", []))}


def test_setup_adds_our_hook_to_every_event_and_leaves_the_rest(tmp_path: Path) -> None:
    home = Home(tmp_path)
    out = home.ok()
    command = shlex.join([str(BIN / "task-pulse"), "--dir", str(home.tasks), "hook", "claude-code"])
    assert f"~/.claude/settings.json: added the task-pulse hook on {', '.join(EVENTS)}" in out
    assert f"hook command: {command}" in out
    data = home.data()
    assert ours(data) == {event: [command] for event in EVENTS}
    # everything else exactly as it was, their hooks first and untouched
    assert {k: v for k, v in data.items() if k != "hooks"} == {k: v for k, v in THEIRS.items() if k != "hooks"}
    for event, groups in THEIRS["hooks"].items():
        assert data["hooks"][event][:len(groups)] == groups
    assert data["hooks"]["PreToolUse"][-1] == {"matcher": "*", "hooks": [{"type": "command", "command": command,
                                                                          "timeout": 10}]}
    assert data["hooks"]["UserPromptSubmit"] == [{"hooks": [{"type": "command", "command": command, "timeout": 10}]}]
    assert data["hooks"]["SessionEnd"] == [{"hooks": [{"type": "command", "command": command}]}]
    assert stat.S_IMODE(home.settings.stat().st_mode) == 0o640  # its mode kept
    assert home.tasks.is_dir()  # the hook writes only into a tasks dir that exists: setup makes it
    assert "note: no task-pulsed watches" in out


def test_setup_twice_changes_nothing(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.ok()
    before = (home.settings.read_bytes(), home.settings.stat().st_mtime_ns, home.settings.stat().st_ino)
    assert "set up already; nothing to change" in home.ok()
    assert (home.settings.read_bytes(), home.settings.stat().st_mtime_ns, home.settings.stat().st_ino) == before


def test_undo_takes_out_exactly_ours(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.ok()
    out = home.ok("--undo")
    assert f"removed the task-pulse hook on {', '.join(EVENTS)}" in out
    assert home.data() == THEIRS
    assert stat.S_IMODE(home.settings.stat().st_mode) == 0o640
    assert "no task-pulse hook in it; nothing to change" in home.ok("--undo")
    # a group of theirs that also held our hook keeps theirs
    mixed = copy.deepcopy(THEIRS)
    mixed["hooks"]["Stop"][0]["hooks"].append({"type": "command", "command": "/opt/tp/bin/task-pulse hook claude-code"})
    home.settings.write_text(json.dumps(mixed))
    home.ok("--undo")
    assert home.data() == THEIRS


def test_undo_removes_what_our_removal_left_empty_and_nothing_more(tmp_path: Path) -> None:
    home = Home(tmp_path, {"model": "opus", "hooks": {"Notification": []}})
    home.ok()
    home.ok("--undo")
    assert home.data() == {"model": "opus", "hooks": {"Notification": []}}  # their empty list is theirs
    home = Home(tmp_path / "2", {"model": "opus"})
    home.ok()
    home.ok("--undo")
    assert home.data() == {"model": "opus"}


def test_dry_run_shows_and_changes_nothing(tmp_path: Path) -> None:
    home = Home(tmp_path)
    before = home.settings.read_bytes()
    out = home.ok("--dry-run")
    assert "would add the task-pulse hook on UserPromptSubmit" in out
    assert '"PreToolUse": [' in out and "the hooks it would write:" in out
    assert f"would create the tasks dir {home.tasks}" in out
    assert home.settings.read_bytes() == before and not home.tasks.exists()
    home.ok()
    assert "would remove the task-pulse hook on" in home.ok("--undo", "--dry-run")
    assert ours(home.data())  # still there


def test_another_tasks_dir_updates_ours_in_place(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.ok()
    # an older setup of ours on an event we no longer follow, and a copy of ours on one we do
    data = home.data()
    old = "/old/bin/task-pulse hook claude-code"
    data["hooks"]["Notification"].append({"hooks": [{"type": "command", "command": old}]})
    data["hooks"]["Stop"].append({"hooks": [{"type": "command", "command": "task-pulse hook claude-code"}]})
    home.settings.write_text(json.dumps(data))
    home.tasks = tmp_path / "other-tasks"
    out = home.ok()
    assert f"updated the task-pulse hook on {', '.join(EVENTS)}" in out
    assert "removed the task-pulse hook on Notification" in out
    command = shlex.join([str(BIN / "task-pulse"), "--dir", str(home.tasks), "hook", "claude-code"])
    assert ours(home.data()) == {event: [command] for event in EVENTS}
    assert home.data()["hooks"]["Notification"] == THEIRS["hooks"]["Notification"]


def test_the_default_tasks_dir_is_not_written_into_the_command(tmp_path: Path) -> None:
    home = Home(tmp_path, None)
    out = home.ok(tasks_dir=False)
    command = shlex.join([str(BIN / "task-pulse"), "hook", "claude-code"])
    assert ours(home.data())["Stop"] == [command]
    assert f"created the tasks dir {home.home / '.openclaw/workspace/tasks'}" in out
    assert stat.S_IMODE(home.settings.stat().st_mode) == 0o600  # a new settings file is private


def test_the_command_written_is_a_working_hook(tmp_path: Path) -> None:
    """What Claude Code will run: the command line, through a shell, with an event on stdin."""
    home = Home(tmp_path, None)
    home.ok()
    command = home.data()["hooks"]["UserPromptSubmit"][0]["hooks"][0]["command"]
    event = {"session_id": "s1", "hook_event_name": "UserPromptSubmit", "prompt": "Hello from a shell", "cwd": "/x"}
    proc = subprocess.run(["/bin/sh", "-c", command], input=json.dumps(event), capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(home.home)}, timeout=60)  # not our PATH
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, "", "")
    (task,) = home.tasks.glob("*.json")
    assert json.loads(task.read_text())["taskName"] == "Hello from a shell"


@pytest.mark.parametrize(("content", "why"), [
    (b'{"model": "opus",}',
     "is not valid JSON (Expecting property name enclosed in double quotes at line 1 column 18)"),
    (b"[1, 2]", "holds a JSON list, not an object"),
    (b'{"hooks": []}', "`hooks` is list, not an object"),
    (b'{"hooks": {"Stop": {"hooks": []}}}', "`hooks.Stop` is dict, not a list"),
    (b"\xc3\x28 not utf-8", "is not valid JSON"),
])
def test_a_settings_file_we_cannot_read_is_left_as_it_was(tmp_path: Path, content: bytes, why: str) -> None:
    home = Home(tmp_path, None)
    home.settings.write_bytes(content)
    for args in ((), ("--undo",), ("--dry-run",)):
        proc = home.run(*args)
        assert proc.returncode == 2 and proc.stdout == "", proc
        assert proc.stderr.startswith(f"Error: {home.settings}") and why in proc.stderr
        assert proc.stderr.count("\n") == 1 and "nothing changed" in proc.stderr
        assert home.settings.read_bytes() == content


def test_a_symlinked_settings_file_is_written_where_it_lives(tmp_path: Path) -> None:
    home = Home(tmp_path, None)
    dotfiles = tmp_path / "dotfiles" / "claude-settings.json"
    dotfiles.parent.mkdir()
    dotfiles.write_text(json.dumps(THEIRS))
    home.settings.symlink_to(dotfiles)
    home.ok()
    assert home.settings.is_symlink() and ours(json.loads(dotfiles.read_text()))
    assert not list(dotfiles.parent.glob(".*.tmp")) and not list(home.settings.parent.glob(".*.tmp"))


def test_a_project_gets_its_own_settings(tmp_path: Path) -> None:
    home = Home(tmp_path)
    project = tmp_path / "myapp"
    project.mkdir()
    out = home.ok("--project", str(project))
    assert f"{project}/.claude/settings.json: added the task-pulse hook" in out
    assert set(ours(json.loads((project / ".claude" / "settings.json").read_text()))) == set(EVENTS)
    assert home.data() == THEIRS
    proc = home.run("--project", str(tmp_path / "nope"))
    assert (proc.returncode, proc.stderr) == (2, f"Error: --project {tmp_path / 'nope'}: no such directory\n")


def test_merge_and_undo_are_inverse_on_the_data() -> None:
    snapshot = copy.deepcopy(THEIRS)
    command = "/venv/bin/task-pulse hook claude-code"
    merged, change = merge(THEIRS, command, "settings.json")
    assert change.added == list(EVENTS) and not change.updated and not change.removed
    again, change = merge(merged, command, "settings.json")
    assert again == merged and not change
    restored, change = undo(merged, "settings.json")
    assert restored == THEIRS and change.removed == list(EVENTS)
    assert snapshot == THEIRS  # the input itself is never changed


@pytest.mark.parametrize(("command", "mine"), [
    ("/home/u/.task-pulse/bin/task-pulse hook claude-code", True),
    ("'/path with space/task-pulse' --dir /t hook claude-code", True),
    ("task-pulse hook claude-code", True),
    ("task-pulse heartbeat x", False),
    ("/usr/bin/other-tool hook claude-code", False),
    ("echo 'unbalanced", False),
])
def test_what_counts_as_ours(command: str, mine: bool) -> None:
    assert is_ours({"type": "command", "command": command}) is mine


def test_setup_through_click_with_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path)
    monkeypatch.setenv("HOME", str(home.home))
    for var in [v for v in os.environ if v.startswith("TASK_PULSE_")]:
        monkeypatch.delenv(var)
    result = CliRunner().invoke(cli, ["--dir", str(home.tasks), "claude-code", "setup", "--json"])
    assert (result.exit_code, result.stderr) == (0, "")
    data = json.loads(result.stdout)
    assert data["changed"] is True and data["added"] == list(EVENTS) and data["dryRun"] is False
    assert data["settings"] == str(home.settings) and data["command"].endswith("hook claude-code")
    assert data["done"][0].startswith("~/.claude/settings.json: added")
    result = CliRunner().invoke(cli, ["--dir", str(home.tasks), "claude-code", "setup", "--undo", "--json"])
    assert json.loads(result.stdout)["removed"] == list(EVENTS)
    assert home.data() == THEIRS
    help_text = CliRunner().invoke(cli, ["claude-code", "setup", "--help"]).stdout
    assert "Examples:" in help_text and "--undo" in help_text


def test_a_file_rewritten_while_setup_runs_is_not_overwritten(tmp_path: Path) -> None:
    """Claude Code saves settings.json itself (the /hooks menu, permissions): its write is not lost to ours."""
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(THEIRS))
    file = SettingsFile(path).read()
    path.write_text(json.dumps({**THEIRS, "model": "sonnet"}))  # Claude Code, in between
    with pytest.raises(OperationFailed, match="changed while setup ran"):
        file.write(merge(file.data, "/b/task-pulse hook claude-code", str(path))[0])
    assert json.loads(path.read_text())["model"] == "sonnet" and [p.name for p in tmp_path.iterdir()] == [path.name]
