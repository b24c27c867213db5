"""Reading the history of runs from a local state db: for `task-pulse history`, `status` and the card.

`RunReader` reads over any connection to the state db (the worker's, a courier's); `read_only`
opens one for a reader command that must change nothing, not even the schema: a db that an older
task-pulse made (no `runs` table yet) simply has no history.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from task_pulse.history.forecast import WINDOW, Profile, learn
from task_pulse.history.runs import Run
from task_pulse.state.sql_sqlite import SQL
from task_pulse.store import TaskStore


def run_from_row(r: tuple[Any, ...]) -> Run:
    """A `runs` row (SQL._RUN_COLUMNS, the shared db's too) as a Run."""
    return Run(key=r[0], task_id=r[1], name=r[2], outcome=r[3], at=r[4], started_at=r[5], finished_at=r[6],
               steps=Run.parse_steps(r[7]))


class RunReader:
    """The `runs` table of a state db, read."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def names(self) -> set[str]:
        """Every task name with at least one run."""
        return {name for (name,) in self.db.execute(SQL.RUN_NAMES)}

    def runs_of(self, name: str, limit: int) -> list[Run]:
        """The latest `limit` runs of a name, newest first."""
        return [run_from_row(r) for r in self.db.execute(SQL.RUNS_OF, {"name": name, "limit": limit})]

    def profile(self, name: str) -> Profile:
        """What the latest successful runs of a name say (see forecast.learn)."""
        return learn(name, [run_from_row(r) for r in self.db.execute(SQL.DONE_RUNS_OF, {"name": name,
                                                                                         "limit": WINDOW})])

    def profiles(self, names: Iterable[str]) -> dict[str, Profile]:
        """`profile` of each name that has runs, in one query."""
        import json

        by_name: dict[str, list[Run]] = {}
        for row in self.db.execute(SQL.DONE_RUNS_OF_NAMES, {"names": json.dumps(sorted(set(names))),
                                                            "limit": WINDOW}):
            run = run_from_row(row)
            by_name.setdefault(run.name, []).append(run)
        return {name: learn(name, runs) for name, runs in by_name.items()}

    def summary(self) -> list[tuple[str, int, int, float]]:
        """(name, runs, successful runs, unix time of the latest) of every name, latest first."""
        return [(r[0], r[1], r[2], r[3]) for r in self.db.execute(SQL.RUN_SUMMARY)]


@contextmanager
def read_only_db(store: TaskStore, timeout: float = 10) -> Iterator[sqlite3.Connection | None]:
    """A connection to the store's state db that can change nothing (None: there is no state db).

    For readers (`history`, `status`, the board): opened `mode=ro`, so not even the schema is touched.
    `.pulse/` is checked first (privatedir.py), as every command does before it uses anything in it.
    """
    path = store.private_path("state.db")
    if path is None or not Path(path).is_file():
        yield None
        return
    db = sqlite3.connect(f"{Path(path).as_uri()}?mode=ro", uri=True, timeout=timeout, isolation_level=None)
    try:
        yield db
    finally:
        db.close()


def has_runs(db: sqlite3.Connection) -> bool:
    """Whether the state db keeps a history (a db an older task-pulse made has no `runs` table)."""
    return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'runs'").fetchone() is not None


@contextmanager
def read_only(store: TaskStore) -> Iterator[RunReader | None]:
    """The state db's runs, opened read-only (None: no state db, or one without history yet)."""
    with read_only_db(store) as db:
        yield RunReader(db) if db is not None and has_runs(db) else None
