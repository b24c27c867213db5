"""Hostile input: generated (hypothesis) and a fixed corpus of nasty files, against the real daemon.

The daemon never dies, never modifies or deletes these files, and reports each one once. Whatever
reaches the outbox is chat-safe: no control characters or terminal escapes, capped, secrets masked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from task_pulse.masking import mask, redact, without_invisible
from task_pulse.messages import FIELD_CAP, status_view, task_duration
from task_pulse.model import TaskFormatError, parse_task, task_from_dict
from task_pulsed.differ import UNREADABLE_SUMMARY_ID, diff_tasks, invalid_notification
from tests.conftest import Daemon, read_notifications, run_tp, wait_for

NOW = datetime(2026, 11, 24, 10, tzinfo=UTC)
UNSAFE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")  # \n separates lines
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20)


def assert_chat_safe(text: str) -> None:
    assert not UNSAFE.search(text), repr(text)
    assert "\x1b" not in text
    lines = text.split("\n")
    assert 1 <= len(lines) <= 3
    assert all(len(line) <= 3 * FIELD_CAP + 40 for line in lines)


# -- generated ------------------------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000))
def test_any_bytes_parse_or_give_a_reason(data: bytes) -> None:
    try:
        parse_task(data, "x")
    except TaskFormatError as exc:
        assert str(exc) and "\n" not in str(exc)


json_text = st.recursive(
    st.one_of(st.just("null"), st.just("true"), st.just("NaN"), st.just("-Infinity"), st.just("1e999"),
              st.just("-0.0"), st.just('"99999-12-31T23:59:59+23:59"'), st.just('"0000-00-00"'), st.just('"\\udfff"'),
              st.integers(min_value=-10**6, max_value=10**6).map(str), st.integers(1, 6000).map(lambda n: "7" * n),
              st.floats(allow_nan=False, allow_infinity=False).map(repr)),
    lambda inner: st.one_of(st.lists(inner, max_size=4).map(lambda xs: "[" + ",".join(xs) + "]"),
                            st.lists(st.tuples(st.sampled_from(['"taskName"', '"status"', '"steps"', '"rev"',
                                                                '"stallSeconds"', '"updatedAt"', '"x"']), inner),
                                     max_size=5).map(lambda kv: "{" + ",".join(f"{k}:{v}" for k, v in kv) + "}")),
    max_leaves=12)


@settings(max_examples=400, deadline=None)
@given(json_text, st.sampled_from(["running", "done", "error"]))
def test_any_json_parses_into_a_task_that_writes_back_or_gives_a_reason(value: str, status: str) -> None:
    """Huge ints, odd floats, surrogates and far dates, anywhere in a task: a Task that round-trips, or a reason."""
    for doc in (value, f'{{"taskName": "t", "status": "{status}", "steps": [], "extra": {value}}}',
                f'{{"taskName": "t", "status": "{status}", "steps": [{{"name": "a", "message": {value}}}],'
                f' "updatedAt": {value}, "stallSeconds": {value}}}'):
        try:
            task = parse_task(doc, "x")
        except TaskFormatError as exc:
            assert str(exc) and "\n" not in str(exc)
            continue
        assert parse_task(task.to_json(), "x").to_dict() == task.to_dict()  # what was read writes back
        status_view([("x", task)], datetime.now(UTC), 180)
        task_duration(task, datetime.now(UTC))


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["taskName", "status", "steps", "rev", "stallSeconds", "startedAt",
                                        "updatedAt", "finishedAt", "error", "result", "taskId", "x"]),
                       json_values, max_size=10))
def test_wrong_types_in_any_field_never_crash(raw: dict[str, Any]) -> None:
    with contextlib.suppress(TaskFormatError):
        task_from_dict(raw, "x")


text_with_nasties = st.lists(st.sampled_from(
    list("ab 中文{}%$`;|") + ["\x1b[31m", "\x1b]0;pwn\x07", "\x07", "\x00", "\u202e", "\r\n", "\t", "\x9b"]),
    max_size=120).map("".join)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(name=text_with_nasties, message=text_with_nasties, step=text_with_nasties, result=text_with_nasties,
       error=text_with_nasties, end=st.sampled_from(["running", "done", "error"]))
def test_every_notification_is_chat_safe(name: str, message: str, step: str, result: str, error: str,
                                         end: str) -> None:
    raw = {"taskName": name or "n", "status": end, "result": result, "error": error, "steps": [
        {"name": step or "s", "status": "done", "message": message},
        {"name": step or "s", "status": "running" if end == "running" else end, "message": message}]}
    task = task_from_dict(raw, "t")
    for n in diff_tasks(None, task, NOW).notifications:
        assert_chat_safe(n.text)
        for value in n.data.values():
            if isinstance(value, str):
                assert not UNSAFE.search(value) and "\n" not in value and len(value) <= FIELD_CAP


# -- secrets --------------------------------------------------------------------------------------------

SECRETS = [  # (text, what stays, what must go)
    ("sk-proj-abcdefghijklmnopqrstuvwxyz012345", "sk-proj-***", "abcdefghijklmnopqrstuvwxyz012345"),
    ("sk-ant-api03-AAAAbbbbCCCCddddEEEE", "sk-ant-***", "AAAAbbbbCCCCddddEEEE"),
    ("ghp_0123456789abcdefghijABCDEFGHIJ012345", "ghp_***", "0123456789abcdefghijABCDEFGHIJ012345"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_pat_***", "11ABCDEFG0123456789_abcdefghijklmnop"),
    ("xoxb-1234567890-abcdefghijkl", "xoxb-***", "1234567890-abcdefghijkl"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.payload.sig", "Bearer ***", "eyJhbGciOiJIUzI1NiJ9"),
    ("https://api.example.com/v1?user=bot&password=hunter2&x=1", "password=***&x=1", "hunter2"),
    ("https://bot:s3cretpass@example.com/hook", "https://bot:***@example.com/hook", "s3cretpass"),
    ("bot 123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0 ok", "123456789:***", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"),
    ("key AKIAIOSFODNN7EXAMPLE", "AKIA***", "IOSFODNN7EXAMPLE"),
    # shapes the attack review found missing
    ("GET https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0/sendMessage",
     "/bot123456789:***/sendMessage", "AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"),
    ("DB_PASSWORD=hunter2 ./migrate", "DB_PASSWORD=***", "hunter2"),
    ("GITHUB_TOKEN=gho_notyetmasked42 make", "GITHUB_TOKEN=***", "gho_notyetmasked42"),
    ("export AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "AWS_SECRET_ACCESS_KEY=***",
     "wJalrXUtnFEMI"),
    ("mysql --password=hunter2 -u root", "--password=***", "hunter2"),
    ("password: hunter2", "password: ***", "hunter2"),
    # an assignment inside another's value: the first name is not a secret's, the second is
    ("Error: password=hunter2", "Error: password=***", "hunter2"),
    ("failed: DB_PASSWORD=hunter2", "failed: DB_PASSWORD=***", "hunter2"),
    ("x=y=token: abc123", "token: ***", "abc123"),
    ('{"api_key": "abc123def456"}', '"api_key": "***"', "abc123def456"),
    ("Authorization: Basic dXNlcjpodW50ZXIy", "Basic ***", "dXNlcjpodW50ZXIy"),
    ("redis://:s3cretpw@cache:6379/0", "redis://:***@cache:6379/0", "s3cretpw"),
    ("postgres://app:p@ss@word@db/prod", "postgres://app:***@db/prod", "ss@word"),
    ("ghp\u200b_0123456789abcdefghijABCDEFGHIJ012345", "ghp_***", "0123456789abcdefghij"),
    ("sk-\u00adproj-abcdefghijklmnopqrstuvwxyz012345", "sk-proj-***", "abcdefghijklmnop"),
    ("ghp_0123456789\u200dabcdefghijABCDEFGHIJ012345", "ghp_***", "abcdefghijABCDEFGHIJ"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEAx8Yq\n-----END RSA PRIVATE KEY-----",
     "-----BEGIN RSA PRIVATE KEY-----***", "MIIEowIBAAKCAQEAx8Yq"),
    # the second review's shapes: token prefixes
    ("auth eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQs",
     "auth eyJ***", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQs"),
    ("maps key AIzaSyA-1234567890abcdefghijklmnopqrstu in use", "AIza***", "SyA-1234567890abcdefghijklmnopqrstu"),
    ("oauth ya29.a0AfH6SMBx3kLQ-abcdefghijklmnopqrstuvwxyz012", "ya29.***", "a0AfH6SMBx3kLQ"),
    ("stripe sk_live_51HabcdefghijklmnopQRSTUV", "sk_live_***", "51HabcdefghijklmnopQRSTUV"),
    ("restricted rk_live_51HabcdefghijklmnopQRSTUV", "rk_live_***", "51HabcdefghijklmnopQRSTUV"),
    ("slack app xapp-1-A0123456789-1234567890123-abcdef0123456789", "xapp-***", "A0123456789-1234567890123"),
    ("slack refresh xoxe-1-My0xLTEtMTIzNDU2Nzg5MA", "xoxe-***", "My0xLTEtMTIzNDU2Nzg5MA"),
    ("rotating xoxe.xoxp-1-Mi0yLTEyMzQ1Njc4OTAx", "xoxe.xoxp-***", "Mi0yLTEyMzQ1Njc4OTAx"),
    ("gitlab glpat-aBcDeFgHiJkLmNoPqRsTu", "glpat-***", "aBcDeFgHiJkLmNoPqRsTu"),
    ("hub hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH", "hf_***", "aBcDeFgHiJkLmNoPqRsTuVwXyZ"),
    ("npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 publish", "npm_***", "aBcDeFgHiJkLmNoPqRsTuVwXyZ"),
    ("twine pypi-AgEIcHlwaS5vcmcCJDBhYmNkZWZnLWhpamstbG1uby1wcXJzLXR1dnd4eXo", "pypi-***",
     "AgEIcHlwaS5vcmcCJDBhYmNkZWZn"),
    ("mail SG.aBcDeFgHiJkLmNoPqRsTuV.wXyZaBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgHiJkLmNo", "SG.***",
     "aBcDeFgHiJkLmNoPqRsTuV"),
    ("sts ASIAIOSFODNN7EXAMPLE temporary", "ASIA***", "IOSFODNN7EXAMPLE"),
    # secrets in URLs
    ("posting to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
     "hooks.slack.com/services/***", "XXXXXXXXXXXXXXXXXXXXXXXX"),
    ("https://discord.com/api/webhooks/123456789012345678/aBcDeFgHiJkLmNoPqRsTuVwXyZ-0123456789_abcdef",
     "webhooks/123456789012345678/***", "aBcDeFgHiJkLmNoPqRsTuVwXyZ"),
    ("DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AbCdEf0123456789+/==;EndpointSuffix=core.windows.net",
     "AccountKey=***;", "AbCdEf0123456789"),
    ("GET https://acct.blob.core.windows.net/c/f?sv=2022-11-02&se=2026&sp=r&sig=AbCd%2BEfGh0123%3D",
     "sig=***", "AbCd%2BEfGh0123"),
    # names, options and headers
    ("curl -H 'Cookie: session=9f8e7d6c5b4a3f2e1d0c; theme=dark' https://x", "Cookie: ***", "9f8e7d6c5b4a"),
    ("PGPASSWORD=Zx9kq2Lm7 psql -h db", "PGPASSWORD=***", "Zx9kq2Lm7"),
    ("SECRET_KEY=django-insecure-abc123 ./manage.py", "SECRET_KEY=***", "django-insecure-abc123"),
    ("export STRIPE_KEY=abc123xyz", "STRIPE_KEY=***", "abc123xyz"),
    ("mysql --password hunter2 -h db", "--password ***", "hunter2"),
    ("mysql -u root -phunter2 shop", "-p***", "hunter2"),
    ("curl -u admin:hunter2 https://api.example.com", "-u admin:***", "hunter2"),
    # key blocks
    ("-----BEGIN PGP PRIVATE KEY BLOCK----- Version: GnuPG v2 lQOYBF0cJXEBCADAbCdEf",
     "-----BEGIN PGP PRIVATE KEY BLOCK-----***", "lQOYBF0cJXEBCADAbCdEf"),
    ("…continued: yMUXXvVjSxZ8c0lYJAbCdEfGhIjKlMn== -----END RSA PRIVATE KEY-----",  # a key's second half
     "*** -----END RSA PRIVATE KEY-----", "yMUXXvVjSxZ8c0lYJ"),
    # tokens split by invisible characters outside the first list
    ("ghp_0123456789\ufe0fabcdefghijABCDEFGHIJ012345", "ghp_***", "abcdefghijABCDEFGHIJ"),
    ("ghp_0123456789\U000e0020abcdefghijABCDEFGHIJ012345", "ghp_***", "abcdefghijABCDEFGHIJ"),
    ("ghp_0123456789\u3164abcdefghijABCDEFGHIJ012345", "ghp_***", "abcdefghijABCDEFGHIJ"),
    ("sk-proj-abcdefghij\u034fklmnopqrstuvwxyz0123", "sk-proj-***", "klmnopqrstuvwxyz0123"),
]


@pytest.mark.parametrize("raw, kept, secret", SECRETS)
def test_common_secrets_are_masked(raw: str, kept: str, secret: str) -> None:
    out = redact(raw)
    assert kept in out and secret not in out


def test_redaction_reaches_text_and_data_and_can_be_turned_off() -> None:
    raw = {"taskName": "deploy", "status": "error", "error": "auth failed for sk-proj-abcdefghijklmnopqrstuvwxyz01",
           "steps": [{"name": "push", "status": "error", "message": "token ghp_0123456789abcdefghijABCDEFGHIJ01"}]}
    task = task_from_dict(raw, "t")
    notes = diff_tasks(None, task, NOW).notifications
    blob = json.dumps([(n.text, n.data) for n in notes], ensure_ascii=False)
    assert "abcdefghijklmnopqrstuvwxyz01" not in blob and "0123456789abcdefghij" not in blob
    assert "sk-proj-***" in blob
    plain = diff_tasks(None, task, NOW, redact_secrets=False).notifications
    assert "sk-proj-abcdefghijklmnopqrstuvwxyz01" in json.dumps([n.text for n in plain])
    bad = invalid_notification("f", "f.json", "password=hunter2 in ?password=hunter2", "d")
    assert "hunter2" not in bad.text


# -- the fixed corpus, against the real daemon ----------------------------------------------------------


def valid_task(name: str) -> bytes:
    return json.dumps({"taskName": name, "status": "running", "steps": [{"name": "a", "status": "running"}]}).encode()


def wrong_type_variants() -> dict[str, bytes]:
    base = {"taskName": "T", "status": "running", "steps": [{"name": "a", "status": "running", "percent": 5}],
            "rev": 1, "stallSeconds": 60, "startedAt": "2026-11-24T09:00:00+00:00"}
    broken = {"status": 7, "steps": "a,b", "rev": "1", "stallSeconds": "x", "startedAt": 5, "taskId": ["x"],
              "taskName": {"x": 1}}
    out = {f"wrong-{k}.json": json.dumps({**base, k: v}).encode() for k, v in broken.items()}
    out["wrong-step.json"] = json.dumps({**base, "steps": [3]}).encode()
    out["wrong-percent.json"] = json.dumps({**base, "steps": [{"name": "a", "status": "running", "percent": "x"}]}
                                           ).encode()
    out["wrong-stepstatus.json"] = json.dumps({**base, "steps": [{"name": "a", "status": "maybe"}]}).encode()
    return out


def fingerprint(path: Path) -> tuple[object, ...]:
    st_ = path.lstat()
    content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() and not path.is_symlink() \
        and st_.st_size < 1 << 20 else None
    return st_.st_mode, st_.st_size, st_.st_mtime_ns, content


def test_a_corpus_of_hostile_files(tmp_path: Path, tasks_dir: Path, daemons: list[Daemon]) -> None:
    d = Daemon(tasks_dir, "--rescan-interval", "1", "--flood-window", "3").start()
    daemons.append(d)
    outside = tmp_path / "outside.json"
    outside.write_bytes(valid_task("outside"))
    corpus: dict[str, bytes] = {
        "random.json": os.urandom(4096),
        "latin1.json": '{"taskName": "café", "status": "running", "steps": []}'.encode("latin-1"),
        "nested.json": b"[" * 100_000,
        "empty.json": b"",
        "notobject.json": b"[1, 2, 3]",
        "surrogate.json": b'{"taskName": "bad \\ud800", "status": "running", "steps": []}',
        "hugestall.json": b'{"taskName": "x", "status": "running", "steps": [], "stallSeconds": 1e12}',
        # Past Python's 4,300-digit int limit: a ValueError, not a JSONDecodeError, to a careless reader
        "hugeint.json": b'{"taskName": "x", "status": "running", "steps": [], "n": ' + b"9" * 5001 + b"}",
        "inf.json": b'{"taskName": "x", "status": "running", "steps": [], "n": 1e999}',
        "nan.json": b'{"taskName": "x", "status": "running", "steps": [], "n": NaN}',
        # one write that would otherwise announce 5,000 steps (and cost every other task its latency)
        "manysteps.json": json.dumps({"taskName": "x", "status": "running",
                                      "steps": [{"name": f"s{i}", "status": "done"} for i in range(5000)]}).encode(),
        **wrong_type_variants(),
    }
    for name, data in corpus.items():
        (tasks_dir / name).write_bytes(data)
    with open(tasks_dir / "huge.json", "wb") as fh:  # 50 MB, over the 1 MB cap: refused without reading
        fh.truncate(50 * 1024 * 1024)
    os.mkfifo(tasks_dir / "fifo.json")  # opening it for reading would block a careless reader forever
    (tasks_dir / "link.json").symlink_to(outside)
    (tasks_dir / "new\nline.json").write_bytes(valid_task("line break in the file name"))
    (tasks_dir / "year-one.json").write_bytes(json.dumps(  # valid, with a date at the calendar's edge
        {"taskName": "ancient", "status": "running", "updatedAt": "0001-01-01T00:00:00",
         "steps": [{"name": "a", "status": "running"}]}).encode())
    bad = [*corpus, "huge.json", "fifo.json", "link.json"]
    before = {name: fingerprint(tasks_dir / name) for name in bad}
    outside_before = fingerprint(outside)
    for i in range(50):  # deleted between the event and the read
        ghost = tasks_dir / f"ghost-{i}.json"
        ghost.write_bytes(b"{broken")
        ghost.unlink()

    def invalid_files() -> list[str]:  # each file's own notice, told or summed up
        return [n["data"]["file"] for n in read_notifications(tasks_dir)
                if n["kind"] == "invalid" and n["task_id"] != UNREADABLE_SUMMARY_ID]

    def summaries() -> list[dict[str, Any]]:
        return [n for n in read_notifications(tasks_dir) if n["task_id"] == UNREADABLE_SUMMARY_ID]

    wait_for(lambda: set(bad) <= set(invalid_files()), 30, f"an invalid notice for each of {len(bad)} files")
    # Flood control: 5 told one by one per 3 s window, the rest in one message when the window ends
    # (one window, unless a loaded machine spreads the 24 files over more).
    told = [n for n in read_notifications(tasks_dir) if n["kind"] == "invalid" and n["delivered_at"] is None]
    windows = summaries()
    one_by_one = [n["data"]["file"] for n in told if n["task_id"] != UNREADABLE_SUMMARY_ID]
    summed_up = [f for s in windows for f in s["data"]["files"]]
    assert windows and len(one_by_one) <= 5 * (len(windows) + 1)
    reported_once = one_by_one + summed_up
    assert len(reported_once) == len(set(reported_once)) and set(bad) <= set(reported_once)
    assert windows[0]["text"].startswith(f"⚠️ 任务文件无法读取: {len(windows[0]['data']['files'])}个文件: ")
    wait_for(lambda: {"new\nline", "year-one"} <= {n["task_id"] for n in read_notifications(tasks_dir)}, 30,
             "the newline task and the year-one task")
    scans = d.log().count("scan:")
    wait_for(lambda: d.log().count("scan:") >= scans + 2, 30, "two more rescans")  # must not report anything again
    reported = invalid_files()
    assert sorted(f for f in reported if not f.startswith("ghost-")) == sorted(bad)  # each exactly once
    assert len(summaries()) == len(windows)
    assert {name: fingerprint(tasks_dir / name) for name in bad} == before  # nothing modified or deleted
    assert fingerprint(outside) == outside_before  # the symlink's target was never touched
    reasons = {n["data"]["file"]: n["data"]["reason"] for n in read_notifications(tasks_dir) if n["kind"] == "invalid"}
    assert "symlink" in reasons["link.json"] and "regular file" in reasons["fifo.json"]
    assert "too large" in reasons["huge.json"] and "nested too deeply" in reasons["nested.json"]
    assert "status must be one of" in reasons["wrong-status.json"]
    assert "surrogate" in reasons["surrogate.json"] and "ten years" in reasons["hugestall.json"]
    assert reasons["hugeint.json"] == "a number of 5001 digits (at most 100)"
    assert "out of range" in reasons["inf.json"] and "NaN is not JSON" in reasons["nan.json"]
    assert reasons["manysteps.json"] == "5000 steps (at most 1000)"
    for verb in (["status"], ["status", "--json"], ["cleanup", "--dry-run"]):  # the readers cope with all of it
        proc = run_tp(tasks_dir, *verb)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    for n in read_notifications(tasks_dir):
        assert_chat_safe(n["text"])
    task_id = run_tp(tasks_dir, "create", "still watching", "a").stdout.strip()
    wait_for(lambda: any(n["task_id"] == task_id for n in read_notifications(tasks_dir)), 30, "a normal task")
    assert d.alive() and "Traceback" not in d.log()
    assert d.stop() == 0
    again = Daemon(tasks_dir).start()  # a restart reads every file again: no crash, no repeat
    daemons.append(again)
    assert again.alive() and sorted(f for f in invalid_files() if not f.startswith("ghost-")) == sorted(bad)
    assert len(summaries()) == len(windows)
    print(f"\nhostile corpus: {len(bad)} bad files, each reported once, none touched")


def test_secrets_do_not_reach_the_outbox_unless_asked(tasks_dir: Path, daemons: list[Daemon]) -> None:
    secret = "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"
    daemons.append(Daemon(tasks_dir).start())
    task_id = run_tp(tasks_dir, "create", "deploy", "push").stdout.strip()
    run_tp(tasks_dir, "error", task_id, f"push failed: key {secret} rejected")
    wait_for(lambda: [n["kind"] for n in read_notifications(tasks_dir)] == ["started", "failed"], 30, "failed")
    drained = run_tp(tasks_dir, "drain", "--json").stdout
    assert "sk-proj-***" in drained and secret not in drained
    assert secret not in json.dumps(read_notifications(tasks_dir))
    daemons[-1].stop()
    other = tasks_dir.parent / "plain"
    other.mkdir()
    daemons.append(Daemon(other, "--no-redact").start())
    task_id = run_tp(other, "create", "deploy", "push").stdout.strip()
    run_tp(other, "error", task_id, f"key {secret}")
    wait_for(lambda: len(read_notifications(other)) == 2, 30, "failed")
    assert secret in read_notifications(other)[1]["text"]


ORDINARY = [
    "auth: ok", "passport: E1234567", "compass=north", "tokens: 1200 used", "👨\u200d👩\u200d👧 family", "bypass=1",
    "a=b&c=d", "Basic configuration done", "token refreshed", "Digest computed", "pass_rate=98%", "token_count: 12345",
    "auth_method=oauth", "می\u200cخواهم",
    # what agents' progress lines look like, near every new rule
    "⚠️ disk 91% full", "❤️ thanks", "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f report",
    "ᠮᠣᠩᠭᠣᠯ\u180b",
    "docker run -u 1000:1000 builder", "sort_key=created_at", "cache-key: v2", "primary key (id) added",
    "mysql -h db -P 3306 -e 'select 1'", "mkdir -p build && cd build", "ssh -p 2222 deploy@host",
    "commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904 pushed",
    "image sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae",
    "uuid 123e4567-e89b-12d3-a456-426614174000 created", "eyes on the dashboard", "signature: verified",
    "cookie banner shown", "passed 120 of 120 tests", "used 12,345 tokens (max_tokens=4096)",
    "uploaded to s3://reports/2026-11-25/daily.pdf", "https://github.com/org/repo/pull/42 merged",
    "SG.1 and SG.2 regions", "xai models compared", "skipping glibc-2.36 rebuild", "hf_transfer enabled",
    "step 3/5: compiling 1,024 files", "-----BEGIN CERTIFICATE----- checked", "user --user=admin logged in",
    "the secret ingredient is love",
]


@pytest.mark.parametrize("text", ORDINARY)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert redact(text) == text


# Pieces every secret pattern is made of, and near misses, for texts that cross the first look's edge.
_PIECES = ["sk-", "sk-ant-", "SK-", "ghp_", "gho_", "github_pat_", "xoxb-", "AKIA", "akia", "12345678", "123456789:",
           "Bearer ", "bearer\t", "Authorization: ", "Basic ", "://", ":", "@", "=", "password", "PASS", "pwd", "token",
           "Secret", "api_key", "-KEY", "-----BEGIN RSA PRIVATE KEY-----", "-----END", "_", "-", " ", "\n", "x", "Z",
           "0", "aAbB0123456789zZ_-", "\u200b", "'", '"', "eyJ", ".", "AIza", "ya29.", "sk_live_", "xapp-", "xoxe.",
           "glpat-", "hf_", "npm_", "pypi-", "SG.", "ASIA", "hooks.slack.com/services/", "discord.com/api/webhooks/1/",
           "Cookie: ", ";", "sig", "AccountKey", "PGPASSWORD", "_KEY", "mysql ", " -p", "-u ", "--user ", "sshpass ",
           "--password ", "PRIVATE KEY BLOCK-----", "\ufe0f", "\u3164", "\U000e0020", "\u034f", "MTk4NjIy", "ATATT3",
           "dop_v1_", "1//0"]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_PIECES + [raw for raw, _, _ in SECRETS]), max_size=12).map("".join))
def test_the_first_look_never_lets_a_secret_through(text: str) -> None:
    """`redact` skips the patterns for a text the first look finds nothing in: it must be what the
    patterns themselves would leave unchanged."""
    assert redact(text) == mask(without_invisible(text))


def test_a_secret_at_the_cap_is_masked_before_it_is_cut() -> None:
    """A token near the end of a long field: masked whole, never shown all but its last characters."""
    token = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw0"  # a bot token: 35 characters after the colon, exactly
    long_name = "x" * 156 + " " + token  # 202 characters: a cap of 200 cuts the token's last 3
    raw = {"taskName": long_name, "status": "done", "finishedAt": "2026-11-24T10:00:00+00:00", "result": long_name,
           "steps": [{"name": long_name, "status": "done", "message": long_name}]}
    for n in diff_tasks(None, task_from_dict(raw, "t"), NOW).notifications:
        blob = n.text + json.dumps(n.data, ensure_ascii=False)
        assert "AAHdqTcvCH1vGWJx" not in blob, (n.kind, blob)


@pytest.mark.parametrize("unit", ["x_", "password_", "token-", "a_token_", "-_", "a", ":", "password=", "://:@",
                                  "Authorization: ", "bot1234567890:", "eyJ-", "eyJa.", "mysql -", "-u a:",
                                  "Cookie: a;", "xai-a", "-----BEGIN RSA PRIVATE KEY-----",
                                  "AAAA-----END RSA PRIVATE KEY-----", "MTk4NjIyNDg3NjY0NTQ0MjEy.", "--password ", "a.",
                                  "\u200d", "x\ufe0f", "a=", "Error: ", "password=a=", "a: password="])
def test_masking_takes_linear_time_on_hostile_text(unit: str) -> None:
    """Every field of every task file goes through `redact`: no input may make it backtrack for ages.

    64 KB of a repeated unit must take about what 16 KB takes, times four (a generous 20x allows for a
    loaded machine; quadratic backtracking is 16x, and the patterns found in review took minutes). The
    thread's own CPU time, the least of five: time spent waiting for a core on a loaded machine (two
    test workers and more beside them) is not the pattern's."""
    def cost(size: int) -> float:
        text = unit * (size // len(unit))
        started = time.thread_time()
        redact(text)
        return time.thread_time() - started

    small, large = min(cost(16_000) for _ in range(5)), min(cost(64_000) for _ in range(5))
    assert large < 1.0 and large < 20 * max(small, 0.002), (unit, small, large)
