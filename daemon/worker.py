"""The worker: the one thread that reads task files, diffs them and writes the state database.

Everything else (the watcher, the scheduler, signal handlers) only puts work in the `WorkQueue`.
Work is always "look at this task file now", never "this event happened": the worker reads the
file as it is when it gets there, so lost, duplicated or reordered events cannot make it wrong, and
a rescan is just "look at every file".
"""

from __future__ import annotations

import hashlib
import logging
import os
import sqlite3
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from task_pulse.history.forecast import Profile
from task_pulse.messages import counted, shown_id
from task_pulse.model import Task, TaskFormatError
from task_pulse.records import Notification, Seen
from task_pulse.snapshot import compact, owned
from task_pulse.state.outbox import SHARED_STATE_META, Outbox
from task_pulse.store import NotRemovable, TaskStore, expiry_cutoff
from task_pulse.taskfile import HardLinked, file_signature, misnamed_reason, read_task_file, task_from_file
from task_pulsed.differ import invalid_notification, invalid_summary, news_summary
from task_pulsed.flood import InvalidFlood, NewsFlood
from task_pulsed.tracker import Policy, Update, flush_due, flush_held, track
from task_pulsed.watcher import OPEN_WRITE_GRACE, OpenWrites
from task_pulsed.workqueue import ADOPT, CLEANUP, IDLE, NEWS_SUMMARY, RESCAN, UNREADABLE_SUMMARY, WorkQueue

if TYPE_CHECKING:
    from task_pulsed.checkpointer import Checkpointer
    from task_pulsed.scheduler import Timers

log = logging.getLogger("task-pulsed")

# A file that fails to parse while no writer has it open (see `OpenWrites`) is read once more after
# this long before it counts as invalid: the event that marks a new in-place write may still be on
# its way from the kernel.
SETTLE_SECONDS = 0.25
# Files processed per transaction during a scan (each file's snapshot and notifications stay atomic).
SCAN_BATCH = 500
# The worker waits this long for the state db's write lock per attempt (and at most a quarter of its
# heartbeat interval, so the watchdog is fed between attempts), then retries after a pause doubling up
# to BUSY_MAX_PAUSE, feeding the watchdog meanwhile (see `_patiently`).
BUSY_TIMEOUT = 2.0
BUSY_FIRST_PAUSE = 0.5
BUSY_MAX_PAUSE = 5.0
# A task file bigger than this goes to the queue's heavy lane (parsing, diffing and storing 1 MB
# takes tens of ms: see WorkQueue).
HEAVY_BYTES = 64 * 1024
# Group commit: items already waiting when one is taken are handled in the same transaction, up to
# this many and for this long, then committed together (each file's snapshot and notifications stay
# atomic, in a savepoint). Idle, a write is committed alone and at once; under a burst one commit
# serves many writes, and the first of them waits GROUP_SECONDS at most for it.
GROUP_MAX = 64
GROUP_SECONDS = 0.005
# Files a first start stored unread that the background pass adopts per work item (one transaction):
# small enough that a change waiting behind it waits a few ms.
ADOPT_BATCH = 100
# A co-user's tasks whose files are gone are kept (a file put back is no news) within this many bytes of theirs:
# past it the oldest are forgotten (writing and deleting big files must not fill the user's disk).
OWNER_GONE_BYTES = 4 * 1024 * 1024
# Held news stays claimed this long after its window should have been summed up (a summary a stop cut short is
# made at the next start; a drain after that takes the rows one by one).
HELD_GRACE = 3600.0
# Profiles (what the history of a task name says; None: it has none) kept in memory, the most recently
# used names: one is learned again only when a run of its name ends. Bounded: one-off task names pile
# up in a history kept for months.
PROFILE_CACHE = 1024
_ALONE = (RESCAN, CLEANUP, ADOPT)  # never part of a group commit (see `Worker._handle_group`)


@dataclass
class WorkerOptions:
    policy: Policy = field(default_factory=Policy)
    announce_existing: bool = False
    keep_days: float = 7
    history_runs: int = 50  # finished runs kept per task name
    history_days: float = 90  # and for at most this long


