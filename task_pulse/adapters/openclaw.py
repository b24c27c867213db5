"""OpenClaw's ledger of background work, as task-pulse tasks: what each ledger record means for its task file.

OpenClaw keeps a ledger of every cron run, sub-agent spawn, ACP and CLI agent run, and tells an operator
connection of each change (event `task`, `{"action": "upserted", "task": TaskSummary}`; `tasks.list`,
`tasks.get`; OpenClaw 2026.9.6). The daemon's bridge (daemon/bridge.py) hands each summary to `mirror`,
which writes the task's file through the ordinary writer path (locked, atomic): everything after it (the
card, the stall alarm, history, the outbox, a shared database) is what any task gets.

A run becomes the task `openclaw-<ledger id>`, named after what it is (`cron: Nightly digest`,
`sub-agent: Review the diff`). Its steps are the phases a run goes through: `run`, and `deliver` when its
result is delivered somewhere (a cron job that announces). Tool activity (`execution.currentTool`,
`toolUseCount`, `progressSummary`, a wait) is the running step's message: a heartbeat. The run's end ends
the task: `completed` done with its `terminalSummary`, `failed`, `timed_out`, `cancelled` or `lost` failed
with what OpenClaw says. Every change is decided from the record and the file as they are, so a summary
told twice, or again after a restart, changes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from task_pulse.errors import TaskNotFound, TaskPulseError
from task_pulse.messages import chat_text
from task_pulse.model import Task
from task_pulse.store import TaskStore
from task_pulse.taskfile import check_task_id

PREFIX = "openclaw-"
ACTIVE = frozenset({"queued", "running"})
ENDED = frozenset({"completed", "failed", "cancelled", "timed_out", "lost"})
# What OpenClaw calls the kinds of work its ledger holds (`runtime`), as a person reads them.
LABELS = {"cron": "cron", "subagent": "sub-agent", "acp": "ACP agent", "cli": "CLI agent"}
# A run is silent while its model thinks; OpenClaw itself flags a run only after 30 minutes.
STALL_SECONDS = 600
NAME_CAP = 80


@dataclass(frozen=True)
class LedgerFilter:
    """Which runs to mirror: by kind (`runtime` or `kind`: cron, subagent, acp, cli …) and by agent id.
    None: all of them."""

    kinds: frozenset[str] | None = None
    agents: frozenset[str] | None = None

    def wants(self, summary: dict[str, Any]) -> bool:
        if self.kinds is not None and not {summary.get("runtime"), summary.get("kind")} & self.kinds:
            return False
        return self.agents is None or summary.get("agentId") in self.agents


def task_id(summary: dict[str, Any]) -> str | None:
    """The task a ledger record becomes (None: a record without a usable id)."""
    ledger_id = summary.get("id")
    if not isinstance(ledger_id, str) or not ledger_id:
        return None
    try:
        return check_task_id(PREFIX + ledger_id)
    except TaskPulseError:
        return None


def task_name(summary: dict[str, Any]) -> str:
    label = LABELS.get(str(summary.get("runtime") or ""), str(summary.get("runtime") or summary.get("kind") or
                                                              "OpenClaw task"))
    title = chat_text(summary.get("title"), NAME_CAP)
    return f"{label}: {title}" if title else f"{label} {str(summary.get('id'))[:8]}"


def delivers(summary: dict[str, Any]) -> bool:
    """Whether the run's result goes somewhere after it ends (then `deliver` is a step of its own)."""
    return summary.get("deliveryStatus") not in (None, "not_applicable")


def activity(summary: dict[str, Any]) -> str | None:
    """What the run is doing now, in one short line (None: nothing to say)."""
    execution = summary.get("execution") if isinstance(summary.get("execution"), dict) else {}
    assert isinstance(execution, dict)
    wait = execution.get("wait")
    if execution.get("state") == "waiting":
        what = wait.get("kind") or wait.get("reason") if isinstance(wait, dict) else wait
        return chat_text(f"waiting: {what}" if what else "waiting")
    parts = []
    tool = execution.get("currentTool") or summary.get("lastToolName")
    if tool:
        parts.append(str(tool))
    if isinstance(summary.get("toolUseCount"), int) and summary["toolUseCount"]:
        parts.append(f"{summary['toolUseCount']} tool calls")
    if summary.get("progressSummary"):
        parts.append(str(summary["progressSummary"]))
    return chat_text(" · ".join(parts)) if parts else None


def _stamp(ms: Any) -> str | None:
    if not isinstance(ms, int | float) or isinstance(ms, bool) or ms <= 0:
        return None
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).astimezone().isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return None


def _failure(summary: dict[str, Any]) -> str:
    status = summary.get("status")
    error = summary.get("error")
    said = error.get("message") if isinstance(error, dict) else error
    reason = {"timed_out": "timed out", "cancelled": "cancelled", "lost": "lost by OpenClaw"}.get(str(status))
    return chat_text(" — ".join(p for p in (reason, str(said) if said else None) if p) or "failed", 300)


def change(summary: dict[str, Any], now: str) -> Any:
    """The writer change (`TaskStore.update`'s) that brings a task up to `summary`. It changes nothing once
    the task has ended, nor when the file already says what the record says."""

    def apply(task: Task) -> bool:
        if task.status != "running":
            return False
        status = summary.get("status")
        if status in ("failed", "cancelled", "timed_out", "lost"):
            return task.fail(now, _failure(summary))
        if status == "completed":
            result = chat_text(summary.get("terminalSummary"), 300) or None
            run = task.running_step
            pending_delivery = summary.get("deliveryStatus") in ("pending", "session_queued")
            if run is not None and run.name == "run" and len(task.steps) > 1 and pending_delivery:
                task.advance(now, result)  # the run is over; its result is on its way
                return True
            if summary.get("deliveryStatus") == "failed":
                return task.fail(now, "delivery failed" + (f": {result}" if result else ""))
            if run is not None and run.name == "run" and len(task.steps) > 1:
                task.advance(now, result)  # delivered already: both phases are over
            return task.finish(now, result)
        message = activity(summary)
        return task.touch(message) if message and task.running_step is not None and \
            task.running_step.message != message else False

    return apply


def mirror(store: TaskStore, summary: dict[str, Any], now: datetime) -> str | None:
    """Bring the task of `summary` up to it: made when first seen, changed as it moves. Returns the task id
    (None: the record names no usable id)."""
    tid = task_id(summary)
    if tid is None:
        return None
    stamp = now.astimezone().isoformat(timespec="seconds")
    try:
        store.load(tid)
    except TaskNotFound:
        steps = ["run", "deliver"] if delivers(summary) else ["run"]
        extra = {"openclaw": {k: summary[k] for k in ("id", "runtime", "kind", "agentId", "runId", "sourceId")
                              if isinstance(summary.get(k), str)}}
        task = store.create(task_name(summary), steps, now, stall_seconds=STALL_SECONDS, task_id=tid, extra=extra)
        started = _stamp(summary.get("startedAt") or summary.get("createdAt"))
        if started is not None:
            def backdate(t: Task, when: str = started) -> bool:
                t.started_at = t.steps[0].started_at = when
                return True

            store.update(task.task_id, backdate, now)
    store.update(tid, change(summary, stamp), now)
    return tid
