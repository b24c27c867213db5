"""The README is a new user's path: its commands run as written, and it stays short."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from tests.conftest import BIN, clean_env

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def blocks(section: str) -> list[str]:
    """The ```sh blocks of the README section whose heading starts with `section`."""
    part = README.split(f"\n## {section}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sh\n(.*?)```", part, re.S)


def test_the_two_commands_are_what_ci_runs_and_python_3_11_stands_beside_them() -> None:
    first, tests = blocks("Install")
    assert first.startswith("python3 -m venv ~/.task-pulse && ~/.task-pulse/bin/pip install . ")
    assert tests.strip() == "python -m pip install -e '.[test]' && python -m pytest -q"
    assert tests.strip() in (ROOT / ".ci" / "run").read_text().splitlines()  # CI runs exactly that
    before = README.split(first, 1)[0].split("## Install", 1)[1]
    assert "Python 3.11 or newer" in before


def test_the_writer_quick_start_runs_when_pasted(tmp_path: Path) -> None:
    (block,) = blocks("Recording work")
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block], capture_output=True, text=True, timeout=120,
                          env=clean_env(HOME=str(home), PATH=f"{BIN}:/usr/bin:/bin", TASK_PULSE_LANG="en"))
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "[1/3] ███░░░░░░░ → filter" and lines[1] == "💓 ok" and lines[2] == "[2/3] ██████░░░░ → write"
    assert lines[3].startswith("✅ done (") and lines[-1] == "❌ HTTP 502"
    (see_it,) = blocks("Your first live card")[-1:]
    assert subprocess.run(["bash", "-e", "-c", see_it], capture_output=True, text=True, timeout=120,
                          env=clean_env(HOME=str(home), PATH=f"{BIN}:/usr/bin:/bin")).returncode == 0


def test_short_and_self_contained() -> None:
    assert len(README.splitlines()) < 250
    assert "../shared" not in README and "DESIGN.md" not in README
    for link in re.findall(r"\]\(([^)#]+)", README):
        if not link.startswith("http"):
            assert (ROOT / link).is_file(), link
