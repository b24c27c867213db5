"""Reader verbs: what the parent agent (or a cron job) calls to see tasks and take messages.

`status` shows the tasks (with what the history of their names says: the time left, the stall
threshold in force, what is overdue); `drain` takes the pending notifications out of the outbox.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import click

from task_pulse.cli.base import Context, cli, json_option, pass_ctx, state_option
from task_pulse.errors import BadInput, OperationFailed
from task_pulse.markup import MARKUPS, PLAIN
from task_pulse.messages import pick_for_status, status_view
from task_pulse.model import Task, TaskFormatError, stalled_for
from task_pulse.status import all_hosts_entries, outlooks_of, status_record

if TYPE_CHECKING:

    from task_pulse.history.forecast import Outlook, Profile
    from task_pulse.records import DeliveryStore, Overview, Queued
    from task_pulse.state.shared import SharedOutbox

# How long a drain's claim lasts: a drain that dies mid-way delays its rows this long; one whose
# output blocks longer than this may see another deliverer print them too (at least once).
DRAIN_LEASE_SECONDS = 300
# Rows a drain claims at a time.
DRAIN_BATCH = 500
# Tasks the `status` table shows at most, unless asked for more: the ones most worth seeing.
STATUS_LIMIT = 50


def _local_profiles(ctx: Context, tasks: list[Task]) -> dict[str, Profile]:
    """The profiles of the running tasks' names, from this dir's state db (none without one)."""
    import sqlite3

    from task_pulse.history.reader import read_only
    from task_pulse.privatedir import UnsafeDir

    names = {t.name for t in tasks if t.status == "running"}
    if not names:
        return {}
    try:
        with read_only(ctx.store) as runs:
            return runs.profiles(names) if runs is not None else {}
    except (sqlite3.Error, UnsafeDir):
        # Busy past its timeout, unreadable, or a `.pulse/` someone else could have planted (never read):
        # the tasks are shown without their history (the writers say what is wrong with `.pulse/`).
        return {}


@cli.command()
@click.argument("task_id", metavar="[ID]", required=False)
@click.option("--all", "show_all", is_flag=True, help="Show every task, however many.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N",
              help=f"Show at most N tasks, the most worth seeing [table: {STATUS_LIMIT}; --json: every task].")
@click.option("--all-hosts", is_flag=True,
              help="The tasks of every host that forwards to the shared state database (--state), from any host.")
@state_option
@json_option
@pass_ctx
def status(ctx: Context, task_id: str | None, show_all: bool, limit: int | None, all_hosts: bool,
           state_url: str | None) -> None:
    """Show the tasks (stalled ones flagged), or one task with every step.

    A running task is stalled when its updatedAt is older than its stallSeconds (else
    TASK_PULSE_STALL, default 180 s). Unreadable files are named, never hidden. With more
    than 50 tasks the table shows the 50 most worth seeing (unreadable, stalled, the latest
    failed, running, done) and sums up all of them; while task-pulsed runs, those counts come
    from its state db, so even 100,000 tasks take well under a second.

    \b
    Example:
      task-pulse status
      task-pulse status --all
      task-pulse status --json | jq '.[] | select(.stalled)'
      task-pulse status 日报发布
      task-pulse status 日报发布 --json
      task-pulse status --all-hosts --state postgresql://pulse@db.internal/pulse
    """
    if state_url is not None:
        ctx.flags["state_url"] = state_url
    click.echo(_status_text(ctx, task_id, show_all, limit, all_hosts))
    if not all_hosts and (note := ctx.unwatched()):  # after the output: a table is read from its end up
        click.echo(f"note: {note}", err=True)


def _status_text(ctx: Context, task_id: str | None, show_all: bool, limit: int | None, all_hosts: bool) -> str:
    """What `status` prints: one task (its view, or JSON), or the table (or JSON) of many."""
    settings, store = ctx.settings, ctx.store
    now = settings.now()
    if all_hosts and task_id is not None:
        raise BadInput("--all-hosts shows every task; for one task, run status ID on its host")
    if task_id is not None:
        task = store.load(store.resolve(task_id), reader=True)
        outlook = outlooks_of([(task_id, task)], _local_profiles(ctx, [task]), now, settings.stall_seconds)[task_id]
        if ctx.json_output:  # indented, as the original script printed one task
            return json.dumps(status_record(task, now, outlook), ensure_ascii=False, indent=2)
        return task_view(task, now, outlook.stall_seconds, ctx.lang)
    if show_all:
        limit = None
    elif limit is None and not ctx.json_output:
        limit = STATUS_LIMIT
    if all_hosts:
        if settings.state_url is None:
            raise BadInput("--all-hosts reads the shared state database: give --state URL (or TASK_PULSE_STATE)")
        with shared_db(settings.state_url) as shared:
            entries, totals, more, hosts, outlooks = all_hosts_entries(shared, now, limit, settings.stall_seconds)
    else:
        entries, totals, more, outlooks = _status_entries(ctx, now, limit)
        hosts = {}
    if ctx.json_output:
        records = [
            {"taskId": tid, "invalid": str(t)} if isinstance(t, TaskFormatError)
            else {**status_record(t, now, outlooks[tid]), **hosts.get(tid, {})}
            for tid, t in entries
        ]
        return json.dumps(records, ensure_ascii=False)
    if hosts:  # the table names each task's host before its name
        entries = [(tid, t if isinstance(t, TaskFormatError) else t.copy(name=f"[{hosts[tid]['host']}] {t.name}"))
                   for tid, t in entries]
    return status_view(entries, now, settings.stall_seconds, ctx.lang, totals, more, outlooks)


def task_view(task: Task, now: datetime, default_stall: float, lang: str) -> str:
    """One task as `status ID` shows it: its card (every step, its result or error), then its id and times."""
    from task_pulse.card import render_card
    from task_pulse.messages import clean, word
    from task_pulse.model import shown_time

    card = render_card(task, now, lang, stalled=stalled_for(task, now, default_stall) is not None)
    times = [(word("started_at", lang), task.started_at), (word("updated_at", lang), task.updated_at)]
    if task.status != "running":
        times.append((word("finished_at", lang), task.finished_at))
    details = " · ".join([f"{word('task_id', lang)}: {clean(task.task_id)}",
                          *(f"{label} {shown_time(stamp)}" for label, stamp in times if stamp)])
    return f"{card}\n{details}"


def _status_entries(ctx: Context, now: datetime, limit: int | None) -> tuple[
        list[tuple[str, Task | TaskFormatError]], dict[str, int] | None, int, dict[str, Outlook]]:
    """The tasks to show (at most `limit`), in the order shown, the counts of all of them (None: count what
    is shown), how many are not shown, and what the history says of each (by id). While task-pulsed runs,
    its state db says which to show and the counts (only the files shown are read); else every file is read."""
    settings, store = ctx.settings, ctx.store
    overview = _daemon_overview(ctx, now, limit) if limit is not None else None
    if overview is not None:
        shown = store.read_tasks((task_id for _, task_id in overview.tasks), reader=True)
        entries, _ = pick_for_status(list(shown), now, settings.stall_seconds, None)
        totals = {"running": overview.running, "stalled": overview.stalled, "done": overview.done,
                  "error": overview.error}
        outlooks = outlooks_of(entries, _local_profiles(ctx, [t for _, t in entries if isinstance(t, Task)]), now,
                               settings.stall_seconds)
        return entries, totals, max(0, overview.total - len(entries)), outlooks
    entries = store.list_tasks(reader=True)
    outlooks = outlooks_of(entries, _local_profiles(ctx, [t for _, t in entries if isinstance(t, Task)]), now,
                           settings.stall_seconds)
    shown, totals = pick_for_status(entries, now, settings.stall_seconds, limit, outlooks)
    if limit is None or len(entries) <= limit:
        return shown, None, 0, outlooks
    return shown, totals, len(entries) - len(shown), outlooks


@contextmanager
def shared_db(url: str) -> Iterator[SharedOutbox]:
    """The shared state db for a reader, closed after; any trouble with it is one line, exit 1."""
    from task_pulse.state.shared import SharedOutbox, shown_url, state_errors

    errors = state_errors()
    try:
        shared = SharedOutbox(url, migrate=False)
    except errors as exc:
        raise OperationFailed(f"shared state database {shown_url(url)}: {' '.join(str(exc).split())}") from None
    try:
        yield shared
    except errors as exc:
        raise OperationFailed(f"shared state database {shown_url(url)}: {' '.join(str(exc).split())}") from None
    finally:
        shared.close()


def _daemon_overview(ctx: Context, now: datetime, limit: int) -> Overview | None:
    """The state db's overview, when a daemon keeps it current (else None: the files say it)."""
    import sqlite3  # only for readers that need it

    from task_pulse.history.reader import read_only_db
    from task_pulse.state.outbox import read_overview

    store = ctx.store
    if not store.daemon_running():
        return None
    try:
        with read_only_db(store) as db:
            overview = read_overview(db, now.timestamp(), limit) if db is not None else None
    except sqlite3.Error:  # busy for longer than its timeout, or a schema of another version: read the files
        return None
    # The db knows only the tasks the daemon has read: with fewer than `limit` of them, show them all.
    return overview if overview is not None and overview.total > limit else None


