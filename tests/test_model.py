"""task_pulse.model: tolerant parsing, precise refusals, timestamps and the stall rule."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from task_pulse import model
from task_pulse.model import Step, Task, TaskFormatError, parse_task, parse_time, stalled_for, task_from_dict
from tests.conftest import original_file

CST = timezone(timedelta(hours=8))


def minimal(**changes: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {"taskName": "t", "status": "running", "steps": [{"name": "a", "status": "running"}]}
    raw.update(changes)
    return raw


def refusal(data: bytes | str) -> str:
    with pytest.raises(TaskFormatError) as info:
        parse_task(data, "fallback")
    return str(info.value)


def dict_refusal(raw: Any) -> str:
    with pytest.raises(TaskFormatError) as info:
        task_from_dict(raw, "fallback")
    return str(info.value)


# -- the original format ----------------------------------------------------------------------------


def test_original_file_parses() -> None:
    task = parse_task(json.dumps(original_file(), ensure_ascii=False).encode("utf-8"), "ignored")
    assert task.task_id == "日报发布-20261124-093000"
    assert task.name == "日报发布"
    assert task.status == "running"
    assert task.rev == 0
    assert task.stall_seconds is None
    assert [s.name for s in task.steps] == ["抓取", "筛选", "写稿"]
    assert [s.status for s in task.steps] == ["done", "running", "pending"]
    assert task.steps[0].message == "抓取了25条数据"
    assert task.steps[0].extra == {"source": "rss", "retries": [1, 2]}
    assert task.steps[2].extra == {"owner": {"agent": "writer"}}
    assert task.extra == {"channel": "telegram", "meta": {"cron": "30 9 * * *", "tags": ["daily"]}}
    assert task.done_count == 1
    assert task.total == 3
    assert task.running_step is task.steps[1]
    assert task.current_index == 1


def test_original_file_round_trips_with_unknown_fields() -> None:
    raw = original_file()
    task = task_from_dict(copy.deepcopy(raw), "ignored")
    out = task.to_dict()
    # Everything the file had comes back unchanged; task-pulse only adds its revision counter.
    assert out == {**raw, "rev": 0}
    again = parse_task(task.to_json(), "ignored").to_dict()
    assert again == out


def test_null_keys_and_whole_numbers_keep_their_shape() -> None:
    """A writer that sets startedAt/finishedAt/message to null, and a stallSeconds of 600, gets them back so."""
    raw = minimal(taskId="x", stallSeconds=600, rev=None,
                  steps=[{"name": "a", "status": "running", "startedAt": None, "finishedAt": None, "message": None,
                          "percent": None}])
    out = task_from_dict(copy.deepcopy(raw), "x").to_dict()
    assert out["steps"] == raw["steps"]
    assert out["stallSeconds"] == 600 and isinstance(out["stallSeconds"], int)
    task = task_from_dict(copy.deepcopy(raw), "x")
    task.advance("2026-11-24T09:40:00+08:00")
    assert task.to_dict()["steps"] == [{"name": "a", "status": "done", "startedAt": None,
                                        "finishedAt": "2026-11-24T09:40:00+08:00", "message": None, "percent": None}]
    nulls = task_from_dict(minimal(taskId="x", stallSeconds=None), "x").to_dict()
    assert "stallSeconds" in nulls and nulls["stallSeconds"] is None


def test_round_trip_keeps_new_optional_fields() -> None:
    raw = minimal(taskId="x", rev=7, stallSeconds=600,
                  steps=[{"name": "a", "status": "running", "percent": 60, "message": "m"}])
    out = task_from_dict(raw, "x").to_dict()
    assert out["rev"] == 7
    assert out["stallSeconds"] == 600
    assert out["steps"] == [{"name": "a", "status": "running", "message": "m", "percent": 60}]


def test_missing_task_id_taken_from_file_name() -> None:
    task = parse_task(json.dumps(minimal()), "from-file-name")
    assert task.task_id == "from-file-name"
    assert task.to_dict()["taskId"] == "from-file-name"


def test_missing_optional_fields_are_fine() -> None:
    task = task_from_dict({"taskName": "t", "status": "done", "steps": []}, "id")
    assert task.steps == []
    assert (task.started_at, task.updated_at, task.finished_at) == (None, None, None)
    assert (task.error, task.result, task.rev, task.stall_seconds) == (None, None, 0, None)
    assert task.extra == {}
    assert task.current is None


def test_step_without_status_is_pending_and_bare_name_is_a_step() -> None:
    task = task_from_dict(minimal(steps=[{"name": "a"}, "b"]), "id")
    assert task.steps == [Step(name="a"), Step(name="b")]
    assert task.steps[0].status == "pending"


def test_null_rev_is_zero() -> None:
    assert task_from_dict(minimal(rev=None), "id").rev == 0


def test_numbers_in_text_fields_become_text() -> None:
    task = task_from_dict(minimal(result=42, error=True), "id")
    assert task.result == "42"
    assert task.error == "true"


# -- precise refusals -------------------------------------------------------------------------------


def test_not_json() -> None:
    reason = refusal(b'{"taskName": "t",')
    assert reason.startswith("not valid JSON (")
    assert "line 1" in reason


def test_not_utf8() -> None:
    assert refusal(b'{"taskName": "\xff"}') == "not UTF-8 (byte 14)"


@pytest.mark.parametrize("data", [b"", b"   \n\t ", ""])
def test_empty(data: bytes | str) -> None:
    assert refusal(data) == "empty file"


def test_top_level_list() -> None:
    assert refusal(b"[]") == "top level must be an object, got list"
    assert dict_refusal("text") == "top level must be an object, got str"


@pytest.mark.parametrize("field", ["taskName", "status", "steps"])
def test_missing_required_field(field: str) -> None:
    raw = minimal()
    del raw[field]
    assert refusal(json.dumps(raw)) == f"{field} is missing"


def test_steps_not_a_list() -> None:
    assert dict_refusal(minimal(steps={"name": "a"})) == "steps must be a list, got dict"
    assert dict_refusal(minimal(steps="a b c")) == "steps must be a list, got str"


def test_bad_step_status() -> None:
    raw = minimal(steps=[{"name": "a", "status": "done"}, {"name": "b", "status": "finished"}])
    assert dict_refusal(raw) == "steps[1].status must be one of pending|running|done|error, got 'finished'"


def test_step_not_an_object_or_without_name() -> None:
    assert dict_refusal(minimal(steps=[{"name": "a"}, 3])) == "steps[1] must be an object, got int"
    assert dict_refusal(minimal(steps=[{"status": "pending"}])) == "steps[0].name is missing"


def test_bad_task_status() -> None:
    assert dict_refusal(minimal(status="paused")) == "status must be one of running|done|error, got 'paused'"
    assert dict_refusal(minimal(status=1)) == "status must be one of running|done|error, got 'int'"


@pytest.mark.parametrize(("rev", "shown"), [(-1, "-1"), (True, "True"), (False, "False"), ("3", "'3'"),
                                            (1.5, "1.5")])
def test_bad_rev(rev: Any, shown: str) -> None:
    assert dict_refusal(minimal(rev=rev)) == f"rev must be a non-negative integer, got {shown}"


@pytest.mark.parametrize(("percent", "shown"), [(-1, "-1"), (100.5, "100.5"), (150, "150")])
def test_percent_out_of_range(percent: float, shown: str) -> None:
    raw = minimal(steps=[{"name": "a", "status": "running", "percent": percent}])
    assert dict_refusal(raw) == f"steps[0].percent must be between 0 and 100, got {shown}"


def test_percent_not_a_number() -> None:
    raw = minimal(steps=[{"name": "a", "status": "running", "percent": "60%"}])
    assert dict_refusal(raw) == "steps[0].percent must be a number, got str"


def test_percent_bounds_accepted() -> None:
    raw = minimal(steps=[{"name": "a", "status": "done", "percent": 0}, {"name": "b", "percent": 100}])
    assert [s.percent for s in task_from_dict(raw, "id").steps] == [0, 100]


@pytest.mark.parametrize(("value", "shown"), [(0.5, "0.5"), (0, "0"), (-10, "-10")])
def test_stall_seconds_below_one(value: float, shown: str) -> None:
    assert dict_refusal(minimal(stallSeconds=value)) == f"stallSeconds must be >= 1, got {shown}"


def test_stall_seconds_bool_refused() -> None:
    assert dict_refusal(minimal(stallSeconds=True)) == "stallSeconds must be a number, got bool"


def test_nan_refused_from_file() -> None:
    reason = refusal('{"taskName": "t", "status": "running", "steps": [], "stallSeconds": NaN}')
    assert reason == "NaN is not JSON"  # refused as it is read (no JSON writer could write it back)
    assert dict_refusal(minimal(stallSeconds=float("nan"))) == "stallSeconds must be >= 1, got nan"


def test_timestamp_must_be_a_string() -> None:
    assert dict_refusal(minimal(updatedAt=1700000000)) == "updatedAt must be an ISO 8601 string, got int"


def test_task_id_must_be_a_string() -> None:
    assert dict_refusal(minimal(taskId=5)) == "taskId must be a string, got int"


def test_deeply_nested_json_is_a_format_error() -> None:
    reason = refusal("[" * 100_000 + "]" * 100_000)
    assert reason.startswith("not valid JSON")


# -- parse_time -------------------------------------------------------------------------------------


def test_parse_time_with_offset() -> None:
    parsed = parse_time("2026-11-24T09:30:00+08:00")
    assert parsed == datetime(2026, 11, 24, 9, 30, tzinfo=CST)
    assert parsed is not None and parsed.utcoffset() == timedelta(hours=8)


def test_parse_time_z_is_utc() -> None:
    parsed = parse_time("2026-11-24T01:30:00Z")
    assert parsed == datetime(2026, 11, 24, 1, 30, tzinfo=UTC)
    assert parsed == parse_time("2026-11-24T09:30:00+08:00")


def test_parse_time_naive_is_local() -> None:
    parsed = parse_time("2026-11-24T09:30:00")
    assert parsed is not None and parsed.tzinfo is not None
    assert parsed == datetime(2026, 11, 24, 9, 30).astimezone()
    assert parsed.replace(tzinfo=None) == datetime(2026, 11, 24, 9, 30)


@pytest.mark.parametrize("value", ["junk", "2026-13-40T99:99:99", "", None, "yesterday", "…"])
def test_parse_time_junk_is_none(value: str | None) -> None:
    assert parse_time(value) is None


# -- stalled_for ------------------------------------------------------------------------------------

NOW = datetime(2026, 11, 24, 12, 0, 0, tzinfo=CST)


def task_updated(seconds_ago: float, *, status: str = "running", stall: float | None = None) -> Task:
    return Task(task_id="t", name="t", status=status, steps=[Step(name="a", status="running")],
                updated_at=(NOW - timedelta(seconds=seconds_ago)).isoformat(), stall_seconds=stall)


def test_stalled_is_strictly_greater() -> None:
    assert stalled_for(task_updated(180), NOW, 180) is None
    assert stalled_for(task_updated(181), NOW, 180) == 181
    assert stalled_for(task_updated(10), NOW, 180) is None


def test_per_task_stall_seconds_overrides_default() -> None:
    longer = task_updated(300, stall=600)
    assert stalled_for(longer, NOW, 180) is None
    assert stalled_for(task_updated(601, stall=600), NOW, 180) == 601
    shorter = task_updated(100, stall=60)
    assert stalled_for(shorter, NOW, 180) == 100


@pytest.mark.parametrize("status", ["done", "error"])
def test_finished_task_never_stalled(status: str) -> None:
    assert stalled_for(task_updated(10 * 86400, status=status), NOW, 180) is None


def test_unreadable_updated_at_is_not_stalled() -> None:
    task = task_updated(1000)
    task.updated_at = "junk"
    assert stalled_for(task, NOW, 180) is None
    task.updated_at = None
    assert stalled_for(task, NOW, 180) is None


def test_stall_compares_across_offsets() -> None:
    task = task_updated(0)
    task.updated_at = (NOW - timedelta(seconds=200)).astimezone(UTC).isoformat().replace("+00:00", "Z")
    assert stalled_for(task, NOW, 180) == 200


_step_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 200), st.floats(allow_nan=True),
                         st.text(max_size=5), st.sampled_from(["pending", "running", "done", "error"]),
                         st.lists(st.integers(), max_size=2))


@settings(max_examples=400, deadline=None)
@given(st.dictionaries(st.sampled_from(["name", "status", "startedAt", "finishedAt", "message", "percent", "x"]),
                       _step_values, max_size=7))
def test_the_short_path_for_plain_steps_reads_them_as_the_long_one_does(raw: dict[str, Any]) -> None:
    """A plain step takes a short path (most of what the daemon parses); it must agree with the long
    path on every step, the refused ones included."""
    def outcome(parse: Any) -> Any:
        try:
            return parse(raw, 0)
        except TaskFormatError as exc:
            return str(exc)

    assert outcome(model._parse_step) == outcome(model._parse_step_checked)
