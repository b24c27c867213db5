"""What task-pulse needs to know about the OpenClaw CLI on this machine: where it is and which Node
runs it. A systemd user service does not get the login PATH, so `service install` writes both down.

OpenClaw 2026.9 needs Node `>=24.16 <25 || >=26.1`; an older Node exits 1 with
"node:sqlite is unavailable" on every call.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from task_pulse.errors import OperationFailed

NODE_NEEDED = ">=24.16 <25 || >=26.1"


def node_ok(version: tuple[int, int]) -> bool:
    return (24, 16) <= version < (25, 0) or version >= (26, 1)


@dataclass(frozen=True)
class OpenClawInstall:
    program: Path  # the openclaw executable, absolute
    node_dir: Path | None  # the directory whose `node` runs it, when it is found through PATH (`env node`)
    node_version: str | None


def node_version(node: Path) -> tuple[str, tuple[int, int]]:
    proc = subprocess.run([str(node), "--version"], capture_output=True, text=True, timeout=30)
    match = re.match(r"v(\d+)\.(\d+)", proc.stdout.strip())
    if proc.returncode != 0 or match is None:
        raise OperationFailed(f"{node} --version did not answer with a version: {proc.stdout or proc.stderr}")
    return proc.stdout.strip(), (int(match.group(1)), int(match.group(2)))


def locate(explicit: str | None = None) -> OpenClawInstall:
    """Find openclaw (the given path, else PATH) and, if it runs on `env node`, the Node PATH gives it."""
    found = shutil.which(explicit or "openclaw")
    if found is None:
        raise OperationFailed(f"no openclaw program {'at ' + explicit if explicit else 'on PATH'}: install OpenClaw "
                              "(npm install -g openclaw) or give its path with --openclaw-bin")
    program = Path(found).absolute()
    with program.open("rb") as fh:
        first = fh.readline(200)
    if not re.match(rb"#!\s*\S*/env\s+(-S\s+)?node\b", first):
        return OpenClawInstall(program, None, None)  # a wrapper or an absolute interpreter: it finds its own Node
    node = shutil.which("node")
    if node is None:
        raise OperationFailed(f"{program} runs on `node`, and there is no node on PATH (OpenClaw needs {NODE_NEEDED})")
    shown, version = node_version(Path(node))
    if not node_ok(version):
        raise OperationFailed(f"{program} would run on {node} {shown}; OpenClaw needs Node {NODE_NEEDED} "
                              "(npm install -g node@24 puts one on PATH)")
    return OpenClawInstall(program, Path(node).absolute().parent, shown)
