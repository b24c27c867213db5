"""The OpenClaw skill that teaches an agent to use task-pulse, shipped as package data, and its installer.

`install` remembers what it wrote (`.task-pulse-skill.json`, a sha256 per file), so a later
install can tell an untouched older copy (replaced quietly) from one the user edited, or from
another skill of the same name such as the original Live Task Pulse (both refused without
`force`). Files of ours only: anything else in the folder is left alone.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from importlib.resources import files
from pathlib import Path

from task_pulse.errors import OperationFailed

SKILL_FILES = ("SKILL.md", "references/integration-guide.md", "scripts/task_pulse.py")
MANIFEST = ".task-pulse-skill.json"
# Where `scripts/task_pulse.py` (the original's script, for prompts that call it by path) finds this
# installation of task-pulse: written on every install, since the interpreter may have moved.
RUNTIME = ".task-pulse.json"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def shipped() -> dict[str, bytes]:
    root = files("task_pulse.skill")
    return {name: root.joinpath(name).read_bytes() for name in SKILL_FILES}


def install(dest: Path, *, force: bool = False) -> list[str]:
    """Write the skill into `dest`. Returns what was done; OperationFailed if it would clobber edits."""
    new = shipped()
    try:
        recorded: dict[str, str] = json.loads((dest / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        recorded = {}
    changed, foreign = [], []
    for name, data in new.items():
        path = dest / name
        if not path.exists():
            changed.append(name)
            continue
        current = _sha(path.read_bytes())
        if current == _sha(data):
            continue
        changed.append(name)
        if recorded.get(name) != current:  # not what we wrote last time: someone else's text
            foreign.append(name)
    if foreign and not force:
        raise OperationFailed(f"{dest} has edited or foreign files ({', '.join(foreign)}); "
                              "keep them, or replace them with --force")
    _folder(dest)
    _write_runtime(dest)
    if not changed:
        return [f"{dest}: up to date"]
    for name in changed:
        path = dest / name
        _folder(path.parent)
        # `scripts/task_pulse.py` may be run directly too
        _write_fixed(path, new[name], 0o755 if name.endswith(".py") else 0o644)
    _write_fixed(dest / MANIFEST, (json.dumps({"files": {n: _sha(d) for n, d in new.items()}}, indent=2) + "\n"
                                   ).encode(), 0o644)
    return [f"wrote {dest / name}" for name in changed] + (
        [f"replaced edited files: {', '.join(foreign)}"] if foreign else [])


# Whatever the umask: under `umask 002` in a setgid group workspace the skill's files were group-writable, and
# so were the instructions an agent follows (SKILL.md) and the record the script takes its sys.path from.
def _folder(path: Path) -> None:
    """`path`, and the folders above it that are missing (`skills/`), made writable by their owner only; `path`
    made so if it is the user's already (a folder above that exists is the workspace's owner's business)."""
    missing = [p for p in (path, *path.parents) if not p.exists()]
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        folder.chmod(0o755)
    st = path.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o022:
        path.chmod(st.st_mode & 0o7755)


def _write_fixed(path: Path, data: bytes, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as fh:
        os.fchmod(fd, mode)  # the mode asked, not what the umask leaves of it (nor a leftover temp file's)
        fh.write(data)
    os.replace(tmp, path)


def _write_runtime(dest: Path) -> None:
    """Record this interpreter, and where it finds task_pulse and click, for `scripts/task_pulse.py` (which
    trusts it only while it and its folder are the user's and nobody else's to write)."""
    import sys

    import click

    import task_pulse

    paths = [os.path.dirname(os.path.dirname(os.path.abspath(m.__file__ or ""))) for m in (task_pulse, click)]
    record = {"python": sys.executable, "version": list(sys.version_info[:2]), "paths": list(dict.fromkeys(paths))}
    _folder(dest)
    _write_fixed(dest / RUNTIME, (json.dumps(record, indent=2) + "\n").encode(), 0o644)


def remove(dest: Path) -> list[str]:
    """Remove the files `install` wrote into `dest`, unless someone edited them since; then the folder if empty."""
    try:
        recorded: dict[str, str] = json.loads((dest / MANIFEST).read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        return [f"{dest}: no skill installed by task-pulse there, left alone"]
    done, kept = [], []
    for name, sha in recorded.items():
        path = dest / name
        if not path.is_file():
            continue
        if _sha(path.read_bytes()) != sha:
            kept.append(name)
            continue
        path.unlink()
        done.append(f"removed {path}")
    if kept:
        done.append(f"kept edited files in {dest}: {', '.join(kept)}")
    else:
        (dest / MANIFEST).unlink()
        with contextlib.suppress(FileNotFoundError):
            (dest / RUNTIME).unlink()
    for folder in sorted({(dest / n).parent for n in recorded} | {dest}, key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()  # only if empty: anything else someone put there stays
    return done
