"""The test command leaves the machine as it found it: no OS accounts unless asked, none left after.

tests/test_cross_user.py needs two real accounts and a group. It makes them only when asked
(TASK_PULSE_TEST_ACCOUNTS=1, which .ci/run sets), skips with the reason otherwise, and removes them
when done. Both are checked here on a run of that module in a process of its own.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import clean_env

ROOT = Path(__file__).resolve().parent.parent


def _module_run(*args: str, **env: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """pytest on test_cross_user.py in one process (its accounts are named after that process's pid)."""
    proc = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-rs", "-o", "addopts=", "-p", "no:cacheprovider",
                             "tests/test_cross_user.py", *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=clean_env(**env))
    out, _ = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, ""), proc.pid


def _made_for(pid: int) -> list[str]:
    names = []
    for name in (f"tp-victim-{pid}", f"tp-mallory-{pid}"):
        try:
            pwd.getpwnam(name)
            names.append(name)
        except KeyError:
            pass
    for name in (f"tp-share-{pid}", f"tp-victim-{pid}", f"tp-mallory-{pid}", f"tp-alias-{pid}"):
        try:
            grp.getgrnam(name)
            names.append(f"group {name}")
        except KeyError:
            pass
    return names


def test_without_being_asked_no_account_is_made() -> None:
    proc, pid = _module_run()
    assert proc.returncode == 0, proc.stdout
    assert "skipped" in proc.stdout and "TASK_PULSE_TEST_ACCOUNTS=1" in proc.stdout, proc.stdout
    assert _made_for(pid) == []


@pytest.mark.skipif(os.environ.get("TASK_PULSE_TEST_ACCOUNTS") != "1" or os.geteuid() != 0
                    or not shutil.which("useradd"),
                    reason="makes OS accounts: only as root, when asked (TASK_PULSE_TEST_ACCOUNTS=1, as .ci/run does)")
def test_when_asked_the_accounts_are_made_and_removed() -> None:
    proc, pid = _module_run("-k", "without_the_sticky_bit", TASK_PULSE_TEST_ACCOUNTS="1")
    assert proc.returncode == 0 and "1 passed" in proc.stdout, proc.stdout
    assert _made_for(pid) == []
