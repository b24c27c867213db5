"""What masking secrets costs per notification, what it catches, and what a high-entropy rule would cost in
false alarms on ordinary progress text; how a maintained detector (detect-secrets) compares.

Side by side in one run, medians of --runs rounds over the same corpus:

  ours      `make_notification` (clean + cap + mask every field, render, mask the whole text) with masking
            on, minus the same with masking off: the cost masking adds to one notification;
  redact    `task_pulse.masking.redact` alone, per field of text;
  detect-secrets  (when importable: `pip install detect-secrets`) every plugin of its default
            settings on the same field, without its eager mode (which reports every word), per field.

Then coverage on the secret shapes the two hardening reviews listed (does the text still show the secret?),
and false alarms on ordinary progress messages: a fixed list, and 2,000 lines generated (seeded) from what
agents' progress lines hold (paths, URLs, commit hashes, UUIDs, image digests, npm integrity hashes, document
and object ids, base64 of content). A candidate high-entropy rule (a run of 20+ token characters with upper
case, lower case and a digit, whose Shannon entropy is at least --entropy bits per character) is measured
on both: what it would catch that the rules do not (bare keys), and what it would mask that is no secret.

    .venv/bin/python tests/benchmarks/masking_cost.py
"""

from __future__ import annotations

import argparse
import math
import random
import re
import statistics
import string
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence

from task_pulse import messages
from task_pulse.masking import redact
from task_pulsed.differ import make_notification

