"""The `task-pulsed` command."""

from __future__ import annotations

import logging
import os
import sys

import click

from task_pulse import __version__
from task_pulse.adapters.openclaw import LedgerFilter
from task_pulse.cli import FiniteRange, OneLineCommand
from task_pulse.config import LANGS, load_settings
from task_pulse.errors import TaskPulseError
from task_pulse.markup import MARKUPS, PLAIN
from task_pulse.model import MAX_STALL_SECONDS
from task_pulse.openclaw.gateway import GatewayConfigError, find_gateway
from task_pulse.state.shared import shown_url
from task_pulsed.app import DaemonOptions, run
from task_pulsed.delivery import DeliveryOptions
from task_pulsed.delivery.gateway.client import HandshakeRefused, NotSent, probe
from task_pulsed.delivery.gateway.sink import OpenClawSink
from task_pulsed.delivery.pacing import parse_pace
from task_pulsed.delivery.plan import STYLES
from task_pulsed.delivery.processes import ProcessSlots
from task_pulsed.delivery.sinks import ExecSink, OpenClawCLI, Sink, WebhookSink
from task_pulsed.flood import INVALID_BURST, INVALID_WINDOW, NEWS_BURST, NEWS_WINDOW
from task_pulsed.tracker import Policy


def setup_logging(verbose: bool) -> None:
    """One line per event on stderr; no timestamps under systemd (journald adds its own)."""
    fmt = "%(levelname)s %(message)s" if os.environ.get("JOURNAL_STREAM") else "%(asctime)s %(levelname)s %(message)s"
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(fmt))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
    if not verbose:  # watchdog and apscheduler are chatty at INFO
        logging.getLogger("apscheduler").setLevel(logging.WARNING)


@click.command(cls=OneLineCommand, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--dir", "tasks_dir", metavar="DIR",
              help="Tasks directory to watch [env TASK_PULSE_DIR; default ~/.openclaw/workspace/tasks].")
@click.option("--lang", type=click.Choice(LANGS), help="Language of notifications [env TASK_PULSE_LANG; default zh].")
@click.option("--announce-existing", is_flag=True,
              help="On the very first start, announce tasks already in the dir instead of adopting them silently.")
@click.option("--stall", type=FiniteRange(min=0, min_open=True, max=MAX_STALL_SECONDS), metavar="SECONDS",
              help="Default stall threshold [env TASK_PULSE_STALL; default 180].")
@click.option("--progress-interval", type=FiniteRange(min=0), metavar="SECONDS",
              help="Min seconds between progress pushes per task [env TASK_PULSE_PROGRESS_INTERVAL; default 30].")
@click.option("--keep-days", type=FiniteRange(min=0, min_open=True), metavar="DAYS",
              help="Remove finished tasks and delivered notifications older than this [env TASK_PULSE_KEEP_DAYS; "
                   "default 7].")
@click.option("--history-runs", type=click.IntRange(min=1, max=1_000_000), metavar="N",
              help="Finished runs kept per task name, for ETAs, budgets and learned stall thresholds "
                   "[env TASK_PULSE_HISTORY_RUNS; default 50].")
@click.option("--history-days", type=FiniteRange(min=0, min_open=True), metavar="DAYS",
              help="Forget runs older than this [env TASK_PULSE_HISTORY_DAYS; default 90].")
@click.option("--cleanup-interval", type=FiniteRange(min=1), default=3600, show_default=True, metavar="SECONDS",
              help="How often to clean up (also once at startup).")
@click.option("--rescan-interval", type=FiniteRange(min=1), default=300, show_default=True, metavar="SECONDS",
              help="How often to rescan the whole dir, for anything the watcher missed.")
@click.option("--flood-window", type=FiniteRange(min=1), default=INVALID_WINDOW, show_default=True, metavar="SECONDS",
              help=f"Unreadable task files: the first {INVALID_BURST} in a window of this long are told one by one, "
                   "the rest in one message when it ends.")
@click.option("--news-burst", type=click.IntRange(min=1), default=NEWS_BURST, show_default=True, metavar="N",
              help="New tasks (each a new card), and stall alarms, told one by one per --news-window; past that, one "
                   "summary when the window ends, and a task that started past it is told in summaries to its end.")
@click.option("--news-window", type=FiniteRange(min=1), default=NEWS_WINDOW, show_default=True, metavar="SECONDS",
              help="The window of --news-burst.")
