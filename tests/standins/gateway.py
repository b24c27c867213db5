"""A stand-in for the OpenClaw gateway's WebSocket, for tests: the subset of protocol 4 that task-pulsed uses,
with the shapes measured on OpenClaw 2026.9.6 (the `connect.challenge` event first, `connect` → `hello-ok`,
`send` → `{runId, messageId, channel}`, `message.action` edit → `{ok, result}`, errors as `{code, message,
details, retryable, retryAfterMs}`), and its idempotency: the same key within 5 minutes of one boot is
answered with the first reply and sends nothing.

It keeps the chat it pretends to deliver to (`chat`: every message sent, with its edits) and every request
(`requests`). Switches a test sets: `delay` (seconds before a reply), `lose_replies` (that many sends are
delivered but never answered), `hold_replies` (a threading.Event: sends are delivered, replies wait for it),
`queue_sends` (that many sends answer OUTBOUND_DELIVERY_QUEUED and are delivered later by `flush_queue`),
`fail_sends` (errors to answer with, one per send), `rate_limit` (that many sends answer a rate limit of
`retry_after_ms`), `upsert(summary)` (a change of OpenClaw's task ledger: kept for `tasks.list` and
`tasks.get`, and told to every connection as an event `task`), `starting_until` (a monotonic time: before
it, `connect` is answered "gateway starting; retry shortly", retryable, as a gateway still starting
answers); `restart()` closes every connection with 1012, refuses new ones for `down_for` seconds and
forgets every key (a new boot).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import Server, ServerConnection, serve

PROTOCOL = 4
VERSION = "2026.9.6"
DEDUPE_SECONDS = 300


@dataclass
class Message:
    id: str
    text: str
    at: float  # when it reached the chat
    edits: list[tuple[float, str]] = field(default_factory=list)  # (when, new text)

    @property
    def shown(self) -> str:
        return self.edits[-1][1] if self.edits else self.text


class StandInGateway:
    def __init__(self, token: str = "test-token", protocol: int = PROTOCOL) -> None:
        self.token, self.protocol = token, protocol
        self.chat: list[Message] = []
        self.requests: list[dict[str, Any]] = []
        self.connections = 0
        self.delay = 0.0
        self.lose_replies = 0
        self.hold_replies: threading.Event | None = None
        self.queue_sends = 0
        self.queued: list[dict[str, Any]] = []
        self.fail_sends: list[dict[str, Any]] = []
        self.rate_limit = 0
        self.retry_after_ms = 1500
        self.down_until = 0.0
        self.starting_until = 0.0
        self.boot_id = uuid.uuid4().hex
        self._lock = threading.Lock()
        self._replies: dict[str, tuple[float, dict[str, Any]]] = {}  # idempotency key → (when, reply frame body)
        self._inflight: dict[str, threading.Event] = {}  # a key being worked on: the same key again waits for it
        self.ledger: dict[str, dict[str, Any]] = {}  # OpenClaw's task ledger: id → TaskSummary
        self.scopes: list[list[str]] = []  # what each connection asked for
        self._open: set[ServerConnection] = set()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    # -- running -------------------------------------------------------------------------------------

    def start(self, port: int = 0) -> StandInGateway:
        self._server = serve(self._handle, "127.0.0.1", port, compression=None)
        self.port = self._server.socket.getsockname()[1]
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            for ws in list(self._open):
                ws.close()

    def restart(self, down_for: float = 0.0) -> None:
        """As `openclaw gateway restart`: every connection closed with 1012, its memory of keys gone."""
        with self._lock:
            self.down_until = time.monotonic() + down_for
            self.boot_id = uuid.uuid4().hex
            self._replies.clear()
            connections = list(self._open)
        for ws in connections:
            ws.close(1012, "service restart")

    def upsert(self, summary: dict[str, Any], tell: bool = True) -> None:
        """A ledger change: the record kept, and (`tell`) pushed to every connection as OpenClaw does."""
        summary = {"updatedAt": int(time.time() * 1000), **summary}
        with self._lock:
            self.ledger[summary["id"]] = {**self.ledger.get(summary["id"], {}), **summary}
            record, connections = self.ledger[summary["id"]], list(self._open)
        if tell:
            frame = json.dumps({"type": "event", "event": "task", "payload": {"action": "upserted", "task": record}})
            for ws in connections:
                with contextlib.suppress(ConnectionClosed):
                    ws.send(frame)

    def forget(self, ledger_id: str) -> None:
        with self._lock:
            self.ledger.pop(ledger_id, None)

    def flush_queue(self) -> None:
        """The chat service is back: the gateway delivers what it queued."""
        with self._lock:
            queued, self.queued = self.queued, []
        for params in queued:
            self._deliver(params)

    # -- what reached the chat ---------------------------------------------------------------------------

    def sends(self) -> list[Message]:
        with self._lock:
            return list(self.chat)

    def texts(self) -> list[str]:
        return [m.text for m in self.sends()]

    def edit_times(self, message_id: str) -> list[float]:
        return [at for m in self.sends() if m.id == message_id for at, _ in m.edits]

    # -- the protocol ------------------------------------------------------------------------------------

    def _handle(self, ws: ServerConnection) -> None:
        if time.monotonic() < self.down_until:
            ws.close(1013, "try again later")
            return
        with self._lock:
            self.connections += 1
            self._open.add(ws)
        try:
            ws.send(json.dumps({"type": "event", "event": "connect.challenge",
                                "payload": {"nonce": uuid.uuid4().hex, "ts": int(time.time() * 1000)}}))
            hello = json.loads(ws.recv(10))
            params = hello.get("params") or {}
            if hello.get("method") != "connect":
                ws.close(1008, "connect first")
                return
            if not params.get("minProtocol", 0) <= self.protocol <= params.get("maxProtocol", 0):
                ws.send(json.dumps(self._error(hello["id"], "INVALID_REQUEST",
                                               f"protocol mismatch: server speaks {self.protocol}")))
                ws.close(1002, "protocol mismatch")
                return
            self.scopes.append(list(params.get("scopes") or []))
            if time.monotonic() < self.starting_until:
                ws.send(json.dumps(self._error(hello["id"], "UNAVAILABLE", "gateway starting; retry shortly",
                                               retryable=True, retryAfterMs=500)))
                ws.close(1013, "starting")
                return
            if (params.get("auth") or {}).get("token") != self.token:
                ws.send(json.dumps(self._error(hello["id"], "INVALID_REQUEST", "unauthorized: gateway token mismatch",
                                               {"code": "AUTH_TOKEN_MISMATCH"})))
                ws.close(1008, "unauthorized")
                return
            ws.send(json.dumps({"type": "res", "id": hello["id"], "ok": True, "payload": {
                "type": "hello-ok", "protocol": self.protocol,
                "server": {"version": VERSION, "bootId": self.boot_id, "connId": uuid.uuid4().hex},
                "features": {"methods": ["send", "message.action", "tasks.list"], "events": ["tick"]},
                "policy": {"maxPayload": 26214400, "tickIntervalMs": 30000}}}))
            for raw in ws:
                frame = json.loads(raw)
                threading.Thread(target=self._answer, args=(ws, frame), daemon=True).start()
        except (ConnectionClosed, TimeoutError, OSError):
            pass
        finally:
            with self._lock:
                self._open.discard(ws)

    @staticmethod
    def _error(request_id: str, code: str, message: str, details: dict[str, Any] | None = None,
               **extra: Any) -> dict[str, Any]:
        return {"type": "res", "id": request_id, "ok": False,
                "error": {"code": code, "message": message, **({"details": details} if details else {}), **extra}}

    def _answer(self, ws: ServerConnection, frame: dict[str, Any]) -> None:
        method, params, request_id = frame.get("method"), frame.get("params") or {}, frame.get("id")
        with self._lock:
            self.requests.append({"method": method, "params": params, "at": time.time()})
        key = params.get("idempotencyKey")
        lost = False
        if method in ("tasks.list", "tasks.get"):
            reply = self._ledger(request_id, str(method), params)
        elif not key:
            reply = self._error(request_id, "INVALID_REQUEST", "invalid send params: idempotencyKey required")
        else:
            with self._lock:
                first = self._inflight.get(key)
                if first is None:
                    self._inflight[key] = threading.Event()
            if first is not None:  # the same key while the first is under way: its answer, once it has one
                first.wait(60)
            with self._lock:
                known = self._replies.get(key)
            if known is not None and time.monotonic() - known[0] < DEDUPE_SECONDS:
                reply = {**known[1], "id": request_id}
            else:  # every answer is remembered, refusals too (as the gateway's dedupe map does)
                reply, lost = self._act(request_id, str(method), params)
                with self._lock:
                    self._replies[key] = (time.monotonic(), reply)
                    self._inflight.pop(key).set()
        if lost:
            return
        if self.delay:
            time.sleep(self.delay)
        if self.hold_replies is not None and method == "send":
            self.hold_replies.wait(60)
        with contextlib.suppress(ConnectionClosed):
            ws.send(json.dumps(reply))

    def _ledger(self, request_id: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            records = sorted(self.ledger.values(), key=lambda t: -t.get("updatedAt", 0))
        if method == "tasks.list":
            return {"type": "res", "id": request_id, "ok": True,
                    "payload": {"tasks": records[:int(params.get("limit") or 100)]}}
        found = next((t for t in records if t["id"] == params.get("taskId")), None)
        if found is None:
            return self._error(request_id, "INVALID_REQUEST", f"task not found: {params.get('taskId')}")
        return {"type": "res", "id": request_id, "ok": True, "payload": {"task": found}}

    def _act(self, request_id: str, method: str, params: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """The reply to a request, and whether it is lost on its way back (the work is done either way)."""
        if method == "send":
            with self._lock:
                if self.rate_limit:
                    self.rate_limit -= 1
                    return self._error(request_id, "UNAVAILABLE", "M_LIMIT_EXCEEDED: Too Many Requests",
                                       retryable=True, retryAfterMs=self.retry_after_ms), False
                if self.fail_sends:
                    error = self.fail_sends.pop(0)
                    return self._error(request_id, error["code"], error["message"], error.get("details")), False
                if self.queue_sends:
                    self.queue_sends -= 1
                    self.queued.append(params)
                    return self._error(request_id, "UNAVAILABLE", 'OutboundDeliveryError: "fetch failed"',
                                       {"code": "OUTBOUND_DELIVERY_QUEUED"}), False
                lose = self.lose_replies > 0
                self.lose_replies -= int(lose)
            message = self._deliver(params)
            return {"type": "res", "id": request_id, "ok": True,
                    "payload": {"runId": params["idempotencyKey"], "messageId": message.id,
                                "channel": params.get("channel")}}, lose
        if method == "message.action" and params.get("action") == "edit":
            inner = params.get("params") or {}
            if params.get("conversationReadOrigin") != "direct-operator":
                return self._error(request_id, "UNAVAILABLE", "edit requires the exact current conversation"), False
            with self._lock:
                target = next((m for m in self.chat if m.id == inner.get("messageId")), None)
                if target is None:
                    return self._error(request_id, "UNAVAILABLE", "M_NOT_FOUND: Event not found"), False
                target.edits.append((time.time(), str(inner.get("message"))))
            return {"type": "res", "id": request_id, "ok": True,
                    "payload": {"ok": True, "result": {"eventId": f"$edit-{uuid.uuid4().hex[:8]}"}}}, False
        return self._error(request_id, "INVALID_REQUEST", f"unknown method: {method}"), False

    def _deliver(self, params: dict[str, Any]) -> Message:
        message = Message(f"${uuid.uuid4().hex[:12]}", str(params.get("message")), time.time())
        with self._lock:
            self.chat.append(message)
        return message
