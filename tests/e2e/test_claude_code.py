"""Claude Code itself runs our hook: a real `claude -p` set up by `task-pulse claude-code setup`, with a
real task-pulsed watching. Only the model is a stand-in: a local server that speaks the Messages API
(streamed, as Claude Code asks for it) and plays a script of replies, tool calls included.

Claude Code's own debug log (`--debug hooks`) says how each hook call ended and how long it took.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BIN, Daemon, clean_env, kinds, read_notifications, wait_for
from tests.e2e.conftest import BASE

CLAUDE = BASE / "claude-code" / "node_modules" / ".bin" / "claude"
pytestmark = pytest.mark.skipif(not CLAUDE.exists(), reason=f"needs Claude Code: run tests/e2e/setup.sh (base {BASE})")

PROMPT = "Say hello to the team"
AGENT_PROMPT = "Check that the greeting was friendly"
# A line of Claude Code's debug log about one hook call: "Hooks: PreToolUse:Bash [CMD] finished with status 0
# (92ms)", or "SessionEnd:other [CMD] completed with status 0".
HOOK_LINE = re.compile(r"\[DEBUG\] (?:Hooks: )?(\w+)(?::(\S+))? \[([^\]]+ hook claude-code)\] "
                       r"(?:finished|completed) with status (-?\d+)(?: \((\d+)ms\))?")

Reply = tuple[str, Any, Any]  # ("tool", name, input) | ("text", text, None) | ("error", status, error type)


class MessagesAPI:
    """The stand-in model. A request's script is the one whose key its first user message contains; its
    step is how many tool results the conversation holds so far (one tool call per reply)."""

    def __init__(self, scripts: dict[str, list[Reply]]) -> None:
        self.scripts = scripts
        self.requests: list[dict[str, Any]] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                api.answer(self, body)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, handler: BaseHTTPRequestHandler, body: dict[str, Any]) -> None:
        messages = body.get("messages", [])
        first = next((m for m in messages if m.get("role") == "user"), {})
        said = first.get("content") if isinstance(first.get("content"), str) else " ".join(
            b.get("text", "") for b in first.get("content", []) if isinstance(b, dict))
        step = sum(1 for m in messages if isinstance(m.get("content"), list)
                   for b in m["content"] if isinstance(b, dict) and b.get("type") == "tool_result")
        key = next((k for k in self.scripts if k in said), None)
        script = self.scripts.get(key, [("text", "ok", None)]) if key else [("text", "ok", None)]
        reply = script[min(step, len(script) - 1)]
        self.requests.append({"script": key, "step": step, "tools": [t.get("name") for t in body.get("tools", [])],
                              "reply": reply})
        if reply[0] == "error":
            data = json.dumps({"type": "error", "error": {"type": reply[2], "message": "stand-in says no"}}).encode()
            handler.send_response(reply[1])
            handler.send_header("content-type", "application/json")
            handler.send_header("content-length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)
            return
        handler.send_response(200)
        if body.get("stream"):
            handler.send_header("content-type", "text/event-stream")
            handler.end_headers()
            for event in stream(reply, step):
                handler.wfile.write(f"event: {event['type']}\ndata: {json.dumps(event)}\n\n".encode())
            return
        data = json.dumps({"id": "msg_stand_in", "type": "message", "role": "assistant", "model": body.get("model"),
                           "content": [{"type": "text", "text": "ok"}], "stop_reason": "end_turn",
                           "stop_sequence": None, "usage": {"input_tokens": 1, "output_tokens": 1}}).encode()
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def stream(reply: Reply, step: int) -> list[dict[str, Any]]:
    """One assistant message as the Messages API streams it: one text block, or one tool call."""
    if reply[0] == "tool":
        block: dict[str, Any] = {"type": "tool_use", "id": f"toolu_stand_in_{step:02d}", "name": reply[1], "input": {}}
        delta: dict[str, Any] = {"type": "input_json_delta", "partial_json": json.dumps(reply[2])}
        stop = "tool_use"
    else:
        block, delta, stop = {"type": "text", "text": ""}, {"type": "text_delta", "text": reply[1]}, "end_turn"
    return [
        {"type": "message_start", "message": {
            "id": f"msg_stand_in_{step}", "type": "message", "role": "assistant", "model": "claude-stand-in",
            "content": [], "stop_reason": None, "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 1}}},
        {"type": "content_block_start", "index": 0, "content_block": block},
        {"type": "content_block_delta", "index": 0, "delta": delta},
        {"type": "content_block_stop", "index": 0},
        {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 5}},
        {"type": "message_stop"},
    ]


class Machine:
    """A HOME with Claude Code set up by `task-pulse claude-code setup`, a project dir and a tasks dir."""

    def __init__(self, tmp_path: Path) -> None:
        self.home, self.project, self.tasks = tmp_path / "home", tmp_path / "myapp", tmp_path / "tasks"
        self.home.mkdir()
        self.project.mkdir()
        setup = subprocess.run([str(BIN / "task-pulse"), "--dir", str(self.tasks), "claude-code", "setup"],
                               capture_output=True, text=True, env=clean_env(HOME=str(self.home)), timeout=60)
        assert setup.returncode == 0, setup.stderr

    def claude(self, api: MessagesAPI, prompt: str, **env: str) -> subprocess.CompletedProcess[str]:
        """`claude -p PROMPT` as a user would run it: our venv is not on its PATH (the hook is by full path)."""
        full = {"HOME": str(self.home), "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TASK_PULSE_LANG": "en",
                "ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": "sk-ant-stand-in",
                "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "DISABLE_AUTOUPDATER": "1",
                # SessionEnd hooks get 1.5 s in all: a test worker on a busy machine may need more to start one
                "CLAUDE_CODE_SESSIONEND_HOOKS_TIMEOUT_MS": "10000", **env}
        if os.geteuid() == 0:
            full["IS_SANDBOX"] = "1"  # else Claude Code refuses bypassPermissions to root
        return subprocess.run([str(CLAUDE), "-p", prompt, "--permission-mode", "bypassPermissions", "--debug", "hooks"],
                              cwd=self.project, env=full, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=180)

    def hook_calls(self) -> list[tuple[str, int, int | None]]:
        """Each call of our hook that Claude Code's debug log tells of: (event[:tool], exit status, ms)."""
        log = (self.home / ".claude" / "debug" / "latest").read_text(errors="replace")
        return [(f"{m[1]}:{m[2]}" if m[1].endswith("ToolUse") else m[1], int(m[4]), int(m[5]) if m[5] else None)
                for m in HOOK_LINE.finditer(log)]

    def tasks_by_name(self) -> dict[str, dict[str, Any]]:
        return {t["taskName"]: t for t in (json.loads(p.read_text()) for p in self.tasks.glob("*.json"))}


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path)