@click.option("--openclaw", "openclaw_to", metavar="CHANNEL:TARGET",
              help="Deliver to CHANNEL:TARGET (e.g. telegram:123456789, irc:#ops) through the running OpenClaw "
                   "gateway, the openclaw CLI for what the gateway never got.")
@click.option("--openclaw-gateway", metavar="URL|none",
              help="The gateway's WebSocket URL [default: found as OpenClaw finds it: OPENCLAW_GATEWAY_URL, "
                   "OPENCLAW_GATEWAY_PORT, openclaw.json]; none: the CLI only. The token is read from "
                   "OPENCLAW_GATEWAY_TOKEN or OpenClaw's config, never from the command line.")
@click.option("--openclaw-bin", metavar="PATH", help="The openclaw program [default: the one on PATH].")
@click.option("--openclaw-tasks/--no-openclaw-tasks", "openclaw_tasks", default=True, show_default=True,
              help="With --openclaw and its gateway: OpenClaw's background runs (cron runs, sub-agents, ACP and CLI "
                   "agent runs, from its task ledger) become tasks of their own.")
@click.option("--openclaw-tasks-kinds", metavar="KINDS",
              help="Only these kinds of OpenClaw runs, comma-separated (cron, subagent, acp, cli) [default: all].")
@click.option("--openclaw-tasks-agents", metavar="AGENTS",
              help="Only the runs of these OpenClaw agents, comma-separated [default: all].")
@click.option("--exec", "exec_command", metavar="CMD",
              help="Deliver by running CMD with the text as last argument (JSON on stdin); a JSON reply with a "
                   "messageId makes a live card.")
@click.option("--exec-edit", "exec_edit", metavar="CMD",
              help="Edit a sent message by running CMD with the text as last argument ({id} in CMD is the "
                   "message id, else it goes before the text). Needed for a live card with --exec.")
@click.option("--webhook", metavar="URL", help="Deliver by POSTing JSON to URL (edits: \"action\": \"edit\"); "
              "${VAR} in URL is read from the environment, so a token in it stays out of ps.")
@click.option("--webhook-header", "webhook_headers", multiple=True, metavar="'NAME: VALUE'",
              help="Header for --webhook (repeatable); ${VAR} in VALUE is read from the environment.")
@click.option("--markup", type=click.Choice(MARKUPS),
              help="What the chat behind --exec or --webhook makes of the text: markdown escapes Markdown in what "
                   "tasks say (links, mentions, emphasis), so that it shows as the text it is [default: plain]. "
                   "--openclaw is always markdown: OpenClaw renders Markdown on every channel.")
@click.option("--style", type=click.Choice(STYLES), default="card", show_default=True,
              help="card: one message per task, edited in place, plus a new message for done, failed and stalled; "
                   "stream: one message per notification.")
@click.option("--sink-concurrency", type=click.IntRange(min=1, max=64), default=4, show_default=True,
              help="Tasks delivered in parallel (one call in flight per task).")
@click.option("--sink-attempts", type=click.IntRange(min=1), default=5, show_default=True,
              help="Attempts per notification before it is left for `task-pulse drain`.")
@click.option("--sink-backoff", type=FiniteRange(min=0), default=2.0, show_default=True, metavar="SECONDS",
              help="Wait before the first retry; doubles after each failure.")
@click.option("--sink-timeout", type=FiniteRange(min=1), default=60.0, show_default=True, metavar="SECONDS",
              help="Time allowed for one sink call; a sender still running then is killed (with every process it "
                   "started) and retried.")
@click.option("--sink-processes", type=click.IntRange(min=1, max=64),
              help="Sink commands (the openclaw CLI, --exec) running at once, each with everything it starts; "
                   "nothing a call starts outlives it [default: --sink-concurrency].")
@click.option("--pace", metavar="SETTINGS",
              help="How fast the chat may be written to, over the channel's defaults: messages=PER_SECOND, "
                   "burst=N, minute=N, edit=SECONDS (between edits of one card), edits-count=yes|no; or off. "
                   "E.g. --pace messages=0.5,edit=5.")
@click.option("--redact/--no-redact", "redact", default=None,
              help="Mask secrets (API keys, tokens, passwords in URLs) in notifications [env TASK_PULSE_REDACT; "
                   "default on].")
@click.option("--state", "state_url", metavar="URL",
              help="Also forward to a shared PostgreSQL state database (postgresql://user@host/db; ${VAR} in it is "
                   "read from the environment), where daemons of several hosts meet [env TASK_PULSE_STATE]. Needs "
                   "the postgres extra: pip install 'task-pulse[postgres]'.")
