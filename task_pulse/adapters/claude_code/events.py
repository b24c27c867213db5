"""What each Claude Code hook event does to the tasks of its session.

The events and their fields are those of Claude Code's hooks reference (https://code.claude.com/docs/en/hooks,
read 2026-08; docs/claude-code.md has the details): `session_id`, `hook_event_name`, `cwd`, inside a
sub-agent `agent_id` and `agent_type`, and each event's own fields.

  UserPromptSubmit    a new task, named after `prompt` (the session's previous turn still running: it
                      was interrupted, and fails saying so)
  PreToolUse          a heartbeat: the running step's message says what the call does (`tool_input`)
  PostToolUse         TodoWrite (`todos`), TaskCreate and TaskUpdate: the todo list becomes the steps;
                      Agent: a sub-agent that came back (`tool_response.status` completed) ends its task;
                      any other tool: a heartbeat
  PostToolUseFailure  a heartbeat saying the call failed (`error`); a failed Agent call fails its task
  SubagentStart       a task of the sub-agent's own (`agent_id`, `agent_type`), named after what its Agent
                      call asked, `parentTaskId` the caller's task
  SubagentStop        the sub-agent's task done, `last_assistant_message` its result
  Stop                the turn's task done, `last_assistant_message` its result
  StopFailure         the turn's task failed with the API error (`error`, `error_details`)
  SessionEnd          what the session still has running fails (`reason`; the turn with the API error
                      its transcript ends on, if any); of the session's state only the turn stays, for a
                      StopFailure that comes after it

Each handler gets a `Hook`: the event, the session's state (held under its lock, `session.py`) and the
store, whose locked atomic writes every task change goes through.
"""

from __future__ import annotations

import json
import os

from task_pulse.adapters.claude_code import text
from task_pulse.adapters.claude_code.session import MAX_AGENTS, MAX_ITEMS, MAX_PENDING
from task_pulse.errors import TaskNotFound
from task_pulse.messages import word
from task_pulse.model import parse_time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

    from task_pulse.adapters.claude_code.session import Session
    from task_pulse.config import Settings
    from task_pulse.model import Task
    from task_pulse.store import TaskStore

# A turn may think, or run one command, for minutes without a hook event (Bash allows 10 minutes):
# the tasks a hook begins count as stalled after this long, not after the 3-minute default.
STALL_SECONDS = 600
# After a tool call: the task is refreshed only if its last write is older than this (the call's
# PreToolUse wrote it just before, as a rule), so a fast tool costs one write, not two.
QUIET_SECONDS = 5.0
AGENT_TOOLS = ("Agent", "Task")  # `Task` is the Agent tool's name before Claude Code 2.1
TODO_TOOLS = ("TodoWrite", "TaskCreate", "TaskUpdate")


