"""The shared state database: one PostgreSQL outbox for the daemons of several hosts.

Each host's daemon keeps its own state in `<tasks>/.pulse/state.db` as always (what it announced,
its notifications); its forwarder (daemon/forwarder.py) copies them here, in order, as they are
committed: task snapshots into `tasks`, notifications into `notifications`, finished runs (the
history, task_pulse/history) into `runs`, keyed by (host, task id), (host, key) and (host, run key).
A copy made twice is stored once (`ON CONFLICT DO NOTHING`), so exactly-once holds across hosts,
crashes and outages: while this database is away the local outbox is the spool, and the forwarder
empties it, oldest first, when it is back.

Deliverers (`task-pulse drain --state URL`, the couriers of any host's daemon) claim rows here with
`FOR UPDATE SKIP LOCKED` and a lease, exactly as they do in SQLite; they wake on `LISTEN
task_pulse`, which the forwarder's commits `NOTIFY`. One card per (host, task), whichever host's
courier sends it.

Everything lives in the schema `task_pulse`; its version is in `task_pulse.meta`, and a newer one
than this code knows is refused (`SchemaTooNew`). The SQL is kept as named statements in
sql_postgres.py, one dialect beside sql_sqlite.py's; psycopg (the `postgres` extra) is imported only
here, and only when a shared database is used.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from task_pulse.errors import ConfigError, TaskPulseError
from task_pulse.masking import redact
from task_pulse.messages import shown_id
from task_pulse.records import Card, Handoff, Malformed, Overview, Queued, queued, utc_stamp
from task_pulse.state.sql_postgres import DELIVERER_ROLE, HOST_ROLE, PG, SCHEMA_VERSION
from task_pulse.taskfile import task_from_file

if TYPE_CHECKING:
    import psycopg

    from task_pulse.history.forecast import Profile
    from task_pulse.history.runs import Run
    from task_pulse.model import Task

URL_PREFIXES = ("postgresql://", "postgres://")


class SchemaTooNew(TaskPulseError):
    """The shared database was set up by a newer task-pulse: this one must not write to it."""


def check_url(url: str) -> str:
    """A PostgreSQL URL (`postgresql://user@host:5432/db`), or ConfigError."""
    if not url.startswith(URL_PREFIXES):
        raise ConfigError(f"state database {shown_url(url)!r}: expected a postgresql:// URL")
    return url


def shown_url(url: str) -> str:
    """The URL as logs and messages show it: its password masked, in the user part or as a parameter
    (`?password=…`), and anything else that looks like a secret."""
    import urllib.parse

    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return redact(url)
    user, at, host = parts.netloc.rpartition("@")
    if at and ":" in user:
        user = user.partition(":")[0] + ":***"
    query = "&".join(f"{k}=***" if k.lower() in ("password", "sslpassword") else f"{k}={v}"
                     for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True))
    return redact(urllib.parse.urlunsplit((parts.scheme, f"{user}{at}{host}", parts.path, query, parts.fragment)))


@dataclass(frozen=True)
class SharedTask:
    """A host's task as the forwarder copies it (a `seen` row of its state db, see Outbox.unshared)."""

    task_id: str
    snapshot: str
    status: str | None
    stalled_for: str | None
    stall_at: float | None
    ended_at: float | None
    gone_at: float | None
    version: int


def _connect(url: str, timeout: float) -> psycopg.Connection[Any]:
    import psycopg  # the `postgres` extra: paid for only by those who use a shared database

    # Keepalives and a statement timeout: a server that went away mid-call, or a statement stuck behind
    # someone's lock, is an error the caller retries, never a thread hung for good.
    return psycopg.connect(url, autocommit=True, connect_timeout=max(1, int(timeout)),
                           keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
                           application_name="task-pulse", options="-c statement_timeout=60000")


def state_errors() -> tuple[type[BaseException], ...]:
    """What a shared database raises when it is away or refuses: psycopg's errors."""
    import psycopg

    return (psycopg.Error,)