@click.option("--host-name", metavar="NAME",
              help="This daemon's name in the shared state database [env TASK_PULSE_HOST; default: the host "
                   "name]. Two daemons sharing one database need two names.")
@click.option("--check", is_flag=True,
              help="Check the options and settings (building the sink), then exit: 0 if task-pulsed would run "
                   "with them, 2 if not. `task-pulse service install` uses it before writing a unit.")
@click.option("-v", "--verbose", is_flag=True, help="Log debug detail.")
@click.version_option(__version__, prog_name="task-pulsed")
def cli(tasks_dir: str | None, lang: str | None, announce_existing: bool, stall: float | None,
        progress_interval: float | None, keep_days: float | None, history_runs: int | None,
        history_days: float | None, cleanup_interval: float, rescan_interval: float,
        flood_window: float, news_burst: int, news_window: float,
        openclaw_to: str | None, openclaw_gateway: str | None, openclaw_bin: str | None, openclaw_tasks: bool,
        openclaw_tasks_kinds: str | None, openclaw_tasks_agents: str | None, exec_command: str | None,
        exec_edit: str | None, webhook: str | None, webhook_headers: tuple[str, ...], markup: str | None, style: str,
        sink_concurrency: int,
        sink_attempts: int, sink_backoff: float, sink_timeout: float, sink_processes: int | None, pace: str | None,
        redact: bool | None, state_url: str | None, host_name: str | None, check: bool, verbose: bool) -> None:
    """Watch the tasks dir and queue a chat notification for every change.

    Runs in the foreground until SIGTERM or Ctrl-C. One daemon per tasks dir. Notifications are
    pushed live through one sink (--openclaw, --exec or --webhook): by default one live card per
    task, edited in place. Whatever a sink cannot deliver, and everything when there is no sink,
    is read with `task-pulse drain`.

    \b
    Examples:
      task-pulsed --dir ~/.openclaw/workspace/tasks --lang en
      task-pulsed --openclaw telegram:123456789
      task-pulsed --openclaw 'matrix:room:!abc:example.org' --openclaw-gateway ws://127.0.0.1:18789
      task-pulsed --exec "mychat send --json --text" --exec-edit "mychat edit --id {id} --text"
      task-pulsed --webhook https://chat.example/hook --webhook-header 'Authorization: Bearer ${CHAT_TOKEN}'
      task-pulsed --state 'postgresql://pulse@db.internal/pulse' --host-name gpu-1
    """
    setup_logging(verbose)
    try:
        settings = load_settings({"tasks_dir": tasks_dir, "lang": lang, "stall_seconds": stall,
                                  "progress_interval": progress_interval, "keep_days": keep_days,
                                  "redact_secrets": redact, "state_url": state_url, "host_name": host_name,
                                  "history_runs": history_runs, "history_days": history_days})
    except TaskPulseError as exc:
        raise click.UsageError(str(exc)) from None
    if sum(x is not None for x in (openclaw_to, exec_command, webhook)) > 1:
        raise click.UsageError("--openclaw, --exec and --webhook are exclusive: one sink per daemon")
    for option, value, sink_option, sink_value in (("--webhook-header", webhook_headers, "--webhook", webhook),
                                                   ("--exec-edit", exec_edit, "--exec", exec_command),
                                                   ("--openclaw-bin", openclaw_bin, "--openclaw", openclaw_to),
                                                   ("--openclaw-gateway", openclaw_gateway, "--openclaw", openclaw_to),
                                                   ("--openclaw-tasks-kinds", openclaw_tasks_kinds, "--openclaw",
                                                    openclaw_to),
                                                   ("--openclaw-tasks-agents", openclaw_tasks_agents, "--openclaw",
                                                    openclaw_to),
                                                   ("--pace", pace, "a sink", openclaw_to or exec_command or webhook),
                                                   ("--markup", markup, "--exec or --webhook",
                                                    exec_command or webhook)):
        if value and sink_value is None:
            raise click.UsageError(f"{option} needs {sink_option}")
    slots = ProcessSlots(sink_processes or sink_concurrency)
    sink: Sink | None = None
    try:
        if openclaw_to is not None:
            sink = openclaw_sink(openclaw_to, openclaw_gateway, openclaw_bin, sink_timeout, slots,
                                 read_ledger=openclaw_tasks)
        elif exec_command is not None:
            sink = ExecSink(exec_command, timeout=sink_timeout, edit_command=exec_edit, slots=slots,
                            markup=markup or PLAIN)
        elif webhook is not None:
            sink = WebhookSink(webhook, list(webhook_headers), timeout=sink_timeout, markup=markup or PLAIN)
        if sink is not None and pace is not None:
            sink.limits = parse_pace(pace, sink.limits)
    except (ValueError, GatewayConfigError) as exc:
        raise click.UsageError(str(exc)) from None
    if settings.state_url is not None:
        try:
            import psycopg  # noqa: F401 - only to say now, not at the first forward, that it is missing
        except ImportError:
            raise click.UsageError("--state needs psycopg: pip install 'task-pulse[postgres]'") from None
    if check:
        click.echo(f"task-pulsed would watch {settings.tasks_dir}" + (f" and deliver through {sink.name} "
                   f"{sink.describe()}" if sink else "") + (f" and forward to {shown_url(settings.state_url)} as "
                   f"host {settings.host_name!r}" if settings.state_url else ""))
        if isinstance(sink, OpenClawSink):
            line, usable = check_route(sink)
            click.echo(line)
            if not usable:
                sys.exit(2)
        return
    policy = Policy(default_stall=settings.stall_seconds, progress_interval=settings.progress_interval,
                    lang=settings.lang, redact_secrets=settings.redact_secrets, invalid_window=flood_window,
                    news_burst=news_burst, news_window=news_window)
    sys.exit(run(DaemonOptions(tasks_dir=settings.tasks_dir, policy=policy, announce_existing=announce_existing,
                               keep_days=settings.keep_days, history_runs=settings.history_runs,
                               history_days=settings.history_days, rescan_seconds=rescan_interval,
                               cleanup_seconds=cleanup_interval, sink=sink, sink_concurrency=sink_concurrency,
                               delivery=DeliveryOptions(style=style, attempts=sink_attempts, backoff=sink_backoff,
                                                        lang=settings.lang, redact_secrets=settings.redact_secrets),
                               state_url=settings.state_url,
                               ledger=ledger_filter(openclaw_tasks_kinds, openclaw_tasks_agents)
                               if openclaw_tasks and isinstance(sink, OpenClawSink) and sink.client else None,
                               host=settings.host_name if settings.state_url else "")))


