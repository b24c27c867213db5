"""The watcher: turns filesystem events on the tasks dir into "look at task X" work items.

It runs in watchdog's observer thread and does nothing but enqueue (and note which files a writer
has open, in `OpenWrites`), so a burst of events never waits on the database. watchdog 7 reports
an inotify queue overflow only as a warning on the `watchdog.observers.inotify_c` logger (events
were lost, none is sent for them): `OverflowHook` listens there and asks for a full rescan.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    DirCreatedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from task_pulse.taskfile import misnamed_reason, task_id_from_filename

log = logging.getLogger("task-pulsed")
INOTIFY_LOGGER = "watchdog.observers.inotify_c"
# How long a file being written (no close-write yet) is waited for before it is judged as it is.
OPEN_WRITE_GRACE = 30.0
# What we ask the kernel for. Not IN_ATTRIB/IN_OPEN/IN_CLOSE_NOWRITE: every writer (and every read
# of our own) would raise those per change, for nothing. An in-place writer is read when it closes
# the file (IN_CLOSE_WRITE), an atomic one when it renames (IN_MOVED_TO); IN_MODIFY only marks a
# file as being written (never read on it), so a half-written file is not taken for a broken one.
# Directories: only their arrival, for one named like a task file, which is reported.
EVENT_FILTER = [FileCreatedEvent, FileModifiedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent,
                DirCreatedEvent, DirMovedEvent]
_RELEVANT = frozenset({"created", "modified", "closed", "deleted", "moved"})


class OpenWrites:
    """Task files a writer has open for writing, as inotify tells it: from the creation of an empty
    file or a modify to the close-write (or a rename onto the name, or a removal).

    The original script writes in place (truncate, write, close), and a writer may be stopped,
    swapped out or on a slow disk in the middle: the worker does not call such a file invalid until
    its writer has closed it. Not every modify has a close to follow (`truncate`, a writer stopped
    for good), so a mark only counts for `OPEN_WRITE_GRACE` seconds after the last event.
    Shared by the observer thread (marks) and the worker (asks, forgets).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[str, float] = {}  # task id -> monotonic time of its latest create/modify

    def opened(self, task_id: str) -> None:
        with self._lock:
            self._since[task_id] = time.monotonic()

    def closed(self, task_id: str) -> None:
        with self._lock:
            self._since.pop(task_id, None)

    def open_for(self, task_id: str) -> float | None:
        """Seconds since the file was last seen being written, if its writer has not closed it."""
        with self._lock:
            since = self._since.get(task_id)
        return None if since is None else time.monotonic() - since

    def read_whole(self, task_id: str, read_started: float) -> None:
        """The worker parsed the file it began reading at `read_started`: a mark older than that is
        spent (files created complete, by link or rename, get no close-write), a newer one stays."""
        with self._lock:
            if self._since.get(task_id, read_started) < read_started:
                del self._since[task_id]

    def clear(self) -> None:
        """Events were lost (an inotify overflow): what was open may have been closed unseen."""
        with self._lock:
            self._since.clear()


def _empty(path: str) -> bool:
    """A file created empty is being written (open('w')); one that arrives whole (a rename from
    another dir, a hard link: both reported as created) is not."""
    try:
        return os.lstat(path).st_size == 0
    except OSError:
        return False


class TaskEventHandler(FileSystemEventHandler):
    """Maps events on `<root>/<id>.json` to `on_task(id)`; dotfiles, `*.tmp` and `.pulse/` never match."""

    def __init__(self, root: Path, on_task: Callable[[str], None], open_writes: OpenWrites | None = None,
                 on_misnamed: Callable[[str], None] | None = None) -> None:
        self.root = os.fsdecode(os.path.abspath(root))
        self.on_task, self.on_misnamed = on_task, on_misnamed
        self.open_writes = open_writes or OpenWrites()

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type not in _RELEVANT:
            return
        # A directory named like a task file is reported (once it is there), never read.
        if event.is_directory and event.event_type not in ("created", "moved"):
            return
        kind = event.event_type
        # A move is both a removal at its source and a complete file at its destination (atomic replace).
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = os.fsdecode(raw)
            if os.path.dirname(path) != self.root:
                continue
            name = os.path.basename(path)
            task_id = task_id_from_filename(name)
            if task_id is None:
                if self.on_misnamed is not None and kind != "modified" and misnamed_reason(name) is not None:
                    self.on_misnamed(name)
                continue
            if kind == "modified" or (kind == "created" and _empty(path)):
                self.open_writes.opened(task_id)  # marked before the worker can look
            else:
                self.open_writes.closed(task_id)
            if kind != "modified":
                self.on_task(task_id)


class OverflowHook(logging.Handler):
    """Calls `on_overflow` when watchdog says the kernel's inotify queue overflowed."""

    def __init__(self, on_overflow: Callable[[], None]) -> None:
        super().__init__(level=logging.WARNING)
        self.on_overflow = on_overflow

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self.on_overflow()

    def install(self) -> None:
        logger = logging.getLogger(INOTIFY_LOGGER)
        if logger.getEffectiveLevel() > logging.WARNING:
            logger.setLevel(logging.WARNING)
        logger.addHandler(self)

    def remove(self) -> None:
        logging.getLogger(INOTIFY_LOGGER).removeHandler(self)


def start_observer(root: Path, on_task: Callable[[str], None], open_writes: OpenWrites | None = None,
                   on_misnamed: Callable[[str], None] | None = None) -> BaseObserver:
    observer = Observer()
    root = Path(os.path.abspath(root))  # watchdog reports paths as given; the handler compares absolute ones
    observer.schedule(TaskEventHandler(root, on_task, open_writes, on_misnamed), os.fspath(root), recursive=False,
                      event_filter=EVENT_FILTER)
    observer.daemon = True
    observer.start()
    return observer
