"""`task-pulse board`: every task on one live page in the browser (the `board` extra).

The command checks everything a person can get wrong (the address, the token, the tasks dir or the
shared db, the web parts being installed) before it listens, each as one line; then it says where
the page is and serves it until stopped. The server itself is task_pulse/board, imported only here.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from task_pulse.cli.base import Context, cli, emit, json_option, pass_ctx, state_option
from task_pulse.errors import BadInput, OperationFailed, os_error_text

if TYPE_CHECKING:
    from task_pulse.board.source import Source

DEFAULT_BIND, DEFAULT_PORT, DEFAULT_LIMIT = "127.0.0.1", 8765, 1000
TOKEN_ENV = "TASK_PULSE_BOARD_TOKEN"
MIN_TOKEN = 16  # characters: a token someone could guess is no token


def read_token(token_file: str | None) -> str | None:
    """The board's token: from `--token-file`, else TASK_PULSE_BOARD_TOKEN (the environment, else the
    service's env file ~/.config/task-pulse/env). A file others can read is refused, as is a short token."""
    if token_file is not None:
        path = Path(os.path.expanduser(token_file))
        try:
            st = path.stat()
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = os_error_text(exc) if isinstance(exc, OSError) else "not UTF-8 text"
            raise BadInput(f"--token-file {token_file}: {reason}") from None
        if stat.S_IMODE(st.st_mode) & 0o077 or st.st_uid != os.geteuid():
            raise BadInput(f"--token-file {path} can be read by others (mode {stat.S_IMODE(st.st_mode):o}): "
                           f"make it yours alone: chmod 600 {path}")
        token, where = text.strip(), f"--token-file {path}"
    else:
        from task_pulse.service import SECRETS_FILE, read_env_file

        token = os.environ.get(TOKEN_ENV) or read_env_file(Path(os.path.expanduser(SECRETS_FILE))).get(TOKEN_ENV)
        if not token:
            return None
        token, where = token.strip(), TOKEN_ENV
    if len(token) < MIN_TOKEN or any(c.isspace() for c in token):
        raise BadInput(f"{where}: the token must be at least {MIN_TOKEN} characters without spaces "
                       "(make one: python3 -c 'import secrets; print(secrets.token_urlsafe(24))')")
    return token


@cli.command()
@click.option("--bind", metavar="ADDRESS", envvar="TASK_PULSE_BOARD_BIND", default=DEFAULT_BIND,
              help=f"Address to listen on; anything but loopback needs a token [env TASK_PULSE_BOARD_BIND; "
                   f"default {DEFAULT_BIND}].")
@click.option("--port", type=click.IntRange(0, 65535), envvar="TASK_PULSE_BOARD_PORT", default=DEFAULT_PORT,
              metavar="PORT", help=f"Port (0: any free one) [env TASK_PULSE_BOARD_PORT; default {DEFAULT_PORT}].")
@click.option("--token-file", metavar="FILE",
              help=f"A file (mode 600) holding the token every request must then carry [else {TOKEN_ENV} from the "
                   "environment or ~/.config/task-pulse/env].")
@click.option("--limit", type=click.IntRange(min=1), default=DEFAULT_LIMIT, show_default=True, metavar="N",
              help="Tasks the page lists at most: the most worth seeing; all of them are counted.")
@state_option
@json_option
@pass_ctx
def board(ctx: Context, bind: str, port: int, token_file: str | None, limit: int, state_url: str | None) -> None:
    """Serve a live page of every task: steps, progress, stalls, failures, history drawn.

    It reads the tasks dir and its state db (never writes either), or with --state every
    host's tasks in the shared state db, and pushes each change to the open pages within a
    second. Texts are masked and escaped as in the chat. It listens on 127.0.0.1:8765 only;
    another address needs a token, which every request must then carry (the page asks for it
    once). Needs the board extra: pip install 'task-pulse[board]'.

    \b
    Examples:
      task-pulse board                     # then open http://127.0.0.1:8765/
      task-pulse board --state postgresql://pulse@db.internal/pulse
      task-pulse board --bind 0.0.0.0 --token-file ~/.config/task-pulse/board-token
    """
    try:
        from task_pulse.board.server import BoardConfig, is_loopback, listening_socket, serve
    except ImportError as exc:
        raise OperationFailed(f"task-pulse board needs its web parts ({exc.name} is missing): "
                              "pip install 'task-pulse[board]'") from None
    token = read_token(token_file)
    if token is None and not is_loopback(bind):
        raise BadInput(f"--bind {bind} is not a loopback address: the board serves it only with a token "
                       f"(--token-file FILE, or {TOKEN_ENV}=… in ~/.config/task-pulse/env)")
    if state_url is not None:
        ctx.flags["state_url"] = state_url
    settings = ctx.settings
    source, where = _source(ctx, limit)
    try:
        sock = listening_socket(bind, port)
    except OSError as exc:
        source.close()
        raise OperationFailed(f"cannot listen on {bind}:{port}: {os_error_text(exc)}") from None
    host, bound = sock.getsockname()[:2]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
    emit(ctx, f"board: {url} ({where}){' · token required' if token else ''}",
         {"url": url, "bind": host, "port": bound, "where": where, "shared": settings.state_url is not None,
          "token": token is not None, "pid": os.getpid()})
    sys.stdout.flush()
    _log_to_stderr()
    serve(BoardConfig(bind=host, port=bound, token=token, limit=limit, lang=ctx.lang,
                      redact_secrets=settings.redact_secrets, where=where, shared=settings.state_url is not None),
          source, sock)


def _source(ctx: Context, limit: int) -> tuple[Source, str]:
    """What the board reads, checked now: (source, where it reads, as the page says it)."""
    from task_pulse.board.source import LocalSource, SharedSource

    settings = ctx.settings
    if settings.state_url is not None:
        from task_pulse.cli.reader import shared_db
        from task_pulse.state.shared import shown_url

        try:
            with shared_db(settings.state_url):  # reachable, and of this version's schema: else one line now
                pass
        except ImportError:
            raise OperationFailed("--state needs the postgres extra: pip install 'task-pulse[postgres]'") from None
        return (SharedSource(settings.state_url, settings.stall_seconds, limit, ctx.lang, settings.redact_secrets),
                shown_url(settings.state_url))
    store = ctx.store
    if not store.root.is_dir():
        raise BadInput(f"there is no tasks dir {store.root} (a typo? --dir DIR or TASK_PULSE_DIR)")
    store.private_path("state.db")  # `.pulse/` checked now (UnsafeDir: one line, exit 2)
    home = Path.home()
    shown = f"~/{store.root.relative_to(home)}" if store.root.is_relative_to(home) and store.root != home else \
        str(store.root)
    return LocalSource(store, settings.stall_seconds, limit, ctx.lang, settings.redact_secrets), shown


def _log_to_stderr() -> None:
    import logging

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("task-pulse board: %(message)s"))
    log = logging.getLogger("task-pulse.board")
    log.addHandler(handler)
    log.setLevel(logging.INFO)
