"""Checkpointer: copies the state db's WAL back into the db on a connection of its own.

SQLite checkpoints on whichever commit crosses its page count (1,000 pages): a few fsyncs of
several ms each, paid by the worker in the middle of someone's write → outbox. The worker's
connection has that turned off (`Outbox.checkpoint_by_hand`); after its commits it pokes this
thread, which waits a moment for the burst to pass and then runs a PASSIVE checkpoint, which never
blocks a writer (it copies what no reader still needs, and the rest next time). Idle, it sleeps.
"""

from __future__ import annotations

import logging
import sqlite3

from task_pulse.errors import TaskPulseError
from task_pulse.state.outbox import DB_NAME
from task_pulse.store import TaskStore
from task_pulsed.poked import PokedThread

log = logging.getLogger("task-pulsed")
# How long after a poke the checkpoint runs: commits of a burst are copied back together.
CHECKPOINT_DELAY = 1.0


class Checkpointer(PokedThread):
    def __init__(self, store: TaskStore, delay: float = CHECKPOINT_DELAY) -> None:
        super().__init__("task-pulsed-checkpointer")
        self.store, self.delay = store, delay

    def run(self) -> None:
        db: sqlite3.Connection | None = None
        try:
            while True:
                self._poked.wait()
                if self._stopping.wait(self.delay):
                    return
                self._poked.clear()
                try:
                    if db is None:
                        path = self.store.private_path(DB_NAME, recheck=True)
                        if path is None:
                            continue
                        db = sqlite3.connect(path, timeout=1.0, isolation_level=None)
                    db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
                except (sqlite3.Error, OSError, TaskPulseError) as exc:  # busy, or the dir made unsafe: next time
                    log.debug("checkpoint skipped: %s", exc)
        finally:
            if db is not None:
                db.close()
