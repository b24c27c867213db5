"""Task and Step: the JSON contract every writer shares.

The reader is tolerant (files come from the original Live Task Pulse script, from task-pulse, and
from agents writing JSON by hand) but precise when it refuses: a `TaskFormatError` names the field
and what was wrong with it. Unknown fields, at task and step level, are kept in `extra` and written
back unchanged, so a rewrite never loses what another tool put there.
"""

from __future__ import annotations

import json
from datetime import datetime

from task_pulse.errors import OperationFailed

# `typing` and `dataclasses` cost a writer call more than all of its own work (see
# tests/benchmarks/writer_cost.py): annotations only, and plain classes below.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from task_pulse.history.forecast import Profile

TASK_STATUSES = ("running", "done", "error")
# Ten years: longer than any job, and far enough from the calendar's end that deadlines stay dates.
MAX_STALL_SECONDS = 10 * 365 * 86400
STEP_STATUSES = ("pending", "running", "done", "error")
# More steps than any job has: past this a file is `invalid` (one notice), not thousands of messages
# and a diff that costs every other task its latency.
MAX_STEPS = 1000

# Known keys, in the order they are written back (the order of the original script).
_TASK_KEYS = ("taskId", "taskName", "status", "startedAt", "updatedAt", "finishedAt", "steps", "error",
              "result", "rev", "stallSeconds", "budgetSeconds")
_STEP_KEYS = ("name", "status", "startedAt", "finishedAt", "message", "percent", "budgetSeconds")


class TaskFormatError(ValueError):
    """The content is not a task; the message says which field and why."""


class _Record:
    """What a dataclass would give Step and Task (equality, repr, a changed copy), without its import."""

    __slots__: tuple[str, ...] = ()

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and self._values() == other._values()  # type: ignore[attr-defined]

    __hash__ = None  # type: ignore[assignment]  # mutable: not a dict key

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"{type(self).__name__}({fields})"

    def copy(self, **changes: Any) -> Any:
        """A shallow copy with `changes` (attribute names) applied."""
        unknown = set(changes) - set(self.__slots__)
        if unknown:
            raise TypeError(f"{type(self).__name__} has no field {', '.join(sorted(unknown))}")
        new = object.__new__(type(self))
        for name in self.__slots__:
            setattr(new, name, changes[name] if name in changes else getattr(self, name))
        return new


class Step(_Record):
    __slots__ = ("name", "status", "started_at", "finished_at", "message", "percent", "extra", "nulls",
                 "budget_seconds")

    def __init__(self, name: str, status: str = "pending", started_at: str | None = None,
                 finished_at: str | None = None, message: str | None = None, percent: float | None = None,
                 extra: dict[str, Any] | None = None, nulls: frozenset[str] = frozenset(),
                 budget_seconds: float | None = None) -> None:
        self.name, self.status, self.started_at, self.finished_at = name, status, started_at, finished_at
        self.message, self.percent = message, percent
        # How long the step may run before it is overdue (`budgetSeconds`, optional; see task_pulse/history).
        self.budget_seconds = budget_seconds
        self.extra: dict[str, Any] = {} if extra is None else extra
        # Known keys the file had as null: written back as null, so a rewrite keeps the writer's shape.
        self.nulls = nulls

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "status": self.status}
        for key, value in (("startedAt", self.started_at), ("finishedAt", self.finished_at),
                           ("message", self.message), ("percent", self.percent),
                           ("budgetSeconds", self.budget_seconds)):
            if value is not None or key in self.nulls:
                out[key] = value
        out.update(self.extra)
        return out


