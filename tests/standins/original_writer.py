#!/usr/bin/env python3
"""A writer that touches task files the way the original Live Task Pulse script did.

Stands in for that script (its code is not ours to ship): same verbs and arguments, same file
format, and above all the same way of writing: `open(path, "w")` then `json.dump`, in place,
with no lock, no temp file and no `rev`. Two extras make a slow writer reproducible:

  --pause SECONDS   stop half way through writing the file (flushed, so readers see half a file)
  --at FRACTION     where to stop: 0 leaves the file empty during the pause (default 0.5)

    TASK_PULSE_DIR=/tmp/t original_writer.py --pause 1 create "日报" 抓取 筛选
    TASK_PULSE_DIR=/tmp/t original_writer.py next 日报-20261125-093000 抓取了25条
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

TZ = timezone(timedelta(hours=int(os.environ.get("TASK_PULSE_TZ", "8"))))


def stamp() -> str:
    return datetime.now(TZ).isoformat()


def save(path: str, task: dict[str, Any], pause: float, at: float) -> None:
    task["updatedAt"] = stamp()
    text = json.dumps(task, ensure_ascii=False, indent=2)
    cut = int(len(text) * at) if pause else len(text)
    with open(path, "w", encoding="utf-8") as fh:  # truncates in place, as the original does
        fh.write(text[:cut])
        fh.flush()
        time.sleep(pause)
        fh.write(text[cut:])


def find(root: str, task_id: str) -> str:
    exact = os.path.join(root, f"{task_id}.json")
    if os.path.exists(exact):
        return exact
    matches = sorted(n for n in os.listdir(root) if n.endswith(".json") and n.startswith(task_id))
    if not matches:
        sys.exit(f"Error: task '{task_id}' not found")
    return os.path.join(root, matches[0])


def main(argv: list[str]) -> None:
    pause, at = 0.0, 0.5
    while argv and argv[0] in ("--pause", "--at"):
        value = float(argv[1])
        pause, at = (value, at) if argv[0] == "--pause" else (pause, value)
        argv = argv[2:]
    verb, args = argv[0], argv[1:]
    root = os.environ["TASK_PULSE_DIR"]
    os.makedirs(root, exist_ok=True)
    if verb == "create":
        name, names = args[0], args[1:]
        task_id = re.sub(r"[^\w\-]", "-", name).strip("-")[:60] + datetime.now(TZ).strftime("-%Y%m%d-%H%M%S")
        steps: list[dict[str, Any]] = [{"name": n, "status": "pending"} for n in names]
        steps[0].update(status="running", startedAt=stamp())
        task = {"taskId": task_id, "taskName": name, "status": "running", "startedAt": stamp(),
                "updatedAt": stamp(), "finishedAt": None, "steps": steps, "error": None, "result": None}
        save(os.path.join(root, f"{task_id}.json"), task, pause, at)
        print(task_id)
        return
    path = find(root, args[0])
    with open(path, encoding="utf-8") as fh:
        task = json.load(fh)
    message = " ".join(args[1:]) or None
    running = [i for i, s in enumerate(task["steps"]) if s["status"] == "running"]
    if verb == "next" and running:
        i = running[0]
        task["steps"][i].update(status="done", finishedAt=stamp(), **({"message": message} if message else {}))
        if i + 1 < len(task["steps"]):
            task["steps"][i + 1].update(status="running", startedAt=stamp())
    elif verb == "heartbeat" and running and message:
        task["steps"][running[0]]["message"] = message
    elif verb == "done":
        task.update(status="done", finishedAt=stamp(), **({"result": message} if message else {}))
        for i in running:
            task["steps"][i].update(status="done", finishedAt=stamp())
    elif verb == "error":
        task.update(status="error", finishedAt=stamp(), error=message)
        for i in running[:1]:
            task["steps"][i].update(status="error", message=message)
    save(path, task, pause, at)


if __name__ == "__main__":
    main(sys.argv[1:])
