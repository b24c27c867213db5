"""InvalidFlood: how many `invalid` notices go out one by one before they are summed up.

A dir of thousands of broken files (or one writer making them on purpose) must not become
thousands of chat messages. In each window, counted from the first notice, the first `burst` are
told at once; the files after that are held and told in one summary when the window ends.

The clock is passed in (`now`, monotonic seconds), so this is tested without sleeping. Nothing here
is stored: a held notice that a restart loses is found again, because the file it is about is read
again (the worker leaves the file's signature unrecorded until its notice is stored).
"""

from __future__ import annotations

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