class SharedOutbox:
    """One connection to the shared database (one per thread, as with the SQLite Outbox)."""

    def __init__(self, url: str, *, connect_timeout: float = 5.0, migrate: bool = True) -> None:
        self.url = check_url(url)
        self.skipped: list[str] = []  # malformed rows set aside since the caller last took this list, one line each
        self.db = _connect(url, connect_timeout)
        try:
            self._schema(migrate)
        except BaseException:
            self.db.close()
            raise

    def close(self) -> None:
        self.db.close()

    def _version(self) -> int:
        row = self.db.execute(PG.HAS_META).fetchone()
        if row is None or not row[0]:
            return 0
        found = self.db.execute(PG.GET_VERSION).fetchone()
        return int(found[0]) if found else 0

    def _schema(self, migrate: bool) -> None:
        """Bring the schema to SCHEMA_VERSION (under a lock: daemons of several hosts start at once);
        SchemaTooNew if it is past it. Readers (`migrate` off) only check, and so does anyone when it is current
        already (a host's or a deliverer's role may not create anything: see `grant`)."""
        with self.db.transaction():
            version = self._version()
            if version < SCHEMA_VERSION and migrate:
                self.db.execute(PG.SCHEMA_LOCK)
                for statement in PG.META.split(";"):
                    self.db.execute(statement)
                version = self._version()  # another daemon may have migrated it while we waited for the lock
            if version > SCHEMA_VERSION:
                raise SchemaTooNew(f"the shared state database {shown_url(self.url)} has schema {version}, newer than "
                                   f"this task-pulse's ({SCHEMA_VERSION}): upgrade task-pulse on this host")
            if version < SCHEMA_VERSION and not migrate:
                state = "is not set up yet" if version == 0 else "was set up by an older task-pulse"
                raise TaskPulseError(f"the shared state database {shown_url(self.url)} {state} (schema {version}): "
                                     "start this version's task-pulsed with --state on it first")
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in PG.MIGRATIONS[step]:
                    self.db.execute(statement)
            if version < SCHEMA_VERSION:
                self.db.execute(PG.SET_VERSION, (str(SCHEMA_VERSION),))

    # -- roles (docs/shared-database.md) -------------------------------------------------------------------

    def who(self) -> tuple[str, bool]:
        """This connection's role, and whether row-level security binds it to its own host's rows (False: the
        schema's owner or a superuser, who sees and may write every host's)."""
        row = self.db.execute(PG.WHO).fetchone()
        assert row is not None
        return str(row[0]), not row[1]

    def check_host(self, host: str) -> None:
        """ConfigError when this connection may not write `host`'s rows: a host's role writes only the rows of
        the host named as the role is (a daemon would spool for ever, each copy refused)."""
        role, bound = self.who()
        if bound and role != host:
            raise ConfigError(f"the shared state database {shown_url(self.url)} lets role {role!r} write the rows of "
                              f"host {role!r} only: run this daemon with --host-name {role} (it is {host!r})")

    def grant(self, role: str, as_what: str) -> list[str]:
        """As the schema's owner: make the group roles and what each may do, then make `role` (which exists: its
        password is the admin's business) a host (`as_what` "host": its name is its host's) or a deliverer.
        Returns what was run, one line each."""
        from psycopg import sql

        group = HOST_ROLE if as_what == "host" else DELIVERER_ROLE
        done = []
        with self.db.transaction():
            for statement in PG.GRANTS:
                self.db.execute(statement)
            done.append(f"roles {HOST_ROLE} and {DELIVERER_ROLE}: granted what each may do on schema task_pulse")
            self.db.execute(sql.SQL(PG.GRANT_MEMBER).format(group=sql.Identifier(group), role=sql.Identifier(role)))
            done.append(f"role {role}: a member of {group}" + (f" (it writes the rows of host {role!r} only)"
                                                               if as_what == "host" else ""))
        return done

    @contextmanager
    def _txn(self) -> Iterator[psycopg.Connection[Any]]:
        with self.db.transaction():
            yield self.db

    # -- the forwarder's side ------------------------------------------------------------------------

    def forward(self, host: str, notifications: list[Queued], tasks: Iterable[SharedTask],
                runs: Iterable[Run] = ()) -> int:
        """In one transaction: the host's task snapshots (an older copy never replaces a newer one), its
        finished runs, and its notifications in queue order (one already here is skipped); then NOTIFY
        the deliverers (new notifications) and the boards (changed tasks or runs). Returns how many
        notifications were new."""
        runs, tasks = list(runs), list(tasks)
        with self._txn() as db, db.cursor() as cur:
            cur.executemany(PG.PUT_RUN, [{"host": host, "key": r.key, "task_id": r.task_id, "name": r.name,
                                          "outcome": r.outcome, "at": r.at, "started_at": r.started_at,
                                          "finished_at": r.finished_at, "steps": r.steps_json()} for r in runs])
            changed = max(cur.rowcount, 0) if runs else 0
            cur.executemany(PG.PUT_TASK, [{"host": host, "task_id": t.task_id, "snapshot": t.snapshot,
                                          "status": t.status, "stalled_for": t.stalled_for, "stall_at": t.stall_at,
                                          "ended_at": t.ended_at, "gone_at": t.gone_at, "version": t.version}
                                         for t in tasks])
            changed += max(cur.rowcount, 0) if tasks else 0
            if changed:  # a board watching every host's tasks wakes (see board/), not the couriers
                cur.execute(PG.TASKS_RING)
            cur.executemany(PG.PUT_NOTIFICATION, [{"host": host, "key": n.key, "task_id": n.task_id,
                                                   "task_name": n.task_name, "kind": n.kind,
                                                   "created_at": n.created_at, "text": n.text,
                                                   "data": json.dumps(n.data, ensure_ascii=False)}
                                                  for n in notifications])
            added = max(cur.rowcount, 0) if notifications else 0  # executemany's rowcount: every row's
            if added:
                cur.execute(PG.RINGS)
        return added

    # -- the deliverers' side (the same methods as the SQLite Outbox) -----------------------------------

    def count_pending(self) -> int:
        row = self.db.execute(PG.COUNT_PENDING).fetchone()
        return int(row[0]) if row else 0

    def claim(self, owner: str, limit: int | None = None, lease_seconds: float = 300) -> list[Queued]:
        now = time.time()
        with self._txn() as db:
            rows = self._deliverable(db, db.execute(PG.CLAIMABLE, {"now": now, "limit": limit}).fetchall())
            if rows:
                db.execute(PG.CLAIM, {"owner": owner, "until": now + lease_seconds, "seqs": [r.seq for r in rows]})
        return rows

    def _deliverable(self, db: psycopg.Connection[Any], rows: list[tuple[Any, ...]]) -> list[Queued]:
        """These rows as notifications, but for those no daemon wrote as they are (any host with the URL can
        insert one): each is set aside in this transaction, its reason kept, and told in `skipped`."""
        good = []
        for r in rows:
            try:
                good.append(queued(*r))
            except Malformed as exc:
                db.execute(PG.SET_ASIDE, {"seq": r[0], "at": utc_stamp(), "error": f"malformed: {exc}"})
                self.skipped.append(f"notification {r[0]} from host {shown_id(str(r[9]))!r} skipped: {exc}")
        return good

    def mark_delivered(self, seqs: Iterable[int], owner: str, by: str | None = None) -> int:
        with self._txn() as db:
            return db.execute(PG.MARK_DELIVERED, {"at": utc_stamp(), "by": by or owner, "seqs": list(seqs),
                                                  "owner": owner}).rowcount

    def release(self, seqs: Iterable[int], owner: str) -> None:
        with self._txn() as db:
            db.execute(PG.RELEASE, {"seqs": list(seqs), "owner": owner})

    def retry_later(self, seqs: Iterable[int], owner: str, error: str, retry_at: float, *, count: bool = True) -> None:
        with self._txn() as db:
            db.execute(PG.RETRY_LATER, {"seqs": list(seqs), "owner": owner, "error": error[:500],
                                        "retry_at": retry_at, "count": int(count)})

    def defer(self, seqs: Iterable[int], owner: str, until: float) -> None:
        with self._txn() as db:
            db.execute(PG.DEFER, {"seqs": list(seqs), "owner": owner, "until": until})

    def give_up(self, seqs: Iterable[int], owner: str, error: str, max_attempts: int) -> None:
        with self._txn() as db:
            db.execute(PG.GIVE_UP, {"seqs": list(seqs), "owner": owner, "error": error[:500],
                                    "max_attempts": max_attempts})

    def claim_task_batch(self, owner: str, max_attempts: int, call_seconds: float, limit: int = 500) -> list[Queued]:
        now = time.time()
        with self._txn() as db:
            while True:  # again after a batch of only malformed rows: they are set aside, the next task's turn
                first = db.execute(PG.SINK_CLAIMABLE, {"now": now, "max_attempts": max_attempts}).fetchone()
                if first is None:
                    return []
                found = db.execute(PG.TASK_BATCH, {"host": first[9], "task_id": first[2],
                                                   "max_attempts": max_attempts, "now": now, "limit": limit}).fetchall()
                rows = self._deliverable(db, found)
                if rows or not found:
                    break
            until = now + (len(rows) + 1) * call_seconds + 60
            db.execute(PG.CLAIM, {"owner": owner, "until": until, "seqs": [r.seq for r in rows]})
        return rows

    def card(self, task_id: str, sink: str, host: str = "") -> Card | None:
        row = self.db.execute(PG.GET_CARD, {"host": host, "task_id": task_id, "sink": sink}).fetchone()
        return None if row is None else Card(message_id=row[0], text=row[1], started_key=row[2])

    def card_view(self, task_id: str, host: str = "") -> tuple[Task, str | None] | None:
        """The task as last announced (with what its host's history of its name says, `Task.profile`) and
        its stall state, for its card (None: not known, or not readable)."""
        row = self.db.execute(PG.TASK_VIEW, {"host": host, "task_id": task_id}).fetchone()
        if row is None:
            return None
        from task_pulse.model import TaskFormatError

        try:
            task = task_from_file(row[0], task_id)
        except TaskFormatError:
            return None
        if task.status == "running":
            task.profile = self.profiles([(host, task.name)]).get((host, task.name))
        return task, row[1]

    def profiles(self, names: list[tuple[str, str]]) -> dict[tuple[str, str], Profile]:
        """What each (host, task name)'s history says (see forecast.learn), for those with runs."""
        from task_pulse.history.forecast import WINDOW, learn
        from task_pulse.history.reader import run_from_row

        by_name: dict[tuple[str, str], list[Run]] = {}
        rows = self.db.execute(PG.DONE_RUNS_OF, {"hosts": [h for h, _ in names], "names": [n for _, n in names],
                                                 "limit": WINDOW}).fetchall()
        for row in rows:
            by_name.setdefault((row[0], row[3]), []).append(run_from_row(row[1:]))
        return {key: learn(key[1], runs) for key, runs in by_name.items()}

    def delivered(self, seqs: Iterable[int], owner: str, by: str, *, task_id: str, sink: str,
                  card: Card | None = None, host: str = "", handoff: str | None = None) -> None:
        at, seqs = utc_stamp(), list(seqs)
        with self._txn() as db:
            marked = db.execute(PG.MARK_DELIVERED, {"at": at, "by": by, "seqs": seqs, "owner": owner}).rowcount
            if card is not None and (marked or not seqs):
                db.execute(PG.PUT_CARD, {"host": host, "task_id": task_id, "sink": sink, "message_id": card.message_id,
                                         "started_key": card.started_key, "text": card.text, "at": at})
            if handoff is not None:
                db.execute(PG.DROP_HANDOFF, {"host": host, "task_id": task_id, "key": handoff})

    def handoff(self, task_id: str, host: str = "") -> Handoff | None:
        row = self.db.execute(PG.GET_HANDOFF, {"host": host, "task_id": task_id}).fetchone()
        if row is None:
            return None
        return Handoff(task_id=task_id, host=host, key=row[0], sink=row[1], seqs=tuple(json.loads(row[2])),
                       text=row[3], card=bool(row[4]), started_key=row[5], boot_id=row[6], written_at=row[7])

    def begin_handoff(self, handoff: Handoff) -> None:
        with self._txn() as db:
            db.execute(PG.PUT_HANDOFF, {"host": handoff.host, "task_id": handoff.task_id, "sink": handoff.sink,
                                        "key": handoff.key, "seqs": json.dumps(list(handoff.seqs)),
                                        "text": handoff.text, "card": handoff.card, "started_key": handoff.started_key,
                                        "boot_id": handoff.boot_id, "written_at": handoff.written_at})

    def drop_handoff(self, task_id: str, key: str, host: str = "") -> None:
        with self._txn() as db:
            db.execute(PG.DROP_HANDOFF, {"host": host, "task_id": task_id, "key": key})

    def renew(self, seqs: Iterable[int], owner: str, until: float) -> None:
        with self._txn() as db:
            db.execute(PG.RENEW, {"seqs": list(seqs), "owner": owner, "until": until})

    def rearm(self, max_attempts: int) -> int:
        with self._txn() as db:
            return db.execute(PG.REARM, {"max_attempts": max_attempts}).rowcount

    def release_claims(self, owner_prefix: str) -> int:
        with self._txn() as db:
            return db.execute(PG.RELEASE_OWNED, {"prefix": owner_prefix}).rowcount

    def drop_card(self, task_id: str, host: str = "") -> None:
        with self._txn() as db:
            db.execute(PG.DROP_CARD, {"host": host, "task_id": task_id})

    def purge_cards(self) -> int:
        with self._txn() as db:
            db.execute(PG.PURGE_HANDOFFS)
            return db.execute(PG.PURGE_CARDS).rowcount

    def owe_edit(self, task_id: str, at: float | None, host: str = "") -> None:
        with self._txn() as db:
            db.execute(PG.OWE_EDIT, {"host": host, "task_id": task_id, "at": at})

    def claim_owed_edit(self, lease_seconds: float) -> tuple[str, str] | None:
        now = time.time()
        with self._txn() as db:
            row = db.execute(PG.OWED_CARD, {"now": now}).fetchone()
            if row is None:
                return None
            db.execute(PG.OWE_EDIT, {"host": row[0], "task_id": row[1], "at": now + lease_seconds})
        return row[0], row[1]

    def sink_next_free(self, max_attempts: int) -> float | None:
        row = self.db.execute(PG.SINK_NEXT_FREE, {"now": time.time(), "max_attempts": max_attempts}).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    # -- housekeeping ----------------------------------------------------------------------------------

    def purge(self, before: float) -> tuple[int, int]:
        """Delivered notifications, and tasks ended or gone, older than unix time `before` (every host's:
        the same age rule each daemon applies to its own dir). Returns (notifications, tasks) removed."""
        with self._txn() as db:
            notes = db.execute(PG.PURGE_DELIVERED, {"before": utc_stamp(before)}).rowcount
            tasks = db.execute(PG.PURGE_TASKS, {"before": before}).rowcount
        return notes, tasks

    def purge_runs(self, host: str, before: float, keep: int) -> int:
        """A host's runs past what its history keeps: older than unix time `before`, or past the newest
        `keep` of their name. Returns how many were removed."""
        with self._txn() as db:
            return db.execute(PG.PURGE_RUNS, {"host": host, "before": before, "keep": keep}).rowcount

    # -- `task-pulse status --all-hosts` ---------------------------------------------------------------

    def overview(self, now: float, limit: int | None) -> Overview:
        """Counts of every host's tasks, and the (host, task id)s of the `limit` most worth showing
        (stalled, latest failed, latest updated running, latest done; every task without a limit)."""
        counts = {status: n for status, n in self.db.execute(PG.COUNT_BY_STATUS).fetchall() if status}
        row = self.db.execute(PG.COUNT_STALLED, {"now": now}).fetchone()
        stalled = int(row[0]) if row else 0
        total = sum(counts.values())
        cap = total if limit is None else limit
        picked: dict[tuple[str, str], None] = {}
        for statement, params in ((PG.PICK_STALLED, {"now": now}), (PG.PICK_ENDED, {"status": "error"}),
                                  (PG.PICK_RUNNING, {}), (PG.PICK_ENDED, {"status": "done"})):
            if len(picked) < cap:
                rows = self.db.execute(statement, {**params, "limit": cap - len(picked)}).fetchall()
                picked.update(((h, t), None) for h, t in rows)
        return Overview(running=counts.get("running", 0) - stalled, stalled=stalled, done=counts.get("done", 0),
                        error=counts.get("error", 0), tasks=list(picked)[:cap])

    # -- the board (task_pulse/board): one task in detail -------------------------------------------------

    def task_notifications(self, host: str, task_id: str, limit: int) -> list[tuple[Any, ...]]:
        """The task's latest `limit` notifications, newest first: (seq, kind, created_at, text,
        delivered_at, delivered_by, attempts, last_error)."""
        return self.db.execute(PG.TASK_NOTIFICATIONS, {"host": host, "task_id": task_id, "limit": limit}).fetchall()

    def task_cards(self, host: str, task_id: str) -> list[tuple[Any, ...]]:
        """The task's live card: (sink, message id, updated_at)."""
        return self.db.execute(PG.TASK_CARDS, {"host": host, "task_id": task_id}).fetchall()

    def runs_of(self, host: str, name: str, limit: int) -> list[Run]:
        """A host's latest `limit` runs of a task name, newest first."""
        from task_pulse.history.reader import run_from_row

        return [run_from_row(r) for r in self.db.execute(PG.RUNS_OF, {"host": host, "name": name, "limit": limit})]

    def snapshots(self, tasks: list[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """The snapshot texts of these (host, task id)s."""
        rows = self.db.execute(PG.SNAPSHOTS, {"hosts": [h for h, _ in tasks], "ids": [t for _, t in tasks]})
        return {(h, t): s for h, t, s in rows.fetchall()}


class Listener:
    """A connection that LISTENs for new rows and calls `ring` for each batch of them (a courier's
    doorbell): no polling. Reconnects with backoff; rings once after each reconnect (rows may have
    come while it was away)."""

    def __init__(self, url: str, ring: Any, listen: str = PG.LISTEN) -> None:
        """`listen`: which doorbell (PG.LISTEN: new notifications; PG.LISTEN_TASKS: changed tasks)."""
        self.url, self.ring, self.listen = url, ring, listen
        self._conn: psycopg.Connection[Any] | None = None

    def run(self, stopping: Any) -> None:
        """Until `stopping` (a threading.Event) is set."""
        pause = 1.0
        while not stopping.is_set():
            try:
                self._conn = _connect(self.url, 5.0)
                self._conn.execute(self.listen)
                self.ring()
                pause = 1.0
                while not stopping.is_set():
                    for _ in self._conn.notifies(timeout=1.0, stop_after=1):
                        self.ring()
            except Exception:  # noqa: BLE001 - away or refused: try again later, the outbox keeps the rows
                stopping.wait(pause)
                pause = min(pause * 2, 30.0)
            finally:
                if self._conn is not None:
                    self._conn.close()
                    self._conn = None