class Task(_Record):
    __slots__ = ("task_id", "name", "status", "steps", "started_at", "updated_at", "finished_at", "error",
                 "result", "rev", "stall_seconds", "extra", "nulls", "budget_seconds", "profile")

    def __init__(self, task_id: str, name: str, status: str, steps: list[Step], started_at: str | None = None,
                 updated_at: str | None = None, finished_at: str | None = None, error: str | None = None,
                 result: str | None = None, rev: int = 0, stall_seconds: float | None = None,
                 extra: dict[str, Any] | None = None, nulls: frozenset[str] = frozenset(),
                 budget_seconds: float | None = None, profile: Profile | None = None) -> None:
        self.task_id, self.name, self.status, self.steps = task_id, name, status, steps
        self.started_at, self.updated_at, self.finished_at = started_at, updated_at, finished_at
        self.error, self.result, self.rev, self.stall_seconds = error, result, rev, stall_seconds
        self.extra: dict[str, Any] = {} if extra is None else extra
        self.nulls = nulls  # as on Step
        self.budget_seconds = budget_seconds  # as on Step, for the whole run
        # Not from the file, never written: what past runs of this name say (their typical durations), set
        # by whoever reads a state db for the card (`Outbox.card_view`), so the card can say what is left.
        self.profile = profile

    # -- derived views ---------------------------------------------------------------------------

    @property
    def total(self) -> int:
        return len(self.steps)

    @property
    def done_count(self) -> int:
        return sum(1 for s in self.steps if s.status == "done")

    @property
    def current_index(self) -> int | None:
        """Index of the running step; else of the failed step (what `failed` reports)."""
        for wanted in ("running", "error"):
            for i, s in enumerate(self.steps):
                if s.status == wanted:
                    return i
        return None

    @property
    def current(self) -> Step | None:
        i = self.current_index
        return None if i is None else self.steps[i]

    @property
    def running_step(self) -> Step | None:
        return next((s for s in self.steps if s.status == "running"), None)

    # -- the writer verbs -----------------------------------------------------------------------------
    # Each edits the task in place. `False` means there was nothing to change (the caller writes
    # nothing); OperationFailed means the task is not in a state for the verb.

    def _require_running(self) -> None:
        if self.status != "running":
            raise OperationFailed(f"task '{self.task_id}' has already ended ({self.status})")

    def advance(self, now: str, message: str | None = None) -> None:
        """`next`: the running step is done with `message` as its result, the next pending step runs.

        Without a message the step has no result: a message left there by `heartbeat` described
        the work in progress, not its outcome, so it goes.
        """
        self._require_running()
        i = next((i for i, s in enumerate(self.steps) if s.status == "running"), None)
        if i is None:
            raise OperationFailed(f"task '{self.task_id}' has no running step "
                                  f"({self.done_count}/{self.total} done); finish it with `task-pulse done`")
        step = self.steps[i]
        step.status, step.finished_at, step.message = "done", now, message
        following = next((s for s in self.steps[i + 1:] if s.status == "pending"), None)
        if following is not None:
            following.status, following.started_at = "running", now

    def touch(self, message: str | None = None, percent: float | None = None) -> bool:
        """`heartbeat`: the caller's write refreshes updatedAt; set the running step's message/percent.

        A running task is always refreshed, also between steps (after the last `next`, before
        `done`): a heartbeat that did not count would turn into a false stall alarm. Message and
        percent need a running step and are dropped without one. An ended task is left as it is.
        """
        if self.status != "running":
            return False
        step = self.running_step
        if step is not None:
            if message is not None:
                step.message = message
            if percent is not None:
                step.percent = int(percent) if float(percent).is_integer() else percent
        return True

    def _ended_already(self, outcome: str) -> bool:
        """True when the task already ended with `outcome` (the verb is then a no-op); raises when it
        ended the other way, which a repeated call cannot undo."""
        if self.status == "running":
            return False
        if self.status == outcome:
            return True
        when = shown_time(self.finished_at or self.updated_at)
        was = f"already failed ({self.error}) at {when}" if self.status == "error" else f"was already done at {when}"
        wanted = "done" if outcome == "done" else "failed"
        raise OperationFailed(f"task '{self.task_id}' {was}; not marked {wanted} (create a new task to run it again)")

    def finish(self, now: str, result: str | None = None) -> bool:
        """`done`: the task and its running step are done. Done already: nothing changes."""
        if self._ended_already("done"):
            return False
        self.status, self.finished_at = "done", now
        if result is not None:
            self.result = result
        for step in self.steps:
            if step.status == "running":
                step.status, step.finished_at = "done", now
        return True

    def fail(self, now: str, error: str) -> bool:
        """`error`: the task and its running step failed with `error`. Failed already: nothing changes."""
        if self._ended_already("error"):
            return False
        self.status, self.finished_at, self.error = "error", now, error
        step = self.running_step
        if step is not None:
            step.status, step.finished_at, step.message = "error", now, error
        return True

    # -- serialisation ---------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "taskId": self.task_id,
            "taskName": self.name,
            "status": self.status,
            "startedAt": self.started_at,
            "updatedAt": self.updated_at,
            "finishedAt": self.finished_at,
            "steps": [s.to_dict() for s in self.steps],
            "error": self.error,
            "result": self.result,
            "rev": self.rev,
        }
        if self.stall_seconds is not None or "stallSeconds" in self.nulls:
            out["stallSeconds"] = self.stall_seconds
        if self.budget_seconds is not None or "budgetSeconds" in self.nulls:
            out["budgetSeconds"] = self.budget_seconds
        out.update(self.extra)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=2)


# -- parsing ----------------------------------------------------------------------------------------

