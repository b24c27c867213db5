"""What a person reads of a Claude Code session: task names, tool call summaries, todo lists as steps (pure)."""

from __future__ import annotations

import pytest

from task_pulse.adapters.claude_code import text
from task_pulse.model import MAX_STEPS, Step, Task

NOW = "2026-11-24T09:30:00+08:00"
LATER = "2026-11-24T09:35:00+08:00"


def test_a_task_is_named_after_the_first_words_of_its_prompt() -> None:
    assert text.task_name("Fix the login bug", "x") == "Fix the login bug"
    long = "Refactor the payment module so that every provider goes through one interface and add tests for it"
    name = text.task_name(long, "x")
    assert name == "Refactor the payment module so that every provider goes…"
    assert len(name) <= text.NAME_CAP
    assert text.task_name("修复登录页面的错误并补上单元测试" * 5, "x").endswith("…")  # no spaces: cut where it must


def test_a_prompt_is_cleaned_and_masked_before_it_names_anything() -> None:
    prompt = "Deploy\nwith token ghp_abcdefghijklmnopqrstuvwxyz0123\x1b[31m now\u202e"
    assert text.task_name(prompt, "x") == "Deploy with token ghp_*** now"
    assert text.task_name("   \n\t ", "fallback") == "fallback"
    assert text.task_name(None, "fallback") == "fallback"
    assert text.task_name(5, "fallback") == "fallback"
    # masking is switched off with TASK_PULSE_REDACT=0, like everywhere else
    assert "ghp_abcdefghijklmnopqrstuvwxyz0123" in text.task_name(prompt, "x", redact_secrets=False)


def test_a_secret_cut_by_the_cap_is_still_masked() -> None:
    prompt = "x" * 40 + " password=hunter2hunter2hunter2hunter2"
    assert "hunter2" not in text.task_name(prompt, "x")


def test_a_huge_prompt_is_read_only_as_far_as_a_name_needs() -> None:
    assert text.task_name("word " * 1_000_000, "x").startswith("word word")


@pytest.mark.parametrize(("tool", "tool_input", "summary"), [
    ("Bash", {"command": "npm test", "description": "Run test suite"}, "Bash: Run test suite"),
    ("Bash", {"command": "cat <<'EOF' > notes.md\nline\nEOF"}, "Bash: cat <<'EOF' > notes.md …"),
    ("Bash", {"command": "curl -H 'Authorization: Bearer abcdefghijklmnop' https://api"},
     "Bash: curl -H 'Authorization: Bearer ***' https://api"),
    ("Edit", {"file_path": "/home/u/proj/src/app.py", "old_string": "secret", "new_string": "x"}, "Edit: src/app.py"),
    ("Read", {"file_path": "/etc/hosts"}, "Read: /etc/hosts"),
    ("Write", {"file_path": "/home/u/proj/README.md", "content": "all of it"}, "Write: README.md"),
    ("Grep", {"pattern": "def main", "path": "/home/u/proj"}, "Grep: def main"),
    ("WebFetch", {"url": "https://user:pw@example.com/x", "prompt": "summarise"}, "WebFetch: https://user:***@example.com/x"),
    ("WebSearch", {"query": "claude code hooks"}, "WebSearch: claude code hooks"),
    ("Agent", {"description": "Find API endpoints", "prompt": "…", "subagent_type": "Explore"},
     "Agent: Find API endpoints"),
    ("mcp__github__create_issue", {"title": "Crash on start", "body": "long text"},
     "github.create_issue: Crash on start"),
    ("mcp__memory__read_graph", {}, "memory.read_graph"),
    ("SomeNewTool", {"content": "never shown"}, "SomeNewTool"),
    ("Bash", "not a dict", "Bash"),
    (None, {}, ""),
])
def test_a_tool_call_is_one_short_line(tool: object, tool_input: object, summary: str) -> None:
    assert text.tool_summary(tool, tool_input, "/home/u/proj") == summary


def test_a_summary_is_capped() -> None:
    summary = text.tool_summary("Bash", {"command": "echo " + "a" * 500})
    assert len(summary) <= text.SUMMARY_CAP and summary.endswith("…")


def test_a_sub_agent_is_named_after_its_type_and_its_errand() -> None:
    assert text.agent_name("Explore", "Find API endpoints") == "Explore: Find API endpoints"
    assert text.agent_name("Explore", None) == "Explore"
    assert text.agent_name("", "Find API endpoints") == "Find API endpoints"
    assert text.agent_name(None, None) == "sub-agent"


def test_todowrite_items_become_steps() -> None:
    todos = [{"content": "Find the page", "status": "completed", "activeForm": "Finding"},
             {"content": "Add the toggle", "status": "in_progress", "activeForm": "Adding"},
             {"content": "Run tests", "status": "pending", "activeForm": "Running"},
             {"content": "", "status": "pending"}, "garbage", {"content": "Odd status", "status": "blocked"}]
    assert text.todo_plan(todos) == [("Find the page", "done"), ("Add the toggle", "running"), ("Run tests", "pending"),
                                     ("Odd status", "pending")]
    assert text.todo_plan("not a list") is None
    assert len(text.todo_plan([{"content": f"item {i}"} for i in range(MAX_STEPS + 5)]) or []) == MAX_STEPS


def _task(*steps: Step) -> Task:
    return Task("t", "n", "running", list(steps), started_at=NOW, updated_at=NOW)


def test_a_plan_replaces_the_placeholder_and_keeps_what_stays() -> None:
    task = _task(Step("working", "running", started_at=NOW, message="Bash: ls"))
    assert text.apply_plan(task, [("a", "running"), ("b", "pending")], LATER, "working")
    assert [(s.name, s.status, s.started_at) for s in task.steps] == [("a", "running", LATER), ("b", "pending", None)]
    task.steps[0].message = "Read: x"
    task.steps[0].extra = {"note": "kept"}
    assert not text.apply_plan(task, [("a", "running"), ("b", "pending")], LATER, "working")  # nothing changed
    assert text.apply_plan(task, [("a", "done"), ("b", "running")], "T3", "working")
    a, b = task.steps
    # a finished step's message is no result (what a heartbeat said while it ran), as with `next`
    assert (a.status, a.started_at, a.finished_at, a.message, a.extra) == ("done", LATER, "T3", None, {"note": "kept"})
    assert (b.status, b.started_at) == ("running", "T3")


def test_an_item_moved_back_to_pending_loses_its_times() -> None:
    task = _task(Step("a", "done", started_at=NOW, finished_at=LATER))
    text.apply_plan(task, [("a", "pending")], "T3", "working")
    assert (task.steps[0].started_at, task.steps[0].finished_at) == (None, None)
    text.apply_plan(task, [("a", "running")], "T4", "working")
    assert (task.steps[0].started_at, task.steps[0].finished_at) == ("T4", None)


def test_steps_of_the_same_name_are_matched_in_order() -> None:
    task = _task(Step("test", "done", started_at=NOW, finished_at=NOW), Step("test", "running", started_at=LATER))
    text.apply_plan(task, [("fix", "pending"), ("test", "done"), ("test", "running")], "T3", "working")
    assert [(s.name, s.started_at) for s in task.steps] == [("fix", None), ("test", NOW), ("test", LATER)]


def test_an_empty_plan_is_the_placeholder_again() -> None:
    task = _task(Step("a", "running", started_at=NOW))
    assert text.apply_plan(task, [], LATER, "working")
    assert [(s.name, s.status) for s in task.steps] == [("working", "running")]
