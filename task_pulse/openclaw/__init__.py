"""What task-pulse needs to know about the OpenClaw CLI on this machine: where it is and which Node
runs it. A systemd user service does not get the login PATH, so `service install` writes both down.

OpenClaw 2026.9 needs Node `>=24.16 <25 || >=26.1`; an older Node exits 1 with
"node:sqlite is unavailable" on every call.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


# -- the CLI --------------------------------------------------------------------------------------------

VERSION_CHECKED = "2026.9.6"  # the OpenClaw these commands and JSON shapes were checked against


class OpenClawCLI:
    """Calls of the `openclaw` program that task-pulse makes, with their JSON answers.

    Every call runs with `--json` where it exists and NO_COLOR; a failure is an OperationFailed
    carrying OpenClaw's own message (`{"ok": false, "error": {"message": …}}`), not its banner.
    """

    def __init__(self, install: OpenClawInstall, profile: str | None = None) -> None:
        self.install, self.profile = install, profile

    def argv(self, *args: str) -> list[str]:
        return [str(self.install.program), *(["--profile", self.profile] if self.profile else []), *args]

    def call(self, *args: str, timeout: float = 120) -> Any:
        env = {**os.environ, "NO_COLOR": "1"}
        if self.install.node_dir is not None:  # the Node it was found with, also when PATH differs later
            env["PATH"] = os.pathsep.join([str(self.install.node_dir), env.get("PATH", "")])
        try:
            proc = subprocess.run(self.argv(*args), capture_output=True, text=True, encoding="utf-8",
                                  errors="replace", timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise OperationFailed(f"openclaw {' '.join(args[:2])} did not answer in {timeout:g} s") from None
        reply = _json(proc.stdout)
        if proc.returncode != 0 or (isinstance(reply, dict) and reply.get("ok") is False):
            error = reply.get("error") if isinstance(reply, dict) else None
            message = error.get("message") if isinstance(error, dict) else error
            lines = [line.strip() for line in (message or proc.stderr or proc.stdout).splitlines() if line.strip()]
            raise OperationFailed(f"openclaw {' '.join(args[:2])}: {lines[0] if lines else f'exit {proc.returncode}'}")
        return reply if reply is not None else proc.stdout

    def version(self) -> str:
        out = self.call("--version")
        match = re.search(r"\d{4}\.\d+\.\d+", str(out))
        return match.group(0) if match else str(out).strip()

    def workspace(self) -> Path:
        """The agent workspace this OpenClaw uses (its config, OPENCLAW_WORKSPACE_DIR, state dir, profile)."""
        reply = self.call("skills", "list", "--json")
        if not isinstance(reply, dict) or not reply.get("workspaceDir"):
            raise OperationFailed("openclaw skills list --json did not name the workspace")
        return Path(reply["workspaceDir"])

    def cron_jobs(self) -> list[dict[str, Any]]:
        reply = self.call("cron", "list", "--all", "--json")
        return [j for j in reply.get("jobs", []) if isinstance(j, dict)] if isinstance(reply, dict) else []


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None


def default_workspace(profile: str | None = None, env: Mapping[str, str] = os.environ) -> Path:
    """Where OpenClaw keeps the workspace when it cannot be asked (its own order, minus its config file)."""
    if env.get("OPENCLAW_WORKSPACE_DIR"):
        return Path(env["OPENCLAW_WORKSPACE_DIR"]).expanduser()
    if env.get("OPENCLAW_STATE_DIR"):
        return Path(env["OPENCLAW_STATE_DIR"]).expanduser() / "workspace"
    return Path(f"~/.openclaw{'-' + profile if profile else ''}").expanduser() / "workspace"