def _text(value: Any, where: str, *, required: bool = False) -> str | None:
    """A free-text field: strings as they are, numbers and booleans as their text, null as None."""
    if value is None:
        if required:
            raise TaskFormatError(f"{where} is missing")
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    raise TaskFormatError(f"{where} must be a string, got {type(value).__name__}")


def _timestamp(value: Any, where: str) -> str | None:
    # Kept as written (a rewrite must not reformat it); `parse_time` reads it when needed.
    if value is None or isinstance(value, str):
        return value
    raise TaskFormatError(f"{where} must be an ISO 8601 string, got {type(value).__name__}")


def _number(value: Any, where: str, low: float, high: float | None = None) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TaskFormatError(f"{where} must be a number, got {type(value).__name__}")
    if value != value or value < low or (high is not None and value > high):
        bound = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise TaskFormatError(f"{where} must be {bound}, got {value!r}")
    return value


def _stall_seconds(value: Any, where: str = "stallSeconds") -> float | None:
    """A number of seconds from 1 to ten years: `stallSeconds`, and a task's or a step's `budgetSeconds`."""
    seconds = _number(value, where, 1)
    if seconds is not None and seconds > MAX_STALL_SECONDS:
        raise TaskFormatError(f"{where} must be <= {MAX_STALL_SECONDS} (ten years), got {seconds!r}")
    return seconds


def _status(value: Any, where: str, allowed: tuple[str, ...]) -> str:
    if value is None:
        raise TaskFormatError(f"{where} is missing")
    if value not in allowed:
        shown = value if isinstance(value, str) else type(value).__name__
        raise TaskFormatError(f"{where} must be one of {'|'.join(allowed)}, got {shown!r}")
    return value


def _nulls(raw: dict[str, Any], known: tuple[str, ...]) -> frozenset[str]:
    return frozenset(k for k in known if k in raw and raw[k] is None)


_STEP_KEY_SET = frozenset(_STEP_KEYS)
_NO_NULLS: frozenset[str] = frozenset()


def _parse_step(raw: Any, i: int) -> Step:
    """One step. Most steps are plain (known keys, well-typed values): those take a short path that
    checks the same rules without building an error text per field; the rest go the long way, which
    says what is wrong. (A task has up to 1,000 steps, and the daemon parses every file it is told of.)"""
    if type(raw) is dict and raw.keys() <= _STEP_KEY_SET:
        get = raw.get
        name, status, started, finished = get("name"), get("status", "pending"), get("startedAt"), get("finishedAt")
        message, percent, budget = get("message"), get("percent"), get("budgetSeconds")
        if type(name) is str and type(status) is str and status in STEP_STATUSES \
                and (started is None or type(started) is str) and (finished is None or type(finished) is str) \
                and (message is None or type(message) is str) \
                and (percent is None or (type(percent) in (int, float) and 0 <= percent <= 100)) \
                and (budget is None or (type(budget) in (int, float) and 1 <= budget <= MAX_STALL_SECONDS)):
            nulls = frozenset(k for k, v in raw.items() if v is None) if None in raw.values() else _NO_NULLS
            return Step(name, status, started, finished, message, percent, {}, nulls, budget)
    return _parse_step_checked(raw, i)


def _parse_step_checked(raw: Any, i: int) -> Step:
    where = f"steps[{i}]"
    if isinstance(raw, str):  # a bare step name, as some hand-written files have it
        return Step(name=raw)
    if not isinstance(raw, dict):
        raise TaskFormatError(f"{where} must be an object, got {type(raw).__name__}")
    name = _text(raw.get("name"), f"{where}.name", required=True)
    assert name is not None
    status = raw.get("status", "pending")
    return Step(
        name=name,
        status=_status(status, f"{where}.status", STEP_STATUSES),
        started_at=_timestamp(raw.get("startedAt"), f"{where}.startedAt"),
        finished_at=_timestamp(raw.get("finishedAt"), f"{where}.finishedAt"),
        message=_text(raw.get("message"), f"{where}.message"),
        percent=_number(raw.get("percent"), f"{where}.percent", 0, 100),
        extra={k: v for k, v in raw.items() if k not in _STEP_KEYS},
        nulls=_nulls(raw, _STEP_KEYS),
        budget_seconds=_stall_seconds(raw.get("budgetSeconds"), f"{where}.budgetSeconds"),
    )