@pytest.fixture
def daemon(machine: Machine, daemons: list[Daemon]) -> Daemon:
    daemons.append(started := Daemon(machine.tasks, "--lang", "en").start())
    return started


@pytest.fixture
def api_factory() -> Iterator[list[MessagesAPI]]:
    made: list[MessagesAPI] = []
    yield made
    for api in made:
        api.close()


AGENT_CALL = {"description": "Check the greeting", "prompt": AGENT_PROMPT, "subagent_type": "general-purpose",
              "run_in_background": False}
# The same work, with each of Claude Code's two todo tools.
SCRIPTS: dict[str, list[Reply]] = {
    "tasks": [("tool", "TaskCreate", {"subject": "Say hello", "description": "Greet the team"}),
              ("tool", "TaskUpdate", {"taskId": "1", "status": "in_progress"}),
              ("tool", "Bash", {"command": "echo hello", "description": "Print a greeting"}),
              ("tool", "Agent", AGENT_CALL),
              ("tool", "TaskUpdate", {"taskId": "1", "status": "completed"}),
              ("text", "Said hello.", None)],
    "todowrite": [("tool", "TodoWrite", {"todos": [{"content": "Say hello", "status": "in_progress",
                                                    "activeForm": "Saying hello"}]}),
                  ("tool", "Bash", {"command": "echo hello", "description": "Print a greeting"}),
                  ("tool", "Agent", AGENT_CALL),
                  ("tool", "TodoWrite", {"todos": [{"content": "Say hello", "status": "completed",
                                                    "activeForm": "Saying hello"}]}),
                  ("text", "Said hello.", None)],
}
# How each is switched on (tools reference: the todo tools are left out for some models unless asked for).
TOOL_ENV = {"tasks": {"CLAUDE_CODE_ENABLE_TODO_TOOLS": "1"},
            "todowrite": {"CLAUDE_CODE_ENABLE_TODO_TOOLS": "1", "CLAUDE_CODE_ENABLE_TASKS": "0"}}


