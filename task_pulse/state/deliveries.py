"""The deliverers' side of the local state database: what `task-pulse drain` and the daemon's sinks do.

They only claim notifications and say how they went: claims under `BEGIN IMMEDIATE` with a lease
(two deliverers never take the same row; one that dies mid-way delays its rows until the lease ends),
marked delivered, retried later, deferred to the chat's pace or given up; and the delivery state
beside them, one card per task and chat and the send handed to a gateway and not answered yet. They
write no other column: the worker alone writes snapshots and inserts notifications (outbox.py).

The shared PostgreSQL outbox (shared.py) offers the same methods, so a sink works on either.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

from task_pulse.records import Card, Handoff, Malformed, Queued, queued, utc_stamp
from task_pulse.state.sql_sqlite import SQL


class DeliveryQueue:
    """The deliverers' methods of `Outbox` (which holds the connection and its transactions)."""

    db: sqlite3.Connection
    skipped: list[str]  # malformed rows set aside since the caller last took this list

    if TYPE_CHECKING:
        def transaction(self, *, single: bool = False) -> AbstractContextManager[sqlite3.Connection]: ...

    def count_pending(self) -> int:
        return self.db.execute(SQL.COUNT_PENDING).fetchone()[0]

    def count_notifications(self) -> int:
        return self.db.execute(SQL.COUNT_NOTIFICATIONS).fetchone()[0]

    def claim(self, owner: str, limit: int | None = None, lease_seconds: float = 300) -> list[Queued]:
        """Take up to `limit` undelivered, unclaimed notifications, oldest first, for `owner`."""
        now = time.time()
        with self.transaction() as db:
            rows = self._deliverable(db.execute(SQL.CLAIMABLE, {"now": now, "limit": -1 if limit is None else limit}))
            db.executemany(SQL.CLAIM, [{"owner": owner, "until": now + lease_seconds, "seq": r.seq} for r in rows])
        return rows

    def _deliverable(self, rows: Iterable[tuple[Any, ...]]) -> list[Queued]:
        """These rows as notifications, but for one that is not what a daemon writes (a row put in by hand):
        set aside in the caller's transaction, its reason kept, and told in `skipped` (as a shared db does)."""
        good = []
        for r in rows:
            try:
                good.append(queued(*r))
            except Malformed as exc:
                self.db.execute(SQL.SET_ASIDE, {"seq": r[0], "at": utc_stamp(), "error": f"malformed: {exc}"})
                self.skipped.append(f"notification {r[0]} skipped: {exc}")
        return good

    def mark_delivered(self, seqs: Iterable[int], owner: str, by: str | None = None) -> int:
        """Mark claimed rows delivered. Only rows still claimed by `owner` change."""
        at = utc_stamp()
        with self.transaction() as db:
            cur = db.executemany(SQL.MARK_DELIVERED, [{"at": at, "by": by or owner, "seq": s, "owner": owner}
                                                      for s in seqs])
            return cur.rowcount

    def release(self, seqs: Iterable[int], owner: str) -> None:
        """Give claimed rows back untried (the deliverer could not even start): anyone may take them."""
        with self.transaction() as db:
            db.executemany(SQL.RELEASE, [{"seq": s, "owner": owner} for s in seqs])

    def retry_later(self, seqs: Iterable[int], owner: str, error: str, retry_at: float, *, count: bool = True) -> None:
        """A sink's attempt failed: count it (unless `count` is off), keep the reason, and let the sink try
        again at `retry_at`."""
        with self.transaction() as db:
            db.executemany(SQL.RETRY_LATER, [{"seq": s, "owner": owner, "error": error[:500], "retry_at": retry_at,
                                              "count": int(count)} for s in seqs])

    def defer(self, seqs: Iterable[int], owner: str, until: float) -> None:
        """Held back by the chat's pace: free again at `until`, with no attempt counted."""
        with self.transaction() as db:
            db.executemany(SQL.DEFER, [{"seq": s, "owner": owner, "until": until} for s in seqs])

    def give_up(self, seqs: Iterable[int], owner: str, error: str, max_attempts: int) -> None:
        """The chat refused these for good: no more attempts, they stay for `task-pulse drain`."""
        with self.transaction() as db:
            db.executemany(SQL.GIVE_UP, [{"seq": s, "owner": owner, "error": error[:500],
                                          "max_attempts": max_attempts} for s in seqs])

    def claim_task_batch(self, owner: str, max_attempts: int, call_seconds: float,
                         limit: int = 500) -> list[Queued]:
        """Everything a sink may deliver now for the task whose turn it is (see SQL.SINK_CLAIMABLE).

        The oldest deliverable row picks the task; the batch is that task's pending rows, claimed
        together, so one sink call can carry all of them. Empty: nothing is deliverable now. The
        claim lasts long enough for a call per row (each up to `call_seconds`), plus a minute.
        """
        now = time.time()
        with self.transaction() as db:
            while True:  # again after a batch of only malformed rows: they are set aside, the next task's turn
                first = db.execute(SQL.SINK_CLAIMABLE, {"now": now, "max_attempts": max_attempts}).fetchone()
                if first is None:
                    return []
                found = db.execute(SQL.TASK_BATCH, {"task_id": first[2], "max_attempts": max_attempts, "now": now,
                                                    "limit": limit}).fetchall()
                rows = self._deliverable(found)
                if rows or not found:
                    break
            until = now + (len(rows) + 1) * call_seconds + 60
            db.executemany(SQL.CLAIM, [{"owner": owner, "until": until, "seq": r.seq} for r in rows])
        return rows

    def card(self, task_id: str, sink: str, host: str = "") -> Card | None:
        """The task's card on `sink` (`host`: of a shared state db; here every task is this dir's)."""
        row = self.db.execute(SQL.GET_CARD, {"task_id": task_id, "sink": sink}).fetchone()
        return None if row is None else Card(message_id=row[0], text=row[1], started_key=row[2])

    def delivered(self, seqs: Iterable[int], owner: str, by: str, *, task_id: str, sink: str,
                  card: Card | None = None, host: str = "", handoff: str | None = None) -> None:
        """In one transaction: mark claimed rows delivered, store the task's card, and forget the
        handoff (by its key) whose outcome this is.

        A deliverer that lost its claim (it outlived the lease and another took the rows over)
        changes nothing, the card included.
        """
        at = utc_stamp()
        seqs = list(seqs)
        with self.transaction() as db:
            marked = sum(db.execute(SQL.MARK_DELIVERED, {"at": at, "by": by, "seq": s, "owner": owner}).rowcount
                         for s in seqs)
            if card is not None and (marked or not seqs):
                db.execute(SQL.PUT_CARD, {"task_id": task_id, "sink": sink, "message_id": card.message_id,
                                          "started_key": card.started_key, "text": card.text, "at": at})
            if handoff is not None:
                db.execute(SQL.DROP_HANDOFF, {"task_id": task_id, "key": handoff})

    def handoff(self, task_id: str, host: str = "") -> Handoff | None:
        """The task's send written to the gateway and not answered yet, if there is one."""
        row = self.db.execute(SQL.GET_HANDOFF, {"task_id": task_id}).fetchone()
        if row is None:
            return None
        return Handoff(task_id=task_id, key=row[0], sink=row[1], seqs=tuple(json.loads(row[2])), text=row[3],
                       card=bool(row[4]), started_key=row[5], boot_id=row[6], written_at=row[7])

    def begin_handoff(self, handoff: Handoff) -> None:
        """Note a send before it is written to the gateway (committed first: a crash after the write
        leaves it here for the next deliverer to send again with the same key)."""
        with self.transaction() as db:
            db.execute(SQL.PUT_HANDOFF, {"task_id": handoff.task_id, "sink": handoff.sink, "key": handoff.key,
                                         "seqs": json.dumps(list(handoff.seqs)), "text": handoff.text,
                                         "card": int(handoff.card), "started_key": handoff.started_key,
                                         "boot_id": handoff.boot_id, "written_at": handoff.written_at})

    def drop_handoff(self, task_id: str, key: str, host: str = "") -> None:
        """The gateway answered (no, or it was resolved another way): the handoff is over."""
        with self.transaction() as db:
            db.execute(SQL.DROP_HANDOFF, {"task_id": task_id, "key": key})

    def renew(self, seqs: Iterable[int], owner: str, until: float) -> None:
        """Extend `owner`'s claim on rows it holds (once it knows how many calls they need)."""
        with self.transaction() as db:
            db.executemany(SQL.RENEW, [{"seq": s, "owner": owner, "until": until} for s in seqs])

    def rearm(self, max_attempts: int) -> int:
        """Give the rows a sink gave up on a new set of attempts. Returns how many."""
        with self.transaction() as db:
            return db.execute(SQL.REARM, {"max_attempts": max_attempts}).rowcount

    def release_claims(self, owner_prefix: str) -> int:
        """Hand back every claim whose owner starts with `owner_prefix` (a dead daemon's couriers)."""
        with self.transaction() as db:
            return db.execute(SQL.RELEASE_OWNED, {"prefix": owner_prefix}).rowcount

    def drop_card(self, task_id: str, host: str = "") -> None:
        with self.transaction() as db:
            db.execute(SQL.DROP_CARD, {"task_id": task_id})

    def purge_cards(self) -> int:
        """Forget the cards of tasks the daemon no longer knows (removed or cleaned up), and handoffs
        none of whose notifications is still waiting (a drain took them)."""
        with self.transaction() as db:
            db.execute(SQL.PURGE_HANDOFFS)
            return db.execute(SQL.PURGE_CARDS).rowcount

    def owe_edit(self, task_id: str, at: float | None, host: str = "") -> None:
        """The task's card is owed an edit at unix time `at` (the pace held back one that carried no row;
        None: no more)."""
        with self.transaction() as db:
            db.execute(SQL.OWE_EDIT, {"task_id": task_id, "at": at})

    def claim_owed_edit(self, lease_seconds: float) -> tuple[str, str] | None:
        """(host, task id) of a card whose owed edit is due, taken for `lease_seconds` (None: none is)."""
        now = time.time()
        with self.transaction() as db:
            row = db.execute(SQL.OWED_CARD, {"now": now}).fetchone()
            if row is None:
                return None
            db.execute(SQL.OWE_EDIT, {"task_id": row[0], "at": now + lease_seconds})
        return "", row[0]

    def sink_next_free(self, max_attempts: int) -> float | None:
        """Unix time at which a row held back by a retry delay or a claim becomes free, or an owed card edit
        comes due (None: none is)."""
        return self.db.execute(SQL.SINK_NEXT_FREE, {"now": time.time(), "max_attempts": max_attempts}).fetchone()[0]
