"""Stdlib-only reference writer for tests/benchmarks/writer_cost.py: the original script's heartbeat.

The original Live Task Pulse script was a small stdlib program: open `<dir>/<id>.json`, load it,
put the message on the running step, stamp `updatedAt`, dump it back (indent 2, non-ASCII kept)
and print `💓 ok`. This does that, plus what task-pulse guarantees and the original did not, so
the comparison is fair: an exclusive flock on `<dir>/.pulse/locks/<id>.lock`, `rev` + 1, and an
atomic write (temp file in the same directory, fsync, `os.replace`). No click, no argparse: the
arguments are read from sys.argv by hand. Nothing is validated; it is a floor, not a tool.

    python tests/benchmarks/_original_heartbeat.py --dir DIR heartbeat ID [MSG...]
"""

import fcntl
import json
import os
import sys
from datetime import datetime


def heartbeat(tasks_dir: str, task_id: str, words: list[str]) -> None:
    lock_dir = os.path.join(tasks_dir, ".pulse", "locks")
    os.makedirs(lock_dir, mode=0o700, exist_ok=True)
    path = os.path.join(tasks_dir, task_id + ".json")
    tmp = os.path.join(tasks_dir, f".{task_id}.json.{os.getpid()}.tmp")
    lock = os.open(os.path.join(lock_dir, task_id + ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with open(path, encoding="utf-8") as fh:
            task = json.load(fh)
        if words:
            for step in task.get("steps", []):
                if step.get("status") == "running":
                    step["message"] = " ".join(words)
                    break
        task["updatedAt"] = datetime.now().astimezone().isoformat()
        task["rev"] = int(task.get("rev") or 0) + 1
        try:
            with open(tmp, "w", encoding="utf-8") as out:
                json.dump(task, out, ensure_ascii=False, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    finally:
        os.close(lock)  # releases the flock
    print("💓 ok")


def main(argv: list[str]) -> int:
    # The one shape this script accepts: --dir DIR heartbeat ID [MSG...]
    if len(argv) < 4 or argv[0] != "--dir" or argv[2] != "heartbeat":
        print("usage: _original_heartbeat.py --dir DIR heartbeat ID [MSG...]", file=sys.stderr)
        return 2
    heartbeat(argv[1], argv[3], argv[4:])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