def openclaw_sink(destination: str, gateway: str | None, program: str | None, timeout: float,
                  slots: ProcessSlots, read_ledger: bool = False) -> OpenClawSink:
    """`--openclaw`: the gateway as OpenClaw's clients find it (unless `none`), the CLI behind it when there
    is one (with no gateway it must be there)."""
    endpoint = None if gateway == "none" else find_gateway(url=gateway)
    try:
        cli = OpenClawCLI(destination, timeout=timeout, program=program or "openclaw", slots=slots)
    except ValueError:
        if endpoint is None or program is not None:
            raise
        cli = None  # the gateway alone
    return OpenClawSink(destination, endpoint=endpoint, cli=cli, timeout=timeout, read_ledger=read_ledger)


def ledger_filter(kinds: str | None, agents: str | None) -> LedgerFilter:
    def names(words: str | None) -> frozenset[str] | None:
        found = frozenset(w.strip() for w in (words or "").split(",") if w.strip())
        return found or None

    return LedgerFilter(kinds=names(kinds), agents=names(agents))


def check_route(sink: OpenClawSink) -> tuple[str, bool]:
    """One line on how messages would go, and whether they can go at all."""
    fallback = "the openclaw CLI will be used" if sink.cli is not None else "nothing else can deliver"
    if sink.client is None:
        return "route: the openclaw CLI (--openclaw-gateway none)", True
    endpoint = sink.client.endpoint
    note = f" ({endpoint.secret_note})" if endpoint.secret_note else ""
    try:
        hello = probe(endpoint)
    except HandshakeRefused as exc:
        usable = sink.cli is not None and not exc.protocol_mismatch
        return f"route: gateway {endpoint.url}: {exc}{note}; {fallback}", usable
    except (NotSent, TimeoutError) as exc:
        return f"route: gateway {endpoint.url}: not answering ({exc or 'timed out'}){note}; {fallback} until it does", \
            True
    return f"route: gateway {endpoint.url}: ok, OpenClaw {hello.server_version}", True


def main() -> None:
    cli.main(prog_name="task-pulsed")
