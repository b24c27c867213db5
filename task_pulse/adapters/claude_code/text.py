"""What a person reads of a Claude Code session: pure functions of its hook events' fields.

The fields are the ones Claude Code's hooks reference documents (https://code.claude.com/docs/en/hooks,
read 2026-08; see docs/claude-code.md): `prompt` of UserPromptSubmit, `tool_name` and `tool_input` of
PreToolUse (per tool: Bash `command`/`description`, Read/Write/Edit `file_path`, Glob/Grep `pattern`,
WebFetch `url`, WebSearch `query`, Agent `description`/`subagent_type`; MCP tools are
`mcp__<server>__<tool>`), the todo list of TodoWrite (`todos`: `content`, `status`) and of the Task tools
that replace it (TaskCreate `subject`, TaskUpdate `status`, with `deleted` removing an item).

Everything that reaches a task file is cleaned, masked (`messages.redact`) and capped here: prompts
and commands are where people paste tokens.
"""

from __future__ import annotations

import os

from task_pulse.messages import FIELD_CAP, chat_text
from task_pulse.model import MAX_STEPS, Step

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from task_pulse.model import Task

NAME_CAP = 60  # a task's name: the prompt's first words
STEP_CAP = 120  # a step's name: one todo item
SUMMARY_CAP = 120  # a heartbeat's message: one tool call
RESULT_CAP = FIELD_CAP  # a result or an error: what the chat shows of it anyway
_READ = 2000  # how much of a text is read at all: a prompt may be a whole pasted file

# Claude Code's todo statuses (TodoWrite and the Task tools) as step statuses.
TODO_STATUS = {"pending": "pending", "in_progress": "running", "completed": "done"}


def _masked(value: Any, redact_secrets: bool) -> str:
    """One clean line, secrets masked, whitespace runs made one space."""
    if not isinstance(value, str):
        return ""
    return " ".join(chat_text(value[:_READ], _READ + 1, redact_secrets).split())


def _cut(text: str, cap: int) -> str:
    """At most `cap` characters, cut after a word when one ends in the last third (… marks a cut)."""
    if len(text) <= cap:
        return text
    cut = text[: cap - 1]
    space = cut.rfind(" ")
    if space >= cap * 2 // 3:
        cut = cut[:space]
    return cut.rstrip(" ,.;:-") + "…"


def short(value: Any, cap: int, redact_secrets: bool = True) -> str:
    """`value` as a short chat-safe text: masked, one line, cut at a word."""
    return _cut(_masked(value, redact_secrets), cap)


def task_name(prompt: Any, fallback: str, redact_secrets: bool = True) -> str:
    """A turn's task name: the prompt's first words, so a person knows which request it is."""
    return short(prompt, NAME_CAP, redact_secrets) or fallback


def session_name(cwd: Any) -> str:
    """The name of a task for a session whose prompt was not seen (set up mid-session): its project."""
    base = os.path.basename(cwd.rstrip("/")) if isinstance(cwd, str) else ""
    return f"Claude Code: {short(base, NAME_CAP)}" if base else "Claude Code"


def agent_name(agent_type: Any, description: Any, redact_secrets: bool = True) -> str:
    """A sub-agent's task name: its type and what it was asked to do ("Explore: find the API routes")."""
    kind = short(agent_type, 40, redact_secrets)
    what = short(description, NAME_CAP, redact_secrets)
    return f"{kind}: {what}" if kind and what else kind or what or "sub-agent"


# What says most about a call of each built-in tool, best first.
_DETAIL_KEYS: dict[str, tuple[str, ...]] = {
    "Bash": ("description", "command"),
    "PowerShell": ("description", "command"),
    "Read": ("file_path",),
    "Write": ("file_path",),
    "Edit": ("file_path",),
    "MultiEdit": ("file_path",),
    "NotebookEdit": ("notebook_path",),
    "Glob": ("pattern",),
    "Grep": ("pattern",),
    "WebFetch": ("url",),
    "WebSearch": ("query",),
    "Agent": ("description", "subagent_type"),
    "Task": ("description", "subagent_type"),  # the Agent tool's name before Claude Code 2.1
    "Skill": ("skill", "command"),
}
# Any other tool (MCP tools, new ones): the first of these it has. Never its content or free text.
_OTHER_KEYS = ("description", "command", "file_path", "path", "url", "query", "pattern", "name", "title")
_PATH_KEYS = frozenset(("file_path", "notebook_path", "path"))


