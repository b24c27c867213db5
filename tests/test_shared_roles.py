"""The shared PostgreSQL outbox no longer trusts every row, against a real server (tests/postgres.py).

Roles (docs/shared-database.md): a host's role, made with `task-pulse shared grant NAME --host`, sees and
writes its own host's rows only (row-level security); a deliverer's (`--deliverer`) reads every host's and
writes only how they were delivered. Whatever a row holds, what leaves is cleaned and masked again; a message
id never becomes an option word; a malformed row is skipped with one line, never jamming delivery or `drain`.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from task_pulse.store import TaskStore
from tests.conftest import BIN, Daemon, clean_env, read_notifications, wait_for
from tests.test_shared import host_daemon, shared_rows, shared_snapshot

pytestmark = pytest.mark.xdist_group("postgresql")
_names = itertools.count()


def sql(url: str, statement: str, *params: object) -> list[tuple[Any, ...]]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params or None)
        return cur.fetchall() if cur.description else []


def as_role(url: str, role: str) -> str:
    """The same database, logged in as `role` (the tests' server trusts local logins)."""
    return url.replace("postgresql://postgres@", f"postgresql://{role}@", 1)


def tp(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "task-pulse"), *args], capture_output=True, text=True, env=clean_env(**env),
                          timeout=60)


@pytest.fixture
def roles(pg_url: str) -> Iterator[dict[str, str]]:
    """Two hosts' roles and a deliverer's, made by the database's owner: name -> URL. Dropped after."""
    base = f"tp{os.getpid()}_{next(_names)}"
    names = {"alpha": f"{base}_alpha", "beta": f"{base}_beta", "courier": f"{base}_courier"}
    if not pg_url.startswith("postgresql://postgres@"):
        pytest.skip("logs in as roles of its own: needs the tests' own server (tests/postgres.py)")
    for name in names.values():
        sql(pg_url, f'CREATE ROLE "{name}" LOGIN')
    try:
        for key, name in names.items():
            made = tp("shared", "grant", name, "--deliverer" if key == "courier" else "--host", "--state", pg_url)
            assert made.returncode == 0, made.stderr
        yield {key: as_role(pg_url, name) for key, name in names.items()} | {f"{k}-name": n for k, n in names.items()}
    finally:
        for name in names.values():
            sql(pg_url, f'DROP OWNED BY "{name}"')
            sql(pg_url, f'DROP ROLE "{name}"')


def refused(url: str, statement: str, *params: object) -> str:
    """The server's refusal of `statement` as that role (an update that changes no row counts as one)."""
    import psycopg

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            cur = conn.execute(statement, params or None)
            return "" if cur.rowcount else "no row it may change"
    except psycopg.Error as exc:
        return str(exc).splitlines()[0]


def test_a_hosts_role_sees_and_writes_its_own_rows_only(tmp_path: Path, pg_url: str, roles: dict[str, str],
                                                          daemons: list[Daemon]) -> None:
    names = {h: roles[f"{h}-name"] for h in ("alpha", "beta")}
    for host in ("alpha", "beta"):
        daemons.append(host_daemon(tmp_path / host, roles[host], names[host]).start())
        TaskStore(tmp_path / host).create(f"{host} job sk-proj-abcdefghijklmnopqrstuvwxyz0123", ["a"],
                                          datetime.now(UTC), task_id="job")
    wait_for(lambda: len(shared_rows(pg_url)) == 2 and shared_snapshot(pg_url, names["beta"], "job"), 30,
             "both hosts' rows")
    alpha = roles["alpha"]
    # It reads its own tasks only: `status --all-hosts` with its URL shows alpha's.
    mine = tp("status", "--all-hosts", "--json", "--state", alpha)
    assert mine.returncode == 0, mine.stderr
    assert [r["host"] for r in json.loads(mine.stdout)] == [names["alpha"]]
    everyone = tp("status", "--all-hosts", "--json", "--state", roles["courier"])
    assert sorted(r["host"] for r in json.loads(everyone.stdout)) == sorted(names.values())
    assert "abcdefghijklmnop" not in everyone.stdout  # snapshots in the shared db are masked
    beta = names["beta"]
    # It cannot mark another host's alerts delivered, nor its own (that is a deliverer's), nor put words in
    # another host's mouth, nor touch the cards.
    assert refused(alpha, "UPDATE task_pulse.notifications SET delivered_at = 'x' WHERE host = %s", beta)
    assert "permission denied" in refused(alpha, "UPDATE task_pulse.notifications SET delivered_at = 'x'")
    assert "row-level security" in refused(
        alpha, "INSERT INTO task_pulse.notifications (host, key, task_id, task_name, kind, created_at, text, data) "
               "VALUES (%s, 'k', 'job', 'n', 'failed', 'now', 'pay 1 BTC', '{}')", beta)
    assert "permission denied" in refused(alpha, "UPDATE task_pulse.cards SET message_id = '--config=/tmp/x'")
    assert "permission denied" in refused(
        alpha, "INSERT INTO task_pulse.notifications (host, key, task_id, task_name, kind, created_at, text, data, "
               "delivered_at) VALUES (%s, 'k2', 'job', 'n', 'failed', 'now', 't', '{}', 'x')", names["alpha"])
    # The deliverer reads every host's, changes how they were delivered and nothing else.
    assert "permission denied" in refused(roles["courier"], "UPDATE task_pulse.notifications SET text = 'x'")
    assert "permission denied" in refused(
        roles["courier"], "INSERT INTO task_pulse.notifications (host, key, task_id, task_name, kind, created_at, "
                          "text, data) VALUES ('x', 'k', 't', 'n', 'failed', 'now', 't', '{}')")
    drained = tp("drain", "--json", "--state", roles["courier"])
    assert drained.returncode == 0, drained.stderr
    assert sorted(json.loads(line)["host"] for line in drained.stdout.splitlines()) == sorted(names.values())