@cli.command()
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="At most N notifications.")
@click.option("--digest", is_flag=True, help="One message per task for everything pending (at most 3 lines).")
@click.option("--markup", type=click.Choice(MARKUPS), default=PLAIN, show_default=True,
              help="What the chat that gets the output makes of it: markdown escapes Markdown in what tasks say "
                   "(an OpenClaw cron job posts the output as Markdown).")
@state_option
@json_option
@pass_ctx
def drain(ctx: Context, limit: int | None, digest: bool, markup: str, state_url: str | None) -> None:
    """Print pending notifications, oldest first, then mark them delivered.

    Each message is printed and flushed before it is marked delivered: if the caller dies in
    between, the next drain prints it again (at least once, never lost). Two drains running at
    once never print the same notification. --json prints one object per line with seq, key,
    taskId, taskName, kind, text, createdAt, done, total, step. --digest sums up each task in
    one message, for a parent that drains only every half hour; a backlog is taken 500
    notifications at a time (a task with more pending than that may get one message per 500).
    Rows of a shared state database are cleaned and masked again, whatever a host put there;
    one that no daemon writes (its data no JSON object) is skipped, with a line on stderr.

    \b
    Examples (a parent agent's heartbeat):
      task-pulse drain
      task-pulse drain --digest --json | while read -r line; do send-to-chat "$line"; done
      task-pulse drain --digest --markup markdown   # what `openclaw setup --via cron` runs
      task-pulse drain --state postgresql://pulse@db.internal/pulse   # every host's, from any host
    """
    import sqlite3  # only for readers that need it

    from task_pulse.state.outbox import DB_NAME, SHARED_STATE_META, Outbox

    if state_url is not None:
        ctx.flags["state_url"] = state_url
    if ctx.settings.state_url is not None:
        with shared_db(ctx.settings.state_url) as shared:
            _drain(ctx, shared, limit, digest, markup)
        return
    printed = 0
    try:
        try:
            outbox = Outbox.for_store(ctx.store, create=False)  # `.pulse/` checked first (privatedir.py)
        except FileNotFoundError:
            outbox = None  # no daemon has run here: nothing to drain
        if outbox is not None:
            if forwarded_to := outbox.get_meta(SHARED_STATE_META):
                outbox.close()
                raise BadInput(f"the daemon of {ctx.store.root} forwards to the shared state database "
                               f"{forwarded_to}: drain that one (--state URL, or TASK_PULSE_STATE)")
            printed = _drain(ctx, outbox, limit, digest, markup)
    except sqlite3.Error as exc:  # locked for too long, corrupt, unreadable: one line, not a traceback
        raise OperationFailed(f"state database {ctx.store.pulse_dir / DB_NAME}: {exc}") from None
    _tell_unwatched(ctx, printed)