@pytest.mark.parametrize("todo_tool", ["tasks", "todowrite"])
def test_a_real_claude_code_session_becomes_tasks(machine: Machine, daemon: Daemon, api_factory: list[MessagesAPI],
                                                  todo_tool: str) -> None:
    api_factory.append(api := MessagesAPI({PROMPT: SCRIPTS[todo_tool],
                                           AGENT_PROMPT: [("text", "The greeting is fine.", None)]}))
    run = machine.claude(api, PROMPT, **TOOL_ENV[todo_tool])
    assert (run.returncode, run.stdout.strip()) == (0, "Said hello."), run.stderr[-2000:]

    by_name = machine.tasks_by_name()
    assert set(by_name) == {PROMPT, "general-purpose: Check the greeting"}
    turn, agent = by_name[PROMPT], by_name["general-purpose: Check the greeting"]
    assert (turn["status"], turn["result"], [(s["name"], s["status"]) for s in turn["steps"]]) == (
        "done", "Said hello.", [("Say hello", "done")])
    assert (agent["status"], agent["result"], agent["parentTaskId"]) == ("done", "The greeting is fine.",
                                                                         turn["taskId"])

    calls = machine.hook_calls()
    assert calls and all(status == 0 for _, status, _ in calls), calls
    todo_calls = {"tasks": {"PostToolUse:TaskCreate", "PostToolUse:TaskUpdate"}, "todowrite": {"PostToolUse:TodoWrite"}}
    assert {"UserPromptSubmit", "PreToolUse:Bash", "PostToolUse:Bash", "PreToolUse:Agent", "PostToolUse:Agent",
            "SubagentStart", "SubagentStop", "Stop", "SessionEnd", *todo_calls[todo_tool]} <= {e for e, _, _ in calls}
    took = [ms for _, _, ms in calls if ms is not None]
    print(f"\n{todo_tool}: {len(calls)} hook calls as Claude Code timed them (spawn to exit): median "
          f"{statistics.median(took)} ms, max {max(took)} ms")
    state = machine.tasks / ".pulse" / "claude-code"
    assert not (state / "errors.log").exists()
    (session,) = state.glob("*.json")  # the session ended: only its turn and why are left
    assert json.loads(session.read_text()).keys() == {"turn", "ended"}

    for task_id, wanted in ((turn["taskId"], ["started", "step_done", "done"]), (agent["taskId"], ["started", "done"])):
        wait_for(lambda t=task_id, w=wanted: [k for k in kinds(machine.tasks, t) if k != "progress"] == w, 30,
                 f"{wanted} for {task_id}, have {kinds(machine.tasks, task_id)}")
    done = next(n for n in read_notifications(machine.tasks) if n["task_id"] == turn["taskId"] and n["kind"] == "done")
    assert done["text"].startswith(f'🎉 "{PROMPT}" done!') and done["text"].endswith("Result: Said hello.")


def test_an_api_error_fails_the_turn(machine: Machine, daemon: Daemon, api_factory: list[MessagesAPI]) -> None:
    api_factory.append(api := MessagesAPI({"Deploy the site": [("error", 400, "invalid_request_error")]}))
    run = machine.claude(api, "Deploy the site")
    assert run.returncode == 1 and "API Error: 400" in run.stdout + run.stderr
    (task,) = machine.tasks_by_name().values()
    assert task["taskName"] == "Deploy the site" and task["status"] == "error"
    assert "API Error: 400 stand-in says no" in task["error"]
    # Claude Code started the StopFailure hook as it exited and stopped it a moment later (status 1, its
    # write not done): the API error came from the transcript, by the SessionEnd hook it waited for.
    assert {"StopFailure", "SessionEnd"} <= {event for event, _, _ in machine.hook_calls()}
    wait_for(lambda: kinds(machine.tasks, task["taskId"]) == ["started", "failed"], 30, "started, failed")
