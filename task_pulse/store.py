"""TaskStore: the tasks directory and every rule about touching it.

Writers change a task under a per-task `flock`, and replace the file atomically (temp file in the
same directory, fsync, `os.replace`), so concurrent writers never lose an update and a reader never
sees half a file from us. Files written by other tools may still be torn; readers cope with that.
Nothing here follows a symlink or opens anything but a regular file (taskfile.py reads one file).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from datetime import datetime, timedelta

from task_pulse.errors import BadInput, OperationFailed, TaskNotFound
from task_pulse.model import MAX_STEPS, Step, Task, TaskFormatError, parse_time
from task_pulse.privatedir import NAME as PULSE_DIR
from task_pulse.privatedir import check_private_dir, handle_path
from task_pulse.taskfile import (
    MAX_FILE_BYTES,
    SUFFIX,
    check_task_id,
    file_signature,
    id_stem,
    read_task_file,
    task_from_file,
    task_id_from_filename,
)

# A writer call loads this module: paths are strings here, pathlib and contextlib stay out of its
# import (tests/benchmarks/writer_cost.py). Readers and the daemon get Paths from the properties.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator
    from pathlib import Path
    from types import TracebackType
    from typing import Any

# How long a writer waits for a task's lock. A writer holds it for milliseconds; anything longer is
# a stuck or hostile holder, and waiting forever would hang the agent (TASK_PULSE_LOCK_TIMEOUT).
LOCK_TIMEOUT = 10.0
def _iso(now: datetime) -> str:
    return now.isoformat()


class TaskStore:
    """One tasks directory. Cheap to construct; touches the disk only when asked."""

    def __init__(self, root: str | os.PathLike[str], lock_timeout: float = LOCK_TIMEOUT) -> None:
        self._root = os.fspath(root)
        self.lock_timeout = lock_timeout
        self._pulse = os.path.join(self._root, PULSE_DIR)
        self._pulse_fd: int | None = None  # the handle of `.pulse/` once it passed privatedir's checks
        self.created_root = False  # this store made the tasks dir (a writer says so: a mistyped --dir?)
        # What `watching_daemon` found in the daemon lock (when it was last written, and the pid in it): it
        # changes whenever a daemon starts or stops, so an absence can be told once.
        self.daemon_lock_mark = ""

    @property
    def root(self) -> Path:
        from pathlib import Path

        return Path(self._root)

    @property
    def pulse_dir(self) -> Path:
        """Where `.pulse/` is, for messages. Open what is in it with `private_path`, which checks it."""
        return self.root / PULSE_DIR

    @property
    def locks_dir(self) -> Path:
        return self.pulse_dir / "locks"

    # -- paths and ids -----------------------------------------------------------------------------

    def path_for(self, task_id: str) -> str:
        return os.path.join(self._root, f"{check_task_id(task_id)}{SUFFIX}")

    def checked_path(self, task_id: str) -> str:
        """`path_for` of an id checked already (by `listing`, or when the state db stored it): the
        daemon builds 100,000 of these at a first start, and the check was a fifth of a file's cost."""
        return os.path.join(self._root, task_id + SUFFIX)

    def ensure_dirs(self) -> None:
        """Create the tasks dir and the private `.pulse/` (0700) beside the tasks, or check the one
        there (UnsafeDir when it is not ours alone)."""
        if self._pulse_fd is None:
            if not os.path.isdir(self._root):
                os.makedirs(self._root, exist_ok=True)
                self.created_root = True
            self._pulse_fd = check_private_dir(self._root, create=True)

    def private_path(self, name: str, *, create: bool = False, recheck: bool = False) -> str | None:
        """The path of `name` in `.pulse/` through its handle (`/proc/self/fd/N/name`), once `.pulse/` passed
        its checks (see privatedir.py), at the store's first use or, with `recheck`, now (a long-lived
        process opening the db again). None when `.pulse/` is absent and not to be created; UnsafeDir when
        it is not ours alone."""
        if recheck:
            self._pulse_fd = None
        if self._pulse_fd is None:
            if create:
                self.ensure_dirs()
            else:
                self._pulse_fd = check_private_dir(self._root, create=False)
                if self._pulse_fd is None:
                    return None
        assert self._pulse_fd is not None
        return handle_path(self._pulse_fd, name)

    def daemon_running(self) -> bool:
        """Whether a task-pulsed watches this dir now (see `watching_daemon`)."""
        return self.watching_daemon() is not None

    def watching_daemon(self) -> str | None:
        """The language of the task-pulsed that watches this dir now ("" when it does not say), None
        when none does. A daemon writes its pid and its language in `.pulse/daemon.lock` (one line
        each) and empties it when it stops: the pid alive means it runs. A few system calls: a writer
        asks after every write."""
        path = self.private_path("daemon.lock")
        if path is None:
            return None
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            return None
        try:
            lines = os.pread(fd, 64, 0).decode("ascii", "replace").split("\n")
            self.daemon_lock_mark = f"{os.fstat(fd).st_mtime_ns}:{lines[0].strip()}"
            pid = int(lines[0].strip() or 0)
        except ValueError:
            return None
        finally:
            os.close(fd)
        if pid <= 0:
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            pass  # alive, someone else's: not ours to signal, but there
        return lines[1].strip() if len(lines) > 1 else ""

    def first_to_tell(self, name: str, fact: str) -> bool:
        """Whether `fact` is news under `name` (remembered in `.pulse/<name>`, a file of privatedir.FILES):
        True once, until another fact is told. False where there is no `.pulse/` to remember it in."""
        path = self.private_path(name)
        if path is None:
            return False
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError:
            return False
        try:
            told = os.pread(fd, 256, 0).decode("utf-8", "replace")
            if told == fact:
                return False
            os.ftruncate(fd, 0)
            os.pwrite(fd, fact.encode("utf-8"), 0)
            return True
        finally:
            os.close(fd)

    def task_ids(self) -> list[str]:
        """Ids of the `*.json` entries at the top of the tasks dir, dotfiles excluded.

        Entries that are not regular files (symlinks, FIFOs) are listed too, so that readers name
        them as unreadable instead of silently skipping them; `read_task_file` refuses to open them.
        """
        return sorted(self.changed_files({}, signatures=False)[0])

    def changed_files(self, known: dict[str, str | None], *,
                      signatures: bool = True) -> tuple[list[str], list[str], int]:
        """One pass over the tasks dir against `known` (task id -> the signature of the file last read),
        which it empties of every id still on disk, so that what is left in it is gone. Returns the ids
        whose file is new or changed (every id, without `signatures`: no stat then), the names of
        `*.json` entries that cannot be task files, and how many task files there are.

        A rescan of 100,000 files stats each one, and that is all it does: ids in `known` were
        checked when the state db stored them (not again), the stat goes through the directory's fd
        (a third cheaper than one by path here), and the loop builds nothing per file it skips."""
        try:
            fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            return [], [], 0
        changed: list[str] = []
        misnamed: list[str] = []
        count = 0
        stat_at, pop = os.stat, known.pop
        try:
            for name in os.listdir(fd):
                if not name.endswith(SUFFIX) or name.startswith("."):
                    continue
                task_id = name[: -len(SUFFIX)]
                last = pop(task_id, None)
                if last is None and task_id_from_filename(name) is None:
                    misnamed.append(name)
                    continue
                count += 1
                if last is None or not signatures:
                    changed.append(task_id)
                    continue
                try:
                    st = stat_at(name, dir_fd=fd, follow_symlinks=False)
                except FileNotFoundError:  # gone already: its next look says so
                    changed.append(task_id)
                    continue
                if last != file_signature(st):
                    changed.append(task_id)
        finally:
            os.close(fd)
        return changed, misnamed, count

    def resolve(self, id_or_prefix: str) -> str:
        """An exact id, or the task the prefix means: the only match, else the only running match.

        A daily task keeps earlier days' files for a week, so `next 日报 …` matches several files
        from day two on; the one still running is the one meant. Anything else is ambiguous (two
        running, or several that ended): the error lists the candidates, and the full id decides.
        """
        check_task_id(id_or_prefix)
        if os.path.lexists(self.path_for(id_or_prefix)):
            return id_or_prefix
        candidates = self._ids_starting_with(id_or_prefix)
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            where = self._root if os.path.isdir(self._root) else f"{self._root} (no such directory)"
            raise TaskNotFound(f"task '{id_or_prefix}' not found in {where}")
        tasks = {i: self._read_or_none(i) for i in candidates}
        states = {i: t.status if t else "unreadable" for i, t in tasks.items()}
        running = [i for i in candidates if states[i] == "running"]
        if len(running) == 1:
            return running[0]
        shown = ", ".join(f"{i} ({states[i]})" for i in candidates[:10])
        more = f" (+{len(candidates) - 10} more)" if len(candidates) > 10 else ""
        count = f"{len(running)} running" if running else "none running"
        raise BadInput(f"task id prefix '{id_or_prefix}' is ambiguous ({count}): {shown}{more}; give the full id")

    def _ids_starting_with(self, prefix: str) -> list[str]:
        # Filter by name before validating: cheap in a directory of many thousand tasks.
        try:
            names = [n for n in os.listdir(self._root) if n.startswith(prefix)]
        except FileNotFoundError:
            return []
        return sorted(i for i in map(task_id_from_filename, names) if i is not None)

    def _read_or_none(self, task_id: str) -> Task | None:
        try:
            return self.load(task_id)
        except (TaskNotFound, OperationFailed):
            return None

    # -- reading -----------------------------------------------------------------------------------

    def load(self, task_id: str, *, reader: bool = False) -> Task:
        """The task, or TaskNotFound / OperationFailed naming what is wrong with the file. `reader`: as `status`
        shows it (a co-user's task marked as theirs and its text masked, see `_as_read`); never for a writer."""
        path = self.path_for(task_id)
        try:
            data, st = read_task_file(path)
            task = task_from_file(data, task_id)
            return _as_read(task, st) if reader else task
        except FileNotFoundError:
            raise TaskNotFound(f"task '{task_id}' not found in {self._root}") from None
        except TaskFormatError as exc:
            raise OperationFailed(f"task file {os.path.basename(path)} is not readable: {exc}") from None

    def iter_tasks(self) -> Iterator[tuple[str, Task | TaskFormatError]]:
        """Every task file, parsed one at a time; a file that is not a task comes with its reason."""
        return self.read_tasks(self.task_ids())

    def read_tasks(self, task_ids: Iterable[str], *,
                   reader: bool = False) -> Iterator[tuple[str, Task | TaskFormatError]]:
        """These tasks' files, parsed one at a time; a file that is not a task comes with its reason, a
        file gone meanwhile is left out. `reader`: as in `load`."""
        for task_id in task_ids:
            try:
                data, st = read_task_file(self.path_for(task_id))
                task = task_from_file(data, task_id)
                yield task_id, _as_read(task, st) if reader else task
            except FileNotFoundError:
                continue  # removed since we listed it
            except TaskFormatError as exc:
                yield task_id, exc

    def list_tasks(self, *, reader: bool = False) -> list[tuple[str, Task | TaskFormatError]]:
        return list(self.read_tasks(self.task_ids(), reader=reader))

    # -- writing -----------------------------------------------------------------------------------

    def locked(self, task_id: str, timeout: float | None = None) -> FileLock:
        """Hold the task's writer lock (`.pulse/locks/<id>.lock`, flock) for a `with` block.

        Waits at most `timeout` seconds (default: the store's `lock_timeout`; 0: not at all), then
        raises `TaskLocked`.
        """
        name = f"{check_task_id(task_id)}.lock"
        path = self.private_path(f"locks/{name}", create=True)
        assert path is not None
        return FileLock(path, f"task '{task_id}'", self.lock_timeout if timeout is None else timeout,
                        shown=os.path.join(self._pulse, "locks", name))

    def sweep_locks(self) -> int:
        """Remove lock files of tasks whose file is gone (deleted by hand, cleaned up). Returns how many.

        Safe beside writers: a lock is removed only while held here, and `locked` re-checks after
        taking a lock that its file is still the one at the path.
        """
        removed = 0
        locks = self.private_path("locks")
        if locks is None:
            return 0
        try:
            names = os.listdir(locks)
        except FileNotFoundError:
            return 0
        for name in names:
            task_id = name.removesuffix(".lock")
            try:
                if task_id == name or os.path.lexists(self.path_for(task_id)):
                    continue
            except BadInput:  # not a name a task can have (".lock", a stray file): not ours to judge
                continue
            lock_path = os.path.join(locks, name)
            try:
                fd = os.open(lock_path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if _still_linked(fd, lock_path) and not os.path.lexists(self.path_for(task_id)):
                    os.unlink(lock_path)
                    removed += 1
            except OSError:
                pass  # held by a writer right now (BlockingIOError), or gone: leave it
            finally:
                os.close(fd)
        return removed

    def _write(self, task: Task, *, exclusive: bool) -> None:
        """Write `task` atomically. `exclusive`: fail with FileExistsError if the file exists."""
        final = self.path_for(task.task_id)
        # Under locked(), so `.pulse` is checked (and held). Temp files live outside the watched dir: an atomic
        # write raises a single inotify event there (the rename's arrival), not a create + close pair to skip.
        tmp = self.private_path(f"tmp/{task.task_id}{SUFFIX}.tmp")
        assert tmp is not None
        data = json.dumps(task.to_dict(), ensure_ascii=False, indent=2).encode("utf-8")
        if len(data) > MAX_FILE_BYTES:  # no reader would take it: refuse it here, with the file as it was
            raise BadInput(f"task '{task.task_id}' would be {len(data):,} bytes, over the {MAX_FILE_BYTES:,}-byte "
                           "limit of a task file: shorten the message")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fchmod(fd, 0o600)
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            if exclusive:
                # link() is the atomic "create only if absent" for a file that is already complete.
                os.link(tmp, final)
                os.unlink(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            _unlink_if_there(tmp)
            raise

    def create(
        self,
        name: str,
        step_names: list[str],
        now: datetime,
        *,
        stall_seconds: float | None = None,
        task_id: str | None = None,
        budget_seconds: float | None = None,
        step_budgets: dict[str, float] | None = None,
        extra: dict[str, Any] | None = None,
    ) -> Task:
        """A new task with its first step running. Id collisions get `-2`, `-3` … (never overwrite).

        `budget_seconds`: how long the task may run before it is overdue; `step_budgets`: the same per
        step name (every step of that name), each naming one of the steps. `extra`: more fields for the
        file (an adapter's `parentTaskId`), written after the known ones."""
        if not name.strip():
            raise BadInput("a task needs a name")
        if not step_names:
            raise BadInput("a task needs at least one step")
        if any(not s.strip() for s in step_names):
            raise BadInput("step names must not be empty")
        if len(step_names) > MAX_STEPS:
            raise BadInput(f"{len(step_names)} steps: a task has at most {MAX_STEPS}")
        unknown = sorted(set(step_budgets or {}) - set(step_names))
        if unknown:
            raise BadInput(f"a budget for {', '.join(map(repr, unknown))}, which is not one of the steps")
        stamp = _iso(now)
        steps = [Step(name=s, budget_seconds=(step_budgets or {}).get(s)) for s in step_names]
        steps[0].status, steps[0].started_at = "running", stamp
        task = Task(task_id="", name=name, status="running", steps=steps, started_at=stamp,
                    updated_at=stamp, rev=1, stall_seconds=stall_seconds, budget_seconds=budget_seconds,
                    extra=dict(extra or {}))
        base = check_task_id(task_id) if task_id else f"{id_stem(name)}-{now.strftime('%Y%m%d-%H%M%S')}"
        for n in range(1, 10_000):
            task.task_id = base if n == 1 else f"{base}-{n}"
            check_task_id(task.task_id)
            with self.locked(task.task_id):
                try:
                    self._write(task, exclusive=True)
                    return task
                except FileExistsError:
                    if task_id:
                        raise OperationFailed(f"task '{task_id}' already exists") from None
        raise OperationFailed(f"no free task id left for '{base}'")

    def update(self, task_id: str, change: Callable[[Task], bool | None], now: datetime) -> Task:
        """Locked read-modify-write: `change` edits the task (or raises); rev +1, updatedAt = now.

        When `change` returns False there was nothing to change: the file is not written.
        """
        with self.locked(task_id):
            task = self.load(task_id)
            if change(task) is False:
                return task
            task.rev += 1
            task.updated_at = _iso(now)
            self._write(task, exclusive=False)
        return task

    # -- cleanup -----------------------------------------------------------------------------------

    def expired(self, now: datetime, days: float) -> list[str]:
        """Ids of done/error tasks that finished (else were last updated) more than `days` ago."""
        cutoff = expiry_cutoff(now, days)
        return [i for i, task in self.iter_tasks() if isinstance(task, Task) and finished_before(task, cutoff)]

    def remove_if_expired(self, task_id: str, cutoff: datetime, lock_timeout: float | None = None) -> bool:
        """Remove the task (and its lock file) if, read under its lock, it ended before `cutoff`.

        A task whose lock is not free within `lock_timeout` is left for the next cleanup.
        """
        try:
            with self.locked(task_id, lock_timeout):
                try:  # a writer may have revived it since it was found expired
                    current = self.load(task_id)
                except (TaskNotFound, OperationFailed):
                    return False
                if not finished_before(current, cutoff):
                    return False
                try:
                    _unlink_if_there(self.path_for(task_id))
                except PermissionError as exc:  # a co-user's file in a sticky dir, say: not ours to remove
                    raise NotRemovable(f"{os.path.basename(self.path_for(task_id))} cannot be removed by this "
                                       f"user ({exc.strerror}): its owner or root can") from None
                _unlink_if_there(self.private_path(f"locks/{task_id}.lock") or "")
                return True
        except TaskLocked:
            return False

    def cleanup(self, now: datetime, days: float, *, dry_run: bool = False,
                refused: dict[str, str] | None = None) -> list[str]:
        """Remove expired tasks. Returns the ids removed (or, with `dry_run`, that would be); `refused` gets
        those this user may not remove, with why (the others are removed all the same)."""
        candidates = self.expired(now, days)
        if dry_run:
            return candidates
        cutoff = expiry_cutoff(now, days)
        removed = []
        for task_id in candidates:
            try:
                if self.remove_if_expired(task_id, cutoff):
                    removed.append(task_id)
            except NotRemovable as exc:
                if refused is not None:
                    refused[task_id] = str(exc)
        self.sweep_locks()
        return removed


class TaskLocked(OperationFailed):
    """The task's lock stayed taken past the timeout."""


class NotRemovable(OperationFailed):
    """An expired task's file this user may not remove (another user's, in a sticky dir)."""

class FileLock:
    """`flock` on a lock file for a `with` block, waited for at most `timeout` seconds (a class:
    contextlib is not worth its import on a writer's path). `what` names what it guards, for the
    error: "task 'x'". A task's lock (`TaskStore.locked`), or any other lock file in `.pulse/`."""

    def __init__(self, path: str, what: str, timeout: float, shown: str | None = None) -> None:
        self.path, self.what, self.timeout = path, what, timeout
        self.shown = shown or path  # the path as a person finds it (`path` may go through a directory's handle)
        self.fd = -1

    def _take(self, fd: int) -> None:
        deadline = time.monotonic() + self.timeout
        pause = 0.001
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TaskLocked(f"{self.what} is locked by another process for more than "
                                     f"{self.timeout:g} s ({self.shown}); try again, or find the holder with "
                                     f"`fuser {self.shown}`") from None
                time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
                pause = min(pause * 2, 0.05)

    def __enter__(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                self._take(fd)
            except BaseException:
                os.close(fd)
                raise
            if _still_linked(fd, self.path):
                self.fd = fd
                return
            os.close(fd)  # a sweep removed the file while we waited: lock the one that is there now

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        os.close(self.fd)  # closing releases the lock


def unwatched_note(root: str, created: bool = False) -> str:
    """What a command says on stderr when no task-pulsed watches `root`: writes there reach no chat."""
    from task_pulse.config import DEFAULT_TASKS_DIR

    default = root == os.path.expanduser(DEFAULT_TASKS_DIR)
    shown = root if not set(root) & _SHELL_SPECIAL else "'" + root.replace("'", "'\\''") + "'"
    given = "" if default else f" --dir {shown}"
    if created:
        head = f"created {root} (it did not exist); no task-pulsed watches it"
    elif not os.path.isdir(root):
        head = f"there is no {root} (a typo?), and no task-pulsed watches it"
    else:
        head = f"no task-pulsed watches {root}"
    return (f"{head}: nothing reaches the chat until one does: task-pulse{given} service install "
            f"(or task-pulsed{given} in a terminal)")


_SHELL_SPECIAL = set(" \t\n'\"\\$`!*?[]{}()<>|&;#~")


def _as_read(task: Task, st: os.stat_result) -> Task:
    """A task as `status` hands it to a person or an agent: the user's own as it is; a co-user's (a file of
    another account) with its owner in front of its name and its text masked and capped as in the chat, since
    an agent reads it into its context."""
    if st.st_uid == os.geteuid():
        return task
    from task_pulse.snapshot import compact, owned

    return compact(owned(task, st.st_uid))


def _unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:  # noqa: SIM105 - contextlib.suppress would cost a writer call its import
        return


def _still_linked(fd: int, path: str) -> bool:
    """Whether the open file `fd` is still the file at `path` (not unlinked or replaced meanwhile)."""
    try:
        return os.path.samestat(os.fstat(fd), os.stat(path, follow_symlinks=False))
    except FileNotFoundError:
        return False


def expiry_cutoff(now: datetime, days: float) -> datetime:
    """`now - days`, where an age beyond the calendar (a huge N) simply means nothing is that old."""
    try:
        return now - timedelta(days=days)
    except OverflowError:
        return datetime.min.replace(tzinfo=now.tzinfo)


def finished_before(task: Task, cutoff: datetime) -> bool:
    """Whether a done/error task ended (finishedAt, else updatedAt) before `cutoff`."""
    if task.status not in ("done", "error"):
        return False
    finished = parse_time(task.finished_at) or parse_time(task.updated_at)
    return finished is not None and finished < cutoff

