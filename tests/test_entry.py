"""The entry point: plain writer calls run without click, and say exactly what the click CLI says."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from task_pulse.cli import cli
from task_pulse.entry import plain_call
from tests.conftest import BIN, clean_env


@pytest.mark.parametrize(("args", "plain"), [
    (["heartbeat", "t", "msg"], ("heartbeat", ["t", "msg"])),
    (["--dir", "/d", "--lang", "en", "--json", "next", "t"], ("next", ["t"])),
    (["--dir=/d", "done", "t", "--", "-3 left"], ("done", ["t", "-3 left"])),
    (["create", "日报", "抓取", "筛选"], ("create", ["日报", "抓取", "筛选"])),
    (["error", "t", "502", "from", "api"], ("error", ["t", "502", "from", "api"])),
    (["heartbeat", "t", "--percent", "60"], None),  # a verb's own option: click parses it
    (["next", "t", "-3", "removed"], None),  # a word like an option: click's rules decide
    (["next", "--help"], None),
    (["--version"], None),
    (["status"], None),  # not a writer verb
    (["error", "t"], None),  # too few words: click's usage error
    (["create", "only-a-name"], None),
    (["--lang", "fr", "next", "t"], None),  # click says what the choices are
    (["--dir"], None),
    ([], None),
])
def test_plain_call_recognises_only_plain_writer_calls(args: list[str], plain: tuple[str, list[str]] | None) -> None:
    call = plain_call(args)
    assert (call if call is None else (call[2], call[3])) == plain


def _fast(tasks_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), *args], capture_output=True, text=True,
                          env=clean_env(), timeout=60)


def _click(tasks_dir: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["--dir", str(tasks_dir), *args])
    return result.exit_code, result.stdout, result.stderr


def test_both_paths_print_the_same(tmp_path: Path) -> None:
    """Each verb once through the fast path (a real process) and once through click, on twin tasks."""
    fast_dir, click_dir = tmp_path / "fast", tmp_path / "click"
    for d in (fast_dir, click_dir):
        _click(d, "create", "--id", "t", "n", "a", "b")
    calls = [("heartbeat", "t", "working"), ("next", "t", "got", "25"), ("--json", "heartbeat", "t"),
             ("next", "t"), ("heartbeat", "t", "between"), ("done", "t", "ok"), ("done", "t"),
             ("error", "t", "late"), ("next", "nope"), ("heartbeat", "t")]
    for call in calls:
        fast = _fast(fast_dir, *call)
        code, out, err = _click(click_dir, *call)
        if call[0] == "--json":
            assert json.loads(fast.stdout).keys() == json.loads(out).keys()
            continue
        assert (fast.returncode, fast.stdout, _same(fast.stderr, fast_dir)) == (code, out, _same(err, click_dir)), call


def _same(text: str, tasks_dir: Path) -> str:
    """Output with what differs between the twins by nature (their dir, when they ended) taken out."""
    return re.sub(r"\d{4}-\d\d-\d\d[T ][\d:.+-]+", "TIME", text.replace(str(tasks_dir), "D"))


def test_a_plain_call_loads_neither_click_nor_dataclasses(tmp_path: Path) -> None:
    """What keeps a heartbeat as cheap as the original stdlib script (tests/benchmarks/writer_cost.py)."""
    _click(tmp_path, "create", "--id", "t", "n", "a")
    probe = ("import sys\nfrom task_pulse.entry import main\ntry:\n    main(sys.argv[1:])\n"
             "except SystemExit as e:\n    code = e.code\n"
             "heavy = ('click', 'dataclasses', 'typing', 'sqlite3', 'watchdog')\n"
             "print(code, sorted(m for m in heavy if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe, "--dir", str(tmp_path), "heartbeat", "t", "x"],
                         capture_output=True, text=True, env=clean_env(), timeout=60).stdout
    assert out.splitlines()[-1] == "0 []"
    slow = subprocess.run([sys.executable, "-c", probe, "--dir", str(tmp_path), "heartbeat", "t", "--percent", "5"],
                          capture_output=True, text=True, env=clean_env(), timeout=60).stdout
    assert "'click'" in slow.splitlines()[-1]  # the probe can tell: an option takes the click path


def test_python_dash_m_goes_through_the_entry_point(tmp_path: Path) -> None:
    _click(tmp_path, "create", "--id", "t", "n", "a")
    proc = subprocess.run([sys.executable, "-m", "task_pulse", "--dir", str(tmp_path), "heartbeat", "t"],
                          capture_output=True, text=True, env=clean_env(), timeout=60)
    assert (proc.returncode, proc.stdout) == (0, "💓 ok\n")
