"""Live delivery: sinks (how a message reaches the chat), the plan of calls for a task's pending
notifications (live card, coalescing, stream), and the courier threads that run them."""

from __future__ import annotations

import logging
from pathlib import Path

from task_pulse.outbox import Outbox
from task_pulsed.delivery.courier import Courier, DeliveryOptions, Doorbell
from task_pulsed.delivery.sinks import Sink

__all__ = ["Delivery", "DeliveryOptions"]
log = logging.getLogger("task-pulsed")


class Delivery:
    """`concurrency` couriers on one sink: at most one call in flight per task, tasks in parallel."""

    def __init__(self, tasks_dir: Path, sink: Sink, options: DeliveryOptions, concurrency: int = 4) -> None:
        self.tasks_dir, self.sink, self.options = tasks_dir, sink, options
        self.bell = Doorbell()
        self.couriers = [Courier(i, tasks_dir, sink, options, self.bell) for i in range(concurrency)]

    def start(self) -> None:
        outbox = Outbox.for_tasks_dir(self.tasks_dir)
        try:
            # One daemon per tasks dir: claims held by earlier daemons' couriers died with them.
            released = outbox.release_claims("sink:")
            outbox.purge_cards()
        finally:
            outbox.close()
        log.info("delivering through %s sink %s: %s style, %d in parallel, %d attempts%s", self.sink.name,
                 self.sink.describe(), self.options.style, len(self.couriers), self.options.attempts,
                 f" ({released} notifications a stopped daemon had claimed are taken again)" if released else "")
        for courier in self.couriers:
            courier.start()

    def wake(self) -> None:
        """Something new is queued (called by the worker after a commit)."""
        self.bell.ring()

    def stop(self, timeout: float = 5) -> None:
        """Stop taking work; a call still running is redone after a restart (its rows stay claimed)."""
        for courier in self.couriers:
            courier.stop()
        for courier in self.couriers:
            if courier.is_alive():
                courier.join(timeout=timeout)
