"""`task-pulse run` wrapping real commands."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import BIN, Daemon, clean_env, kinds, wait_for


def run(tasks_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "run", *args], capture_output=True,
                          text=True, env=clean_env(), timeout=60)


def only_task(tasks_dir: Path) -> dict[str, Any]:
    (path,) = tasks_dir.glob("*.json")
    return json.loads(path.read_text())


def test_success_ends_done_with_the_last_output_line(tasks_dir: Path) -> None:
    proc = run(tasks_dir, "Backup", "--", sys.executable, "-c", "print('copying'); print('42 files copied')")
    assert proc.returncode == 0
    assert proc.stdout == "copying\n42 files copied\n"  # passed through unchanged
    task = only_task(tasks_dir)
    assert (task["status"], task["result"]) == ("done", "42 files copied")
    assert task["steps"][0]["name"] == Path(sys.executable).name  # no --step: the command is the step


def test_failure_keeps_the_exit_code_and_the_last_stderr_line(tasks_dir: Path) -> None:
    code = "import sys; print('partial'); print('disk full', file=sys.stderr); sys.exit(3)"
    proc = run(tasks_dir, "Backup", "--step", "copy", "--step", "verify", "--", sys.executable, "-c", code)
    assert proc.returncode == 3 and proc.stderr == "disk full\n"
    task = only_task(tasks_dir)
    assert (task["status"], task["error"]) == ("error", "exit 3: disk full")
    assert [s["status"] for s in task["steps"]] == ["error", "pending"]


def test_heartbeats_carry_the_latest_line(tasks_dir: Path) -> None:
    code = "import time\nfor i in range(5):\n    print(f'chunk {i}', flush=True)\n    time.sleep(0.5)\n"
    proc = run(tasks_dir, "Slow", "--heartbeat", "1", "--", sys.executable, "-c", code)
    assert proc.returncode == 0
    task = only_task(tasks_dir)
    assert task["rev"] >= 3  # create, at least one heartbeat, done
    assert task["steps"][0]["message"].startswith("chunk ")


def test_sigterm_is_forwarded_and_ends_the_task_as_failed(tasks_dir: Path) -> None:
    wrapper = subprocess.Popen([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "run", "Long", "--",
                                sys.executable, "-c", "import time; print('started', flush=True); time.sleep(60)"],
                               stdout=subprocess.PIPE, text=True, env=clean_env())
    assert wrapper.stdout is not None
    assert wrapper.stdout.readline() == "started\n"  # the child runs
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(20) == 128 + signal.SIGTERM
    task = only_task(tasks_dir)
    assert (task["status"], task["error"]) == ("error", "interrupted by SIGTERM")


def test_a_command_that_reports_its_own_steps_keeps_its_word(tasks_dir: Path) -> None:
    script = (f"import os, subprocess\ntp = {str(BIN / 'task-pulse')!r}\nt = os.environ['TASK_PULSE_TASK_ID']\n"
              "subprocess.run([tp, 'next', t, 'fetched'], check=True, capture_output=True)\n"
              "subprocess.run([tp, 'done', t, 'all good'], check=True, capture_output=True)\n"
              "print('bye')\n")
    proc = run(tasks_dir, "Self", "--step", "fetch", "--step", "write", "--", sys.executable, "-c", script)
    assert proc.returncode == 0
    task = only_task(tasks_dir)
    assert (task["status"], task["result"], task["steps"][0]["message"]) == ("done", "all good", "fetched")


def test_heartbeats_go_on_after_the_command_reported_its_last_step(tasks_dir: Path) -> None:
    script = (f"import os, subprocess, time\ntp = {str(BIN / 'task-pulse')!r}\n"
              "subprocess.run([tp, 'next', os.environ['TASK_PULSE_TASK_ID']], check=True, capture_output=True)\n"
              "for i in range(5):\n    print(f'tail {i}', flush=True)\n    time.sleep(0.5)\n")
    proc = run(tasks_dir, "Tail", "--heartbeat", "1", "--", sys.executable, "-c", script)
    assert proc.returncode == 0
    task = only_task(tasks_dir)
    assert task["rev"] >= 4  # create, next, at least one heartbeat without a running step, done
    assert task["status"] == "done"


def test_a_missing_command(tasks_dir: Path) -> None:
    proc = run(tasks_dir, "Nope", "--", "/nonexistent/command")
    assert proc.returncode == 127 and "cannot run /nonexistent/command" in proc.stderr
    assert only_task(tasks_dir)["status"] == "error"


def test_the_daemon_announces_a_wrapped_command(tasks_dir: Path, daemon: Daemon) -> None:
    proc = run(tasks_dir, "Cron job", "--", sys.executable, "-c", "print('ok')")
    assert proc.returncode == 0
    task_id = only_task(tasks_dir)["taskId"]
    wait_for(lambda: kinds(tasks_dir, task_id) == ["started", "done"], 30, "announced")  # one step, ended by done


def test_a_name_is_required_and_nothing_is_created_without_one(tasks_dir: Path) -> None:
    """`run -- cmd args` (the name forgotten) used to take `cmd` as the name, run `args`, and leave a failed
    task the chat announced; `run make test` (no `--`) the same."""
    for args in (["--", "echo", "hi"], ["echo", "hi"], ["Name", "--"], ["Two", "words", "--", "echo"]):
        proc = run(tasks_dir, *args)
        assert proc.returncode == 2 and proc.stdout == "", args
        assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("Error: "), proc.stderr
    assert not list(tasks_dir.glob("*.json"))
    proc = run(tasks_dir, "--name", "Greeting", "--", "echo", "hi")
    assert (proc.returncode, proc.stdout) == (0, "hi\n")
    assert only_task(tasks_dir)["taskName"] == "Greeting"


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def test_sigterm_reaches_the_whole_command_not_just_its_shell(tasks_dir: Path) -> None:
    """Under `sh -c`, a signal to the shell alone leaves its child running (and holding the output): the
    signal must reach the whole command."""
    wrapper = subprocess.Popen([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "run", "Long", "--",
                                "sh", "-c", "(echo $$; sleep 60); echo after"],  # the line: sleep is on its way
                               stdout=subprocess.PIPE, text=True, env=clean_env())
    assert wrapper.stdout is not None
    pgid = int(wrapper.stdout.readline())
    assert pgid != os.getpgrp()  # a process group of its own
    wrapper.send_signal(signal.SIGTERM)
    assert wrapper.wait(20) == 128 + signal.SIGTERM  # not 60 s later
    wait_for(lambda: _group_gone(pgid), 10, "the command's whole process group gone")
    assert "after" not in wrapper.stdout.read()
    assert (only_task(tasks_dir)["status"], only_task(tasks_dir)["error"]) == ("error", "interrupted by SIGTERM")


def test_the_task_ends_when_the_command_does_whatever_a_background_child_holds(tasks_dir: Path) -> None:
    """A cron job that restarts a service leaves a child holding its stdout: the task is done at once, the
    child lives on, and what it prints later still comes out."""
    wrapper = subprocess.Popen([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "run", "Restart", "--",
                                "sh", "-c", "(sleep 3; echo later) & echo $!; echo restarted"],
                               stdout=subprocess.PIPE, text=True, env=clean_env())
    try:
        assert wrapper.wait(20) == 0  # well before the background child ends its 3 s
        task = only_task(tasks_dir)
        assert (task["status"], task["result"]) == ("done", "restarted")
        assert wrapper.stdout is not None
        child = int(wrapper.stdout.readline())
        assert wrapper.stdout.read() == "restarted\nlater\n"  # relayed once the task had ended
        wait_for(lambda: not Path(f"/proc/{child}").exists(), 10, "the background child done")
    finally:
        wrapper.kill()
        wrapper.wait()


def _at_a_terminal(args: list[str]) -> tuple[subprocess.Popen[bytes], int]:
    """`task-pulse run …` in the foreground of a new terminal (a pty), as a person would run it."""
    import fcntl
    import pty
    import termios

    leader, follower = pty.openpty()

    def take_terminal() -> None:
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        signal.signal(signal.SIGINT, signal.SIG_DFL)  # as at a login; a test run in the background ignores it

    proc = subprocess.Popen(args, stdin=follower, stdout=follower, stderr=follower, env=clean_env(),
                            start_new_session=True, preexec_fn=take_terminal)
    os.close(follower)
    return proc, leader


def _read_until(fd: int, wanted: bytes, seen: bytearray) -> None:
    import select

    def more() -> bool:
        while select.select([fd], [], [], 0)[0]:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the terminal closed
                return wanted in seen
            if not chunk:
                break
            seen.extend(chunk)
        return wanted in seen
    wait_for(more, 20, f"{wanted!r} on the terminal")


def test_at_a_terminal_the_command_reads_it_and_ctrl_c_reaches_it(tasks_dir: Path) -> None:
    tp = str(BIN / "task-pulse")
    ask = "import sys; sys.stdout.write('continue? '); sys.stdout.flush(); print('got ' + input())"
    proc, term = _at_a_terminal([tp, "--dir", str(tasks_dir), "run", "Ask", "--", sys.executable, "-c", ask])
    seen = bytearray()
    try:
        _read_until(term, b"continue? ", seen)
        os.write(term, b"yes\n")
        _read_until(term, b"got yes", seen)
        assert proc.wait(20) == 0
    finally:
        os.close(term)
    assert only_task(tasks_dir)["result"].endswith("got yes")  # the answer came from the terminal

    # The command says "waiting" only once Ctrl-C would end it. (`sh -c 'echo waiting; sleep 60'` did not, now
    # and then on a loaded machine: dash catches SIGINT under -c, and one that came while it was forking
    # `sleep` was lost with the child's exec, as it would be at any terminal.)
    sleeper = ("import signal, time; signal.signal(signal.SIGINT, signal.SIG_DFL); print('waiting', flush=True); "
               "time.sleep(60)")
    proc, term = _at_a_terminal([tp, "--dir", str(tasks_dir), "run", "Sleep", "--", sys.executable, "-c", sleeper])
    seen = bytearray()
    try:
        _read_until(term, b"waiting", seen)
        os.write(term, b"\x03")  # Ctrl-C
        assert proc.wait(20) == 128 + signal.SIGINT
    finally:
        os.close(term)
    ended = [json.loads(p.read_text()) for p in tasks_dir.glob("Sleep-*.json")][0]
    assert ended["status"] == "error" and "SIGINT" in ended["error"]
