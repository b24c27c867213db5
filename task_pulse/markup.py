"""Task text is text in every chat: what neutralises a chat's formatting in what a task file says.

OpenClaw reads every message it sends as Markdown, on every channel (its Markdown IR, markdown-it with
`linkify` and raw HTML off): Matrix gets it as `formatted_body` HTML, Telegram as HTML, IRC stripped to
plain text (a labelled link as `label (url)`). So a step named `[Approve here](https://evil.example)`
would reach the user's own trusted chat as a link whose target hides behind the label, `@room` would
ring the whole room, `||…||` would hide text behind a Matrix spoiler, `&#x202e;` would become the
bidi override that `messages.clean` removed.

`escape_markdown` backslash-escapes, in text that came from a task, every character that opens
Markdown there (CommonMark makes a backslash before ASCII punctuation that character, literally, and
no renderer shows the backslash): link and image brackets, `<` (autolinks, HTML), emphasis, code,
strikethrough, table and spoiler bars, mentions, entities. A URL stays a URL: a bare
`https://evil.example/x` is still turned into a link by the chat, but its label is the URL itself,
so its target is never hidden. Only the template around the fields is ours, and it holds no Markdown.

Which markup a text is rendered for is the sink's (`Sink.markup`): `markdown` for OpenClaw (both the
gateway and the CLI route) and for the cron route's `drain --markup markdown`; `plain` for what
is printed to a terminal or handed to a command or webhook (unless `--markup markdown` asks).
"""

from __future__ import annotations

import functools
import re

PLAIN, MARKDOWN = "plain", "markdown"
MARKUPS = (PLAIN, MARKDOWN)

# A URL as a chat's linkify takes it: escaping inside would put a backslash into the link itself, so
# only what could still make a labelled link there (a bracket, a backslash before one) is escaped.
_URL = r"[A-Za-z][A-Za-z0-9+.-]{1,31}://[^\s<]*"
# `_` only where it can open or close emphasis (not inside a word: file_name_x stays as it is), `&` only
# where it starts an entity.
_SPECIAL = r"[\\`*~\[\]<|@]|&(?=#|[A-Za-z][A-Za-z0-9]{0,31};)|(?<![^\W_])_|_(?![^\W_])"
_SPECIAL_IN_URL = r"[\\\[\]]"


def escape_markdown(text: str) -> str:
    """`text` as Markdown that renders as exactly `text`, with no link, mention or formatting of its own."""
    url_pattern, special, special_in_url = _patterns()
    if not special.search(text):
        return text
    out: list[str] = []
    at = 0
    for url in url_pattern.finditer(text):
        out.append(special.sub(r"\\\g<0>", text[at:url.start()]))
        out.append(special_in_url.sub(r"\\\g<0>", url.group(0)))
        at = url.end()
    out.append(special.sub(r"\\\g<0>", text[at:]))
    return "".join(out)


@functools.cache
def _patterns() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    """Compiled when first needed: a writer call loads this module and never escapes anything."""
    return re.compile(_URL), re.compile(_SPECIAL), re.compile(_SPECIAL_IN_URL)


def escaped(text: str, markup: str) -> str:
    """`text` from a task file, ready to go into a `markup` message."""
    return escape_markdown(text) if markup == MARKDOWN else text
