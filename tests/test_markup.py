"""Task text is text in every chat (markup.py): Markdown in what a task says is escaped wherever the chat reads
Markdown, in the card, every notification and the digest, through both OpenClaw routes and the cron route's
drain. The real renderer (OpenClaw into a Matrix room) is in tests/e2e/test_openclaw_matrix.py."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from task_pulse.card import render_card
from task_pulse.markup import MARKDOWN, escape_markdown
from task_pulse.messages import digest, render
from task_pulse.model import task_from_dict
from task_pulse.outgoing import outgoing
from task_pulse.records import Queued
from task_pulse.store import TaskStore
from task_pulsed.differ import diff_tasks
from tests.conftest import Daemon, clean_env, read_notifications, run_tp, wait_for
from tests.standins.gateway import StandInGateway
from tests.test_card import OPENCLAW, Chat

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)
PHISH = "[Approve the release here](https://evil.example/phish)"
EXPIRED = "Session expired: [log in again](https://evil.example/login)"
# Whatever a chat's Markdown makes of an unescaped character: a link label, autolink, HTML, emphasis, code,
# strikethrough, spoiler bars, a mention, an entity.
UNESCAPED = re.compile(r"(?<!\\)(?:\\\\)*[\[\]<`*~|@]|(?<!\\)&#")
TEMPLATE_COUNT = re.compile(r"\[\d+/\d+\]")  # the card's and the digest's own "[2/5]": ours, and no link


def unescaped_markup(text: str) -> list[str]:
    return [m.group(0) for m in UNESCAPED.finditer(TEMPLATE_COUNT.sub("", text))]


def test_a_labelled_link_keeps_its_target_in_sight() -> None:
    assert escape_markdown(PHISH) == r"\[Approve the release here\](https://evil.example/phish)"
    assert escape_markdown(EXPIRED) == r"Session expired: \[log in again\](https://evil.example/login)"


@pytest.mark.parametrize("raw, out", [
    ("@room deploy", r"\@room deploy"),  # a room mention rings everyone
    ("||hidden|| text", r"\|\|hidden\|\| text"),  # a Matrix spoiler
    ("**bold** `code` ~~gone~~", r"\*\*bold\*\* \`code\` \~\~gone\~\~"),
    ("<https://evil.example|Approve>", r"\<https://evil.example|Approve>"),  # an autolink, Slack's <url|label>
    ("&#x202e;reversed", r"\&#x202e;reversed"),  # an entity is the bidi override again once decoded
    ("![img](https://evil.example/x.png)", r"!\[img\](https://evil.example/x.png)"),
    (r"a\[b](c)", r"a\\\[b\](c)"),  # a backslash of the task's own cannot undo our escape
    ("run test_file_name.py and __init__", r"run test_file_name.py and \_\_init\_\_"),  # inside words: as it is
    ("see https://x.example/_next/a_b?q=1&amp;r=2", "see https://x.example/_next/a_b?q=1&amp;r=2"),  # a URL stays one
    ("R&D 50% done, 日报 ✅", "R&D 50% done, 日报 ✅"),
])
def test_what_would_be_markup_is_escaped_and_nothing_else(raw: str, out: str) -> None:
    assert escape_markdown(raw) == out


def test_the_template_is_ours_and_the_fields_are_escaped() -> None:
    task = task_from_dict({"taskName": "Deploy [prod](https://evil.example)", "status": "error", "error": EXPIRED,
                           "steps": [{"name": PHISH, "status": "done", "message": "@room ok"},
                                     {"name": "push", "status": "error", "message": EXPIRED}]}, "t")
    notes = diff_tasks(None, task, NOW, lang="en").notifications
    assert "[Approve the release here](https://evil.example/phish)" in notes[1].text  # the outbox keeps plain text
    for note in notes:
        text = render(note.kind, note.data, "en", MARKDOWN)
        assert unescaped_markup(text) == [], text
        assert text.replace("\\", "") == note.text  # the same words once the chat has read its escapes
    card = render_card(task, NOW, "en", markup=MARKDOWN)
    assert unescaped_markup(card) == [] and r"\[log in again\](https://evil.example/login)" in card
    lines = digest([(n.kind, n.data) for n in notes], "en", MARKDOWN)
    assert unescaped_markup(lines) == [] and "\\[" in lines


def test_a_stored_row_goes_out_escaped_for_markdown_and_as_it_is_for_plain_text() -> None:
    task = task_from_dict({"taskName": "T", "status": "running", "steps": [{"name": PHISH, "status": "running"}]}, "t")
    note = diff_tasks(None, task, NOW, lang="en").notifications[0]
    row = Queued(1, note.key, "t", note.task_name, note.kind, "now", note.text, note.data, 0)
    assert outgoing(row) is row
    assert unescaped_markup(outgoing(row, MARKDOWN).text) == []


def markdown_task(store: TaskStore) -> str:
    task = store.create("Release", [PHISH, "verify"], datetime.now(UTC))
    store.update(task.task_id, lambda t: t.fail(datetime.now(UTC).isoformat(), EXPIRED), datetime.now(UTC))
    return task.task_id


def test_the_openclaw_cli_route_gets_escaped_text(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    chat = Chat(tmp_path)
    daemons.append(Daemon(tasks_dir, "--openclaw", "matrix:room:!r:x", "--openclaw-bin", str(OPENCLAW),
                          "--openclaw-gateway", "none", "--lang", "en", env=chat.env()).start())
    markdown_task(TaskStore(tasks_dir))
    wait_for(lambda: len(read_notifications(tasks_dir)) == 2 and all(n["delivered_at"] for n in
                                                                     read_notifications(tasks_dir)), 30, "delivered")
    texts = [c["text"] for c in chat.delivered()]
    assert texts and all(unescaped_markup(t) == [] for t in texts), texts
    assert any(r"\[log in again\](https://evil.example/login)" in t for t in texts)
    assert PHISH in read_notifications(tasks_dir)[0]["text"]  # stored as plain text, escaped on its way out


def test_the_gateway_route_gets_escaped_text(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    gateway = StandInGateway("t").start()
    try:
        d = Daemon(tasks_dir, "--openclaw", "telegram:1", "--openclaw-bin", str(OPENCLAW), "--lang", "en",
                   env=clean_env(OPENCLAW_GATEWAY_URL=gateway.url, OPENCLAW_GATEWAY_TOKEN="t",
                                 STANDIN_LOG=str(tmp_path / "cli.jsonl"))).start()
        daemons.append(d)
        markdown_task(TaskStore(tasks_dir))
        wait_for(lambda: len(gateway.requests) >= 2, 30, "the card and the failure ping through the gateway")
        texts = [r["params"].get("message") or r["params"].get("params", {}).get("message") for r in gateway.requests
                 if r["method"] in ("send", "message.action")]
        assert texts and all(t and unescaped_markup(t) == [] for t in texts), texts
        assert not (tmp_path / "cli.jsonl").exists()  # all of it through the gateway
    finally:
        gateway.stop()


def test_exec_and_webhook_text_is_plain_unless_asked(tmp_path: Path, tasks_dir: Path,
                                                      daemons: list[Daemon]) -> None:
    out = tmp_path / "sent.jsonl"
    sender = tmp_path / "send"
    sender.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" | python3 -c 'import json,sys; "
                      f"open(\"{out}\",\"a\").write(json.dumps(sys.stdin.read())+\"\\n\")'\n")
    sender.chmod(0o755)
    d = Daemon(tasks_dir, "--exec", str(sender), "--style", "stream", "--lang", "en").start()
    daemons.append(d)
    markdown_task(TaskStore(tasks_dir))
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 2, 30, "two messages")
    assert any(PHISH in json.loads(line) for line in out.read_text().splitlines())
    d.stop()
    out.unlink()
    other = tmp_path / "other"
    other.mkdir()
    daemons.append(Daemon(other, "--exec", str(sender), "--style", "stream", "--lang", "en", "--markup",
                          "markdown").start())
    markdown_task(TaskStore(other))
    wait_for(lambda: out.exists() and len(out.read_text().splitlines()) == 2, 30, "two messages")
    assert all(unescaped_markup(json.loads(line)) == [] for line in out.read_text().splitlines())


def test_the_cron_routes_drain_escapes_and_a_plain_drain_does_not(tasks_dir: Path, daemon: Daemon) -> None:
    markdown_task(TaskStore(tasks_dir))
    wait_for(lambda: len(read_notifications(tasks_dir)) == 2, 30, "queued")
    # The first drain takes everything: print the same rows both ways from copies of the state db.
    plain = run_tp(tasks_dir, "--lang", "en", "drain", "--digest", "--markup", "plain")
    assert EXPIRED in plain.stdout
    markdown_task(TaskStore(tasks_dir))
    wait_for(lambda: len([n for n in read_notifications(tasks_dir) if not n["delivered_at"]]) == 2, 30, "queued")
    escaped = run_tp(tasks_dir, "--lang", "en", "drain", "--digest", "--markup", "markdown")
    assert escaped.stdout.strip() and unescaped_markup(escaped.stdout) == [], escaped.stdout


def test_a_shared_rows_text_of_an_unknown_kind_is_cleaned_and_never_starts_like_an_option() -> None:
    row = Queued(1, "k", "t", "T\x1b[2J", "newer_kind", "now", "--output=/tmp/x\n\x1b]0;t\x07two\u202e\nthree\nfour",
                 {"lang": "xx", "name": 5}, 0, host="far")
    out = outgoing(row, recheck=True)
    assert out.text == "📝 --output=/tmp/x\ntwo\nthree" and out.task_name == "T"
