"""What masking secrets costs per notification, and how a maintained detector (detect-secrets) compares.

Three measures, side by side in one run, medians of --runs rounds over the same corpus:

  ours      `make_notification` (clean + cap + mask every field, render) with masking on, minus the
            same with masking off: the cost masking adds to one notification;
  redact    `task_pulse.messages.redact` alone, per field of text;
  detect-secrets  (when importable: `pip install detect-secrets`) every plugin of its default
            settings on the same field, without its eager mode (which reports every word), per field.

Then coverage on the secret shapes the hardening review listed (does the text still show the
secret?) and false alarms on ordinary progress messages.

    .venv/bin/python tests/benchmarks/masking_cost.py
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence

from task_pulse.masking import redact
from task_pulsed.differ import make_notification

ORDINARY = [
    "抓取了25条数据", "processed 60% of 1,204 rows", "wrote report.md (12 KB)", "token_count=5120 pass_rate=0.93",
    "build 7f3a9c2 ok in 3m12s", "uploaded to s3://reports/2026-11-25/daily.pdf", "waiting for the GPU queue",
    "Basic-configuration loaded from config.yaml", "retrying https://api.example.com/v1/jobs/42 (HTTP 503)",
    "发布到 Telegram 频道 @daily_news", "commit 4b825dc642cb6eb9a060e54bf8d69288fbee4904 pushed",
    "model gpt-4o answered in 2.3 s", "step 3/5: compiling 1,024 files", "ssh deploy@10.0.0.7 ok",
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
}


def per_call_us(fn: Callable[[str], object], texts: Sequence[str], rounds: int) -> float:
    """Median over rounds of the mean time per call, in microseconds."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        for text in texts:
            fn(text)
        samples.append((time.perf_counter() - started) / len(texts) * 1e6)
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
    args = parser.parse_args(argv)
    texts = ORDINARY + list(SECRETS.values())
    for fn in (notification(True), notification(False), redact):  # compile patterns, warm caches
        for text in texts:
            fn(text)
    on = per_call_us(notification(True), texts, args.runs)
    off = per_call_us(notification(False), texts, args.runs)
    alone = per_call_us(redact, texts, args.runs)
    print(f"corpus: {len(texts)} field texts ({len(ORDINARY)} ordinary, {len(SECRETS)} with a secret)")
    print(f"  make_notification, masking on   {on:8.1f} µs")
    print(f"  make_notification, masking off  {off:8.1f} µs   -> masking adds {on - off:.1f} µs per notification")
    print(f"  redact() alone, per field       {alone:8.1f} µs")
    scan = detect_secrets_scanner()
    if scan is None:
        print("  detect-secrets: not installed (pip install detect-secrets) - skipped")
    else:
        for text in texts:
            scan(text)
        cost = per_call_us(scan, texts, max(1, args.runs // 10))
        print(f"  detect-secrets, all plugins     {cost:8.1f} µs per field ({cost / alone:.0f}x redact)")
    print("\ncoverage (secret still visible?)         ours          detect-secrets")
    for label, text in SECRETS.items():
        masked = redact(text)
        ours = "masked" if masked != text else "MISSED"
        theirs = "-" if scan is None else ("flagged" if scan(text) else "MISSED")
        print(f"  {label:<38} {ours:<13} {theirs}")
    if scan is not None:
        alarms = [t for t in ORDINARY if scan(t)]
        ours_alarms = [t for t in ORDINARY if redact(t) != t]
        print(f"\nfalse alarms on {len(ORDINARY)} ordinary texts: ours {len(ours_alarms)}, "
              f"detect-secrets {len(alarms)}")
        for t in alarms:
            print(f"  detect-secrets flags: {t!r}")
        for t in ours_alarms:
            print(f"  ours masks: {t!r} -> {redact(t)!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
