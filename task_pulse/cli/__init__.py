"""The `task-pulse` command, one module per audience: writers, readers (the agent), admins; `history`; `board`."""

from task_pulse.cli import adapters, admin, board, history, reader, shared, writer  # noqa: F401 - registers the verbs
from task_pulse.cli.base import FiniteRange, OneLineCommand, cli

__all__ = ["FiniteRange", "OneLineCommand", "cli", "main"]


def main(args: list[str] | None = None) -> None:
    """The click CLI. The `task-pulse` command enters through `task_pulse.entry`, which runs a plain
    writer call itself and hands everything else here."""
    cli.main(args=args, prog_name="task-pulse")