def _tell_unwatched(ctx: Context, printed: int) -> None:
    """Say on stderr that no task-pulsed watches the dir: nothing new will come to drain.

    At a terminal, every time. Elsewhere (a cron job, an agent) once per absence of the daemon: an
    OpenClaw command job posts a command's stderr to the chat too, and with its stdout when both
    have text, so the note waits for a drain that printed nothing, and is not said every minute.
    """
    note = ctx.unwatched()
    if note is None:
        return
    if not sys.stderr.isatty() and (printed or not ctx.store.first_to_tell(
            "drain-told", f"no daemon since {ctx.store.daemon_lock_mark or 'ever'}")):
        return
    click.echo(f"note: {note}", err=True)


def _drain(ctx: Context, outbox: DeliveryStore, limit: int | None, digest: bool, markup: str) -> int:
    """Claim, print, mark delivered, in batches of DRAIN_BATCH, digests too: a big backlog streams out in
    bounded memory (50,000 rows at once took 518 MB), and no claim holds the write lock for long. Returns
    how many messages were printed."""
    import uuid

    from task_pulse.outgoing import outgoing

    owner = f"drain:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    left = limit
    printed = 0
    try:
        while left is None or left > 0:
            size = min(DRAIN_BATCH, DRAIN_BATCH if left is None else left)
            claimed = outbox.claim(owner, size, lease_seconds=DRAIN_LEASE_SECONDS)
            for line in outbox.skipped:
                click.echo(f"note: {line}", err=True)
            outbox.skipped.clear()
            if not claimed:
                return printed
            rows = [outgoing(r, markup, recheck=bool(r.host)) for r in claimed]
            try:
                messages = _digests(rows, ctx.flags.get("lang"), markup) if digest else \
                    ((r.text, r.to_json()) for r in rows)
                for text, data in messages:
                    click.echo(json.dumps(data, ensure_ascii=False) if ctx.json_output else f"{text}\n")
                    printed += 1
                sys.stdout.flush()
            except BaseException:
                outbox.release([r.seq for r in rows], owner)  # not printed for sure: hand them straight back
                raise
            outbox.mark_delivered([r.seq for r in rows], owner, by="drain")
            if left is not None:
                left -= len(rows)
    finally:
        outbox.close()
    return printed


def _digests(rows: list[Queued], lang: str | None, markup: str) -> list[tuple[str, dict[str, Any]]]:
    """(text, --json object) per task, tasks in the order of their oldest pending notification.

    A digest speaks the language its notifications were written in (the daemon's), so a cron
    drain without TASK_PULSE_LANG matches the live messages; `--lang` on the command line wins.
    """
    from task_pulse.config import LANGS
    from task_pulse.messages import digest, shown_id

    by_task: dict[tuple[str, str], list[Queued]] = {}
    for row in rows:
        by_task.setdefault((row.host, row.task_id), []).append(row)
    out = []
    for (_host, task_id), group in by_task.items():
        written_in = group[-1].data.get("lang")
        text = digest([(r.kind, r.data) for r in group], lang or (written_in if written_in in LANGS else "zh"), markup)
        last = group[-1].to_json()
        out.append((text, {**last, "kind": "digest", "text": text, "latestKind": group[-1].kind,
                           "count": len(group), "seqs": [r.seq for r in group], "keys": [r.key for r in group],
                           "taskId": shown_id(task_id)}))
    return out


