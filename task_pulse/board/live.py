"""One thread reads, the event loop pushes: the board's live part.

The `Refresher` waits on its source's doorbell (the state db, or LISTEN/NOTIFY; at most
REFRESH_SECONDS, so a task that goes silent is flagged stalled even before a daemon says so), reads a
snapshot, turns it into the page's records and hands what changed to the `Hub` on the event loop.
The Hub keeps the latest view for each page that opens, and queues every change, as one Server-Sent
Event, for every open page. Records are compared as the JSON text the page gets, so an event carries
only the tasks that changed (and the order, when it moved).
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from task_pulse.board.source import Source
from task_pulse.board.view import Shown, file_record, ordered, outlook_record, page_json

log = logging.getLogger("task-pulse.board")

REFRESH_SECONDS = 15.0
RETRY_SECONDS = 2.0  # after a read failed (a busy db, a shared db away)
# Events a page may have waiting before it is sent the whole view again instead (a page that stopped reading).
QUEUE_LIMIT = 200


@dataclass
class View:
    """What the page shows now: the records as JSON text (by key), in order, and the counts of all tasks."""

    version: int = 0
    generated_at: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)
    more: int = 0
    hosts: list[str] = field(default_factory=list)
    note: str | None = None
    order: list[str] = field(default_factory=list)
    records: dict[str, str] = field(default_factory=dict)
    where: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (host, task id)

    def head(self) -> dict[str, Any]:
        return {"version": self.version, "generatedAt": self.generated_at, "counts": self.counts, "more": self.more,
                "hosts": self.hosts, "note": self.note}


def _with_tasks(head: dict[str, Any], name: str, records: list[str]) -> str:
    """`head` as page JSON with a list of JSON texts added under `name` (joined, not parsed again)."""
    text = page_json(head)
    return f'{text[:-1]},"{name}":[{",".join(records)}]}}'


def delta_json(before: View, after: View) -> str | None:
    """What changed from `before` to `after` as one JSON text (None: nothing did)."""
    changed = [after.records[k] for k in after.order if before.records.get(k) != after.records[k]]
    removed = [k for k in before.order if k not in after.records]
    order = after.order if after.order != before.order else None
    head_before, head_after = before.head(), after.head()
    del head_before["version"], head_after["version"], head_before["generatedAt"], head_after["generatedAt"]
    if not changed and not removed and order is None and head_before == head_after:
        return None
    return _with_tasks({**after.head(), "removed": removed, "order": order}, "changed", changed)


class Client:
    """One open page: the events waiting for it."""

    def __init__(self) -> None:
        self.pending: list[str] = []
        self.reset = False  # it fell behind: send it the whole view again
        self.closed = False
        self.wake = asyncio.Event()

    def push(self, event: str) -> None:
        if len(self.pending) >= QUEUE_LIMIT:
            self.pending.clear()
            self.reset = True
        else:
            self.pending.append(event)
        self.wake.set()

    def close(self) -> None:
        self.closed = True
        self.wake.set()


class Hub:
    """The latest view and the open pages; used on the event loop only."""

    def __init__(self, meta: dict[str, Any]) -> None:
        self.meta = meta  # what the page says of where it reads (lang, tasks dir or shared db, limit)
        self.view = View()
        self.clients: set[Client] = set()
        self.closed = False
        self.ready = asyncio.Event()  # the first view is in

    def full_json(self) -> str:
        """The whole view, with the server's clock now (the page counts elapsed times on it)."""
        head = {**self.view.head(), **self.meta, "now": round(time.time(), 3)}
        return _with_tasks(head, "tasks", [self.view.records[k] for k in self.view.order])

    def publish(self, view: View, delta: str | None) -> None:
        self.view = view
        self.ready.set()
        if delta is not None:
            event = f"event: delta\ndata: {delta}\n\n"
            for client in self.clients:
                client.push(event)

    def subscribe(self) -> Client:
        client = Client()
        if self.closed:
            client.close()
        self.clients.add(client)
        return client

    def unsubscribe(self, client: Client) -> None:
        self.clients.discard(client)

    def close(self) -> None:
        """The server stops: every open stream ends now (the browser reconnects to the next server)."""
        self.closed = True
        for client in self.clients:
            client.close()


class Refresher(threading.Thread):
    """The one thread that reads the source (see the module's docstring)."""

    def __init__(self, source: Source, hub: Hub, loop: asyncio.AbstractEventLoop, redact_secrets: bool) -> None:
        super().__init__(name="board-refresher", daemon=True)
        self.source, self.hub, self.loop, self.redact_secrets = source, hub, loop, redact_secrets
        self.stopping = threading.Event()
        self.reads = 0
        # key -> (the parsed task it was made from, its file record, that record's JSON): a file unchanged since
        # the last read is the same Task object (LocalSource keeps it), and its record is not made again.
        self._files: dict[str, tuple[object, str | None, dict[str, Any], str]] = {}

    def stop(self) -> None:
        self.stopping.set()

    def run(self) -> None:
        view = View()
        failing: str | None = None
        try:
            while not self.stopping.is_set():
                try:
                    after = self._read(view.version + 1)
                    if failing is not None:
                        log.warning("reading %s again", self.source.where)
                        failing = None
                except self.source.errors as exc:
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    if reason != failing:
                        log.warning("cannot read %s: %s", self.source.where, reason)
                    failing = reason
                    after = View(**{**view.__dict__, "version": view.version + 1,
                                    "note": f"cannot read {self.source.where}: {reason}"})
                delta = delta_json(view, after) if view.version else ""
                if delta is not None:
                    view = after
                    try:
                        self.loop.call_soon_threadsafe(self.hub.publish, view, delta or None)
                    except RuntimeError:  # the event loop is gone: the server has stopped
                        return
                self.reads += 1
                self.source.wait(RETRY_SECONDS if failing else REFRESH_SECONDS, self.stopping)
        finally:
            self.source.close()

    def _read(self, version: int) -> View:
        now = datetime.now(UTC)
        snapshot = self.source.snapshot(now)
        records, texts, files = [], {}, {}
        for shown in snapshot.shown:
            record, text = self._record(shown, files)
            extra = outlook_record(shown.task, now, snapshot.outlooks.get(shown.key), self.redact_secrets)
            records.append({**record, **extra})
            texts[shown.key] = f"{text[:-1]},{page_json(extra)[1:]}"
        self._files = files
        records = ordered(records)
        where = {s.key: (s.host, s.task_id) for s in snapshot.shown}
        return View(version=version, generated_at=round(now.timestamp(), 3), counts=snapshot.counts,
                    more=snapshot.more, hosts=snapshot.hosts, note=snapshot.note,
                    order=[r["key"] for r in records], records=texts, where=where)

    def _record(self, shown: Shown, files: dict[str, tuple[object, str | None, dict[str, Any], str]],
                ) -> tuple[dict[str, Any], str]:
        """The file record of a task and its JSON, made again only when its file (or its owner) changed."""
        known = self._files.get(shown.key)
        if known is None or known[0] is not shown.task or known[1] != shown.owner:
            record = file_record(shown, self.redact_secrets)
            known = (shown.task, shown.owner, record, page_json(record))
        files[shown.key] = known
        return known[2], known[3]
