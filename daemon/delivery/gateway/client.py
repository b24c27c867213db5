"""One WebSocket connection to the running OpenClaw gateway, shared by every courier of the daemon.

The gateway already holds the chat plugins and answers a `send` in about 0.1 s, where each
`openclaw message send` starts Node, loads the plugin and sends itself (10–18 s). This client speaks
the gateway's protocol 4 through the `websockets` library (its threading client):

* the server's first frame is a `connect.challenge` event; we answer with a `connect` request (client
  `gateway-client` in mode `backend`, role `operator`, the shared token or password) and get
  `hello-ok`, which names the gateway's version and the methods it serves;
* requests are `{"type": "req", "id", "method", "params"}`, replies `{"type": "res", "id", "ok",
  "payload" | "error"}`; a reader thread hands each reply to the caller waiting on its id, so several
  couriers share the one connection;
* events (`tick`, `health`, ledger changes) go to the listeners (`add_listener`).

What a caller must know about a failed call is whether the request was written. `NotSent`: it was
not (the gateway is down, refused us, or the connection was gone first), so another route may take
the message. `NoReply`: it was written and no answer came, so only the same request (same
idempotency key) may be tried again, through the gateway. `GatewayError`: the gateway answered no.

The connection is kept up by a thread of its own: a refused connection is retried with a backoff of
up to 5 s (a restarting gateway is back within seconds of being ready), a refused handshake (wrong
token, a protocol we do not speak) every minute, and a dropped one (1012 "service restart") at once.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from task_pulse import __version__
from task_pulse.openclaw.gateway import GatewaySettings

PROTOCOL = 4  # the gateway protocol this client speaks (OpenClaw 2026.9)
CLIENT_ID, CLIENT_MODE = "gateway-client", "backend"
NEEDED_METHODS = ("send", "message.action")
HANDSHAKE_SECONDS = 10.0
# Replies can be large (a ledger listing); what we send is small.
MAX_FRAME = 16 * 1024 * 1024
REFUSED_RETRY = 60.0  # a handshake the gateway refused (token, protocol) is tried again this often
DOWN_RETRY_MAX = 5.0  # a gateway that is not listening is tried again at most this far apart
log = logging.getLogger("task-pulsed")


class NotSent(Exception):
    """Nothing was written to the gateway: another route may deliver the message."""


class NoReply(Exception):
    """The request was written and no reply came: the gateway may have acted on it."""


class GatewayError(Exception):
    """The gateway answered `ok: false` (its `code`, `message` and `details`)."""

    def __init__(self, error: dict[str, Any]) -> None:
        self.code = str(error.get("code") or "ERROR")
        self.message = str(error.get("message") or "")
        details = error.get("details")
        self.details: dict[str, Any] = details if isinstance(details, dict) else {}
        self.retryable = bool(error.get("retryable"))
        after = error.get("retryAfterMs")
        self.retry_after = after / 1000 if isinstance(after, int | float) and after > 0 else None
        super().__init__(f"{self.code} {self.message}".strip())

    @property
    def detail_code(self) -> str | None:
        code = self.details.get("code")
        return code if isinstance(code, str) else None


class HandshakeRefused(Exception):
    """The gateway would not take us (token, protocol, scope): retrying soon will not help.
    `protocol_mismatch`: it speaks another protocol than ours (no retry will help)."""

    def __init__(self, reason: str, protocol_mismatch: bool = False) -> None:
        super().__init__(reason)
        self.protocol_mismatch = protocol_mismatch


@dataclass(frozen=True)
class Hello:
    """What `hello-ok` told us."""

    protocol: int
    server_version: str
    methods: frozenset[str] = field(default_factory=frozenset)
    boot_id: str | None = None  # changes at every gateway start: its memory of idempotency keys goes with it


def open_connection(endpoint: GatewaySettings, scopes: list[str], timeout: float = HANDSHAKE_SECONDS
                    ) -> tuple[ClientConnection, Hello]:
    """Connect and sign in. Raises NotSent (nothing there), HandshakeRefused, or TimeoutError."""
    try:
        ws = connect(endpoint.url, open_timeout=timeout, close_timeout=2, proxy=None, max_size=MAX_FRAME,
                     user_agent_header=f"task-pulsed/{__version__}", compression=None)
    except InvalidURI as exc:
        raise HandshakeRefused(f"not a WebSocket URL: {exc.uri}") from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise NotSent(_reason(exc)) from None
    try:
        return ws, _sign_in(ws, endpoint, scopes, timeout)
    except BaseException:
        ws.close()
        raise


def _sign_in(ws: ClientConnection, endpoint: GatewaySettings, scopes: list[str], timeout: float) -> Hello:
    try:
        challenge = json.loads(ws.recv(timeout))
        if challenge.get("event") != "connect.challenge":
            raise HandshakeRefused(f"the gateway opened with {challenge.get('event') or challenge.get('type')!r}, "
                                   "not a connect.challenge: is this an OpenClaw gateway?")
        auth = {"token": endpoint.token} if endpoint.token else {"password": endpoint.password} \
            if endpoint.password else {}
        request_id = uuid.uuid4().hex
        ws.send(json.dumps({"type": "req", "id": request_id, "method": "connect", "params": {
            "minProtocol": PROTOCOL, "maxProtocol": PROTOCOL,
            "client": {"id": CLIENT_ID, "version": __version__, "platform": sys.platform, "mode": CLIENT_MODE},
            "role": "operator", "scopes": scopes, "caps": [], "auth": auth,
            "userAgent": f"task-pulsed/{__version__}"}}))
        while True:
            frame = json.loads(ws.recv(timeout))
            if frame.get("type") == "res" and frame.get("id") == request_id:
                break
    except (ConnectionClosed, OSError) as exc:
        raise NotSent(f"the gateway closed the connection during sign-in ({_reason(exc)})") from None
    except ValueError:
        raise HandshakeRefused("the gateway sent something that is not JSON: is this an OpenClaw gateway?") from None
    if not frame.get("ok"):
        error = GatewayError(frame.get("error") or {})
        if error.retryable:  # "gateway starting; retry shortly": a moment, not a refusal
            raise NotSent(f"{error}".strip())
        raise HandshakeRefused(_refusal(error), protocol_mismatch="protocol" in error.message.lower())
    payload = frame.get("payload") or {}
    protocol = payload.get("protocol")
    if payload.get("type") != "hello-ok" or protocol != PROTOCOL:
        raise HandshakeRefused(f"the gateway speaks protocol {protocol}, task-pulse speaks {PROTOCOL}",
                               protocol_mismatch=True)
    server = payload.get("server") or {}
    methods = (payload.get("features") or {}).get("methods") or []
    missing = [m for m in NEEDED_METHODS if m not in methods]
    if missing:
        raise HandshakeRefused(f"the gateway (OpenClaw {server.get('version') or '?'}) does not serve "
                               f"{', '.join(missing)}", protocol_mismatch=True)
    boot = server.get("bootId")
    return Hello(protocol, str(server.get("version") or "?"), frozenset(m for m in methods if isinstance(m, str)),
                 boot if isinstance(boot, str) else None)


def _refusal(error: GatewayError) -> str:
    """Why the gateway would not take us, in words a user can act on."""
    detail = error.detail_code or ""
    if "TOKEN" in detail or "PASSWORD" in detail or "AUTH" in detail:
        return (f"the gateway refused the token ({detail}): set OPENCLAW_GATEWAY_TOKEN to gateway.auth.token "
                "(task-pulse openclaw setup puts it in the service's env file)")
    if "protocol" in error.message.lower():
        return f"the gateway refused protocol {PROTOCOL} (task-pulse speaks only {PROTOCOL}): {error.message}"
    return f"the gateway refused the connection: {error}"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is not None:
            return f"closed {rcvd.code}" + (f" {rcvd.reason}" if rcvd.reason else "")
        return "connection lost"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower() if isinstance(exc, ConnectionRefusedError) else exc.strerror
    return str(exc) or type(exc).__name__


def probe(endpoint: GatewaySettings, timeout: float = HANDSHAKE_SECONDS) -> Hello:
    """Connect, sign in and hang up: what `task-pulsed --check` says about the gateway."""
    ws, hello = open_connection(endpoint, ["operator.write"], timeout)
    ws.close()
    return hello


class GatewayClient:
    """The daemon's connection to the gateway: `call` from any thread, events to the listeners.

    `on_change(state, detail)` hears every change of state: `up` (detail: the gateway's version),
    `down` (why), `refused` (why, and that retrying soon will not help).
    """

    def __init__(self, endpoint: GatewaySettings, *, scopes: list[str] | None = None,
                 on_change: Callable[[str, str], None] | None = None, connect_wait: float = 5.0) -> None:
        self.endpoint = endpoint
        self.scopes = scopes or ["operator.write"]
        self._on_event: list[Callable[[str, Any], None]] = []
        self._on_change: list[Callable[[str, str], None]] = [on_change] if on_change else []
        self.connect_wait = connect_wait
        self.state, self.detail = "connecting", ""
        self.hello: Hello | None = None
        self._ws: ClientConnection | None = None
        self._pending: dict[str, Future[Any]] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="task-pulsed-gateway", daemon=True)

    def add_listener(self, on_event: Callable[[str, Any], None] | None = None,
                     on_change: Callable[[str, str], None] | None = None) -> None:
        """Hear the gateway's events, and its changes of state, from now on (before `start`: from the first).
        Listeners run on the connection's thread: they hand work over, they never wait."""
        if on_event is not None:
            self._on_event.append(on_event)
        if on_change is not None:
            self._on_change.append(on_change)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        with self._cond:
            ws = self._ws
            self._cond.notify_all()
        if ws is not None:
            ws.close()
        self._thread.join(timeout=5)

    def wait_settled(self, timeout: float) -> str:
        """Wait until the first connection attempt is over; the state then (`up`, `down`, `refused`)."""
        with self._cond:
            self._cond.wait_for(lambda: self.state != "connecting" or self._stopping.is_set(), timeout)
            return self.state

    # -- calls ---------------------------------------------------------------------------------------

    def call(self, method: str, params: dict[str, Any], timeout: float,
             before_write: Callable[[], None] | None = None) -> Any:
        """Send one request and wait for its reply's payload. Raises NotSent, NoReply or GatewayError.

        `before_write` runs once the request is sure to be written (the connection is up), just before it
        is: what it records holds for a request that may reach the gateway."""
        with self._cond:
            if self.state == "connecting":  # at start or during a reconnect: worth a short wait
                self._cond.wait_for(lambda: self.state != "connecting" or self._stopping.is_set(),
                                    min(timeout, self.connect_wait))
            ws = self._ws
            if self.state != "up" or ws is None:
                raise NotSent(f"gateway {self.state}" + (f": {self.detail}" if self.detail else ""))
        if before_write is not None:
            before_write()
        with self._cond:
            request_id = uuid.uuid4().hex
            reply: Future[Any] = Future()
            self._pending[request_id] = reply
        try:
            ws.send(json.dumps({"type": "req", "id": request_id, "method": method, "params": params},
                               ensure_ascii=False))
        except (ConnectionClosed, OSError, RuntimeError) as exc:  # not written: the connection was gone first
            with self._cond:
                self._pending.pop(request_id, None)
            raise NotSent(f"gateway connection lost ({_reason(exc)})") from None
        try:
            return reply.result(timeout)
        except FutureTimeout:
            with self._cond:
                self._pending.pop(request_id, None)
            raise NoReply(f"no reply from the gateway in {timeout:g} s") from None

    # -- the connection thread -------------------------------------------------------------------------

    def _set(self, state: str, detail: str) -> None:
        with self._cond:
            changed = (state, detail) != (self.state, self.detail)
            self.state, self.detail = state, detail
            self._cond.notify_all()
        if changed:
            for listener in self._on_change:
                listener(state, detail)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                ws, hello = open_connection(self.endpoint, self.scopes)
            except HandshakeRefused as exc:
                self._set("refused", str(exc))
                self._stopping.wait(REFUSED_RETRY)
                continue
            except (NotSent, TimeoutError) as exc:
                self._set("down", f"{self.endpoint.url}: {exc or 'no answer'}")
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, DOWN_RETRY_MAX)
                continue
            with self._cond:
                if self._stopping.is_set():
                    ws.close()
                    return
                self._ws, self.hello = ws, hello
            backoff = 0.5
            self._set("up", hello.server_version)
            reason = self._read(ws)
            with self._cond:
                self._ws = None
                lost, self._pending = self._pending, {}
            for reply in lost.values():
                reply.set_exception(NoReply(f"the gateway closed the connection ({reason}) before replying"))
            if not self._stopping.is_set():
                self._set("down", f"{self.endpoint.url}: {reason}")

    def _read(self, ws: ClientConnection) -> str:
        """Hand every reply to its caller and every event to `on_event`, until the connection ends."""
        while True:
            try:
                frame = json.loads(ws.recv())
            except ConnectionClosed as exc:
                return _reason(exc)
            except ValueError:
                log.warning("the gateway sent a frame that is not JSON; ignored")
                continue
            if not isinstance(frame, dict):
                continue
            if frame.get("type") == "res":
                with self._cond:
                    reply = self._pending.pop(str(frame.get("id")), None)
                if reply is None:
                    continue  # a reply its caller stopped waiting for
                if frame.get("ok"):
                    reply.set_result(frame.get("payload"))
                else:
                    reply.set_exception(GatewayError(frame.get("error") or {}))
            elif frame.get("type") == "event" and frame.get("event") == "shutdown":
                # It is stopping or restarting: what it still answers, it answers; new requests go elsewhere.
                reason = (frame.get("payload") or {}).get("reason") or "shutting down"
                self._set("down", f"{self.endpoint.url}: {reason}")
            elif frame.get("type") == "event":
                for listener in self._on_event:
                    try:
                        listener(str(frame.get("event")), frame.get("payload"))
                    except Exception:  # noqa: BLE001 - a listener's bug must not end the connection
                        log.exception("gateway event %r: its listener failed", frame.get("event"))
