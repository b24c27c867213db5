"""End to end against the real thing, on a channel that edits: task-pulsed → the real OpenClaw CLI and its
Matrix plugin → a private Synapse on 127.0.0.1 → the room read back through the client-server API. The live
card is sent once and edited in place. Skipped where the parts are missing; tests/e2e/setup.sh sets them up."""

from __future__ import annotations

import html
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.conftest import Daemon, read_notifications, wait_for
from tests.e2e.conftest import OPENCLAW, e2e_env, free_port
from tests.e2e.matrix import MATRIX_READY, MATRIX_SKIP, Homeserver, is_edit, make_synapse, matrix_state

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MATRIX_READY, reason=MATRIX_SKIP),
    pytest.mark.xdist_group("e2e"),  # one worker runs the e2e lanes: one OpenClaw install (see pyproject.toml)
]


@pytest.fixture(scope="module")
def synapse(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Homeserver]:
    hs = make_synapse(tmp_path_factory.mktemp("synapse"))
    try:
        yield hs
    finally:
        hs.stop()


def test_a_task_card_is_sent_once_and_edited_in_a_matrix_room(tmp_path: Path, tasks_dir: Path,
                                                              daemons: list[Daemon], synapse: Homeserver) -> None:
    hs = synapse
    name = "E2E matrix"
    # Its config names a gateway that is not running: the daemon finds it down and the CLI delivers.
    env = e2e_env(OPENCLAW_STATE_DIR=str(matrix_state(tmp_path, hs, gateway_port=free_port())))
    d = Daemon(tasks_dir, "--openclaw", f"matrix:room:{hs.room_id}", "--openclaw-bin", str(OPENCLAW), "--lang", "en",
               "--sink-timeout", "120", env=env).start()
    daemons.append(d)
    store = TaskStore(tasks_dir)
    task = store.create(name, [f"step {i}" for i in range(1, 6)], datetime.now(UTC))
    for _ in range(4):  # an agent's pace: 5 steps a second
        time.sleep(0.2)
        store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    done_at = time.time()
    store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "shipped"), datetime.now(UTC))

    def bot_messages() -> list[dict[str, Any]]:
        time.sleep(0.5)  # one read of the room every half second is plenty: each OpenClaw call takes 10-15 s
        return hs.bot_messages()

    def final_edit(events: list[dict[str, Any]]) -> str | None:
        edits = [e for e in events if is_edit(e)]
        return edits[-1]["content"]["m.new_content"]["body"] if edits else None

    def card_now(events: list[dict[str, Any]]) -> str | None:
        """The card as the room shows it: its last edit, or the card itself (sent late, it may be final already)."""
        new = [e for e in events if not is_edit(e)]
        return final_edit(events) or (new[0]["content"].get("body") if new else None)

    def settled() -> list[dict[str, Any]] | None:
        events = bot_messages()
        pinged = any(e["content"].get("body", "").startswith(f'🎉 "{name}" done!') for e in events if not is_edit(e))
        final = card_now(events)
        return events if pinged and final is not None and final.startswith(f'🎉 "{name}" done') else None

    try:
        wait_for(settled, 240, "the done ping and the final card edit in the room")
    except AssertionError as exc:  # the log as it is now, not as it was when the wait began
        bodies = [e["content"].get("body") for e in bot_messages()]
        raise AssertionError(f"{exc}\nroom: {bodies}\ndaemon log:\n{d.log()}") from None
    wait_for(lambda: all(n["delivered_at"] for n in read_notifications(tasks_dir)), 60, "every row marked")
    events = bot_messages()  # final: each call's event is in the room before its rows are marked

    new = [e for e in events if not is_edit(e)]
    edits = [e for e in events if is_edit(e)]
    card, ping = new[0], next(e for e in new if e["content"]["body"].startswith(f'🎉 "{name}" done!'))
    rows = read_notifications(tasks_dir)
    print(f"\nMatrix lane: {len(events)} sink calls seen in the room for {len(rows)} notifications: {len(new)} new "
          f"messages, {len(edits)} edits of the card; done write → ping in the room "
          f"{ping['origin_server_ts'] / 1000 - done_at:.1f} s, → final card edit "
          f"{(edits or new)[-1]['origin_server_ts'] / 1000 - done_at:.1f} s\n"
          f"card first sent as: {card['content']['body']!r}\nfinal card: {final_edit(events)!r}\n"
          f"ping: {ping['content']['body']!r}")
    assert len(new) == 2 and ping is new[1], [e["content"].get("body") for e in new]
    assert f'"{name}"' in card["content"]["body"] and "\n✅ step 1" in card_now(events)
    assert all(e["content"]["m.relates_to"]["event_id"] == card["event_id"] for e in edits)  # only the card
    assert card_now(events).startswith(f'🎉 "{name}" done [5/5]')
    assert all(n["delivered_at"] and n["delivered_by"] in ("openclaw:cli", "openclaw:card") for n in rows)
    assert "delivering through openclaw CLI (gateway down" in d.log()


