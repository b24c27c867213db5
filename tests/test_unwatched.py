"""Silence is never silent: without a task-pulsed on the dir, writers, `status` and `drain` say so.

Everything here runs real `task-pulse` processes with the note on (the rest of the suite turns it off,
see conftest.QUIET), with and without a real daemon on the dir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.conftest import BIN, Daemon, clean_env, kinds, wait_for

LOUD = {"TASK_PULSE_DAEMON_CHECK": "1"}


def tp(tasks_dir: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), *args], capture_output=True, text=True,
                          env=clean_env(**{**LOUD, **env}), timeout=60)


def note_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if "task-pulsed" in line]


def test_every_writer_verb_says_once_that_nothing_reaches_the_chat(tasks_dir: Path) -> None:
    created = tp(tasks_dir, "create", "--id", "t", "Report", "fetch", "send", "check")
    calls = [created, tp(tasks_dir, "next", "t", "25 items"), tp(tasks_dir, "heartbeat", "t", "sending"),
             tp(tasks_dir, "next", "t"), tp(tasks_dir, "error", "t", "HTTP 502")]
    for proc in calls:
        assert proc.returncode == 0, proc.stderr
        assert note_lines(proc) == [
            f"note: no task-pulsed watches {tasks_dir}: nothing reaches the chat until one does: "
            f"task-pulse --dir {tasks_dir} service install (or task-pulsed --dir {tasks_dir} in a terminal)"]
        assert "task-pulsed" not in proc.stdout  # the output stays what scripts read
    assert created.stdout == "t\n"
    done = tp(tasks_dir, "create", "--id", "d", "R", "a")
    assert note_lines(tp(tasks_dir, "done", "d")) == note_lines(done)
    assert tp(tasks_dir, "heartbeat", "d", TASK_PULSE_DAEMON_CHECK="0").stderr == "note: task 'd' has already ended " \
        "(done); nothing to refresh\n"  # TASK_PULSE_DAEMON_CHECK=0: for a cron line that knows


def test_create_says_when_it_made_the_dir(tmp_path: Path) -> None:
    typo = tmp_path / "taks"
    proc = tp(typo, "create", "Report", "fetch")
    assert proc.returncode == 0 and typo.is_dir()
    (line,) = note_lines(proc)
    assert line.startswith(f"note: created {typo} (it did not exist); no task-pulsed watches it: ")
    assert note_lines(tp(typo, "create", "Again", "fetch"))[0].startswith(f"note: no task-pulsed watches {typo}:")


def test_with_a_daemon_watching_nothing_is_said(tasks_dir: Path, daemon: Daemon) -> None:
    for proc in (tp(tasks_dir, "create", "--id", "t", "Report", "fetch"), tp(tasks_dir, "next", "t"),
                 tp(tasks_dir, "status"), tp(tasks_dir, "drain")):
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_a_daemon_killed_leaves_no_false_comfort(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """kill -9 leaves the daemon's pid in its lock file: a pid that is gone counts as no daemon."""
    d = Daemon(tasks_dir).start()
    daemons.append(d)
    assert tp(tasks_dir, "create", "--id", "t", "Report", "fetch").stderr == ""
    assert d.proc is not None
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait(10)
    assert (tasks_dir / ".pulse" / "daemon.lock").read_text().strip()  # the pid is still written there
    assert len(note_lines(tp(tasks_dir, "heartbeat", "t"))) == 1


def test_status_says_it_after_the_table(tmp_path: Path) -> None:
    missing = tmp_path / "tsks"
    proc = tp(missing, "status")
    assert proc.stdout == "📭 没有任务\n"
    assert note_lines(proc) == [f"note: there is no {missing} (a typo?), and no task-pulsed watches it: nothing "
                                f"reaches the chat until one does: task-pulse --dir {missing} service install (or "
                                f"task-pulsed --dir {missing} in a terminal)"]
    assert not missing.exists()  # a reader makes nothing


