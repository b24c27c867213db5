"""A real `task-pulse board` process, and a reader of its event stream, for the board's tests and benchmark."""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from tests.conftest import BIN, clean_env, wait_for


class Board:
    """`task-pulse [--dir DIR] board --port 0 --json ARGS`: its URL from the line it prints, its stderr in a log."""

    def __init__(self, tasks_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.tasks_dir, self.args, self.env = tasks_dir, args, env or clean_env()
        stamp = time.monotonic_ns()
        self.out_path = tasks_dir.parent / f"board-{stamp}.out"
        self.log_path = tasks_dir.parent / f"board-{stamp}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> Board:
        with self.out_path.open("wb") as out, self.log_path.open("wb") as log:
            self.proc = subprocess.Popen([str(BIN / "task-pulse"), "--dir", str(self.tasks_dir), "board", "--port", "0",
                                          "--json", *self.args], stdout=out, stderr=log, env=self.env)
        wait_for(lambda: self.out_path.read_text().endswith("\n") or self.proc.poll() is not None, 30,
                 "the board's address")
        assert self.proc.poll() is None, f"board exited {self.proc.returncode}: {self.log()}"
        self.info = json.loads(self.out_path.read_text().splitlines()[0])
        return self

    @property
    def url(self) -> str:
        return str(self.info["url"])

    @property
    def port(self) -> int:
        return int(self.info["port"])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def output(self) -> str:
        return self.out_path.read_text(errors="replace") + self.log()

    def stop(self, timeout: float = 20) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def request(self, path: str, method: str = "GET", headers: dict[str, str] | None = None,
                body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        """(status, headers with lower-case names, body) of one request to 127.0.0.1."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            conn.close()

    def json(self, path: str, headers: dict[str, str] | None = None) -> Any:
        status, _, body = self.request(path, headers=headers)
        assert status == 200, (status, body[:300])
        return json.loads(body)

    def tasks(self) -> list[dict[str, Any]]:
        return list(self.json("/api/board")["tasks"])

    def detail(self, key: str) -> Any:
        return self.json(f"/api/task?key={urllib.parse.quote(key, safe='')}")


class EventStream:
    """`GET /events` read on a thread of its own: every Server-Sent Event as (name, data, unix time it came)."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.conn.request("GET", "/events", headers=headers or {})
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.raw: list[bytes] = []
        self.events: list[tuple[str, Any, float]] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        if self.status == 200:
            self._thread.start()

    def _read(self) -> None:
        name, data = "message", []
        try:
            while True:
                line = self.response.fp.readline()
                if not line:
                    return
                self.raw.append(line)
                text = line.decode("utf-8").rstrip("\n")
                if not text:
                    if data:
                        self.events.append((name, json.loads("\n".join(data)), time.time()))
                    name, data = "message", []
                elif text.startswith("event: "):
                    name = text[7:]
                elif text.startswith("data: "):
                    data.append(text[6:])
        except (OSError, ValueError):
            return

    def wait(self, predicate: Any, timeout: float = 30, what: str = "an event") -> tuple[str, Any, float]:
        """The first event (name, data, arrival) for which `predicate(name, data)` holds, waited for."""
        return wait_for(lambda: next((e for e in list(self.events) if predicate(e[0], e[1])), None), timeout, what)

    def close(self) -> None:
        try:
            if self.conn.sock is not None:
                self.conn.sock.shutdown(2)
        except OSError:
            pass
        self.conn.close()
        self._thread.join(5) if self._thread.is_alive() else None
