"""Minimal reference writer for tests/benchmarks/writer_cost.py: click + stdlib, nothing else.

It does exactly the I/O a `task-pulse heartbeat` must do and nothing more: flock the task's lock
file, read the JSON task, set `updatedAt` and the running step's message, `rev` + 1, write a temp
file in the same directory, fsync, `os.replace`. No validation, no settings, no error handling
beyond what Python does anyway. It is the floor the real command is compared with.

    python tests/benchmarks/_baseline_heartbeat.py --dir DIR heartbeat ID [MSG...]
"""

from __future__ import annotations

import fcntl
import json
import os
from datetime import datetime

import click


@click.group()
@click.option("--dir", "tasks_dir", required=True, type=click.Path(file_okay=False))
@click.pass_context
def cli(ctx: click.Context, tasks_dir: str) -> None:
    ctx.obj = tasks_dir


@cli.command()
@click.argument("task_id")
@click.argument("message", nargs=-1)
@click.pass_obj
def heartbeat(tasks_dir: str, task_id: str, message: tuple[str, ...]) -> None:
    locks = os.path.join(tasks_dir, ".pulse", "locks")
    os.makedirs(locks, mode=0o700, exist_ok=True)
    final = os.path.join(tasks_dir, f"{task_id}.json")
    tmp = os.path.join(tasks_dir, f".{task_id}.json.tmp")
    lock_fd = os.open(os.path.join(locks, f"{task_id}.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX)
        with open(final, encoding="utf-8") as fh:
            task = json.load(fh)
        task["updatedAt"] = datetime.now().astimezone().isoformat()
        if message:
            for step in task["steps"]:
                if step.get("status") == "running":
                    step["message"] = " ".join(message)
                    break
        task["rev"] = int(task.get("rev") or 0) + 1
        data = json.dumps(task, ensure_ascii=False, indent=2).encode("utf-8")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, final)
    finally:
        os.close(lock_fd)
    click.echo("💓 ok")


if __name__ == "__main__":
    cli()
