"""task-pulsed's process: the daemon lock, the threads, startup and shutdown.

Order matters at startup: the observer starts before the first scan, so a write that lands during
the scan is seen either by the scan or as an event (both just make the worker read the file).
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import stat
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from task_pulse.adapters.openclaw import LedgerFilter
from task_pulse.errors import ConfigError
from task_pulse.messages import counted
from task_pulse.privatedir import UnsafeDir, others_who_can_write
from task_pulse.state.shared import SchemaTooNew
from task_pulse.store import TaskStore
from task_pulsed.bridge import LedgerBridge
from task_pulsed.checkpointer import Checkpointer
from task_pulsed.delivery import Delivery, DeliveryOptions, LocalState, SharedState
from task_pulsed.delivery.gateway.sink import OpenClawSink
from task_pulsed.delivery.sinks import Sink
from task_pulsed.forwarder import Forwarder, check_shared_schema
from task_pulsed.scheduler import Timers
from task_pulsed.sdnotify import notify, watchdog_interval
from task_pulsed.tracker import Policy
from task_pulsed.watcher import OpenWrites, OverflowHook, start_observer
from task_pulsed.worker import Worker, WorkerOptions
from task_pulsed.workqueue import CLEANUP, RESCAN, WorkQueue

log = logging.getLogger("task-pulsed")


class AlreadyRunning(Exception):
    pass


@dataclass
class DaemonOptions:
    tasks_dir: Path
    policy: Policy
    announce_existing: bool = False
    keep_days: float = 7
    history_runs: int = 50  # finished runs kept per task name (task_pulse/history)
    history_days: float = 90
    rescan_seconds: float = 300
    cleanup_seconds: float = 3600
    sink: Sink | None = None
    delivery: DeliveryOptions = field(default_factory=DeliveryOptions)
    sink_concurrency: int = 4
    state_url: str | None = None  # a shared state db (postgresql://…): notifications are forwarded there
    host: str = ""  # this daemon's name in the shared state db
    ledger: LedgerFilter | None = None  # OpenClaw's runs to mirror as tasks (needs the gateway sink)


def take_daemon_lock(store: TaskStore, lang: str) -> int:
    """Hold `.pulse/daemon.lock` for the life of the process: one daemon per tasks dir. It holds the
    pid and the language (a line each): writers ask it whether a daemon watches, and speak its language."""
    path = store.private_path("daemon.lock", create=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").split("\n")[0].strip() or "?"
        os.close(fd)
        raise AlreadyRunning(f"another task-pulsed (pid {holder}) is already watching {store.root}") from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n{lang}\n".encode(), 0)
    return fd


def warn_if_open_to_others(root: Path) -> None:
    """Anyone who can write the tasks dir can put words in the user's chat: say so. (Without the
    sticky bit the daemon does not even start: privatedir.py.)"""
    st = root.stat()
    others, mode = others_who_can_write(st, str(root)), stat.S_IMODE(st.st_mode)
    if others == "every local user":
        log.warning("SECURITY: %s is writable by every local user (mode %o): any of them can create task files and "
                    "so send messages to your chat. Fix it: chmod o-w %s", root, mode, root)
    elif others is not None:
        log.info("%s is shared with %s (mode %o): task files of its members reach your chat too", root, others, mode)


def _wait_awake(done: Callable[[], bool], wait: Callable[[float], object]) -> None:
    """Wait in steps of a second. Python runs signal handlers in the main thread only, and a SIGTERM
    the kernel hands to another thread does not wake a main thread blocked without a timeout: seen
    as a daemon that ignored SIGTERM, once in about 60 loaded test runs."""
    while not done():
        wait(1.0)


def status_line(stats: dict[str, int], problem: str | None = None, route: str | None = None,
                malformed: int = 0) -> str:
    line = (f"watching {counted(stats['tasks'], 'task')}, {stats['stalled']} stalled, "
            f"{counted(stats['pending'], 'notification')} pending")
    line = f"{line}; delivering through {route}" if route else line
    line = f"{line}; {counted(malformed, 'malformed notification')} skipped" if malformed else line
    return f"{problem}; {line}" if problem else line


def run(options: DaemonOptions) -> int:
    """Run until SIGTERM/SIGINT (exit 0) or until the worker fails (exit 1)."""
    store = TaskStore(options.tasks_dir)
    try:
        store.ensure_dirs()
        lock_fd = take_daemon_lock(store, options.policy.lang)
    except AlreadyRunning as exc:
        log.error("%s", exc)
        return 1
    except UnsafeDir as exc:  # exit 2: systemd must not restart into the same refusal (RestartPreventExitStatus)
        log.error("%s", exc)
        return 2
    except OSError as exc:  # a read-only or full disk, a missing permission: say it once, no traceback
        log.error("cannot use %s: %s", exc.filename or store.pulse_dir, exc.strerror or exc)
        return 1
    warn_if_open_to_others(store.root)
    queue = WorkQueue()
    timers = Timers(queue, rescan_seconds=options.rescan_seconds, cleanup_seconds=options.cleanup_seconds)
    watchdog = watchdog_interval()

    def status(stats: dict[str, int], problem: str | None) -> str:
        problem = problem or (forwarder.problem if forwarder is not None else None) or \
            (delivery.problem if delivery is not None else None)
        return status_line(stats, problem, delivery.route() if delivery is not None else None,
                           delivery.bell.malformed if delivery is not None else 0)

    def heartbeat(stats: dict[str, int], problem: str | None) -> None:
        # Waiting for a busy db before READY: ask systemd for more time than its start timeout.
        waiting = ["EXTEND_TIMEOUT_USEC=60000000"] if problem and not worker.started else []
        notify(*(["WATCHDOG=1"] if watchdog else []), *waiting, f"STATUS={status(stats, problem)}")

    # Under systemd the worker reports every half watchdog period (or 30 s for STATUS alone).
    beat_every = watchdog or (30.0 if os.environ.get("NOTIFY_SOCKET") else None)
    open_writes = OpenWrites()
    delivery = forwarder = None
    if options.state_url is not None:
        try:
            check_shared_schema(options.state_url, options.host)
        except SchemaTooNew as exc:
            log.error("%s", exc)
            os.close(lock_fd)
            return 1
        except ConfigError as exc:  # exit 2: a setup problem, which systemd must not restart into
            log.error("%s", exc)
            os.close(lock_fd)
            return 2
    if options.sink is not None:
        state = (SharedState(options.state_url, options.host) if options.state_url is not None
                 else LocalState(store))
        delivery = Delivery(state, options.sink, options.delivery, options.sink_concurrency)
        # The route changed (the gateway went away or came back): STATUS says so now, not at the next beat.
        options.sink.on_route = lambda _route: notify(f"STATUS={status(worker.stats, None)}")
    bridge = None
    if options.ledger is not None and isinstance(options.sink, OpenClawSink) and options.sink.client is not None:
        bridge = LedgerBridge(options.sink.client, store, options.ledger)  # hears the connection from its start
    if options.state_url is not None:
        forwarder = Forwarder(store, options.state_url, options.host, keep_days=options.keep_days,
                              history=(options.history_runs, options.history_days),
                              on_forwarded=delivery.wake if delivery else None, on_fatal=queue.close)
    # What the worker commits goes to the shared state db (the forwarder: every commit, a snapshot too),
    # else new notifications to this dir's couriers.
    on_new = delivery.wake if delivery is not None and forwarder is None else None
    checkpointer = Checkpointer(store)
    worker = Worker(store, queue, timers, WorkerOptions(policy=options.policy, keep_days=options.keep_days,
                                                        announce_existing=options.announce_existing,
                                                        history_runs=options.history_runs,
                                                        history_days=options.history_days),
                    heartbeat=heartbeat, heartbeat_every=beat_every, on_new=on_new,
                    open_writes=open_writes, checkpointer=checkpointer,
                    on_commit=forwarder.poke if forwarder is not None else None)
    stopping = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stopping.is_set():
            log.info("%s: finishing the current item, then exiting", signal.Signals(signum).name)
            notify("STOPPING=1", "STATUS=stopping")
            stopping.set()
            queue.close()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def on_overflow() -> None:
        log.warning("inotify queue overflowed: rescanning")
        open_writes.clear()
        queue.put(RESCAN)

    overflow = OverflowHook(on_overflow)
    overflow.install()
    try:
        observer = start_observer(store.root, lambda task_id: queue.put(("file", task_id)), open_writes,
                                  lambda name: queue.put(("misnamed", name)))
    except OSError as exc:  # e.g. the inotify instance limit (fs.inotify.max_user_instances)
        log.error("cannot watch %s: %s", store.root, exc.strerror or exc)
        overflow.remove()
        os.close(lock_fd)
        return 1
    try:
        timers.start()
        checkpointer.start()
        worker.start()
        _wait_awake(worker.ready.is_set, worker.ready.wait)
        if worker.started:  # not when it failed, nor when stopped while the state db was busy
            log.info("ready: %s in %s", status_line(worker.stats), store.root)
            notify("READY=1", f"STATUS={status(worker.stats, None)}")
            queue.put(CLEANUP)
            if forwarder is not None:
                forwarder.start()  # after the worker made the state db: two threads must not both create it
            if bridge is not None:
                bridge.start()
            if delivery is not None:
                delivery.start()
        _wait_awake(lambda: not worker.is_alive(), worker.join)  # until a signal handler closes the queue
    finally:
        if bridge is not None:
            bridge.stop()
        if delivery is not None:
            delivery.stop()
        if forwarder is not None:
            forwarder.stop()
            if forwarder.is_alive():
                forwarder.join(timeout=10)  # a copy in flight finishes (cut short, the next start redoes it)
        timers.shutdown()
        checkpointer.stop()
        observer.stop()
        observer.join(timeout=5)
        overflow.remove()
        os.ftruncate(lock_fd, 0)  # no pid left behind for `task-pulse status` to take for a running daemon
        os.close(lock_fd)
    if worker.error is not None or (forwarder is not None and forwarder.fatal is not None):
        return 1  # the worker or the forwarder has said why, once
    log.info("stopped")
    return 0
