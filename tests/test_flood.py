"""InvalidFlood: the first few unreadable files are told one by one, the rest in one summary."""

from __future__ import annotations

from task_pulse.records import Notification
from task_pulsed.differ import invalid_summary
from task_pulsed.flood import InvalidFlood


def note(task_id: str) -> Notification:
    return Notification(key=f"{task_id}:invalid:x", task_id=task_id, task_name="", kind="invalid", text="…")


def tell(flood: InvalidFlood, now: float) -> bool:
    """What the worker does: ask, and count it when it was stored."""
    if flood.may_tell(now):
        flood.told()
        return True
    return False


def test_a_burst_then_one_summary_per_window() -> None:
    flood = InvalidFlood(burst=2, window=60)
    assert tell(flood, 1000) and tell(flood, 1010)
    assert not flood.may_tell(1020)
    assert flood.hold(note("a")) == 1060  # the first one held: schedule the summary at the window's end
    assert not flood.may_tell(1030) and flood.hold(note("b")) is None
    assert not flood.may_tell(1070) and flood.hold(note("a")) is None  # past the end, but no summary yet
    held = flood.held()
    assert [n.task_id for n in held] == ["a", "b"]  # one per file, latest notice
    assert flood.held() == held  # kept until the summary is stored
    flood.close()
    assert tell(flood, 1080) and tell(flood, 1081) and not flood.may_tell(1082)  # a new window
    assert flood.held() == []


def test_only_what_was_stored_counts() -> None:
    flood = InvalidFlood(burst=1, window=60)
    assert flood.may_tell(0) and flood.may_tell(1)  # a notice whose storing failed (a busy db) is asked again
    flood.told()
    assert not flood.may_tell(2)


def test_a_quiet_window_ends_by_itself() -> None:
    flood = InvalidFlood(burst=1, window=60)
    assert tell(flood, 0) and not flood.may_tell(59)
    assert flood.hold(note("a")) == 60
    flood.close()
    assert tell(flood, 61)
    assert tell(flood, 200)  # nothing held: a window older than 60 s is over


def test_the_summary_names_the_files_and_keeps_within_the_cap() -> None:
    files = [f"bad-{i:04d}.json" for i in range(300)]
    summary = invalid_summary(files, "1000.000", 5, 300, "en")
    assert summary.task_id == ".unreadable" and summary.kind == "invalid"
    assert summary.text.startswith("⚠️ Task file unreadable: 300 files: bad-0000.json, bad-0001.json")
    assert "more than 5 within 5m" in summary.text
    assert summary.data["files"] == files[:100]
    assert summary.key == invalid_summary(files, "1000.000", 5, 300, "en").key
    assert summary.key != invalid_summary(files, "1300.000", 5, 300, "en").key
