"""`task-pulse claude-code setup`: our hook entries in Claude Code's settings.json, merged in and taken out.

Claude Code reads hooks from `~/.claude/settings.json` (the user's) and `<project>/.claude/settings.json`
(a project's), in the shape its hooks reference gives (https://code.claude.com/docs/en/hooks, read
2026-08):

    {"hooks": {"PreToolUse": [{"matcher": "*", "hooks": [{"type": "command", "command": "…", "timeout": 10}]}]}}

Setup adds one matcher group per event it follows, holding one command hook: this installation's
`task-pulse` by its full path (hooks run with Claude Code's environment, which need not have our PATH),
`--dir` when the tasks dir is not the default, then `hook claude-code`. Everything else in the file —
other settings, other hooks, other groups of the same event — is left exactly as it was. A hook
counts as ours when its command is a `task-pulse … hook claude-code` (any path, any dir): running
setup again replaces ours in place of adding another, `--undo` removes ours and nothing else.

The file is rewritten only when something changes, atomically (temp file beside it, fsync, rename)
with its mode kept, where a symlink to it points (dotfile managers link it), and only if nobody
rewrote it since it was read. A file that is not a JSON object is refused, untouched.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
from pathlib import Path
from typing import Any

from task_pulse.adapters.claude_code.events import EVENTS
from task_pulse.errors import BadInput, OperationFailed

USER_SETTINGS = "~/.claude/settings.json"
TOOL_EVENTS = frozenset(("PreToolUse", "PostToolUse", "PostToolUseFailure"))  # the events with a tool matcher
# Seconds Claude Code gives the hook before cancelling it. It takes milliseconds; this only bounds a hung
# disk. SessionEnd keeps Claude Code's own 1.5 s budget: a timeout there would raise the budget of every
# session exit to it.
TIMEOUT = 10
NO_TIMEOUT = frozenset(("SessionEnd",))


def settings_path(project: Path | None) -> Path:
    return (project / ".claude" / "settings.json") if project is not None else Path(os.path.expanduser(USER_SETTINGS))


def hook_command(executable: Path, tasks_dir: Path | None) -> str:
    """The command line of our hook: `tasks_dir` None when it is the default (then not written)."""
    where = ["--dir", str(tasks_dir)] if tasks_dir is not None else []
    return shlex.join([str(executable), *where, "hook", "claude-code"])


def is_ours(handler: Any) -> bool:
    """Whether a hook handler is a `task-pulse … hook claude-code` (whichever installation, whichever dir)."""
    if not isinstance(handler, dict) or not isinstance(handler.get("command"), str):
        return False
    try:
        words = shlex.split(handler["command"])
    except ValueError:
        return False
    return len(words) >= 3 and words[-2:] == ["hook", "claude-code"] and os.path.basename(words[0]) == "task-pulse"


def our_group(event: str, command: str) -> dict[str, Any]:
    handler: dict[str, Any] = {"type": "command", "command": command}
    if event not in NO_TIMEOUT:
        handler["timeout"] = TIMEOUT
    return {"matcher": "*", "hooks": [handler]} if event in TOOL_EVENTS else {"hooks": [handler]}


class Change:
    """What a merge or an undo did to the settings: the events whose entry was added, updated, removed."""

    def __init__(self) -> None:
        self.added: list[str] = []
        self.updated: list[str] = []
        self.removed: list[str] = []

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def as_dict(self) -> dict[str, list[str]]:
        return {"added": self.added, "updated": self.updated, "removed": self.removed}

    def in_order(self) -> Change:
        """Each list in the order of EVENTS (then the rest by name), however the file had them."""
        for events in (self.added, self.updated, self.removed):
            events.sort(key=lambda e: (EVENTS.index(e) if e in EVENTS else len(EVENTS), e))
        return self


def _hooks_of(settings: dict[str, Any], shown: str) -> dict[str, Any]:
    hooks = settings.get("hooks", {})
    if not isinstance(hooks, dict):
        raise BadInput(f"{shown}: `hooks` is {type(hooks).__name__}, not an object: fix it by hand; nothing changed")
    for event, groups in hooks.items():
        if not isinstance(groups, list):
            raise BadInput(f"{shown}: `hooks.{event}` is {type(groups).__name__}, not a list: fix it by hand; "
                           "nothing changed")
    return hooks


def _without_ours(groups: list[Any]) -> tuple[list[Any], int]:
    """The groups with our handlers taken out (a group left empty by that goes too); how many were ours."""
    kept, ours = [], 0
    for group in groups:
        handlers = group.get("hooks") if isinstance(group, dict) else None
        if not isinstance(handlers, list) or not any(is_ours(h) for h in handlers):
            kept.append(group)
            continue
        rest = [h for h in handlers if not is_ours(h)]
        ours += len(handlers) - len(rest)
        if rest:
            kept.append({**group, "hooks": rest})
    return kept, ours


def merge(settings: dict[str, Any], command: str, shown: str) -> tuple[dict[str, Any], Change]:
    """`settings` with our hook on every event we follow (in place of any older one of ours), and on no other."""
    hooks = copy.deepcopy(_hooks_of(settings, shown))
    change = Change()
    for event in list(hooks):
        if event not in EVENTS:
            kept, ours = _without_ours(hooks[event])
            if ours:
                change.removed.append(event)
                _put(hooks, event, kept)
    for event in EVENTS:
        wanted = our_group(event, command)
        groups = hooks.get(event, [])
        kept, ours = _without_ours(groups)
        if ours == 1 and wanted in groups:
            continue  # there, as it should be, once
        (change.updated if ours else change.added).append(event)
        hooks[event] = [*kept, wanted]
    return ({**settings, "hooks": hooks} if change else settings), change.in_order()


def undo(settings: dict[str, Any], shown: str) -> tuple[dict[str, Any], Change]:
    """`settings` without any hook of ours; what our removal left empty (a group, an event, `hooks`) goes too."""
    if "hooks" not in settings:
        return settings, Change()
    hooks = copy.deepcopy(_hooks_of(settings, shown))
    change = Change()
    for event in list(hooks):
        kept, ours = _without_ours(hooks[event])
        if ours:
            change.removed.append(event)
            _put(hooks, event, kept)
    if not change:
        return settings, change
    if hooks:
        return {**settings, "hooks": hooks}, change.in_order()
    return {k: v for k, v in settings.items() if k != "hooks"}, change.in_order()


def _put(hooks: dict[str, Any], event: str, groups: list[Any]) -> None:
    if groups:
        hooks[event] = groups
    else:
        del hooks[event]


# -- the file -------------------------------------------------------------------------------------------

class SettingsFile:
    """A settings.json as read, to be replaced only if it is still what was read."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.real = Path(os.path.realpath(path))  # a symlinked settings.json is written where it lives
        self.data: dict[str, Any] = {}
        self.signature: tuple[int, int, int] | None = None
        self.mode = 0o600  # a new file: private (it may come to hold tokens in `env`)

    def read(self) -> SettingsFile:
        try:
            st = os.stat(self.real)
            raw = self.real.read_bytes()
        except FileNotFoundError:
            return self
        except IsADirectoryError:
            raise BadInput(f"{self.path} is a directory, not a settings file; nothing changed") from None
        self.signature, self.mode = (st.st_ino, st.st_size, st.st_mtime_ns), st.st_mode & 0o7777
        if raw.strip():
            try:
                data = json.loads(raw)
            except ValueError as exc:
                where = (f" ({exc.msg} at line {exc.lineno} column {exc.colno})"
                         if isinstance(exc, json.JSONDecodeError) else " (not UTF-8)")
                raise BadInput(f"{self.path} is not valid JSON{where}: fix it (or move it away) and run setup "
                               "again; nothing changed") from None
            if not isinstance(data, dict):
                raise BadInput(f"{self.path} holds a JSON {type(data).__name__}, not an object: fix it (or move it "
                               "away) and run setup again; nothing changed")
            self.data = data
        return self

    def write(self, data: dict[str, Any]) -> None:
        folder = self.real.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        body = (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        tmp = folder / f".{self.real.name}.task-pulse-{os.getpid()}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.write(fd, body)
                os.fchmod(fd, self.mode)
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                st = os.stat(self.real)
                now = (st.st_ino, st.st_size, st.st_mtime_ns)
            except FileNotFoundError:
                now = None
            if now != self.signature:
                raise OperationFailed(f"{self.path} changed while setup ran (Claude Code saving it?): run setup again; "
                                      "nothing changed")
            os.replace(tmp, self.real)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- setup ------------------------------------------------------------------------------------------

def setup(tasks_dir: Path, default_dir: bool, project: Path | None, *, undo_it: bool = False,
          dry_run: bool = False) -> dict[str, Any]:
    """Merge our hooks into the settings file (or take them out): what was done, as data, and one line each
    for a person (`lines`)."""
    if project is not None and not project.is_dir():
        raise BadInput(f"--project {project}: no such directory")
    path = settings_path(project)
    file = SettingsFile(path).read()
    command = hook_command(this_task_pulse(), None if default_dir else tasks_dir)
    new, change = undo(file.data, str(path)) if undo_it else merge(file.data, command, str(path))
    shown = str(path).replace(os.path.expanduser("~"), "~", 1) if project is None else str(path)
    verb = "would " if dry_run else ""
    lines: list[str] = []
    if change:
        if not dry_run:
            file.write(new)
        for what, events in (("add", change.added), ("update", change.updated), ("remove", change.removed)):
            if events:
                done = what if dry_run else {"add": "added", "update": "updated", "remove": "removed"}[what]
                lines.append(f"{shown}: {verb}{done} the task-pulse hook on {', '.join(events)}")
    else:
        lines.append(f"{shown}: {'no task-pulse hook in it' if undo_it else 'set up already'}; nothing to change")
    data: dict[str, Any] = {"settings": str(path), "changed": bool(change), "dryRun": dry_run, **change.as_dict()}
    if not undo_it:
        data["command"] = command
        lines.append(f"hook command: {command}")
        if dry_run and change:
            lines.append("the hooks it would write:")
            written = json.dumps(new.get("hooks", {}), indent=2, ensure_ascii=False)
            lines += ["  " + line for line in written.split("\n")]
        lines += _check_tasks_dir(tasks_dir, dry_run)
    data["lines"] = lines
    return data


def this_task_pulse() -> Path:
    """This installation's `task-pulse`, by its full path (beside its `task-pulsed`)."""
    from task_pulse.service import daemon_executable

    executable = daemon_executable().with_name("task-pulse")
    if not os.access(executable, os.X_OK):
        raise OperationFailed(f"cannot find the task-pulse executable of this installation ({executable}): "
                              "reinstall task-pulse")
    return executable


def _check_tasks_dir(tasks_dir: Path, dry_run: bool) -> list[str]:
    """The hook writes only into a tasks dir that exists: setup makes it. And says if no daemon watches it."""
    from task_pulse.store import TaskStore

    lines = []
    store = TaskStore(tasks_dir)
    if not tasks_dir.is_dir():
        if dry_run:
            return [f"would create the tasks dir {tasks_dir}"]
        store.ensure_dirs()
        lines.append(f"created the tasks dir {tasks_dir}")
    if not store.daemon_running():
        where = shlex.quote(str(tasks_dir))
        lines.append(f"note: no task-pulsed watches {where}, so nothing reaches a chat yet: "
                     f"`task-pulse --dir {where} service install` (or run `task-pulsed --dir {where}`)")
    return lines
