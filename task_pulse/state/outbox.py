"""The state database `<tasks>/.pulse/state.db`: announced snapshots and the notification queue.

One interface over one SQLite file, its SQL kept as named statements in sql_sqlite.py. Who writes what:

* the daemon's worker thread is the only writer of `seen` and the only inserter of `notifications`,
  one transaction per processed file (snapshot + its notifications), so a crash can never leave a
  snapshot that claims something was announced when it was not, or the reverse;
* the history of finished runs (`runs`, task_pulse/history) is written by the worker too, in the
  transaction of the read that saw the run end, and outlives the task files;
* deliverers (`task-pulse drain`, the daemon's sinks) only claim rows and mark them delivered, through
  the methods of deliveries.py, which `Outbox` inherits: each in its own thread, its own `Outbox`.

Every notification has a stable `key` (UNIQUE): inserting a notification a second time is a no-op,
which is what makes a re-applied diff harmless.
"""

from __future__ import annotations

import errno
import json
import os
import re
import sqlite3
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from task_pulse.history.reader import RunReader, run_from_row
from task_pulse.history.runs import Observed, Run
from task_pulse.model import Task, TaskFormatError, parse_time
from task_pulse.privatedir import UnsafeDir
from task_pulse.records import Notification, Overview, Queued, Seen, utc_stamp
from task_pulse.snapshot import to_json
from task_pulse.state.deliveries import DeliveryQueue
from task_pulse.state.sql_sqlite import MIGRATIONS, SCHEMA_VERSION, SQL
from task_pulse.store import TaskStore
from task_pulse.taskfile import task_from_file

DB_NAME = "state.db"
# `reclaim` gives free pages back once this many are free and they are this share of the file.
RECLAIM_MIN_PAGES = 2048  # 8 MB of 4 KB pages
RECLAIM_MIN_SHARE = 0.25
INCREMENTAL = 2  # PRAGMA auto_vacuum's value for incremental
# meta: the shared state db (shown URL) this dir's daemon forwards to, "" when it forwards nowhere.
SHARED_STATE_META = "shared_state"
# Parsed snapshots an Outbox keeps (the most recently used tasks): a task written again and again is
# diffed against the snapshot in memory instead of parsing it back from the db each time. Bounded, so
# memory stays flat at any number of tasks (a 20-step task is a few KB).
SNAPSHOT_CACHE = 1024


def _row(n: Notification, created_at: str, **extra: str | float) -> dict[str, str | float]:
    """A notification's parameters for the INSERT statements."""
    return {"key": n.key, "task_id": n.task_id, "task_name": n.task_name, "kind": n.kind, "created_at": created_at,
            "text": n.text, "data": json.dumps(n.data, ensure_ascii=False), **extra}


