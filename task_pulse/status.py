"""What a reader says of a task beyond its file: stalled or not, the time left, overdue, the stall threshold
in force. One record shape for `task-pulse status --json` and the board's page, so both say the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from task_pulse.model import Task, TaskFormatError, stalled_for
from task_pulse.taskfile import task_from_file

if TYPE_CHECKING:
    from task_pulse.history.forecast import Outlook, Profile
    from task_pulse.state.shared import SharedOutbox


def status_record(task: Task, now: datetime, outlook: Outlook) -> dict[str, Any]:
    """The task's file as JSON, with what `status` adds: stalled, its silence, the time left, overdue."""
    stalled = stalled_for(task, now, outlook.stall_seconds)
    eta = outlook.eta_seconds
    return {**task.to_dict(), "stalled": stalled is not None,
            "stalledSeconds": None if stalled is None else round(stalled, 1),
            "etaSeconds": None if eta is None else round(eta), "overdue": bool(outlook.overdue),
            "stallThresholdSeconds": outlook.stall_seconds, "stallThresholdSource": outlook.stall_source}


def outlooks_of(entries: list[tuple[str, Task | TaskFormatError]], profiles: Mapping[Any, Profile], now: datetime,
                default_stall: float, by: Callable[[str, Task], Any] = lambda _key, task: task.name,
                ) -> dict[str, Outlook]:
    """What the history says of each task shown (by entry key); `profiles` by what `by` makes of an entry
    (its task name; in a shared db, its host and task name)."""
    from task_pulse.history.forecast import Outlook

    return {key: Outlook.of(profiles.get(by(key, t)) if t.status == "running" else None, t, now, default_stall)
            for key, t in entries if isinstance(t, Task)}


def all_hosts_entries(shared: SharedOutbox, now: datetime, limit: int | None, default_stall: float) -> tuple[
        list[tuple[str, Task | TaskFormatError]], dict[str, int], int, dict[str, dict[str, str]],
        dict[str, Outlook]]:
    """What `status --all-hosts` (and the board) shows of a shared state db: the `limit` tasks most worth
    seeing (None: all) with their snapshots, the counts of all, how many are not shown, each entry's host
    (by the entry's key: host/task id), and each task's outlook from its host's history."""
    overview = shared.overview(now.timestamp(), limit)
    texts = shared.snapshots(overview.tasks)
    entries: list[tuple[str, Task | TaskFormatError]] = []
    hosts: dict[str, dict[str, str]] = {}
    for host, task_id in overview.tasks:
        if (host, task_id) not in texts:
            continue  # purged meanwhile
        key = f"{host}/{task_id}"
        try:
            entries.append((key, task_from_file(texts[host, task_id], task_id)))
        except TaskFormatError as exc:
            entries.append((key, exc))
        hosts[key] = {"host": host}
    totals = {"running": overview.running, "stalled": overview.stalled, "done": overview.done,
              "error": overview.error}
    running = {(hosts[key]["host"], t.name) for key, t in entries if isinstance(t, Task) and t.status == "running"}
    outlooks = outlooks_of(entries, shared.profiles(sorted(running)) if running else {}, now, default_stall,
                           lambda key, task: (hosts[key]["host"], task.name))
    return entries, totals, max(0, overview.total - len(entries)), hosts, outlooks
