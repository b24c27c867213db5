"""The installed `task-pulse` as real processes: concurrency, the original file format, import weight."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import BIN, clean_env, original_file, run_tp


def test_eight_processes_times_ten_heartbeats_lose_no_update(tasks_dir: Path) -> None:
    task_id = run_tp(tasks_dir, "create", "Busy", "a", "b").stdout.strip()
    rev_before = json.loads((tasks_dir / f"{task_id}.json").read_text())["rev"]
    script = (
        "import subprocess, sys\n"
        "for i in range(10):\n"
        "    subprocess.run([sys.argv[1], '--dir', sys.argv[2], 'heartbeat', sys.argv[3], f'w{sys.argv[4]}-{i}'],"
        " check=True, capture_output=True)\n"
    )
    writers = [subprocess.Popen([sys.executable, "-c", script, str(BIN / "task-pulse"), str(tasks_dir), task_id,
                                 str(n)], env=clean_env()) for n in range(8)]
    assert [w.wait(120) for w in writers] == [0] * 8
    after = json.loads((tasks_dir / f"{task_id}.json").read_text())
    assert after["rev"] == rev_before + 80
    assert after["steps"][0]["message"].endswith("-9")  # some writer's last heartbeat, intact
    # temp files live in .pulse/tmp, outside the watched dir, and none is left behind
    assert list((tasks_dir / ".pulse" / "tmp").iterdir()) == []
    assert sorted(p.name for p in tasks_dir.iterdir()) == sorted([".pulse", f"{task_id}.json"])


def test_an_original_format_file_advanced_by_next_keeps_its_extra_fields(tasks_dir: Path) -> None:
    original = original_file()
    path = tasks_dir / f"{original['taskId']}.json"
    path.write_text(json.dumps(original, ensure_ascii=False, indent=2), encoding="utf-8")
    out = run_tp(tasks_dir, "next", "日报", "筛出12条")  # a prefix, as the original allowed
    assert out.stdout == "[2/3] ██████░░░░ → 写稿\n"
    after = json.loads(path.read_text(encoding="utf-8"))
    assert after["channel"] == "telegram" and after["meta"] == original["meta"]
    assert after["steps"][0]["source"] == "rss" and after["steps"][2]["owner"] == {"agent": "writer"}
    assert after["steps"][1] | {"finishedAt": None} == {
        "name": "筛选", "status": "done", "startedAt": "2026-11-24T09:31:00+08:00", "message": "筛出12条",
        "finishedAt": None}
    assert after["steps"][2]["status"] == "running"
    assert after["rev"] == 1  # counting starts at the first task-pulse write
    assert after["startedAt"] == original["startedAt"]  # timestamps written by others are kept as written


def test_python_dash_m_task_pulse(tasks_dir: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "task_pulse", "--dir", str(tasks_dir), "create", "M", "x"],
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert proc.returncode == 0 and (tasks_dir / f"{proc.stdout.strip()}.json").exists()


def test_hostile_id_exits_2_and_writes_nothing(tmp_path: Path, tasks_dir: Path) -> None:
    before = sorted(p for p in tmp_path.rglob("*"))
    for verb in ("next", "heartbeat", "done"):
        proc = run_tp(tasks_dir, verb, "../../x", check=False)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert sorted(p for p in tmp_path.rglob("*")) == before


def test_the_writer_path_stays_light() -> None:
    """`task-pulse heartbeat` must not pay for the daemon's libraries (or sqlite3)."""
    code = ("import sys, task_pulse.cli, task_pulse.store, task_pulse.messages\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('watchdog', 'apscheduler', 'sqlite3',"
            " 'task_pulsed', 'tzlocal')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == "[]"


def test_every_command_has_help_with_an_example() -> None:
    import click
    from click.testing import CliRunner

    from task_pulse.cli import cli
    from task_pulsed.cli import cli as daemon_cli

    def walk(group: click.Group, path: list[str]) -> list[list[str]]:
        out = [path]
        for name, command in group.commands.items():
            out += walk(command, [*path, name]) if isinstance(command, click.Group) else [[*path, name]]
        return out

    paths = walk(cli, [])
    assert len(paths) >= 15  # the group, 11 verbs, service (+3), skill (+1)
    for path in paths:
        result = CliRunner().invoke(cli, [*path, "--help"])
        assert result.exit_code == 0 and "Example" in result.output, path
    assert "Example" in CliRunner().invoke(daemon_cli, ["--help"]).output


def test_a_copied_task_file_is_written_as_itself(tasks_dir: Path) -> None:
    """The file name is the identity: `done gamma` on a copy of alpha must not touch alpha."""
    alpha = run_tp(tasks_dir, "create", "--id", "alpha", "Alpha", "a").stdout.strip()
    (tasks_dir / "gamma.json").write_bytes((tasks_dir / f"{alpha}.json").read_bytes())
    listed = [t["taskId"] for t in json.loads(run_tp(tasks_dir, "status", "--json").stdout)]
    assert listed == ["alpha", "gamma"]  # the listing reads each file as itself, not as the id inside
    run_tp(tasks_dir, "done", "gamma")
    assert json.loads((tasks_dir / "alpha.json").read_text())["status"] == "running"
    gamma = json.loads((tasks_dir / "gamma.json").read_text())
    assert (gamma["status"], gamma["taskId"]) == ("done", "gamma")


def test_a_secret_in_a_task_name_stays_out_of_its_id(tasks_dir: Path) -> None:
    token = "ghp_abcdefghijklmnopqrstuvwxyz0123456789"
    task_id = run_tp(tasks_dir, "create", f"deploy {token}", "push").stdout.strip()
    assert "abcdefghijklmnopqrstuvwxyz" not in task_id and task_id.startswith("deploy-ghp_")
