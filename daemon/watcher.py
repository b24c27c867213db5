"""The watcher: turns filesystem events on the tasks dir into "look at task X" work items.

It runs in watchdog's observer thread and does nothing but enqueue, so a burst of events never
waits on the database. watchdog 7 reports an inotify queue overflow only as a warning on the
`watchdog.observers.inotify_c` logger (events were lost, none is sent for them): `OverflowHook`
listens there and asks for a full rescan.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from watchdog.events import (
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver

from task_pulse.store import task_id_from_filename

log = logging.getLogger("task-pulsed")
INOTIFY_LOGGER = "watchdog.observers.inotify_c"
# What we ask the kernel for. Not IN_MODIFY/IN_ATTRIB/IN_OPEN/IN_CLOSE_NOWRITE: every writer (and
# every read of our own) would raise several of those per change, for nothing: an in-place writer
# is seen when it closes the file (IN_CLOSE_WRITE), an atomic one when it renames (IN_MOVED_TO).
# Fewer events also keep the kernel queue further from overflowing.
EVENT_FILTER = [FileCreatedEvent, FileMovedEvent, FileDeletedEvent, FileClosedEvent]
_RELEVANT = frozenset({"created", "closed", "deleted", "moved"})


class TaskEventHandler(FileSystemEventHandler):
    """Maps events on `<root>/<id>.json` to `on_task(id)`; dotfiles, `*.tmp` and `.pulse/` never match."""

    def __init__(self, root: Path, on_task: Callable[[str], None]) -> None:
        self.root = os.fsdecode(os.path.abspath(root))
        self.on_task = on_task

    def dispatch(self, event: FileSystemEvent) -> None:
        if event.event_type not in _RELEVANT or event.is_directory:
            return
        # A move is both a removal at its source and a write at its destination (atomic replace).
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if not raw:
                continue
            path = os.fsdecode(raw)
            if os.path.dirname(path) != self.root:
                continue
            task_id = task_id_from_filename(os.path.basename(path))
            if task_id is not None:
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


def start_observer(root: Path, on_task: Callable[[str], None]) -> BaseObserver:
    observer = Observer()
    root = Path(os.path.abspath(root))  # watchdog reports paths as given; the handler compares absolute ones
    observer.schedule(TaskEventHandler(root, on_task), os.fspath(root), recursive=False, event_filter=EVENT_FILTER)
    observer.daemon = True
    observer.start()
    return observer
