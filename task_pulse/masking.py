"""Masking: secrets an agent pastes into a step message, an error or a name never reach the chat.

What is kept of a secret (a prefix such as `sk-`, `AKIA`, `password=`) says what was there without
giving it away. Four kinds of rules, each one a shape people really paste:

* token prefixes: a provider's key or token is recognised by how it starts (`sk-`, `ghp_`, `AIza`,
  `glpat-`, `hf_`, a JWT's `eyJ…`), and masked after that prefix;
* secrets in URLs: `user:password@`, the token path of a Slack, Discord or Teams webhook, a Telegram
  bot token, a signature (`sig=`, `X-Amz-Signature=`);
* names: `NAME=value` and `name: value` where the name is one people give secrets (`…_KEY`,
  `…SECRET…`, `…PASSWORD`, `…_TOKEN`, `AccountKey`), command-line options (`--password VALUE`,
  `mysql -pVALUE`, `curl -u user:pass`), headers (`Authorization:`, `Cookie:`);
* key blocks: a PEM or PGP private key, also one split across two fields (the half with the END line
  is masked too).

Before any rule is tried, invisible characters that could split a token so that no rule sees it
(`ghp\u200b_…`) are removed: every Unicode default-ignorable code point, except the joiners and
selectors that shape emoji and scripts (those only where they sit inside an ASCII word).

What masking cannot promise is in docs/guarantees.md: a bare key with no prefix and no name (a 40-
character AWS secret on its own), base64 or hex of a secret, a secret split over several fields
without a marker.
"""

from __future__ import annotations

import functools
import re

# -- invisible characters ---------------------------------------------------------------------------
# Unicode's Default_Ignorable_Code_Point (DerivedCoreProperties.txt, Unicode 15), in two sets: those with no
# use in text a person writes (always removed), and those that shape emoji, flags and some scripts (ZWJ in
# 👨‍👩‍👧, U+FE0F in ⚠️, tag characters in 🏴󠁧󠁢󠁳󠁣󠁴󠁿, Mongolian variation selectors), removed only inside an ASCII word.
_ALWAYS_INVISIBLE = ("\u00ad\u034f\u061c\u180e\u200b\u200e\u200f\u202a-\u202e\u2060-\u206f\u3164\ufeff\uffa0"
                     "\ufff0-\ufff8\U0001bca0-\U0001bca3\U0001d173-\U0001d17a\U000e0000-\U000e001f"
                     "\U000e0080-\U000e00ff\U000e01f0-\U000e0fff")
_SHAPING_INVISIBLE = ("\u115f\u1160\u17b4\u17b5\u180b-\u180d\u180f\u200c\u200d\ufe00-\ufe0f\U000e0020-\U000e007f"
                      "\U000e0100-\U000e01ef")
_INVISIBLE = f"(?<=[!-~])[{_ALWAYS_INVISIBLE}{_SHAPING_INVISIBLE}]+(?=[!-~])|[{_ALWAYS_INVISIBLE}]"

