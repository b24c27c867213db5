"""The board's web server: Starlette on uvicorn. One page, its script and style, its JSON, its event stream.

Why these two: Starlette is a small, typed ASGI toolkit (routing, static files from package data,
streaming responses) with one dependency of its own (anyio); uvicorn is the ASGI server it is made
for, pure Python with h11. Both are maintained by the same people (Encode), and Server-Sent Events
are a plain streaming response: no extra package, and no WebSocket library on the server side.

Safe by default:
* Without a token it listens on loopback only (`task-pulse board` refuses anything else) and answers
  only to a loopback Host header, so a web page elsewhere cannot read it through DNS rebinding.
* With a token every request needs it: `Authorization: Bearer TOKEN`, or the session cookie that the
  login form (a POST, so the token is in no URL, history or log) sets: an HMAC of the token, HttpOnly,
  SameSite=Strict. Compared in constant time. No access log is kept.
* Every response carries a Content-Security-Policy that allows scripts from the board itself only
  (no inline script, no eval, nothing from elsewhere), and no framing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import ipaddress
import signal
import socket
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.resources import files
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from task_pulse.board.live import Hub, Refresher
from task_pulse.board.source import Source
from task_pulse.board.view import page_json

COOKIE = "task_pulse_board"
COOKIE_DAYS = 30
KEEPALIVE_SECONDS = 15.0  # a comment line on an idle stream, so proxies and the browser keep it open
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
SECURITY_HEADERS = [(b"content-security-policy", CSP.encode()), (b"x-content-type-options", b"nosniff"),
                    (b"referrer-policy", b"no-referrer"), (b"x-frame-options", b"DENY"),
                    (b"cross-origin-opener-policy", b"same-origin"),
                    (b"cross-origin-resource-policy", b"same-origin")]
# What a browser without the token may fetch: the login form and its style.
OPEN_PATHS = frozenset({"/login", "/static/board.css"})
NO_STORE = {"Cache-Control": "no-store"}
MAX_FORM_BYTES = 4096


def is_loopback(host: str) -> bool:
    """Whether an address (or `localhost`) is this machine's loopback."""
    host = host.strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _host_of(header: str) -> str:
    """The host part of a Host header (`127.0.0.1:8765`, `[::1]:8765`, `localhost`)."""
    if header.startswith("["):
        return header[1:].partition("]")[0]
    return header.rpartition(":")[0] if header.count(":") == 1 else header


@dataclass(frozen=True)
class BoardConfig:
    bind: str
    port: int
    token: str | None
    limit: int
    lang: str
    redact_secrets: bool
    where: str  # the tasks dir, or the shared state db's shown URL
    shared: bool


def _static(name: str) -> bytes:
    return (files("task_pulse.board") / "static" / name).read_bytes()


