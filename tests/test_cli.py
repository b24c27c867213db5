"""The `task-pulse` command, end to end through click: outputs, files and exit codes of DESIGN.md."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from task_pulse.cli import cli
from task_pulse.model import shown_time

SETTINGS_VARS = ("TASK_PULSE_DIR", "TASK_PULSE_TZ", "TASK_PULSE_STALL", "TASK_PULSE_LANG", "TASK_PULSE_KEEP_DAYS",
                 "TASK_PULSE_PROGRESS_INTERVAL")
COMMANDS = ("create", "next", "heartbeat", "done", "error", "status", "cleanup", "drain")


@pytest.fixture
def tasks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A tasks dir under tmp_path/w/, with a clean environment and a HOME without a config file."""
    for var in SETTINGS_VARS:
        monkeypatch.delenv(var, raising=False)
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    return tmp_path / "w" / "tasks"


def run(tasks_dir: Path, *args: str, group: Sequence[str] = ()) -> Result:
    result = CliRunner().invoke(cli, ["--dir", str(tasks_dir), *group, *args])
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result


def ok(tasks_dir: Path, *args: str, group: Sequence[str] = ()) -> str:
    result = run(tasks_dir, *args, group=group)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    return result.stdout


def fails(tasks_dir: Path, code: int, *args: str) -> str:
    """Run a command that must fail with `code`, one `Error:` line on stderr and nothing on stdout."""
    result = run(tasks_dir, *args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ")
    assert result.stderr.count("\n") == 1 and result.stderr.endswith("\n")
    return result.stderr.rstrip("\n")


def read(tasks_dir: Path, task_id: str) -> dict[str, Any]:
    return json.loads((tasks_dir / f"{task_id}.json").read_text(encoding="utf-8"))


def local_now() -> datetime:
    return datetime.now().astimezone()


def write_task(tasks_dir: Path, task_id: str, **fields: Any) -> Path:
    now = local_now().isoformat()
    raw: dict[str, Any] = {"taskId": task_id, "taskName": task_id, "status": "running", "startedAt": now,
                           "updatedAt": now, "finishedAt": None,
                           "steps": [{"name": "a", "status": "running", "startedAt": now},
                                     {"name": "b", "status": "pending"}],
                           "error": None, "result": None}
    raw.update(fields)
    tasks_dir.mkdir(parents=True, exist_ok=True)
    path = tasks_dir / f"{task_id}.json"
    path.write_text(json.dumps(raw, ensure_ascii=False), encoding="utf-8")
    return path


def ago(**delta: float) -> str:
    return (local_now() - timedelta(**delta)).isoformat()


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every path under root with its mode, size and mtime."""
    out = {}
    for path in [root, *root.rglob("*")]:
        st = os.lstat(path)
        out[str(path)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


# -- help -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_help_has_an_example(command: str, tasks: Path) -> None:
    out = ok(tasks, command, "--help")
    assert "Example" in out
    assert f"task-pulse {command}" in out  # the example shows this very command


def test_group_help_and_help_works_with_bad_settings(tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_PULSE_STALL", "abc")
    assert "Example" in ok(tasks, "--help")
    assert "Example" in ok(tasks, "status", "--help")


# -- create -----------------------------------------------------------------------------------------


def test_create_prints_original_style_id(tasks: Path) -> None:
    out = ok(tasks, "create", "Daily report", "fetch", "filter", "write")
    task_id = out.rstrip("\n")
    assert out == task_id + "\n"
    assert re.fullmatch(r"Daily-report-\d{8}-\d{6}", task_id)
    raw = read(tasks, task_id)
    assert raw["taskName"] == "Daily report"
    assert raw["status"] == "running"
    assert raw["rev"] == 1
    assert [(s["name"], s["status"]) for s in raw["steps"]] == [
        ("fetch", "running"), ("filter", "pending"), ("write", "pending")]
    assert "stallSeconds" not in raw


def test_create_with_id_and_stall(tasks: Path) -> None:
    assert ok(tasks, "create", "--stall", "600", "--id", "nightly", "Nightly build", "compile", "test") == "nightly\n"
    assert read(tasks, "nightly")["stallSeconds"] == 600
    assert '"stallSeconds": 600\n' in (tasks / "nightly.json").read_text()  # as given: not 600.0


def test_create_existing_id_fails(tasks: Path) -> None:
    ok(tasks, "create", "--id", "t", "x", "a")
    assert fails(tasks, 1, "create", "--id", "t", "y", "b") == "Error: task 't' already exists"
    assert read(tasks, "t")["taskName"] == "x"


def test_create_without_steps_is_bad_usage(tasks: Path) -> None:
    result = run(tasks, "create", "name only")
    assert result.exit_code == 2
    assert result.stdout == ""
    assert "STEPS" in result.stderr
    assert not tasks.exists()


def test_create_with_empty_step_name(tasks: Path) -> None:
    assert fails(tasks, 2, "create", "n", "a", " ") == "Error: step names must not be empty"
    assert not tasks.exists()


def test_create_json_group_and_command_level(tasks: Path) -> None:
    first = json.loads(ok(tasks, "create", "--id", "j1", "n", "a", "b", group=["--json"]))
    assert first["taskId"] == "j1"
    assert first["rev"] == 1
    assert first["steps"][0]["status"] == "running"
    out = ok(tasks, "create", "--id", "j2", "n", "a", "b", "--json")
    assert out.count("\n") == 1
    assert json.loads(out)["taskId"] == "j2"


def test_create_honours_tz(tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_PULSE_TZ", "8")
    ok(tasks, "create", "--id", "tz", "n", "a")
    raw = read(tasks, "tz")
    assert raw["startedAt"].endswith("+08:00")
    assert raw["steps"][0]["startedAt"].endswith("+08:00")


def test_create_files_are_private(tasks: Path) -> None:
    ok(tasks, "create", "--id", "p", "n", "a")
    assert (tasks / "p.json").stat().st_mode & 0o777 == 0o600
    assert (tasks / ".pulse").stat().st_mode & 0o777 == 0o700


# -- next / heartbeat / done / error ----------------------------------------------------------------


def test_next_through_all_steps(tasks: Path) -> None:
    ok(tasks, "create", "--id", "t", "n", "fetch", "filter", "write")
    assert ok(tasks, "next", "t", "fetched", "25", "items") == "[1/3] ███░░░░░░░ → filter\n"
    raw = read(tasks, "t")
    assert raw["rev"] == 2
    assert raw["steps"][0]["status"] == "done"
    assert raw["steps"][0]["message"] == "fetched 25 items"
    assert raw["steps"][0]["finishedAt"]
    assert raw["steps"][1]["status"] == "running"
    assert ok(tasks, "next", "t") == "[2/3] ██████░░░░ → write\n"
    assert "message" not in read(tasks, "t")["steps"][1]
    assert ok(tasks, "next", "t") == "[3/3] ██████████ → —\n"
    assert read(tasks, "t")["status"] == "running"
    reason = fails(tasks, 1, "next", "t")
    assert reason == "Error: task 't' has no running step (3/3 done); finish it with `task-pulse done`"
    assert read(tasks, "t")["rev"] == 4


def test_next_by_unique_prefix_and_json(tasks: Path) -> None:
    ok(tasks, "create", "--id", "日报发布-20261124-093000", "日报发布", "抓取", "筛选")
    assert ok(tasks, "next", "日报") == "[1/2] █████░░░░░ → 筛选\n"
    data = json.loads(ok(tasks, "next", "日报", "--json"))
    assert data["taskId"] == "日报发布-20261124-093000"
    assert [s["status"] for s in data["steps"]] == ["done", "done"]


def test_ambiguous_prefix_lists_candidates(tasks: Path) -> None:
    ok(tasks, "create", "--id", "job-1", "n", "a")
    ok(tasks, "create", "--id", "job-2", "n", "a")
    message = fails(tasks, 2, "next", "job")
    assert message == ("Error: task id prefix 'job' is ambiguous (2 running): job-1 (running), job-2 (running); "
                       "give the full id")
    assert read(tasks, "job-1")["rev"] == 1 and read(tasks, "job-2")["rev"] == 1


def test_a_prefix_means_the_one_running_match(tasks: Path) -> None:
    """A daily task keeps earlier days' files for a week: from day two, `next 日报` means today's run."""
    write_task(tasks, "日报-20261123-090000", status="done", finishedAt=ago(days=2))
    write_task(tasks, "日报-20261124-090000", status="error", finishedAt=ago(days=1))
    write_task(tasks, "日报-20261125-090000")
    (tasks / "日报-broken.json").write_text("{", encoding="utf-8")
    assert ok(tasks, "next", "日报", "抓取了25条") == "[1/2] █████░░░░░ → b\n"
    assert read(tasks, "日报-20261125-090000")["steps"][0]["message"] == "抓取了25条"
    assert "rev" not in read(tasks, "日报-20261123-090000")  # the finished days are untouched
    ok(tasks, "done", "日报")
    # None running now: several ended tasks match, and the prefix decides nothing (no silent pick)
    again = fails(tasks, 2, "done", "日报")
    assert again.startswith("Error: task id prefix '日报' is ambiguous (none running): 日报-20261123-090000 (done), ")
    assert again.endswith("; give the full id")
    assert ok(tasks, "status", "日报-20261125").startswith("🎉 【日报-20261125-090000】完成")  # the full id does
    write_task(tasks, "日报-20261126-090000")
    write_task(tasks, "日报-20261127-090000")
    message = fails(tasks, 2, "next", "日报")  # two running: no guess
    assert message.startswith("Error: task id prefix '日报' is ambiguous (2 running): ")
    assert "日报-20261123-090000 (done)" in message and "日报-broken (unreadable)" in message


def test_next_without_a_message_has_no_result(tasks: Path) -> None:
    """A heartbeat's text described the work in progress; `next` alone does not make it the step's result."""
    ok(tasks, "create", "--id", "t", "n", "a", "b")
    ok(tasks, "heartbeat", "t", "--percent", "90", "筛选中")
    ok(tasks, "next", "t")
    assert read(tasks, "t")["steps"][0] == {"name": "a", "status": "done", "startedAt": read(tasks, "t")["startedAt"],
                                            "finishedAt": read(tasks, "t")["updatedAt"], "percent": 90}


def test_heartbeat(tasks: Path) -> None:
    ok(tasks, "create", "--id", "t", "n", "a", "b")
    before = read(tasks, "t")
    assert ok(tasks, "heartbeat", "t", "--percent", "60", "已处理60%") == "💓 ok\n"
    raw = read(tasks, "t")
    assert raw["rev"] == 2
    assert raw["updatedAt"] != before["updatedAt"]
    assert raw["steps"][0]["message"] == "已处理60%"
    assert raw["steps"][0]["percent"] == 60
    assert ok(tasks, "heartbeat", "t", "--percent", "12.5") == "💓 ok\n"
    assert read(tasks, "t")["steps"][0]["percent"] == 12.5
    assert read(tasks, "t")["steps"][0]["message"] == "已处理60%"
    assert ok(tasks, "heartbeat", "t") == "💓 ok\n"
    assert read(tasks, "t")["rev"] == 4


@pytest.mark.parametrize("percent", ["101", "-1", "inf", "abc"])
def test_heartbeat_percent_out_of_range(percent: str, tasks: Path) -> None:
    ok(tasks, "create", "--id", "t", "n", "a")
    result = run(tasks, "heartbeat", "t", "--percent", percent)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert read(tasks, "t")["rev"] == 1


def test_heartbeat_percent_nan_is_refused_and_task_stays_readable(tasks: Path) -> None:
    ok(tasks, "create", "--id", "t", "n", "a", "b")
    result = run(tasks, "heartbeat", "t", "--percent", "nan")
    assert result.exit_code == 2
    assert ok(tasks, "next", "t") == "[1/2] █████░░░░░ → b\n"


def test_create_stall_nan_is_refused(tasks: Path) -> None:
    result = run(tasks, "create", "--stall", "nan", "--id", "s", "n", "a")
    assert result.exit_code == 2
    assert not (tasks / "s.json").exists()


def test_heartbeat_between_the_last_next_and_done_still_refreshes(tasks: Path) -> None:
    """A running task with no running step is alive: a heartbeat that did not count would become a false stall."""
    write_task(tasks, "t", updatedAt=ago(seconds=170), steps=[{"name": "a", "status": "done"}])
    result = run(tasks, "heartbeat", "t", "msg")
    assert (result.exit_code, result.stdout) == (0, "💓 ok\n")
    assert result.stderr == "note: task 't' has no running step (1/1 done); refreshed, message not kept\n"
    raw = read(tasks, "t")
    assert (raw["rev"], raw["steps"][0].get("message")) == (1, None)
    assert datetime.fromisoformat(raw["updatedAt"]) > datetime.now().astimezone() - timedelta(seconds=30)
    assert ok(tasks, "heartbeat", "t") == "💓 ok\n"  # no message: nothing to remark on
    assert read(tasks, "t")["rev"] == 2


def test_heartbeat_on_an_ended_task_changes_nothing(tasks: Path) -> None:
    write_task(tasks, "t", status="done", finishedAt=ago(seconds=5))
    before = read(tasks, "t")
    result = run(tasks, "heartbeat", "t", "late")
    assert (result.exit_code, result.stdout) == (0, "💓 ok\n")
    assert result.stderr == "note: task 't' has already ended (done); nothing to refresh\n"
    assert read(tasks, "t") == before


def test_done(tasks: Path) -> None:
    write_task(tasks, "t", startedAt=ago(seconds=192))
    assert ok(tasks, "done", "t", "published", "ok") == "✅ 完成（3分12秒）\n"
    raw = read(tasks, "t")
    assert raw["status"] == "done"
    assert raw["result"] == "published ok"
    assert raw["finishedAt"]
    assert [s["status"] for s in raw["steps"]] == ["done", "pending"]
    assert raw["rev"] == 1  # the hand-written file had no rev
    assert fails(tasks, 1, "next", "t") == "Error: task 't' has already ended (done)"
    assert fails(tasks, 1, "error", "t", "late") == (
        f"Error: task 't' was already done at {shown_time(raw['finishedAt'])}; not marked failed "
        "(create a new task to run it again)")
    assert read(tasks, "t") == raw


def test_done_twice_is_done_once(tasks: Path) -> None:
    """The original rewrote the file; a second `done` (a retried cron line, a parent and its sub-agent) is a no-op."""
    write_task(tasks, "t", startedAt=ago(seconds=192))
    assert ok(tasks, "done", "t", "published") == "✅ 完成（3分12秒）\n"
    first = read(tasks, "t")
    result = run(tasks, "done", "t", "again")
    assert (result.exit_code, result.stdout) == (0, "✅ 完成（3分12秒）\n")
    assert result.stderr == f"note: task 't' was already done at {shown_time(first['finishedAt'])}; nothing changed\n"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", shown_time(first["finishedAt"]))  # no T, no µs, no offset
    assert read(tasks, "t") == first  # not rewritten: rev, result and finishedAt as they were


def test_done_en_without_result(tasks: Path) -> None:
    write_task(tasks, "t", startedAt=ago(seconds=7500))
    assert ok(tasks, "done", "t", group=["--lang", "en"]) == "✅ done (2h5m)\n"
    assert read(tasks, "t")["result"] is None


def test_error(tasks: Path) -> None:
    ok(tasks, "create", "--id", "t", "n", "fetch", "publish")
    ok(tasks, "next", "t")
    assert ok(tasks, "error", "t", "发布接口返回", "502") == "❌ 发布接口返回 502\n"
    raw = read(tasks, "t")
    assert raw["status"] == "error"
    assert raw["error"] == "发布接口返回 502"
    assert raw["steps"][1]["status"] == "error"
    assert raw["steps"][1]["message"] == "发布接口返回 502"
    assert fails(tasks, 1, "done", "t") == (
        f"Error: task 't' already failed (发布接口返回 502) at {shown_time(raw['finishedAt'])}; not marked done "
        "(create a new task to run it again)")
    result = run(tasks, "error", "t", "again")
    assert (result.exit_code, result.stdout) == (0, "❌ 发布接口返回 502\n")  # what the task failed with
    assert result.stderr == f"note: task 't' had already failed at {shown_time(raw['finishedAt'])}; nothing changed\n"
    assert read(tasks, "t") == raw


def test_error_needs_a_message(tasks: Path) -> None:
    ok(tasks, "create", "--id", "t", "n", "a")
    result = run(tasks, "error", "t")
    assert result.exit_code == 2
    assert read(tasks, "t")["status"] == "running"


@pytest.mark.parametrize("command", [["next"], ["heartbeat"], ["done"], ["error", "boom"], ["status"]])
def test_unknown_id(command: list[str], tasks: Path) -> None:
    ok(tasks, "create", "--id", "other", "n", "a")
    verb, *rest = command
    assert fails(tasks, 1, verb, "nope", *rest) == f"Error: task 'nope' not found in {tasks}"


def test_writer_keeps_unknown_fields(tasks: Path) -> None:
    write_task(tasks, "t", channel="telegram", steps=[{"name": "a", "status": "running", "owner": "sub"}])
    ok(tasks, "heartbeat", "t", "still going")
    raw = read(tasks, "t")
    assert raw["channel"] == "telegram"
    assert raw["steps"][0]["owner"] == "sub"


# -- hostile ids ------------------------------------------------------------------------------------

HOSTILE = ("../../x", "a/b", ".hidden")


@pytest.mark.parametrize("hostile", HOSTILE)
@pytest.mark.parametrize("command", [
    ["next", "{id}"], ["next", "{id}", "msg"], ["heartbeat", "{id}", "--percent", "5", "m"], ["done", "{id}"],
    ["error", "{id}", "m"], ["status", "{id}"], ["create", "--id", "{id}", "n", "a"],
])
def test_hostile_ids_write_nothing(command: list[str], hostile: str, tasks: Path, tmp_path: Path) -> None:
    ok(tasks, "create", "--id", "real", "n", "a")
    before, parent_before = snapshot(tmp_path), sorted(os.listdir(tmp_path.parent))
    message = fails(tasks, 2, *[hostile if part == "{id}" else part for part in command])
    assert hostile in message
    assert snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path.parent)) == parent_before
    assert not (tmp_path / "x.json").exists()


def test_hostile_id_into_missing_dir_creates_nothing(tasks: Path, tmp_path: Path) -> None:
    before, parent_before = snapshot(tmp_path), sorted(os.listdir(tmp_path.parent))
    fails(tasks, 2, "create", "--id", "../../x", "n", "a")
    fails(tasks, 2, "next", "a/b")
    assert snapshot(tmp_path) == before
    assert sorted(os.listdir(tmp_path.parent)) == parent_before
    assert not tasks.exists()


def test_hostile_name_stays_inside(tasks: Path, tmp_path: Path) -> None:
    task_id = ok(tasks, "create", "../../x", "a").rstrip("\n")
    assert re.fullmatch(r"x-\d{8}-\d{6}", task_id)
    assert (tasks / f"{task_id}.json").is_file()
    assert not (tmp_path / "x.json").exists()


# -- status -----------------------------------------------------------------------------------------


def test_status_table_and_summary(tasks: Path) -> None:
    write_task(tasks, "running", startedAt=ago(seconds=192), updatedAt=ago(seconds=5),
               steps=[{"name": "fetch", "status": "done"}, {"name": "filter", "status": "running",
                                                           "message": "已处理", "percent": 60},
                      {"name": "write", "status": "pending"}])
    write_task(tasks, "finished", status="done", startedAt=ago(seconds=600), finishedAt=ago(seconds=408),
               steps=[{"name": "a", "status": "done"}])
    write_task(tasks, "broken", status="error", startedAt=ago(seconds=60), finishedAt=ago(seconds=18),
               error="boom", steps=[{"name": "a", "status": "error"}])
    # failed, running, done: not in the order of the ids (b, f, r)
    assert ok(tasks, "status").split("\n") == [
        "❌ broken [0/1] ░░░░░░░░░░ 失败（42秒）",
        "   错误: boom",
        "🔄 running [1/3] ███░░░░░░░ 执行中（3分12秒）",
        "   当前: filter — 60% 已处理",
        "✅ finished [1/1] ██████████ 完成（3分12秒）",
        "",
        "📊 🔄1 ⚠️0 ✅1 ❌1",
        "",
    ]


def test_status_flags_stalled_task(tasks: Path) -> None:
    old = ago(seconds=1000)
    write_task(tasks, "old", startedAt=old, updatedAt=old)
    write_task(tasks, "patient", startedAt=old, updatedAt=old, stallSeconds=5000)
    write_task(tasks, "fresh", startedAt=old, updatedAt=ago(seconds=10))
    lines = ok(tasks, "status", group=["--lang", "en"]).split("\n")
    assert lines[0] == "⚠️ old [0/2] ░░░░░░░░░░ stalled (no update for 16m40s)"
    assert lines[2] == "🔄 fresh [0/2] ░░░░░░░░░░ running (16m40s)"  # the latest updated first
    assert lines[4] == "🔄 patient [0/2] ░░░░░░░░░░ running (16m40s)"
    assert ok(tasks, "status").split("\n")[0] == "⚠️ old [0/2] ░░░░░░░░░░ 卡住（16分40秒无更新）"
    assert lines[-2] == "📊 🔄2 ⚠️1 ✅0 ❌0"

    records = {r["taskId"]: r for r in json.loads(ok(tasks, "status", "--json"))}
    assert (records["old"]["stalled"], records["patient"]["stalled"], records["fresh"]["stalled"]) == (
        True, False, False)
    assert records["old"]["stalledSeconds"] >= 1000
    assert records["fresh"]["stalledSeconds"] is None

    one = json.loads(ok(tasks, "status", "old", "--json"))
    assert one["taskId"] == "old"
    assert one["stalled"] is True


def test_status_stall_from_environment(tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_task(tasks, "old", updatedAt=ago(seconds=1000))
    monkeypatch.setenv("TASK_PULSE_STALL", "5000")
    assert "⚠️0" in ok(tasks, "status")
    monkeypatch.setenv("TASK_PULSE_STALL", "500")
    assert "⚠️1" in ok(tasks, "status")


def test_status_one_task_as_json_by_prefix(tasks: Path) -> None:
    write_task(tasks, "日报发布-20261124-093000", extra_field=1)
    data = json.loads(ok(tasks, "status", "日报", "--json"))
    assert data["taskId"] == "日报发布-20261124-093000"
    assert data["extra_field"] == 1
    assert data["stalled"] is False


def test_status_with_corrupt_file(tasks: Path) -> None:
    write_task(tasks, "good")
    (tasks / "bad.json").write_text("{oops", encoding="utf-8")
    (tasks / "empty.json").write_text("", encoding="utf-8")
    lines = ok(tasks, "status").split("\n")
    assert lines[0].startswith("🚫 bad.json: 无法读取（not valid JSON")
    assert lines[1] == "🚫 empty.json: 无法读取（empty file）"
    assert lines[2].startswith("🔄 good [0/2]")
    assert lines[-2] == "📊 🔄1 ⚠️0 ✅0 ❌0 🚫2"  # counted, and not as stalled
    records = json.loads(ok(tasks, "status", "--json"))
    assert records[0]["taskId"] == "bad" and records[0]["invalid"].startswith("not valid JSON")
    assert records[2]["taskId"] == "good" and "invalid" not in records[2]
    assert (tasks / "bad.json").read_text(encoding="utf-8") == "{oops"
    message = fails(tasks, 1, "status", "bad")
    assert message.startswith("Error: task file bad.json is not readable: not valid JSON")
    assert fails(tasks, 1, "next", "bad").startswith("Error: task file bad.json is not readable")
    assert (tasks / "bad.json").read_text(encoding="utf-8") == "{oops"


def test_status_symlink_not_followed(tasks: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"taskName": "secret", "status": "running", "steps": []}))
    tasks.mkdir(parents=True)
    (tasks / "link.json").symlink_to(secret)
    out = ok(tasks, "status")
    assert "secret" not in out
    assert "🚫 link.json: 无法读取（is a symlink (never followed)）" in out
    assert fails(tasks, 1, "done", "link").startswith("Error: task file link.json is not readable")
    assert json.loads(secret.read_text())["status"] == "running"


def many_tasks(tasks: Path) -> None:
    """70 tasks: 40 done, 25 running (older and newer), 2 stalled, 2 failed, 1 unreadable file."""
    for i in range(40):
        write_task(tasks, f"done-{i:02d}", status="done", finishedAt=ago(seconds=1000 + i),
                   steps=[{"name": "a", "status": "done"}])
    for i in range(25):
        write_task(tasks, f"run-{i:02d}", updatedAt=ago(seconds=i))
    for i in range(2):
        write_task(tasks, f"stuck-{i}", updatedAt=ago(seconds=3600 + i))
        write_task(tasks, f"failed-{i}", status="error", error="boom", finishedAt=ago(seconds=50 + i),
                   steps=[{"name": "a", "status": "error"}])
    (tasks / "broken.json").write_text("{oops", encoding="utf-8")


def test_status_of_many_tasks_shows_those_most_worth_seeing_and_counts_all(tasks: Path) -> None:
    many_tasks(tasks)
    lines = ok(tasks, "status", group=["--lang", "en"]).split("\n")
    heads = [line.split(" ")[1] for line in lines if line and not line.startswith(("   ", "…", "📊"))]
    assert heads[:5] == ["broken.json:", "stuck-0", "stuck-1", "failed-0", "failed-1"]
    assert heads[5:30] == [f"run-{i:02d}" for i in range(25)]  # the latest updated first
    assert heads[30:] == [f"done-{i:02d}" for i in range(20)]  # the latest done, as many as fit
    assert lines[-4] == "… 20 more tasks (all of them: task-pulse status --all)"
    assert lines[-2] == "📊 🔄25 ⚠️2 ✅40 ❌2 🚫1"  # every task counted, not only those shown
    every = ok(tasks, "status", "--all").split("\n")
    assert every[-2] == "📊 🔄25 ⚠️2 ✅40 ❌2 🚫1" and "status --all" not in "".join(every)
    assert sum(1 for line in every if line and not line.startswith(("   ", "📊"))) == 70
    assert len(json.loads(ok(tasks, "status", "--json"))) == 70  # data: every task unless asked
    assert [r["taskId"] for r in json.loads(ok(tasks, "status", "--json", "--limit", "3"))] == [
        "broken", "stuck-0", "stuck-1"]
    assert ok(tasks, "status", "--limit", "100").count("\n") == len(every) - 1


def test_status_empty_dir(tasks: Path) -> None:
    assert ok(tasks, "status") == "📭 没有任务\n"
    assert ok(tasks, "status", group=["--lang", "en"]) == "📭 no tasks\n"
    assert json.loads(ok(tasks, "status", "--json")) == []


def test_bad_setting_is_one_line_exit_2(tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_task(tasks, "t")
    monkeypatch.setenv("TASK_PULSE_STALL", "abc")
    for args in (["status"], ["create", "n", "a"], ["next", "t"], ["cleanup"], ["drain"]):
        message = fails(tasks, 2, *args)
        assert "TASK_PULSE_STALL" in message
        assert message == "Error: TASK_PULSE_STALL='abc': must be a number"
    assert read(tasks, "t")["steps"][0]["status"] == "running"


def test_bad_lang_setting(tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_PULSE_LANG", "fr")
    assert "TASK_PULSE_LANG" in fails(tasks, 2, "status")
    assert ok(tasks, "status", group=["--lang", "en"]) == "📭 no tasks\n"  # the flag wins


def test_empty_dir_flag_is_bad_usage(tasks: Path) -> None:
    result = CliRunner().invoke(cli, ["--dir", "", "status"])
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1


def test_dir_from_environment(tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_PULSE_DIR", str(tasks))
    result = CliRunner().invoke(cli, ["create", "--id", "e", "n", "a"])
    assert result.exit_code == 0 and result.stdout == "e\n"
    assert (tasks / "e.json").is_file()


# -- cleanup ----------------------------------------------------------------------------------------


def cleanup_tasks(tasks: Path) -> None:
    write_task(tasks, "old-done", status="done", finishedAt=ago(days=10), updatedAt=ago(days=10))
    write_task(tasks, "old-error", status="error", updatedAt=ago(days=5))
    write_task(tasks, "recent-done", status="done", finishedAt=ago(days=1), updatedAt=ago(days=1))
    write_task(tasks, "old-running", updatedAt=ago(days=30))


def test_cleanup(tasks: Path) -> None:
    cleanup_tasks(tasks)
    assert ok(tasks, "cleanup", "--days", "3") == "🧹 清理 2 个过期任务（>3天）\n"
    assert sorted(p.name for p in tasks.glob("*.json")) == ["old-running.json", "recent-done.json"]
    assert ok(tasks, "cleanup", "--days", "3") == "🧹 清理 0 个过期任务（>3天）\n"


def test_cleanup_default_and_env_days(tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cleanup_tasks(tasks)
    monkeypatch.setenv("TASK_PULSE_KEEP_DAYS", "20")
    assert ok(tasks, "cleanup") == "🧹 清理 0 个过期任务（>20天）\n"
    monkeypatch.delenv("TASK_PULSE_KEEP_DAYS")
    assert ok(tasks, "cleanup", group=["--lang", "en"]) == "🧹 removed 1 finished task (>7 days)\n"
    assert not (tasks / "old-done.json").exists()
    assert (tasks / "old-error.json").exists()


def test_cleanup_dry_run(tasks: Path, tmp_path: Path) -> None:
    cleanup_tasks(tasks)
    before = snapshot(tmp_path)
    out = ok(tasks, "cleanup", "--days", "3", "--dry-run")
    assert out == "🧹 将清理 2 个过期任务（>3天）\n  old-done\n  old-error\n"
    assert snapshot(tmp_path) == before


def test_cleanup_json(tasks: Path) -> None:
    cleanup_tasks(tasks)
    assert json.loads(ok(tasks, "cleanup", "--days", "3", "--dry-run", "--json")) == {
        "removed": ["old-done", "old-error"], "dryRun": True, "days": 3, "notRemoved": []}
    assert json.loads(ok(tasks, "cleanup", "--days", "3", group=["--json"])) == {
        "removed": ["old-done", "old-error"], "dryRun": False, "days": 3, "notRemoved": []}


def test_cleanup_days_0_removes_every_finished_task(tasks: Path) -> None:
    """`cleanup --days 0` is a common cron line of the original."""
    cleanup_tasks(tasks)
    assert ok(tasks, "cleanup", "--days", "0") == "🧹 清理 3 个过期任务（>0天）\n"
    assert sorted(p.name for p in tasks.glob("*.json")) == ["old-running.json"]


@pytest.mark.parametrize("days", ["-1", "x", "nan", "inf"])
def test_cleanup_bad_days(days: str, tasks: Path) -> None:
    cleanup_tasks(tasks)
    result = run(tasks, "cleanup", "--days", days)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert (tasks / "old-done.json").exists()


def test_cleanup_huge_days_keeps_everything(tasks: Path) -> None:
    cleanup_tasks(tasks)
    assert ok(tasks, "cleanup", "--days", "1000000").startswith("🧹 清理 0 个过期任务")
    assert (tasks / "old-done.json").exists()


def test_cleanup_huge_keep_days_setting(tasks: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cleanup_tasks(tasks)
    monkeypatch.setenv("TASK_PULSE_KEEP_DAYS", "1e9")
    result = run(tasks, "cleanup")
    assert result.exit_code in (0, 2)
    assert (tasks / "old-done.json").exists()


# -- drain ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("extra", [[], ["--json"]])
def test_drain_without_state_db(extra: list[str], tasks: Path, tmp_path: Path) -> None:
    write_task(tasks, "t")
    before = snapshot(tmp_path)
    result = run(tasks, "drain", *extra)
    assert result.exit_code == 0
    assert result.stdout == ""
    # Silent when not at a terminal: an OpenClaw cron job posts whatever its command prints.
    assert result.stderr == ""
    assert snapshot(tmp_path) == before


def test_drain_with_missing_dir(tasks: Path) -> None:
    result = run(tasks, "drain")
    assert result.exit_code == 0
    assert result.stdout == ""
    assert not tasks.exists()


@pytest.mark.parametrize("command", ["create", "status", "drain", "cleanup"])
def test_a_tasks_dir_that_is_a_file_is_one_clear_error(tasks: Path, monkeypatch: pytest.MonkeyPatch,
                                                        command: str) -> None:
    tasks.parent.mkdir(parents=True)
    tasks.write_text("not a dir")
    monkeypatch.setenv("TASK_PULSE_DIR", str(tasks))
    args = {"create": ["create", "T", "a"]}.get(command, [command])
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr == f"Error: TASK_PULSE_DIR='{tasks}': must be a directory, not a file\n"


def test_messages_may_start_with_a_dash(tasks: Path) -> None:
    task_id = ok(tasks, "create", "Dedup", "scan", "write").strip()
    ok(tasks, "heartbeat", task_id, "-1 left", "--percent", "50")
    ok(tasks, "next", task_id, "-3 duplicates removed")
    assert read(tasks, task_id)["steps"][0]["message"] == "-3 duplicates removed"
    ok(tasks, "error", task_id, "-ENOSPC", "disk full")
    assert read(tasks, task_id)["error"] == "-ENOSPC disk full"


def test_an_empty_task_name_is_refused(tasks: Path) -> None:
    assert fails(tasks, 2, "create", "  ", "a") == "Error: a task needs a name"
    assert not tasks.exists() or not list(tasks.glob("*.json"))


def test_a_write_that_would_make_the_file_unreadable_is_refused(tasks: Path) -> None:
    """A task file over 1 MB is one no reader takes: the writer refuses it and the file stays as it was."""
    ok(tasks, "create", "--id", "t", "n", "a", "b")
    before = read(tasks, "t")
    message = fails(tasks, 2, "next", "t", "x" * (1024 * 1024))
    assert re.fullmatch(r"Error: task 't' would be 1,04\d,\d{3} bytes, over the 1,048,576-byte limit of a task "
                        r"file: shorten the message", message)
    assert read(tasks, "t") == before
    assert fails(tasks, 2, "create", "big", *[f"s{i}" for i in range(1001)]) == (
        "Error: 1001 steps: a task has at most 1000")
