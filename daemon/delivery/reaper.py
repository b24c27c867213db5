"""The supervisor of one sink command: nothing the command starts outlives its call.

Run by `processes.run_supervised` as its own small process (`python -I -S reaper.py TIMEOUT PARENT -- CMD…`,
standard library only, so it starts in a few milliseconds). Why a process of its own:

* A command may start workers in a session of their own (`setsid`, Node's `detached: true`): killing the
  command's process group or its pid misses them, and PR_SET_PDEATHSIG does not pass to grandchildren.
  OpenClaw's `message send` does this, and a hung homeserver left its 300–600 MB workers running after
  the daemon had stopped.
* This process is a child subreaper (PR_SET_CHILD_SUBREAPER): every descendant whose parent dies is
  reparented here instead of to init, so all of them stay findable as our children, sessions or not.
* It ends the whole tree when the command exits (what it left behind is not part of a finished call),
  at TIMEOUT, and when the daemon dies, kill -9 included (PR_SET_PDEATHSIG sends us SIGTERM, which we
  can catch, unlike the SIGKILL the daemon's direct children get).

Exit status: the command's own, or 128 + N when a signal N ended it; TIMED_OUT when it ran past TIMEOUT.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
TIMED_OUT = 124  # as timeout(1)
TIMEOUT_MARK = "reaper: timed out; every process of the call was ended"  # the last line of stderr then
CANNOT_RUN = 127  # as a shell that finds no such program


def children() -> list[int]:
    """Our direct children (reparented orphans included), from every thread's `children` list."""
    found: list[int] = []
    try:
        threads = os.listdir("/proc/self/task")
    except OSError:
        return found
    for tid in threads:
        try:
            with open(f"/proc/self/task/{tid}/children") as fh:
                found += [int(pid) for pid in fh.read().split()]
        except OSError:
            continue
    return found


def end_tree() -> None:
    """SIGKILL every descendant. Killing a child reparents its own children to us: repeat until none is left
    (a killed process cannot fork again, so this ends)."""
    while True:
        kids = children()
        if not kids:
            return
        for pid in kids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for pid in kids:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def status_of(wait_status: int) -> int:
    code = os.waitstatus_to_exitcode(wait_status)
    return code if code >= 0 else 128 - code


def main(argv: list[str]) -> int:
    timeout, parent, command = float(argv[1]), int(argv[2]), argv[4:]
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    prctl(PR_SET_CHILD_SUBREAPER, 1)

    def on_term(_signum: int, _frame: object) -> None:
        end_tree()
        os._exit(128 + signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_term)
    prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:  # the daemon died before the death signal was armed: start nothing
        return 1
    try:
        pid = os.posix_spawnp(command[0], command, os.environ)
    except OSError as exc:
        print(f"cannot run {os.path.basename(command[0])}: {exc.strerror}", file=sys.stderr)
        return CANNOT_RUN
    handle = os.pidfd_open(pid)
    ready, _, _ = select.select([handle], [], [], timeout)
    if not ready:
        end_tree()
        print(TIMEOUT_MARK, file=sys.stderr)
        return TIMED_OUT
    _, wait_status = os.waitpid(pid, 0)
    end_tree()  # what the command left behind, in its own session or not
    return status_of(wait_status)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
