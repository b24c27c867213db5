"""`--openclaw CHANNEL:TARGET`: delivery through the running OpenClaw gateway, the CLI for the rest.

Every call goes to the gateway first (`send`, and `message.action` with action `edit`), over the one
connection of `GatewayClient`. What the gateway answers decides what happens next:

* a reply: sent, or edited (the message id is the chat's own, e.g. the Matrix event id);
* `OUTBOUND_DELIVERY_QUEUED`: the chat service is away and OpenClaw queued the message to deliver it
  itself when it is back. It is handed over: recorded as delivered and never sent again by any route;
* no reply after the request was written (a timeout, the connection dropped): in doubt. The courier asks
  again with the same idempotency key through `replay`, over the gateway only: a gateway that did
  send it answers from memory instead of sending twice (for 5 minutes, within one gateway boot);
* nothing written (no gateway, a refused token, the connection gone first): the OpenClaw CLI may take it,
  the gateway being tried again in the background;
* a refusal (`INVALID_REQUEST`, `FORBIDDEN`: a channel not configured, a missing scope): permanent,
  OpenClaw's own words in the log, the notifications kept for `task-pulse drain`;
* a rate limit (`retryAfterMs`, or the chat's own words for it): the chat is paused that long.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from typing import Any

from task_pulse.markup import MARKDOWN
from task_pulse.messages import clean
from task_pulse.openclaw.gateway import GatewaySettings
from task_pulse.records import safe_message_id
from task_pulsed.delivery.gateway.client import GatewayClient, GatewayError, NoReply, NotSent
from task_pulsed.delivery.pacing import channel_limits
from task_pulsed.delivery.results import DeliveryError, Sent
from task_pulsed.delivery.sinks import OPENCLAW_EDITABLE, OpenClawCLI, Sink, openclaw_destination, openclaw_identity

QUEUED = "OUTBOUND_DELIVERY_QUEUED"
PERMANENT_CODES = frozenset({"INVALID_REQUEST", "FORBIDDEN", "NOT_FOUND", "NOT_LINKED", "NOT_PAIRED"})
# The chat's own words for a rate limit, where the gateway passes them on without `retryAfterMs`:
# Matrix `M_LIMIT_EXCEEDED … retry_after_ms: N`, Telegram `429 … retry after N`, Slack `ratelimited`.
_RATE_LIMITED = re.compile(r"M_LIMIT_EXCEEDED|\b429\b|rate.?limit|too many requests", re.I)
_RETRY_MS = re.compile(r"retry_after_ms\W+(\d+)", re.I)
_RETRY_S = re.compile(r"retry.?after\W+(\d+(?:\.\d+)?)", re.I)
# Telegram's answer to an edit that changes nothing: the card already shows it.
_NOT_MODIFIED = re.compile(r"message is not modified", re.I)
log = logging.getLogger("task-pulsed")


def retry_after(error: GatewayError) -> float | None:
    """How long the chat asked us to wait, if this is a rate limit (None: it is not one)."""
    if error.retry_after is not None:
        return error.retry_after
    text = f"{error.message} {error.details}"
    if not _RATE_LIMITED.search(text):
        return None
    if found := _RETRY_MS.search(text):
        return int(found.group(1)) / 1000
    if found := _RETRY_S.search(text):
        return float(found.group(1))
    return 5.0  # a rate limit that names no time


def refused(error: GatewayError, verb: str) -> DeliveryError:
    """A DeliveryError for the gateway's no, in OpenClaw's own words."""
    reason = f"gateway {verb}: {clean(str(error), 300)}"
    if (after := retry_after(error)) is not None:
        return DeliveryError(reason, retry_after=after)
    return DeliveryError(reason, permanent=error.code in PERMANENT_CODES)


class OpenClawSink(Sink):
    """The gateway route with the CLI behind it (either may be absent: `--openclaw-gateway none`, no CLI)."""

    name = "openclaw"
    markup = MARKDOWN  # the gateway renders as the CLI does (markup.py)

    def __init__(self, destination: str, *, endpoint: GatewaySettings | None, cli: OpenClawCLI | None,
                 timeout: float = 60, on_route: Callable[[str], None] | None = None, read_ledger: bool = False) -> None:
        self.channel, self.target = openclaw_destination(destination)
        if endpoint is None and cli is None:
            raise ValueError("--openclaw needs the gateway or the openclaw CLI, and has neither")
        self.cli, self.timeout = cli, timeout
        self.can_edit = self.channel in OPENCLAW_EDITABLE
        self.limits = channel_limits(self.channel, self.target)
        self.on_route = on_route
        self._lock = threading.Lock()
        self._route = ""
        self._told = ""  # the way last told in the log: gateway, cli, refused or none
        # `operator.read` too when the ledger bridge listens on the same connection (daemon/bridge.py).
        scopes = ["operator.read", "operator.write"] if read_ledger else ["operator.write"]
        self.client = None if endpoint is None else GatewayClient(endpoint, scopes=scopes,
                                                                  on_change=self._gateway_changed)
        self.replays = self.client is not None  # a send in doubt can be asked again only of a gateway
        self._gateway_changed("connecting" if self.client else "none", "")

    # -- the route ----------------------------------------------------------------------------------

    def start(self) -> None:
        if self.client is not None:
            self.client.start()

    def stop(self) -> None:
        if self.client is not None:
            self.client.stop()

    def _gateway_changed(self, state: str, detail: str) -> None:
        """The gateway came up or went away: the log says so when the way messages go changes (a line for
        each detail of one outage would be noise), STATUS follows every change."""
        if state == "up" and self.client is not None:
            route = f"gateway {self.client.endpoint.url} (OpenClaw {detail})"
        elif self.cli is not None:
            route = "openclaw CLI" + (f" (gateway {state}: {detail})" if state not in ("none", "connecting")
                                      else " (no gateway)" if state == "none" else "")
        else:
            route = f"gateway {state}" + (f": {detail}" if detail else "") + "; messages wait for it"
        way = "gateway" if state == "up" else state if state in ("refused", "none") else "cli"
        with self._lock:
            before, self._route = self._route, route
            told, self._told = self._told, way if state != "connecting" else self._told
        if route == before or state == "connecting":
            return
        level = logging.DEBUG if way == told else logging.INFO if state in ("up", "none") else logging.WARNING
        log.log(level, "delivering through %s", route)
        if self.on_route is not None and before:
            self.on_route(route)

    def route(self) -> str:
        with self._lock:
            return self._route

    def boot_id(self) -> str | None:
        hello = self.client.hello if self.client is not None and self.client.state == "up" else None
        return hello.boot_id if hello is not None else None

    def describe(self) -> str:
        return f"{self.channel} (openclaw)"

    def identity(self) -> str:
        # The same as the CLI's: a card the CLI sent is edited through the gateway, and the other way round.
        return openclaw_identity(self.channel, self.target)

    # -- calls ----------------------------------------------------------------------------------------

    def _call(self, method: str, params: dict[str, Any], before_write: Callable[[], None] | None = None) -> Any:
        assert self.client is not None
        try:
            return self.client.call(method, params, self.timeout, before_write)
        except NoReply as exc:
            raise DeliveryError(f"gateway {method}: {exc}", in_doubt=method == "send") from None

    def _no_gateway(self, reason: str) -> OpenClawCLI:
        if self.cli is None:
            raise DeliveryError(f"no route: {reason}")
        return self.cli

    def send(self, text: str, payload: dict[str, Any], key: str,
             before_write: Callable[[], None] | None = None) -> Sent:
        if self.client is None:
            return self._no_gateway("no gateway").send(text, payload, key)
        try:
            return self._gateway_send(text, key, before_write)
        except NotSent as exc:
            return self._no_gateway(str(exc)).send(text, payload, key)

    def replay(self, text: str, payload: dict[str, Any], key: str, boot_id: str | None) -> Sent:
        """The same send again, through the gateway only: until it answers, the send stays in doubt."""
        if self.client is None:
            raise DeliveryError("a send in doubt waits for the gateway, and none is configured", in_doubt=True)
        try:
            return self._gateway_send(text, key)
        except NotSent as exc:
            raise DeliveryError(f"a send in doubt waits for the gateway ({exc})", in_doubt=True) from None

    def _gateway_send(self, text: str, key: str, before_write: Callable[[], None] | None = None) -> Sent:
        try:
            reply = self._call("send", {"channel": self.channel, "to": self.target, "message": text,
                                        "idempotencyKey": key}, before_write)
        except GatewayError as exc:
            if exc.detail_code == QUEUED:
                log.info("the gateway queued a message for %s (%s): OpenClaw delivers it when the chat is back",
                         self.channel, clean(exc.message, 200))
                return Sent(handed_over=True, route="gateway queue")
            raise refused(exc, "send") from None
        message_id = safe_message_id(reply.get("messageId")) if isinstance(reply, dict) else None
        return Sent(message_id, route="gateway")

    def edit(self, message_id: str, text: str, payload: dict[str, Any], key: str) -> Sent:
        if self.client is None:
            return self._no_gateway("no gateway").edit(message_id, text, payload, key)
        if safe_message_id(message_id) is None:
            raise DeliveryError(f"message id {clean(message_id, 40)!r} is not one a chat gives", permanent=True)
        try:
            self._call("message.action", {"channel": self.channel, "action": "edit",
                                          "conversationReadOrigin": "direct-operator",
                                          "params": {"to": self.target, "messageId": message_id, "message": text},
                                          "idempotencyKey": key})
        except NotSent as exc:
            return self._no_gateway(str(exc)).edit(message_id, text, payload, key)
        except GatewayError as exc:
            if not _NOT_MODIFIED.search(exc.message):
                raise refused(exc, "edit") from None
        return Sent(message_id, route="gateway")
