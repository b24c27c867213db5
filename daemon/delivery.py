"""The deliverer: one thread that pushes queued notifications through the daemon's sink.

It has its own database connection and writes only delivery state (claims, attempts, delivered),
never snapshots or notifications, so a slow or failing sink cannot hold up watching, diffing or
stall detection. It sleeps until the worker queues something new or a retry comes due: no polling.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from pathlib import Path

from task_pulse.outbox import Outbox, Queued
from task_pulsed.sinks import DeliveryError, Sink

log = logging.getLogger("task-pulsed")


class Deliverer(threading.Thread):
    def __init__(self, tasks_dir: Path, sink: Sink, *, attempts: int, backoff: float, lease_seconds: float) -> None:
        super().__init__(name="task-pulsed-deliverer", daemon=True)
        self.tasks_dir, self.sink = tasks_dir, sink
        self.attempts, self.backoff, self.lease_seconds = attempts, backoff, lease_seconds
        self.owner = f"sink:{sink.name}:{os.getpid()}"
        self._wake = threading.Event()
        self._stopping = False

    def wake(self) -> None:
        """Something new is queued (called by the worker after a commit)."""
        self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    def run(self) -> None:
        outbox = Outbox.for_tasks_dir(self.tasks_dir)
        log.info("delivering through %s sink %s (%d attempts)", self.sink.name, self.sink.describe(), self.attempts)
        try:
            while not self._stopping:
                self._wake.clear()  # before looking, so a wake() during the look is not lost
                row = outbox.claim_for_sink(self.owner, self.attempts, self.lease_seconds)
                if row is None:
                    free_at = outbox.sink_next_free(self.attempts)
                    self._wake.wait(None if free_at is None else max(0.0, free_at - time.time()))
                    continue
                self._deliver(outbox, row)
        except sqlite3.Error as exc:
            log.error("deliverer stopped, state database: %s (task-pulse drain still works)", exc)
        finally:
            outbox.close()

    def _deliver(self, outbox: Outbox, row: Queued) -> None:
        try:
            self.sink.deliver(row.to_json())
        except Exception as exc:  # noqa: BLE001 - whatever the sink does, this thread must go on delivering
            if not isinstance(exc, DeliveryError):
                log.exception("%s: %s sink failed unexpectedly", row.task_id, self.sink.name)
            attempt = row.attempts + 1
            delay = min(self.backoff * 2 ** (attempt - 1), 3600.0)
            outbox.retry_later(row.seq, self.owner, str(exc), time.time() + delay)
            if attempt >= self.attempts:
                log.warning("%s: %s not delivered after %d attempts (%s); left for task-pulse drain",
                            row.task_id, row.kind, attempt, exc)
            else:
                log.info("%s: %s delivery failed (%s); retry %d/%d in %.1f s", row.task_id, row.kind, exc,
                         attempt + 1, self.attempts, delay)
            return
        outbox.mark_delivered([row.seq], self.owner, by=self.sink.name)
        log.debug("%s: %s delivered by %s", row.task_id, row.kind, self.sink.name)
