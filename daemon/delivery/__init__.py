"""Live delivery: sinks (how a message reaches the chat), the plan of calls for a task's pending
notifications (live card, coalescing, stream), and the courier threads that run them."""

from __future__ import annotations

import logging
import sqlite3
import time

from task_pulse.outbox import Outbox
from task_pulse.store import TaskStore
from task_pulsed.delivery.courier import Courier, DeliveryOptions, Doorbell
from task_pulsed.delivery.sinks import Sink

__all__ = ["Delivery", "DeliveryOptions"]
# How long a stopping daemon waits for sink calls in flight (the unit's TimeoutStopSec leaves room).
STOP_WAIT_SECONDS = 60
log = logging.getLogger("task-pulsed")


class Delivery:
    """`concurrency` couriers on one sink: at most one call in flight per task, tasks in parallel."""

    def __init__(self, store: TaskStore, sink: Sink, options: DeliveryOptions, concurrency: int = 4) -> None:
        self.store, self.sink, self.options = store, sink, options
        self.bell = Doorbell()
        self.couriers = [Courier(i, store, sink, options, self.bell) for i in range(concurrency)]

    def start(self) -> None:
        try:  # housekeeping: a busy db (or any db trouble) is for the couriers to wait out, not a reason to stop
            outbox = Outbox.for_store(self.store, busy_timeout=2.0)  # the main thread: not for long
            try:
                outbox.purge_cards()
            finally:
                outbox.close()
        except sqlite3.Error as exc:
            log.warning("cards of tasks gone not purged this time: %s", exc)
        log.info("delivering through %s sink %s: %s style, %d in parallel, %d attempts", self.sink.name,
                 self.sink.describe(), self.options.style, len(self.couriers), self.options.attempts)
        for courier in self.couriers:
            courier.start()

    def wake(self) -> None:
        """Something new is queued (called by the worker after a commit)."""
        self.bell.ring()

    def stop(self) -> None:
        """Stop taking work and let calls in flight finish (one deadline for all: a sink timeout, at most
        60 s), so a message the chat already has is not sent again after a restart."""
        for courier in self.couriers:
            courier.stop()
        deadline = time.monotonic() + min(self.sink.timeout, STOP_WAIT_SECONDS)
        for courier in self.couriers:
            if courier.is_alive():
                courier.join(timeout=max(0.0, deadline - time.monotonic()))
