"""Timers: the stall and flush deadlines of every task, and APScheduler to wake us for the earliest.

APScheduler 3's BackgroundScheduler (in UTC) keeps time, but not one job per task: a job costs about
a kilobyte and a quarter of a millisecond to add, which at 100,000 running tasks is most of a start.
The deadlines live here instead, in a dict (the current one per timer) and a heap (by time, with
stale entries skipped when they come up); APScheduler holds a single date job, moved whenever the
earliest deadline changes, beside the interval jobs for the rescan and cleanup.

Nothing here touches the database or a task file: a deadline that comes puts ("stall", id) or
("flush", id) in the WorkQueue, and the worker does the work. UTC is explicit because tzlocal cannot
always find the zone in containers, and every deadline here is an absolute instant anyway.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.background import BackgroundScheduler

from task_pulsed.workqueue import CLEANUP, RESCAN, WorkQueue

_WAKE_JOB = "deadlines"


class Timers:
    def __init__(self, queue: WorkQueue, *, rescan_seconds: float, cleanup_seconds: float) -> None:
        self.queue = queue
        self.rescan_seconds, self.cleanup_seconds = rescan_seconds, cleanup_seconds
        self._lock = threading.Lock()  # `set` runs in the worker, `_fire` in the scheduler's thread
        self._due: dict[tuple[str, str], float] = {}  # (kind, task id) -> unix time
        self._heap: list[tuple[float, str, str]] = []  # (unix time, kind, task id); may hold stale entries
        self._wake_at: float | None = None  # when the one date job runs, None when there is none
        # One thread is enough: a job is a queue.put.
        self.scheduler = BackgroundScheduler(timezone=UTC, executors={"default": {"type": "threadpool",
                                                                                 "max_workers": 1}})

    def start(self) -> None:
        self.scheduler.start()
        now = datetime.now(UTC)
        self.scheduler.add_job(self.queue.put, "interval", args=[RESCAN], seconds=self.rescan_seconds,
                               id="rescan", next_run_time=now + timedelta(seconds=self.rescan_seconds))
        self.scheduler.add_job(self.queue.put, "interval", args=[CLEANUP], seconds=self.cleanup_seconds,
                               id="cleanup", next_run_time=now + timedelta(seconds=self.cleanup_seconds))

    def shutdown(self) -> None:
        if self.scheduler.running:
            self.scheduler.shutdown(wait=False)

    def __len__(self) -> int:
        return len(self._due)

    def set(self, kind: str, task_id: str, at: float | None) -> None:
        """Run (kind, task_id) through the queue at unix time `at`; None removes the timer."""
        key = (kind, task_id)
        with self._lock:
            if at is None:
                self._due.pop(key, None)  # its heap entry is skipped when it comes up
                return
            if self._due.get(key) == at:
                return
            self._due[key] = at
            heapq.heappush(self._heap, (at, kind, task_id))
            if len(self._heap) > 2 * len(self._due) + 1024:  # mostly stale: rebuild from the live ones
                self._heap = [(t, k, i) for (k, i), t in self._due.items()]
                heapq.heapify(self._heap)
            if self._wake_at is None or at < self._wake_at:
                self._wake(at)

    def set_many(self, kind: str, deadlines: Iterable[tuple[str, float]]) -> None:
        """`set` for many tasks at once (a start restoring 100,000 timers): one heap build, one wake."""
        with self._lock:
            for task_id, at in deadlines:
                self._due[(kind, task_id)] = at
            self._heap = [(t, k, i) for (k, i), t in self._due.items()]
            heapq.heapify(self._heap)
            if self._heap and (self._wake_at is None or self._heap[0][0] < self._wake_at):
                self._wake(self._heap[0][0])

    def _wake(self, at: float) -> None:
        """Move the one date job to `at` (under the lock).

        Called from `_fire` too, for a deadline that may come before that run has returned: with the
        default of one instance APScheduler would skip the new run, and drop the job with it.
        (Its own lock makes this add wait until the job that is firing has been taken out.)"""
        self._wake_at = at
        self.scheduler.add_job(self._fire, "date", id=_WAKE_JOB, replace_existing=True, max_instances=16,
                               run_date=datetime.fromtimestamp(at, UTC), misfire_grace_time=None)

    def _fire(self) -> None:
        """The date job: queue every timer that is due, then wake again for the next one."""
        with self._lock:
            self._wake_at = None
            now = time.time()
            while self._heap:
                at, kind, task_id = self._heap[0]
                if self._due.get((kind, task_id)) != at:  # removed or moved since: stale
                    heapq.heappop(self._heap)
                    continue
                if at > now:
                    self._wake(at)
                    return
                heapq.heappop(self._heap)
                del self._due[(kind, task_id)]
                self.queue.put((kind, task_id))