def test_a_hosts_role_under_another_host_name_is_refused_at_start(tmp_path: Path, roles: dict[str, str]) -> None:
    d = host_daemon(tmp_path / "alpha", roles["alpha"], "not-its-name")
    d.start(wait_ready=False)
    assert d.proc is not None and d.proc.wait(30) == 2
    errors = [line for line in d.log().splitlines() if " ERROR " in line]
    assert len(errors) == 1 and f"--host-name {roles['alpha-name']}" in errors[0], d.log()


def insert_row(url: str, host: str, key: str, **fields: Any) -> None:
    row = {"task_id": "t", "task_name": "T", "kind": "progress", "created_at": "2026-11-25T10:00:00+00:00",
           "text": "ok", "data": "{}", **fields}
    sql(url, "INSERT INTO task_pulse.notifications (host, key, task_id, task_name, kind, created_at, text, data) "
             "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", host, key, row["task_id"], row["task_name"], row["kind"],
        row["created_at"], row["text"], row["data"])


def test_a_malformed_row_is_skipped_with_one_line_and_jams_nothing(tmp_path: Path, pg_url: str,
                                                                    daemons: list[Daemon]) -> None:
    """`data = 'not json'` in one row jammed every host's couriers and crashed `drain --state` on every run."""
    first = host_daemon(tmp_path / "alpha", pg_url, "alpha").start()  # sets the schema up
    assert first.stop() == 0
    insert_row(pg_url, "mallory", "bad", data="not json")
    insert_row(pg_url, "mallory", "list", data="[1, 2]")
    insert_row(pg_url, "beta", "fine", data=json.dumps({"name": "Fine", "step": "s", "message": "ok", "done": 0,
                                                         "total": 1, "lang": "en"}))
    drained = tp("drain", "--json", "--state", pg_url)
    assert drained.returncode == 0, drained.stderr
    assert [json.loads(line)["key"] for line in drained.stdout.splitlines()] == ["fine"]
    notes = [line for line in drained.stderr.splitlines() if "skipped" in line]
    assert len(notes) == 2 and "its data is not JSON" in notes[0] and "mallory" in notes[0], drained.stderr
    again = tp("drain", "--state", pg_url)
    assert (again.returncode, again.stdout, again.stderr) == (0, "", "")  # set aside: never claimed again
    rows = {r["key"]: r for r in shared_rows(pg_url)}
    assert rows["bad"]["delivered_by"] == "malformed" and rows["fine"]["delivered_by"] == "drain"
    # A daemon's couriers go on past one too.
    insert_row(pg_url, "mallory", "bad-2", data="not json")
    insert_row(pg_url, "beta", "fine-2", data=json.dumps({"name": "Fine", "step": "s", "message": "two",
                                                           "done": 0, "total": 1, "lang": "en"}))
    sent = tmp_path / "sent.jsonl"
    sink = tmp_path / "send"
    sink.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> {sent}\n")
    sink.chmod(0o755)
    d = host_daemon(tmp_path / "gamma", pg_url, "gamma", "--exec", str(sink), "--style", "stream").start()
    daemons.append(d)
    wait_for(lambda: sent.exists() and "two" in sent.read_text(), 30, "the good row delivered past the bad one")
    assert len([line for line in d.log().splitlines() if "bad-2" in line or "skipped" in line]) == 1, d.log()
    assert "Traceback" not in d.log()


