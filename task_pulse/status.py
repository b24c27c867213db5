"""What a reader says of a task beyond its file: stalled or not, the time left, overdue, the stall threshold
in force. One record shape for `task-pulse status --json` and the board's page, so both say the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from task_pulse.model import Task, TaskFormatError, stalled_for

if TYPE_CHECKING:
    from task_pulse.history.forecast import Outlook, Profile


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
