"""The board in a real headless browser: Debian's Chromium, driven over the DevTools protocol (tests/chromium.py).

The page renders the tasks, follows a write live without a reload, draws a task name's past runs, shows
hostile text as text, and breaks none of its own Content-Security-Policy. Skipped, saying why, where no
Chromium is installed (`.ci/run` installs Debian's `chromium`). With TASK_PULSE_BOARD_SCREENSHOT=PATH the
screenshot for the README is written there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from task_pulse.store import TaskStore
from tests.boardproc import Board
from tests.chromium import Chromium, chromium_path
from tests.conftest import Daemon, clean_env, run_tp, wait_for
from tests.test_board import HOSTILE_NAME, iso, past_run, start_board, write_file

pytestmark = pytest.mark.skipif(chromium_path() is None,
                                reason="needs Chromium: apt-get install chromium (.ci/run installs it)")


@pytest.fixture
def browser() -> Iterator[Chromium]:
    chromium = Chromium()
    try:
        yield chromium
    finally:
        chromium.close()


@pytest.fixture
def boards() -> Iterator[list[Board]]:
    started: list[Board] = []
    yield started
    for board in started:
        board.kill()


def a_fleet(tasks_dir: Path) -> dict[str, str]:
    """What a person running agents sees on a morning: a nightly job with a month of history running, a
    report half way, a stalled upload, a failed deploy, finished work, and one hostile name."""
    now = datetime.now(UTC)
    store = TaskStore(tasks_dir)
    lengths = [(300 + 17 * (n % 5), 900 + 41 * (n % 7), 240 + 13 * (n % 3)) for n in range(12)]
    for n, seconds in enumerate(lengths):
        run = past_run("Nightly backup", now - timedelta(days=12 - n, hours=3), seconds)
        run["steps"][0]["name"], run["steps"][1]["name"], run["steps"][2]["name"] = "dump", "compress", "upload"
        if n == 7:
            run["status"], run["steps"][2]["status"], run["error"] = "error", "error", "disk full"
        write_file(tasks_dir, f"backup-{n:02d}", run)
    wait_for(lambda: len(json.loads(run_tp(tasks_dir, "history", "Nightly backup", "--json").stdout)["runs"]) == 12,
             30, "twelve runs of the nightly backup")
    write_file(tasks_dir, "backup-12", {
        "taskName": "Nightly backup", "status": "running", "startedAt": iso(now - timedelta(seconds=400)),
        "updatedAt": iso(now),
        "steps": [{"name": "dump", "status": "done", "startedAt": iso(now - timedelta(seconds=400)),
                   "finishedAt": iso(now - timedelta(seconds=90)), "message": "12.4 GB"},
                  {"name": "compress", "status": "running", "startedAt": iso(now - timedelta(seconds=90)),
                   "message": "zstd -19", "percent": 10},
                  {"name": "upload", "status": "pending"}]})
    report = store.create("Daily report", ["fetch", "filter", "write", "publish"], now).task_id
    run_tp(tasks_dir, "next", report, "fetched 25 items")
    run_tp(tasks_dir, "heartbeat", report, "--percent", "60", "filtering")
    write_file(tasks_dir, "upload-assets", {
        "taskName": "Upload assets", "status": "running", "stallSeconds": 120,
        "startedAt": iso(now - timedelta(minutes=14)), "updatedAt": iso(now - timedelta(minutes=6)),
        "steps": [{"name": "resize", "status": "done"}, {"name": "upload", "status": "running",
                                                         "message": "42/300 files"}]})
    deploy = store.create("Deploy web", ["build", "test", "push"], now).task_id
    run_tp(tasks_dir, "next", deploy, "built")
    run_tp(tasks_dir, "error", deploy, "push: HTTP 502 from registry")
    for name in ("Weekly digest", "Invoice run"):
        done = store.create(name, ["collect", "send"], now).task_id
        run_tp(tasks_dir, "next", done)
        run_tp(tasks_dir, "done", done, "sent")
    hostile = store.create(HOSTILE_NAME, ["one"], now).task_id
    return {"report": report, "backup": "backup-12", "deploy": deploy, "hostile": hostile}


def test_the_page_renders_follows_a_write_live_and_draws_the_history(tasks_dir: Path, daemons: list[Daemon],
                                                                     browser: Chromium, boards: list[Board]) -> None:
    english = clean_env(TASK_PULSE_LANG="en", HOME=str(tasks_dir.parent))  # the page says ~/tasks
    daemons.append(Daemon(tasks_dir, env=english).start())
    ids = a_fleet(tasks_dir)
    board = start_board(boards, tasks_dir, env=english)
    assert board.info["where"] == "~/tasks"
    page = browser.page(board.url)
    shown = len(board.tasks())
    page.wait(f"document.querySelectorAll('#tasks .task').length === {shown}", what=f"{shown} rows")
    rows = page.js("[...document.querySelectorAll('#tasks .task')].map(r => [r.dataset.key, r.className, "
                   "r.querySelector('.name').textContent])")
    by_key = {key: (cls, name) for key, cls, name in rows}
    assert "state-stalled" in by_key["upload-assets"][0] and "state-error" in by_key[ids["deploy"]][0]
    assert page.js("document.querySelector('#attention .task').dataset.key") == "upload-assets"  # stalled first
    assert page.js("document.getElementById('finished-box').open") is False  # finished ones folded
    # Hostile text is text: no element was made from it.
    assert by_key[ids["hostile"]][1].startswith("<img src=x onerror=alert(1)> deploy ghp_***")
    assert page.js("document.querySelectorAll('#tasks img, #tasks script').length") == 0

    # Live: a write reaches the open page without a reload (the marker set now would not survive one).
    page.js("window.__sameDocument = 'yes'; document.body.dataset.loads = performance.getEntriesByType("
            "'navigation').length")
    before = page.js("window.taskPulseBoard.updates")
    run_tp(tasks_dir, "next", ids["report"], "filtered")
    page.wait(f"document.querySelector('[data-key=\"{ids['report']}\"] .progress').textContent === '2/4'", 10,
              "the report's row at 2/4")
    assert page.js("window.__sameDocument") == "yes" and page.js("window.taskPulseBoard.updates") > before
    assert page.js("performance.getEntriesByType('navigation').length") == 1

    # The detail of the nightly backup: its card, and its past runs drawn, one bar per run.
    page.js(f"document.querySelector('[data-key=\"{ids['backup']}\"]').click()")
    page.wait("document.querySelectorAll('#chart svg .run-bar').length === 12", 10, "twelve bars")
    assert page.js("document.querySelectorAll('#chart svg .run-bar.error').length") == 1
    assert page.js("document.querySelectorAll('#chart svg .run-bar rect.s1').length") == 12  # compress, every run
    assert "compress" in page.js("document.getElementById('detail-card').textContent")
    assert page.js("document.querySelectorAll('#notes tr').length") >= 1
    assert page.problems() == []  # no script error, no CSP refusal

    if shot := os.environ.get("TASK_PULSE_BOARD_SCREENSHOT"):
        page.js("document.getElementById('finished-box').open = true")
        page.wait("document.getElementById('finished').offsetHeight > 0")
        page.screenshot(Path(shot))
