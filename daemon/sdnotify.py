"""systemd's notify protocol, in the few lines of stdlib it takes.

READY=1 after the first scan, WATCHDOG=1 from the worker's loop (so a hung worker gets the
service restarted), STATUS= one line, STOPPING=1 on SIGTERM. Without NOTIFY_SOCKET (not run by
systemd) every call is a silent no-op.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("task-pulsed")


def notify(*assignments: str) -> bool:
    """Send `KEY=value` lines to systemd. Returns whether anything was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall("\n".join(assignments).encode())
    except OSError as exc:
        log.debug("sd_notify to %s failed: %s", address, exc)
        return False
    return True


def watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds, when systemd expects our pings (else None)."""
    usec, pid = os.environ.get("WATCHDOG_USEC"), os.environ.get("WATCHDOG_PID")
    if not usec or not os.environ.get("NOTIFY_SOCKET"):
        return None
    if pid and pid.isdigit() and int(pid) != os.getpid():  # meant for another process (we were exec'd)
        return None
    try:
        return max(int(usec) / 1_000_000 / 2, 0.05)
    except ValueError:
        return None