class Hook:
    """One event, its session and the store: the moves every handler is made of."""

    def __init__(self, store: TaskStore, session: Session, settings: Settings, event: dict[str, Any]) -> None:
        self.store, self.session, self.event = store, session, event
        self.now = settings.now()
        self.stamp = self.now.isoformat()
        self.lang, self.redact = settings.lang, settings.redact_secrets

    def field(self, name: str) -> str:
        value = self.event.get(name)
        return value if isinstance(value, str) else ""

    def mapping(self, name: str) -> dict[str, Any]:
        value = self.event.get(name)
        return value if isinstance(value, dict) else {}

    # -- tasks --------------------------------------------------------------------------------------

    def begin(self, name: str, parent: str | None = None) -> str:
        """A new task, its one step (`working`) running until a todo list gives it steps."""
        task = self.store.create(name, [word("agent_working", self.lang)], self.now, stall_seconds=STALL_SECONDS,
                                 extra={"parentTaskId": parent} if parent else None)
        self.session.opened(task.task_id)
        return task.task_id

    def change(self, task_id: str, change: Callable[[Task], bool | None], *, running_only: bool = True) -> None:
        """`change` the task under its lock (if it is still running); a task removed meanwhile is let go."""

        def apply(task: Task) -> bool | None:
            return False if running_only and task.status != "running" else change(task)

        try:
            self.store.update(task_id, apply, self.now)
        except TaskNotFound:
            self.session.closed(task_id)  # cleaned up or deleted by hand: nothing left to follow

    def heartbeat(self, task_id: str, message: str | None, quiet: bool = False) -> None:
        """Refresh the task (and set its running step's message); `quiet`: only if not written lately."""

        def touch(task: Task) -> bool:
            if quiet:
                updated = parse_time(task.updated_at)
                if updated is not None and 0 <= (self.now - updated).total_seconds() < QUIET_SECONDS:
                    return False
            return task.touch(message or None)

        self.change(task_id, touch)

    def end(self, task_id: str, *, result: str | None = None, error: str | None = None) -> None:
        """The task done (with `result`), or failed with `error`; an ended task is left as it is."""

        def finish(task: Task) -> bool:
            if error is not None:
                return task.fail(self.stamp, error)
            for step in task.steps:  # what the last tool call was is no outcome of the step (as with `next`)
                if step.status == "running":
                    step.message = step.percent = None
            return task.finish(self.stamp, result or None)

        self.change(task_id, finish)
        self.session.closed(task_id)

    def replan(self, task_id: str, plan: list[tuple[str, str]]) -> None:
        placeholder = word("agent_working", self.lang)
        self.change(task_id, lambda task: text.apply_plan(task, plan, self.stamp, placeholder))

    # -- whose event ----------------------------------------------------------------------------------

    def actor(self) -> str:
        """The task of the agent this event comes from: a sub-agent's own (begun now if its start was
        not seen), else the turn's (begun now if the session's prompt was not seen: set up mid-session)."""
        agent_id = self.field("agent_id")
        if agent_id:
            return self.session.agent_task(agent_id) or self.start_agent(agent_id)
        turn = self.session.turn
        if turn is None:
            turn = self.begin(text.session_name(self.event.get("cwd")))
            self.session.set("turn", turn)
        return turn

    def start_agent(self, agent_id: str) -> str:
        """A sub-agent's task, named after the Agent call that asked for it (the oldest waiting one of its
        type), linked to that call's task, else to the turn's."""
        agent_type = self.field("agent_type")
        pending = [p for p in self.session.get("pending", []) if isinstance(p, dict)]
        call = next((p for p in pending if p.get("type") in (agent_type, "")), None) or {}
        parent = call.get("parent") if isinstance(call.get("parent"), str) else self.session.turn
        task_id = self.begin(text.agent_name(agent_type, call.get("what"), self.redact), parent)
        self.session.add_agent(agent_id, task_id)
        if call:
            self.session.set("pending", [p for p in pending if p is not call])
            self.link_agent_call(call.get("tool"), agent_id)
        return task_id

    def link_agent_call(self, tool_use_id: Any, agent_id: str) -> None:
        if isinstance(tool_use_id, str) and tool_use_id:
            calls = {k: v for k, v in self.session.get("agentTools", {}).items() if k != tool_use_id}
            calls[tool_use_id] = agent_id
            self.session.set("agentTools", dict(list(calls.items())[-MAX_AGENTS:]))

    def drop_pending(self, tool_use_id: str) -> None:
        """An Agent call is over: if no SubagentStart took it, none will (denied, failed at once)."""
        pending = [p for p in self.session.get("pending", []) if isinstance(p, dict)]
        rest = [p for p in pending if p.get("tool") != tool_use_id]
        if len(rest) < len(pending):
            self.session.set("pending", rest)

    def rename(self, task_id: str, name: str) -> None:
        def put(task: Task) -> bool:
            if task.name == name:
                return False
            task.name = name
            return True

        self.change(task_id, put)

    def agent_of_call(self) -> str | None:
        """The task of the sub-agent this event's Agent call started, if known."""
        agent_id = self.session.get("agentTools", {}).get(self.field("tool_use_id"))
        return self.session.agent_task(agent_id) if isinstance(agent_id, str) else None

    # -- the Task tools' todo list (kept per session: a turn goes on with the list of the turn before) --

    def items(self) -> list[dict[str, str]]:
        return [i for i in self.session.get("items", []) if isinstance(i, dict) and isinstance(i.get("id"), str)]

    def item_changed(self, actor: str, item_id: str, items: list[dict[str, str]]) -> None:
        """Store the list; the item is now a step of `actor`'s task; every task showing it is redrawn."""
        self.session.set("items", items[-MAX_ITEMS:])
        plans = {k: v for k, v in self.session.get("plans", {}).items() if isinstance(v, list)}
        mine = plans.get(actor, [])
        if item_id not in mine:
            plans[actor] = [*mine, item_id]
        self.session.set("plans", plans)
        for task_id, ids in plans.items():
            if item_id in ids and task_id in self.session.open_tasks():
                shown = set(ids)
                self.replan(task_id, [(str(i.get("subject")), text.TODO_STATUS.get(i.get("status", ""), "pending"))
                                      for i in self.items() if i["id"] in shown])