def test_drain_says_it_once_per_absence_and_never_mixed_with_messages(tasks_dir: Path,
                                                                     daemons: list[Daemon]) -> None:
    """Not at a terminal (an OpenClaw cron job posts a command's stderr, and both streams together), the
    note comes once, from a drain that printed nothing, until a daemon has run and gone again."""
    tp(tasks_dir, "create", "--id", "early", "Report", "fetch")  # a writer was there: .pulse/ remembers
    assert len(note_lines(tp(tasks_dir, "drain"))) == 1  # no daemon ever: no state db either
    assert tp(tasks_dir, "drain", "--digest").stderr == ""  # said already
    d = Daemon(tasks_dir).start()
    daemons.append(d)
    tp(tasks_dir, "create", "--id", "t", "Report", "fetch", "send")
    wait_for(lambda: kinds(tasks_dir) == ["started"], 30, "started")
    assert d.stop() == 0
    tp(tasks_dir, "next", "t")  # not announced: no daemon
    first = tp(tasks_dir, "drain", "--digest")
    assert "Report" in first.stdout and first.stderr == ""  # messages: the note waits
    second = tp(tasks_dir, "drain", "--digest")
    assert second.stdout == "" and len(note_lines(second)) == 1
    assert tp(tasks_dir, "drain", "--digest").stderr == ""


def test_drain_at_a_terminal_says_it_every_time(tasks_dir: Path) -> None:
    import pty

    def at_a_terminal() -> str:
        leader, follower = pty.openpty()
        try:
            proc = subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "drain"], stdout=subprocess.PIPE,
                                  stderr=follower, env=clean_env(**LOUD), timeout=60)
            assert proc.returncode == 0
            return os.read(leader, 4096).decode()
        finally:
            os.close(leader)
            os.close(follower)
    assert "no task-pulsed watches" in at_a_terminal()
    assert "no task-pulsed watches" in at_a_terminal()


def test_writers_and_status_speak_the_daemons_language(tasks_dir: Path, daemons: list[Daemon]) -> None:
    """The daemon was started with --lang en; a writer with no setting of its own answers in English."""
    daemons.append(Daemon(tasks_dir, "--lang", "en").start())
    assert (tasks_dir / ".pulse" / "daemon.lock").read_text().split("\n")[1] == "en"
    tp(tasks_dir, "create", "--id", "t", "Report", "fetch")
    assert tp(tasks_dir, "done", "t").stdout.startswith("✅ done (")
    assert tp(tasks_dir, "status").stdout.startswith("✅ Report [1/1] ██████████ done (")
    assert tp(tasks_dir, "status", "t").stdout.startswith('🎉 "Report" done [1/1]')
    assert tp(tasks_dir, "done", "t", TASK_PULSE_LANG="zh").stdout.startswith("✅ 完成（")  # a choice wins
    assert tp(tasks_dir, "--lang", "zh", "status").stdout.startswith("✅ Report [1/1] ██████████ 完成（")


def test_the_note_keeps_click_off_the_writers_path(tmp_path: Path) -> None:
    """Telling costs a read of the daemon lock, no import: a plain call still loads no click."""
    tp(tmp_path, "create", "--id", "t", "n", "a")
    probe = ("import sys\nfrom task_pulse.entry import main\ntry:\n    main(sys.argv[1:])\n"
             "except SystemExit as e:\n    code = e.code\n"
             "print(code, sorted(m for m in ('click', 'dataclasses', 'sqlite3', 'shlex') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe, "--dir", str(tmp_path), "heartbeat", "t", "x"],
                          capture_output=True, text=True, env=clean_env(**LOUD), timeout=60)
    assert proc.stdout.splitlines()[-1] == "0 []" and "no task-pulsed watches" in proc.stderr


def test_status_json_and_drain_json_stay_data(tasks_dir: Path) -> None:
    tp(tasks_dir, "create", "--id", "t", "Report", "fetch")
    proc = tp(tasks_dir, "status", "--json")
    assert json.loads(proc.stdout)[0]["taskId"] == "t" and len(note_lines(proc)) == 1
