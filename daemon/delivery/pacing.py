"""Pacing: how fast one chat may be written to, so a live card is live without being spam.

Pure: every method takes `now` (a monotonic clock reading in seconds) and nothing here sleeps or reads
a clock. A `Pacer` holds one chat's budget; the couriers share it (its lock makes each step atomic).

* New messages (a card's first send, the pings) draw from a token bucket: `per_second` refilled, up
  to `burst` at once; Telegram groups also have a bucket per minute.
* Edits of one card are at least `edit_every` seconds apart (per card). On Matrix every event counts
  against the same budget as new messages (Synapse's `rc_message`), so there edits draw from the
  bucket too, but only from what is above a reserve kept for new messages: a ping (a task's end, a
  stall) never waits for tokens that card edits took.
* A rate-limit reply pauses the whole chat until the time it names.

Defaults per channel come from each service's published limits (see `CHANNEL_LIMITS`); `--pace` changes
them. What a pacer holds back is never dropped: the courier puts those notifications back with the
time they may go, and whatever arrives meanwhile goes out with them (the card shows the latest state).
"""

from __future__ import annotations

import threading
from collections import deque
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Limits:
    per_second: float | None = None  # new messages per second (None: no limit)
    burst: int = 1  # new messages that may go at once
    per_minute: int | None = None  # new messages per rolling minute (None: no limit)
    edit_every: float = 0.0  # seconds between two edits of one card
    edits_count: bool = False  # edits draw from the new-message budget too


# Telegram: about 1 message/s per chat, 20/min to a group (its Bot FAQ); edit limits are not published, one
# edit per 3 s per message is the common practice. Matrix: Synapse's default rc_message is 0.2 events/s
# per user with a burst of 10, edits included. Slack: chat.postMessage about 1/s per channel, chat.update
# Tier 3 (50+/min). Discord: 5 messages per 5 s per channel. MS Teams: about 1/s per conversation
# (bots: 7 per second, 60 per 30 s per thread). IRC: OpenClaw opens a connection per message (about 2 s)
# and servers throttle floods; one message per 2 s.
CHANNEL_LIMITS: dict[str, Limits] = {
    "telegram": Limits(per_second=1.0, burst=1, edit_every=3.0),
    "matrix": Limits(per_second=0.2, burst=10, edit_every=3.0, edits_count=True),
    "slack": Limits(per_second=1.0, burst=1, edit_every=1.2),
    "discord": Limits(per_second=1.0, burst=5, edit_every=1.0),
    "msteams": Limits(per_second=1.0, burst=3, edit_every=2.0),
    "irc": Limits(per_second=0.5, burst=1),
}
TELEGRAM_GROUP_PER_MINUTE = 20
UNPACED = Limits()


def channel_limits(channel: str, target: str = "") -> Limits:
    """The published limits of an OpenClaw channel; a Telegram group (a negative chat id) also keeps 20/min."""
    limits = CHANNEL_LIMITS.get(channel, UNPACED)
    if channel == "telegram" and target.lstrip().startswith("-"):
        limits = replace(limits, per_minute=TELEGRAM_GROUP_PER_MINUTE)
    return limits


def parse_pace(spec: str, base: Limits) -> Limits:
    """`--pace` words over `base`: `messages=RATE` (per second), `burst=N`, `minute=N`, `edit=SECONDS`,
    `edits-count=yes|no`, or `off`. E.g. `messages=0.5,edit=5`."""
    if spec.strip() == "off":
        return UNPACED
    limits = base
    for word in filter(None, (w.strip() for w in spec.split(","))):
        name, sep, value = word.partition("=")
        name = name.strip()
        try:
            if not sep:
                raise ValueError
            if name == "messages":
                rate = float(value)
                if not 0 < rate < float("inf"):
                    raise ValueError
                limits = replace(limits, per_second=rate)
            elif name == "burst":
                limits = replace(limits, burst=_positive_int(value))
            elif name == "minute":
                limits = replace(limits, per_minute=_positive_int(value))
            elif name == "edit":
                seconds = float(value)
                if not 0 <= seconds < 3600:
                    raise ValueError
                limits = replace(limits, edit_every=seconds)
            elif name == "edits-count":
                if value not in ("yes", "no"):
                    raise ValueError
                limits = replace(limits, edits_count=value == "yes")
            else:
                raise KeyError(name)
        except KeyError:
            raise ValueError(f"--pace: unknown setting {name!r} (messages, burst, minute, edit, edits-count, "
                             "or off)") from None
        except ValueError:
            raise ValueError(f"--pace: {word!r} is not a valid setting (e.g. messages=1,edit=3)") from None
    return limits


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise ValueError
    return number