# -- the handlers, one per event -------------------------------------------------------------------------

def on_prompt(h: Hook) -> None:
    previous = h.session.turn
    if previous is not None and previous in h.session.open_tasks():
        h.end(previous, error=word("agent_interrupted", h.lang))  # no Stop came: the turn was interrupted
    task_id = h.begin(text.task_name(h.event.get("prompt"), text.session_name(h.event.get("cwd")), h.redact))
    h.session.set("turn", task_id)
    h.session.drop("ended")  # a session resumed
    # The todo items still open carry over: the new task shows them (with what it adds) once the model
    # touches the list in this turn. Plans of tasks that ended are forgotten.
    open_tasks = set(h.session.open_tasks())
    plans = {k: v for k, v in h.session.get("plans", {}).items() if k in open_tasks}
    plans[task_id] = [i["id"] for i in h.items() if i.get("status") in ("pending", "in_progress")]
    h.session.set("plans", plans)


def on_pre_tool(h: Hook) -> None:
    tool = h.field("tool_name")
    task_id = h.actor()
    if tool in TODO_TOOLS:
        return  # its PostToolUse redraws the steps
    tool_input = h.mapping("tool_input")
    if tool in AGENT_TOOLS:  # remembered for the SubagentStart it leads to: its name and its caller
        subagent_type = tool_input.get("subagent_type")
        call = {"tool": h.field("tool_use_id"), "type": subagent_type if isinstance(subagent_type, str) else "",
                "what": text.short(tool_input.get("description"), text.NAME_CAP, h.redact), "parent": task_id}
        h.session.set("pending", [*h.session.get("pending", []), call][-MAX_PENDING:])
    h.heartbeat(task_id, text.tool_summary(tool, tool_input, h.event.get("cwd"), h.redact))


def on_post_tool(h: Hook) -> None:
    tool = h.field("tool_name")
    task_id = h.actor()
    tool_input, response = h.mapping("tool_input"), h.mapping("tool_response")
    if tool == "TodoWrite":
        plan = text.todo_plan(tool_input.get("todos"), h.redact)
        if plan is not None:
            h.replan(task_id, plan)
            return
    elif tool == "TaskCreate":
        task_created(h, task_id, tool_input, response)
        return
    elif tool == "TaskUpdate":
        if task_updated(h, task_id, tool_input, response):
            return
    elif tool in AGENT_TOOLS:
        agent_returned(h, tool_input, response)
    h.heartbeat(task_id, None, quiet=True)


def task_created(h: Hook, task_id: str, tool_input: dict[str, Any], response: dict[str, Any]) -> None:
    created = response.get("task") if isinstance(response.get("task"), dict) else {}
    items = h.items()
    # Claude Code numbers its tasks 1, 2, 3 …: the number, should a response ever lack it.
    item_id = str(created.get("id") or len(items) + 1)
    subject = text.short(tool_input.get("subject") or created.get("subject"), text.STEP_CAP, h.redact)
    h.item_changed(task_id, item_id, [*(i for i in items if i["id"] != item_id),
                                      {"id": item_id, "subject": subject or f"#{item_id}", "status": "pending"}])


def task_updated(h: Hook, task_id: str, tool_input: dict[str, Any], response: dict[str, Any]) -> bool:
    """One item's status or subject changed (or it was deleted). False when the call changed nothing."""
    # The model's own spelling of the id may be `id` or `task_id` (Claude Code repairs it).
    raw_id = next((tool_input[k] for k in ("taskId", "id", "task_id") if tool_input.get(k) is not None),
                  response.get("taskId"))
    if raw_id is None or response.get("success") is False:
        return False
    item_id = str(raw_id)
    items = h.items()
    known = next((i for i in items if i["id"] == item_id), None)
    # An item not seen before was made before the hooks were set up: it shows as its number.
    item = dict(known) if known else {"id": item_id, "subject": f"#{item_id}", "status": "pending"}
    status, subject = tool_input.get("status"), tool_input.get("subject")
    if isinstance(subject, str) and subject.strip():
        item["subject"] = text.short(subject, text.STEP_CAP, h.redact)
    if status in text.TODO_STATUS:
        item["status"] = status
    if status == "deleted":
        items = [i for i in items if i["id"] != item_id]
    else:
        items = [item if i is known else i for i in items] if known else [*items, item]
    h.item_changed(task_id, item_id, items)
    return True


def agent_returned(h: Hook, tool_input: dict[str, Any], response: dict[str, Any]) -> None:
    """An Agent call returned: at once for a sub-agent in the background (`async_launched`), at its end
    in the foreground (`completed`). Its `agentId` tells for sure which sub-agent the call started."""
    h.drop_pending(h.field("tool_use_id"))
    agent_id = response.get("agentId")
    if not isinstance(agent_id, str) or not agent_id:
        return
    h.link_agent_call(h.field("tool_use_id"), agent_id)
    agent_task = h.session.agent_task(agent_id)
    if agent_task is None:
        return
    # SubagentStart cannot tell which of several calls of one type it answers: the name it guessed is
    # put right (the card follows).
    kind = tool_input.get("subagent_type") or "general-purpose"
    h.rename(agent_task, text.agent_name(kind, tool_input.get("description"), h.redact))
    if response.get("status") == "completed":  # came back; SubagentStop may not have said so
        content = response.get("content")
        said = next((c.get("text") for c in content if isinstance(c, dict) and c.get("type") == "text"),
                    None) if isinstance(content, list) else None
        h.end(agent_task, result=text.short(said, text.RESULT_CAP, h.redact))


def on_tool_failure(h: Hook) -> None:
    tool = h.field("tool_name")
    task_id = h.actor()
    error = text.short(h.field("error").strip().split("\n", 1)[0], text.SUMMARY_CAP, h.redact) or "error"
    if tool in AGENT_TOOLS:
        h.drop_pending(h.field("tool_use_id"))
        if (agent_task := h.agent_of_call()) is not None:
            h.end(agent_task, error=error)
    summary = text.tool_summary(tool, h.mapping("tool_input"), h.event.get("cwd"), h.redact)
    h.heartbeat(task_id, text.short(f"{summary} ✗ {error}", text.SUMMARY_CAP, False))


def on_subagent_start(h: Hook) -> None:
    agent_id = h.field("agent_id")
    if agent_id and h.session.agent_task(agent_id) is None:
        h.start_agent(agent_id)


def on_subagent_stop(h: Hook) -> None:
    task_id = h.session.agent_task(h.field("agent_id"))
    if task_id is not None:
        h.end(task_id, result=text.short(h.event.get("last_assistant_message"), text.RESULT_CAP, h.redact))


def on_stop(h: Hook) -> None:
    if h.session.turn is not None:
        h.end(h.session.turn, result=text.short(h.event.get("last_assistant_message"), text.RESULT_CAP, h.redact))


