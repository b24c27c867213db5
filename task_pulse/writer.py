"""The writer verbs as plain functions: what `create`, `next`, `heartbeat`, `done` and `error` do.

Two front ends call them: the click CLI (`task_pulse.cli.writer`: help, options, usage errors) and
the entry point's fast path (`task_pulse.entry`), which runs a plain writer call without importing
click. Each returns an `Outcome`: the line to print (the original script's output), the task as data
for `--json`, and remarks for stderr that do not make the call fail.
"""

from __future__ import annotations

from task_pulse.messages import format_duration, progress_bar, word
from task_pulse.model import parse_time, shown_time
from task_pulse.store import TaskStore, unwatched_note

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from task_pulse.config import Settings
    from task_pulse.model import Task


class Outcome:
    __slots__ = ("text", "data", "notes")

    def __init__(self, text: str, task: Task, notes: list[str] | None = None) -> None:
        self.text, self.data, self.notes = text, task.to_dict(), notes or []


class AfterWrite:
    """After a write: the language to answer in, and what to say on stderr about the daemon.

    Whether a task-pulsed watches the dir is one read of its lock file: without one, nothing written
    here reaches the chat, and the caller is told (unless TASK_PULSE_DAEMON_CHECK=0). The answer is
    in the daemon's language when none was chosen, so the writer and the chat speak alike.
    """

    __slots__ = ("lang", "notes")

    def __init__(self, settings: Settings, store: TaskStore) -> None:
        daemon_lang = store.watching_daemon()
        self.lang = settings.lang_beside(daemon_lang)
        self.notes: list[str] = []
        if daemon_lang is None and settings.daemon_check:
            self.notes.append(unwatched_note(settings.tasks_path, created=store.created_root))


def _change(settings: Settings, id_or_prefix: str,
            change: Callable[[Task, str], bool | None]) -> tuple[Task, bool, AfterWrite]:
    """Resolve the id, then apply `change(task, now_iso)` under the task's lock.

    Returns the task, whether it was written (False: `change` found nothing to change), and what
    follows the write.
    """
    store = TaskStore(settings.tasks_path, settings.lock_timeout)
    task_id = store.resolve(id_or_prefix)
    now = settings.now()
    changed = True

    def apply(task: Task) -> bool:
        nonlocal changed
        changed = change(task, now.isoformat()) is not False
        return changed

    task = store.update(task_id, apply, now)
    return task, changed, AfterWrite(settings, store)


def _join(words: list[str] | tuple[str, ...]) -> str | None:
    return " ".join(words) if words else None


def create(settings: Settings, name: str, steps: list[str], stall: float | None = None,
           task_id: str | None = None, budget: float | None = None,
           step_budgets: dict[str, float] | None = None) -> Outcome:
    store = TaskStore(settings.tasks_path, settings.lock_timeout)
    task = store.create(name, steps, settings.now(), stall_seconds=stall, task_id=task_id, budget_seconds=budget,
                        step_budgets=step_budgets)
    return Outcome(task.task_id, task, AfterWrite(settings, store).notes)


def advance(settings: Settings, id_or_prefix: str, message: list[str] | tuple[str, ...]) -> Outcome:
    text = _join(message)
    task, _, written = _change(settings, id_or_prefix, lambda t, now: t.advance(now, text))
    current = task.running_step
    bar = progress_bar(task.done_count, task.total)
    return Outcome(f"[{task.done_count}/{task.total}] {bar} → {current.name if current else '—'}", task,
                   written.notes)


def heartbeat(settings: Settings, id_or_prefix: str, message: list[str] | tuple[str, ...],
              percent: float | None = None) -> Outcome:
    text = _join(message)
    task, changed, written = _change(settings, id_or_prefix, lambda t, _now: t.touch(text, percent))
    notes = written.notes
    if not changed:
        notes.append(f"task '{task.task_id}' has already ended ({task.status}); nothing to refresh")
    elif (text is not None or percent is not None) and task.running_step is None:
        notes.append(f"task '{task.task_id}' has no running step ({task.done_count}/{task.total} done); "
                     "refreshed, message not kept")
    return Outcome("💓 ok", task, notes)


def done(settings: Settings, id_or_prefix: str, result: list[str] | tuple[str, ...]) -> Outcome:
    text = _join(result)
    task, changed, written = _change(settings, id_or_prefix, lambda t, now: t.finish(now, text))
    started, finished = parse_time(task.started_at), parse_time(task.finished_at)
    duration = format_duration((finished - started).total_seconds(), written.lang) if started and finished else ""
    notes = written.notes + ([] if changed else [
        f"task '{task.task_id}' was already done at {shown_time(task.finished_at)}; nothing changed"])
    shown = (f"（{duration}）" if written.lang == "zh" else f" ({duration})") if duration else ""
    return Outcome(f"✅ {word('done', written.lang)}{shown}", task, notes)


def fail(settings: Settings, id_or_prefix: str, message: list[str] | tuple[str, ...]) -> Outcome:
    text = " ".join(message)
    task, changed, written = _change(settings, id_or_prefix, lambda t, now: t.fail(now, text))
    if changed:
        return Outcome(f"❌ {text}", task, written.notes)
    return Outcome(f"❌ {task.error or text}", task, [
        *written.notes, f"task '{task.task_id}' had already failed at {shown_time(task.finished_at)}; nothing changed"])


# For the fast path: verb -> (fewest operands, run with the operands as given on the command line).
PLAIN_CALLS: dict[str, tuple[int, Callable[[Settings, list[str]], Outcome]]] = {
    "create": (2, lambda s, ops: create(s, ops[0], ops[1:])),
    "next": (1, lambda s, ops: advance(s, ops[0], ops[1:])),
    "heartbeat": (1, lambda s, ops: heartbeat(s, ops[0], ops[1:])),
    "done": (1, lambda s, ops: done(s, ops[0], ops[1:])),
    "error": (2, lambda s, ops: fail(s, ops[0], ops[1:])),
}
