"""`task-pulse history [NAME]`: the runs of recurring tasks the daemon remembers, and what they teach.

A reader: it opens the state db read-only (task_pulse/history/reader.py), never the daemon's code,
and shows what the daemon recorded as each run ended: outcome, duration, each step's duration, and
from the latest successful runs the typical durations, when a step is overdue, and the stall
threshold a step has learned.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import click

from task_pulse.cli.base import Context, cli, json_option, pass_ctx
from task_pulse.errors import OperationFailed
from task_pulse.history.forecast import LEARNED, MIN_RUNS, Norm, Profile, learn
from task_pulse.history.runs import Run, step_keys
from task_pulse.messages import clean, format_duration

BARS = "▁▂▃▄▅▆▇█"
FAILED_MARK = "×"  # a failed run in a sparkline
# Runs a name's line draws (table without NAME) and runs shown per name by default.
SPARK_RUNS = 20

_WORDS = {
    "zh": {"runs": "{n} 次（✅{done} ❌{failed}）", "typical": "通常 {d}", "last": "最近 {at}",
           "overdue_after": "超过 {d} 算超时", "stall_after": "{d} 无更新算卡住（{source}）",
           "default": "默认", "learned": "按历史", "steps": "步骤",
           "none": "📭 还没有历史（task-pulsed 在任务结束时记录）",
           "newest": "最近的运行（新的在前）", "too_few": "成功运行不足 {min} 次：还不能预计"},
    "en": {"runs": "{n} runs (✅{done} ❌{failed})", "typical": "typical {d}", "last": "last {at}",
           "overdue_after": "overdue after {d}", "stall_after": "stall after {d} ({source})",
           "default": "default", "learned": "learned", "steps": "steps",
           "none": "📭 no history yet (task-pulsed records each run as it ends)",
           "newest": "latest runs (newest first)", "too_few": "fewer than {min} successful runs: no forecasts yet"},
}


def sparkline(runs: list[Run]) -> str:
    """One character per run, oldest first: its duration as a bar's height, a failed run as ×."""
    seconds = [r.seconds for r in runs if r.seconds is not None and r.outcome == "done"]
    low, high = (min(seconds), max(seconds)) if seconds else (0.0, 0.0)
    out = []
    for run in runs:
        if run.outcome != "done":
            out.append(FAILED_MARK)
        elif run.seconds is not None:
            share = (run.seconds - low) / (high - low) if high > low else 0.5
            out.append(BARS[min(len(BARS) - 1, int(share * len(BARS)))])
    return "".join(out)


def _when(at: float | None) -> str | None:
    return None if at is None else datetime.fromtimestamp(at).astimezone().isoformat(timespec="seconds")


def _norm_json(norm: Norm | None, default_stall: float) -> dict[str, Any]:
    quiet = norm.quiet if norm is not None else None
    learned = quiet is not None and quiet > default_stall
    return {"typicalSeconds": norm.typical if norm else None,
            "overdueAfterSeconds": norm.overdue_after if norm else None,
            "stallSeconds": quiet if learned else default_stall, "stallSource": LEARNED if learned else "default"}


def _run_json(run: Run) -> dict[str, Any]:
    return {"taskId": run.task_id, "outcome": run.outcome, "startedAt": _when(run.started_at),
            "finishedAt": _when(run.finished_at), "seconds": run.seconds,
            "steps": [{"name": s.name, "status": s.status, "seconds": s.seconds, "silenceSeconds": s.silence}
                      for s in run.steps]}


def _steps_of(latest: Run) -> list[tuple[str, str]]:
    """(step name, step key) of the latest run's steps: the order the table shows them in."""
    return list(zip([s.name for s in latest.steps], step_keys([s.name for s in latest.steps]), strict=True))


def _name_json(name: str, runs: list[Run], profile: Profile, default_stall: float) -> dict[str, Any]:
    steps = [{"name": step, **_norm_json(profile.steps.get(key), default_stall)}
             for step, key in (_steps_of(runs[0]) if runs else [])]
    return {"name": name, "successfulRuns": profile.runs, "typicalSeconds": profile.total.typical,
            "overdueAfterSeconds": profile.total.overdue_after, "steps": steps,
            "sparkline": sparkline(runs[::-1]), "runs": [_run_json(r) for r in runs]}


def _duration(seconds: float | None, lang: str) -> str:
    return "—" if seconds is None else format_duration(seconds, lang)