ORDINARY = [
    "抓取了25条数据", "processed 60% of 1,204 rows", "wrote report.md (12 KB)", "token_count=5120 pass_rate=0.93",
    "build 7f3a9c2 ok in 3m12s", "uploaded to s3://reports/2026-11-25/daily.pdf", "waiting for the GPU queue",
    "Basic-configuration loaded from config.yaml", "retrying https://api.example.com/v1/jobs/42 (HTTP 503)",
    "发布到 Telegram 频道 @daily_news", "commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904 pushed",
    "model gpt-4o answered in 2.3 s", "step 3/5: compiling 1,024 files", "ssh deploy@10.0.0.7 ok",
    "docker run -u 1000:1000 builder", "sort_key=created_at", "mysql -h db -P 3306 -e 'select 1'",
    "signature: verified", "cookie banner shown", "used 12,345 tokens (max_tokens=4096)", "⚠️ disk 91% full",
    "passed 120 of 120 tests", "the secret ingredient is love", "mkdir -p build && cd build",
]
# What agents' progress lines hold, to make ordinary lines from (seeded: the same corpus every run).
_TEMPLATES = [
    "commit {hex40} pushed to origin/main", "image sha256:{hex64} pulled", "request {uuid} answered 200",
    "npm integrity sha512-{b64_88} ok", "opened https://docs.google.com/document/d/{id44}/edit",
    "created chatcmpl-{id29} in {n} ms", "customer cus_{id14} charged", "video https://youtu.be/{id11}",
    "pod api-{hex9}-{lower5} Running", "trace {hex32} sampled", "uploaded {path} ({n} KB)",
    "GET https://api.example.com/v1/items?page={n}&per_page=50 (HTTP 200)", "wrote {path} in {n} ms",
    "thumbnail data:image/png;base64,{b64_60}", "cache key {b64_22} hit", "session {id26} resumed",
    "tested {n} of {n} cases, 0 failed", "build #{n} ({hex7}) green in {n}s", "S3 s3://bucket/{path} ETag {hex32}",
    "deployed {lower5}-{n} to eu-west-1", "message ts {n}.{n} posted", "short link https://bit.ly/{id7}",
]
SECRETS = {
    "telegram bot URL": "POST https://api.telegram.org/bot123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsawq/sendMessage",
    "DB_PASSWORD=": "env DB_PASSWORD=Zx9!kq2Lm7 started",
    "GITHUB_TOKEN=": "GITHUB_TOKEN=ghp_16C7e42F292c6912E7710c838347Ae178B4a push",
    "AWS secret": "AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "--password=": "mysql --password=s3cr3t-Pa55 -h db",
    "password: x": "login failed, password: hunter2xyz",
    "Authorization: Basic": "curl -H 'Authorization: Basic dXNlcjpwYXNzd29yZDEyMw=='",
    "redis://:pw@host": "connect redis://:Redis-Pass-99@cache:6379/0",
    "@ in URL password": "https://bob:p@ss-w0rd@git.example.com/repo.git",
    "sk- with zero-width space": "key sk-proj-abcdefghij\u200bklmnopqrstuvwxyz0123456789",
    "ghp_ with soft hyphen": "token ghp_abcdefghij\u00adklmnopqrstuvwxyz0123456789",
    "Bearer": "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.abcdefghijklmnop",
    "Slack token": "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",
    "private key": "-----BEGIN RSA PRIVATE KEY----- MIIEowIBAAKCAQEA",
    # the second review's
    "JWT": "auth eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6y",
    "Google AIza": "maps key AIzaSyA-1234567890abcdefghijklmnopqrstu in use",
    "Google ya29.": "oauth ya29.a0AfH6SMBx3kLQ-abcdefghijklmnopqrstuvwxyz012",
    "Stripe sk_live_": "stripe sk_live_51HabcdefghijklmnopQRSTUV",
    "Stripe rk_live_": "restricted rk_live_51HabcdefghijklmnopQRSTUV",
    "Slack xapp-": "slack app xapp-1-A0123456789-1234567890123-abcdef0123456789",
    "Slack xoxe-": "slack refresh xoxe-1-My0xLTEtMTIzNDU2Nzg5MA",
    "GitLab glpat-": "gitlab glpat-aBcDeFgHiJkLmNoPqRsTu",
    "Hugging Face hf_": "hub hf_aBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgH",
    "npm npm_": "npm_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 publish",
    "PyPI pypi-": "twine pypi-AgEIcHlwaS5vcmcCJDBhYmNkZWZnLWhpamstbG1uby1wcXJzLXR1dnd4eXo",
    "SendGrid SG.": "mail SG.aBcDeFgHiJkLmNoPqRsTuV.wXyZaBcDeFgHiJkLmNoPqRsTuVwXyZaBcDeFgHiJkLmNo",
    "AWS ASIA": "sts ASIAIOSFODNN7EXAMPLE temporary",
    "Slack webhook": "posting to https://hooks.slack.com/services/T00000000/B00000000/XXXXXXXXXXXXXXXXXXXXXXXX",
    "Discord webhook": "https://discord.com/api/webhooks/123456789012345678/aBcDeFgHiJkLmNoPqRsTuVwXyZ-0123456789",
    "Azure AccountKey=": "DefaultEndpointsProtocol=https;AccountName=acct;AccountKey=AbCdEf0123456789+/==;",
    "SAS sig=": "GET https://acct.blob.core.windows.net/c/f?sv=2022-11-02&se=2026&sp=r&sig=AbCd%2BEfGh0123%3D",
    "Cookie: session=": "curl -H 'Cookie: session=9f8e7d6c5b4a3f2e1d0c; theme=dark' https://x",
    "PGPASSWORD=": "PGPASSWORD=Zx9kq2Lm7 psql -h db",
    "SECRET_KEY=": "SECRET_KEY=django-insecure-abc123 ./manage.py",
    "--password VALUE": "mysql --password hunter2 -h db",
    "mysql -pVALUE": "mysql -u root -phunter2 shop",
    "curl -u user:pass": "curl -u admin:hunter2 https://api.example.com",
    "PGP private key": "-----BEGIN PGP PRIVATE KEY BLOCK----- Version: GnuPG v2 lQOYBF0cJXEBCADAbCdEf",
    "a key's second half": "…continued: yMUXXvVjSxZ8c0lYJAbCdEfGhIjKlMn== -----END RSA PRIVATE KEY-----",
    "U+FE0F in a token": "ghp_0123456789\ufe0fabcdefghijABCDEFGHIJ012345",
    "U+E0020 in a token": "ghp_0123456789\U000e0020abcdefghijABCDEFGHIJ012345",
    "U+3164 in a token": "ghp_0123456789\u3164abcdefghijABCDEFGHIJ012345",
    "U+034F in a token": "sk-proj-abcdefghij\u034fklmnopqrstuvwxyz0123",
}
# What no rule of a name or a prefix can see: a key on its own (docs/guarantees.md).
BARE = {
    "bare AWS secret (40)": "rotated to wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "bare base64 key (32)": "new key q7Vx3LmZ9pT2wR8sK4nY6bH1cJ5dF0gA",
    "bare hex key (40)": "api key 8f4e2a9c1b7d3e5f6a0b2c4d6e8f1a3b5c7d9e0f",
}