# -- rules --------------------------------------------------------------------------------------------
_TOKEN = "A-Za-z0-9_-"
# (pattern, flags, replacement, triggers). The replacement keeps group 1: what the secret was, never its value. A
# pattern is tried only on a text that holds one of its triggers (lower case): a secret cannot be there without.
_AWS_IDS = ("akia", "asia", "agpa", "aida", "aroa", "aipa", "anpa", "anva", "abia", "acca")
_NAME_WORDS = ("pass", "pwd", "token", "secret", "key", "auth", "sig", "cred")
SECRETS: list[tuple[str, int, str, tuple[str, ...]]] = [
    # token prefixes
    (r"\b(sk-(?:ant-|proj-|svcacct-|admin-)?)[A-Za-z0-9_-]{16,}", 0, r"\1***", ("sk-",)),  # OpenAI, Anthropic
    (r"\b((?:sk|rk)_(?:live|test)_)[0-9A-Za-z]{12,}", 0, r"\1***", ("_live_", "_test_")),  # Stripe keys
    (r"\b(whsec_)[0-9A-Za-z]{16,}", 0, r"\1***", ("whsec_",)),  # Stripe webhook secrets
    (r"\b(gh[pousr]_)[A-Za-z0-9]{20,}", 0, r"\1***", ("ghp_", "gho_", "ghu_", "ghs_", "ghr_")),
    (r"\b(github_pat_)[A-Za-z0-9_]{20,}", 0, r"\1***", ("github_pat_",)),
    (r"\b(gl(?:pat|dt|rt|ptt|oas|cbt|imt|ft|soat|agent)-)[" + _TOKEN + r"]{20,}", 0, r"\1***",  # GitLab
     ("glpat-", "gldt-", "glrt-", "glptt-", "gloas-", "glcbt-", "glimt-", "glft-", "glsoat-", "glagent-")),
    (r"\b(xox[abposre]-|xapp-|xoxe\.xox[bp]-)[A-Za-z0-9-]{10,}", 0, r"\1***", ("xox", "xapp-")),  # Slack
    (r"\b(AIza)[0-9A-Za-z_-]{35}", 0, r"\1***", ("aiza",)),  # Google API keys
    (r"\b(ya29\.)[0-9A-Za-z_-]{20,}", 0, r"\1***", ("ya29.",)),  # Google OAuth access tokens
    (r"(?<![\w/])(1//0)[0-9A-Za-z_-]{30,}", 0, r"\1***", ("1//0",)),  # Google OAuth refresh tokens
    (r"\b(hf_)[A-Za-z0-9]{30,}", 0, r"\1***", ("hf_",)),  # Hugging Face
    (r"\b(npm_)[A-Za-z0-9]{36}", 0, r"\1***", ("npm_",)),
    (r"\b(pypi-)[A-Za-z0-9_-]{50,}", 0, r"\1***", ("pypi-",)),
    (r"\b(SG\.)[A-Za-z0-9_-]{16,}\.[A-Za-z0-9_-]{16,}", 0, r"\1***", ("sg.",)),  # SendGrid
    # DigitalOcean, Shopify, Linear, Postman, Grafana, Vault, Supabase, Sentry, Atlassian, xAI, Groq,
    # Perplexity, NVIDIA: a prefix, then a token with a digit in it (no English word is one)
    (r"(?<![A-Za-z0-9_=.-])(do[opr]_v1_|shp(?:at|ss|ca|pa)_|lin_api_|PMAK-|gl(?:sa|c)_|hvs\.|sbp_|sntry[su]_|ATATT3|"
     r"xai-|gsk_|pplx-|nvapi-)(?=[A-Za-z_=.-]{0,40}\d)[A-Za-z0-9_=.-]{20,}", 0, r"\1***",
     ("_v1_", "shp", "lin_api_", "pmak-", "glsa_", "glc_", "hvs.", "sbp_", "sntry", "atatt3", "xai-", "gsk_", "pplx-",
      "nvapi-")),
    (r"\b((?:AKIA|ASIA|AGPA|AIDA|AROA|AIPA|ANPA|ANVA|ABIA|ACCA))[0-9A-Z]{16}\b", 0, r"\1***", _AWS_IDS),  # AWS ids
    # JWTs. Only where a token starts: "eyJ-eyJ-…" must not be scanned again from every eyJ in it.
    (r"(?<![A-Za-z0-9_-])(eyJ)[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", 0, r"\1***", ("eyj",)),
    (r"\b([MNO][A-Za-z0-9_-]{23,25}\.[A-Za-z0-9_-]{6}\.)[A-Za-z0-9_-]{27,}", 0, r"\1***", (".",)),  # Discord bots
    # Telegram bot tokens, also inside their URLs (…/bot123456789:AA…/sendMessage)
    (r"(?:\b|(?<=bot))(\d{8,10}:)[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])", 0, r"\1***", (":",)),
    # secrets in URLs
    (r"(hooks\.slack\.com/(?:services|workflows|triggers)/)[A-Za-z0-9/_-]+", re.I, r"\1***", ("hooks.slack",)),
    (r"(discord(?:app)?\.com/api/(?:v\d+/)?webhooks/\d+/)[A-Za-z0-9_.-]+", re.I, r"\1***", ("webhooks",)),
    (r"(\.webhook\.office\.com/webhookb2/|outlook\.office(?:365)?\.com/webhook/)[^\s\"'<>]+", re.I, r"\1***",
     ("webhook",)),
    # user:password@ in URLs, an empty user (redis://:pw@host) and an @ inside the password too
    (r"(://[^/:@\s]*:)[^/\s]*(@)(?=[^/@\s]+)", 0, r"\1***\2", ("://",)),
    # headers and command lines
    (r"\b(Bearer\s+)[A-Za-z0-9._~+/=-]{8,}", re.I, r"\1***", ("bearer",)),
    (r"\b(Authorization[ \t]*[:=][ \t]*[A-Za-z]+[ \t]+)[A-Za-z0-9._~+/=-]{4,}", re.I, r"\1***",  # Basic, Token …
     ("authorization",)),
    (r"\b((?:Set-)?Cookie[ \t]*:[ \t]*)[^\s;\"']+(?:;[ \t]*[^\s;\"']+)*", re.I, r"\1***", ("cookie",)),
    (r"(?<![\w-])(--?(?:password|passwd|pass|passphrase|token|secret|api-?key|access-token|auth-token|"
     r"client-secret)[ \t]+['\"]?)(?![-'\"])[^\s'\"]+", re.I, r"\1***", ("pass", "token", "secret", "key")),
    (r"\b((?:mysql\w*|mariadb\w*)\b[^\n]{0,200}?[ \t]-p)(?=[^\s-])[^\s'\"]+", 0, r"\1***",  # mysql -pVALUE
     ("mysql", "mariadb")),
    (r"\b(sshpass[ \t]+-p[ \t]*)(?=[^\s-])[^\s'\"]+", 0, r"\1***", ("sshpass",)),
    # curl -u user:pass (not docker's -u 1000:1000, a uid and a gid)
    (r"(?<![\w-])((?:-u|--user)[ \t=]+['\"]?[^\s:'\"@]+:)(?!\d+(?![^\s'\"@]))[^\s'\"@]+", 0, r"\1***",
     ("-u", "--user")),
]
# NAME=value and NAME: value (--name=value, "name": "value" too). Which names are secret is decided
# apart, on the name alone: one bounded pattern, no nested repeats for a long input to backtrack on.
_ASSIGNMENT = r"(?<![A-Za-z0-9_.-])([A-Za-z0-9_.-]{1,64})[\"']?[ \t]*([=:])[ \t]*[\"']?"
_VALUE = r"[^&#\s\"',;}]+"  # what follows a secret's name, up to where a query, a list or a quote goes on
# How people name secrets, read on the name alone: …PASSWORD (PGPASSWORD, DB_PASSWORD), anything with SECRET
# in it (SECRET_KEY, client_secret), …TOKEN (GITHUB_TOKEN, access_token; not token_count), …_KEY in capitals
# and api-key, access_key, AccountKey (not sort_key), a signature (sig=, X-Amz-Signature), credentials.
_KEY_NAMES = r"(?:api|access|private|secret|account|sharedaccess|shared[_-]access|signing|encryption|master|client|" \
             r"license|app|service[_-]?account|session)[_-]?key"
