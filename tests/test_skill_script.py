"""The skill's `scripts/task_pulse.py`: prompts and cron lines of the original skill, run unchanged.

They call `python3 {baseDir}/scripts/task_pulse.py VERB …` with whatever `python3` the agent has,
usually not the one task-pulse is installed in. The script is run here by the base interpreter
(no task-pulse in it), as such a prompt would run it, and its output lines are held against the
original script's formats.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from task_pulse.cli import cli
from task_pulse.skill import RUNTIME
from tests.conftest import BIN, clean_env

BASE_PYTHON = getattr(sys, "_base_executable", sys.executable)


@pytest.fixture
def skill(tmp_path: Path) -> Path:
    dest = tmp_path / "skills" / "live-task-pulse"
    assert CliRunner().invoke(cli, ["skill", "install", "--dest", str(dest)]).exit_code == 0
    return dest


def script(skill: Path, tasks_dir: Path, *args: str, python: str = BASE_PYTHON,
           env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([python, str(skill / "scripts" / "task_pulse.py"), *args], capture_output=True, text=True,
                          timeout=60, env=env or clean_env(TASK_PULSE_DIR=str(tasks_dir)), cwd=cwd)


def ok(skill: Path, tasks_dir: Path, *args: str) -> str:
    proc = script(skill, tasks_dir, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_base_interpreter_has_no_task_pulse() -> None:
    """What makes the tests below prove something: the script must find task-pulse by itself."""
    proc = subprocess.run([BASE_PYTHON, "-c", "import task_pulse"], capture_output=True, env=clean_env(), cwd="/")
    if proc.returncode == 0:
        pytest.skip(f"{BASE_PYTHON} has task_pulse installed; the script's lookup is not exercised")


def test_every_original_verb_with_the_original_output(skill: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    task_id = ok(skill, tasks, "create", "日报", "抓取", "筛选", "发布").strip()
    assert re.fullmatch(r"日报-\d{8}-\d{6}", task_id)
    assert ok(skill, tasks, "next", task_id, "抓取了", "25条") == "[1/3] ███░░░░░░░ → 筛选\n"
    assert ok(skill, tasks, "heartbeat", task_id, "筛选中", "60%") == "💓 ok\n"
    # every word is the message, also words that look like options
    assert ok(skill, tasks, "next", "日报", "-3", "条重复", "--json") == "[2/3] ██████░░░░ → 发布\n"
    done = json.loads((tasks / f"{task_id}.json").read_text())["steps"][1]
    assert done["message"] == "-3 条重复 --json"
    assert re.fullmatch(r"✅ 完成（\d+秒）\n", ok(skill, tasks, "done", task_id, "已发布"))
    failing = ok(skill, tasks, "create", "周报", "汇总").strip()
    assert ok(skill, tasks, "error", failing, "接口", "502") == "❌ 接口 502\n"
    status = ok(skill, tasks, "status").splitlines()  # the failed one first
    assert re.fullmatch(r"❌ 周报 \[0/1\] ░░░░░░░░░░ 失败（\d+秒）", status[0])
    assert status[1] == "   错误: 接口 502"
    assert re.fullmatch(r"✅ 日报 \[3/3\] ██████████ 完成（\d+秒）", status[2])
    assert status[3:] == ["", "📊 🔄0 ⚠️0 ✅1 ❌1"]
    assert json.loads(ok(skill, tasks, "status", task_id))["taskId"] == task_id  # one task: JSON, as it was
    assert ok(skill, tasks, "cleanup", "--days", "3") == "🧹 清理 0 个过期任务（>3天）\n"
    assert ok(skill, tasks, "cleanup", "--days", "0") == "🧹 清理 2 个过期任务（>0天）\n"
    assert ok(skill, tasks, "status") == "📭 没有任务\n"


def test_errors_keep_the_original_shape(skill: Path, tmp_path: Path) -> None:
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    usage = script(skill, tasks, "frobnicate")
    assert usage.returncode == 1 and "scripts/task_pulse.py create" in usage.stderr
    assert script(skill, tasks, "error", "only-an-id").returncode == 1  # the original's usage error
    missing = script(skill, tasks, "next", "nope")
    assert (missing.returncode, missing.stderr) == (1, f"Error: task 'nope' not found in {tasks}\n")
    assert script(skill, tasks / "nowhere", "next", "nope").stderr == (
        f"Error: task 'nope' not found in {tasks / 'nowhere'} (no such directory)\n")


def test_old_cleanup_lines_still_work(skill: Path, tmp_path: Path) -> None:
    """`cleanup` with no days, and a cron line's `--days 30`, as the original took them."""
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    old = (datetime.now().astimezone() - timedelta(days=10)).isoformat()
    (tasks / "old.json").write_text(json.dumps({"taskName": "old", "status": "done", "steps": [], "finishedAt": old}))
    assert ok(skill, tasks, "cleanup", "--days", "30") == "🧹 清理 0 个过期任务（>30天）\n"
    assert ok(skill, tasks, "cleanup") == "🧹 清理 1 个过期任务（>7天）\n"


