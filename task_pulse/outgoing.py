"""What leaves the outbox: a stored notification as the text a chat gets, checked once more on its way out.

A notification's text was made safe when it was queued (messages.py: cleaned, capped, masked). That is
enough for the rows this dir's own daemon queued into its own state db, as long as the chat reads the
text as plain text. Two cases render it again from its structured fields (`data`), at delivery:

* the chat reads Markdown (OpenClaw, the cron route's `drain --markup markdown`): the task's words are
  escaped in the fields, not in our template (markup.py);
* the row comes from a shared state database, where any host with the URL can insert or rewrite rows:
  its name, its fields and its text are cleaned, capped and masked again here, whatever its host says,
  and a row that is not what a daemon writes (its data no JSON object, its kind no word of ours) is
  `records.Malformed` before it gets here: skipped, never delivered as it is.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from task_pulse.markup import PLAIN, escaped
from task_pulse.masking import redact
from task_pulse.messages import FIELD_CAP, chat_text, clean, has_template, render
from task_pulse.records import Queued

_LANGS = ("zh", "en")
# Lists in a notification's data (`files` of an unreadable-files summary): as many items as a summary shows.
_LIST_CAP = 100


def _cleaned(value: Any, depth: int = 0) -> Any:
    """A data value as a field: text cleaned, masked and capped; numbers as they are; lists of those."""
    if isinstance(value, str):
        return chat_text(value, FIELD_CAP)
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, list) and depth == 0:
        return [_cleaned(v, 1) for v in value[:_LIST_CAP] if not isinstance(v, list | dict)]
    return None  # nothing a daemon puts there


def outgoing(row: Queued, markup: str = PLAIN, *, recheck: bool = False, redact_secrets: bool = True) -> Queued:
    """`row` as it goes out to a `markup` chat. `recheck` (a shared state db's rows): nothing it holds is
    trusted, every text is cleaned and masked again. Unchanged when neither is needed."""
    if markup == PLAIN and not recheck:
        return row
    data = {str(k)[:64]: _cleaned(v) for k, v in row.data.items()} if recheck else row.data
    name = chat_text(row.task_name, FIELD_CAP) if recheck else row.task_name
    lang = data.get("lang") if data.get("lang") in _LANGS else "zh"
    if has_template(row.kind):
        text = render(row.kind, data, lang, markup)
    else:  # a kind this version does not know (a newer host's): its own text, line by line, behind a mark of ours
        lines = [escaped(clean(line, 3 * FIELD_CAP), markup) for line in row.text.split("\n")[:3]]
        text = "📝 " + "\n".join(line for line in lines if line)  # never a first word like "--output=…"
    if recheck or redact_secrets:
        text = redact(text)
    return replace(row, task_name=name, data=data, text=text)