_SECRET_NAME = (r"(?i)(?:password|passwd|passphrase|secret|token|credentials?|" + _KEY_NAMES +
                r")$|secret|(?:^|[_.-])(?:pwd|pass|auth|sig|signature|creds)$")
_CAPITAL_KEY = r"[A-Z0-9][_-]KEY$"  # AWS_ACCESS_KEY, STRIPE_KEY: an environment variable's name
# `name: value` is also plain prose ("auth: ok", "signature: verified"): only names that cannot mean anything else.
_SECRET_NAME_COLON = r"(?i)(?:password|passwd|passphrase|secret|token|" + _KEY_NAMES + r")$|(?:^|[_-])secret"
# Key blocks: masked by `_mask_key_blocks`, in one pass (a regex over everything after a header would
# rescan the text from every header).
_KEY_BEGIN = r"-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
_KEY_END = r"-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----"
# What the lines of a key block hold (base64, and a PGP armor's `Version: …` and `Comment: …` headers).
_KEY_LINES = r"[A-Za-z0-9+/=\s:,.()_-]*"
_BASE64_OR_SPACE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/= \t")  # one line
_KEY_BEFORE_END_MIN = 16  # base64 characters just before an END line that are taken for a key's tail


def _mask_assignments(text: str) -> str:
    """Every `NAME=value` and `NAME: value` whose name is a secret's, value masked. The value is read only after
    a secret's name: any other name gives up just itself and its separator, so what follows is read as text
    again (`Error: password=…` is a name, `Error`, before the assignment that matters), and `a=a=a=…` costs
    one step per name, never a value's length each."""
    assignment, value = _assignment()
    out: list[str] = []
    kept = search_from = 0
    while (match := assignment.search(text, search_from)) is not None:
        search_from = match.end()
        if _names_a_secret(match.group(1).lstrip("-"), match.group(2)) and \
                (secret := value.match(text, match.end())) is not None:
            out.append(text[kept:match.end()] + "***")
            kept = search_from = secret.end()
    return "".join(out) + text[kept:]


def _names_a_secret(name: str, separator: str) -> bool:
    secret_name, capital_key, secret_name_colon = _name_rules()
    if separator == ":":
        return secret_name_colon.search(name) is not None
    return secret_name.search(name) is not None or capital_key.search(name) is not None