def _name_text(name: str, runs: list[Run], profile: Profile, default_stall: float, lang: str) -> str:
    words = _WORDS[lang]
    done = sum(r.outcome == "done" for r in runs)
    head = [f"{clean(name)} · " + words["runs"].format(n=len(runs), done=done, failed=len(runs) - done)]
    if profile.total.typical is not None:
        head.append(words["typical"].format(d=format_duration(profile.total.typical, lang)))
        head.append(words["overdue_after"].format(d=format_duration(profile.total.overdue_after or 0, lang)))
    lines = [" · ".join(head), sparkline(runs[::-1])]
    if profile.runs < MIN_RUNS:
        lines.append(words["too_few"].format(min=MIN_RUNS))
    else:
        lines += ["", f"{words['steps']}:"]
        for step, key in _steps_of(runs[0]):
            norm = _norm_json(profile.steps.get(key), default_stall)
            parts = [clean(step)]
            if norm["typicalSeconds"] is not None:
                parts += [words["typical"].format(d=format_duration(norm["typicalSeconds"], lang)),
                          words["overdue_after"].format(d=format_duration(norm["overdueAfterSeconds"], lang))]
            parts.append(words["stall_after"].format(d=format_duration(norm["stallSeconds"], lang),
                                                     source=words[norm["stallSource"]]))
            lines.append("   " + " · ".join(parts))
    lines += ["", f"{words['newest']}:"]
    for run in runs:
        icon = "✅" if run.outcome == "done" else "❌"
        steps = " · ".join(f"{clean(s.name, 40)} {_duration(s.seconds, lang)}" for s in run.steps
                           if s.seconds is not None)
        when = _when(run.at) or ""
        lines.append(f"{icon} {when[:16].replace('T', ' ')}  {_duration(run.seconds, lang)}" +
                     (f"  ({steps})" if steps else ""))
    return "\n".join(lines)


@cli.command()
@click.argument("name", required=False)
@click.option("--limit", type=click.IntRange(min=1), default=SPARK_RUNS, show_default=True, metavar="N",
              help="Runs shown per task name (the latest).")
@json_option
@pass_ctx
def history(ctx: Context, name: str | None, limit: int) -> None:
    """Past runs of each task name: outcomes, durations, a sparkline, and what they teach.

    task-pulsed records every run as it ends (from files written whole too, with their own
    timestamps) and keeps it after cleanup removes the file. Without NAME: one line per task
    name. With NAME: its latest runs with each step's duration, and per step the typical
    duration, when it is overdue and the stall threshold it has learned (after 3 successful
    runs; an explicit stallSeconds always wins).

    \b
    Examples:
      task-pulse history
      task-pulse history 日报发布
      task-pulse history "Nightly backup" --json | jq '.runs[].seconds'
    """
    import sqlite3

    from task_pulse.history.reader import read_only

    settings, lang = ctx.settings, ctx.lang
    try:
        with read_only(ctx.store) as reader:
            if name is None:
                rows = []
                for each, count, done, last in (reader.summary() if reader is not None else []):
                    runs = reader.runs_of(each, limit) if reader is not None else []
                    profile = learn(each, runs)
                    rows.append({"name": each, "runs": count, "done": done, "failed": count - done,
                                 "typicalSeconds": profile.total.typical, "lastAt": _when(last),
                                 "sparkline": sparkline(runs[::-1])})
                _show_names(ctx, rows, lang)
                return
            runs = reader.runs_of(name, limit) if reader is not None else []
            if not runs:
                known = sorted(reader.names()) if reader is not None else []
                near = [n for n in known if name.lower() in n.lower()][:5]
                raise OperationFailed(f"no history for {name!r}" + (f" (did you mean {', '.join(map(repr, near))}?)"
                                                                   if near else ""))
            profile = reader.profile(name)
    except sqlite3.Error as exc:
        raise OperationFailed(f"state database {ctx.store.pulse_dir / 'state.db'}: {exc}") from None
    if ctx.json_output:
        import json

        click.echo(json.dumps(_name_json(name, runs, profile, settings.stall_seconds), ensure_ascii=False))
    else:
        click.echo(_name_text(name, runs, profile, settings.stall_seconds, lang))


def _show_names(ctx: Context, rows: list[dict[str, Any]], lang: str) -> None:
    if ctx.json_output:
        import json

        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    words = _WORDS[lang]
    if not rows:
        click.echo(words["none"])
        return
    for row in rows:
        parts = [clean(row["name"]), words["runs"].format(n=row["runs"], done=row["done"], failed=row["failed"])]
        if row["typicalSeconds"] is not None:
            parts.append(words["typical"].format(d=format_duration(row["typicalSeconds"], lang)))
        parts += [row["sparkline"], words["last"].format(at=(row["lastAt"] or "")[:16].replace("T", " "))]
        click.echo(" · ".join(p for p in parts if p))
