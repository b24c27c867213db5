"""The history in the real state db: recorded with its read, bounded, migrated, read read-only, shown."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from task_pulse.cli import cli
from task_pulse.history.reader import read_only
from task_pulse.history.runs import Observed, Run, StepRun
from task_pulse.model import task_from_dict
from task_pulse.records import Notification, Seen
from task_pulse.state.outbox import Outbox
from task_pulse.state.sql_sqlite import SCHEMA_VERSION
from task_pulse.store import TaskStore


def run(n: int, name: str = "Daily", seconds: float = 60, outcome: str = "done") -> Run:
    start = 1_800_000_000.0 + 86400 * n
    return Run(f"{name}-{n}", f"{name}-{n}", name, outcome, start, start, start + seconds,
               (StepRun("fetch", "done", seconds / 2, 5.0), StepRun("write", "done", seconds / 2, None)))


def seen(task_id: str, status: str = "done") -> Seen:
    return Seen(task_id=task_id, snapshot=task_from_dict(
        {"taskName": "Daily", "status": status, "steps": [{"name": "fetch", "status": "done"}]}, task_id),
        observed=Observed({"0:fetch": 5.0}, ["task"]), overdue_at=None)


def note(key: str, task_id: str) -> Notification:
    return Notification(key=key, task_id=task_id, task_name="Daily", kind="done", text="done", data={})


def test_a_run_is_recorded_with_its_read_once_and_kept_to_the_newest_per_name(tasks_dir: Path) -> None:
    outbox = Outbox.for_tasks_dir(tasks_dir)
    for n in range(6):
        outbox.record(f"Daily-{n}", seen(f"Daily-{n}"), [note(f"k{n}", f"Daily-{n}")], run(n), keep_runs=4)
    outbox.record("Daily-5", seen("Daily-5"), [], run(5), keep_runs=4)  # the same run again: stored once
    outbox.record("Other-0", seen("Other-0"), [], run(0, name="Other"), keep_runs=4)
    assert [r.key for r in outbox.runs.runs_of("Daily", 10)] == ["Daily-5", "Daily-4", "Daily-3", "Daily-2"]
    assert outbox.runs.names() == {"Daily", "Other"}
    assert outbox.seen("Daily-1").observed == Observed({"0:fetch": 5.0}, ["task"])  # type: ignore[union-attr]
    assert outbox.purge_runs(run(3).at) == 2  # older than the age bound: Daily-2 and Other-0
    assert [r.key for r in outbox.runs.runs_of("Daily", 10)] == ["Daily-5", "Daily-4", "Daily-3"]
    outbox.close()


def test_a_failed_record_adds_no_run(tasks_dir: Path) -> None:
    outbox = Outbox.for_tasks_dir(tasks_dir)
    broken = Run("bad", "t", "Daily", "done", 1.0, None, None, ())
    outbox.db.execute("CREATE TRIGGER refuse BEFORE INSERT ON notifications BEGIN SELECT raise(ABORT, 'no'); END")
    with pytest.raises(sqlite3.IntegrityError):
        outbox.record("t", seen("t"), [note("k", "t")], broken)
    assert outbox.runs.runs_of("Daily", 10) == [] and outbox.seen("t") is None
    outbox.close()


def test_profiles_of_several_names_in_one_query(tasks_dir: Path) -> None:
    outbox = Outbox.for_tasks_dir(tasks_dir)
    for n in range(3):
        outbox.record(f"a{n}", seen(f"a{n}"), [], run(n, "A", 60 + n))
        outbox.record(f"b{n}", seen(f"b{n}"), [], run(n, "B", 600))
    outbox.record("a-failed", seen("a-failed"), [], run(9, "A", 9999, outcome="error"))
    profiles = outbox.runs.profiles(["A", "B", "C"])
    assert set(profiles) == {"A", "B"}
    assert profiles["A"].runs == 3 and profiles["A"].total.typical == 61
    assert profiles["B"].steps["0:fetch"].silences == (5.0, 5.0, 5.0)
    outbox.close()


def test_a_schema_3_database_is_migrated_and_learns(tasks_dir: Path) -> None:
    """A state db from before the history: its tasks are kept, the runs table and columns are added."""
    outbox = Outbox.for_tasks_dir(tasks_dir)
    outbox.record("t1", seen("t1", "running"), [])
    outbox.close()
    db = sqlite3.connect(tasks_dir / ".pulse" / "state.db")
    db.executescript("""
        DROP TABLE runs; DROP INDEX seen_overdue;
        ALTER TABLE seen DROP COLUMN observed; ALTER TABLE seen DROP COLUMN overdue_at;
        UPDATE meta SET value = '3' WHERE name = 'schema_version';
    """)
    db.commit()
    db.close()
    with read_only(TaskStore(tasks_dir)) as reader:
        assert reader is None  # no history yet, and nothing changed by looking
    again = Outbox.for_tasks_dir(tasks_dir)
    assert again.get_meta("schema_version") == str(SCHEMA_VERSION)
    assert again.seen("t1") is not None and again.seen("t1").observed is None  # type: ignore[union-attr]
    again.record("t1", seen("t1"), [], run(1))
    assert [r.key for r in again.runs.runs_of("Daily", 5)] == ["Daily-1"]
    again.close()


def test_history_command_reads_without_writing(tasks_dir: Path) -> None:
    runner = CliRunner()
    empty = runner.invoke(cli, ["--dir", str(tasks_dir), "--lang", "en", "history"])
    assert empty.exit_code == 0 and empty.output.startswith("📭 no history yet")
    assert not (tasks_dir / ".pulse" / "state.db").exists()  # a reader creates nothing
    outbox = Outbox.for_tasks_dir(tasks_dir)
    for n in range(4):
        outbox.record(f"Daily-{n}", seen(f"Daily-{n}"), [], run(n, seconds=60 + 10 * n))
    outbox.record("Daily-9", seen("Daily-9"), [], run(9, seconds=30, outcome="error"))
    outbox.close()
    db_file = tasks_dir / ".pulse" / "state.db"
    before = db_file.stat().st_mtime_ns
    summary = runner.invoke(cli, ["--dir", str(tasks_dir), "--json", "history"])
    rows = json.loads(summary.output)
    assert rows == [{"name": "Daily", "runs": 5, "done": 4, "failed": 1, "typicalSeconds": 75.0,
                     "lastAt": rows[0]["lastAt"], "sparkline": "▁▃▆█×"}]
    one = json.loads(runner.invoke(cli, ["--dir", str(tasks_dir), "history", "Daily", "--json"]).output)
    assert [r["seconds"] for r in one["runs"]] == [30, 90, 80, 70, 60]
    assert one["runs"][1]["steps"][0] == {"name": "fetch", "status": "done", "seconds": 45, "silenceSeconds": 5.0}
    assert one["steps"][0]["typicalSeconds"] == 37.5 and one["steps"][0]["stallSource"] == "default"
    text = runner.invoke(cli, ["--dir", str(tasks_dir), "--lang", "en", "history", "Daily"]).output
    assert text.startswith("Daily · 5 runs (✅4 ❌1) · typical 1m15s · overdue after 2m30s\n▁▃▆█×\n")
    missing = runner.invoke(cli, ["--dir", str(tasks_dir), "history", "daily report"])
    assert missing.exit_code == 1 and "no history for 'daily report'" in missing.output
    near = runner.invoke(cli, ["--dir", str(tasks_dir), "history", "dail"])
    assert "did you mean 'Daily'" in near.output
    assert db_file.stat().st_mtime_ns == before


def test_history_command_never_loads_the_daemon() -> None:
    import subprocess
    import sys

    code = "import sys; from task_pulse.cli import main; import task_pulse.cli.history; " \
           "print(any(m.startswith('task_pulsed') for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_create_writes_budgets_and_refuses_one_for_a_step_it_does_not_have(tasks_dir: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(cli, ["--dir", str(tasks_dir), "--json", "create", "--budget", "3600", "--step-budget",
                               "test=900", "--step-budget", "a=b=60", "Build", "compile", "test", "a=b"])
    assert made.exit_code == 0, made.output
    task = json.loads(made.output)
    assert task["budgetSeconds"] == 3600
    assert [s.get("budgetSeconds") for s in task["steps"]] == [None, 900, 60]  # the last `=` splits
    for bad, says in ((["--step-budget", "deploy=60"], "not one of the steps"),
                      (["--step-budget", "test"], "must be NAME=SECONDS"),
                      (["--step-budget", "test=0"], "must be a number from 1 to 315360000"),
                      (["--budget", "nan"], "--budget")):
        refused = runner.invoke(cli, ["--dir", str(tasks_dir), "create", *bad, "Build", "compile", "test"])
        assert refused.exit_code == 2 and says in refused.output, (bad, refused.output)
    assert len(list(tasks_dir.glob("*.json"))) == 1  # nothing written for a refused call


def test_history_settings_are_checked() -> None:
    from task_pulse.config import load_settings
    from task_pulse.errors import ConfigError

    settings = load_settings(env={"TASK_PULSE_HISTORY_RUNS": "5", "TASK_PULSE_HISTORY_DAYS": "30"},
                             config_file="/nonexistent")
    assert (settings.history_runs, settings.history_days) == (5, 30)
    defaults = load_settings(env={}, config_file="/nonexistent")
    assert (defaults.history_runs, defaults.history_days) == (50, 90)
    for env, says in (({"TASK_PULSE_HISTORY_RUNS": "abc"}, "must be a number"),
                      ({"TASK_PULSE_HISTORY_RUNS": "0"}, "whole number from 1"),
                      ({"TASK_PULSE_HISTORY_DAYS": "-1"}, "positive")):
        with pytest.raises(ConfigError, match=says):
            load_settings(env=env, config_file="/nonexistent")
