"""Couriers: the threads that push queued notifications through the daemon's sink.

Several couriers run side by side (`--sink-concurrency`), each on its own database connection, and
each takes one task at a time: everything pending for that task, claimed together. So there is at
most one sink call in flight per task, tasks are delivered in parallel, and whatever a slow sender
lets pile up goes out in the next call (see `plan_batch`).

Couriers write only delivery state (claims, attempts, delivered, the card of each task), never
snapshots or notifications, so a slow or failing sink cannot hold up watching, diffing or stall
detection. They sleep until the worker rings the doorbell or a retry comes due: no polling.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from task_pulse.card import render_card
from task_pulse.messages import counted, shown_id
from task_pulse.records import Card, DeliveryStore, Queued
from task_pulsed.delivery.plan import Call, plan_batch
from task_pulsed.delivery.sinks import DeliveryError, Sink
from task_pulsed.tracker import QUIET

log = logging.getLogger("task-pulsed")


class StateOpener(Protocol):
    """Where couriers take their work: the local state db, or a shared one (see task_pulsed.delivery)."""

    owner_prefix: str  # what every claim of this daemon's couriers starts with
    errors: tuple[type[BaseException], ...]  # what the store raises when it is busy, away or refuses

    def open(self) -> DeliveryStore: ...


class Doorbell:
    """Wakes idle couriers. A courier notes the ring count before it looks for work, then waits
    for a later ring: a ring between its look and its wait is never missed.

    It also carries what couriers share: whether one of them gave rows up since the sink last
    worked (then the next success hands those rows a new set of attempts).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.rings = 0
        self.gave_up = threading.Event()

    def ring(self) -> None:
        with self._cond:
            self.rings += 1
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float | None) -> None:
        with self._cond:
            self._cond.wait_for(lambda: self.rings != seen, timeout)


@dataclass(frozen=True)
class DeliveryOptions:
    style: str = "card"
    attempts: int = 5
    backoff: float = 2.0
    lang: str = "zh"
    redact_secrets: bool = True


# A failure that says the chat service is away, not that this message or this card is wrong.
_OUTAGE = re.compile(r"timed out|unreachable|not reachable|econn|refused|fetch failed|enotfound|eai_again|"
                     r"network|gateway", re.I)