def _mask_key_blocks(text: str) -> str:
    """A private key after its BEGIN line, up to its END line or the end of the line, becomes ***; so does the
    base64 just before an END line whose BEGIN is elsewhere (a key split across two fields). One pass each."""
    key_begin, key_end, key_lines = _key_rules()
    out: list[str] = []
    at = 0
    while (begin := key_begin.search(text, at)) is not None:
        line_end = text.find("\n", begin.end())
        line_end = len(text) if line_end == -1 else line_end
        end = key_end.search(text, begin.end())
        if end is not None and end.start() > line_end and not key_lines.fullmatch(text, begin.end(), end.start()):
            end = None  # an END further down, past lines that are no key (a card's other steps): not this key's
        out.append(text[at:begin.end()] + "***")
        at = line_end if end is None else end.end()
    text = "".join(out) + text[at:]
    if "-----END" not in text:
        return text
    out, at = [], 0
    for end in key_end.finditer(text):
        start = end.start()
        while start > at and text[start - 1] in _BASE64_OR_SPACE:
            start -= 1
        tail = text[start:end.start()]
        body = tail.strip()
        if len(body) - sum(c in " \t\r\n" for c in body) >= _KEY_BEFORE_END_MIN:
            lead = len(tail) - len(tail.lstrip())
            out.append(text[at:start + lead] + "***" + tail[len(tail.rstrip()):])
        else:
            out.append(text[at:end.start()])
        at = end.start()
    return "".join(out) + text[at:]


Rule = tuple[re.Pattern[str], str, tuple[str, ...]]


@functools.cache
def _patterns() -> list[Rule]:
    """Each secret's pattern, with the words a text must hold for it to be tried."""
    rules: list[Rule] = [(re.compile(p, flags), replacement, triggers) for p, flags, replacement, triggers in SECRETS]
    return rules


@functools.cache
def _assignment() -> tuple[re.Pattern[str], re.Pattern[str]]:
    return re.compile(_ASSIGNMENT), re.compile(_VALUE)


# Every pattern is compiled when first needed, never at import: a writer call (a process per heartbeat)
# masks one short text, which mostly needs none of them (tests/benchmarks/writer_cost.py).
@functools.cache
def _name_rules() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    return re.compile(_SECRET_NAME), re.compile(_CAPITAL_KEY), re.compile(_SECRET_NAME_COLON)


@functools.cache
def _key_rules() -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    return re.compile(_KEY_BEGIN), re.compile(_KEY_END), re.compile(_KEY_LINES)


def without_invisible(text: str) -> str:
    """`text` without the invisible characters that could split a secret (see `_ALWAYS_INVISIBLE`)."""
    return text if text.isascii() else _invisible().sub("", text)  # every one of them is past ASCII


@functools.cache
def _invisible() -> re.Pattern[str]:
    return re.compile(_INVISIBLE)


@functools.cache
def _could_hold_a_secret() -> re.Pattern[str]:
    """A first look, on the text in lower case, that costs a twentieth of compiling the patterns: every rule's
    triggers as plain words in one alternation (an alternation of literals is what `re` scans fastest), the
    digits of a bot token and the dotted middle of a Discord token for the two rules whose triggers (`:`, `.`)
    every text has. A text with none of these is left as it is. The Claude Code hook is a process per tool
    call, and most of what it masks ("Bash: Run test suite") has none: compiling every pattern would be a fifth
    of its work."""
    words = {t for *_, triggers in SECRETS for t in triggers} | set(_NAME_WORDS) | {"-----"}
    words -= {".", ":"}
    words = {w for w in words if not any(o != w and o in w for o in words)}  # "pass" covers "sshpass"
    return re.compile("|".join(re.escape(w) for w in sorted(words)) + r"|\d{8}|\.[a-z0-9_-]{6}\.")


def redact(text: str) -> str:
    """`text` with common secrets masked, after removing invisible characters that could split them."""
    text = without_invisible(text)
    if not _could_hold_a_secret().search(text.lower()):
        return text
    return mask(text)


def mask(text: str) -> str:
    """The rules themselves, on text whose invisible characters are gone (see `redact`). A rule is tried only
    where one of its triggers is (masking only ever takes words away, so the text's triggers stay a superset)."""
    if "-----" in text:
        text = _mask_key_blocks(text)
    lowered = text.lower()
    for pattern, replacement, triggers in _patterns():
        if any(t in lowered for t in triggers):
            text = pattern.sub(replacement, text)
    if any(t in lowered for t in _NAME_WORDS):
        text = _mask_assignments(text)
    return text
