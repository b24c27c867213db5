"""The OpenClaw ledger bridge: OpenClaw's background runs become tasks, with no model remembering to write them.

It listens on the daemon's gateway connection (the one delivery uses, with scope `operator.read`): every
ledger change arrives as an event `task` and is handed to this thread, which writes the task's file through
the writer path (task_pulse/adapters/openclaw.py). Nothing here touches the state database: the daemon
reads the files it writes, like any writer's.

Nothing lost, nothing twice, across restarts of the daemon and of the gateway: whenever the connection is
(re)made, and when the gateway says its list was reset (`restored`), the bridge asks for the ledger again
(`tasks.list`) and brings every run up to date; a run whose task is still running here but which the
listing no longer shows running is asked for by id (`tasks.get`), and one the ledger no longer knows fails
as lost. Runs that ended before the bridge first ran are not told: `.pulse/openclaw-ledger.json` keeps
when it started looking, so a restart tells what ended while it was down and nothing older.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

from task_pulse.adapters.openclaw import ACTIVE, PREFIX, LedgerFilter, mirror
from task_pulse.errors import TaskPulseError
from task_pulse.messages import shown_id
from task_pulse.store import TaskStore
from task_pulsed.delivery.gateway.client import GatewayClient, GatewayError, NoReply, NotSent

MARK = "openclaw-ledger.json"  # in .pulse/: since when the ledger is mirrored (ms since the epoch)
LIST_LIMIT = 500  # the most tasks.list gives at once
CALL_SECONDS = 30.0
log = logging.getLogger("task-pulsed")


class LedgerBridge(threading.Thread):
    def __init__(self, client: GatewayClient, store: TaskStore, wanted: LedgerFilter) -> None:
        super().__init__(name="task-pulsed-ledger", daemon=True)
        self.client, self.store, self.wanted = client, store, wanted
        self._work: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._stopping = threading.Event()
        self.since_ms = self._since()
        client.add_listener(on_event=self._on_event, on_change=self._on_change)

    def stop(self) -> None:
        self._stopping.set()
        self._work.put(("stop", None))

    # -- what the connection tells (its reader thread: hand over, never wait) ---------------------------

    def _on_event(self, event: str, payload: Any) -> None:
        if event != "task" or not isinstance(payload, dict):
            return
        if payload.get("action") == "upserted" and isinstance(payload.get("task"), dict):
            self._work.put(("summary", payload["task"]))
        elif payload.get("action") == "restored":
            self._work.put(("relist", None))

    def _on_change(self, state: str, _detail: str) -> None:
        if state == "up":
            self._work.put(("relist", None))

    # -- the thread ---------------------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stopping.is_set():
            what, payload = self._work.get()
            try:
                if what == "summary":
                    self._mirror(payload)
                elif what == "relist":
                    self._relist()
            except (NotSent, NoReply, GatewayError) as exc:  # the gateway went away: the next `up` lists again
                log.info("OpenClaw's ledger not read this time: %s", exc)
            except (TaskPulseError, OSError) as exc:
                log.warning("OpenClaw's ledger: a task could not be written: %s", exc)
            except Exception:  # noqa: BLE001 - the bridge must outlive a record it does not understand
                log.exception("OpenClaw's ledger: unexpected error")

    def _mirror(self, summary: dict[str, Any]) -> None:
        if not self.wanted.wants(summary):
            return
        status = summary.get("status")
        if status not in ACTIVE and not self._ours(summary) and _ms(summary.get("updatedAt")) < self.since_ms:
            return  # ended before we looked, and never told: history, not news
        task_id = mirror(self.store, summary, datetime.now(UTC))
        if task_id is not None:
            log.debug("OpenClaw ledger %s (%s) → %s", shown_id(str(summary.get("id"))), status, shown_id(task_id))

    def _ours(self, summary: dict[str, Any]) -> bool:
        return os.path.exists(self.store.path_for(f"{PREFIX}{summary.get('id')}"))

    def _relist(self) -> None:
        reply = self.client.call("tasks.list", {"limit": LIST_LIMIT}, CALL_SECONDS)
        tasks = reply.get("tasks") if isinstance(reply, dict) else reply
        listed = [t for t in tasks or [] if isinstance(t, dict)]
        for summary in listed:
            self._mirror(summary)
        active = {f"{PREFIX}{t.get('id')}" for t in listed if t.get("status") in ACTIVE}
        for task_id in self.store.task_ids():
            if not task_id.startswith(PREFIX) or task_id in active:
                continue
            try:
                task = self.store.load(task_id)
            except TaskPulseError:
                continue
            if task.status == "running":  # it ended (or vanished) while we were not listening
                self._settle(task_id[len(PREFIX):])
        self._mark()

    def _settle(self, ledger_id: str) -> None:
        try:
            reply = self.client.call("tasks.get", {"taskId": ledger_id}, CALL_SECONDS)
        except GatewayError as exc:
            reply = {"id": ledger_id, "status": "lost", "error": f"not in OpenClaw's ledger any more ({exc.code})"}
        summary = reply.get("task", reply) if isinstance(reply, dict) else None
        if isinstance(summary, dict):
            mirror(self.store, summary, datetime.now(UTC))

    # -- since when --------------------------------------------------------------------------------------

    def _since(self) -> float:
        path = self.store.private_path(MARK, create=True)
        assert path is not None
        try:
            with open(path, encoding="utf-8") as fh:
                return float(json.load(fh)["since"])
        except (OSError, ValueError, KeyError, TypeError):
            since = time.time() * 1000
            self._write_mark(path, since)
            return since

    def _mark(self) -> None:
        """A full listing was taken: what ended before now was told or is history."""
        path = self.store.private_path(MARK, create=True)
        if path is not None:
            self.since_ms = max(self.since_ms, time.time() * 1000 - CALL_SECONDS * 1000)
            self._write_mark(path, self.since_ms)

    @staticmethod
    def _write_mark(path: str, since: float) -> None:
        tmp = f"{path}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump({"since": since}, fh)
        os.replace(tmp, path)


def _ms(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0
