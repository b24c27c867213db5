"""Timers: every deadline comes once, at its time, through one APScheduler job whatever their number."""

from __future__ import annotations

import time
from collections import Counter

from task_pulsed.scheduler import Timers
from task_pulsed.workqueue import IDLE, WorkQueue


def collect(queue: WorkQueue, count: int, timeout: float = 30, then: float = 0.3) -> list[tuple[str, str]]:
    """The first `count` items (waiting up to `timeout`), and whatever else comes `then` seconds after."""
    got: list[tuple[str, str]] = []
    deadline = time.monotonic() + timeout
    while len(got) < count and time.monotonic() < deadline:
        work = queue.get(0.05)
        if work is not None and work[0] != IDLE:
            got.append(work[0])  # type: ignore[arg-type]
    extra_until = time.monotonic() + then
    while time.monotonic() < extra_until:
        work = queue.get(0.05)
        if work is not None and work[0] != IDLE:
            got.append(work[0])  # type: ignore[arg-type]
    return got


def test_many_timers_one_job_each_deadline_once() -> None:
    queue = WorkQueue()
    timers = Timers(queue, rescan_seconds=3600, cleanup_seconds=3600)
    timers.start()
    try:
        base = time.time() + 0.3
        for i in range(1000):
            timers.set("stall", f"t{i}", base + (i % 50) / 100)  # spread over half a second
        for i in range(0, 1000, 10):
            timers.set("stall", f"t{i}", None)  # removed
        for i in range(5, 1000, 10):
            timers.set("stall", f"t{i}", base + 0.6)  # moved later
        timers.set("flush", "t1", base)  # another kind, same task: a timer of its own
        assert len(timers) == 901
        assert {job.id for job in timers.scheduler.get_jobs()} == {"rescan", "cleanup", "deadlines"}
        expected = {("stall", f"t{i}") for i in range(1000) if i % 10} | {("flush", "t1")}
        got = collect(queue, len(expected))
    finally:
        timers.shutdown()
    assert Counter(got) == Counter(expected)  # each live timer once, none of the removed
    assert len(timers) == 0


def test_a_deadline_in_the_past_comes_at_once_and_a_later_one_still_comes() -> None:
    queue = WorkQueue()
    timers = Timers(queue, rescan_seconds=3600, cleanup_seconds=3600)
    timers.start()
    try:
        timers.set("stall", "late", time.time() + 0.5)
        timers.set("stall", "overdue", time.time() - 10)
        assert collect(queue, 2, then=0) == [("stall", "overdue"), ("stall", "late")]
    finally:
        timers.shutdown()
