"""`task-pulse hook claude-code`, fed the payloads Claude Code's hooks reference documents, as real processes.

The payloads below follow https://code.claude.com/docs/en/hooks (read 2026-08): the common fields
(`session_id`, `transcript_path`, `cwd`, `permission_mode`, `hook_event_name`; `agent_id` and
`agent_type` inside a sub-agent) and each event's own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from task_pulse.adapters.claude_code.events import QUIET_SECONDS
from task_pulse.adapters.claude_code.hook import handle
from task_pulse.adapters.claude_code.session import DIR_NAME, prune, session_key
from task_pulse.cli import cli
from task_pulse.config import Settings, load_settings
from task_pulse.entry import hook_call
from tests.conftest import BIN, Daemon, clean_env, kinds, read_notifications, wait_for

CWD = "/home/user/my-project"
START = datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


class Claude:
    """One Claude Code session's hook calls, each a real `task-pulse hook claude-code` process."""

    def __init__(self, tasks_dir: Path, session_id: str = "8a1e2c4d-0b6f-4f0e-9d3a-5c7b9e1f2a3b",
                 **env: str) -> None:
        self.tasks_dir, self.session_id = tasks_dir, session_id
        self.env = clean_env(TASK_PULSE_LANG="en", **env)
        self.uses = 0

    def payload(self, event: str, **fields: Any) -> dict[str, Any]:
        return {"session_id": self.session_id, "prompt_id": "550e8400-e29b-41d4-a716-446655440000",
                "transcript_path": f"/home/user/.claude/projects/my-project/{self.session_id}.jsonl", "cwd": CWD,
                "permission_mode": "default", "hook_event_name": event, **fields}

    def send(self, event: str, **fields: Any) -> None:
        run_hook(self.tasks_dir, json.dumps(self.payload(event, **fields)).encode(), self.env)

    # -- the events ------------------------------------------------------------------------------------

    def prompt(self, text: str) -> None:
        self.send("UserPromptSubmit", prompt=text)

    def tool(self, name: str, tool_input: dict[str, Any], response: dict[str, Any] | None = None,
             agent: tuple[str, str] | None = None) -> str:
        """A tool call: PreToolUse, then PostToolUse (a sub-agent's when `agent` is its (id, type))."""
        self.uses += 1
        use_id = f"toolu_{self.uses:04d}"
        inside = {"agent_id": agent[0], "agent_type": agent[1]} if agent else {}
        self.send("PreToolUse", tool_name=name, tool_input=tool_input, tool_use_id=use_id, **inside)
        self.send("PostToolUse", tool_name=name, tool_input=tool_input, tool_response=response or {},
                  tool_use_id=use_id, duration_ms=12, **inside)
        return use_id

    def failed_tool(self, name: str, tool_input: dict[str, Any], error: str) -> None:
        self.uses += 1
        use_id = f"toolu_{self.uses:04d}"
        self.send("PreToolUse", tool_name=name, tool_input=tool_input, tool_use_id=use_id)
        self.send("PostToolUseFailure", tool_name=name, tool_input=tool_input, tool_use_id=use_id, error=error,
                  is_interrupt=False, duration_ms=4187)

    def todos(self, *items: tuple[str, str]) -> None:
        todos = [{"content": c, "status": s, "activeForm": c} for c, s in items]
        self.tool("TodoWrite", {"todos": todos}, {"oldTodos": [], "newTodos": todos})

    def task_create(self, item_id: str, subject: str) -> None:
        self.tool("TaskCreate", {"subject": subject, "description": f"{subject}, carefully"},
                  {"task": {"id": item_id, "subject": subject}})

    def task_update(self, item_id: str, status: str, key: str = "taskId") -> None:
        self.tool("TaskUpdate", {key: item_id, "status": status},
                  {"success": True, "taskId": item_id, "updatedFields": ["status"],
                   "statusChange": {"from": "pending", "to": status}})

    def stop(self, said: str) -> None:
        self.send("Stop", stop_hook_active=False, last_assistant_message=said, background_tasks=[], session_crons=[])