def tool_label(tool_name: str) -> str:
    """`mcp__github__create_issue` → `github.create_issue`; built-in tools keep their names."""
    if tool_name.startswith("mcp__"):
        server, _, tool = tool_name[len("mcp__"):].partition("__")
        return f"{server}.{tool}" if tool else server
    return tool_name


def _shown_path(path: str, cwd: Any) -> str:
    """A path inside the project as a relative one: `src/app.py`, not the whole home directory."""
    if isinstance(cwd, str) and cwd and path.startswith(cwd.rstrip("/") + "/"):
        return path[len(cwd.rstrip("/")) + 1:]
    return path


def tool_summary(tool_name: Any, tool_input: Any, cwd: Any = None, redact_secrets: bool = True) -> str:
    """One short line for a tool call: `Bash: Run test suite`, `Edit: src/app.py`, `github.create_issue`."""
    if not isinstance(tool_name, str) or not tool_name:
        return ""
    fields = tool_input if isinstance(tool_input, dict) else {}
    detail = ""
    for key in _DETAIL_KEYS.get(tool_name, _OTHER_KEYS):
        value = fields.get(key)
        if isinstance(value, str) and value.strip():
            lines = value.strip().splitlines()
            detail = lines[0] + (" …" if len(lines) > 1 else "")  # a heredoc's first line says what it is
            if key in _PATH_KEYS:
                detail = _shown_path(detail, cwd)
            break
    label = tool_label(tool_name)
    return short(f"{label}: {detail}" if detail else label, SUMMARY_CAP, redact_secrets)


# -- todo lists as steps ------------------------------------------------------------------------------

def todo_plan(todos: Any, redact_secrets: bool = True) -> list[tuple[str, str]] | None:
    """TodoWrite's `todos` (`content`, `status`) as (step name, step status); None when it is no list."""
    if not isinstance(todos, list):
        return None
    plan = []
    for item in todos:
        if not isinstance(item, dict):
            continue
        name = short(item.get("content") or item.get("subject"), STEP_CAP, redact_secrets)
        if name:
            plan.append((name, TODO_STATUS.get(item.get("status"), "pending")))
    return plan[:MAX_STEPS]


def apply_plan(task: Task, plan: list[tuple[str, str]], now: str, placeholder: str) -> bool:
    """Make `task`'s steps the plan, each (name, status); a step that stays keeps its times and fields.

    The k-th step of a name is the k-th step of that name before (as the daemon matches them), so an
    item inserted or removed does not make its neighbours new. An empty plan is the one `placeholder`
    step, running. False when nothing changed (then nothing is written).
    """
    if not plan:
        plan = [(placeholder, "running")]
    before: dict[str, list[Step]] = {}
    for step in task.steps:
        before.setdefault(step.name, []).append(step)
    count: dict[str, int] = {}
    steps = []
    for name, status in plan[:MAX_STEPS]:
        k = count.get(name, 0)
        count[name] = k + 1
        earlier = before.get(name, ())
        steps.append(_step(earlier[k] if k < len(earlier) else None, name, status, now))
    if steps == task.steps:
        return False
    task.steps = steps
    return True


def _step(prior: Step | None, name: str, status: str, now: str) -> Step:
    if prior is not None and prior.status == status:
        return prior
    step: Step = prior.copy() if prior is not None else Step(name)
    step.status = status
    if status == "pending":
        step.started_at = step.finished_at = step.message = step.percent = None
    elif status == "running":
        step.started_at, step.finished_at = step.started_at or now, None
    else:  # done: what a heartbeat said while it ran was work in progress, not its outcome (as `next`)
        step.finished_at, step.message, step.percent = now, None, None
    return step
