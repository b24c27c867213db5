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
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from task_pulse.card import render_card
from task_pulse.messages import counted, shown_id
from task_pulse.outgoing import outgoing
from task_pulse.records import Card, DeliveryStore, Handoff, Queued, safe_message_id
from task_pulsed.delivery.pacing import Pacer
from task_pulsed.delivery.plan import TERMINAL, Call, plan_batch
from task_pulsed.delivery.results import DeliveryError, Sent
from task_pulsed.delivery.sinks import Sink
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
    worked (then the next success hands those rows a new set of attempts), and the chat's last
    refusal (for STATUS, until a call succeeds again).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.rings = 0
        self.gave_up = threading.Event()
        self.refusal: str | None = None
        self.malformed = 0  # rows set aside as no daemon writes them (a shared db's), for STATUS

    def problem(self, refusal: str | None) -> None:
        self.refusal = refusal

    def set_aside(self, skipped: list[str]) -> None:
        """Rows the store set aside as malformed: one log line each, counted; the list is emptied."""
        for line in skipped:
            log.warning("state database: %s", line)
        self.malformed += len(skipped)
        skipped.clear()

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


# A send the pace holds back longer than this gives its rows back (they come due again then); a shorter
# wait is slept through, holding the task.
MAX_PACE_SLEEP = 1.5
# A failure that says the chat service is away, not that this message or this card is wrong.
_OUTAGE = re.compile(r"timed out|unreachable|not reachable|econn|refused|fetch failed|enotfound|eai_again|"
                     r"network|gateway", re.I)


