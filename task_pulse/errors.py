"""The errors a user can cause, each with the exit code DESIGN.md fixes for it.

The CLI prints `Error: <message>` on one line and exits with `exit_code`; no traceback.
"""

from __future__ import annotations


class TaskPulseError(Exception):
    """Something the user should read; never a bug."""

    exit_code = 1


class OperationFailed(TaskPulseError):
    """The request was well formed but could not be done (no running step, task already ended)."""


class TaskNotFound(OperationFailed):
    pass


class BadInput(TaskPulseError):
    """Bad usage or bad input: a hostile id, an ambiguous prefix, no steps."""

    exit_code = 2


class ConfigError(BadInput):
    """A setting from the environment or the config file that cannot be used."""


def os_error_text(exc: OSError) -> str:
    """One line for an OSError a command cannot go on after (a full disk, a missing permission)."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"
