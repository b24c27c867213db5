"""`task-pulse hook claude-code`: one Claude Code hook event on stdin, written to the task it concerns.

Claude Code runs this command on its hook events (`task-pulse claude-code setup` puts it into
settings.json) with one JSON object on stdin; what each event does is `events.py`.

It never holds up or fails the agent: it exits 0 whatever happens and prints nothing (Claude Code
hands a UserPromptSubmit hook's stdout to the model and reads stdout starting with `{` as decisions;
exit code 2 blocks the action, any other puts a hook error in the transcript), waits at most
LOCK_TIMEOUT for a lock, and writes what went wrong as one line to
`<tasks>/.pulse/claude-code/errors.log`. A tasks dir that does not exist means it is not set up:
nothing is written. It runs on every tool call, so it loads what a writer call loads (no click).
"""

from __future__ import annotations

import json
import os
import sys

from task_pulse.adapters.claude_code.events import HANDLERS, Hook
from task_pulse.adapters.claude_code.session import DIR_NAME, Session
from task_pulse.store import TaskStore

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from task_pulse.config import Settings

MAX_EVENT_BYTES = 16 * 1024 * 1024  # a Write call's event holds the whole file; past this it is skipped
LOCK_TIMEOUT = 2.0  # seconds a hook waits for a lock (a writer holds one for milliseconds)
LOG_NAME = "errors.log"
LOG_MAX_BYTES = 64 * 1024


class EventError(Exception):
    """The input is no hook event this command can follow (said in the error log)."""


def main(flags: dict[str, Any]) -> int:
    """The command: handle the event on stdin; 0 whatever happens. Never raises, never prints."""
    tasks_path = None
    event_name = "?"
    try:
        from task_pulse.config import load_settings

        settings = load_settings(flags)
        tasks_path = settings.tasks_path
        raw = sys.stdin.buffer.read(MAX_EVENT_BYTES + 1)
        if not os.path.isdir(tasks_path):
            return 0  # not set up (or taken away on purpose): nothing to write to
        event = parse_event(raw)
        event_name = str(event.get("hook_event_name"))[:40]
        handle(event, settings)
    except BaseException as exc:  # noqa: BLE001 - whatever it is, the agent goes on; the log says it
        if tasks_path is not None:
            log_error(tasks_path, event_name, exc)
    return 0


def parse_event(raw: bytes) -> dict[str, Any]:
    if len(raw) > MAX_EVENT_BYTES:
        raise EventError(f"event over {MAX_EVENT_BYTES // (1024 * 1024)} MiB: skipped")
    try:
        event = json.loads(raw)
    except (ValueError, RecursionError):
        raise EventError(f"not JSON ({len(raw)} bytes on stdin)") from None
    if not isinstance(event, dict):
        raise EventError(f"not a JSON object but {type(event).__name__}")
    return event


def handle(event: dict[str, Any], settings: Settings) -> None:
    """Apply one event to the tasks of its session."""
    handler = HANDLERS.get(event.get("hook_event_name"))  # type: ignore[arg-type]
    if handler is None:
        return  # an event this adapter does not follow (a settings entry added by hand, say)
    session_id = event.get("session_id")
    if not isinstance(session_id, str) or not session_id:
        raise EventError("no session_id")
    store = TaskStore(settings.tasks_path, min(settings.lock_timeout, LOCK_TIMEOUT))
    with Session(store, session_id, LOCK_TIMEOUT) as session:
        handler(Hook(store, session, settings, event))


def log_error(tasks_path: str, event_name: str, exc: BaseException) -> None:
    """One line in `.pulse/claude-code/errors.log` (the one before goes to `errors.log.1` past 64 KB)."""
    try:
        from task_pulse.messages import clean

        folder = TaskStore(tasks_path).private_path(DIR_NAME, create=True)
        if folder is None:
            return
        os.makedirs(folder, 0o700, exist_ok=True)
        path = os.path.join(folder, LOG_NAME)
        try:
            if os.stat(path, follow_symlinks=False).st_size > LOG_MAX_BYTES:
                os.replace(path, f"{path}.1")
        except FileNotFoundError:
            pass
        from datetime import datetime

        line = f"{datetime.now().astimezone().isoformat(timespec='seconds')} {clean(event_name, 40)}: " \
               f"{type(exc).__name__}: {clean(str(exc), 300)}\n"
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except Exception:  # noqa: BLE001, S110 - nowhere left to say it: the agent must go on regardless
        pass
