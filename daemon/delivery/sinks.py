"""Sinks: how the daemon itself puts a message in the chat, and edits one it put there.

Each sink has two operations: `send(text, payload)` returns the new message's id when the chat
reports one (None otherwise), and `edit(message_id, text, payload)` replaces a message's text.
Both return on success and raise DeliveryError with one readable line otherwise. `payload` is the
JSON that goes with the text (the notification, or the card and the rows it carries).

* `ExecSink` runs a command with the text as its last argument and the payload on stdin, e.g.
  `openclaw message send --channel telegram --target 123 --message`. Never through a shell: a task
  named `$(touch X)` is just text. An optional edit command makes the live card possible.
* `OpenClawSink` is the preset for the OpenClaw CLI: it builds the send/edit command lines, reads
  the message id from `--json`, and reports OpenClaw's own reason when a call fails.
* `WebhookSink` POSTs the payload (stdlib urllib), headers may name environment variables
  (`Authorization: Bearer ${CHAT_TOKEN}`) so secrets stay out of the unit file and the logs.

Commands run in their own session and die with the daemon (a call in flight when the daemon is
killed is not completed behind its back, so its retry after a restart is the only delivery).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import http.client
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol

from task_pulse.config import expand_env
from task_pulse.messages import clean

# Channels whose messages `openclaw message edit` can change (OpenClaw 2026.9).
OPENCLAW_EDITABLE = frozenset({"discord", "matrix", "msteams", "slack", "telegram"})


class DeliveryError(Exception):
    pass


class Sink(Protocol):
    name: str
    timeout: float
    can_edit: bool

    def send(self, text: str, payload: dict[str, Any]) -> str | None: ...

    def edit(self, message_id: str, text: str, payload: dict[str, Any]) -> None: ...

    def describe(self) -> str:
        """Where it delivers, safe for a log line (no arguments, no URL path, no header values)."""
        ...

    def identity(self) -> str:
        """A stable name for the chat it writes to: a card sent through another sink is not edited."""
        ...


def message_id_in(reply: Any) -> str | None:
    """The id of the message a chat reply describes, wherever the channel nests it.

    `messageId` / `message_id` at any depth (breadth first: the shallowest wins), else a top-level
    `id`; never the `id` of some nested object (a channel, a user).
    """
    level = [reply]
    while level:
        for node in level:
            if isinstance(node, dict):
                found = _id_value(node.get("messageId", node.get("message_id")))
                if found:
                    return found
        level = [v for node in level for v in (node.values() if isinstance(node, dict) else
                                               node if isinstance(node, list) else ())]
    return _id_value(reply.get("id")) if isinstance(reply, dict) else None


def _id_value(value: Any) -> str | None:
    if isinstance(value, str | int) and not isinstance(value, bool) and str(value).strip():
        return str(value)
    return None


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


def die_with_parent(parent: int) -> Callable[[], None]:
    """What the child runs between fork and exec: die with the daemon (kill -9 included).

    PR_SET_PDEATHSIG only covers a parent that dies after it is set. A daemon killed between the
    fork and that call leaves the child to init: it must see that and stop, or its message goes out
    while the restarted daemon sends it again.
    """

    def arm() -> None:
        _PRCTL(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(1)

    return arm


_PRCTL: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl


def run_command(argv: list[str], stdin: bytes, timeout: float,
                env: dict[str, str] | None = None) -> tuple[int, bytes, bytes]:
    """Run `argv`, killing it (and anything it started) at `timeout`. Returns (code, stdout, stderr)."""
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                close_fds=True, start_new_session=True, preexec_fn=die_with_parent(os.getpid()),
                                env=env)
    except OSError as exc:
        raise DeliveryError(f"cannot run {os.path.basename(argv[0])}: {exc.strerror}") from None
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        finished = proc.poll() is not None  # it is done; something it left behind holds its output open
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        try:
            out, err = proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:  # a descendant in another session still holds the pipes
            proc.kill()
            out, err = b"", b""
        if not finished:
            raise DeliveryError(f"{os.path.basename(argv[0])} timed out after {timeout:g} s") from None
    return proc.returncode, out, err


def resolve_program(word: str, option: str) -> str:
    """`word` as an absolute path to an executable, found on PATH if it is a bare name."""
    found = shutil.which(word)
    if found is None:
        raise ValueError(f"{option}: {word!r} is not an executable program" if os.sep in word else
                         f"{option}: no program {word!r} on PATH (give its full path)")
    return os.path.abspath(found)


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:16]


class ExecSink:
    """`CMD … TEXT` sends; with an edit command, `EDIT … TEXT` edits (`{id}` in it is the message id,
    else the id goes just before the text). A send that prints JSON with a message id makes a card."""

    name = "exec"

    def __init__(self, command: str, timeout: float = 30, edit_command: str | None = None) -> None:
        self.argv = self._split(command, "--exec")
        self.edit_argv = None if edit_command is None else self._split(edit_command, "--exec-edit")
        self.timeout = timeout
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

    def _run(self, argv: list[str], payload: dict[str, Any]) -> bytes:
        code, out, err = run_command(argv, json.dumps(payload, ensure_ascii=False).encode(), self.timeout)
        if code != 0:
            reason = first_reason(err)[:200]
            raise DeliveryError(f"{os.path.basename(argv[0])} exited {code}" + (f": {reason}" if reason else ""))
        return out

    def send(self, text: str, payload: dict[str, Any]) -> str | None:
        return message_id_in(_json_reply(self._run([*self.argv, text], payload)))

    def edit(self, message_id: str, text: str, payload: dict[str, Any]) -> None:
        assert self.edit_argv is not None
        words = [w.replace("{id}", message_id) for w in self.edit_argv]
        self._run([*words, text] if words != self.edit_argv else [*words, message_id, text], payload)

    def describe(self) -> str:
        return os.path.basename(self.argv[0])

    def identity(self) -> str:
        return f"exec:{_digest(shlex.join(self.argv))}"


class OpenClawSink:
    """`openclaw message send/edit` to one CHANNEL:TARGET, with `--json` to learn the message id."""

    name = "openclaw"

    def __init__(self, destination: str, timeout: float = 60, program: str = "openclaw") -> None:
        channel, sep, target = destination.partition(":")
        if not sep or not channel.strip() or not target.strip():
            raise ValueError(f"--openclaw {destination!r}: expected CHANNEL:TARGET, "
                             "e.g. telegram:123456789 or irc:#ops")
        self.channel, self.target = channel.strip().lower(), target.strip()
        self.program = resolve_program(program, "--openclaw-bin")
        self.timeout = timeout
        self.can_edit = self.channel in OPENCLAW_EDITABLE
        # Its log lines are coloured whenever TERM is set, even into a pipe: plain text for our log.
        self.env = {**os.environ, "NO_COLOR": "1"}

    def _run(self, verb: str, *args: str) -> Any:
        argv = [self.program, "message", verb, "--channel", self.channel, "--target", self.target, *args, "--json"]
        code, out, err = run_command(argv, b"", self.timeout, env=self.env)
        reply = _json_reply(out)
        failed = isinstance(reply, dict) and reply.get("ok") is False
        if code != 0 or failed:
            error = reply.get("error") if isinstance(reply, dict) else None
            if isinstance(error, dict):
                error = error.get("message") or json.dumps(error, ensure_ascii=False)
            reason = clean(error, 200) if error else first_reason(err)[:200]
            raise DeliveryError(f"openclaw message {verb} exited {code}" + (f": {reason}" if reason else ""))
        return reply

    def send(self, text: str, payload: dict[str, Any]) -> str | None:
        return message_id_in(self._run("send", "--message", text))

    def edit(self, message_id: str, text: str, payload: dict[str, Any]) -> None:
        self._run("edit", "--message-id", message_id, "--message", text)

    def describe(self) -> str:
        return f"{self.channel} (openclaw)"

    def identity(self) -> str:
        return f"openclaw:{self.channel}:{_digest(self.target)}"


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


class WebhookSink:
    """POST the payload as JSON. A reply naming a message id makes a card: edits are POSTed with
    `"action": "edit"` and that `messageId`."""

    name = "webhook"
    can_edit = True

    def __init__(self, url: str, headers: list[str] | None = None, timeout: float = 30) -> None:
        # `${VAR}` in the URL: a token in it (Telegram's /bot<token>/) stays out of `ps` and unit files.
        url = expand_env(url, "--webhook")
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--webhook needs an http(s) URL, got {self._redact(url)!r}")
        self.url, self.timeout = url, timeout
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

    def send(self, text: str, payload: dict[str, Any]) -> str | None:
        return message_id_in(_json_reply(self._post({**payload, "text": text})))

    def edit(self, message_id: str, text: str, payload: dict[str, Any]) -> None:
        self._post({**payload, "action": "edit", "messageId": message_id, "text": text})

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
