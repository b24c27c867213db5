"""One Claude Code session's state: which task is its turn's, which its sub-agents', what its todo list holds.

Claude Code runs hooks in parallel (all hooks of an event at once; the tool calls of one model reply
too) and each is a process of its own, so the state lives in a file: `<tasks>/.pulse/claude-code/
<session>.json`, private like the rest of `.pulse/`. A hook holds the session's lock
(`<session>.lock`) from reading it to writing it back, and changes task files under their own locks
inside it (always in that order, so two hooks never wait on each other in a circle). The file is
replaced atomically, without fsync: a power cut may cost the link from a session to the task of the
turn that was running (the next prompt starts a new one), never a task file, which the store writes
durably.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time

from task_pulse.store import FileLock

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import TracebackType
    from typing import Any

    from task_pulse.store import TaskStore

DIR_NAME = "claude-code"
# Claude Code's session ids are UUIDs: used as they are in a file name; anything else by its digest.
_PLAIN_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
# Bounds, so a session that runs for weeks keeps a small file.
MAX_AGENTS = 200  # sub-agents remembered (late events of ended ones still find their task)
MAX_PENDING = 20  # Agent tool calls waiting for their SubagentStart
MAX_ITEMS = 1000  # todo items (the Task tools)
MAX_STATE_BYTES = 4 * 1024 * 1024  # what the bounds above allow, with room to spare


def session_key(session_id: str) -> str:
    if _PLAIN_ID.fullmatch(session_id):
        return session_id
    import hashlib  # only for an id that cannot be a file name as it is

    return "h-" + hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()[:40]


class Session:
    """The state of one session, for a `with` block that holds its lock.

    Fields (JSON): `turn` the task of the current (or last) turn; `agents` agent_id → task id, oldest
    first; `open` the tasks it began and has not ended; `pending` Agent tool calls not yet matched to
    a SubagentStart (`tool`, `type`, `what`, `parent`); `agentTools` tool_use_id → agent_id; `items`
    the session's todo list from the Task tools (`id`, `subject`, `status`); `plans` task id → the
    item ids that are its steps.
    """

    def __init__(self, store: TaskStore, session_id: str, lock_timeout: float) -> None:
        self.store, self.session_id, self.lock_timeout = store, session_id, lock_timeout
        self.data: dict[str, Any] = {}
        self.dirty = False
        self._lock: FileLock | None = None
        self._path = ""

    def __enter__(self) -> Session:
        folder = self.store.private_path(DIR_NAME, create=True)
        assert folder is not None  # create=True: made and checked, or UnsafeDir
        fresh = False
        try:
            os.mkdir(folder, 0o700)  # inside a checked `.pulse/`: nobody else can have put anything here
            fresh = True
        except FileExistsError:
            pass
        key = session_key(self.session_id)
        self._path = os.path.join(folder, f"{key}.json")
        self._lock = FileLock(os.path.join(folder, f"{key}.lock"), f"Claude Code session {key}", self.lock_timeout)
        self._lock.__enter__()
        try:
            fd = os.open(self._path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            try:
                loaded = json.loads(os.read(fd, MAX_STATE_BYTES))
            finally:
                os.close(fd)
            self.data = loaded if isinstance(loaded, dict) else {}
        except FileNotFoundError:
            if not fresh:
                prune(folder, keep_seconds=7 * 86400)  # a new session: forget those long gone
        except (ValueError, RecursionError):
            self.data = {}  # torn by a crash (or cut at MAX_STATE_BYTES): start over rather than never again
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """Write back what changed, also after an error part way: a task created must stay findable."""
        assert self._lock is not None
        try:
            if self.dirty:
                self._save()
        finally:
            self._lock.__exit__(exc_type, exc, tb)

    def _save(self) -> None:
        tmp = f"{self._path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, json.dumps(self.data, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        finally:
            os.close(fd)
        os.replace(tmp, self._path)

    # -- fields -------------------------------------------------------------------------------------

    def get(self, name: str, default: Any) -> Any:
        """The field, if it has the type of `default` (a file edited by hand may hold anything), else `default`.
        Change what it returns only through `set`, on a copy."""
        value = self.data.get(name)
        return value if isinstance(value, type(default)) else default

    def set(self, name: str, value: Any) -> None:
        self.data[name] = value
        self.dirty = True

    def drop(self, name: str) -> None:
        if self.data.pop(name, None) is not None:
            self.dirty = True

    def keep_only(self, **fields: Any) -> None:
        """Forget everything but `fields` (a session that ended keeps why, and its last turn)."""
        self.data = {k: v for k, v in fields.items() if v is not None}
        self.dirty = True

    @property
    def turn(self) -> str | None:
        return self.get("turn", "") or None

    def agent_task(self, agent_id: str) -> str | None:
        value = self.get("agents", {}).get(agent_id)
        return value if isinstance(value, str) and value else None

    def add_agent(self, agent_id: str, task_id: str) -> None:
        agents = {k: v for k, v in self.get("agents", {}).items() if k != agent_id}
        agents[agent_id] = task_id
        self.set("agents", dict(list(agents.items())[-MAX_AGENTS:]))

    def opened(self, task_id: str) -> None:
        """`task_id` was begun by this session and runs until it `closed`."""
        self.set("open", [*self.open_tasks(), task_id][-MAX_AGENTS:])

    def closed(self, task_id: str) -> None:
        self.set("open", [t for t in self.open_tasks() if t != task_id])

    def open_tasks(self) -> list[str]:
        """The tasks of this session not ended yet, as far as it knows: its turn's and its sub-agents'."""
        return [t for t in self.get("open", []) if isinstance(t, str)]


def prune(folder: str, keep_seconds: float) -> int:
    """Remove the files of sessions untouched for `keep_seconds` (ended without a SessionEnd: a crash, a
    kill). A session's files go only while its lock is free and held here. Returns how many sessions."""
    cutoff = time.time() - keep_seconds
    removed = 0
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return 0
    for name in names:
        if not name.endswith(".lock"):
            continue
        lock_path = os.path.join(folder, name)
        data_path = lock_path[: -len(".lock")] + ".json"
        try:
            newest = max(os.stat(p, follow_symlinks=False).st_mtime for p in (lock_path, data_path)
                         if os.path.lexists(p))
            if newest >= cutoff:
                continue
            fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        except (OSError, ValueError):
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            for path in (data_path, f"{data_path}.tmp", lock_path):
                try:  # noqa: SIM105
                    os.unlink(path)
                except FileNotFoundError:
                    pass
            removed += 1
        except OSError:
            pass  # in use right now: not gone after all
        finally:
            os.close(fd)
    return removed