def test_what_a_row_says_is_cleaned_again_and_a_message_id_never_becomes_an_option(
        tmp_path: Path, pg_url: str, daemons: list[Daemon]) -> None:
    """A row from the shared db reached an exec sink as stored: a newline, ESC and U+202E, an argv word that
    started with `--output=`; a card's message id rewritten into `--config=/tmp/x` became an option word of
    `--exec-edit "… {id}"`."""
    args_log = tmp_path / "argv.jsonl"
    sender = tmp_path / "send"
    sender.write_text(f"#!/usr/bin/env python3\nimport json, sys\nopen({str(args_log)!r}, 'a').write("
                      "json.dumps(sys.argv[1:]) + '\\n')\nprint(json.dumps({'messageId': '42'}))\n")
    sender.chmod(0o755)
    d = host_daemon(tmp_path / "alpha", pg_url, "alpha", "--exec", f"{sender} send", "--exec-edit",
                    f"{sender} edit --id {{id}} --text", "--lang", "en").start()
    daemons.append(d)
    hostile = "--output=/tmp/pwned\n\x1b[31mred\u202e ghp_0123456789abcdefghijABCDEFGHIJ012345"
    insert_row(pg_url, "beta", "k1", kind="failed", task_name=hostile, text=hostile,
               data=json.dumps({"name": hostile, "error": hostile, "step": hostile, "done": 0, "total": 1}))

    def calls() -> list[list[str]]:
        return [json.loads(line) for line in args_log.read_text().splitlines()] if args_log.exists() else []

    wait_for(lambda: calls(), 30, "the row sent")
    text = calls()[0][-1]
    assert not text.startswith("-") and "\x1b" not in text and "\u202e" not in text, text
    assert len(text.splitlines()) <= 3 and "0123456789abcdefghij" not in text
    # A card whose message id someone rewrote: never passed on, a new card instead.
    store = TaskStore(tmp_path / "alpha")
    task_id = store.create("Carded", ["a", "b"], datetime.now(UTC)).task_id
    wait_for(lambda: sql(pg_url, "SELECT 1 FROM task_pulse.cards WHERE task_id = %s", task_id), 30, "its card")
    sql(pg_url, "UPDATE task_pulse.cards SET message_id = '--config=/tmp/x' WHERE task_id = %s", task_id)
    store.update(task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    wait_for(lambda: len(calls()) >= 3, 30, "the next change delivered")
    assert not any("--config=/tmp/x" in word for call in calls() for word in call), calls()
    assert "is not one a chat gives" in d.log()


def test_the_shared_db_gets_masked_snapshots_not_the_files_text(tmp_path: Path, pg_url: str,
                                                                 daemons: list[Daemon]) -> None:
    daemons.append(host_daemon(tmp_path / "alpha", pg_url, "alpha").start())
    path = tmp_path / "alpha" / "raw.json"
    stamp = datetime.now(UTC).isoformat()
    path.write_text(json.dumps({"taskName": "deploy", "status": "running", "startedAt": stamp, "updatedAt": stamp,
                                "notes": "x" * 100_000, "steps": [{"name": "push", "status": "running",
                                                                   "message": "DB_PASSWORD=hunter2"}]}))
    snapshot = wait_for(lambda: shared_snapshot(pg_url, "alpha", "raw"), 30, "its snapshot")
    assert "hunter2" not in snapshot and "notes" not in snapshot and len(snapshot) < 1000
    assert read_notifications(tmp_path / "alpha")


def test_a_flood_on_a_host_reaches_the_shared_db_summed_up(tmp_path: Path, pg_url: str,
                                                           daemons: list[Daemon]) -> None:
    """What a flood window holds is told by its summary in the shared db too, not copied there one by one."""
    tasks = tmp_path / "alpha"
    daemons.append(host_daemon(tasks, pg_url, "alpha", "--news-burst", "2", "--news-window", "2").start())
    stamp = datetime.now(UTC).isoformat()
    for i in range(10):
        (tasks / f"flood-{i}.json").write_text(json.dumps(
            {"taskName": f"flood {i}", "status": "running", "stallSeconds": 1, "startedAt": stamp, "updatedAt": stamp,
             "steps": [{"name": "a", "status": "running"}]}))

    def settled() -> list[dict[str, Any]] | None:
        local = read_notifications(tasks)
        done = len([n for n in local if n["task_id"].startswith("flood-")]) == 20 and all(
            n["delivered_by"] for n in local)
        return shared_rows(pg_url) if done else None

    rows = wait_for(settled, 60, "every notification forwarded or summed up")
    one_by_one = [r for r in rows if r["task_id"].startswith("flood-")]
    assert len(one_by_one) <= 4 and [r for r in rows if r["task_id"] == ".flooded"], rows
