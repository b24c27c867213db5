"""A real headless Chromium (Debian's `chromium` package), driven over the Chrome DevTools Protocol.

The protocol is JSON over a WebSocket; the `websockets` library (already one of task-pulse's
dependencies) speaks it, so no browser-automation package is needed, and nothing is downloaded.
Started with the flags this machine needs (no sandbox as root, no GPU, no background networking:
nothing leaves the machine) and a fresh profile in a temp dir, removed on close.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from tests.conftest import wait_for

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-default-apps", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Chromium:
    """One browser process; `page(url)` opens a tab."""

    def __init__(self) -> None:
        from websockets.sync.client import connect

        exe = chromium_path()
        assert exe is not None
        self.profile = Path(tempfile.mkdtemp(prefix="tp-chromium-"))
        self.log = self.profile.parent / f"{self.profile.name}.log"
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen([exe, *FLAGS, f"--user-data-dir={self.profile}", "--remote-debugging-port=0",
                                          "about:blank"], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)  # its helpers in its group: `close` ends them all
        active = self.profile / "DevToolsActivePort"
        try:
            wait_for(lambda: active.exists() and len(active.read_text().split()) >= 2 or self.proc.poll() is not None,
                     60, "chromium's DevTools port")
            assert self.proc.poll() is None, f"chromium exited: {self.log.read_text(errors='replace')[-2000:]}"
            port, path = active.read_text().split()[:2]
            self._connection = connect(f"ws://127.0.0.1:{port}{path}", max_size=None, open_timeout=30)
            self.ws = self._connection.__enter__()
        except BaseException:
            self.close()
            raise
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30) -> dict[str, Any]:
        """One protocol call and its result (events that arrive meanwhile are kept in `events`)."""
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self.ws.send(json.dumps(message))
        while True:
            reply = json.loads(self.ws.recv(timeout=timeout))
            if reply.get("id") == call_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def page(self, url: str, width: int = 1360, height: int = 860) -> Page:
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Emulation.setDeviceMetricsOverride", {"width": width, "height": height, "deviceScaleFactor": 1,
                                                         "mobile": False}, session=session)
        self.send("Page.navigate", {"url": url}, session=session)
        return page

    def close(self) -> None:
        if getattr(self, "_connection", None) is not None:
            self._connection.__exit__(None, None, None)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        # Helpers outlive the browser for a moment and still write into the profile (its network service left
        # "Network Persistent State" in 3 of 20 runs' removed profiles): end the group, then remove it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        wait_for(lambda: not _group_alive(self.proc.pid), 15, "chromium's helper processes to end")
        shutil.rmtree(self.profile, ignore_errors=True)
        self.log.unlink(missing_ok=True)


class Page:
    """A tab: evaluate JavaScript in it, take a screenshot."""

    def __init__(self, browser: Chromium, session: str, target: str) -> None:
        self.browser, self.session, self.target = browser, session, target

    def close(self) -> None:
        self.browser.send("Target.closeTarget", {"targetId": self.target})

    def js(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.browser.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                        "awaitPromise": True}, session=self.session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait(self, expression: str, timeout: float = 30, what: str | None = None) -> Any:
        return wait_for(lambda: self.js(expression), timeout, what or expression)

    def screenshot(self, path: Path) -> None:
        data = self.browser.send("Page.captureScreenshot", {"format": "png"}, session=self.session)["data"]
        path.write_bytes(base64.b64decode(data))

    def problems(self) -> list[str]:
        """What the browser logged as an error or a violation for this page (console errors, CSP refusals)."""
        found = []
        for event in self.browser.events:
            if event.get("sessionId") != self.session:
                continue
            if event.get("method") == "Log.entryAdded" and event["params"]["entry"].get("level") == "error":
                found.append(event["params"]["entry"].get("text", ""))
            if event.get("method") == "Runtime.exceptionThrown":
                found.append(str(event["params"]["exceptionDetails"].get("text")))
            if event.get("method") == "Runtime.consoleAPICalled" and event["params"].get("type") == "error":
                found.append(str(event["params"].get("args")))
        return found


def _group_alive(pgid: int) -> bool:
    """Whether a process of group `pgid` still runs (a zombie waiting for its reaper does not count)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # after the command's closing parenthesis: state, ppid, pgrp
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                return True
    return False
