"""`task-pulse run`: wrap a command (a cron job, a script) in a task, so it reports without changes.

The task is created before the command starts and ended by its exit: `done` with the last line it
printed on exit 0, `error` with the exit code and its last stderr line otherwise. While it runs, a
heartbeat every N seconds keeps the stall timer quiet and carries its latest output line. The
command's own output passes through unchanged, and `run` exits with the command's exit code.

The command runs in a process group of its own, and a signal `run` gets goes to that whole group:
under `sh -c '…'` the real work stops too, instead of being orphaned while `run` waits for it. The
task ends when the command itself exits: a background child it leaves behind (a service a cron job
restarts) may hold its output open for hours, and what it prints later is relayed by `cat`, without
keeping the task (or `run`) going.

The command gets TASK_PULSE_TASK_ID (and TASK_PULSE_DIR), so it may call `task-pulse next` itself to
report its steps; if it ends the task itself, that ending stands.
"""

from __future__ import annotations

import os
import select
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
from task_pulse.writer import AfterWrite

FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
# How long the output may still flow once the command has exited (its last lines in the pipe) before a
# background child that holds the pipe open is left to a relay.
EOF_GRACE_SECONDS = 1.0


class _Tail(threading.Thread):
    """Copies a child's stream to ours as it comes, remembering its last non-empty line, until the
    stream ends or `stop` is called (then the rest is left in the pipe, for a relay)."""

    def __init__(self, source: BinaryIO, sink: BinaryIO) -> None:
        super().__init__(daemon=True)
        self.source, self.sink = source, sink
        self.last_line = ""
        self.ended = False  # the stream reached its end (every writer closed it)
        self._partial = b""
        self._wake_r, self._wake_w = os.pipe()

    def run(self) -> None:
        fd = self.source.fileno()
        while True:
            ready, _, _ = select.select([fd, self._wake_r], [], [])
            if self._wake_r in ready:
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                self.ended = True
                break
            self.sink.write(chunk)
            self.sink.flush()
            lines = (self._partial + chunk).split(b"\n")
            self._partial = lines.pop()[-4096:]
            self._remember(lines)
        self._remember([self._partial])

    def stop(self) -> None:
        if self.is_alive():
            os.write(self._wake_w, b".")
            self.join()

    def _remember(self, lines: list[bytes]) -> None:
        for raw in reversed(lines):
            text = raw.decode("utf-8", "replace").strip()
            if text:
                self.last_line = text
                return


def _terminal() -> int | None:
    """The terminal on stdin when a person runs this in its foreground (then the command gets the
    terminal, as a shell's job would: it may read it, and Ctrl-C reaches it), else None."""
    try:
        fd = sys.stdin.fileno()
        return fd if os.isatty(fd) and os.tcgetpgrp(fd) == os.getpgrp() else None
    except (OSError, ValueError):
        return None


def _give_terminal(fd: int, group: int) -> None:
    """Make `group` the terminal's foreground (SIGTTOU ignored: a background group may not, else)."""
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        with suppress(OSError):
            os.tcsetpgrp(fd, group)
    finally:
        signal.signal(signal.SIGTTOU, previous)


def _relay(tail: _Tail, to: BinaryIO) -> None:
    """Leave what is still to come on `tail`'s pipe to a `cat` that outlives us (it ends with the pipe)."""
    tail.stop()
    with suppress(OSError):
        subprocess.Popen(["cat"], stdin=tail.source, stdout=to, stderr=subprocess.DEVNULL, close_fds=True)
    tail.source.close()


def run_wrapped(store: TaskStore, settings: Settings, name: str, steps: list[str], command: list[str], *,
                heartbeat_every: float, stall_seconds: float | None, budget_seconds: float | None = None) -> int:
    """Run `command` as task `name`; returns its exit code (128+N when a signal N ended it)."""
    task = store.create(name, steps or [os.path.basename(command[0])], settings.now(), stall_seconds=stall_seconds,
                        budget_seconds=budget_seconds)
    for note in AfterWrite(settings, store).notes:  # before the command's output, which may be long
        print(f"note: {note}", file=sys.stderr, flush=True)

    def end(change: Callable[[Task, str], bool | None]) -> None:
        now = settings.now()
        with suppress(TaskNotFound, OperationFailed):  # the command ended (or removed) the task itself
            store.update(task.task_id, lambda t: change(t, now.isoformat()), now)

    env = {**os.environ, "TASK_PULSE_TASK_ID": task.task_id, "TASK_PULSE_DIR": str(store.root)}
    terminal = _terminal()

    def own_group_in_front() -> None:  # in the child, before the command: what a shell does for a job
        os.setpgid(0, 0)
        if terminal is not None:
            _give_terminal(terminal, os.getpgrp())

    try:
        # (preexec_fn is safe here: no other thread runs yet)
        child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                 preexec_fn=own_group_in_front)
    except (OSError, subprocess.SubprocessError) as exc:
        reason = f"cannot run {command[0]}: {getattr(exc, 'strerror', None) or exc}"
        end(lambda t, now: t.fail(now, reason))
        print(f"Error: {reason}", file=sys.stderr)
        return 127 if isinstance(exc, FileNotFoundError) else 126
    assert child.stdout is not None and child.stderr is not None
    received: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        with suppress(ProcessLookupError, PermissionError):  # the group is gone already
            os.killpg(child.pid, signum)

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
        if terminal is not None:
            _give_terminal(terminal, os.getpgrp())
    for tail, to in zip(tails, (sys.stdout, sys.stderr), strict=True):
        tail.join(EOF_GRACE_SECONDS)
        if not tail.ended:  # a background child still holds the pipe: its output goes on without us
            sys.stdout.flush()
            _relay(tail, to)

    out, err = tails[0].last_line or None, tails[1].last_line
    if received:
        reason = f"interrupted by {signal.Signals(received[0]).name}"
        end(lambda t, now: t.fail(now, reason))
    elif code == 0:
        end(lambda t, now: t.finish(now, out))
    else:
        how = f"exit {code}" if code > 0 else f"killed by {signal.Signals(-code).name}"
        reason = how + (f": {err}" if err else "")
        end(lambda t, now: t.fail(now, reason))
    return code if code >= 0 else 128 - code