class Worker(threading.Thread):
    """Owns the Outbox connection. Start it, wait for `ready`, then feed it with `queue.put`."""

    def __init__(self, store: TaskStore, queue: WorkQueue, timers: Timers, options: WorkerOptions,
                 heartbeat: Callable[[dict[str, int], str | None], None] | None = None,
                 heartbeat_every: float | None = None,
                 on_new: Callable[[], None] | None = None, open_writes: OpenWrites | None = None,
                 checkpointer: Checkpointer | None = None, on_commit: Callable[[], None] | None = None) -> None:
        super().__init__(name="task-pulsed-worker", daemon=True)
        # Files a writer has open: not judged until closed. The watcher marks them; a worker fed by
        # hand (tests, a scan alone) sees none open.
        self.open_writes = open_writes or OpenWrites()
        self.store, self.queue, self.timers, self.options = store, queue, timers, options
        self.policy = options.policy
        self.flood = InvalidFlood(self.policy.invalid_burst, self.policy.invalid_window)
        self.news = NewsFlood(self.policy.news_burst, self.policy.news_window)
        self._refused: dict[str, str] = {}  # task id -> why cleanup may not remove its file (told once, not retried)
        # Called from this thread's loop with fresh stats at least every `heartbeat_every` seconds:
        # the systemd watchdog ping, so that a worker stuck anywhere stops the pings.
        self.heartbeat, self.heartbeat_every = heartbeat, heartbeat_every
        self.on_new = on_new  # told after a commit that queued something (wakes the sink)
        self._queued_new = False  # something was queued since `on_new` was last told
        self.checkpointer = checkpointer  # told after commits (copies the WAL back, off this thread)
        self.on_commit = on_commit  # told after any commit that changed something (the forwarder)
        self._last_beat = 0.0
        self.ready = threading.Event()  # set once `started`, or once it never will be
        self.started = False
        self.error: BaseException | None = None
        self.outbox: Outbox | None = None
        self.stats = {"tasks": 0, "stalled": 0, "pending": 0}
        self.problem: str | None = None  # why the daemon is degraded (STATUS), None while it is not
        self._stats_version: tuple[int, int] | None = None  # (our changes, others' commits) when last counted
        self._profiles: OrderedDict[str, Profile | None] = OrderedDict()

    # -- thread body -------------------------------------------------------------------------------

    def run(self) -> None:
        try:
            if not self._patiently(self._start):
                return  # stopped while the state db was busy
            self.started = True
            self.ready.set()
            changes_seen = self._changes()
            if self.checkpointer is not None:
                # From now on writes are waited for: the checkpointer's own connection checkpoints. (The
                # start's scan keeps SQLite's own checkpoints: no one waits on it, and a first scan of
                # 100,000 files would otherwise pile up in the WAL, which the checkpointer never
                # catches up with while the worker writes on.)
                assert self.outbox is not None
                self.outbox.checkpoint_by_hand()
                self.checkpointer.poke()
            if self.on_commit is not None:
                self.on_commit()  # what the start's scan wrote
            while (work := self.queue.get(self.heartbeat_every)) is not None:
                if work[0] != IDLE and not self._patiently(lambda: self._handle_group(work)):  # noqa: B023
                    return
                self._tell_new()
                self._beat()
                if (changes := self._changes()) != changes_seen:
                    changes_seen = changes
                    if self.checkpointer is not None:
                        self.checkpointer.poke()
                    if self.on_commit is not None:
                        self.on_commit()
        except (sqlite3.Error, OSError) as exc:  # the state db or the dir cannot be used (read-only, full disk)
            self.error = exc
            where = getattr(exc, "filename", None) or self.store.pulse_dir / "state.db"
            log.error("cannot use %s: %s", where, getattr(exc, "strerror", None) or exc)
        except BaseException as exc:  # reported by the main thread, which exits 1
            self.error = exc
            log.exception("worker stopped: %s", exc)
        finally:
            if self.outbox is not None:
                self.outbox.close()
            self.ready.set()

    def _handle_group(self, first: tuple[Hashable, int]) -> None:
        """`first`, then whatever else is ready (see GROUP_MAX), in one transaction. A rescan or a
        cleanup runs alone: it commits as it goes, a long scan in many transactions."""
        assert self.outbox is not None
        if first[0] in _ALONE:
            self._handle_one(*first)
            return
        joined: list[tuple[Hashable, int]] = []  # taken from the queue for this group, after `first`
        try:
            with self.outbox.batch():
                self._handle_one(*first)
                until = time.monotonic() + GROUP_SECONDS
                while len(joined) < GROUP_MAX - 1 and time.monotonic() < until \
                        and (work := self.queue.get_ready()) is not None:
                    if work[0] in _ALONE:
                        self.queue.put(*work)  # its turn comes right after this commit
                        break
                    joined.append(work)
                    self._handle_one(*work)
        except BaseException:
            # The whole group is undone (a busy db: `_patiently` runs `first` again): the others go back
            # in the queue, or their changes would wait for the next rescan.
            for item, attempt in joined:
                self.queue.put(item, attempt)
            raise

    def _handle_one(self, item: Hashable, attempt: int) -> None:
        try:
            self.handle(item, attempt)
        except sqlite3.Error:
            raise  # the state db itself (disk full, read-only: stop, clearly; busy: wait, see `_patiently`)
        except Exception:
            # One odd file must not take the daemon down with it; the next change retries it.
            log.exception("%s: skipped after an unexpected error", shown_id(str(item)))

    def _tell_new(self) -> None:
        """Wake the sink for what the last commit queued (never before: it would find nothing yet)."""
        if self._queued_new:
            self._queued_new = False
            if self.on_new is not None:
                self.on_new()

    def _start(self) -> None:
        if self.outbox is None:
            # Each wait for the lock short enough for the watchdog to be fed between them.
            self.outbox = Outbox.for_store(self.store, busy_timeout=min(BUSY_TIMEOUT, (self.heartbeat_every or 60) / 4))
        # One daemon per tasks dir: claims its couriers held before a crash or a restart died with them.
        if released := self.outbox.release_claims("sink:"):
            log.info("%s claimed by a stopped daemon's sink free again", counted(released, "notification"))
        self.outbox.set_meta(SHARED_STATE_META, "")  # until this start's forwarder (if any) says where to
        adopt = self.outbox.get_meta("started_once") is None and not self.options.announce_existing
        self.rescan(adopt=adopt)
        self.outbox.set_meta("started_once", datetime.now(UTC).isoformat())
        self._restore_timers()
        self._refresh_stats()
        if self.outbox.unadopted(1):
            self.queue.put(ADOPT)  # after READY, between changes (a first start, or one cut short)
        for window_id in self.outbox.held_windows():  # a flood window whose summary a stop cut short
            self.queue.put((NEWS_SUMMARY[0], window_id))

    def _patiently(self, work: Callable[[], None]) -> bool:
        """Run `work`, again and again while the state db is busy (another process holds its write
        lock: a backup, a drain stuck mid-claim, sqlite3 by hand), with the watchdog fed and STATUS
        saying so. Never fatal. False if the daemon is stopped meanwhile (the work is redone at the
        next start: files by the scan, timers from the db)."""
        pause = BUSY_FIRST_PAUSE
        while True:
            try:
                work()
            except sqlite3.OperationalError as exc:
                if not _is_busy(exc):
                    raise
                if self.problem is None:
                    log.warning("state database is busy (%s): another process holds its write lock; the work it "
                                "blocks waits and is retried until it is free", exc)
                self.problem = "degraded: the state database is busy (another process holds its write lock)"
                retry_at = time.monotonic() + pause
                while (left := retry_at - time.monotonic()) > 0:  # the watchdog fed all along
                    self._beat(refresh=False)
                    if self.queue.wait_closed(min(left, self.heartbeat_every or left)):
                        return False
                pause = min(pause * 2, BUSY_MAX_PAUSE)
                continue
            if self.problem is not None:
                log.info("state database usable again")
                self.problem = None
                self._beat(refresh=False, now=True)
            return True

    def _changes(self) -> int:
        return self.outbox.db.total_changes if self.outbox is not None else 0

    def _restore_timers(self) -> None:
        """Timers do not survive a restart; the database remembers when each one was due."""
        assert self.outbox is not None
        threshold = repr(self.policy.default_stall)
        stall = self.outbox.stall_timers()
        if self.outbox.get_meta("default_stall") not in (None, threshold):
            for task_id, _ in stall:
                self.process(task_id, force=True)  # the stored deadline used the old default: derive it again
        else:
            self.timers.set_many("stall", stall)
        self.timers.set_many("overdue", self.outbox.overdue_timers())
        interval = self.policy.progress_interval
        self.timers.set_many("flush", [(task_id, at + interval) for task_id, at in self.outbox.held_progress()
                                       if at is not None])
        self.outbox.set_meta("default_stall", threshold)

    def handle(self, item: Hashable, attempt: int) -> None:
        if item == RESCAN:
            self.rescan()
        elif item == CLEANUP:
            self.cleanup()
        elif item == ADOPT:
            self._adopt_some()
        elif item == UNREADABLE_SUMMARY:
            self._summarize_unreadable()
        elif isinstance(item, tuple) and item[0] == NEWS_SUMMARY[0]:
            self._summarize_news(item[1])
        elif isinstance(item, tuple) and item[0] == "misnamed":
            self._misnamed(item[1])
        elif isinstance(item, tuple) and item[0] == "file":
            self.process(item[1], attempt)
        elif isinstance(item, tuple) and item[0] in ("stall", "overdue"):
            # A stall or overdue timer just re-reads the file: `track` announces what is real.
            self.process(item[1], attempt, force=True)
        elif isinstance(item, tuple) and item[0] == "flush":
            assert self.outbox is not None
            seen = self.outbox.seen(item[1])
            if seen is not None:
                self._apply(flush_held(seen, datetime.now(UTC), self.policy, self._profile(seen.snapshot)))
        elif item != IDLE:
            raise ValueError(f"unknown work item {item!r}")

    def _refresh_stats(self) -> None:
        """Count again, unless nothing was written since the last count, by us or by anyone (a sink, a
        drain): at 100,000 tasks the counts are a scan of the tables, and idle must stay idle."""
        assert self.outbox is not None
        version = (self._changes(), self.outbox.data_version())
        if version == self._stats_version:
            return
        self.stats = {"tasks": self.outbox.count_seen(), "stalled": self.outbox.count_stalled(),
                      "pending": self.outbox.count_pending()}
        self._stats_version = version

    def _beat(self, refresh: bool = True, now: bool = False) -> None:
        """The heartbeat, if one is due (`now`: at once). `refresh`: count again (not while the db is busy)."""
        if self.heartbeat is None or self.heartbeat_every is None:
            return
        at = time.monotonic()
        if now or at - self._last_beat >= self.heartbeat_every:
            self._last_beat = at
            if refresh:
                self._refresh_stats()
            self.heartbeat(self.stats, self.problem)

    # -- the work ----------------------------------------------------------------------------------

    def rescan(self, adopt: bool = False) -> None:
        """Look at every task file whose signature changed, and forget tasks whose file is gone.

        With `adopt` (the very first start) the files are stored as they are, unread (see
        `Outbox.store_unread`): taken as announced, they are parsed later, after READY."""
        assert self.outbox is not None
        started = time.monotonic()
        known = self.outbox.seen_signatures()
        # A first start reads every file anyway (its fstat gives the signature): no lstat first.
        changed, misnamed, on_disk = self.store.changed_files(known, signatures=not adopt or bool(known))
        gone = known  # what is left: known, and no longer on disk
        for name in sorted(misnamed):
            self._misnamed(name)
        changed.sort()
        for start in range(0, len(changed), SCAN_BATCH):
            with self.outbox.batch():
                if adopt:
                    self._store_unread(changed[start:start + SCAN_BATCH])
                else:
                    for task_id in changed[start:start + SCAN_BATCH]:
                        self.process(task_id)
        for task_id in gone:
            self.process(task_id)
        log.info("scan: %d task files, %d read, %d forgotten, %.0f ms%s", on_disk, len(changed),
                 len(gone), (time.monotonic() - started) * 1000,
                 " (existing tasks adopted silently)" if adopt and on_disk else "")

    def _store_unread(self, task_ids: list[str]) -> None:
        """The first start's files, stored as read (see `Outbox.store_unread`). A file that cannot be
        read, or is not UTF-8 text, takes the ordinary way, which says why."""
        assert self.outbox is not None
        rows, at = [], time.time()
        for task_id in task_ids:
            try:
                data, st = read_task_file(self.store.checked_path(task_id))
                text = data.decode("utf-8")
            except FileNotFoundError:
                continue
            except (TaskFormatError, UnicodeDecodeError):
                self.process(task_id, adopt=True)
                continue
            if len(data) > HEAVY_BYTES:  # read now, kept compact: never a big file's text until it is adopted
                self.queue.mark_heavy(("file", task_id), True)
                self.process(task_id, adopt=True)
                continue
            rows.append((task_id, text, file_signature(st), hashlib.sha1(data).hexdigest(), st.st_uid))
        self.outbox.store_unread(rows, at)

    def _adopt_some(self) -> None:
        """Adopt a batch of the files a first start stored unread; again later while any are left."""
        assert self.outbox is not None
        task_ids = self.outbox.unadopted(ADOPT_BATCH)
        with self.outbox.batch():
            for task_id in task_ids:
                # The stored text is all adoption needs: a file changed since has an event (or a rescan)
                # of its own coming. Text that was no task is dropped: then the file is looked at now.
                if self._seen(task_id) is None:
                    self.process(task_id)
        if len(task_ids) == ADOPT_BATCH:
            self.queue.put(ADOPT)  # behind whatever came meanwhile
        else:
            log.info("every task file of the first start adopted")

    def _seen(self, task_id: str) -> Seen | None:
        """What was announced about the task. A first start's unread text is adopted here, as it was
        when it was read; text that was no task then (half written, broken) is forgotten, and the
        file is looked at as a new one."""
        assert self.outbox is not None
        try:
            seen = self.outbox.seen(task_id)
        except TaskFormatError:
            self.outbox.record(task_id, None, [])
            return None
        if seen is None or seen.adopt_at is None:
            return seen
        kept = self._as_kept(seen.snapshot, seen.owner)
        update = track(None, kept, datetime.fromtimestamp(seen.adopt_at, UTC), self.policy, adopt=True,
                       profile=self._profile(kept))
        adopted = update.seen
        adopted.file_sig, adopted.digest, adopted.owner = seen.file_sig, seen.digest, seen.owner
        self.outbox.adopted(adopted, update.run, self.options.history_runs)
        self._ran(update)
        self._set_timers(adopted)
        return adopted

    def _profile(self, task: Task) -> Profile | None:
        """What the history of runs of the task's name says (None: nothing). Only a running task has a use
        for it (its stall threshold, its limits, its ETA)."""
        if task.status != "running":
            return None
        name = task.name
        if name in self._profiles:
            self._profiles.move_to_end(name)
            return self._profiles[name]
        assert self.outbox is not None
        profile = self.outbox.runs.profile(name)
        self._profiles[name] = profile = profile if profile.runs or profile.steps else None
        if len(self._profiles) > PROFILE_CACHE:
            self._profiles.popitem(last=False)
        return profile

    def _ran(self, update: Update) -> None:
        """A run of the task's name was recorded: its profile is to be learned again."""
        if update.run is not None:
            self._profiles.pop(update.run.name, None)

    def process(self, task_id: str, attempt: int = 0, adopt: bool = False, force: bool = False) -> None:
        """Bring the announced state of one task up to date with its file.

        Bytes already diffed are skipped (a burst of events for one write), unless `force`: the
        stall check must run on unchanged content, because only time has moved.
        """
        assert self.outbox is not None
        seen = self._seen(task_id)
        path = self.store.checked_path(task_id)
        read_started = time.monotonic()
        try:
            data, st = read_task_file(path)
        except FileNotFoundError:
            self.open_writes.closed(task_id)
            self.queue.mark_heavy(("file", task_id), False)
            if seen is not None and seen.gone_at is None:
                self.outbox.mark_gone(task_id, time.time())
                self._stop_timers(task_id)
                log.info("%s: file removed", shown_id(task_id))
                if seen.owner is not None and seen.owner != os.geteuid():
                    self.outbox.trim_gone(seen.owner, OWNER_GONE_BYTES)
            return
        except HardLinked as exc:
            if attempt == 0:  # a writer's create links its temp file in, then unlinks it: look again
                self.queue.put(("file", task_id), attempt=1, delay=SETTLE_SECONDS)
            else:
                self._invalid(task_id, seen, str(exc), None)
            return
        except TaskFormatError as exc:
            self._invalid(task_id, seen, str(exc), None)
            return
        self.queue.mark_heavy(("file", task_id), len(data) > HEAVY_BYTES)
        sig, digest = file_signature(st), hashlib.sha1(data).hexdigest()
        if not force and seen is not None and seen.digest == digest:
            return
        try:
            task = task_from_file(data, task_id)
        except TaskFormatError as exc:
            writing = self.open_writes.open_for(task_id)
            if writing is not None and writing < OPEN_WRITE_GRACE:
                # Half written: its writer's close-write brings it back; if none comes, this look does.
                self.queue.put(("file", task_id), attempt=1, delay=OPEN_WRITE_GRACE - writing + SETTLE_SECONDS)
                return
            if attempt == 0:
                self.queue.put(("file", task_id), attempt=1, delay=SETTLE_SECONDS)
            else:
                self._invalid(task_id, seen, str(exc), sig)
            return
        self.open_writes.read_whole(task_id, read_started)
        try:
            task = self._as_kept(task, st.st_uid)
            update = track(seen, task, datetime.now(UTC), self.policy, adopt=adopt, profile=self._profile(task))
            update.seen.file_sig, update.seen.digest, update.seen.owner = sig, digest, st.st_uid
            self._apply(update)
        except sqlite3.Error:
            raise  # the database, not this file
        except Exception as exc:  # noqa: BLE001 - a file we cannot handle is reported, never fatal
            log.exception("%s: cannot be processed", shown_id(task_id))
            self._invalid(task_id, seen, f"cannot be processed ({type(exc).__name__}: {exc})", sig)

    def cleanup(self) -> None:
        """Remove expired finished tasks and old delivered notifications.

        Candidates come from the `seen` table, not from reading every file; each is then re-checked
        and removed by `TaskStore.remove_if_expired`, the code `task-pulse cleanup` uses.
        """
        assert self.outbox is not None
        cutoff = expiry_cutoff(datetime.now(UTC), self.options.keep_days)
        removed = []
        for task_id in self.outbox.ended_before(cutoff.timestamp()):
            if task_id in self._refused:
                continue  # told once: its file is not ours to remove (a co-user's, in a sticky dir)
            # Never wait for a task's lock here: whoever holds it would stop every other task (next round).
            # A file already gone was removed by an earlier try that the busy db cut short.
            try:
                gone = self.store.remove_if_expired(task_id, cutoff, lock_timeout=0) or \
                    not os.path.lexists(self.store.path_for(task_id))
            except NotRemovable as exc:
                self._refused[task_id] = str(exc)
                log.info("cleanup: %s: %s; left as it is", shown_id(task_id), exc)
                continue
            if gone:
                self.outbox.record(task_id, None, [])  # removed for good: nothing to keep for a return
                self._stop_timers(task_id)
                removed.append(task_id)
        self.outbox.purge_gone(cutoff.timestamp())
        if forgotten := self.outbox.purge_runs(expiry_cutoff(datetime.now(UTC), self.options.history_days).timestamp()):
            self._profiles.clear()
            log.info("cleanup: %d runs older than %g days forgotten", forgotten, self.options.history_days)
        purged = self.outbox.purge_delivered(cutoff.timestamp())
        self.store.sweep_locks()  # lock files of tasks deleted by hand, too
        if removed or purged:
            log.info("cleanup: %s removed, %s purged", counted(len(removed), "finished task"),
                     counted(purged, "delivered notification"))
        if freed := self.outbox.reclaim():
            log.info("cleanup: %s of the state db given back to the disk", counted(freed, "free page"))

    def _stop_timers(self, task_id: str) -> None:
        self.timers.set("stall", task_id, None)
        self.timers.set("flush", task_id, None)
        self.timers.set("overdue", task_id, None)

    def _misnamed(self, name: str) -> None:
        """A `*.json` entry whose name cannot be a task id: reported once, under an id of its own."""
        reason = misnamed_reason(name)
        if reason is None or not os.path.lexists(self.store.root / name):
            return
        shown = os.fsencode(name).decode("utf-8", "replace")  # not UTF-8: shown with U+FFFD
        pseudo_id = ".misnamed-" + hashlib.sha1(os.fsencode(name)).hexdigest()[:16]  # dotted: never a task's
        self._invalid(pseudo_id, None, reason, None, file_name=shown)

    def _invalid(self, task_id: str, seen: Seen | None, reason: str, sig: str | None,
                 file_name: str | None = None) -> None:
        """Report an unreadable file once per spell (until it is readable again); keep the last good
        snapshot. Past the flood limit the notice waits for the window's summary, and nothing is
        stored: a restart before the summary reads the file again."""
        assert self.outbox is not None
        note = invalid_notification(task_id, file_name or f"{task_id}.json", reason, seen.digest if seen else None,
                                    self.policy.lang, self.policy.redact_secrets)
        if self.outbox.has_key(note.key):
            if seen is not None and sig is not None and seen.file_sig != sig:  # told: only remember this content
                seen.file_sig = sig
                self.outbox.record(task_id, seen, [])
            return
        if not self.flood.may_tell(time.monotonic()):
            due = self.flood.hold(note)
            if due is not None:
                self.queue.put(UNREADABLE_SUMMARY, delay=max(0.0, due - time.monotonic()))
            return
        if seen is not None and sig is not None:
            seen.file_sig = sig
        inserted = self.outbox.record(task_id, seen, [note])
        if inserted:
            self.flood.told()
        self._log_new(inserted, [note])

    def _summarize_unreadable(self) -> None:
        assert self.outbox is not None
        held = self.flood.held()
        keep = False
        try:
            if held:
                note = invalid_summary([n.data["file"] for n in held], f"{time.time():.3f}",
                                       self.policy.invalid_burst, self.policy.invalid_window, self.policy.lang,
                                       self.policy.redact_secrets)
                self._log_new(self.outbox.record_summary(note, held), [note])
        except sqlite3.OperationalError as exc:
            keep = _is_busy(exc)  # retried by `_patiently`, with what the window held
            raise
        finally:
            if not keep:  # never a window stuck open: later files would wait for a summary that never comes
                self.flood.close()

    def _apply(self, update: Update) -> None:
        """Record the update in one transaction, then move the task's timers to where it says. News past the
        flood limit (see NewsFlood) is held for the window's summary: every notification of a run whose start
        was held, and stall alarms past the window's count."""
        assert self.outbox is not None
        seen, told, held = update.seen, update.notifications, []
        now = time.monotonic()
        starts = any(n.kind == "started" for n in told)  # a new run: a new card, or its news in summaries only
        if starts:
            seen.quiet_run = None if self.news.may_tell("task", now) else seen.run
        if seen.quiet_run is not None and seen.quiet_run == seen.run:
            told, held = [], told
        elif any(n.kind == "stalled" for n in told) and not self.news.may_tell("stall", now):
            held = [n for n in told if n.kind == "stalled"]
            told = [n for n in told if n.kind != "stalled"]
        if held:
            window_id, due, first = self.news.hold(time.monotonic())
            if first:
                self.queue.put((NEWS_SUMMARY[0], window_id), delay=max(0.0, due - time.monotonic()))
            count = self.outbox.record(seen.task_id, seen, told, update.run, self.options.history_runs,
                                       held=held, held_by=window_id,
                                       held_until=time.time() + (due - time.monotonic()) + HELD_GRACE)
        else:
            count = self.outbox.record(seen.task_id, seen, told, update.run, self.options.history_runs)
        if starts and seen.quiet_run is None:
            self.news.told("task")
        if any(n.kind == "stalled" for n in told):
            self.news.told("stall")
        self._log_new(count, [*told, *held])
        self._ran(update)
        self._set_timers(seen)

    def _summarize_news(self, window_id: str) -> None:
        """What a flood window held, in one message (its notifications delivered by it)."""
        assert self.outbox is not None
        held = self.outbox.held(window_id)
        if held:
            note = news_summary(held, window_id, self.policy.news_window, self.policy.lang, self.policy.redact_secrets)
            self._log_new(self.outbox.record_held_summary(note, window_id), [note])
        self.news.close(window_id)

    def _as_kept(self, task: Task, owner: int | None) -> Task:
        """A task as the daemon diffs and stores it: its owner in its name if it is not the user's own, every
        text as the chat shows it (snapshot.py)."""
        if owner is not None:
            task = owned(task, owner)
        return compact(task, redact_secrets=self.policy.redact_secrets)

    def _set_timers(self, seen: Seen) -> None:
        self.timers.set("stall", seen.task_id, seen.stall_at)
        self.timers.set("flush", seen.task_id, flush_due(seen, self.policy))
        self.timers.set("overdue", seen.task_id, seen.overdue_at)

    def _log_new(self, count: int, notifications: list[Notification]) -> None:
        if count:
            for n in notifications:
                log.info("%s: %s %s", shown_id(n.task_id), n.kind, n.text.replace("\n", " | "))
            self._queued_new = True


def _is_busy(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY: another connection has the lock, nothing is wrong with the db itself (SQLITE_LOCKED
    is a conflict within one connection, which waiting does not end)."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY
