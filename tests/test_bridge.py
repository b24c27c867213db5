"""OpenClaw's background runs become tasks (daemon/bridge.py, task_pulse/adapters/openclaw.py): the real daemon
on the stand-in gateway replaying the ledger's shapes as OpenClaw 2026.9.6 pushes them (event `task`,
`{"action": "upserted", "task": TaskSummary}`; `tasks.list`; `tasks.get`)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from task_pulse.adapters.openclaw import LedgerFilter, activity, task_id, task_name
from task_pulse.store import TaskStore
from tests.conftest import Daemon, kinds, wait_for
from tests.standins.gateway import StandInGateway
from tests.test_gateway import STANDIN_CLI, TOKEN, gateway_daemon

NOW_MS = int(time.time() * 1000)


@pytest.fixture
def gateway() -> Iterator[StandInGateway]:
    gw = StandInGateway(TOKEN).start()
    yield gw
    gw.stop()


def subagent(status: str = "running", **more: Any) -> dict[str, Any]:
    return {"id": "t-sub-1", "kind": "subagent_run", "runtime": "subagent", "status": status,
            "title": "Review the diff", "agentId": "main", "createdAt": NOW_MS, "startedAt": NOW_MS,
            "execution": {"state": "running" if status == "running" else "finished"}, **more}


def cron_run(status: str = "running", **more: Any) -> dict[str, Any]:
    return {"id": "t-cron-1", "taskId": "t-cron-1", "kind": "automation_run", "runtime": "cron", "status": status,
            "title": "Nightly digest", "agentId": "main", "runId": "cron:job-1:1", "sourceId": "job-1",
            "createdAt": NOW_MS, "startedAt": NOW_MS, "progressSummary": "Running automation.",
            "deliveryStatus": "pending", **more}


def task_file(tasks_dir: Path, ledger_id: str) -> Any:
    path = tasks_dir / f"openclaw-{ledger_id}.json"
    return TaskStore(tasks_dir).load(f"openclaw-{ledger_id}") if path.exists() else None


def bridge_daemon(tmp_path: Path, tasks_dir: Path, gateway: StandInGateway, *args: str) -> Daemon:
    d = gateway_daemon(tasks_dir, gateway, tmp_path / "cli.jsonl", "--pace", "off", *args).start()
    wait_for(lambda: "delivering through gateway" in d.log(), 20, "the gateway route")
    return d


def test_what_a_ledger_record_is_called_and_says() -> None:
    assert task_id(subagent()) == "openclaw-t-sub-1" and task_id({"id": "../x"}) is None
    assert task_name(subagent()) == "sub-agent: Review the diff"
    assert task_name(cron_run()) == "cron: Nightly digest"
    assert activity(subagent(execution={"state": "running", "currentTool": "Read"}, toolUseCount=3)) == \
        "Read · 3 tool calls"
    assert activity(subagent(execution={"state": "waiting", "wait": {"kind": "approval"}})) == "waiting: approval"
    assert LedgerFilter(kinds=frozenset({"cron"})).wants(cron_run())
    assert not LedgerFilter(kinds=frozenset({"cron"})).wants(subagent())
    assert not LedgerFilter(agents=frozenset({"ops"})).wants(subagent())


def test_a_sub_agent_run_with_its_tool_calls_becomes_a_task_with_a_card(tmp_path: Path, tasks_dir: Path,
                                                                         gateway: StandInGateway,
                                                                         daemons: list[Daemon]) -> None:
    d = bridge_daemon(tmp_path, tasks_dir, gateway)
    daemons.append(d)
    gateway.upsert(subagent())
    wait_for(lambda: task_file(tasks_dir, "t-sub-1"), 20, "the run's task")
    for count, tool in ((1, "Read"), (2, "Grep"), (3, "Edit")):
        gateway.upsert(subagent(execution={"state": "running", "currentTool": tool}, toolUseCount=count))
    wait_for(lambda: (task_file(tasks_dir, "t-sub-1").running_step.message or "").startswith("Edit"), 20,
             "the latest tool call as a heartbeat")
    gateway.upsert(subagent("completed", terminalSummary="Two nits; otherwise fine."))
    wait_for(lambda: task_file(tasks_dir, "t-sub-1").status == "done", 20, "the task done")
    task = task_file(tasks_dir, "t-sub-1")
    assert task.name == "sub-agent: Review the diff" and task.result == "Two nits; otherwise fine."
    assert task.extra["openclaw"]["runtime"] == "subagent"
    wait_for(lambda: kinds(tasks_dir, "openclaw-t-sub-1")[-1:] == ["done"], 20, "the done notification")
    assert kinds(tasks_dir, "openclaw-t-sub-1").count("started") == 1
    wait_for(lambda: any("done!" in m.text and "Review the diff" in m.text for m in gateway.sends()), 20,
             "the done ping in the chat")
    gateway.upsert(subagent("completed", terminalSummary="Two nits; otherwise fine."))  # told again: nothing new
    gateway.upsert({**subagent(), "id": "t-sub-2"})  # handled after it (one queue): once it is there, so was that
    wait_for(lambda: task_file(tasks_dir, "t-sub-2"), 20, "the next run's task")
    assert kinds(tasks_dir, "openclaw-t-sub-1").count("done") == 1


def test_a_cron_run_that_announces_has_a_deliver_step(tmp_path: Path, tasks_dir: Path, gateway: StandInGateway,
                                                      daemons: list[Daemon]) -> None:
    daemons.append(bridge_daemon(tmp_path, tasks_dir, gateway))
    gateway.upsert(cron_run())
    wait_for(lambda: task_file(tasks_dir, "t-cron-1"), 20, "the run's task")
    assert [s.name for s in task_file(tasks_dir, "t-cron-1").steps] == ["run", "deliver"]
    gateway.upsert(cron_run("completed", terminalSummary="digest ok"))
    wait_for(lambda: task_file(tasks_dir, "t-cron-1").running_step is not None
             and task_file(tasks_dir, "t-cron-1").running_step.name == "deliver", 20, "delivering")
    gateway.upsert(cron_run("completed", terminalSummary="digest ok", deliveryStatus="delivered"))
    wait_for(lambda: task_file(tasks_dir, "t-cron-1").status == "done", 20, "done once delivered")
    assert [s.status for s in task_file(tasks_dir, "t-cron-1").steps] == ["done", "done"]


def test_runs_of_other_kinds_are_left_alone(tmp_path: Path, tasks_dir: Path, gateway: StandInGateway,
                                            daemons: list[Daemon]) -> None:
    daemons.append(bridge_daemon(tmp_path, tasks_dir, gateway, "--openclaw-tasks-kinds", "cron"))
    gateway.upsert(subagent())
    gateway.upsert(cron_run())
    wait_for(lambda: task_file(tasks_dir, "t-cron-1"), 20, "the cron run's task")
    assert task_file(tasks_dir, "t-sub-1") is None


def test_a_gateway_restart_mid_run_neither_loses_nor_repeats_it(tmp_path: Path, tasks_dir: Path,
                                                                 gateway: StandInGateway,
                                                                 daemons: list[Daemon]) -> None:
    """The run ends while the connection is down (its event is never pushed to us): the listing taken on
    reconnecting ends the task, once; a run the ledger no longer knows fails as lost."""
    daemons.append(bridge_daemon(tmp_path, tasks_dir, gateway))
    gateway.upsert(subagent())
    gateway.upsert(cron_run())
    wait_for(lambda: task_file(tasks_dir, "t-sub-1") and task_file(tasks_dir, "t-cron-1"), 20, "both tasks")
    gateway.restart(down_for=2.0)
    gateway.upsert(subagent("completed", terminalSummary="finished while you were away"), tell=False)
    gateway.forget("t-cron-1")  # gone from the ledger (OpenClaw lost it)
    wait_for(lambda: task_file(tasks_dir, "t-sub-1").status == "done", 30, "done from the listing")
    wait_for(lambda: task_file(tasks_dir, "t-cron-1").status == "error", 30, "the lost run failed")
    assert "not in OpenClaw's ledger" in task_file(tasks_dir, "t-cron-1").error
    wait_for(lambda: kinds(tasks_dir, "openclaw-t-sub-1")[-1:] == ["done"], 20, "the done notification")
    assert kinds(tasks_dir, "openclaw-t-sub-1").count("started") == 1
    assert kinds(tasks_dir, "openclaw-t-sub-1").count("done") == 1


def test_a_daemon_restart_tells_what_ended_while_it_was_down_and_nothing_older(tmp_path: Path, tasks_dir: Path,
                                                                               gateway: StandInGateway,
                                                                               daemons: list[Daemon]) -> None:
    gateway.upsert({**cron_run("completed", terminalSummary="long ago", deliveryStatus="not_applicable"),
                    "id": "t-old", "updatedAt": NOW_MS - 3_600_000}, tell=False)
    d = bridge_daemon(tmp_path, tasks_dir, gateway)
    daemons.append(d)
    gateway.upsert(subagent())
    wait_for(lambda: task_file(tasks_dir, "t-sub-1"), 20, "the running run's task")
    d.kill()
    gateway.upsert(subagent("completed", terminalSummary="done while the daemon was down"), tell=False)
    d2 = bridge_daemon(tmp_path, tasks_dir, gateway)
    daemons.append(d2)
    wait_for(lambda: task_file(tasks_dir, "t-sub-1").status == "done", 30, "done from the listing")
    assert task_file(tasks_dir, "t-old") is None  # ended before task-pulse looked: history, not news
    wait_for(lambda: kinds(tasks_dir, "openclaw-t-sub-1")[-1:] == ["done"], 20, "the done notification")
    assert kinds(tasks_dir, "openclaw-t-sub-1").count("done") == 1


def test_no_bridge_when_turned_off_or_without_the_gateway(tmp_path: Path, tasks_dir: Path, gateway: StandInGateway,
                                                         daemons: list[Daemon]) -> None:
    """Turned off, the daemon's connection does not even ask to read the ledger; without a gateway there is no
    connection to hear it on."""
    daemons.append(bridge_daemon(tmp_path, tasks_dir, gateway, "--no-openclaw-tasks"))
    assert gateway.scopes == [["operator.write"]] and not (tasks_dir / ".pulse" / "openclaw-ledger.json").exists()
    other = tmp_path / "other"
    other.mkdir()
    d = Daemon(other, "--openclaw", "telegram:1", "--openclaw-bin", str(STANDIN_CLI), "--openclaw-gateway",
               "none").start()
    daemons.append(d)
    assert "(no gateway)" in d.log() and gateway.connections == 1
    assert not (other / ".pulse" / "openclaw-ledger.json").exists()
