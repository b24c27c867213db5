"""Forwarder: copies this daemon's notifications and task snapshots into the shared state database.

With `--state postgresql://…` the worker still commits everything to the local state db first (the
only place it diffs against), and this thread copies it to the shared one as it comes, oldest first:

* notifications are taken from the local outbox oldest first and marked delivered "shared" once the
  shared db has committed them (no claims: the forwarder is the dir's only deliverer, a local drain
  refuses). A copy that lands twice (the daemon killed between the two commits) is stored once
  there: (host, key) is unique.
* task snapshots follow every write of a `seen` row (its `version`), so `status --all-hosts` and the
  cards that any host's courier renders see each task as its host last announced it.
* finished runs (the history, task_pulse/history) follow as they are recorded, so a card rendered
  by any host's courier says what is left of a task; each host's runs are kept there as its own
  history keeps them (per name and by age).

When the shared db is away, nothing is lost: rows stay in the local outbox (the spool), the
STATUS line says so, and the forwarder reconnects with backoff and sends the spool in order once it
is back. A shared db of a newer schema stops the daemon (exit 1): this code must not write to it.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from task_pulse.errors import ConfigError, TaskPulseError
from task_pulse.masking import redact
from task_pulse.messages import counted
from task_pulse.model import TaskFormatError
from task_pulse.snapshot import compact, to_json
from task_pulse.state.outbox import SHARED_STATE_META, Outbox
from task_pulse.state.shared import SchemaTooNew, SharedOutbox, SharedTask, shown_url, state_errors
from task_pulse.store import TaskStore, expiry_cutoff
from task_pulse.taskfile import task_from_file
from task_pulsed.poked import PokedThread

log = logging.getLogger("task-pulsed")

FORWARD_BATCH = 500  # notifications (and snapshots) per transaction in the shared db
# A copy costs about 0.8 ms of CPU for one notification, 0.16 ms each for ten, 0.1 ms each for a hundred
# (a round trip to the shared db and a local transaction per copy). So in a burst (a copy less than
# BURST_GAP ago) the forwarder lets commits gather for FORWARD_DELAY before the next copy; a lone
# commit is copied at once.
BURST_GAP = 0.25
FORWARD_DELAY = 0.05
FIRST_PAUSE, MAX_PAUSE = 1.0, 30.0  # reconnect backoff
PURGE_EVERY = 3600.0


class Forwarder(PokedThread):
    def __init__(self, store: TaskStore, url: str, host: str, *, keep_days: float = 7,
                 history: tuple[int, float] = (50, 90),
                 on_forwarded: Callable[[], None] | None = None, on_fatal: Callable[[], None] | None = None) -> None:
        super().__init__("task-pulsed-forwarder")
        self.store, self.url, self.host, self.keep_days = store, url, host, keep_days
        self.history_runs, self.history_days = history  # what the history keeps: runs per name, days
        self.on_forwarded = on_forwarded  # rows reached the shared db (wakes this daemon's couriers)
        self.on_fatal = on_fatal  # the daemon must stop (a schema newer than ours)
        self.problem: str | None = None  # why the daemon is degraded (STATUS), None while it is not
        self.fatal: BaseException | None = None
        self.forwarded = 0
        self._purged_at = 0.0
        self._copied_at = 0.0  # monotonic time of the last copy

    def run(self) -> None:
        errors = state_errors()
        local: Outbox | None = None
        shared: SharedOutbox | None = None
        pause = FIRST_PAUSE
        down_since: float | None = None
        try:
            while not self._stopping.is_set():
                try:
                    if local is None:
                        local = Outbox.for_store(self.store, busy_timeout=5.0)
                        # A local `task-pulse drain` must not take what belongs to the shared db (cli/reader.py).
                        local.set_meta(SHARED_STATE_META, shown_url(self.url))
                    if shared is None:
                        shared = SharedOutbox(self.url)
                        log.info("shared state database %s: forwarding as host %r", shown_url(self.url), self.host)
                    if time.monotonic() - self._copied_at < BURST_GAP:
                        self._stopping.wait(FORWARD_DELAY)
                    self._poked.clear()
                    self._copy(local, shared)
                    self._copied_at = time.monotonic()
                    self._purge(shared)
                    if down_since is not None:
                        log.info("shared state database reachable again after %.0f s; the spool is sent",
                                 time.monotonic() - down_since)
                        down_since, self.problem = None, None
                    pause = FIRST_PAUSE
                    if not self._stopping.is_set():  # see PokedThread
                        self._poked.wait(max(1.0, PURGE_EVERY - (time.monotonic() - self._purged_at)))
                except SchemaTooNew as exc:
                    self.fatal = exc
                    log.error("%s", exc)
                    if self.on_fatal is not None:
                        self.on_fatal()
                    return
                except errors as exc:  # the shared db is away or refuses
                    if shared is not None:
                        with contextlib.suppress(*errors):
                            shared.close()
                        shared = None
                    if down_since is None:
                        down_since = time.monotonic()
                        log.warning("shared state database %s unreachable (%s): notifications are kept in the "
                                    "local outbox and sent once it is back", shown_url(self.url),
                                    _one_line(exc))
                    self.problem = (f"degraded: the shared state database is unreachable ({_one_line(exc)}); "
                                    "notifications are spooled locally")
                    self._stopping.wait(pause)
                    pause = min(pause * 2, MAX_PAUSE)
                except (sqlite3.Error, OSError, TaskPulseError) as exc:  # the local db: busy, or its dir unsafe
                    log.warning("forwarding paused: local state database: %s", exc)
                    self._stopping.wait(pause)
                    pause = min(pause * 2, MAX_PAUSE)
        finally:
            if local is not None:
                local.close()
            if shared is not None:
                with contextlib.suppress(*errors):
                    shared.close()

    def _copy(self, local: Outbox, shared: SharedOutbox) -> None:
        """Everything not yet in the shared db, in batches, oldest first."""
        while not self._stopping.is_set():
            rows = local.unforwarded(FORWARD_BATCH)
            # The snapshots written since the last copy, these rows' tasks' among them (a card rendered for
            # them then shows at least what they announce; a row's own write bumped its task's version).
            tasks = {t[0]: _shared_task(t) for t in local.unshared(FORWARD_BATCH)}
            if missing := {r.task_id for r in rows} - tasks.keys():
                tasks.update((t[0], _shared_task(t)) for t in local.shared_rows(missing))
            runs = local.unshared_runs(FORWARD_BATCH)
            if not rows and not tasks and not runs:
                return
            added = shared.forward(self.host, rows, tasks.values(), runs)
            # Killed here, the next start copies these again: the shared db stores each (host, key) once.
            local.forwarded([r.seq for r in rows], [(t.task_id, t.version) for t in tasks.values()],
                            [r.key for r in runs])
            self.forwarded += added
            if added and self.on_forwarded is not None:
                self.on_forwarded()

    def _purge(self, shared: SharedOutbox) -> None:
        """Every hour: what every daemon's cleanup removes from its own dir, the shared db forgets too."""
        if time.monotonic() - self._purged_at < PURGE_EVERY:
            return
        self._purged_at = time.monotonic()
        notes, tasks = shared.purge(expiry_cutoff(datetime.now(UTC), self.keep_days).timestamp())
        runs = shared.purge_runs(self.host, expiry_cutoff(datetime.now(UTC), self.history_days).timestamp(),
                                 self.history_runs)
        if notes or tasks or runs:
            log.info("shared state database: %s, %s and %s purged", counted(notes, "delivered notification"),
                     counted(tasks, "old task"), counted(runs, "old run"))


