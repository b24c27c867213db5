"""What a sink call came to: sent (with the message's id), handed over to the gateway's own queue, or a
DeliveryError that says what may be done about it. The courier decides from these alone."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sent:
    """The message is in the chat (`message_id`: the chat's id for it, None when the route gives none), or
    `handed_over`: OpenClaw's gateway queued it and will deliver it itself once the chat service is back.
    A handed-over message is delivered as far as we are concerned: sending it again would send it twice."""

    message_id: str | None = None
    handed_over: bool = False
    route: str = ""  # which way it went ("gateway", "cli", …), for the log


class DeliveryError(Exception):
    """A call that did not deliver, in one readable line.

    `in_doubt`: the request reached the other side and no answer came, so it may have been sent; only the
    same request (same idempotency key, same route) may be made again. `permanent`: the chat refuses it
    and will go on refusing (a bad target, a missing permission): no retry, the rows stay for `task-pulse
    drain`. `retry_after`: the chat asked us to wait that many seconds (a rate limit): nothing is wrong
    with the message, it goes later and no attempt is counted.
    """

    def __init__(self, reason: str, *, in_doubt: bool = False, permanent: bool = False,
                 retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.in_doubt, self.permanent, self.retry_after = in_doubt, permanent, retry_after
