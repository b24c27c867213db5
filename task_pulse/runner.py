"""`task-pulse run`: wrap a command (a cron job, a script) in a task, so it reports without changes.

The task is created before the command starts and ended by its exit: `done` with the last line it
printed on exit 0, `error` with the exit code and its last stderr line otherwise. While it runs, a
heartbeat every N seconds keeps the stall timer quiet and carries its latest output line. The
command's own output passes through unchanged, and `run` exits with the command's exit code.

The command gets TASK_PULSE_TASK_ID (and TASK_PULSE_DIR), so it may call `task-pulse next` itself to
report its steps; if it ends the task itself, that ending stands.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from contextlib import suppress
from types import FrameType
from typing import BinaryIO

from task_pulse.config import Settings
from task_pulse.errors import OperationFailed, TaskNotFound
from task_pulse.model import Task
from task_pulse.store import TaskStore

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Tail(threading.Thread):
    """Copies a child's stream to ours as it comes, remembering its last non-empty line."""

    def __init__(self, source: BinaryIO, sink: BinaryIO) -> None:
        super().__init__(daemon=True)
        self.source, self.sink = source, sink
        self.last_line = ""
        self._partial = b""

    def run(self) -> None:
        while chunk := os.read(self.source.fileno(), 65536):
            self.sink.write(chunk)
            self.sink.flush()
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()[-4096:]
            self._remember(lines)
        self._remember([self._partial])

    def _remember(self, lines: list[bytes]) -> None:
        for raw in reversed(lines):
            text = raw.decode("utf-8", "replace").strip()
            if text:
                self.last_line = text
                return


def run_wrapped(store: TaskStore, settings: Settings, name: str, steps: list[str], command: list[str], *,
                heartbeat_every: float, stall_seconds: float | None, budget_seconds: float | None = None) -> int:
    """Run `command` as task `name`; returns its exit code (128+N when a signal N ended it)."""
    task = store.create(name, steps or [os.path.basename(command[0])], settings.now(), stall_seconds=stall_seconds,
                        budget_seconds=budget_seconds)

    def end(change: Callable[[Task, str], bool | None]) -> None:
        now = settings.now()
        with suppress(TaskNotFound, OperationFailed):  # the command ended (or removed) the task itself
            store.update(task.task_id, lambda t: change(t, now.isoformat()), now)

    env = {**os.environ, "TASK_PULSE_TASK_ID": task.task_id, "TASK_PULSE_DIR": str(store.root)}
    try:
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    except OSError as exc:
        reason = f"cannot run {command[0]}: {exc.strerror}"
        end(lambda t, now: t.fail(now, reason))
        print(f"Error: {reason}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    assert child.stdout is not None and child.stderr is not None
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        child.send_signal(signum)

    # Forwarding is in place before any of the command's output is passed on: whoever saw it running
    # and stops it gets the task ended as failed, never a wrapper killed before it could say so.
    previous = {sig: signal.signal(sig, forward) for sig in FORWARDED}
    tails = (_Tail(child.stdout, sys.stdout.buffer), _Tail(child.stderr, sys.stderr.buffer))
    for tail in tails:
        tail.start()
    try:
        while True:
            try:
                code = child.wait(timeout=heartbeat_every)
                break
            except subprocess.TimeoutExpired:
                line = tails[0].last_line or tails[1].last_line or None
                # With no running step (the command reported its last one itself) the write alone says "alive".
                end(lambda t, _now, line=line: t.touch(line if t.running_step else None))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    for tail in tails:
        tail.join()

    out, err = tails[0].last_line or None, tails[1].last_line
    if received:
        reason = f"interrupted by {signal.Signals(received[0]).name}"
        end(lambda t, now: t.fail(now, reason))
    elif code == 0:
        end(lambda t, now: t.finish(now, out))
    else:
        reason = f"exit {code}" + (f": {err}" if err else "")
        end(lambda t, now: t.fail(now, reason))
    return code if code >= 0 else 128 - code