def generated_ordinary(count: int, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    alnum, b64 = string.ascii_letters + string.digits, string.ascii_letters + string.digits + "+/"

    def run(chars: str, n: int) -> str:
        return "".join(rng.choice(chars) for _ in range(n))

    def fill(template: str) -> str:
        values = {"hex40": run("0123456789abcdef", 40), "hex64": run("0123456789abcdef", 64),
                  "hex32": run("0123456789abcdef", 32), "hex9": run("0123456789abcdef", 9),
                  "hex7": run("0123456789abcdef", 7), "lower5": run(string.ascii_lowercase, 5),
                  "uuid": "-".join(run("0123456789abcdef", k) for k in (8, 4, 4, 4, 12)),
                  "b64_88": run(b64, 86) + "==", "b64_60": run(b64, 60), "b64_22": run(b64, 22),
                  "id44": run(alnum + "-_", 44), "id29": run(alnum, 29), "id14": run(alnum, 14),
                  "id11": run(alnum + "-_", 11), "id26": run(alnum, 26), "id7": run(alnum, 7),
                  "n": str(rng.randint(1, 5000)),
                  "path": "/".join(rng.choice(["src", "build", "reports", "out", "data", "2026-11-25", "v2"])
                                   for _ in range(3)) + rng.choice([".py", ".json", ".pdf", ".tar.gz"])}
        return template.format(**values)

    return [fill(rng.choice(_TEMPLATES)) for _ in range(count)]


_TOKEN_RUN = re.compile(r"[A-Za-z0-9+/=_-]{20,}")


def entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def high_entropy_rule(threshold: float) -> Callable[[str], list[str]]:
    """The candidate rule: runs of 20+ token characters, with upper, lower and a digit, of entropy >= threshold."""
    def flags(text: str) -> list[str]:
        return [m.group(0) for m in _TOKEN_RUN.finditer(text)
                if re.search(r"[A-Z]", m.group(0)) and re.search(r"[a-z]", m.group(0))
                and re.search(r"\d", m.group(0)) and entropy(m.group(0)) >= threshold]
    return flags


def per_call_us(fn: Callable[[str], object], texts: Sequence[str], rounds: int) -> float:
    """Median over rounds of the mean CPU time per call, in microseconds (CPU time: a loaded machine's waits
    are not the code's). Each round starts with the remembered texts forgotten: every text is new to the
    process, as a notification's message is."""
    samples = []
    for _ in range(rounds):
        messages._remembered_chat_text.cache_clear()
        started = time.process_time()
        for text in texts:
            fn(text)
        samples.append((time.process_time() - started) / len(texts) * 1e6)
    return statistics.median(samples)


def notification(redact_secrets: bool) -> Callable[[str], object]:
    def build(text: str) -> object:
        return make_notification("t1", "Daily report", "step_done", ("k",), {"step": "fetch", "message": text,
                                 "next": "write", "done": 1, "total": 3}, "zh", redact_secrets)
    return build


def detect_secrets_scanner() -> Callable[[str], list[str]] | None:
    try:
        from detect_secrets.core.scan import _scan_line, get_code_snippet, get_plugins
        from detect_secrets.settings import default_settings
    except ImportError:
        return None
    settings = default_settings()
    settings.__enter__()  # for the life of this script
    plugins = list(get_plugins())

    def scan(text: str) -> list[str]:
        context = get_code_snippet(lines=[text], line_number=1)
        return [s.secret_value or "" for p in plugins for s in _scan_line(
            plugin=p, filename="chat", line=text, line_number=0, enable_eager_search=False, context=context)]
    return scan


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=200, help="rounds over the corpus (200)")
    parser.add_argument("--entropy", type=float, nargs="+", default=[3.5, 4.0, 4.5],
                        help="thresholds of the candidate high-entropy rule, bits per character (3.5 4.0 4.5)")
    args = parser.parse_args(argv)
    generated = generated_ordinary(2000)
    ordinary = ORDINARY + generated
    texts = ORDINARY + generated[:300] + list(SECRETS.values())
    for fn in (notification(True), notification(False), redact):  # compile patterns
        for text in texts:
            fn(text)
    for label, corpus in (("ordinary", ORDINARY + generated[:300]), ("with a secret", list(SECRETS.values())),
                          ("all", texts)):
        on = per_call_us(notification(True), corpus, args.runs)
        off = per_call_us(notification(False), corpus, args.runs)
        alone = per_call_us(redact, corpus, args.runs)
        print(f"{label} ({len(corpus)} field texts): make_notification {on:.1f} µs masking on, {off:.1f} µs off "
              f"-> masking adds {on - off:.1f} µs per notification; redact() alone {alone:.1f} µs per field")
    scan = detect_secrets_scanner()
    if scan is None:
        print("  detect-secrets: not installed (pip install detect-secrets) - skipped")
    else:
        for text in texts:
            scan(text)
        cost = per_call_us(scan, texts, max(1, args.runs // 10))
        print(f"  detect-secrets, all plugins     {cost:8.1f} µs per field ({cost / alone:.0f}x redact)")
    print("\ncoverage (secret still visible?)         ours          detect-secrets")
    missed = 0
    for label, text in SECRETS.items():
        ours = "masked" if redact(text) != text else "MISSED"
        missed += ours == "MISSED"
        theirs = "-" if scan is None else ("flagged" if scan(text) else "MISSED")
        print(f"  {label:<38} {ours:<13} {theirs}")
    print(f"  ours: {len(SECRETS) - missed} of {len(SECRETS)} masked")
    ours_alarms = [t for t in ordinary if redact(t) != t]
    theirs = "" if scan is None else f", detect-secrets {sum(1 for t in ordinary if scan(t))}"
    print(f"\nfalse alarms on {len(ordinary)} ordinary texts ({len(ORDINARY)} written, {len(generated)} generated): "
          f"ours {len(ours_alarms)}{theirs}")
    for t in ours_alarms[:10]:
        print(f"  ours masks: {t!r} -> {redact(t)!r}")
    print("\ncandidate high-entropy rule (20+ token characters, upper, lower and digit):")
    for threshold in args.entropy:
        rule = high_entropy_rule(threshold)
        alarms = [t for t in ordinary if rule(t)]
        caught = [label for label, text in BARE.items() if rule(text)]
        kinds = Counter(next((tp.split("{")[0].strip() for tp in _TEMPLATES if t.startswith(tp.split("{")[0])),
                             "written") for t in alarms)
        written = [t for t in ORDINARY if rule(t)]
        print(f"  >= {threshold:.1f} bits/char: {len(alarms)} of {len(ordinary)} ordinary texts masked "
              f"({len(alarms) / len(ordinary):.1%}; {len(written)} of the {len(ORDINARY)} written ones); of "
              f"{len(BARE)} bare keys it catches {len(caught)} ({', '.join(caught) or 'none'})")
        for kind, n in kinds.most_common(5):
            print(f"      {n:4d} x {kind!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