def run_hook(tasks_dir: Path, stdin: bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[bytes]:
    """The hook as Claude Code runs it; it must say nothing and exit 0, whatever it was given."""
    proc = subprocess.run([str(BIN / "task-pulse"), "--dir", str(tasks_dir), "hook", "claude-code"], input=stdin,
                          capture_output=True, env=env or clean_env(), timeout=60)
    assert (proc.returncode, proc.stdout, proc.stderr) == (0, b"", b""), proc
    return proc


def tasks(tasks_dir: Path) -> dict[str, dict[str, Any]]:
    """The task files by task name."""
    out = {}
    for path in tasks_dir.glob("*.json"):
        task = json.loads(path.read_text(encoding="utf-8"))
        out[task["taskName"]] = task
    return out


def steps(task: dict[str, Any]) -> list[tuple[str, str]]:
    return [(s["name"], s["status"]) for s in task["steps"]]


def state_dir(tasks_dir: Path) -> Path:
    return tasks_dir / ".pulse" / DIR_NAME


def no_progress(tasks_dir: Path, task_id: str) -> list[str]:
    """Kinds told of a task, progress aside (how many of those the throttle lets through is timing)."""
    return [k for k in kinds(tasks_dir, task_id) if k != "progress"]


def test_a_whole_session_becomes_tasks_and_their_notifications(tasks_dir: Path, daemons: list[Daemon]) -> None:
    daemons.append(daemon := Daemon(tasks_dir, "--lang", "en").start())
    claude = Claude(tasks_dir)

    # Turn 1: a prompt, the todo list written and followed, tool calls, a sub-agent, the end of the turn.
    claude.prompt("Add a dark mode toggle to the settings page")
    claude.todos(("Find the settings page", "in_progress"), ("Add the toggle", "pending"), ("Run the tests", "pending"))
    claude.tool("Grep", {"pattern": "SettingsPage", "path": CWD})
    claude.todos(("Find the settings page", "completed"), ("Add the toggle", "in_progress"),
                 ("Run the tests", "pending"))
    claude.send("PreToolUse", tool_name="Agent", tool_use_id="toolu_agent1",
                tool_input={"description": "Review the toggle", "prompt": "Review …", "subagent_type": "Explore"})
    claude.send("SubagentStart", agent_id="a4d2c8f1e0b3a297", agent_type="Explore")
    claude.tool("Read", {"file_path": f"{CWD}/src/settings.tsx"}, agent=("a4d2c8f1e0b3a297", "Explore"))
    claude.send("SubagentStop", agent_id="a4d2c8f1e0b3a297", agent_type="Explore", stop_hook_active=False,
                agent_transcript_path="/x/subagents/agent-a4d2c8f1e0b3a297.jsonl",
                last_assistant_message="The toggle looks right.", background_tasks=[], session_crons=[])
    claude.send("PostToolUse", tool_name="Agent", tool_use_id="toolu_agent1",
                tool_input={"description": "Review the toggle", "prompt": "Review …", "subagent_type": "Explore"},
                tool_response={"status": "completed", "agentId": "a4d2c8f1e0b3a297",
                               "content": [{"type": "text", "text": "The toggle looks right."}],
                               "totalDurationMs": 48211, "totalToolUseCount": 1})
    claude.todos(("Find the settings page", "completed"), ("Add the toggle", "completed"),
                 ("Run the tests", "in_progress"))
    claude.tool("Bash", {"command": "npm test", "description": "Run test suite"}, {"stdout": "ok", "stderr": ""})
    claude.stop("Added the toggle; the tests pass.")

    # Turn 2: the Task tools, a tool that fails, and the turn ends on an API error.
    claude.prompt("Now make it remember the choice")
    claude.task_create("1", "Store the choice")
    claude.task_create("2", "Read it at start")
    claude.task_update("1", "in_progress")
    claude.failed_tool("Bash", {"command": "npm test"}, "Exit code 1\nError: Cannot find module 'store'")
    claude.task_update("1", "completed")
    claude.task_update("2", "in_progress")
    claude.send("StopFailure", error="rate_limit", error_details="429 Too Many Requests",
                last_assistant_message="API Error: Rate limit reached")

    # Turn 3: the session ends with the turn still running.
    claude.prompt("Try again")
    claude.tool("Bash", {"command": "npm test"})
    claude.send("SessionEnd", reason="prompt_input_exit")

    by_name = tasks(tasks_dir)
    assert set(by_name) == {"Add a dark mode toggle to the settings page", "Explore: Review the toggle",
                            "Now make it remember the choice", "Try again"}
    first = by_name["Add a dark mode toggle to the settings page"]
    assert (first["status"], first["result"]) == ("done", "Added the toggle; the tests pass.")
    assert steps(first) == [("Find the settings page", "done"), ("Add the toggle", "done"), ("Run the tests", "done")]
    assert first["stallSeconds"] == 600 and "parentTaskId" not in first
    agent = by_name["Explore: Review the toggle"]
    assert (agent["status"], agent["result"], agent["parentTaskId"]) == ("done", "The toggle looks right.",
                                                                         first["taskId"])
    assert agent["steps"] == [{"name": "working", "status": "done", "startedAt": agent["startedAt"],
                               "finishedAt": agent["finishedAt"]}]  # what its last tool call was is no result
    second = by_name["Now make it remember the choice"]
    assert (second["status"], second["error"]) == ("error", "rate_limit: 429 Too Many Requests")
    assert steps(second) == [("Store the choice", "done"), ("Read it at start", "error")]
    third = by_name["Try again"]
    assert (third["status"], third["error"]) == ("error", "the session ended (prompt_input_exit) before this turn "
                                                          "finished")
    # of the session's state, only its turn and why it ended stay (for a StopFailure that comes after it)
    assert json.loads(state_dir(tasks_dir).joinpath(f"{claude.session_id}.json").read_text()) == {
        "turn": third["taskId"], "ended": third["error"]}

    expected = {first["taskId"]: ["started", "step_done", "step_done", "done"],  # the last step: told by `done`
                agent["taskId"]: ["started", "done"],
                second["taskId"]: ["started", "step_done", "failed"],
                third["taskId"]: ["started", "failed"]}
    for task_id, wanted in expected.items():
        wait_for(lambda t=task_id, w=wanted: no_progress(tasks_dir, t) == w, 30,
                 f"{wanted} for {task_id}, have {no_progress(tasks_dir, task_id)}")
    texts = {n["task_id"]: n["text"] for n in read_notifications(tasks_dir) if n["kind"] in ("done", "failed")}
    assert texts[first["taskId"]].startswith('🎉 "Add a dark mode toggle to the settings page" done!')
    assert texts[first["taskId"]].endswith("Result: Added the toggle; the tests pass.")
    assert "Error: rate_limit: 429 Too Many Requests" in texts[second["taskId"]]
    notes = read_notifications(tasks_dir)
    assert len({n["key"] for n in notes}) == len(notes)  # none twice
    assert daemon.alive()


def test_tool_calls_are_heartbeats_with_a_masked_summary(tasks_dir: Path) -> None:
    claude = Claude(tasks_dir)
    claude.prompt("Deploy it")
    claude.send("PreToolUse", tool_name="Bash", tool_use_id="toolu_1",
                tool_input={"command": "deploy --token=ghp_abcdefghijklmnopqrstuvwxyz0123 --prod"})
    task = tasks(tasks_dir)["Deploy it"]
    assert task["steps"] == [{"name": "working", "status": "running", "startedAt": task["startedAt"],
                              "message": "Bash: deploy --token=*** --prod"}]
    claude.failed_tool("mcp__github__create_issue", {"title": "Deploy failed"}, "MCP error: 403 Forbidden")
    assert tasks(tasks_dir)["Deploy it"]["steps"][0]["message"] == "github.create_issue: Deploy failed ✗ MCP error: " \
                                                                  "403 Forbidden"
    assert "ghp_abcdefghijklmnopqrstuvwxyz0123" not in "".join(
        p.read_text(errors="replace") for p in tasks_dir.rglob("*") if p.is_file())


def test_a_tool_call_that_ends_soon_after_it_began_costs_one_write(tasks_dir: Path) -> None:
    """PostToolUse refreshes the task only when its last write is QUIET_SECONDS old: its PreToolUse, as a
    rule, wrote it just before. (In-process, on a clock of the test's own: no timing in the assert.)"""
    clock = Clock(load_settings({"tasks_dir": str(tasks_dir)}, env={}, config_file=tasks_dir / "no-config.toml"))
    claude = Claude(tasks_dir)

    def send(at: float, event: str, **fields: Any) -> int:
        clock.at = START + timedelta(seconds=at)
        handle(claude.payload(event, **fields), clock)
        return tasks(tasks_dir)["Test it"]["rev"]

    assert send(0, "UserPromptSubmit", prompt="Test it") == 1
    call = {"tool_name": "Bash", "tool_use_id": "toolu_1", "tool_input": {"command": "pytest"}}
    assert send(1, "PreToolUse", **call) == 2
    assert send(1 + QUIET_SECONDS - 0.5, "PostToolUse", tool_response={}, **call) == 2  # nothing new to say
    assert send(2 + QUIET_SECONDS, "PostToolUse", tool_response={}, **call) == 3  # a long call: alive
    assert tasks(tasks_dir)["Test it"]["updatedAt"] == (START + timedelta(seconds=2 + QUIET_SECONDS)).isoformat()


class Clock(Settings):
    """Settings whose `now` is the test's to set."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(**{name.lstrip("_"): getattr(settings, name) for name in Settings.__slots__})
        self.at = START

    def now(self) -> datetime:
        return self.at


def test_a_prompt_with_a_secret_names_its_task_masked(tasks_dir: Path) -> None:
    Claude(tasks_dir).prompt("Rotate the key sk-ant-api03-abcdefghijklmnopqrstuvwxyz now\nand tell me")
    (path,) = tasks_dir.glob("*.json")
    task = json.loads(path.read_text())
    assert task["taskName"] == "Rotate the key sk-ant-*** now and tell me"
    assert "abcdefghijklmnop" not in path.name


def test_an_api_error_told_after_the_session_ended_still_says_why(tasks_dir: Path) -> None:
    """Claude Code does not wait for StopFailure hooks: a `claude -p` run that an API error ends may run
    its SessionEnd hook first (seen with Claude Code 2.1.332, tests/e2e/test_claude_code.py)."""
    claude = Claude(tasks_dir)
    claude.prompt("Deploy the site")
    claude.send("SessionEnd", reason="other")
    claude.send("StopFailure", error="rate_limit", error_details="429 Too Many Requests")
    task = tasks(tasks_dir)["Deploy the site"]
    assert (task["status"], task["error"], task["steps"][0]["message"]) == ("error", "rate_limit: 429 Too Many "
                                                                            "Requests", task["error"])
    claude.prompt("Try again")  # the session resumed: it goes on as before
    claude.stop("Deployed.")
    assert tasks(tasks_dir)["Try again"]["status"] == "done"
    assert tasks(tasks_dir)["Deploy the site"]["error"] == "rate_limit: 429 Too Many Requests"


def test_a_new_prompt_fails_the_turn_it_interrupted(tasks_dir: Path) -> None:
    """Claude Code runs no Stop hook when the user interrupts a turn: the next prompt is how we learn of it."""
    claude = Claude(tasks_dir)
    claude.prompt("Write the report")
    claude.prompt("Actually, just the summary")
    by_name = tasks(tasks_dir)
    assert (by_name["Write the report"]["status"], by_name["Write the report"]["error"]) == (
        "error", "interrupted: a new prompt came before this turn ended")
    assert by_name["Actually, just the summary"]["status"] == "running"
    claude.stop("Here is the summary.")
    claude.prompt("Thanks")  # the turn before ended properly: nothing is failed
    assert tasks(tasks_dir)["Actually, just the summary"]["status"] == "done"


def test_the_task_tools_list_carries_over_into_the_next_turn(tasks_dir: Path) -> None:
    claude = Claude(tasks_dir)
    claude.prompt("Build the export")
    assert steps(tasks(tasks_dir)["Build the export"]) == [("working", "running")]
    claude.task_create("1", "Write the query")
    claude.task_create("2", "Format as CSV")
    claude.task_create("3", "Add a button")
    claude.task_update("1", "in_progress", key="id")  # the model's own spelling, which Claude Code repairs
    claude.task_update("1", "completed", key="task_id")
    claude.task_update("3", "deleted")
    assert steps(tasks(tasks_dir)["Build the export"]) == [("Write the query", "done"), ("Format as CSV", "pending")]
    claude.stop("Query done; CSV next.")

    claude.prompt("Go on")
    assert steps(tasks(tasks_dir)["Go on"]) == [("working", "running")]  # until the model touches its list
    claude.task_update("2", "in_progress")
    claude.task_create("4", "Write a test")
    # what was still open carries over, with what this turn adds; what was done before stays with its turn
    assert steps(tasks(tasks_dir)["Go on"]) == [("Format as CSV", "running"), ("Write a test", "pending")]
    assert steps(tasks(tasks_dir)["Build the export"]) == [("Write the query", "done"), ("Format as CSV", "pending")]
    claude.stop("Done.")
    assert tasks(tasks_dir)["Go on"]["status"] == "done"


def test_background_sub_agents_run_past_the_turn_and_each_has_its_task(tasks_dir: Path) -> None:
    """As of Claude Code 2.1.198 sub-agents run in the background: the Agent call returns `async_launched`
    at once, and the sub-agent's own SubagentStop ends its work, maybe after the turn's Stop."""
    claude = Claude(tasks_dir)
    claude.prompt("Audit the repo")
    turn = tasks(tasks_dir)["Audit the repo"]["taskId"]
    calls = [{"description": what, "prompt": "…", "subagent_type": "general-purpose"}
             for what in ("Check the deps", "Check the docs")]
    for n, call in enumerate(calls):
        claude.send("PreToolUse", tool_name="Agent", tool_use_id=f"toolu_a{n}", tool_input=call)
    claude.send("SubagentStart", agent_id="agent-1", agent_type="general-purpose")
    claude.send("SubagentStart", agent_id="agent-2", agent_type="general-purpose")
    for n, call in enumerate(calls):
        claude.send("PostToolUse", tool_name="Agent", tool_use_id=f"toolu_a{n}", tool_input=call,
                    tool_response={"status": "async_launched", "agentId": f"agent-{n + 1}",
                                   "description": call["description"], "prompt": "…", "outputFile": "/tmp/out"})
    claude.stop("Two agents are auditing.")
    claude.todos(("List the deps", "completed"), ("Check each", "in_progress"))
    claude.send("PreToolUse", tool_name="Bash", tool_use_id="toolu_x", tool_input={"command": "pip list"},
                agent_id="agent-1", agent_type="general-purpose")
    by_name = tasks(tasks_dir)
    deps, docs = by_name["general-purpose: Check the deps"], by_name["general-purpose: Check the docs"]
    assert deps["parentTaskId"] == docs["parentTaskId"] == turn
    assert (deps["status"], deps["steps"][0]["message"]) == ("running", "Bash: pip list")
    assert by_name["Audit the repo"]["status"] == "done"
    assert steps(by_name["Audit the repo"]) == [("working", "done")]  # the list after Stop: the turn has ended
    claude.send("SubagentStop", agent_id="agent-2", agent_type="general-purpose", stop_hook_active=False,
                last_assistant_message="Docs are fine.")
    claude.send("SessionEnd", reason="other")
    by_name = tasks(tasks_dir)
    docs = by_name["general-purpose: Check the docs"]
    assert (docs["status"], docs["result"]) == ("done", "Docs are fine.")
    assert by_name["general-purpose: Check the deps"]["status"] == "error"  # the session ended under it


def test_a_failed_agent_call_fails_the_sub_agents_task(tasks_dir: Path) -> None:
    claude = Claude(tasks_dir)
    claude.prompt("Summarise the logs")
    agent_call = {"description": "Read the logs", "prompt": "…", "subagent_type": "Explore"}
    claude.send("PreToolUse", tool_name="Agent", tool_use_id="toolu_9", tool_input=agent_call)
    claude.send("SubagentStart", agent_id="agent-9", agent_type="Explore")
    claude.send("PostToolUseFailure", tool_name="Agent", tool_use_id="toolu_9", tool_input=agent_call,
                error="Agent crashed: out of memory", is_interrupt=False)
    agent = tasks(tasks_dir)["Explore: Read the logs"]
    assert (agent["status"], agent["error"]) == ("error", "Agent crashed: out of memory")
    assert tasks(tasks_dir)["Summarise the logs"]["status"] == "running"  # the turn goes on


def test_a_session_set_up_mid_way_still_gets_its_tasks(tasks_dir: Path) -> None:
    """Hooks added while a session runs: its first event may be a tool call, or a sub-agent's."""
    claude = Claude(tasks_dir)
    claude.send("PreToolUse", tool_name="Read", tool_use_id="toolu_1", tool_input={"file_path": f"{CWD}/a.py"})
    claude.send("PreToolUse", tool_name="Read", tool_use_id="toolu_2", tool_input={"file_path": f"{CWD}/b.py"},
                agent_id="agent-7", agent_type="Plan")
    claude.stop("ok")
    by_name = tasks(tasks_dir)
    assert by_name["Claude Code: my-project"]["status"] == "done"
    assert by_name["Plan"]["parentTaskId"] == by_name["Claude Code: my-project"]["taskId"]


def test_hooks_run_in_parallel_lose_nothing(tasks_dir: Path) -> None:
    """Claude Code runs the hooks of parallel tool calls at once: each is a writer under the session's lock."""
    claude = Claude(tasks_dir)
    claude.prompt("Look everywhere")
    events = [claude.payload("PreToolUse", tool_name="Read", tool_use_id=f"toolu_{i}",
                             tool_input={"file_path": f"{CWD}/f{i}.py"}) for i in range(8)]
    events += [claude.payload("SubagentStart", agent_id=f"agent-{i}", agent_type="Explore") for i in range(4)]
    with ThreadPoolExecutor(max_workers=len(events)) as pool:
        list(pool.map(lambda e: run_hook(tasks_dir, json.dumps(e).encode(), claude.env), events))
    every = [json.loads(p.read_text()) for p in tasks_dir.glob("*.json")]
    (turn,) = [t for t in every if t["taskName"] == "Look everywhere"]
    assert turn["rev"] == 1 + 8  # every heartbeat written, none lost to another
    agents = [t for t in every if t.get("parentTaskId") == turn["taskId"]]
    assert len(agents) == 4 and len(every) == 5
    state = json.loads(state_dir(tasks_dir).joinpath(f"{claude.session_id}.json").read_text())
    assert sorted(state["agents"]) == [f"agent-{i}" for i in range(4)]
    assert sorted(state["agents"].values()) == sorted(t["taskId"] for t in agents)


@pytest.mark.parametrize("stdin", [
    b"", b"not json", b"[1, 2]", b'"a string"', b"\xff\xfe\x00", b"[" * 100_000,
    b'{"hook_event_name": "PreToolUse"}',  # no session
    b'{"session_id": 7, "hook_event_name": "Stop"}',
    b'{"session_id": "../../etc", "hook_event_name": "UserPromptSubmit", "prompt": {"no": "text"}}',
    b'{"session_id": "s", "hook_event_name": "PostToolUse", "tool_name": "TodoWrite", "tool_input": {"todos": "x"}}',
    b'{"session_id": "s", "hook_event_name": "PostToolUse", "tool_name": "TaskUpdate", "tool_input": []}',
    b'{"session_id": "s", "hook_event_name": "SubagentStart", "agent_id": ["x"]}',
    b'{"session_id": "s", "hook_event_name": "Notification", "message": "waiting"}',  # not an event we follow
])
def test_garbage_in_exits_0_and_says_nothing(tasks_dir: Path, stdin: bytes) -> None:
    run_hook(tasks_dir, stdin)  # asserts exit 0, nothing on stdout or stderr
    for path in tasks_dir.glob("*.json"):  # whatever it wrote is a task file every reader takes
        assert json.loads(path.read_text())["status"] == "running"


def test_what_went_wrong_is_one_line_in_the_error_log(tasks_dir: Path) -> None:
    run_hook(tasks_dir, b"not json")
    run_hook(tasks_dir, b'{"hook_event_name": "Stop"}')
    lines = state_dir(tasks_dir).joinpath("errors.log").read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith("?: EventError: not JSON (8 bytes on stdin)")
    assert lines[1].endswith("Stop: EventError: no session_id")


def test_without_a_tasks_dir_nothing_is_written(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    Claude(missing).prompt("Hello")
    run_hook(missing, b"garbage")
    assert not missing.exists()
    # a tasks dir that is a file, a bad setting: the same silence
    (tmp_path / "file").write_text("x")
    run_hook(tmp_path / "file", b"{}")
    run_hook(tmp_path, b"{}", clean_env(TASK_PULSE_LANG="fr"))


def test_a_broken_session_file_starts_over(tasks_dir: Path) -> None:
    claude = Claude(tasks_dir)
    claude.prompt("First")
    state_dir(tasks_dir).joinpath(f"{claude.session_id}.json").write_text('{"turn": ')
    claude.tool("Read", {"file_path": "/x"})  # no turn known any more: a task for the session
    claude.prompt("Second")
    assert {"First", "Second", "Claude Code: my-project"} <= set(tasks(tasks_dir))


def test_session_ids_that_are_no_file_names_are_hashed(tasks_dir: Path) -> None:
    Claude(tasks_dir, session_id="../../../etc/passwd").prompt("Hi")
    (name,) = [p.name for p in state_dir(tasks_dir).glob("*.json")]
    assert name == f"{session_key('../../../etc/passwd')}.json" and name.startswith("h-")


def test_sessions_gone_for_a_week_are_pruned(tmp_path: Path) -> None:
    folder = tmp_path / "claude-code"
    folder.mkdir()
    week_ago = time.time() - 8 * 86400
    for key, age in (("old", week_ago), ("new", time.time())):
        for suffix in (".json", ".lock"):
            (folder / f"{key}{suffix}").write_text("{}")
            os.utime(folder / f"{key}{suffix}", (age, age))
    assert prune(str(folder), keep_seconds=7 * 86400) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["new.json", "new.lock"]


def test_the_hook_through_click(tasks_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASK_PULSE_LANG", "en")
    event = Claude(tasks_dir).payload("UserPromptSubmit", prompt="Through click")
    result = CliRunner().invoke(cli, ["--dir", str(tasks_dir), "hook", "claude-code"], input=json.dumps(event))
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    assert tasks(tasks_dir)["Through click"]["status"] == "running"
    result = CliRunner().invoke(cli, ["--dir", str(tasks_dir), "hook", "claude-code"], input="garbage")
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", "")
    help_text = CliRunner().invoke(cli, ["hook", "claude-code", "--help"]).stdout
    assert "Always exits 0" in help_text and "Example" in help_text


@pytest.mark.parametrize(("args", "flags"), [
    (["hook", "claude-code"], {}),
    (["--dir", "/d", "--lang", "en", "hook", "claude-code"], {"tasks_dir": "/d", "lang": "en"}),
    (["hook", "claude-code", "--help"], None),
    (["hook", "--help"], None),
    (["hook", "claude-code", "extra"], None),
    (["hook"], None),
])
def test_the_hook_is_recognised_for_the_fast_path(args: list[str], flags: dict[str, str] | None) -> None:
    assert hook_call(args) == flags


def test_the_hook_loads_no_click(tasks_dir: Path) -> None:
    """It runs on every tool call: what a writer call loads, and no more (tests/benchmarks/hook_cost.py)."""
    probe = ("import sys\nfrom task_pulse.entry import main\ntry:\n    main(sys.argv[1:])\n"
             "except SystemExit as e:\n    code = e.code\n"
             "heavy = ('click', 'dataclasses', 'typing', 'sqlite3', 'watchdog', 'hashlib')\n"
             "print(code, sorted(m for m in heavy if m in sys.modules), file=sys.stderr)")
    event = Claude(tasks_dir).payload("PreToolUse", tool_name="Bash", tool_input={"command": "ls"}, tool_use_id="t")
    proc = subprocess.run([sys.executable, "-c", probe, "--dir", str(tasks_dir), "hook", "claude-code"],
                          input=json.dumps(event), capture_output=True, text=True, env=clean_env(), timeout=60)
    assert (proc.stdout, proc.stderr) == ("", "0 []\n")
    assert tasks(tasks_dir)["Claude Code: my-project"]["steps"][0]["message"] == "Bash: ls"


def test_parallel_sub_agents_of_one_type_end_up_with_their_own_names(tasks_dir: Path) -> None:
    """SubagentStart does not say which Agent call it answers: parallel calls of one type may be matched
    the wrong way round, and the call's return (`agentId`) puts the names right."""
    claude = Claude(tasks_dir)
    claude.prompt("Survey the code")
    calls = {"toolu_a": "Map the routes", "toolu_b": "Map the models"}
    for use_id, what in calls.items():
        claude.send("PreToolUse", tool_name="Agent", tool_use_id=use_id,
                    tool_input={"description": what, "prompt": "…", "subagent_type": "Explore"})
    # the second call's sub-agent starts first
    claude.send("SubagentStart", agent_id="agent-b", agent_type="Explore")
    claude.send("SubagentStart", agent_id="agent-a", agent_type="Explore")
    guessed = {t["taskName"] for t in tasks(tasks_dir).values() if "parentTaskId" in t}
    assert guessed == {"Explore: Map the routes", "Explore: Map the models"}
    for use_id, what in calls.items():
        claude.send("PostToolUse", tool_name="Agent", tool_use_id=use_id,
                    tool_input={"description": what, "prompt": "…", "subagent_type": "Explore"},
                    tool_response={"status": "async_launched", "agentId": f"agent-{use_id[-1]}"})
    claude.send("SubagentStop", agent_id="agent-b", agent_type="Explore", last_assistant_message="12 models")
    by_name = tasks(tasks_dir)
    assert by_name["Explore: Map the models"]["result"] == "12 models"
    assert by_name["Explore: Map the routes"]["status"] == "running"
    state = json.loads(state_dir(tasks_dir).joinpath(f"{claude.session_id}.json").read_text())
    assert state["pending"] == [] and state["agentTools"] == {"toolu_a": "agent-a", "toolu_b": "agent-b"}


def test_an_agent_call_that_never_started_a_sub_agent_names_none(tasks_dir: Path) -> None:
    claude = Claude(tasks_dir)
    claude.prompt("Plan it")
    denied = {"description": "Write the plan", "prompt": "…", "subagent_type": "Plan"}
    claude.send("PreToolUse", tool_name="Agent", tool_use_id="toolu_1", tool_input=denied)
    claude.send("PostToolUseFailure", tool_name="Agent", tool_use_id="toolu_1", tool_input=denied,
                error="Agent type 'Plan' is not available")
    claude.send("SubagentStart", agent_id="agent-later", agent_type="Plan")  # from a later call, not that one
    assert "Plan" in tasks(tasks_dir)


def transcript(path: Path, *entries: dict[str, Any]) -> str:
    """A session transcript as Claude Code 2.1.332 writes it (JSON lines), with only the fields read here."""
    path.write_text("".join(json.dumps(e) + "\n" for e in entries) + "not json\n")
    return str(path)


API_ERROR = {"type": "assistant", "isApiErrorMessage": True, "error": "rate_limit",
             "message": {"model": "<synthetic>", "role": "assistant",
                         "content": [{"type": "text", "text": "API Error: Rate limit reached"}]}}
SAID = {"type": "assistant", "message": {"role": "assistant", "content": [{"type": "text", "text": "Working on it"}]}}


def test_a_session_that_ends_on_an_api_error_fails_its_turn_with_it(tasks_dir: Path, tmp_path: Path) -> None:
    """`claude -p` stops its StopFailure hook at exit (tests/e2e/test_claude_code.py): SessionEnd reads the error
    from the end of the transcript."""
    claude = Claude(tasks_dir)
    claude.prompt("Deploy the site")
    path = transcript(tmp_path / "s.jsonl", {"type": "user"}, API_ERROR, {"type": "last-prompt"}, {"type": "cost"})
    claude.send("SessionEnd", reason="other", transcript_path=path)
    assert tasks(tasks_dir)["Deploy the site"]["error"] == "rate_limit: API Error: Rate limit reached"


@pytest.mark.parametrize("entries", [(API_ERROR, SAID), (SAID,), ()])
def test_a_session_that_ends_otherwise_says_only_that(tasks_dir: Path, tmp_path: Path,
                                                      entries: tuple[dict[str, Any], ...]) -> None:
    claude = Claude(tasks_dir)
    claude.prompt("Deploy the site")
    claude.send("SessionEnd", reason="prompt_input_exit", transcript_path=transcript(tmp_path / "s.jsonl", *entries))
    assert tasks(tasks_dir)["Deploy the site"]["error"] == ("the session ended (prompt_input_exit) before this turn "
                                                           "finished")
    claude = Claude(tasks_dir, session_id="other-session")
    claude.prompt("Another")
    claude.send("SessionEnd", reason="other", transcript_path=str(tmp_path / "missing.jsonl"))
    assert tasks(tasks_dir)["Another"]["error"].startswith("the session ended (other)")
