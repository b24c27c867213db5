"""What the state databases hold, as Python values, and what deliverers need of either database.

The local SQLite outbox (state/outbox.py) and the shared PostgreSQL one (state/shared.py) store the same things:
notifications queued for delivery, each task's card, what was announced about each task. These are
their values; `DeliveryStore` is the interface a deliverer (a drain, a daemon's couriers) uses on
either one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from task_pulse.history.runs import Observed
from task_pulse.messages import shown_id
from task_pulse.model import Task

# Kinds that ring the user's phone: in a card style they also go out as a new message of their own, and
# they never wait behind a card edit the chat's pace holds back.
PINGS = frozenset({"done", "failed", "stalled", "invalid", "overdue"})
_KIND = re.compile(r"[a-z_]{1,32}")


def utc_stamp(at: float | None = None) -> str:
    """ISO 8601 UTC with milliseconds: the format of `createdAt` and `deliveredAt`."""
    moment = datetime.now(UTC) if at is None else datetime.fromtimestamp(at, UTC)
    return moment.isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Notification:
    """One chat message to be delivered, with the structured fields it was rendered from."""

    key: str
    task_id: str
    task_name: str
    kind: str
    text: str
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Queued:
    """A notification as stored, with its place in the queue."""

    seq: int
    key: str
    task_id: str
    task_name: str
    kind: str
    created_at: str
    text: str
    data: dict[str, Any]
    attempts: int
    host: str = ""  # the host whose daemon queued it, in a shared state db; "" in a local one

    def to_json(self) -> dict[str, Any]:
        """The `drain --json` object: the stored fields, then the structured ones. The id (and the key
        that starts with it) as `shown_id` makes it: what reads this is a terminal, a script or a chat."""
        shown = shown_id(self.task_id)
        key = shown + self.key[len(self.task_id):] if self.key.startswith(self.task_id) else self.key
        return {"seq": self.seq, "key": key, "taskId": shown, "taskName": self.task_name,
                "kind": self.kind, "text": self.text, "createdAt": self.created_at,
                **({"host": shown_id(self.host)} if self.host else {}),
                "done": None, "total": None, "step": None,  # present for every kind, null where meaningless
                # `name` is the template's field for taskName: the same value, said once
                **{k: v for k, v in self.data.items() if k not in ("taskId", "taskName", "name", "kind", "text")}}


class Malformed(ValueError):
    """A stored row that no task-pulse daemon wrote as it is: it is skipped, with this reason."""


def queued(seq: int, key: str, task_id: str, task_name: str, kind: str, created_at: str, text: str, data: str,
           attempts: int, host: str = "") -> Queued:
    """A stored row as a Queued notification; Malformed when it cannot be one (what a shared database can hold)."""
    if not isinstance(kind, str) or not _KIND.fullmatch(kind):
        raise Malformed(f"its kind is not a word of task-pulse's ({shown_id(repr(kind))[:40]})")
    try:
        fields = json.loads(data)
    except (TypeError, ValueError):
        raise Malformed("its data is not JSON") from None
    if not isinstance(fields, dict):
        raise Malformed(f"its data is JSON {type(fields).__name__}, not an object")
    for name, value in (("key", key), ("task id", task_id), ("task name", task_name), ("text", text)):
        if not isinstance(value, str):
            raise Malformed(f"its {name} is not text")
    return Queued(seq=seq, key=key, task_id=task_id, task_name=task_name, kind=kind, created_at=created_at,
                  text=text, data=fields, attempts=attempts, host=host)


_MESSAGE_ID = re.compile(r"[A-Za-z0-9$!_.:@=+/#~%,;-]{1,256}")


def safe_message_id(value: object) -> str | None:
    """A chat's message id as task-pulse passes it on (into a command's argv, an edit call): printable ASCII,
    no space, and never starting with `-`, so that it can never be taken for an option (`--exec-edit "… {id}"`,
    `--message-id ID`). None when `value` is not such an id (a reply's or a shared database's)."""
    text = str(value) if isinstance(value, str | int) and not isinstance(value, bool) else ""
    return text if _MESSAGE_ID.fullmatch(text) and not text.startswith("-") else None


@dataclass(frozen=True)
class Card:
    """A task's live card: the chat message that shows it, edited in place."""

    message_id: str
    text: str
    started_key: str | None = None


