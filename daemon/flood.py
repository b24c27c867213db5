"""Floods: how many `invalid` notices (InvalidFlood), new tasks and stall alarms (NewsFlood) go out one by one
before they are summed up.

A dir of thousands of broken files (or one writer making them on purpose) must not become
thousands of chat messages. In each window, counted from the first notice, the first `burst` are
told at once; the files after that are held and told in one summary when the window ends.

The clock is passed in (`now`, monotonic seconds), so this is tested without sleeping. Nothing here
is stored: a held notice that a restart loses is found again, because the file it is about is read
again (the worker leaves the file's signature unrecorded until its notice is stored).
"""

from __future__ import annotations

import time

from task_pulse.records import Notification

INVALID_BURST = 5
INVALID_WINDOW = 300.0


class InvalidFlood:
    def __init__(self, burst: int = INVALID_BURST, window: float = INVALID_WINDOW) -> None:
        self.burst, self.window = burst, window
        self._opened: float | None = None
        self._told = 0
        self._held: dict[str, Notification] = {}  # task id -> its latest notice, in arrival order

    def may_tell(self, now: float) -> bool:
        """Whether a new notice may be told now (count it with `told` once it is stored); False: `hold` it."""
        if self._opened is None or (not self._held and now - self._opened >= self.window):
            self._opened, self._told = now, 0
        return self._told < self.burst

    def told(self) -> None:
        self._told += 1

    def hold(self, note: Notification) -> float | None:
        """Keep `note` for the summary. Returns when the summary is due if this is the first one held
        (the caller schedules it then), else None."""
        first = not self._held
        self._held[note.task_id] = note
        return (self._opened or 0.0) + self.window if first else None

    def held(self) -> list[Notification]:
        """What the window holds, for the summary (kept until `close`: storing it may fail)."""
        return list(self._held.values())

    def close(self) -> None:
        """The summary is stored: a fresh window for what comes next."""
        self._opened, self._told, self._held = None, 0, {}


NEWS_BURST = 20
NEWS_WINDOW = 60.0
FLOOD_OWNER = "flood:"  # what a window's held notifications are claimed by, then its id


class NewsFlood:
    """How many new tasks (each a new card) and stall alarms (each a ping) are told one by one per window.

    300 valid task files with `stallSeconds: 5` were 600 new chat messages in 40 s, and the chat's rate limits
    then held up the alarms that mattered. Per window, counted from the first new task or alarm, `burst` of
    each are told as they come; past that, what comes is held, and told in one summary when the window ends. A
    task whose first message of a run was held is told in summaries for the rest of that run (no card for
    it: see `Worker._apply`). The clock is passed in (monotonic seconds); held notifications are stored at once,
    claimed by the window (`window_id`), so a stop before the summary loses nothing: the next start sums up
    what a window still holds.
    """

    def __init__(self, burst: int = NEWS_BURST, window: float = NEWS_WINDOW) -> None:
        self.burst, self.window = burst, window
        self._opened: float | None = None
        self._told: dict[str, int] = {}
        self._window_id = ""
        self._holding = False

    def _current(self, now: float) -> None:
        if self._opened is None or (not self._holding and now - self._opened >= self.window):
            self._opened, self._told, self._holding = now, {}, False
            self._window_id = f"{FLOOD_OWNER}{time.time():.6f}"

    def may_tell(self, what: str, now: float) -> bool:
        """Whether one more `what` ("task", "stall") may be told one by one now (count it with `told` once it is
        stored: a store the busy db undid is asked again)."""
        self._current(now)
        return self._told.get(what, 0) < self.burst

    def told(self, what: str) -> None:
        self._told[what] = self._told.get(what, 0) + 1

    def hold(self, now: float) -> tuple[str, float, bool]:
        """Hold news in the current window: (the window's id, when its summary is due, whether this is the
        first held, so the caller schedules the summary)."""
        self._current(now)
        first, self._holding = not self._holding, True
        assert self._opened is not None
        return self._window_id, self._opened + self.window, first

    def close(self, window_id: str) -> None:
        """The summary of `window_id` is stored: what comes next opens a fresh window."""
        if window_id == self._window_id:
            self._opened, self._told, self._holding = None, {}, False