PHISH = "[Approve the release here](https://evil.example/phish)"
EXPIRED = "Session expired: [log in again](https://evil.example/login)"
_LINK = re.compile(r'<a href="([^"]*)"[^>]*>(.*?)</a>', re.S)


def hidden_links(formatted: str) -> list[tuple[str, str]]:
    """(target, label) of every link in a formatted_body whose label is not its own target: a hidden target."""
    found = []
    for href, label in _LINK.findall(formatted):
        target, shown = html.unescape(href), html.unescape(re.sub(r"<[^>]+>", "", label))
        if shown not in (target, target.removeprefix("mailto:"), target.removeprefix("http://")):
            found.append((target, shown))
    return found


def test_markdown_in_a_task_reaches_the_room_as_text(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon],
                                                    synapse: Homeserver) -> None:
    """A co-user's task whose name, step and error are Markdown links (and a room mention, a spoiler, bold): the
    real OpenClaw renders every message into `formatted_body`; no link there may hide its target behind a label,
    and the words show as they were written."""
    hs = synapse
    env = e2e_env(OPENCLAW_STATE_DIR=str(matrix_state(tmp_path, hs, gateway_port=free_port())))
    d = Daemon(tasks_dir, "--openclaw", f"matrix:room:{hs.room_id}", "--openclaw-bin", str(OPENCLAW), "--lang", "en",
               "--sink-timeout", "120", env=env).start()
    daemons.append(d)
    before = {e["event_id"] for e in hs.bot_messages()}
    store = TaskStore(tasks_dir)
    task = store.create("Deploy [prod](https://evil.example/prod) @room", [PHISH, "verify ||hidden|| **now**"],
                        datetime.now(UTC))
    store.update(task.task_id, lambda t: t.fail(datetime.now(UTC).isoformat(), EXPIRED), datetime.now(UTC))

    def ours() -> list[dict[str, Any]]:
        time.sleep(0.5)
        return [e for e in hs.bot_messages() if e["event_id"] not in before]

    def settled() -> list[dict[str, Any]] | None:
        events = ours()
        pinged = any(e["content"].get("body", "").startswith("❌") for e in events if not is_edit(e))
        return events if pinged and all(n["delivered_at"] for n in read_notifications(tasks_dir)) else None

    try:
        events = wait_for(settled, 240, "the card and the failure ping in the room")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\nroom: {[e['content'] for e in ours()]}\ndaemon log:\n{d.log()}") from None
    contents = [e["content"].get("m.new_content", e["content"]) for e in events]
    formatted = [c["formatted_body"] for c in contents if c.get("formatted_body")]
    print(f"\nMarkdown lane: {len(contents)} messages; as OpenClaw rendered them:\n" + "\n---\n".join(formatted))
    assert formatted, "OpenClaw sent no formatted_body: nothing was rendered as Markdown"
    for html_body in formatted:
        assert hidden_links(html_body) == [], html_body
        assert "data-mx-spoiler" not in html_body and "<strong>" not in html_body, html_body
    assert not any(c.get("m.mentions", {}).get("room") for c in contents)  # @room rang nobody
    shown = "\n".join(html.unescape(re.sub(r"<[^>]+>", "", f)) for f in formatted)
    assert PHISH in shown and EXPIRED in shown and "@room" in shown and "||hidden|| **now**" in shown