def task_from_dict(raw: Any, fallback_id: str) -> Task:
    """Build a Task from decoded JSON; `fallback_id` (the file name) stands in for a missing taskId."""
    if not isinstance(raw, dict):
        raise TaskFormatError(f"top level must be an object, got {type(raw).__name__}")
    name = _text(raw.get("taskName"), "taskName", required=True)
    assert name is not None
    steps_raw = raw.get("steps")
    if steps_raw is None:
        raise TaskFormatError("steps is missing")
    if not isinstance(steps_raw, list):
        raise TaskFormatError(f"steps must be a list, got {type(steps_raw).__name__}")
    if len(steps_raw) > MAX_STEPS:
        raise TaskFormatError(f"{len(steps_raw)} steps (at most {MAX_STEPS})")
    task_id = raw.get("taskId")
    if task_id is not None and not isinstance(task_id, str):
        raise TaskFormatError(f"taskId must be a string, got {type(task_id).__name__}")
    rev = raw.get("rev", 0)
    if rev is None:
        rev = 0
    if isinstance(rev, bool) or not isinstance(rev, int) or rev < 0:
        raise TaskFormatError(f"rev must be a non-negative integer, got {rev!r}")
    return Task(
        task_id=task_id or fallback_id,
        name=name,
        status=_status(raw.get("status"), "status", TASK_STATUSES),
        steps=[_parse_step(s, i) for i, s in enumerate(steps_raw)],
        started_at=_timestamp(raw.get("startedAt"), "startedAt"),
        updated_at=_timestamp(raw.get("updatedAt"), "updatedAt"),
        finished_at=_timestamp(raw.get("finishedAt"), "finishedAt"),
        error=_text(raw.get("error"), "error"),
        result=_text(raw.get("result"), "result"),
        rev=rev,
        stall_seconds=_stall_seconds(raw.get("stallSeconds")),
        extra={k: v for k, v in raw.items() if k not in _TASK_KEYS},
        nulls=_nulls(raw, _TASK_KEYS),
        budget_seconds=_stall_seconds(raw.get("budgetSeconds"), "budgetSeconds"),
    )


def parse_task(data: bytes | str, fallback_id: str) -> Task:
    """Parse a task file's content. Raises TaskFormatError with a one-line reason."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskFormatError(f"not UTF-8 (byte {exc.start})") from None
    if not data.strip():
        raise TaskFormatError("empty file")
    try:
        raw = json.loads(data, parse_int=_bounded_int, parse_float=_finite_float, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise TaskFormatError(f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})") from None
    except RecursionError:
        raise TaskFormatError("not valid JSON (nested too deeply)") from None
    if "\\u" in data:  # a \ud800-style escape decodes to a lone surrogate, which no UTF-8 store can hold
        try:
            json.dumps(raw, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise TaskFormatError("contains a lone surrogate (an unpaired \\ud800-\\udfff escape)") from None
    return task_from_dict(raw, fallback_id)


# Longer integers are no data a task has; Python refuses to convert past 4,300 digits anyway (with a
# ValueError that would stop whoever reads or rewrites the file), so they are refused as they are read.
MAX_INT_DIGITS = 100


def _bounded_int(text: str) -> int:
    if len(text.lstrip("-")) > MAX_INT_DIGITS:
        raise TaskFormatError(f"a number of {len(text.lstrip('-'))} digits (at most {MAX_INT_DIGITS})")
    return int(text)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):  # 1e999: no JSON writer can write it back
        raise TaskFormatError(f"the number {text[:20]} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise TaskFormatError(f"{name} is not JSON")


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (naive ones are local time), or None if unreadable."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed if parsed.tzinfo is not None else parsed.astimezone()
    except (ValueError, TypeError, OverflowError):  # unreadable, or a naive date at the calendar's edge
        return None


def shown_time(stamp: str | None) -> str:
    """A task file's ISO timestamp as a person reads it: `2026-11-24 09:31:10` (to the second, in the
    offset it was written in); a text that is no timestamp as it is, on one line."""
    moment = parse_time(stamp)
    if moment is not None:
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    return "".join(c for c in str(stamp or "") if c.isprintable())[:60]


def stall_threshold(task: Task, default_seconds: float) -> float:
    """The task's own `stallSeconds` when it has one, else the configured default."""
    return task.stall_seconds if task.stall_seconds is not None else default_seconds


def stalled_for(task: Task, now: datetime, default_seconds: float) -> float | None:
    """Seconds since the last update if the task counts as stalled at `now`, else None.

    One rule for everyone (`task-pulse status` and the daemon): a running task whose `updatedAt` is
    more than its threshold in the past. Same strict `>` as the original script.
    """
    if task.status != "running":
        return None
    updated = parse_time(task.updated_at)
    if updated is None:
        return None
    elapsed = (now - updated).total_seconds()
    return elapsed if elapsed > stall_threshold(task, default_seconds) else None
