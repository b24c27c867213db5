"""A task file: which directory entries are tasks, and how one is read without trusting it.

A task's id is its file name (`<id>.json`), so the id rules here are also what keeps a writer inside
the tasks dir. Reading never follows a symlink, never blocks on a FIFO, never reads a hard-linked
file or more than 1 MB: anyone who may write the tasks dir may put anything there.
"""

from __future__ import annotations

import errno
import os
import re
import stat

from task_pulse.errors import BadInput
from task_pulse.model import Task, TaskFormatError, parse_task

MAX_ID_BYTES = 200
# A task file is a few KB. Anything bigger is refused before it is read whole.
MAX_FILE_BYTES = 1024 * 1024
SUFFIX = ".json"  # a task file is <id>.json


def check_task_id(task_id: str) -> str:
    """Refuse ids that could escape the tasks dir or hide from it (exit 2)."""
    if not task_id:
        raise BadInput("task id is empty")
    if "/" in task_id or "\\" in task_id or "\0" in task_id:
        raise BadInput(f"task id {task_id!r} contains a path separator or NUL")
    if task_id.startswith("."):
        raise BadInput(f"task id {task_id!r} starts with '.'")
    try:
        size = len(task_id.encode("utf-8"))
    except UnicodeEncodeError:
        raise BadInput(f"task id {task_id!r} is not valid UTF-8") from None
    if size > MAX_ID_BYTES:
        raise BadInput(f"task id is {size} bytes, over the limit of {MAX_ID_BYTES}")
    return task_id


# Room left in an id for `-YYYYmmdd-HHMMSS` and a collision suffix like `-9999`.
_STEM_MAX_BYTES = MAX_ID_BYTES - len("-20261124-093000") - len("-9999")


def id_stem(name: str) -> str:
    """The original script's file-safe form of a task name (Unicode word characters survive).

    Secrets are masked first (a name like `deploy ghp_…` must not leak the token through the id).
    At most 60 characters, as in the original, and short enough in UTF-8 bytes that the full id fits.
    """
    from task_pulse.masking import redact  # its patterns cost a heartbeat nothing

    stem = re.sub(r"[^\w\-]", "-", redact(name)).strip("-")[:60]
    while len(stem.encode("utf-8")) > _STEM_MAX_BYTES:
        stem = stem[:-1]
    return stem.rstrip("-") or "task"


def task_id_from_filename(name: str) -> str | None:
    """The task id for a directory entry name, or None when the entry is not a task file."""
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None
    task_id = name[: -len(SUFFIX)]
    try:
        check_task_id(task_id)
    except BadInput:
        return None
    return task_id


def misnamed_reason(name: str) -> str | None:
    """Why a directory entry that looks like a task file (`*.json`, no dotfile) cannot be one: a name
    over 200 bytes, with a backslash, not UTF-8. None when it can (or when it is no task file at all)."""
    if not name.endswith(SUFFIX) or name.startswith("."):
        return None
    try:
        check_task_id(name[: -len(SUFFIX)])
    except BadInput as exc:
        return f"its name cannot be a task id: {exc}"
    return None


def read_task_file(path: str | os.PathLike[str], max_bytes: int = MAX_FILE_BYTES) -> tuple[bytes, os.stat_result]:
    """Read a task file without following symlinks or blocking on FIFOs; its content and stat.

    Raises FileNotFoundError when it is gone, TaskFormatError when it is not something we read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise TaskFormatError("is a symlink (never followed)") from None
        if exc.errno == errno.ENOENT:
            raise
        raise TaskFormatError(f"cannot open ({exc.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise TaskFormatError("not a regular file")
        if st.st_nlink > 1:
            raise HardLinked(f"has {st.st_nlink} hard links (it is also another file): never read as a task")
        if st.st_size > max_bytes:
            raise TaskFormatError(f"file too large ({st.st_size} bytes, limit {max_bytes})")
        # One read of the whole file as it stands, one byte over to see its end: a regular file reads
        # short only at its end. A file still growing is read on until its end, or past the limit.
        data = os.read(fd, st.st_size + 1)
        if len(data) > st.st_size:
            chunks = [data]
            remaining = max_bytes + 1 - len(data)
            while remaining > 0 and (chunk := os.read(fd, min(remaining, 65536))):
                chunks.append(chunk)
                remaining -= len(chunk)
            data = b"".join(chunks)
        if len(data) > max_bytes:  # grew while we read it
            raise TaskFormatError(f"file too large (over {max_bytes} bytes)")
        return data, st
    finally:
        os.close(fd)


def task_from_file(data: bytes | str, task_id: str) -> Task:
    """Parse a task file's bytes. The file name is the identity, whatever `taskId` the content claims:
    a copied file must never be read, announced or written as its source."""
    task = parse_task(data, task_id)
    task.task_id = task_id
    return task


def file_signature(st: os.stat_result) -> str:
    """Changes whenever the file is replaced or rewritten: lets a rescan skip unchanged files."""
    return f"{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


class HardLinked(TaskFormatError):
    """A task file with more than one hard link: another file's content under a task's name (a co-user can link
    a file of the user's into a shared dir where `fs.protected_hardlinks` is 0). Never read as a task."""