@dataclass(frozen=True)
class Handoff:
    """A send written to the gateway whose outcome is not recorded yet (see the `handoffs` table)."""

    task_id: str
    sink: str
    key: str
    seqs: tuple[int, ...]
    text: str
    card: bool
    started_key: str | None
    boot_id: str | None
    written_at: float
    host: str = ""


@dataclass(frozen=True)
class Overview:
    """Counts of every task by what `status` calls it, and the ids of the tasks it shows (see
    `outbox.read_overview`)."""

    running: int
    stalled: int
    done: int
    error: int
    tasks: list[tuple[str, str]]  # (host, task id) of the tasks to show; the host is "" in a local state db

    @property
    def total(self) -> int:
        return self.running + self.stalled + self.done + self.error


@dataclass
class Seen:
    """What the daemon knows it has announced about one task."""

    task_id: str
    snapshot: Task
    run: int = 0
    file_sig: str | None = None
    stalled_for: str | None = None
    progress_at: float | None = None
    held: dict[str, Any] | None = None
    stall_at: float | None = None
    digest: str | None = None
    gone_at: float | None = None  # its file was removed then (unix time); None while it is there
    # A first start stored the file's text at this unix time without reading it as a task: it is taken
    # as announced then, once parsed (see `Outbox.store_unread`). None: parsed.
    adopt_at: float | None = None
    # `snapshot` as stored: a first start's file as it was read, until it is adopted. None: `record` stores
    # `snapshot` (the compact form the daemon keeps, see snapshot.py).
    text: str | None = None
    # What the daemon observed of this run while it ran (silences, overdue notices told): see task_pulse/history.
    observed: Observed | None = None
    overdue_at: float | None = None  # unix time the running step or the task becomes overdue (None: never)
    owner: int | None = None  # uid of the task file's owner, as last read
    quiet_run: int | None = None  # `run` while it is told in flood summaries only (see daemon/flood.py)


class DeliveryStore(Protocol):
    """What a deliverer (a drain, a daemon's couriers) needs of an outbox: the local state db (`Outbox`)
    or a shared one (`task_pulse.state.shared.SharedOutbox`). `host` names a task's daemon in a shared db."""

    skipped: list[str]  # rows the claims set aside as malformed (see `queued`), one line each, for the caller

    def claim(self, owner: str, limit: int | None = None, lease_seconds: float = 300) -> list[Queued]: ...
    def mark_delivered(self, seqs: Iterable[int], owner: str, by: str | None = None) -> int: ...
    def release(self, seqs: Iterable[int], owner: str) -> None: ...
    def retry_later(self, seqs: Iterable[int], owner: str, error: str, retry_at: float, *,
                    count: bool = True) -> None: ...
    def defer(self, seqs: Iterable[int], owner: str, until: float) -> None: ...
    def give_up(self, seqs: Iterable[int], owner: str, error: str, max_attempts: int) -> None: ...
    def claim_task_batch(self, owner: str, max_attempts: int, call_seconds: float,
                         limit: int = 500) -> list[Queued]: ...
    def card(self, task_id: str, sink: str, host: str = "") -> Card | None: ...
    def card_view(self, task_id: str, host: str = "") -> tuple[Task, str | None] | None: ...
    def delivered(self, seqs: Iterable[int], owner: str, by: str, *, task_id: str, sink: str,
                  card: Card | None = None, host: str = "", handoff: str | None = None) -> None: ...
    def handoff(self, task_id: str, host: str = "") -> Handoff | None: ...
    def begin_handoff(self, handoff: Handoff) -> None: ...
    def drop_handoff(self, task_id: str, key: str, host: str = "") -> None: ...
    def renew(self, seqs: Iterable[int], owner: str, until: float) -> None: ...
    def rearm(self, max_attempts: int) -> int: ...
    def release_claims(self, owner_prefix: str) -> int: ...
    def drop_card(self, task_id: str, host: str = "") -> None: ...
    def owe_edit(self, task_id: str, at: float | None, host: str = "") -> None: ...
    def claim_owed_edit(self, lease_seconds: float) -> tuple[str, str] | None: ...
    def purge_cards(self) -> int: ...
    def sink_next_free(self, max_attempts: int) -> float | None: ...
    def count_pending(self) -> int: ...
    def close(self) -> None: ...