class Guard:
    """ASGI middleware: the security headers on every response, the Host check without a token, the
    token on every request with one."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app, self.token = app, token
        self.state: dict[str, Any] = {}  # the app's (see create_app)
        self.session = hmac.new(token.encode(), b"task-pulse board session", hashlib.sha256).hexdigest() \
            if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        headers = Headers(scope=scope)
        refusal: Response | None = None
        if self.token is None and not is_loopback(_host_of(headers.get("host", ""))):
            refusal = PlainTextResponse("without a token the board answers only at 127.0.0.1, localhost or [::1]\n",
                                        421)
        elif self.token is not None and scope["path"] not in OPEN_PATHS and not self.admitted(headers):
            refusal = RedirectResponse("/login", 303) if scope["path"] == "/" else PlainTextResponse(
                "this board needs its token\n", 401, headers={"WWW-Authenticate": 'Bearer realm="task-pulse board"'})
        await (refusal or self.app)(scope, receive, send_secured)

    def admitted(self, headers: Headers) -> bool:
        assert self.token is not None and self.session is not None
        scheme, _, given = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.token.encode()):
            return True
        for part in headers.get("cookie", "").split(";"):
            name, _, value = part.strip().partition("=")
            if name == COOKIE and hmac.compare_digest(value.encode(), self.session.encode()):
                return True
        return False


def create_app(config: BoardConfig, source: Source) -> Guard:
    """The board's ASGI app, reading `source` (its Refresher starts and stops with the app), behind its Guard."""
    meta = {"lang": config.lang, "where": config.where, "shared": config.shared, "limit": config.limit}
    index, login = _static("index.html"), _static("login.html")
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        hub, loop = Hub(meta), asyncio.get_running_loop()
        refresher = Refresher(source, hub, loop, config.redact_secrets)
        state.update(hub=hub, refresher=refresher, loop=loop)
        refresher.start()
        try:
            yield
        finally:
            hub.close()
            refresher.stop()
            await run_in_threadpool(refresher.join, 10)

    async def page(_request: Request) -> Response:
        return HTMLResponse(index, headers={"Cache-Control": "no-cache"})

    async def login_form(request: Request) -> Response:
        if request.method == "GET":
            return HTMLResponse(login, headers={"Cache-Control": "no-cache"})
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return PlainTextResponse("too long\n", 413)
        given = urllib.parse.parse_qs(body.decode("utf-8", "replace")).get("token", [""])[0].strip()
        guard: Guard = state["guard"]
        if guard.token is None or not hmac.compare_digest(given.encode(), guard.token.encode()):
            return HTMLResponse(login.replace(b'class="refused" hidden', b'class="refused"'), 401)
        response = RedirectResponse("/", 303)
        response.set_cookie(COOKIE, guard.session or "", max_age=COOKIE_DAYS * 86400, httponly=True,
                            samesite="strict", path="/")
        return response

    async def board_json(_request: Request) -> Response:
        hub: Hub = state["hub"]
        await hub.ready.wait()
        return Response(hub.full_json(), media_type="application/json", headers=NO_STORE)

    async def task_json(request: Request) -> Response:
        hub: Hub = state["hub"]
        await hub.ready.wait()
        key = request.query_params.get("key", "")
        where = hub.view.where.get(key) or (None if config.shared else ("", key))
        found = None
        if where is not None:
            try:
                found = await run_in_threadpool(source.detail, where[0], where[1], datetime.now(UTC))
            except source.errors as exc:  # a busy state db, a shared db away: said, not a stack trace
                reason = " ".join(str(exc).split()) or type(exc).__name__
                return Response(page_json({"error": f"cannot read {source.where}: {reason}"}), 503,
                                media_type="application/json", headers=NO_STORE)
        if found is None:
            return Response(page_json({"error": "no such task"}), 404, media_type="application/json",
                            headers=NO_STORE)
        return Response(page_json({**found, "lang": config.lang}), media_type="application/json", headers=NO_STORE)

    async def events(_request: Request) -> Response:
        hub: Hub = state["hub"]
        await hub.ready.wait()
        client = hub.subscribe()

        async def stream() -> AsyncIterator[str]:
            try:
                yield f"retry: 1000\nevent: board\ndata: {hub.full_json()}\n\n"
                while not client.closed:
                    try:
                        await asyncio.wait_for(client.wake.wait(), KEEPALIVE_SECONDS)
                    except TimeoutError:
                        yield ": keepalive\n\n"
                        continue
                    client.wake.clear()
                    if client.closed:
                        return
                    if client.reset:
                        client.reset, client.pending = False, []
                        yield f"event: board\ndata: {hub.full_json()}\n\n"
                    elif client.pending:
                        waiting, client.pending = client.pending, []
                        yield "".join(waiting)
            finally:
                hub.unsubscribe(client)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={**NO_STORE, "X-Accel-Buffering": "no"})

    app = Starlette(routes=[
        Route("/", page), Route("/login", login_form, methods=["GET", "POST"]),
        Route("/api/board", board_json), Route("/api/task", task_json), Route("/events", events),
        Mount("/static", StaticFiles(packages=[("task_pulse.board", "static")]), name="static"),
    ], lifespan=lifespan)
    guard = Guard(app, config.token)
    guard.state = state
    state["guard"] = guard
    return guard


class _Server(uvicorn.Server):
    """uvicorn's server, which also ends every open event stream when told to stop (an open stream would
    otherwise hold the shutdown for its whole grace period), and exits 0 once it stopped for SIGTERM or
    SIGINT, as task-pulsed does, rather than dying of the signal after the fact."""

    on_exit: Callable[[], None] = staticmethod(lambda: None)

    def handle_exit(self, sig: int, frame: Any) -> None:
        super().handle_exit(sig, frame)
        self.on_exit()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def listening_socket(bind: str, port: int) -> socket.socket:
    """The board's socket, bound now (so the port is known, `--port 0` too, before anything is served).
    OSError: taken, or not an address of this machine."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((bind.strip("[]"), port))
        sock.listen(128)
        sock.set_inheritable(True)
    except BaseException:
        sock.close()
        raise
    return sock


def serve(config: BoardConfig, source: Source, sock: socket.socket) -> None:
    """Serve the board on `sock` until SIGINT or SIGTERM."""
    app = create_app(config, source)
    state = app.state
    server = _Server(uvicorn.Config(app, loop="asyncio", http="h11", ws="none", lifespan="on",
                                    log_level="warning", access_log=False, server_header=False,
                                    timeout_graceful_shutdown=3))

    def end_streams() -> None:
        if "hub" in state:
            state["loop"].call_soon_threadsafe(state["hub"].close)

    server.on_exit = end_streams
    server.run(sockets=[sock])
