"""Live delivery: sinks (how a message reaches the chat), the plan of calls for a task's pending
notifications (live card, coalescing, stream), and the courier threads that run them."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from task_pulse.errors import TaskPulseError
from task_pulse.messages import counted
from task_pulse.records import DeliveryStore
from task_pulse.state.outbox import Outbox
from task_pulse.store import TaskStore
from task_pulsed.delivery.courier import Courier, DeliveryOptions, Doorbell, StateOpener
from task_pulsed.delivery.pacing import Pacer, describe
from task_pulsed.delivery.sinks import Sink

__all__ = ["Delivery", "DeliveryOptions", "LocalState", "SharedState"]
# How long a stopping daemon waits for sink calls in flight (the unit's TimeoutStopSec leaves room).
STOP_WAIT_SECONDS = 60
log = logging.getLogger("task-pulsed")


class LocalState:
    """Couriers deliver from this dir's state db. The worker frees a dead daemon's claims at start."""

    owner_prefix = "sink:"
    errors: tuple[type[BaseException], ...] = (sqlite3.Error, TaskPulseError)

    def __init__(self, store: TaskStore) -> None:
        self.store = store

    def open(self) -> DeliveryStore:
        return Outbox.for_store(self.store)


class SharedState:
    """Couriers deliver from a shared state db, any host's notifications; they wake on its NOTIFY."""

    def __init__(self, url: str, host: str) -> None:
        from task_pulse.state.shared import state_errors

        self.url, self.host = url, host
        self.owner_prefix = f"sink:{host}:"  # this host's claims, freed when its daemon starts again
        self.errors = (*state_errors(), OSError, TaskPulseError)

    def open(self) -> DeliveryStore:
        from task_pulse.state.shared import SharedOutbox

        return SharedOutbox(self.url, migrate=False)  # the forwarder sets the schema up


class Delivery:
    """`concurrency` couriers on one sink: at most one call in flight per task, tasks in parallel."""

    def __init__(self, state: StateOpener, sink: Sink, options: DeliveryOptions, concurrency: int = 4) -> None:
        self.state, self.sink, self.options = state, sink, options
        self.bell = Doorbell()
        self.pacer = Pacer(sink.limits)  # one chat per sink: its couriers share its pace
        self.couriers = [Courier(i, state, sink, options, self.bell, self.pacer) for i in range(concurrency)]
        self._stopping = threading.Event()
        self._listener: threading.Thread | None = None

    def start(self) -> None:
        try:  # housekeeping: a busy or absent db is for the couriers to wait out, not a reason to stop
            outbox = self.state.open()
            try:
                outbox.purge_cards()
                if isinstance(self.state, SharedState) and (freed := outbox.release_claims(self.state.owner_prefix)):
                    log.info("%s claimed by this host's stopped daemon free again", counted(freed, "notification"))
            finally:
                outbox.close()
        except self.state.errors as exc:
            log.warning("cards of tasks gone not purged this time: %s", exc)
        self.sink.start()
        log.info("delivering through %s sink %s: %s style, %d in parallel, %d attempts; pace: %s", self.sink.name,
                 self.sink.describe(), self.options.style, len(self.couriers), self.options.attempts,
                 describe(self.sink.limits))
        for courier in self.couriers:
            courier.start()
        if isinstance(self.state, SharedState):
            from task_pulse.state.shared import Listener

            listener = Listener(self.state.url, self.bell.ring)
            self._listener = threading.Thread(target=listener.run, args=(self._stopping,),
                                              name="task-pulsed-listener", daemon=True)
            self._listener.start()

    @property
    def problem(self) -> str | None:
        """The chat's last refusal (until a call succeeds again), for STATUS."""
        return self.bell.refusal

    def route(self) -> str:
        """The way messages go now, for STATUS."""
        return self.sink.route()

    def wake(self) -> None:
        """Something new is queued (called by the worker after a commit, or the forwarder after a copy)."""
        self.bell.ring()

    def stop(self) -> None:
        """Stop taking work and let calls in flight finish (one deadline for all: a sink timeout, at most
        60 s), so a message the chat already has is not sent again after a restart."""
        self._stopping.set()
        for courier in self.couriers:
            courier.stop()
        deadline = time.monotonic() + min(self.sink.timeout, STOP_WAIT_SECONDS)
        for courier in self.couriers:
            if courier.is_alive():
                courier.join(timeout=max(0.0, deadline - time.monotonic()))
        self.sink.stop()