class Courier(threading.Thread):
    def __init__(self, index: int, state: StateOpener, sink: Sink, options: DeliveryOptions, bell: Doorbell,
                 pacer: Pacer) -> None:
        super().__init__(name=f"task-pulsed-courier-{index}", daemon=True)
        self.state, self.sink, self.options, self.bell, self.pacer = state, sink, options, bell, pacer
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
        self.bell.set_aside(outbox.skipped)
        if not rows:
            owed = outbox.claim_owed_edit(self.sink.timeout + 60)
            if owed is not None:
                self._owed_edit(outbox, *owed)
                return
            free_at = outbox.sink_next_free(self.options.attempts)
            self.bell.wait(seen, None if free_at is None else max(0.0, free_at - time.time()))
            return
        self.bell.ring()  # another courier may find another task
        self.deliver(outbox, rows)

    def deliver(self, outbox: DeliveryStore, rows: list[Queued]) -> None:
        """Deliver one task's claimed rows: a send in doubt first, then the calls of their plan, each
        when the chat's pace lets it go. Whatever does not go now is handed back with its reason."""
        task_id, host, sink_id = rows[0].task_id, rows[0].host, self.sink.identity()
        # As the chat reads it (Markdown escaped for OpenClaw), and a shared db's rows cleaned and masked again.
        rows = [outgoing(r, self.sink.markup, recheck=bool(r.host), redact_secrets=self.options.redact_secrets)
                for r in rows]
        doubt = outbox.handoff(task_id, host)
        if doubt is not None:
            rows = self._settle(outbox, doubt, rows)
            if not rows:
                return
        card = card_text = None
        if self.options.style == "card" and self.sink.can_edit:
            card = outbox.card(task_id, sink_id, host)
            if card is not None and card.message_id and safe_message_id(card.message_id) is None:
                # Not an id a chat gives (a shared db's row rewritten into `--config=…`, say): never passed on.
                log.warning("%s: the card's stored message id is not one a chat gives; a new card is sent",
                            shown_id(task_id))
                outbox.drop_card(task_id, host)
                card = None
            card_text = self._card_text(outbox, task_id, host)
        plan = plan_batch(rows, style=self.options.style, lang=self.options.lang, card_text=card_text, card=card,
                          markup=self.sink.markup)
        outbox.renew([r.seq for r in rows], self.owner, time.time() + (len(plan.calls) + 1) * self.sink.timeout + 60)
        if plan.settled:
            by = f"{self.sink.name}:{'card' if card_text is not None else 'coalesced'}"
            outbox.delivered([r.seq for r in plan.settled], self.owner, by, task_id=task_id, sink=sink_id, host=host)
        started = next((r.key for r in reversed(rows) if r.kind == "started"), card.started_key if card else None)
        pace_key = f"{host}/{task_id}"
        for i, call in enumerate(plan.calls):
            later = [r for c in plan.calls[i:] for r in c.rows]
            if not self._paced(outbox, call, pace_key, later, task_id, host):
                if call.op == "edit":
                    continue  # its rows wait for the card's next edit; pings after it still go
                return
            key = call_key(sink_id, host, task_id, call)
            noted: list[str] = []  # the key, once the send was noted as handed to the gateway

            def note(call: Call = call, key: str = key, noted: list[str] = noted) -> None:
                """Just before a send goes to the gateway: a lost reply is asked again, never resent."""
                outbox.begin_handoff(Handoff(task_id, sink_id, key, tuple(r.seq for r in call.rows), call.text,
                                             call.card, started if call.card else None, self.sink.boot_id(),
                                             time.time(), host))
                noted.append(key)

            try:
                if call.op == "edit":
                    assert card is not None
                    sent = self.sink.edit(card.message_id, call.text, self._payload(call, rows, card.message_id), key)
                else:
                    sent = self.sink.send(call.text, self._payload(call, rows, None), key, note)
            except Exception as exc:  # noqa: BLE001 - whatever the sink does, this courier must go on
                self._failed(outbox, rows[0], later, exc, edit=call.op == "edit", handoff=noted[0] if noted else None)
                return
            if call.op == "edit":
                self.pacer.edit_done(pace_key, time.monotonic())
            card = self._record(outbox, task_id, host, call, sent, card, started, noted[0] if noted else None)
            self.bell.refusal = None
        if any(r.kind in TERMINAL for r in rows):
            self.pacer.forget(pace_key)
        if self.bell.gave_up.is_set():  # the sink works again: what it gave up on gets new attempts
            self.bell.gave_up.clear()
            if outbox.rearm(self.options.attempts):
                self.bell.ring()

    def _card_text(self, outbox: DeliveryStore, task_id: str, host: str) -> str | None:
        """The task's card as it should look now (None: no readable snapshot of it)."""
        view = outbox.card_view(task_id, host)
        if view is None:
            return None
        snapshot, stalled_for = view
        return render_card(snapshot, datetime.now(UTC), self.options.lang,
                           stalled=stalled_for is not None and not stalled_for.startswith(QUIET),
                           redact_secrets=self.options.redact_secrets or bool(host), markup=self.sink.markup)

    def _owed_edit(self, outbox: DeliveryStore, host: str, task_id: str) -> None:
        """The edit the pace held back when no row was left to carry it (a task's last): made now, or owed
        again for when the pace lets it go."""
        sink_id = self.sink.identity()
        card, text = outbox.card(task_id, sink_id, host), self._card_text(outbox, task_id, host)
        if card is None or not card.message_id or text is None or text == card.text:
            outbox.owe_edit(task_id, None, host)
            return
        now, pace_key = time.monotonic(), f"{host}/{task_id}"
        due = self.pacer.next_edit(pace_key, now)
        if due > now:
            outbox.owe_edit(task_id, time.time() + (due - now), host)
            return
        self.pacer.take_edit(pace_key, now)
        call = Call("edit", text, (), card=True)
        payload = {"kind": "card", "taskId": shown_id(task_id), "text": text, "messageId": card.message_id}
        try:
            sent = self.sink.edit(card.message_id, text, payload, call_key(sink_id, host, task_id, call))
        except Exception as exc:  # noqa: BLE001 - owed again; the chat is not told twice, an edit only replaces
            delay = getattr(exc, "retry_after", None) or self.options.backoff * 4
            outbox.owe_edit(task_id, time.time() + delay, host)
            log.info("%s: the card's last edit failed (%s); again in %.0f s", shown_id(task_id), exc, delay)
            return
        self.pacer.edit_done(pace_key, time.monotonic())
        self._record(outbox, task_id, host, call, sent, card, card.started_key, None)

    def _record(self, outbox: DeliveryStore, task_id: str, host: str, call: Call, sent: Sent, card: Card | None,
                started: str | None, handoff: str | None) -> Card | None:
        """Mark a call's rows delivered (with the card it made, in the same transaction); the card now. A card
        edit may carry no rows (what it shows was told by a ping): the card is stored all the same."""
        new_card = None
        if call.card:
            # No id: nothing to edit. The empty id marks the task: new messages for the rest of this run.
            card = new_card = Card(sent.message_id or "", call.text, started)
            if sent.handed_over:
                log.info("%s: OpenClaw queued the card (the chat is away): its gateway delivers it; new messages "
                         "instead of edits for the rest of this run", shown_id(task_id))
            elif sent.message_id is None:
                log.info("%s: the %s sink gave no message id: new messages instead of an edited card",
                         shown_id(task_id), self.sink.name)
        by = f"{self.sink.name}:{sent.route}" if sent.route else self.sink.name
        outbox.delivered([r.seq for r in call.rows], self.owner, by, task_id=task_id, sink=self.sink.identity(),
                         card=new_card, host=host, handoff=handoff)
        for r in call.rows:
            log.debug("%s: %s delivered by %s", shown_id(task_id), r.kind, by)
        return card

    def _settle(self, outbox: DeliveryStore, doubt: Handoff, rows: list[Queued]) -> list[Queued]:
        """A send written earlier that never got its answer (a lost reply, a daemon killed mid-call) is
        asked again, exactly as it was: same text, same key, same route. Returns the rows still to plan
        (none while it stays in doubt)."""
        task_id, host = doubt.task_id, doubt.host
        carried = [r for r in rows if r.seq in doubt.seqs]
        if doubt.sink != self.sink.identity() or not carried or not self.sink.replays:
            # Another chat now, or its rows were taken by a drain, or a sink that cannot ask again: over.
            if carried:
                log.warning("%s: a send in doubt through another route is sent again here (it may show twice)",
                            shown_id(task_id))
            outbox.drop_handoff(task_id, doubt.key, host)
            return rows
        call = Call("send", doubt.text, tuple(carried), card=doubt.card)
        try:
            sent = self.sink.replay(doubt.text, self._payload(call, rows, None), doubt.key, doubt.boot_id)
        except Exception as exc:  # noqa: BLE001
            self._failed(outbox, rows[0], rows, exc, edit=False, handoff=doubt.key)
            return []
        log.info("%s: a send in doubt was settled by asking again (%s)", shown_id(task_id), sent.route)
        self._record(outbox, task_id, host, call, sent, None, doubt.started_key, doubt.key)
        return [r for r in rows if r.seq not in doubt.seqs]

    def _paced(self, outbox: DeliveryStore, call: Call, pace_key: str, later: list[Queued], task_id: str,
               host: str) -> bool:
        """Whether `call` may go now (after a short wait, if that is all it takes). When it may not, its
        rows (an edit's), or every row from it on (a send's), wait for their time, no attempt counted; an
        edit that carries no row (the last one of a task whose end a ping told) is owed on the card."""
        now = time.monotonic()
        if call.op == "edit":
            due = self.pacer.next_edit(pace_key, now)
            if due > now:
                if call.rows:
                    outbox.defer([r.seq for r in call.rows], self.owner, time.time() + (due - now))
                else:
                    outbox.owe_edit(task_id, time.time() + (due - now), host)
                return False
            self.pacer.take_edit(pace_key, now)
            return True
        due = self.pacer.next_send(now)
        if due - now > MAX_PACE_SLEEP:
            outbox.defer([r.seq for r in later], self.owner, time.time() + (due - now))
            return False
        wait = self.pacer.take_send(now) - now
        if wait > 0:
            self._stopping.wait(wait)
        return True

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
                edit: bool, handoff: str | None = None) -> None:
        """A call did not deliver: what comes of its rows (and every row after them) depends on why."""
        task_id, host, seqs = first.task_id, first.host, [r.seq for r in rows]
        if not isinstance(exc, DeliveryError):
            log.exception("%s: %s sink failed unexpectedly", shown_id(task_id), self.sink.name)
            exc = DeliveryError(f"unexpected {type(exc).__name__}: {exc}")
        if exc.in_doubt and handoff is not None:
            # Asked again with the same key until the gateway answers: no attempt is counted, nothing is given
            # up (whatever else took these rows could send them twice). Backs off with the doubt's age.
            doubt = outbox.handoff(task_id, host)
            age = time.time() - (doubt.written_at if doubt is not None else time.time())
            delay = min(max(1.0, age / 2), 60.0)
            outbox.retry_later(seqs, self.owner, str(exc), time.time() + delay, count=False)
            log.warning("%s: %s; asking again with the same key in %.0f s", shown_id(task_id), exc, delay)
            return
        if handoff is not None:
            outbox.drop_handoff(task_id, handoff, host)  # answered, so not sent: the next try is a new call
        if exc.retry_after is not None:
            self.pacer.pause(time.monotonic() + exc.retry_after)
            outbox.defer(seqs, self.owner, time.time() + exc.retry_after)
            log.warning("%s: the chat asked to wait %.1f s (%s); the chat is paused that long, nothing is lost",
                        shown_id(task_id), exc.retry_after, exc)
            return
        if exc.permanent:
            self.bell.problem(f"{self.sink.name} refused: {exc}")
            if edit:  # the card cannot be edited (deleted, say): the task gets a new card, at once
                outbox.drop_card(task_id, host)
                outbox.release(seqs, self.owner)
                log.warning("%s: the card cannot be edited (%s): a new one is sent", shown_id(task_id), exc)
                return
            outbox.give_up(seqs, self.owner, str(exc), self.options.attempts)
            log.error("%s: %s refused (%s); kept for task-pulse drain", shown_id(task_id),
                      counted(len(rows), "notification"), exc)
            return
        attempt = 1 + max((r.attempts for r in rows), default=0)
        delay = min(self.options.backoff * 2 ** (attempt - 1), 3600.0)
        outbox.retry_later(seqs, self.owner, str(exc), time.time() + delay)
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
            outbox.drop_card(task_id, host)
        log.warning("%s: %s not delivered after %d attempts (%s); kept for task-pulse drain, and tried again once "
                    "the sink works", shown_id(task_id), counted(len(given_up), "notification"),
                    self.options.attempts, exc)


def call_key(sink: str, host: str, task_id: str, call: Call) -> str:
    """A new request's idempotency key: what it carries (its rows, or the card's new text) and where to, then a
    suffix of its own. The gateway remembers every answer under its key for 5 minutes, refusals and rate limits
    included, so a request made again after an answer needs a new key; the same request asked again after a
    lost answer keeps its key, which the `handoffs` table holds across retries and restarts."""
    what = [call.op, *(r.key for r in call.rows)] + ([call.text] if call.op == "edit" else [])
    digest = hashlib.sha256("\x1f".join([sink, host, task_id, *what]).encode()).hexdigest()
    return f"task-pulse:{digest[:24]}.{secrets.token_hex(4)}"
