"""The shared state database's admin verb: who may write and deliver what (docs/shared-database.md)."""

from __future__ import annotations

import click

from task_pulse.cli.base import Context, cli, emit, json_option, pass_ctx, state_option
from task_pulse.errors import BadInput, OperationFailed


@cli.group("shared")
def shared_group() -> None:
    """The shared PostgreSQL state database, where daemons of several hosts meet.

    \b
    Example:
      task-pulse shared grant gpu-1 --host --state postgresql://admin@db.internal/pulse
    """


@shared_group.command("grant")
@click.argument("role")
@click.option("--host", "as_what", flag_value="host", help="ROLE forwards one host's tasks: the host named ROLE.")
@click.option("--deliverer", "as_what", flag_value="deliverer",
              help="ROLE delivers: it reads every host's notifications and marks how they were delivered.")
@state_option
@json_option
@pass_ctx
def shared_grant(ctx: Context, role: str, as_what: str | None, state_url: str | None) -> None:
    """Make an existing database role a host or a deliverer of the shared state database.

    Run it as the database's owner (--state with the owner's URL): it sets the schema up if it
    is not yet, makes the group roles task_pulse_host and task_pulse_deliverer with what each
    may do (row-level security: a host's role sees and writes its own host's rows only; a
    deliverer writes only how a notification was delivered), and makes ROLE a member of one.
    A host's role is named as its host: its daemon runs with --host-name ROLE. Create the role
    first, with its password (CREATE ROLE "gpu-1" LOGIN PASSWORD '…').

    \b
    Examples:
      task-pulse shared grant gpu-1 --host --state postgresql://admin@db.internal/pulse
      task-pulse shared grant courier --deliverer --state postgresql://admin@db.internal/pulse
    """
    from task_pulse.state.shared import SharedOutbox, shown_url, state_errors

    if as_what is None:
        raise BadInput("say what ROLE is: --host (it forwards one host's tasks) or --deliverer")
    url = state_url or ctx.settings.state_url
    if url is None:
        raise BadInput("give the shared state database as its owner: --state URL (or TASK_PULSE_STATE)")
    errors = state_errors()
    try:
        shared = SharedOutbox(url)
        try:
            done = shared.grant(role, as_what)
        finally:
            shared.close()
    except errors as exc:
        raise OperationFailed(f"shared state database {shown_url(url)}: {' '.join(str(exc).split())}") from None
    emit(ctx, "\n".join(done), {"role": role, "as": as_what, "done": done})
