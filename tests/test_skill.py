"""The OpenClaw skill: its frontmatter, and an installer that never clobbers someone's edits."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from task_pulse.cli import cli
from task_pulse.skill import MANIFEST, shipped
from tests.conftest import BIN, clean_env


def frontmatter() -> dict[str, Any]:
    text = shipped()["SKILL.md"].decode()
    assert text.startswith("---\n")
    head, _, body = text[4:].partition("\n---\n")
    assert body.strip(), "the skill needs a body"
    return yaml.safe_load(head)


# The keys OpenClaw 2026.9 reads from a skill's frontmatter and from its `metadata.openclaw` object.
OPENCLAW_FRONTMATTER = {"name", "description", "metadata", "homepage", "user-invocable", "disable-model-invocation",
                        "command-dispatch", "command-tool", "command-arg-mode"}
OPENCLAW_METADATA = {"always", "emoji", "homepage", "os", "requires", "primaryEnv", "skillKey", "install"}


def test_frontmatter_is_yaml_whose_metadata_openclaw_reads_as_json5() -> None:
    meta = frontmatter()
    assert set(meta) <= OPENCLAW_FRONTMATTER
    assert meta["name"] == "live-task-pulse"
    description = meta["description"]
    assert "30 seconds" in description and "2 tool calls" in description and "what is running" in description
    # OpenClaw parses the metadata value as JSON5: one line of JSON is both that and YAML.
    (line,) = [x for x in shipped()["SKILL.md"].decode().splitlines() if x.startswith("metadata:")]
    assert json.loads(line.removeprefix("metadata:")) == meta["metadata"]
    openclaw = meta["metadata"]["openclaw"]
    assert set(openclaw) <= OPENCLAW_METADATA
    assert openclaw["emoji"] and openclaw["os"] == ["linux"] and openclaw["requires"] == {"bins": ["task-pulse"]}
    assert "install" not in openclaw  # no installer entry that cannot resolve (task-pulse is not on an index)


def test_body_covers_the_verbs_sub_agents_and_how_messages_reach_the_user() -> None:
    body = shipped()["SKILL.md"].decode()
    for needed in ("task-pulse create", "task-pulse next", "task-pulse heartbeat", "task-pulse done",
                   "task-pulse error", "Sub-agents", "task-pulse drain", "NO_REPLY", "live card",
                   "openclaw tasks", "done_only", "task-pulse openclaw setup", "task-pulse run"):
        assert needed in body, needed
    assert "HEARTBEAT.md" not in body  # retired by OpenClaw
    references = re.findall(r"\S*references/\S+\.md", body)
    assert references and all(r.startswith("{baseDir}/references/") for r in references)
    assert len(body) < 4000  # read by a model on every turn where it matches: keep it short
    assert "task-pulse run" in shipped()["references/integration-guide.md"].decode()


def install(dest: Path, *args: str) -> Any:
    return CliRunner().invoke(cli, ["skill", "install", "--dest", str(dest), *args])


def test_install_update_and_refusal(tmp_path: Path) -> None:
    dest = tmp_path / "skills" / "live-task-pulse"
    first = install(dest)
    assert first.exit_code == 0 and "wrote" in first.output
    assert (dest / "SKILL.md").read_bytes() == shipped()["SKILL.md"]
    assert (dest / "references" / "integration-guide.md").exists()
    assert install(dest).output.strip().endswith("up to date")
    # an older copy we wrote ourselves is updated quietly
    (dest / "SKILL.md").write_text("older version\n")
    manifest = json.loads((dest / MANIFEST).read_text())
    manifest["files"]["SKILL.md"] = hashlib.sha256(b"older version\n").hexdigest()
    (dest / MANIFEST).write_text(json.dumps(manifest))
    assert install(dest).exit_code == 0
    assert (dest / "SKILL.md").read_bytes() == shipped()["SKILL.md"]
    # a copy the user edited is kept
    (dest / "SKILL.md").write_text("my own notes\n")
    refused = install(dest)
    assert refused.exit_code == 1 and "--force" in refused.output
    assert (dest / "SKILL.md").read_text() == "my own notes\n"
    assert install(dest, "--force").exit_code == 0
    assert (dest / "SKILL.md").read_bytes() == shipped()["SKILL.md"]


def test_the_original_skill_in_the_same_folder_is_not_clobbered(tmp_path: Path) -> None:
    dest = tmp_path / "live-task-pulse"
    (dest / "scripts").mkdir(parents=True)
    (dest / "SKILL.md").write_text("---\nname: live-task-pulse\n---\nthe original\n")
    (dest / "scripts" / "task_pulse.py").write_text("# the original script\n")
    assert install(dest).exit_code == 1
    assert (dest / "SKILL.md").read_text().endswith("the original\n")
    assert (dest / "scripts" / "task_pulse.py").read_text() == "# the original script\n"
    assert install(dest, "--force").exit_code == 0  # replaced on request: prompts calling the script now run ours
    assert (dest / "scripts" / "task_pulse.py").read_bytes() == shipped()["scripts/task_pulse.py"]


def test_default_destination_is_the_openclaw_workspace(tmp_path: Path) -> None:
    proc = subprocess.run([str(BIN / "task-pulse"), "skill", "install"], capture_output=True, text=True,
                          env=clean_env(HOME=str(tmp_path)), timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / ".openclaw" / "workspace" / "skills" / "live-task-pulse" / "SKILL.md").exists()
