"""Timers: APScheduler 3's BackgroundScheduler, in UTC, whose jobs only put work in the WorkQueue.

A job never touches the database or a task file: it enqueues ("stall", id), ("flush", id),
("cleanup",) or ("rescan",) and the worker does the work. UTC is explicit because tzlocal cannot
always find the zone in containers, and every deadline here is an absolute instant anyway.
"""

from __future__ import annotations

from contextlib import suppress
from datetime import UTC, datetime, timedelta

from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from task_pulsed.worker import CLEANUP, RESCAN, WorkQueue


class Timers:
    def __init__(self, queue: WorkQueue, *, rescan_seconds: float, cleanup_seconds: float) -> None:
        self.queue = queue
        self.rescan_seconds, self.cleanup_seconds = rescan_seconds, cleanup_seconds
        # Ids of the date jobs we set. A job that fired is gone from APScheduler but may still be
        # listed here; that only costs one suppressed JobLookupError when it is removed.
        self._armed: set[str] = set()
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

    def set(self, kind: str, task_id: str, at: float | None) -> None:
        """Run ("kind", task_id) through the queue at unix time `at`; None removes the timer."""
        job_id = f"{kind}:{task_id}"
        if at is None:
            if job_id in self._armed:
                self._armed.discard(job_id)
                with suppress(JobLookupError):  # already fired
                    self.scheduler.remove_job(job_id)
            return
        self._armed.add(job_id)
        self.scheduler.add_job(self.queue.put, "date", args=[(kind, task_id)], id=job_id, replace_existing=True,
                               run_date=datetime.fromtimestamp(at, UTC), misfire_grace_time=None)