class Courier(threading.Thread):
    def __init__(self, index: int, state: StateOpener, sink: Sink, options: DeliveryOptions, bell: Doorbell) -> None:
        super().__init__(name=f"task-pulsed-courier-{index}", daemon=True)
        self.state, self.sink, self.options, self.bell = state, sink, options, bell
        # The host is in it (a shared state db's claims are released by host); "/" ends it: courier 1 is not a
        # prefix of courier 10.
        self.owner = f"{state.owner_prefix}{sink.name}:{os.getpid()}:{index}/"
        self._stopping = threading.Event()

    def stop(self) -> None:
        self._stopping.set()
        self.bell.ring()

    def run(self) -> None:
        """Deliver until stopped. Nothing ends this loop but `stop`: a failing database or an
        unexpected error is logged, the claims are handed back, and the courier tries again."""
        pause = 1.0
        while not self._stopping.is_set():
            outbox = None
            try:
                outbox = self.state.open()
                while not self._stopping.is_set():
                    self._round(outbox)
                    pause = 1.0
            except Exception as exc:  # noqa: BLE001 - a courier must outlive anything one round does
                if isinstance(exc, self.state.errors):  # busy or away, or a tasks dir made unsafe since
                    log.error("%s: state database: %s; retrying in %.0f s", self.name, exc, pause)
                else:
                    log.exception("%s: unexpected error; retrying in %.0f s", self.name, pause)
                if outbox is not None:
                    with contextlib.suppress(*self.state.errors):
                        outbox.release_claims(self.owner)
                self._stopping.wait(pause)  # new work does not cut the pause short; stop() does
                pause = min(pause * 2, 60.0)
            finally:
                if outbox is not None:
                    outbox.close()

    def _round(self, outbox: DeliveryStore) -> None:
        seen = self.bell.rings
        rows = outbox.claim_task_batch(self.owner, self.options.attempts, self.sink.timeout)
        if not rows:
            free_at = outbox.sink_next_free(self.options.attempts)
            self.bell.wait(seen, None if free_at is None else max(0.0, free_at - time.time()))
            return
        self.bell.ring()  # another courier may find another task
        self.deliver(outbox, rows)

    def deliver(self, outbox: DeliveryStore, rows: list[Queued]) -> None:
        task_id, host, sink_id = rows[0].task_id, rows[0].host, self.sink.identity()
        card = card_text = None
        if self.options.style == "card" and self.sink.can_edit:
            card = outbox.card(task_id, sink_id, host)
            view = outbox.card_view(task_id, host)
            if view is not None:
                snapshot, stalled_for = view
                card_text = render_card(snapshot, datetime.now(UTC), self.options.lang,
                                        stalled=stalled_for is not None and not stalled_for.startswith(QUIET),
                                        redact_secrets=self.options.redact_secrets)
        plan = plan_batch(rows, style=self.options.style, lang=self.options.lang, card_text=card_text, card=card)
        outbox.renew([r.seq for r in rows], self.owner, time.time() + (len(plan.calls) + 1) * self.sink.timeout + 60)
        if plan.settled:
            by = f"{self.sink.name}:{'card' if card_text is not None else 'coalesced'}"
            outbox.delivered([r.seq for r in plan.settled], self.owner, by, task_id=task_id, sink=sink_id, host=host)
        started = next((r.key for r in reversed(rows) if r.kind == "started"), card.started_key if card else None)
        for i, call in enumerate(plan.calls):
            try:
                if call.op == "edit":
                    assert card is not None
                    self.sink.edit(card.message_id, call.text, self._payload(call, rows, card.message_id))
                    message_id: str | None = card.message_id
                else:
                    message_id = self.sink.send(call.text, self._payload(call, rows, None))
            except Exception as exc:  # noqa: BLE001 - whatever the sink does, this courier must go on
                self._failed(outbox, rows[0], [r for c in plan.calls[i:] for r in c.rows], exc,
                             edit=call.op == "edit")
                return
            new_card = None
            if call.card:
                # No id: nothing to edit. The empty id marks the task: new messages for the rest of this run.
                card = new_card = Card(message_id or "", call.text, started)
                if message_id is None:
                    log.info("%s: the %s sink gave no message id: new messages instead of an edited card",
                             shown_id(task_id), self.sink.name)
            outbox.delivered([r.seq for r in call.rows], self.owner, self.sink.name, task_id=task_id, sink=sink_id,
                             card=new_card, host=host)
            for r in call.rows:
                log.debug("%s: %s delivered by %s", task_id, r.kind, self.sink.name)
        if self.bell.gave_up.is_set():  # the sink works again: what it gave up on gets new attempts
            self.bell.gave_up.clear()
            if outbox.rearm(self.options.attempts):
                self.bell.ring()

    def _payload(self, call: Call, rows: list[Queued], message_id: str | None) -> dict[str, Any]:
        """The JSON that goes with a call: the notification itself, or what the card call carries."""
        if len(call.rows) == 1 and not call.card:
            return call.rows[0].to_json()
        last = (call.rows or rows)[-1]
        return {"kind": "card" if call.card else "catch_up", "taskId": shown_id(last.task_id),
                "taskName": last.task_name,
                "text": call.text, "messageId": message_id, "seqs": [r.seq for r in call.rows],
                "keys": [r.key for r in call.rows], "kinds": [r.kind for r in call.rows]}

    def _failed(self, outbox: DeliveryStore, first: Queued, rows: list[Queued], exc: Exception, *,
                edit: bool) -> None:
        """Count the attempt for every row not delivered yet; they go out together on the retry."""
        task_id = first.task_id
        if not isinstance(exc, DeliveryError):
            log.exception("%s: %s sink failed unexpectedly", shown_id(task_id), self.sink.name)
        attempt = 1 + max((r.attempts for r in rows), default=0)
        delay = min(self.options.backoff * 2 ** (attempt - 1), 3600.0)
        outbox.retry_later([r.seq for r in rows], self.owner, str(exc), time.time() + delay)
        # Rows join a call with the attempts they had: only those that used up theirs are given up (and told
        # once); a row that came later is tried again, and told about when it runs out in turn.
        given_up = [r for r in rows if r.attempts + 1 >= self.options.attempts]
        if not given_up:
            log.info("%s: delivery failed (%s); retry %d/%d in %.1f s", shown_id(task_id), exc, attempt + 1,
                     self.options.attempts, delay)
            return
        self.bell.gave_up.set()
        if edit and not _OUTAGE.search(str(exc)):
            # The chat refuses this edit (the card was deleted?): the next change sends anew.
            outbox.drop_card(task_id, first.host)
        log.warning("%s: %s not delivered after %d attempts (%s); kept for task-pulse drain, and tried again once "
                    "the sink works", shown_id(task_id), counted(len(given_up), "notification"),
                    self.options.attempts, exc)
