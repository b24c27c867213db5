"""Where the board reads, and what wakes it. It reads only: no task file, state db or outbox is written.

* `LocalSource`: one tasks dir. The files say what each task is (read as `status` reads them, and
  stat'ed, which also gives each file's owner); the state db, opened read-only, says which tasks to
  show when there are more than the page lists (the same overview `status` uses at 100,000 tasks),
  what the history says, and when something changed: `PRAGMA data_version` moves whenever the daemon
  commits, and the tasks dir's mtime whenever a file is renamed into it (every task-pulse write), so
  a change is seen even without a daemon. Polling one pragma and two stats every 0.1 s costs next to
  nothing; the browser never polls.
* `SharedSource`: every host's tasks in a shared PostgreSQL state db, as its forwarders copy them,
  woken by `LISTEN task_pulse_tasks` (shared.Listener).

A source is used by one thread (the board's Refresher) for `wait` and `snapshot`; `detail` opens a
connection of its own, so request threads never share one with it.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from task_pulse.board.view import (
    Shown,
    card_record,
    history_record,
    notification_record,
    task_record,
)
from task_pulse.history.reader import RunReader, has_runs, read_only_db
from task_pulse.messages import pick_for_status
from task_pulse.model import Task, TaskFormatError
from task_pulse.privatedir import UnsafeDir
from task_pulse.state.outbox import read_overview
from task_pulse.state.sql_sqlite import SQL
from task_pulse.status import all_hosts_entries, outlooks_of
from task_pulse.store import TaskStore, unwatched_note
from task_pulse.taskfile import file_signature, read_task_file, task_from_file

if TYPE_CHECKING:
    from task_pulse.history.forecast import Outlook, Profile
    from task_pulse.history.runs import Run
    from task_pulse.state.shared import SharedOutbox

POLL_SECONDS = 0.1  # how often the local doorbell is looked at
REOPEN_SECONDS = 1.0  # how often a missing or broken state db is tried again
HISTORY_RUNS = 30  # runs the detail view draws
DETAIL_NOTIFICATIONS = 50  # notifications the detail view lists (the latest)


@dataclass
class Snapshot:
    """The tasks to show now (at most the source's limit, the most worth seeing), and the counts of all."""

    shown: list[Shown]
    outlooks: dict[str, Outlook]
    counts: dict[str, int]  # running, stalled, done, error, unreadable: of every task, shown or not
    more: int  # tasks not shown
    hosts: list[str] = field(default_factory=list)  # every host seen (a shared db)
    note: str | None = None  # what the page should say above the tasks (no daemon watches the dir)


@functools.lru_cache(maxsize=256)
def owner_name(uid: int) -> str:
    """The account name of a uid (its number when it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


class LocalSource:
    """One tasks dir, read as `status` reads it (see the module's docstring)."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error, UnsafeDir, OSError)

    def __init__(self, store: TaskStore, default_stall: float, limit: int, lang: str = "zh",
                 redact_secrets: bool = True) -> None:
        self.store, self.default_stall, self.limit, self.redact_secrets = store, default_stall, limit, redact_secrets
        self.lang = lang
        self.where = str(store.root)
        self._db: sqlite3.Connection | None = None
        self._closing = contextlib.ExitStack()
        self._has_runs = False
        self._tried_db_at = -REOPEN_SECONDS
        self._mark: tuple[Any, ...] | None = None
        self._files: dict[str, tuple[str, Task | TaskFormatError, int]] = {}  # id -> (signature, parsed, uid)
        self._me = os.geteuid()

    def close(self) -> None:
        self._closing.close()
        self._closing = contextlib.ExitStack()
        self._db = None

    def _state_db(self) -> sqlite3.Connection | None:
        """The state db, read-only; None while there is none (tried again each REOPEN_SECONDS)."""
        if self._db is None and time.monotonic() - self._tried_db_at >= REOPEN_SECONDS:
            self._tried_db_at = time.monotonic()
            db = self._closing.enter_context(read_only_db(self.store, timeout=2))
            if db is not None:
                self._db, self._has_runs = db, has_runs(db)
        return self._db

    def _doorbell(self) -> tuple[Any, ...]:
        """What changes when a task may have: the db's data_version, the dir's and the daemon lock's mtime."""
        version = None
        try:
            db = self._state_db()
            version = db.execute("PRAGMA data_version").fetchone()[0] if db is not None else None
        except self.errors:  # gone, busy, or a `.pulse/` made unsafe meanwhile: the next read says which
            self.close()
        marks: list[Any] = [version]
        for path in (self.where, os.path.join(self.where, ".pulse", "daemon.lock")):
            try:
                marks.append(os.stat(path).st_mtime_ns)
            except OSError:
                marks.append(None)
        return tuple(marks)

    def wait(self, timeout: float, stopping: threading.Event) -> bool:
        """Until something changed (True) or `timeout` passed (False), or `stopping` is set."""
        deadline = time.monotonic() + timeout
        while not stopping.wait(POLL_SECONDS):
            mark = self._doorbell()
            if mark != self._mark:
                self._mark = mark
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def snapshot(self, now: datetime) -> Snapshot:
        self._mark = self._doorbell()  # what this snapshot has seen
        watched = self.store.daemon_running()
        db = self._state_db()
        overview = None
        if db is not None and watched:  # a daemon keeps the db current: it may pick the tasks at scale
            try:
                overview = read_overview(db, now.timestamp(), self.limit)
            except sqlite3.Error:
                self.close()
                db = None
            if overview is not None and overview.total <= self.limit:
                overview = None  # all of them are shown: the files say which there are
        ids = [task_id for _, task_id in overview.tasks] if overview is not None else self.store.task_ids()
        entries = self._read(ids)
        profiles = self._profiles(db, [t for _, t in entries if isinstance(t, Task)])
        outlooks = outlooks_of(entries, profiles, now, self.default_stall)
        if overview is not None:
            shown_entries, counted = pick_for_status(entries, now, self.default_stall, None, outlooks)
            counts = {"running": overview.running, "stalled": overview.stalled, "done": overview.done,
                      "error": overview.error, "unreadable": counted["unreadable"]}
            more = max(0, overview.total - len(entries))
        else:
            shown_entries, counts = pick_for_status(entries, now, self.default_stall, self.limit, outlooks)
            more = len(entries) - len(shown_entries)
        shown = [Shown(task_id, "", task_id, task, self._owner(task_id)) for task_id, task in shown_entries]
        return Snapshot(shown, outlooks, counts, more,
                        note=None if watched else unwatched_note(self.where))

    def _owner(self, task_id: str) -> str | None:
        found = self._files.get(task_id)
        return None if found is None or found[2] == self._me else owner_name(found[2])

    def _read(self, ids: list[str]) -> list[tuple[str, Task | TaskFormatError]]:
        """These tasks' files, parsed; a file unchanged since the last read (same signature) is not read again."""
        fresh: dict[str, tuple[str, Task | TaskFormatError, int]] = {}
        try:
            dir_fd = os.open(self.where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._files = {}
            return []
        try:
            for task_id in ids:
                try:
                    st = os.stat(f"{task_id}.json", dir_fd=dir_fd, follow_symlinks=False)
                except FileNotFoundError:
                    continue
                signature = file_signature(st)
                known = self._files.get(task_id)
                if known is not None and known[0] == signature:
                    fresh[task_id] = known
                    continue
                try:
                    task: Task | TaskFormatError = task_from_file(read_task_file(self.store.checked_path(task_id))[0],
                                                                  task_id)
                except FileNotFoundError:
                    continue
                except TaskFormatError as exc:
                    task = exc
                fresh[task_id] = (signature, task, st.st_uid)
        finally:
            os.close(dir_fd)
        self._files = fresh
        return [(task_id, parsed) for task_id, (_, parsed, _) in fresh.items()]

    def _profiles(self, db: sqlite3.Connection | None, tasks: list[Task]) -> dict[str, Profile]:
        names = {t.name for t in tasks if t.status == "running"}
        if db is None or not self._has_runs or not names:
            return {}
        try:
            return RunReader(db).profiles(names)
        except sqlite3.Error:
            return {}

    def detail(self, host: str, task_id: str, now: datetime) -> dict[str, Any] | None:
        """One task in full: its record, its card as the chat shows it, its notifications (what was
        delivered where), and its name's past runs. None: no such task file. Its own connection."""
        from task_pulse.errors import BadInput
        from task_pulse.taskfile import check_task_id

        try:
            check_task_id(task_id)
            data, st = read_task_file(self.store.checked_path(task_id))
            task: Task | TaskFormatError = task_from_file(data, task_id)
        except (FileNotFoundError, BadInput):
            return None
        except TaskFormatError as exc:
            task, st = exc, None
        owner = None if st is None or st.st_uid == self._me else owner_name(st.st_uid)
        shown = Shown(task_id, "", task_id, task, owner)
        if isinstance(task, TaskFormatError):
            return {"task": task_record(shown, now, None, self.redact_secrets)}
        notes: list[tuple[Any, ...]] = []
        cards: list[tuple[Any, ...]] = []
        runs: list[Run] = []
        profile = None
        with read_only_db(self.store, timeout=2) as db:
            if db is not None:
                notes = db.execute(SQL.TASK_NOTIFICATIONS, {"low": f"{task_id}:", "high": f"{task_id};",
                                                            "task_id": task_id, "limit": DETAIL_NOTIFICATIONS}
                                   ).fetchall()
                cards = db.execute(SQL.TASK_CARDS, {"task_id": task_id}).fetchall()
                if has_runs(db):
                    reader = RunReader(db)
                    runs, profile = reader.runs_of(task.name, HISTORY_RUNS), reader.profile(task.name)
        return _detail(shown, task, now, self.default_stall, self.lang, (notes, cards, runs, profile),
                       self.redact_secrets)


class SharedSource:
    """Every host's tasks in a shared state db, woken by its LISTEN/NOTIFY."""

    def __init__(self, url: str, default_stall: float, limit: int, lang: str = "zh",
                 redact_secrets: bool = True) -> None:
        from task_pulse.state.shared import shown_url, state_errors

        self.url, self.default_stall, self.limit, self.redact_secrets = url, default_stall, limit, redact_secrets
        self.lang = lang
        self.where = shown_url(url)
        self.errors = (*state_errors(), OSError)
        self._shared: SharedOutbox | None = None
        self._rang = threading.Event()
        self._listening: threading.Event | None = None

    def _connect(self) -> SharedOutbox:
        from task_pulse.state.shared import SharedOutbox

        if self._shared is None:
            self._shared = SharedOutbox(self.url, migrate=False)
        return self._shared

    def close(self) -> None:
        if self._listening is not None:
            self._listening.set()
        if self._shared is not None:
            with contextlib.suppress(*self.errors):
                self._shared.close()
            self._shared = None

    def wait(self, timeout: float, stopping: threading.Event) -> bool:
        if self._listening is None:
            from task_pulse.state.shared import Listener
            from task_pulse.state.sql_postgres import PG

            self._listening = threading.Event()
            listener = Listener(self.url, self._rang.set, PG.LISTEN_TASKS)
            threading.Thread(target=listener.run, args=(self._listening,), name="board-listener", daemon=True).start()
        deadline = time.monotonic() + timeout
        while not stopping.is_set():
            if self._rang.wait(min(POLL_SECONDS * 5, max(0.0, deadline - time.monotonic()))):
                self._rang.clear()
                return True
            if time.monotonic() >= deadline:
                return False
        return False

    def snapshot(self, now: datetime) -> Snapshot:
        try:
            entries, totals, more, hosts, outlooks = all_hosts_entries(self._connect(), now, self.limit,
                                                                       self.default_stall)
        except self.errors:
            self.close_connection()
            raise
        shown: list[Shown] = []
        for key, task in entries:
            host = hosts[key]["host"]
            shown.append(Shown(key, host, key[len(host) + 1:], task))
        unreadable = sum(isinstance(t, TaskFormatError) for _, t in entries)
        return Snapshot(shown, outlooks, {**totals, "unreadable": unreadable}, more,
                        hosts=sorted({hosts[k]["host"] for k in hosts}))

    def close_connection(self) -> None:
        if self._shared is not None:
            with contextlib.suppress(*self.errors):
                self._shared.close()
            self._shared = None

    def detail(self, host: str, task_id: str, now: datetime) -> dict[str, Any] | None:
        from task_pulse.state.shared import SharedOutbox

        shared = SharedOutbox(self.url, migrate=False)
        try:
            found = shared.card_view(task_id, host)
            if found is None:
                return None
            task = found[0]
            notes = shared.task_notifications(host, task_id, DETAIL_NOTIFICATIONS)
            cards = shared.task_cards(host, task_id)
            runs = shared.runs_of(host, task.name, HISTORY_RUNS)
            profile = shared.profiles([(host, task.name)]).get((host, task.name))
        finally:
            shared.close()
        return _detail(Shown(f"{host}/{task_id}", host, task_id, task), task, now, self.default_stall, self.lang,
                       (notes, cards, runs, profile), self.redact_secrets)


def _detail(shown: Shown, task: Task, now: datetime, default_stall: float, lang: str,
            found: tuple[list[tuple[Any, ...]], list[tuple[Any, ...]], list[Run], Profile | None],
            redact_secrets: bool) -> dict[str, Any]:
    """The detail view of one task (see `LocalSource.detail`): `found` is what the state db has of it
    (its notifications, its cards, its name's latest runs and their profile)."""
    from task_pulse.card import render_card
    from task_pulse.history.forecast import Outlook
    from task_pulse.model import stalled_for

    notes, cards, runs, profile = found
    outlook = Outlook.of(profile if task.status == "running" else None, task, now, default_stall)
    card = render_card(task.copy(profile=profile if task.status == "running" else None), now, lang,
                       stalled=stalled_for(task, now, outlook.stall_seconds) is not None,
                       redact_secrets=redact_secrets)
    return {"task": task_record(shown, now, outlook, redact_secrets), "card": card,
            "notifications": [notification_record(n, redact_secrets) for n in notes],
            "cards": [card_record(c, redact_secrets) for c in cards],
            "history": history_record(task.name, runs, profile, redact_secrets)}


Source = LocalSource | SharedSource