def _shared_task(row: tuple[Any, ...]) -> SharedTask:
    """A `seen` row as the shared db gets it: its snapshot as a chat would show it, masked whatever this daemon's
    --redact (every host with the URL reads it), the compact form (snapshot.py); a first start's file not read
    yet, or no task, as no text at all."""
    task_id, text = row[0], row[1]
    try:
        shown = to_json(compact(task_from_file(text, task_id), redact_secrets=True))
    except TaskFormatError:
        shown = ""
    return SharedTask(task_id, shown, *row[2:])


def check_shared_schema(url: str, host: str) -> None:
    """At start: set the shared db's schema up, or SchemaTooNew (the daemon exits 1 before READY), or ConfigError
    when its role may not write this host's rows (exit 2). A db that cannot be reached now is no reason not to
    start: the forwarder spools until it can."""
    try:
        shared = SharedOutbox(url, connect_timeout=3.0)
        try:
            shared.check_host(host)
        finally:
            shared.close()
    except (SchemaTooNew, ConfigError):
        raise
    except (*state_errors(), OSError, TaskPulseError) as exc:
        log.warning("shared state database %s not reachable at start (%s): notifications are spooled locally "
                    "until it is", shown_url(url), _one_line(exc))


def _one_line(exc: BaseException) -> str:
    """The error on one line, capped, anything that looks like a secret masked."""
    return redact(" ".join(str(exc).split())[:300] or type(exc).__name__)
