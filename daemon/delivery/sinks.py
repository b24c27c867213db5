"""Sinks: how the daemon itself puts a message in the chat, and edits one it put there.

Each sink has two operations: `send(text, payload, key)` returns what came of it (`Sent`: the new
message's id when the chat reports one, or that OpenClaw's own queue took it over), and `edit(message_id,
text, payload, key)` replaces a message's text. Both raise DeliveryError with one readable line
otherwise, saying whether the message may have gone out, whether retrying can help and how long the chat
asked us to wait. `payload` is the JSON that goes with the text (the notification, or the card and the
rows it carries); `key` is the call's idempotency key, the same for every retry of the same call.

* `ExecSink` runs a command with the text as its last argument and the payload on stdin, e.g.
  `mychat send --json --text`. Never through a shell: a task named `$(touch X)` is just text. An
  optional edit command makes the live card possible.
* `OpenClawCLI` is the preset for the OpenClaw CLI (`openclaw message send/edit --json`): it reads the
  message id from the reply and reports OpenClaw's own reason when a call fails. `--openclaw` delivers
  through the running gateway first (gateway/sink.py) and uses this only for what the gateway never got.
* `WebhookSink` POSTs the payload (stdlib urllib), headers may name environment variables
  (`Authorization: Bearer ${CHAT_TOKEN}`) so secrets stay out of the unit file and the logs.

Commands run under a reaper (processes.py): they and everything they start end with the call, at the
timeout, and with the daemon (a call in flight when the daemon is killed is not completed behind its back,
so its retry after a restart is the only delivery).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import re
import shlex
import shutil
import urllib.error
import urllib.parse
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from task_pulse.config import expand_env
from task_pulse.markup import MARKDOWN, PLAIN
from task_pulse.messages import clean
from task_pulse.records import safe_message_id
from task_pulsed.delivery.pacing import UNPACED, Limits, channel_limits
from task_pulsed.delivery.processes import ProcessSlots, run_supervised
from task_pulsed.delivery.results import DeliveryError, Sent

log = logging.getLogger("task-pulsed")
# Channels whose messages `openclaw message edit` can change (OpenClaw 2026.9).
OPENCLAW_EDITABLE = frozenset({"discord", "matrix", "msteams", "slack", "telegram"})


class Sink(ABC):
    """One way into the chat. Subclasses give `send`, `edit`, `describe` and `identity`; the rest has
    defaults: no replays (a retry is a new call), no pace of its own, one route, nothing to start."""

    name: str
    timeout: float
    can_edit: bool
    limits: Limits = UNPACED  # the chat's pace (see pacing.py)
    markup: str = PLAIN  # what the chat makes of the text: task text is escaped for it (markup.py)
    # Whether a send can end in doubt (written, no answer) and be asked again with its key: the courier
    # then notes each send before it is made (see the `handoffs` table) and asks again through `replay`.
    replays = False
    on_route: Callable[[str], None] | None = None  # told when `route()` changes (see app.py: STATUS)

    @abstractmethod
    def send(self, text: str, payload: dict[str, Any], key: str,
             before_write: Callable[[], None] | None = None) -> Sent:
        """Send a new message. A sink that `replays` calls `before_write` just before a request that can end
        in doubt goes out (the courier notes the send there); others never call it."""

    @abstractmethod
    def edit(self, message_id: str, text: str, payload: dict[str, Any], key: str) -> Sent:
        """Replace the text of the message `message_id` (what comes back names the route it took)."""

    @abstractmethod
    def describe(self) -> str:
        """Where it delivers, safe for a log line (no arguments, no URL path, no header values)."""

    @abstractmethod
    def identity(self) -> str:
        """A stable name for the chat it writes to: a card sent through another sink is not edited."""

    def replay(self, text: str, payload: dict[str, Any], key: str, boot_id: str | None) -> Sent:
        """Ask again, the same way, for a send that ended in doubt (only where `replays`)."""
        raise DeliveryError(f"the {self.describe()} sink cannot ask again for a send in doubt")

    def route(self) -> str:
        """The way messages go now, for STATUS and the log (e.g. `gateway ws://127.0.0.1:18789`)."""
        return self.describe()

    def boot_id(self) -> str | None:
        """What remembers idempotency keys now (the gateway's boot id), if anything does."""
        return None

    def start(self) -> None:  # noqa: B027 - most sinks have nothing to start
        """Before the first call (a connection to open, say)."""

    def stop(self) -> None:  # noqa: B027
        """After the last call."""


def message_id_in(reply: Any) -> str | None:
    """The id of the message a chat reply describes, wherever the channel nests it.

    `messageId` / `message_id` at any depth (breadth first: the shallowest wins), else a top-level
    `id`; never the `id` of some nested object (a channel, a user). Only an id that can be passed on safely
    (`records.safe_message_id`: never one that reads as an option).
    """
    level = [reply]
    while level:
        for node in level:
            if isinstance(node, dict):
                found = safe_message_id(node.get("messageId", node.get("message_id")))
                if found:
                    return found
        level = [v for node in level for v in (node.values() if isinstance(node, dict) else
                                               node if isinstance(node, list) else ())]
    return safe_message_id(reply.get("id")) if isinstance(reply, dict) else None


def _json_reply(stdout: bytes) -> Any:
    """The JSON a command printed, also with log lines before or after it (the last object that parses)."""
    text = stdout.decode(errors="replace")
    decoder = json.JSONDecoder()
    found, at = None, text.find("{")
    while at != -1:
        try:
            found, end = decoder.raw_decode(text, at)
        except ValueError:
            end = at + 1
        at = text.find("{", end)
    return found


_REASON_WORDS = re.compile(r"error|fail|not |unreachable|refused|denied|invalid|missing|unknown|cannot|can't|"
                           r"timed? ?out|unauthori[sz]ed|forbidden|no such|econn|enoent", re.I)


def first_reason(stderr: bytes) -> str:
    """The line of a command's stderr that says what went wrong: colour codes stripped, info lines
    ("Config: …", "Bind: loopback") skipped; else the last line."""
    lines = [clean(line) for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    return next((line for line in lines if _REASON_WORDS.search(line)), lines[-1] if lines else "")


def _queued_by_openclaw(reply: Any) -> bool:
    """Whether a failed `openclaw message send --json` left the message in OpenClaw's delivery queue: it failed
    at the chat (`platform_send`) with nothing of it sent, so the queue row it wrote first stays pending."""
    payload = reply.get("payload") if isinstance(reply, dict) else None
    outcomes = payload.get("payloadOutcomes") if isinstance(payload, dict) else None
    return isinstance(outcomes, list) and bool(outcomes) and all(
        isinstance(o, dict) and o.get("stage") == "platform_send" and o.get("status") == "failed"
        and not o.get("sentBeforeError") for o in outcomes)


def resolve_program(word: str, option: str) -> str:
    """`word` as an absolute path to an executable, found on PATH if it is a bare name."""
    found = shutil.which(word)
    if found is None:
        raise ValueError(f"{option}: {word!r} is not an executable program" if os.sep in word else
                         f"{option}: no program {word!r} on PATH (give its full path)")
    return os.path.abspath(found)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class ExecSink(Sink):
    """`CMD … TEXT` sends; with an edit command, `EDIT … TEXT` edits (`{id}` in it is the message id,
    else the id goes just before the text). A send that prints JSON with a message id makes a card. The
    payload on stdin carries the call's `idempotencyKey`: a sender that can, may skip one it has seen."""

    name = "exec"

    def __init__(self, command: str, timeout: float = 30, edit_command: str | None = None,
                 slots: ProcessSlots | None = None, limits: Limits = UNPACED, markup: str = PLAIN) -> None:
        self.argv = self._split(command, "--exec")
        self.edit_argv = None if edit_command is None else self._split(edit_command, "--exec-edit")
        self.timeout, self.slots, self.limits, self.markup = timeout, slots, limits, markup
        self.can_edit = self.edit_argv is not None

    @staticmethod
    def _split(command: str, option: str) -> list[str]:
        try:
            argv = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"{option} {command!r}: {exc}") from None
        if not argv:
            raise ValueError(f"{option} needs a command")
        # A missing program is one error at start-up, not one per message; found once, by its full path.
        return [resolve_program(argv[0], option), *argv[1:]]

    def _run(self, argv: list[str], payload: dict[str, Any], key: str) -> bytes:
        stdin = json.dumps({**payload, "idempotencyKey": key}, ensure_ascii=False).encode()
        code, out, err = run_supervised(argv, stdin, self.timeout, slots=self.slots)
        if code != 0:
            reason = first_reason(err)[:200]
            raise DeliveryError(f"{os.path.basename(argv[0])} exited {code}" + (f": {reason}" if reason else ""))
        return out

    def send(self, text: str, payload: dict[str, Any], key: str,
             before_write: Callable[[], None] | None = None) -> Sent:
        return Sent(message_id_in(_json_reply(self._run([*self.argv, text], payload, key))))

    def edit(self, message_id: str, text: str, payload: dict[str, Any], key: str) -> Sent:
        assert self.edit_argv is not None
        message_id = _passed_on(message_id)
        words = [w.replace("{id}", message_id) for w in self.edit_argv]
        self._run([*words, text] if words != self.edit_argv else [*words, message_id, text], payload, key)
        return Sent(message_id)

    def describe(self) -> str:
        return os.path.basename(self.argv[0])

    def identity(self) -> str:
        return f"exec:{_digest(shlex.join(self.argv))}"


def _passed_on(message_id: str) -> str:
    """`message_id` as it goes into a command line; a permanent DeliveryError for one that could read as an
    option there (the courier checks stored ids first: this is the last word)."""
    if safe_message_id(message_id) is None:
        raise DeliveryError(f"message id {clean(message_id, 40)!r} is not one a chat gives: not passed to a command",
                            permanent=True)
    return message_id


def openclaw_destination(destination: str) -> tuple[str, str]:
    """`CHANNEL:TARGET` of `--openclaw`, as (channel, target); ValueError when it is not one."""
    channel, sep, target = destination.partition(":")
    if not sep or not channel.strip() or not target.strip():
        raise ValueError(f"--openclaw {destination!r}: expected CHANNEL:TARGET, e.g. telegram:123456789 or irc:#ops")
    return channel.strip().lower(), target.strip()


def openclaw_identity(channel: str, target: str) -> str:
    """One OpenClaw chat, whichever route reaches it."""
    return f"openclaw:{channel}:{_digest(target)}"


class OpenClawCLI(Sink):
    """`openclaw message send/edit` to one CHANNEL:TARGET, with `--json` to learn the message id.

    Each call starts Node and loads the channel's plugin (10–18 s on Matrix), which is why `--openclaw`
    goes through the running gateway first. Whether a failed send may be made again is read from its
    reply: OpenClaw 2026.9 writes every CLI send into its own delivery queue first, and a send that failed at
    the chat (`payloadOutcomes[].stage` `platform_send`) stays there, for a gateway on the same state dir
    to deliver once the chat is back. Sending it again would send it twice: it is handed over.
    """

    name = "openclaw"
    markup = MARKDOWN  # OpenClaw renders every message it sends as Markdown, on every channel (markup.py)

    def __init__(self, destination: str, timeout: float = 60, program: str = "openclaw",
                 slots: ProcessSlots | None = None) -> None:
        self.channel, self.target = openclaw_destination(destination)
        self.program = resolve_program(program, "--openclaw-bin")
        self.timeout, self.slots = timeout, slots
        self.can_edit = self.channel in OPENCLAW_EDITABLE
        self.limits = channel_limits(self.channel, self.target)
        # Its log lines are coloured whenever TERM is set, even into a pipe: plain text for our log. Without
        # OPENCLAW_NO_RESPAWN it starts itself again in a session of its own, one more Node per call.
        self.env = {**os.environ, "NO_COLOR": "1", "OPENCLAW_NO_RESPAWN": "1"}

    def _run(self, verb: str, *args: str) -> tuple[Any, str | None]:
        """OpenClaw's reply, and None; or (None, its reason) for a send OpenClaw kept in its own queue."""
        argv = [self.program, "message", verb, "--channel", self.channel, "--target", self.target, *args, "--json"]
        code, out, err = run_supervised(argv, b"", self.timeout, env=self.env, slots=self.slots)
        reply = _json_reply(out)
        failed = isinstance(reply, dict) and reply.get("ok") is False
        if code != 0 or failed:
            error = reply.get("error") if isinstance(reply, dict) else None
            if isinstance(error, dict):
                error = error.get("message") or json.dumps(error, ensure_ascii=False)
            reason = clean(error, 200) if error else first_reason(err)[:200]
            if verb == "send" and _queued_by_openclaw(reply):
                return None, reason
            raise DeliveryError(f"openclaw message {verb} exited {code}" + (f": {reason}" if reason else ""))
        return reply, None

    def send(self, text: str, payload: dict[str, Any], key: str,
             before_write: Callable[[], None] | None = None) -> Sent:
        reply, queued = self._run("send", "--message", text)
        if queued is not None:
            log.info("openclaw message send to %s failed (%s) and OpenClaw kept it in its queue: a gateway on its "
                     "state dir delivers it when the chat is back; never sent again from here", self.channel, queued)
            return Sent(handed_over=True, route="cli queue")
        return Sent(message_id_in(reply), route="cli")

    def edit(self, message_id: str, text: str, payload: dict[str, Any], key: str) -> Sent:
        self._run("edit", "--message-id", _passed_on(message_id), "--message", text)
        return Sent(message_id, route="cli")

    def describe(self) -> str:
        return f"{self.channel} (openclaw)"

    def route(self) -> str:
        return f"the openclaw CLI ({self.program})"

    def identity(self) -> str:
        return openclaw_identity(self.channel, self.target)


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx is an answer, not a delivery: following it would re-send the body, and with it the
    Authorization header, to wherever the endpoint points (another host included)."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises the 3xx as an HTTPError


def parse_header(header: str, env: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, str]:
    """`Name: value` with `${VAR}` taken from the environment (a missing variable is an error)."""
    name, sep, value = header.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
        raise ValueError(f"--webhook-header {name.strip() or header!r}: expected 'Name: value'")

    value = expand_env(value.strip(), f"--webhook-header {name.strip()}", env)
    if "\n" in value or "\r" in value:
        raise ValueError(f"--webhook-header {name.strip()}: a value may not contain a line break")
    return name.strip(), value


class WebhookSink(Sink):
    """POST the payload as JSON. A reply naming a message id makes a card: edits are POSTed with
    `"action": "edit"` and that `messageId`. Every POST carries the call's `idempotencyKey`."""

    name = "webhook"
    can_edit = True

    def __init__(self, url: str, headers: list[str] | None = None, timeout: float = 30,
                 limits: Limits = UNPACED, markup: str = PLAIN) -> None:
        # `${VAR}` in the URL: a token in it (Telegram's /bot<token>/) stays out of `ps` and unit files.
        url = expand_env(url, "--webhook")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--webhook needs an http(s) URL, got {self._redact(url)!r}")
        self.url, self.timeout, self.limits, self.markup = url, timeout, limits, markup
        self.headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "task-pulsed"}
        self.headers.update(parse_header(h) for h in headers or [])
        self._opener = urllib.request.build_opener(_NoRedirects)

    def _post(self, payload: dict[str, Any]) -> bytes:
        body = json.dumps(payload, ensure_ascii=False).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                status, reply = response.status, response.read(65536)
        except urllib.error.HTTPError as exc:
            moved = " (a redirect: not followed, not delivered)" if 300 <= exc.code < 400 else ""
            raise DeliveryError(f"{self.describe()} answered HTTP {exc.code}{moved}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{self.describe()} unreachable: {reason}") from None
        except http.client.HTTPException as exc:  # a malformed answer (BadStatusLine, …)
            raise DeliveryError(f"{self.describe()} answered badly: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"{self.describe()} answered HTTP {status}")
        return reply

    def send(self, text: str, payload: dict[str, Any], key: str,
             before_write: Callable[[], None] | None = None) -> Sent:
        reply = self._post({**payload, "text": text, "idempotencyKey": key})
        return Sent(message_id_in(_json_reply(reply)))

    def edit(self, message_id: str, text: str, payload: dict[str, Any], key: str) -> Sent:
        self._post({**payload, "action": "edit", "messageId": message_id, "text": text, "idempotencyKey": key})
        return Sent(message_id)

    @staticmethod
    def _redact(url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/…"

    def describe(self) -> str:
        # The path and query often carry a token (e.g. /bot<token>/sendMessage): never logged.
        return self._redact(self.url)

    def identity(self) -> str:
        return f"webhook:{_digest(self.url)}"