def describe(limits: Limits) -> str:
    """One line for the log: what this chat is held to."""
    parts = []
    if limits.per_second is not None:
        parts.append(f"{limits.per_second:g} new message/s (burst {limits.burst})")
    if limits.per_minute is not None:
        parts.append(f"{limits.per_minute}/min")
    if limits.edit_every:
        parts.append(f"an edit per card every {limits.edit_every:g} s" + (" (edits count)" if limits.edits_count
                                                                        else ""))
    return ", ".join(parts) or "unpaced"


class Pacer:
    """One chat's budget. `next_*` say when something may go; `take_*` spend the budget at that moment."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self._lock = threading.Lock()
        self._tokens = float(limits.burst)
        self._filled_at: float | None = None
        self._minute: deque[float] = deque()
        self._edited: dict[str, float] = {}  # card key → when it was last edited
        self._paused_until = 0.0

    def _refill(self, now: float) -> None:
        rate = self.limits.per_second
        if rate is None:
            return
        if self._filled_at is not None and now > self._filled_at:
            self._tokens = min(float(self.limits.burst), self._tokens + (now - self._filled_at) * rate)
        if self._filled_at is None or now > self._filled_at:
            self._filled_at = now

    def _bucket_free_at(self, now: float) -> float:
        at = max(now, self._paused_until)
        if self.limits.per_second is not None and self._tokens < 1:
            at = max(at, now + (1 - self._tokens) / self.limits.per_second)
        if self.limits.per_minute is not None:
            while self._minute and self._minute[0] <= now - 60:
                self._minute.popleft()
            if len(self._minute) >= self.limits.per_minute:
                at = max(at, self._minute[0] + 60)
        return at

    def _spend(self, at: float) -> None:
        """One message going at `at`: a token now (a debt when the bucket is empty), a place in the minute then."""
        if self.limits.per_second is not None:
            self._tokens -= 1
        if self.limits.per_minute is not None:
            self._minute.append(at)

    def next_send(self, now: float) -> float:
        """When a new message may go (`now` if at once)."""
        with self._lock:
            self._refill(now)
            return self._bucket_free_at(now)

    def take_send(self, now: float) -> float:
        """Spend a new message's share and return when it may go: at once, or after the ones already
        promised (two couriers asking together get two slots, not one)."""
        with self._lock:
            self._refill(now)
            at = self._bucket_free_at(now)
            self._spend(at)
            return at

    def next_edit(self, card: str, now: float) -> float:
        """When `card` may be edited."""
        with self._lock:
            self._refill(now)
            at = max(now, self._paused_until, self._edited.get(card, float("-inf")) + self.limits.edit_every)
            if not self.limits.edits_count:
                return at
            # Edits take only from above the reserve (half the burst) that new messages keep for themselves.
            needed = 1 + self.limits.burst // 2
            if self.limits.per_second is not None and self._tokens < needed:
                at = max(at, now + (needed - self._tokens) / self.limits.per_second)
            return max(at, self._bucket_free_at(now))

    def take_edit(self, card: str, now: float) -> None:
        with self._lock:
            self._refill(now)
            self._edited[card] = now
            if self.limits.edits_count:
                self._spend(now)

    def edit_done(self, card: str, now: float) -> None:
        """The edit of `card` came back at `now`: the next waits from here, so that edits are apart where they
        land too (a call's own time varies: 0.1 s one time, 2 s the next)."""
        with self._lock:
            if card in self._edited:
                self._edited[card] = max(self._edited[card], now)

    def forget(self, card: str) -> None:
        """The card's task is over: its edit time is not needed any more."""
        with self._lock:
            self._edited.pop(card, None)

    def pause(self, until: float) -> None:
        """The chat said to wait (a rate-limit reply): nothing goes before `until`."""
        with self._lock:
            self._paused_until = max(self._paused_until, until)

    @property
    def paused_until(self) -> float:
        return self._paused_until
