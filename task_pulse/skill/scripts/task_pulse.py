#!/usr/bin/env python3
"""Live Task Pulse's `scripts/task_pulse.py`, kept for prompts and cron lines that call it by path.

    python3 {baseDir}/scripts/task_pulse.py create "日报" 抓取 筛选 写稿
    python3 {baseDir}/scripts/task_pulse.py next <taskId> 抓取了25条
    python3 {baseDir}/scripts/task_pulse.py heartbeat|done <taskId> [text ...]
    python3 {baseDir}/scripts/task_pulse.py error <taskId> <error ...>
    python3 {baseDir}/scripts/task_pulse.py status [taskId]
    python3 {baseDir}/scripts/task_pulse.py cleanup [--days N]

It runs task-pulse with the original script's conventions: every word after the task id is the
message (words that look like options too), `cleanup --days N`, the same output lines. Which
task-pulse: the one `task-pulse skill install` recorded in ../.task-pulse.json (run in this
interpreter when the Python versions match, else in its own), else `task-pulse` on the PATH. The
record says what code runs as the user: it is trusted only while it and its folder belong to the
user and nobody else can write them (mode and ACL).
"""

import json
import os
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RECORD = os.path.join(os.path.dirname(HERE), ".task-pulse.json")
# This file is named task_pulse.py: its own folder on sys.path would hide the task_pulse package.
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != HERE]
MIN_WORDS = {"create": 2, "next": 1, "heartbeat": 1, "done": 1, "error": 2, "status": 0, "cleanup": 0}


def translate(argv):
    """task-pulse arguments for an original command line; None when it is not one."""
    if not argv or argv[0] not in MIN_WORDS or len(argv) - 1 < MIN_WORDS[argv[0]]:
        return None
    verb, words = argv[0], argv[1:]
    if verb == "cleanup":
        days = [words[i + 1] for i, w in enumerate(words[:-1]) if w == "--days"]
        return ["cleanup"] + (["--days", days[-1]] if days else [])
    if verb == "status":  # one task: JSON, as the original printed it (task-pulse's own shows it for people)
        return ["status"] + (["--json", "--", words[0]] if words else [])
    return [verb, "--", *words]


def only_the_users(path):
    """Whether `path` (not a symlink) belongs to this user and nobody else may write it: group and other
    write bits off, no ACL beyond the mode."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    if stat.S_ISLNK(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        return False
    try:
        os.getxattr(path, "system.posix_acl_access", follow_symlinks=False)
    except OSError:
        return True  # none (ENODATA), or a filesystem without ACLs
    return False


def load_record():
    """The install's record, when it can be trusted (see the docstring); else nothing, and why on stderr."""
    if not os.path.exists(RECORD):
        return {}
    if not (only_the_users(RECORD) and only_the_users(os.path.dirname(RECORD))):
        sys.stderr.write(f"task_pulse.py: not using {RECORD}: it or its folder is not yours alone to write "
                         "(run `task-pulse skill install` again); using task-pulse from the PATH\n")
        return {}
    try:
        with open(RECORD, encoding="utf-8") as fh:
            record = json.load(fh)
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def main():
    args = translate(sys.argv[1:])
    if args is None:
        sys.stderr.write(__doc__.split("\n\n")[1] + "\n")
        sys.exit(1)
    record = load_record()
    if record.get("version") == list(sys.version_info[:2]):
        sys.path[:0] = [p for p in record.get("paths", []) if p not in sys.path]
    try:
        from task_pulse.entry import main as task_pulse
    except ImportError:
        pass
    else:
        sys.argv[0] = "task-pulse"
        task_pulse(args)
        return
    python = record.get("python")
    if python and os.access(python, os.X_OK):
        os.execv(python, [python, "-I", "-m", "task_pulse", *args])  # -I: not this folder, whatever the cwd
    try:
        os.execvp("task-pulse", ["task-pulse", *args])
    except OSError:
        sys.exit("task-pulse is not installed where this script can find it: "
                 "install it, then run `task-pulse skill install` again")


if __name__ == "__main__":
    main()
