"""plan_batch: which sink calls carry one task's pending notifications. Pure: no I/O, no clock.

A deliverer takes everything pending for one task at once (what arrived while its last call was in
flight) and turns it into as few calls as the style allows:

* `card`, on a sink that can edit: the task's card is sent once, then edited to the latest state;
  what must ring the user's phone (done, failed, stalled, overdue, an unreadable file) also goes out as a
  short new message of its own, before the edit, so it is not held up by it.
* `card`, on a sink that cannot edit (IRC, a command without an edit command, a reply without a
  message id): one new message for everything since the last one, plus the pings. A task that
  ended says so itself: the steps it finished on the way need no message of their own.
* `stream`: one message per notification, as they were queued.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from task_pulse.markup import PLAIN
from task_pulse.messages import digest
from task_pulse.records import PINGS, Card, Queued

TERMINAL = frozenset({"done", "failed"})
STYLES = ("card", "stream")


@dataclass(frozen=True)
class Call:
    """One sink call and the notifications it delivers (marked delivered once it succeeds)."""

    op: str  # "send" | "edit"
    text: str
    rows: tuple[Queued, ...]
    card: bool = False  # a send that becomes the task's card, or an edit of it


@dataclass(frozen=True)
class Plan:
    calls: list[Call] = field(default_factory=list)
    settled: tuple[Queued, ...] = ()  # delivered with no call of their own: the card already shows them


def plan_batch(rows: list[Queued], *, style: str, lang: str, card_text: str | None = None,
               card: Card | None = None, markup: str = PLAIN) -> Plan:
    """The calls for `rows` (one task's, oldest first).

    `card_text` is the card as it should look now, None when the card cannot be used (a stream,
    a sink that cannot edit, a task without a readable snapshot); `card` is the card already sent
    (an empty message id: the sink gave none, so this run of the task gets new messages). `markup`: what the
    chat makes of text (the rows' texts are rendered for it already, a digest of them is here).
    """
    if style == "stream":
        return Plan([Call("send", r.text, (r,)) for r in rows])
    # A stall that is already over (resumed, ended) in this batch would ring for nothing.
    over = {i for i, r in enumerate(rows) if r.kind == "stalled"
            and any(later.kind in ("resumed", "done", "failed") for later in rows[i + 1:])}
    pings = [Call("send", r.text, (r,)) for i, r in enumerate(rows) if r.kind in PINGS and i not in over]
    others = tuple(r for i, r in enumerate(rows) if r.kind not in PINGS or i in over)
    started = next((r for r in reversed(rows) if r.kind == "started"), None)
    new_run = card is None or (started is not None and started.key != card.started_key)
    if card_text is not None and (new_run or card.message_id):
        if new_run:
            # A new card; what rang for an earlier run of the task goes first, what rings for this one after.
            first = started.seq if started is not None and card is not None else 0
            before = [p for p in pings if p.rows[0].seq < first]
            after = [p for p in pings if p.rows[0].seq >= first]
            return Plan([*before, Call("send", card_text, others, card=True), *after])
        assert card is not None
        if card_text == card.text:
            return Plan(pings, settled=others)
        return Plan([*pings, Call("edit", card_text, others, card=True)])
    if not others or any(r.kind in TERMINAL for r in rows):
        return Plan(pings, settled=others)
    text = others[0].text if len(others) == 1 else digest([(r.kind, r.data) for r in others], lang, markup)
    return Plan([Call("send", text, others), *pings])
