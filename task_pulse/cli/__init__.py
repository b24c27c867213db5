"""The `task-pulse` command, one module per audience: writers, readers (the agent), admins."""

from task_pulse.cli import admin, reader, writer  # noqa: F401 - importing registers the verbs
from task_pulse.cli.base import FiniteRange, cli

__all__ = ["FiniteRange", "cli", "main"]


def main() -> None:
    cli.main(prog_name="task-pulse")
