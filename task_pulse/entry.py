"""`task-pulse`'s entry point: a plain writer call runs without click; everything else goes to it.

Agents and cron jobs call `next` and `heartbeat` many times a run, and task-pulse replaces a
stdlib-only script, so such a call must cost about what that script did. Importing click alone
costs more than all of a heartbeat's work (tests/benchmarks/writer_cost.py). A call made only of a
writer verb, its words and the global `--dir`, `--lang` and `--json` is therefore run right here.
Anything else (help, a verb's own options such as `--percent`, a word starting with "-", too few
words, a verb we do not fast-path) goes to the click CLI, which parses and reports it the usual
way. Both run the same functions of `task_pulse.writer`, and print the same lines. The Claude Code
hook (`hook claude-code`, run on every tool call) takes the same path past click.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence

_VALUE_OPTIONS = {"--dir": "tasks_dir", "--lang": "lang"}
_LANGS = ("zh", "en")


def _global_flags(args: Sequence[str]) -> tuple[dict[str, str], bool, int] | None:
    """The global `--dir`, `--lang` and `--json` before the verb: (flags, --json, the verb's index);
    None when anything else comes first."""
    flags: dict[str, str] = {}
    json_output = False
    i = 0
    while i < len(args) and args[i].startswith("-"):
        name, eq, value = args[i].partition("=")
        if name == "--json" and not eq:
            json_output = True
        elif name in _VALUE_OPTIONS:
            if not eq:
                i += 1
                if i == len(args):
                    return None
                value = args[i]
            flags[_VALUE_OPTIONS[name]] = value
        else:
            return None
        i += 1
    return flags, json_output, i


def plain_call(args: Sequence[str]) -> tuple[dict[str, str], bool, str, list[str]] | None:
    """(flags, --json, verb, words) when `args` is a plain writer call; None for anything else."""
    from task_pulse.writer import PLAIN_CALLS

    parsed = _global_flags(args)
    if parsed is None:
        return None
    flags, json_output, i = parsed
    if i == len(args) or args[i] not in PLAIN_CALLS or flags.get("lang", "zh") not in _LANGS:
        return None
    verb, rest = args[i], list(args[i + 1:])
    if "--" in rest:  # as for click: everything after the first `--` is a word
        cut = rest.index("--")
        head, tail = rest[:cut], rest[cut + 1:]
    else:
        head, tail = rest, []
    if any(word.startswith("-") for word in head):
        return None
    words = head + tail
    if len(words) < PLAIN_CALLS[verb][0]:
        return None
    return flags, json_output, verb, words


def hook_call(args: Sequence[str]) -> dict[str, str] | None:
    """The global flags when `args` is `[flags] hook claude-code` and nothing more: the command Claude
    Code runs on every tool call (help and anything else go to click)."""
    parsed = _global_flags(args)
    if parsed is None or list(args[parsed[2]:]) != ["hook", "claude-code"]:
        return None
    return parsed[0]


def run_plain(flags: dict[str, str], json_output: bool, verb: str, words: list[str]) -> int:
    """Run a plain writer call; its exit code (errors as one `Error:` line, as click prints them)."""
    from task_pulse.config import load_settings
    from task_pulse.errors import TaskPulseError, os_error_text
    from task_pulse.writer import PLAIN_CALLS

    try:
        outcome = PLAIN_CALLS[verb][1](load_settings(flags), words)
    except TaskPulseError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return exc.exit_code
    except OSError as exc:
        print(f"Error: {os_error_text(exc)}", file=sys.stderr)
        return 1
    for note in outcome.notes:
        print(f"note: {note}", file=sys.stderr)
    if json_output:
        import json

        line = json.dumps(outcome.data, ensure_ascii=False)
    else:
        line = outcome.text
    try:
        sys.stdout.reconfigure(errors="replace")  # type: ignore[union-attr]  # an ASCII locale: the write is done
        print(line, flush=True)
    except BrokenPipeError:  # the reader went away (`| head`): the write is done, there is no one to tell
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    hook_flags = hook_call(args)  # first: it needs no writer verbs loaded to be told apart
    if hook_flags is not None:
        from task_pulse.adapters.claude_code.hook import main as run_hook

        sys.exit(run_hook(hook_flags))
    call = plain_call(args)
    if call is None:
        from task_pulse.cli import main as click_main

        click_main(args)
        return
    sys.exit(run_plain(*call))
