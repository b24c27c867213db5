"""Sink commands as processes: each runs under a reaper (reaper.py), so the call ends with nothing left.

Every command (an `--exec` sender, the OpenClaw CLI) is started as `python -I -S reaper.py TIMEOUT
PARENT -- CMD…`. The reaper is a child subreaper: whatever the command starts, in a session of its own or
not, stays below it and is killed when the command exits, when TIMEOUT passes, and when this daemon dies
(kill -9 included). `ProcessSlots` caps how many such calls run at once, whatever the couriers do.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

from task_pulsed.delivery.reaper import CANNOT_RUN, TIMED_OUT, TIMEOUT_MARK
from task_pulsed.delivery.results import DeliveryError

REAPER = Path(__file__).with_name("reaper.py")
# The reaper ends its command at the timeout itself; this much later the daemon ends the reaper.
BACKSTOP_SECONDS = 10.0


class ProcessSlots:
    """At most `limit` sink commands (each with everything it started) at once."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._free = threading.BoundedSemaphore(limit)

    def __enter__(self) -> ProcessSlots:
        self._free.acquire()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._free.release()


def run_supervised(argv: list[str], stdin: bytes, timeout: float, env: dict[str, str] | None = None,
                   slots: ProcessSlots | None = None) -> tuple[int, bytes, bytes]:
    """Run `argv` under the reaper. Returns (exit code, stdout, stderr); DeliveryError when it could not
    run or ran past `timeout` (its whole tree is gone by then)."""
    name = os.path.basename(argv[0])
    command = [sys.executable, "-I", "-S", str(REAPER), f"{timeout:g}", str(os.getpid()), "--", *argv]
    with slots if slots is not None else contextlib.nullcontext():
        try:
            proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    close_fds=True, start_new_session=True, env=env)
        except OSError as exc:
            raise DeliveryError(f"cannot run {name}: {exc.strerror}") from None
        try:
            out, err = proc.communicate(stdin, timeout=timeout + BACKSTOP_SECONDS)
        except subprocess.TimeoutExpired:  # the reaper itself is stuck: end it (its command is in its tree)
            proc.kill()
            proc.communicate()
            raise DeliveryError(f"{name} timed out after {timeout:g} s") from None
    if proc.returncode == TIMED_OUT and err.rstrip().endswith(TIMEOUT_MARK.encode()):
        raise DeliveryError(f"{name} timed out after {timeout:g} s") from None
    if proc.returncode == CANNOT_RUN and err.startswith(b"cannot run "):
        raise DeliveryError(err.decode(errors="replace").strip()) from None
    return proc.returncode, out, err
