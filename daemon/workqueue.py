"""WorkQueue: what the worker is to do next, each thing once, small tasks never stuck behind huge ones.

Everything but the worker only puts work here: the watcher ("look at this task file"), the
scheduler (a stall deadline, a flush, the rescan, the cleanup), the worker itself (a retry later).
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Hashable

# A task file in the heavy lane that has waited this long goes in turn with the others.
HEAVY_WAIT = 1.0
# Work items that are not a task file (those are ("file", task id), ("stall", …), ("flush", …)).
RESCAN = ("rescan",)
CLEANUP = ("cleanup",)
ADOPT = ("adopt",)  # the first start's background pass (see Worker._adopt_some)
UNREADABLE_SUMMARY = ("unreadable-summary",)
NEWS_SUMMARY = ("news-summary",)  # as (NEWS_SUMMARY[0], window id): a flood window's summary (see flood.py)
IDLE = ("idle",)  # what `get` returns when its timeout passes with nothing to do


class WorkQueue:
    """A coalescing queue: an item already waiting is not queued twice; delayed items wait their turn.

    Fair to small tasks: items marked heavy (a task file over HEAVY_BYTES last time) wait in a lane
    of their own, served when no other item is ready, or, once the oldest has waited HEAVY_WAIT, in
    turn with the others (never two heavy ones in a row while another item waits). However many
    huge files are rewritten in a loop, an ordinary task waits for one of them at most.

    `get` blocks without polling (a condition variable, woken by `put` or by the next due time).
    """

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._ready: dict[Hashable, int] = {}  # item -> attempt, in arrival order
        self._ready_heavy: dict[Hashable, tuple[int, float]] = {}  # item -> (attempt, queued at)
        self._heavy: set[Hashable] = set()
        self._served_heavy = False  # the last item served came from the heavy lane
        self._delayed: list[tuple[float, int, Hashable, int]] = []
        self._order = itertools.count()
        self._closed = False

    def mark_heavy(self, item: Hashable, heavy: bool) -> None:
        """Put `item` in the heavy lane from its next `put` on (or take it out)."""
        with self._cond:
            if heavy:
                self._heavy.add(item)
            else:
                self._heavy.discard(item)

    def put(self, item: Hashable, attempt: int = 0, delay: float = 0.0) -> None:
        with self._cond:
            if delay > 0:
                heapq.heappush(self._delayed, (time.monotonic() + delay, next(self._order), item, attempt))
            elif not self._enqueue(item, attempt, time.monotonic()):
                return
            self._cond.notify()

    def _enqueue(self, item: Hashable, attempt: int, now: float) -> bool:
        if item in self._ready or item in self._ready_heavy:
            return False
        if item in self._heavy:
            self._ready_heavy[item] = (attempt, now)
        else:
            self._ready[item] = attempt
        return True

    def _next_ready(self, now: float) -> tuple[Hashable, int] | None:
        heavy = next(iter(self._ready_heavy), None)
        aged = heavy is not None and now - self._ready_heavy[heavy][1] >= HEAVY_WAIT
        if heavy is not None and (not self._ready or (aged and not self._served_heavy)):
            self._served_heavy = True
            return heavy, self._ready_heavy.pop(heavy)[0]
        if self._ready:
            self._served_heavy = False
            item = next(iter(self._ready))
            return item, self._ready.pop(item)
        return None

    def get(self, timeout: float | None = None) -> tuple[Hashable, int] | None:
        """The next item and its attempt number; (IDLE, 0) after `timeout`; None once closed."""
        give_up = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while True:
                if self._closed:
                    return None
                now = time.monotonic()
                if (ready := self._take(now)) is not None:
                    return ready
                if give_up is not None and now >= give_up:
                    return IDLE, 0
                waits = [t - now for t in (self._delayed[0][0] if self._delayed else None, give_up) if t is not None]
                self._cond.wait(min(waits) if waits else None)

    def get_ready(self) -> tuple[Hashable, int] | None:
        """The next item if one is ready now, else None (closed: None too)."""
        with self._cond:
            return None if self._closed else self._take(time.monotonic())

    def _take(self, now: float) -> tuple[Hashable, int] | None:
        while self._delayed and self._delayed[0][0] <= now:
            _, _, item, attempt = heapq.heappop(self._delayed)
            self._enqueue(item, attempt, now)
        return self._next_ready(now)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def wait_closed(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds, waking early if the queue is closed; whether it is."""
        with self._cond:
            return self._cond.wait_for(lambda: self._closed, timeout)