def on_stop_failure(h: Hook) -> None:
    turn = h.session.turn
    if turn is None:
        return
    kind = h.field("error") or "error"
    detail = h.event.get("error_details") or h.event.get("last_assistant_message")
    error = text.short(f"{kind}: {detail}" if isinstance(detail, str) and detail.strip() else kind,
                       text.RESULT_CAP, h.redact)
    ended = h.session.get("ended", "")
    if not ended:
        h.end(turn, error=error)
        return

    # Claude Code does not wait for StopFailure hooks: when an API error ends a `claude -p` run, its
    # SessionEnd may fail the turn first. The API error is what the person needs to know.
    def say_why(task: Task) -> bool:
        if task.status != "error" or task.error != ended:
            return False
        task.error = error
        for step in task.steps:
            if step.status == "error" and step.message == ended:
                step.message = error
        return True

    h.change(turn, say_why, running_only=False)


def on_session_end(h: Hook) -> None:
    """What is still open fails. Of the state, only the turn and why it ended stay (a StopFailure may
    still come, see above); a session resumed goes on from there, and prune() removes it after a week."""
    reason = text.short(h.field("reason") or "other", 40, h.redact)
    ended = word("agent_session_ended", h.lang).format(reason=reason)
    turn = h.session.turn
    open_tasks = h.session.open_tasks()
    api_error = last_api_error(h.event.get("transcript_path"), h.redact) if turn in open_tasks else None
    for task_id in open_tasks:
        h.end(task_id, error=api_error if task_id == turn and api_error else ended)
    h.session.keep_only(turn=turn, ended=ended)


TRANSCRIPT_TAIL = 64 * 1024


def last_api_error(path: Any, redact_secrets: bool) -> str | None:
    """The API error that ended the session's last turn, from the end of its transcript; None if it was none.

    `claude -p` ends as soon as an API error ends its turn, and stops the StopFailure hook it started at
    its exit: seen with Claude Code 2.1.332, the hook was killed about 0.1 s after it started, before
    Python had done anything, while SessionEnd hooks are waited for. So SessionEnd looks at the last
    assistant entry of the transcript (`transcript_path`, JSON lines), which Claude Code marks
    `"isApiErrorMessage": true` with the error's type in `error` and its text as the content. That
    format is Claude Code's own, not a documented one: anything else found there gives None, and the
    task fails saying only that the session ended.
    """
    if not isinstance(path, str) or not path.endswith(".jsonl"):
        return None
    try:
        fd = os.open(os.path.expanduser(path), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.fstat(fd).st_size
        tail = os.pread(fd, TRANSCRIPT_TAIL, max(0, size - TRANSCRIPT_TAIL))
    except OSError:
        return None
    finally:
        os.close(fd)
    for line in reversed(tail.split(b"\n")):
        try:
            entry = json.loads(line)
        except (ValueError, RecursionError):
            continue
        if not isinstance(entry, dict) or entry.get("type") != "assistant":
            continue
        if entry.get("isApiErrorMessage") is not True:
            return None
        message = entry.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        said = next((b.get("text") for b in content if isinstance(b, dict) and isinstance(b.get("text"), str)),
                    "") if isinstance(content, list) else ""
        kind = entry.get("error") if isinstance(entry.get("error"), str) else "error"
        return text.short(f"{kind}: {said}" if said else kind, text.RESULT_CAP, redact_secrets)
    return None


HANDLERS: dict[str, Callable[[Hook], None]] = {
    "UserPromptSubmit": on_prompt,
    "PreToolUse": on_pre_tool,
    "PostToolUse": on_post_tool,
    "PostToolUseFailure": on_tool_failure,
    "SubagentStart": on_subagent_start,
    "SubagentStop": on_subagent_stop,
    "Stop": on_stop,
    "StopFailure": on_stop_failure,
    "SessionEnd": on_session_end,
}
EVENTS = tuple(HANDLERS)  # what setup registers