def test_another_python_version_runs_the_recorded_interpreter(skill: Path, tmp_path: Path) -> None:
    record = json.loads((skill / RUNTIME).read_text())
    record["version"] = [2, 7]  # as if the agent's python3 were another version than task-pulse's
    (skill / RUNTIME).write_text(json.dumps(record))
    assert ok(skill, tmp_path / "tasks", "create", "x", "a").startswith("x-")
    # run from the script's own folder, where `task_pulse.py` could pass for the package
    here = script(skill, tmp_path / "tasks", "create", "y", "a", cwd=skill / "scripts")
    assert here.returncode == 0 and here.stdout.startswith("y-"), here.stderr


def test_without_a_record_task_pulse_on_the_path_is_used(skill: Path, tmp_path: Path) -> None:
    (skill / RUNTIME).unlink()
    tasks = tmp_path / "tasks"
    env = clean_env(TASK_PULSE_DIR=str(tasks), PATH=f"{BIN}:/usr/bin:/bin")
    proc = script(skill, tasks, "create", "y", "a", env=env)
    assert proc.returncode == 0 and proc.stdout.startswith("y-"), proc.stderr
    lost = script(skill, tasks, "create", "z", "a", env=clean_env(TASK_PULSE_DIR=str(tasks), PATH="/nonexistent"))
    assert lost.returncode == 1 and "task-pulse skill install" in lost.stderr


def test_the_skill_is_written_with_fixed_modes_whatever_the_umask(tmp_path: Path) -> None:
    """Under `umask 002` (a setgid group workspace) SKILL.md, the record and their folders were group-writable:
    a group member could rewrite what the agent follows, or where the script imports task-pulse from."""
    dest = tmp_path / "workspace" / "skills" / "live-task-pulse"
    old = os.umask(0o002)
    try:
        assert CliRunner().invoke(cli, ["skill", "install", "--dest", str(dest)]).exit_code == 0
    finally:
        os.umask(old)
    modes = {p.relative_to(dest).as_posix(): p.stat().st_mode & 0o777 for p in [dest, *dest.rglob("*")]}
    assert all(not mode & 0o022 for mode in modes.values()), modes
    assert dest.parent.stat().st_mode & 0o777 == 0o755  # skills/, made by install too
    assert modes["SKILL.md"] == 0o644 and modes[RUNTIME] == 0o644 and modes["scripts/task_pulse.py"] == 0o755
    os.chmod(dest, 0o775)  # an older install's folder: made private again by the next install
    assert CliRunner().invoke(cli, ["skill", "install", "--dest", str(dest)]).exit_code == 0
    assert dest.stat().st_mode & 0o777 == 0o755


def test_the_script_trusts_a_record_only_the_user_can_write(skill: Path, tmp_path: Path) -> None:
    """The record's `paths` go first on sys.path: one someone else could write would run their code as the user."""
    evil = tmp_path / "evil"
    (evil / "task_pulse").mkdir(parents=True)
    marker = tmp_path / "ran-evil-code"
    (evil / "task_pulse" / "__init__.py").write_text("")
    (evil / "task_pulse" / "entry.py").write_text(f"def main(args=None):\n    open({str(marker)!r}, 'w')\n")
    record = json.loads((skill / RUNTIME).read_text())
    record.update(paths=[str(evil)], version=list(sys.version_info[:2]))
    (skill / RUNTIME).write_text(json.dumps(record))
    os.chmod(skill / RUNTIME, 0o664)  # group-writable: as under a group umask, before fixed modes
    tasks = tmp_path / "tasks"
    proc = script(skill, tasks, "status", python=sys.executable)
    assert not marker.exists()
    assert "not using" in proc.stderr and "not yours alone" in proc.stderr
    os.chmod(skill / RUNTIME, 0o644)
    script(skill, tasks, "status", python=sys.executable)
    assert marker.exists()  # the user's own record is followed (it is what install writes)
