"""Sinks: how the daemon itself pushes a notification to the chat.

* `ExecSink` runs a command with the message text as its last argument and the notification JSON
  on stdin, e.g. `openclaw message send --channel telegram --target 123 --message`. Never through a
  shell: a task named `$(touch X)` is just text.
* `WebhookSink` POSTs the notification JSON (stdlib urllib) with optional headers whose values may
  name environment variables (`Authorization: Bearer ${CHAT_TOKEN}`), so secrets stay out of the
  unit file and out of the logs.

`deliver` returns on success and raises DeliveryError with a one-line reason otherwise.
"""

from __future__ import annotations

import http.client
import json
import os
import re
import shlex
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Protocol


class DeliveryError(Exception):
    pass


class Sink(Protocol):
    name: str
    timeout: float

    def deliver(self, notification: dict[str, Any]) -> None: ...

    def describe(self) -> str:
        """Where it delivers, safe for a log line (no arguments, no URL path, no header values)."""
        ...


class ExecSink:
    name = "exec"

    def __init__(self, command: str, timeout: float = 30) -> None:
        try:
            self.argv = shlex.split(command)
        except ValueError as exc:
            raise ValueError(f"--exec {command!r}: {exc}") from None
        if not self.argv:
            raise ValueError("--exec needs a command")
        self.timeout = timeout

    def deliver(self, notification: dict[str, Any]) -> None:
        payload = json.dumps(notification, ensure_ascii=False).encode()
        try:
            proc = subprocess.run([*self.argv, notification["text"]], input=payload, capture_output=True,
                                  timeout=self.timeout, close_fds=True)
        except subprocess.TimeoutExpired:
            raise DeliveryError(f"{self.describe()} timed out after {self.timeout:g} s") from None
        except OSError as exc:
            raise DeliveryError(f"cannot run {self.argv[0]}: {exc.strerror}") from None
        if proc.returncode != 0:
            last = (proc.stderr.decode(errors="replace").strip().splitlines() or [""])[-1][:200]
            raise DeliveryError(f"{self.describe()} exited {proc.returncode}" + (f": {last}" if last else ""))

    def describe(self) -> str:
        return os.path.basename(self.argv[0])


_ENV_REFERENCE = re.compile(r"\$\{(\w+)\}")


def parse_header(header: str, env: dict[str, str] | os._Environ[str] = os.environ) -> tuple[str, str]:
    """`Name: value` with `${VAR}` taken from the environment (a missing variable is an error)."""
    name, sep, value = header.partition(":")
    if not sep or not name.strip() or any(c in name for c in " \t\r\n"):
        raise ValueError(f"--webhook-header {name.strip() or header!r}: expected 'Name: value'")

    def expand(match: re.Match[str]) -> str:
        if match.group(1) not in env:
            raise ValueError(f"--webhook-header {name.strip()}: environment variable {match.group(1)} is not set")
        return env[match.group(1)]

    value = _ENV_REFERENCE.sub(expand, value.strip())
    if "\n" in value or "\r" in value:
        raise ValueError(f"--webhook-header {name.strip()}: a value may not contain a line break")
    return name.strip(), value


class WebhookSink:
    name = "webhook"

    def __init__(self, url: str, headers: list[str] | None = None, timeout: float = 30) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"--webhook needs an http(s) URL, got {self._redact(url)!r}")
        self.url, self.timeout = url, timeout
        self.headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "task-pulsed"}
        self.headers.update(parse_header(h) for h in headers or [])

    def deliver(self, notification: dict[str, Any]) -> None:
        body = json.dumps(notification, ensure_ascii=False).encode()
        request = urllib.request.Request(self.url, data=body, headers=self.headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            raise DeliveryError(f"{self.describe()} answered HTTP {exc.code}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DeliveryError(f"{self.describe()} unreachable: {reason}") from None
        except http.client.HTTPException as exc:  # a malformed answer (BadStatusLine, …)
            raise DeliveryError(f"{self.describe()} answered badly: {type(exc).__name__}") from None
        if not 200 <= status < 300:
            raise DeliveryError(f"{self.describe()} answered HTTP {status}")

    @staticmethod
    def _redact(url: str) -> str:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/…"

    def describe(self) -> str:
        # The path and query often carry a token (e.g. /bot<token>/sendMessage): never logged.
        return self._redact(self.url)