class Outbox(DeliveryQueue):
    """The state database. One instance per thread (sqlite3 connections stay in their thread)."""

    def __init__(self, path: Path, *, create: bool = True, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.created = False
        self.skipped: list[str] = []  # malformed rows set aside since the caller last took this list (see shared.py)
        self._batch_depth = 0
        # task id -> (digest, snapshot) of the content with that digest (see `seen`). Snapshots are
        # shared from here: nobody edits one (the tracker makes a new Task for every read of a file).
        self._snapshots: OrderedDict[str, tuple[str, Task]] = OrderedDict()
        self._unshared_indexed = False
        if create and not self.path.exists():
            # Make the file ourselves so it is 0600 from the first byte (SQLite gives -wal/-shm the same).
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            os.close(fd)
            self.created = True
        elif not self.path.exists():
            raise FileNotFoundError(self.path)
        self.db = sqlite3.connect(self.path, isolation_level=None, timeout=busy_timeout, check_same_thread=True)
        self._check_opened()
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        self.db.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
        self._init_schema()
        self.runs = RunReader(self.db)

    def _check_opened(self) -> None:
        """The file SQLite opened is the one at our path. Given `.pulse`'s handle (/proc/self/fd/N/state.db),
        SQLite reads the link and opens the name it gets (seen with strace): a `.pulse` moved in between
        would give it another file. UnsafeDir then, and nothing read from it."""
        if not str(self.path).startswith("/proc/self/fd/"):
            return
        opened = self.db.execute("PRAGMA database_list").fetchone()[2]
        try:
            same = os.path.samestat(os.stat(opened), os.stat(self.path))
        except OSError:
            same = False
        if not same:
            self.db.close()
            raise UnsafeDir(f"{opened} is not the state database task-pulse checked (its directory was moved while it "
                            "was being opened): check who else can write the tasks dir")

    @classmethod
    def for_store(cls, store: TaskStore, *, create: bool = True, busy_timeout: float = 30.0) -> Outbox:
        """The state db in the store's `.pulse/`, once that passed its checks (see privatedir.py).
        FileNotFoundError when there is none and `create` is off."""
        path = store.private_path(DB_NAME, create=create, recheck=True)
        if path is None:
            raise FileNotFoundError(errno.ENOENT, "no state database yet", str(store.pulse_dir / DB_NAME))
        return cls(Path(path), create=create, busy_timeout=busy_timeout)

    @classmethod
    def for_tasks_dir(cls, tasks_dir: Path, *, create: bool = True) -> Outbox:
        return cls.for_store(TaskStore(tasks_dir), create=create)

    def _init_schema(self) -> None:
        if self.created:  # before the first table: free pages can be given back (see `reclaim`)
            self.db.execute("PRAGMA auto_vacuum = INCREMENTAL")
        self.db.executescript(SQL.SCHEMA)
        with self.transaction():
            row = self.db.execute(SQL.GET_META, ("schema_version",)).fetchone()
            if row is None:  # a new database: SCHEMA made it current
                self.db.execute(SQL.SET_META, ("schema_version", str(SCHEMA_VERSION)))
            elif int(row[0]) > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"schema {row[0]} is newer than this task-pulse's ({SCHEMA_VERSION}); "
                                            "upgrade task-pulse")
            elif int(row[0]) < SCHEMA_VERSION:
                for version in range(int(row[0]) + 1, SCHEMA_VERSION + 1):
                    for statement in MIGRATIONS[version]:
                        if not self._has_added_column(statement):
                            self.db.execute(statement)
                self.db.execute(SQL.SET_META, ("schema_version", str(SCHEMA_VERSION)))
            for statement in SQL.LATE_INDEXES:
                self.db.execute(statement)

    def _has_added_column(self, statement: str) -> bool:
        """Whether `ALTER TABLE t ADD COLUMN c …` has nothing to do: a table SCHEMA made just now, in a db
        older than the table, already has every column."""
        match = re.match(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", statement)
        if match is None:
            return False
        columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({match.group(1)})")}
        return match.group(2) in columns

    def close(self) -> None:
        self.db.close()

    def reclaim(self, min_free_pages: int = RECLAIM_MIN_PAGES, min_free_share: float = RECLAIM_MIN_SHARE) -> int:
        """Give the file's free pages back to the disk once a purge left many (SQLite reuses free pages
        but never shrinks the file by itself): an incremental vacuum, cheap; in a db made before that
        mode, one full VACUUM that turns it on. Returns how many pages were free (0: nothing done)."""
        free = int(self.db.execute("PRAGMA freelist_count").fetchone()[0])
        total = int(self.db.execute("PRAGMA page_count").fetchone()[0])
        if free < min_free_pages or free < total * min_free_share:
            return 0
        if int(self.db.execute("PRAGMA auto_vacuum").fetchone()[0]) == INCREMENTAL:
            self.db.execute("PRAGMA incremental_vacuum").fetchall()
        else:
            self.db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self.db.execute("VACUUM")  # rewrites the file once; from then on `incremental_vacuum` will do
        return free

    def checkpoint_by_hand(self) -> None:
        """No automatic WAL checkpoint on this connection's commits (they cost fsyncs in the middle of
        someone's write → outbox): another connection does it (the daemon's Checkpointer)."""
        self.db.execute("PRAGMA wal_autocheckpoint = 0")

    def data_version(self) -> int:
        """Changes whenever another connection commits to the db (PRAGMA data_version)."""
        return int(self.db.execute("PRAGMA data_version").fetchone()[0])

    @contextmanager
    def transaction(self, *, single: bool = False) -> Iterator[sqlite3.Connection]:
        """`BEGIN IMMEDIATE`: take the write lock up front, so a claim can never be raced.

        Inside `batch()` it is a savepoint of the batch's transaction instead: a failure undoes
        this block only, never half of it, and the rest of the batch goes on. `single`: the block
        runs one statement, which stands or falls whole by itself: no savepoint (two statements
        less for each of the thousands of files a scan or a burst of writes commits together).
        """
        if self._batch_depth and single:
            yield self.db
            return
        if self._batch_depth:
            self.db.execute("SAVEPOINT record")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK TO record")
                self.db.execute("RELEASE record")
                raise
            self.db.execute("RELEASE record")
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def batch(self) -> Iterator[None]:
        """Many `record` calls in one transaction (a scan): as atomic, with far fewer commits."""
        with self.transaction():
            self._batch_depth += 1
            try:
                yield
            finally:
                self._batch_depth -= 1

    # -- meta ----------------------------------------------------------------------------------------

    def get_meta(self, name: str) -> str | None:
        row = self.db.execute(SQL.GET_META, (name,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, name: str, value: str) -> None:
        with self.transaction():
            self.db.execute(SQL.SET_META, (name, value))

    # -- the worker's side ---------------------------------------------------------------------------

    def seen(self, task_id: str) -> Seen | None:
        """What was announced about the task (None: nothing). TaskFormatError: the row holds a first
        start's text that is no task (see `store_unread`)."""
        row = self.db.execute(SQL.GET_SEEN, (task_id,)).fetchone()
        if row is None:
            return None
        digest = row[8]
        # The row's digest says which content its snapshot was read from: a parse of that same content
        # kept in memory is the same snapshot, whatever happened to other rows (or a rolled-back write).
        cached = self._snapshots.get(task_id)
        if cached is not None and digest is not None and cached[0] == digest:
            self._snapshots.move_to_end(task_id)
            snapshot = cached[1]
        else:
            snapshot = task_from_file(row[1], task_id)
            self._keep_snapshot(task_id, digest, snapshot)
        return Seen(task_id=row[0], snapshot=snapshot, run=row[2], file_sig=row[3], stalled_for=row[4],
                    progress_at=row[5], held=None if row[6] is None else json.loads(row[6]), stall_at=row[7],
                    digest=digest, gone_at=row[9], adopt_at=row[10], text=row[1] if row[10] is not None else None,
                    observed=None if row[11] is None else Observed.from_json(row[11]), overdue_at=row[12],
                    owner=row[13], quiet_run=row[14])

    def _keep_snapshot(self, task_id: str, digest: str | None, snapshot: Task) -> None:
        if digest is None:
            self._snapshots.pop(task_id, None)
            return
        self._snapshots[task_id] = (digest, snapshot)
        self._snapshots.move_to_end(task_id)
        if len(self._snapshots) > SNAPSHOT_CACHE:
            self._snapshots.popitem(last=False)

    def store_unread(self, rows: Iterable[tuple[str, str, str, str, int]], at: float) -> None:
        """A first start's files, as read at unix time `at`: (task id, text, file signature, digest, owner uid).

        Stored as they are, without parsing them: parsing and diffing is most of what a file costs, and
        a first start only has to know what each file said when it began watching. Each is taken as
        announced as it was then (adopted) when it is next looked at: at its next change, or by the
        worker's background pass after READY (see `unadopted`)."""
        with self.transaction() as db:
            db.executemany(SQL.PUT_UNREAD, ((task_id, text, sig, digest, at, owner)
                                            for task_id, text, sig, digest, owner in rows))

    def adopted(self, seen: Seen, run: Run | None = None, keep_runs: int = 0) -> None:
        """A stored text (see `store_unread`) is taken as announced, with the stall state `seen` has; a
        task that had ended is a run of its name's history (`run`, see `record`)."""
        self._keep_snapshot(seen.task_id, seen.digest, seen.snapshot)
        with self.transaction(single=run is None) as db:
            db.execute(SQL.ADOPTED, {"task_id": seen.task_id, "snapshot": to_json(seen.snapshot),
                                     "stalled_for": seen.stalled_for, "stall_at": seen.stall_at,
                                     "ended_at": _ended_at(seen.snapshot), "status": seen.snapshot.status,
                                     "overdue_at": seen.overdue_at,
                                     "observed": seen.observed.to_json() if seen.observed is not None else None})
            if run is not None:
                self._put_run(run, keep_runs)

    def unshared(self, limit: int) -> list[tuple[Any, ...]]:
        """Rows written since the shared state db last got them: (task id, snapshot text, status,
        stalled_for, stall_at, ended_at, gone_at, version), at most `limit`."""
        self._index_unshared()
        return self.db.execute(SQL.UNSHARED, (limit,)).fetchall()

    def _index_unshared(self) -> None:
        """The forwarder's indexes (a daemon without a shared db pays nothing for them)."""
        if not self._unshared_indexed:
            self.db.execute(SQL.UNSHARED_INDEX)
            self.db.execute(SQL.UNSHARED_RUNS_INDEX)
            self._unshared_indexed = True

    def unforwarded(self, limit: int) -> list[Queued]:
        """The oldest notifications not yet in the shared state db (see daemon/forwarder.py)."""
        return self._deliverable(self.db.execute(SQL.UNFORWARDED, (limit,)).fetchall())

    def forwarded(self, seqs: Iterable[int], versions: Iterable[tuple[str, int]], runs: Iterable[str] = ()) -> None:
        """In one transaction: these notifications, these (task id, version)s and these runs (by key) are
        in the shared db."""
        at = utc_stamp()
        with self.transaction() as db:
            db.executemany(SQL.MARK_FORWARDED, [{"at": at, "seq": s} for s in seqs])
            db.executemany(SQL.MARK_SHARED, [{"task_id": t, "version": v} for t, v in versions])
            db.executemany(SQL.MARK_RUN_SHARED, [(k,) for k in runs])

    def shared_rows(self, task_ids: Iterable[str]) -> list[tuple[Any, ...]]:
        """The same rows as `unshared`, for these tasks, whatever their version."""
        ids = list(task_ids)
        return self.db.execute(SQL.SHARED_ROWS, (json.dumps(ids),)).fetchall() if ids else []

    def unadopted(self, limit: int) -> list[str]:
        """Ids of tasks whose stored text is still to be adopted (see `store_unread`), at most `limit`."""
        return [r[0] for r in self.db.execute(SQL.UNADOPTED, (limit,))]

    def card_view(self, task_id: str, host: str = "") -> tuple[Task, str | None] | None:
        """The task as last announced (with what the history of its name says, `Task.profile`) and its
        stall state, for its card (None: not known, or a first start's text that is no task)."""
        try:
            seen = self.seen(task_id)
        except TaskFormatError:
            return None
        if seen is None:
            return None
        snapshot = seen.snapshot  # shared with the snapshot cache: a copy carries the profile
        if snapshot.status == "running":
            snapshot = snapshot.copy(profile=self.runs.profile(snapshot.name))
        return snapshot, seen.stalled_for

    def seen_signatures(self) -> dict[str, str | None]:
        return dict(self.db.execute(SQL.SEEN_SIGS).fetchall())

    def stall_timers(self) -> list[tuple[str, float]]:
        """(task id, unix time it becomes stalled) of every task that may stall."""
        return self.db.execute(SQL.STALL_TIMERS).fetchall()

    def overdue_timers(self) -> list[tuple[str, float]]:
        """(task id, unix time its running step or itself becomes overdue) of every task that may."""
        return self.db.execute(SQL.OVERDUE_TIMERS).fetchall()

    def held_progress(self) -> list[tuple[str, float]]:
        """(task id, unix time of its last progress push) of every task holding a progress message back."""
        return self.db.execute(SQL.HELD_PROGRESS).fetchall()

    def ended_before(self, before: float) -> list[str]:
        """Ids of tasks last seen done/error that ended before unix time `before`: cleanup candidates."""
        return [r[0] for r in self.db.execute(SQL.ENDED_BEFORE, (before,))]

    def count_seen(self) -> int:
        return self.db.execute(SQL.COUNT_SEEN).fetchone()[0]

    def count_stalled(self) -> int:
        return self.db.execute(SQL.COUNT_STALLED).fetchone()[0]

    def record(self, task_id: str, seen: Seen | None, notifications: Sequence[Notification],
               run: Run | None = None, keep_runs: int = 0, *,
               held: Sequence[Notification] = (), held_by: str = "", held_until: float = 0.0) -> int:
        """In one transaction: store (or, with None, drop) the task's snapshot, queue its notifications
        (`held` ones claimed by `held_by` until `held_until`: a flood window's, see daemon/flood.py), and add
        the run that ended (`run`) to the history, keeping the newest `keep_runs` of its name.

        Returns how many notifications were new (a key already queued is skipped, never repeated).
        """
        # Every parameter first: nothing but the statements themselves can fail inside the block.
        created_at = utc_stamp() if notifications or held else ""
        rows = [(SQL.INSERT_NOTIFICATION, _row(n, created_at)) for n in notifications]
        rows += [(SQL.INSERT_HELD, _row(n, created_at, held_by=held_by, held_until=held_until)) for n in held]
        if seen is None:
            statement: str = SQL.DROP_SEEN
            params: Any = (task_id,)
            self._snapshots.pop(task_id, None)
        else:
            statement = SQL.PUT_SEEN
            params = {"task_id": task_id, "run": seen.run, "file_sig": seen.file_sig,
                      "snapshot": seen.text if seen.text is not None else to_json(seen.snapshot),
                      "stalled_for": seen.stalled_for, "progress_at": seen.progress_at, "stall_at": seen.stall_at,
                      "ended_at": _ended_at(seen.snapshot), "digest": seen.digest, "status": seen.snapshot.status,
                      "held": None if seen.held is None else json.dumps(seen.held, ensure_ascii=False),
                      "owner": seen.owner, "quiet_run": seen.quiet_run,
                      "observed": seen.observed.to_json() if seen.observed is not None else None,
                      "overdue_at": seen.overdue_at}
            self._keep_snapshot(task_id, seen.digest, seen.snapshot)
        with self.transaction(single=not rows and run is None) as db:
            db.execute(statement, params)
            inserted = 0
            for insert, row in rows:
                inserted += db.execute(insert, row).rowcount
            if run is not None:
                self._put_run(run, keep_runs)
        return inserted

    def _put_run(self, run: Run, keep: int) -> None:
        """Add a run to the history (once: its key is unique), then trim its name's runs to the newest `keep`."""
        self.db.execute(SQL.PUT_RUN, {"key": run.key, "task_id": run.task_id, "name": run.name, "outcome": run.outcome,
                                      "at": run.at, "started_at": run.started_at, "finished_at": run.finished_at,
                                      "steps": run.steps_json()})
        if keep > 0:
            self.db.execute(SQL.TRIM_RUNS, {"name": run.name, "keep": keep})

    def purge_runs(self, before: float) -> int:
        """Forget runs that started before unix time `before` (the history's age bound)."""
        with self.transaction() as db:
            return db.execute(SQL.PURGE_RUNS, {"before": before}).rowcount

    def unshared_runs(self, limit: int) -> list[Run]:
        """Runs a shared state db does not have yet (see daemon/forwarder.py), at most `limit`."""
        self._index_unshared()
        return [run_from_row(r) for r in self.db.execute(SQL.UNSHARED_RUNS, (limit,))]

    def has_key(self, key: str) -> bool:
        """Whether a notification with this key is in the outbox (pending, or delivered and not purged)."""
        return self.db.execute(SQL.HAS_KEY, (key,)).fetchone() is not None

    def record_summary(self, summary: Notification, folded: Iterable[Notification]) -> int:
        """In one transaction: queue `summary`, and store the notifications it sums up as delivered
        by it, so that their keys are taken and none of them is told again on its own."""
        created_at = utc_stamp()
        with self.transaction() as db:
            db.executemany(SQL.INSERT_SETTLED, [_row(n, created_at, by=f"summary:{summary.key}") for n in folded])
            return db.execute(SQL.INSERT_NOTIFICATION, _row(summary, created_at)).rowcount

    def mark_gone(self, task_id: str, at: float) -> bool:
        """The task's file was removed at unix time `at`. False if it was not known, or already gone."""
        with self.transaction(single=True) as db:
            return db.execute(SQL.MARK_GONE, {"task_id": task_id, "now": at}).rowcount > 0

    def trim_gone(self, owner: int, budget: int) -> int:
        """Forget the oldest tombstones of `owner`'s tasks beyond `budget` bytes. Returns how many."""
        with self.transaction() as db:
            return db.execute(SQL.TRIM_GONE, {"owner": owner, "budget": budget}).rowcount

    def held(self, held_by: str) -> list[Queued]:
        """The notifications a flood window holds (see `record`), oldest first."""
        return self._deliverable(self.db.execute(SQL.HELD, {"held_by": held_by}).fetchall())

    def held_windows(self) -> list[str]:
        """The flood windows that still hold notifications (a summary a stop cut short)."""
        return [r[0] for r in self.db.execute(SQL.HELD_WINDOWS)]

    def record_held_summary(self, summary: Notification, held_by: str) -> int:
        """In one transaction: queue `summary`, and mark what the window held delivered by it."""
        created_at = utc_stamp()
        with self.transaction() as db:
            db.execute(SQL.SETTLE_HELD, {"at": created_at, "by": f"summary:{summary.key}", "held_by": held_by})
            return db.execute(SQL.INSERT_NOTIFICATION, _row(summary, created_at)).rowcount

    def purge_gone(self, before: float) -> int:
        """Forget tasks whose file has been gone since before unix time `before`."""
        with self.transaction() as db:
            return db.execute(SQL.PURGE_GONE, (before,)).rowcount

    def purge_delivered(self, before: float) -> int:
        with self.transaction() as db:
            return db.execute(SQL.PURGE_DELIVERED, {"before": utc_stamp(before)}).rowcount


def read_overview(db: sqlite3.Connection, now: float, limit: int) -> Overview | None:
    """What `task-pulse status` (and the board) shows of a big dir, from the indexes alone (a few ms at
    100,000 tasks): how many tasks are running, stalled, done and failed, and the ids of the `limit` most
    worth showing: stalled ones, then the latest failed, the latest updated running ones, the latest
    done. None while a first start's files are still unread (their status is not known yet). Any
    connection will do, a read-only one too."""
    if db.execute(SQL.HAS_UNADOPTED).fetchone() is not None:
        return None
    counts = {status: count for status, count in db.execute(SQL.COUNT_BY_STATUS) if status}
    stalled = db.execute(SQL.COUNT_OVERDUE, {"now": now}).fetchone()[0] + db.execute(SQL.COUNT_STALLED).fetchone()[0]
    picked: dict[str, None] = {}  # in order, once each
    for statement, params in ((SQL.STALLED_IDS, {"now": now}), (SQL.LATEST_ENDED, {"status": "error"}),
                              (SQL.LATEST_UPDATED, {}), (SQL.LATEST_ENDED, {"status": "done"})):
        if len(picked) < limit:
            rows = db.execute(statement, {**params, "limit": limit - len(picked)})
            picked.update((task_id, None) for (task_id,) in rows)
    return Overview(running=counts.get("running", 0) - stalled, stalled=stalled, done=counts.get("done", 0),
                    error=counts.get("error", 0), tasks=[("", task_id) for task_id in list(picked)[:limit]])


def _ended_at(task: Task) -> float | None:
    if task.status not in ("done", "error"):
        return None
    ended = parse_time(task.finished_at) or parse_time(task.updated_at)
    return None if ended is None else ended.timestamp()
