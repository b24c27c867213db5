"""Live delivery, the OpenClaw gateway route beside the CLI route, measured in one run.

The real `task-pulsed --openclaw CHANNEL:TARGET` runs twice per round, alternated: once finding the gateway
(the gateway route, the CLI behind it), once with `--openclaw-gateway none` (the CLI route). Writers (this
process, `TaskStore`, as `task-pulse` writes) create `--tasks` 20-step tasks at once, finish a step of each
every 0.2 s (5 steps/s), then mark them done.

Two chats:
  real     (default where tests/e2e/setup.sh was run) OpenClaw's own gateway (`openclaw gateway run`) and
           CLI with its Matrix plugin, on a private Synapse on 127.0.0.1; "in the chat" is the event's
           `origin_server_ts` read back from the room. Also two outages, gateway route: the homeserver
           stopped for 30 s mid-task, and a homeserver that accepts connections and never answers for 30 s.
  standin  the stand-in gateway (tests/standins/gateway.py, replies after 0.1 s) and the stand-in CLI
           (tests/standins/openclaw, `--cli-delay` per call); "in the chat" is when the stand-in took it.

Reported per route, over the tasks: new messages per task (goal <= 3), edits per task and the closest two
edits of one card came (goal: no closer than the channel's interval, 3 s on Telegram and Matrix), `done`
write → done message in the chat p50 / p95 / max (goal for the gateway: <= 0.5 s median, <= 1 s p95),
duplicates (a task with more than one card or done ping) and processes left behind after the daemon stopped.

    .venv/bin/python tests/benchmarks/delivery.py                    # real where installed, else standin
    .venv/bin/python tests/benchmarks/delivery.py --chat standin --rounds 3
    .venv/bin/python tests/benchmarks/delivery.py --chat real --tasks 10 --outages
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from task_pulse.store import TaskStore  # noqa: E402

STANDIN_CLI = ROOT / "tests" / "standins" / "openclaw"
BIN = Path(sys.executable).parent
MARK = "TP_BENCH_RUN"  # in the daemon's environment, so in every process it starts: how leftovers are found


@dataclass
class Chat:
    """Where messages land: `messages()` gives (task name, new message text, when it landed, its edits' times)."""

    channel: str
    target: str
    env: dict[str, str]
    messages: Callable[[], list[tuple[str, float, list[float]]]]
    gateway_args: list[str] = field(default_factory=list)
    cli: str = str(STANDIN_CLI)
    pace: list[str] = field(default_factory=list)


def write_tasks(store: TaskStore, names: list[str], steps: int, done_at: dict[str, float],
                during: Callable[[int], None] | None = None) -> None:
    tasks = {n: store.create(n, [f"step {i}" for i in range(1, steps + 1)], datetime.now(UTC)) for n in names}
    for i in range(steps - 1):
        if during is not None:
            during(i)
        time.sleep(0.2)
        for task in tasks.values():
            store.update(task.task_id, lambda t: t.advance(datetime.now(UTC).isoformat(), "ok"), datetime.now(UTC))
    time.sleep(0.2)
    for name, task in tasks.items():
        done_at[name] = time.time()
        store.update(task.task_id, lambda t: t.finish(datetime.now(UTC).isoformat(), "all good"), datetime.now(UTC))


def all_delivered(db_path: Path, tasks: int) -> bool:
    """Every task's `done` is queued and nothing is pending."""
    if not db_path.exists():
        return False
    db = sqlite3.connect(db_path, timeout=30)
    try:
        done, pending = db.execute("SELECT count(*) FILTER (WHERE kind = 'done'), count(*) - count(delivered_at) "
                                   "FROM notifications").fetchone()
    except sqlite3.OperationalError:
        return False
    finally:
        db.close()
    return done == tasks and pending == 0


def marked_processes(run: str) -> list[int]:
    """Processes whose environment carries this run's mark (the daemon's children, detached ones included)."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if f"{MARK}={run}".encode() in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def run_case(chat: Chat, route: str, tasks: int, steps: int, settle: float = 0.0,
             during: Callable[[int], None] | None = None, concurrency: int | None = None) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="tp-delivery-"))
    tasks_dir = work / "tasks"
    tasks_dir.mkdir()
    run = uuid.uuid4().hex
    env = {k: v for k, v in chat.env.items() if not k.startswith("TASK_PULSE_")} | {MARK: run}
    route_args = chat.gateway_args if route == "gateway" else ["--openclaw-gateway", "none"]
    log_path = work / "daemon.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([str(BIN / "task-pulsed"), "--dir", str(tasks_dir), "--openclaw",
                                 f"{chat.channel}:{chat.target}", "--openclaw-bin", chat.cli, "--lang", "en",
                                 *(["--sink-concurrency", str(concurrency)] if concurrency else []), *route_args,
                                 *chat.pace],
                                stdout=log, stderr=subprocess.STDOUT, env=env)
    names = [f"{route[:2].upper()}{uuid.uuid4().hex[:6]} {i}" for i in range(tasks)]
    try:
        wait(lambda: b"ready:" in log_path.read_bytes(), 60, "the daemon")
        if route == "gateway":
            wait(lambda: b"delivering through gateway" in log_path.read_bytes(), 60, "the gateway route")
        done_at: dict[str, float] = {}
        write_tasks(TaskStore(tasks_dir), names, steps, done_at, during)
        wait(lambda: all_delivered(tasks_dir / ".pulse" / "state.db", tasks), 1800, "every row")
        time.sleep(settle)  # anything that would come twice comes by then
        landed = chat.messages()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(90)
    time.sleep(1)
    leftover = marked_processes(run)
    for pid in leftover:
        os.kill(pid, signal.SIGKILL)
    shutil.rmtree(work, ignore_errors=True)
    news, edits, gaps, lags, dupes = [], [], [], [], 0
    for name in names:
        own = [(text, at, edit_times) for text, at, edit_times in landed if name in text.splitlines()[0]]
        pings = [at for text, at, _ in own if "done!" in text.splitlines()[0]]
        cards = [(at, times) for text, at, times in own if "done!" not in text.splitlines()[0]]
        news.append(len(own))
        edits.append(sum(len(times) for _, times in cards))
        dupes += max(0, len(pings) - 1) + max(0, len(cards) - 1)
        for _, times in cards:
            gaps += [b - a for a, b in zip(times, times[1:], strict=False)]
        if pings:
            lags.append(min(pings) - done_at[name])
    return {"news": news, "edits": edits, "gap": min(gaps) if gaps else None, "lags": lags, "dupes": dupes,
            "lost": tasks - len(lags), "leftover": len(leftover)}


def standin_chat(cli_delay: float) -> tuple[Chat, Callable[[], None]]:
    from tests.standins.gateway import StandInGateway

    gateway = StandInGateway("bench-token").start()
    gateway.delay = 0.1
    log = Path(tempfile.mkdtemp(prefix="tp-cli-")) / "calls.jsonl"

    def messages() -> list[tuple[str, float, list[float]]]:
        import json

        out = [(m.text, m.at, [at for at, _ in m.edits]) for m in gateway.sends()]
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        sent = {r["messageId"]: (r["text"], r["at"]) for r in records if r["phase"] == "end" and r["verb"] == "send"}
        edited: dict[str, list[float]] = {}
        for r in records:
            if r["phase"] == "end" and r["verb"] == "edit":
                edited.setdefault(r["id"], []).append(r["at"])
        return out + [(text, at, edited.get(mid, [])) for mid, (text, at) in sent.items()]

    env = {**os.environ, "OPENCLAW_GATEWAY_URL": gateway.url, "OPENCLAW_GATEWAY_TOKEN": "bench-token",
           "STANDIN_LOG": str(log), "STANDIN_DELAY": str(cli_delay)}
    # Telegram's card edits (one per 3 s), new messages unlimited: the route's latency, not the chat's pace.
    return Chat("telegram", "1", env, messages, pace=["--pace", "messages=1000,burst=1000"]), gateway.stop


def real_chat() -> tuple[Chat, Callable[[], None], Any, Any]:
    from tests.e2e.conftest import OPENCLAW, e2e_env, free_port
    from tests.e2e.matrix import GATEWAY_TOKEN, Gateway, is_edit, make_synapse, matrix_state

    work = Path(tempfile.mkdtemp(prefix="tp-real-"))
    (work / "synapse").mkdir()
    hs = make_synapse(work / "synapse")
    gateway = Gateway(matrix_state(work, hs, gateway_port=free_port()), work / "gateway.log").start()

    def messages() -> list[tuple[str, float, list[float]]]:
        events = hs.bot_messages()
        edits: dict[str, list[float]] = {}
        for e in events:
            if is_edit(e):
                edits.setdefault(e["content"]["m.relates_to"]["event_id"], []).append(e["origin_server_ts"] / 1000)
        return [(e["content"].get("body", ""), e["origin_server_ts"] / 1000, edits.get(e["event_id"], []))
                for e in events if not is_edit(e)]

    env = e2e_env(OPENCLAW_STATE_DIR=str(gateway.state), OPENCLAW_GATEWAY_TOKEN=GATEWAY_TOKEN)

    def stop() -> None:
        gateway.stop()
        hs.stop()
        shutil.rmtree(work, ignore_errors=True)

    # Our Synapse has rc_message raised: the pace follows it (new messages unlimited, card edits 3 s apart).
    chat = Chat("matrix", f"room:{hs.room_id}", env, messages, cli=str(OPENCLAW),
                pace=["--pace", "messages=1000,burst=1000"])
    return chat, stop, hs, gateway


def hang_homeserver(hs: Any, seconds: float) -> None:
    """The homeserver's port accepts connections and never answers, for `seconds`; then Synapse is back."""
    port = int(hs.url.rsplit(":", 1)[1])
    hs.stop()
    listener = socket.create_server(("127.0.0.1", port), reuse_port=True)
    held: list[socket.socket] = []
    listener.settimeout(0.5)
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            conn, _ = listener.accept()
            held.append(conn)
        except TimeoutError:
            continue
    for conn in held:
        conn.close()
    listener.close()
    hs.start()


def summary(route: str, case: str, results: list[dict[str, Any]]) -> str:
    lags = sorted(lag for r in results for lag in r["lags"])
    news = [n for r in results for n in r["news"]]
    edits = [n for r in results for n in r["edits"]]
    gaps = [r["gap"] for r in results if r["gap"] is not None]
    nan = float("nan")
    p95 = lags[min(len(lags) - 1, math.ceil(0.95 * len(lags)) - 1)] if lags else nan  # nearest rank
    p50, top = (statistics.median(lags), lags[-1]) if lags else (nan, nan)
    return (f"| {route} | {case} | {statistics.median(news):g} [{max(news)}] | {statistics.median(edits):g} | "
            f"{min(gaps) if gaps else nan:.2f} | {p50:.2f} / {p95:.2f} / {top:.2f} | "
            f"{sum(r['dupes'] for r in results)} | {sum(r['lost'] for r in results)} | "
            f"{sum(r['leftover'] for r in results)} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    real_ready = (Path(os.environ.get("TP_E2E_BASE", "/opt/task-pulse-e2e")) / "synapse-venv").is_dir()
    parser.add_argument("--chat", choices=("real", "standin"), default="real" if real_ready else "standin")
    parser.add_argument("--routes", nargs="+", default=["gateway", "cli"])
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=1, help="rounds, each route once per round (alternated)")
    parser.add_argument("--cli-delay", type=float, default=10.0, help="seconds per stand-in CLI call")
    parser.add_argument("--outages", action="store_true", help="also the two outages (real chat, gateway route)")
    parser.add_argument("--concurrency", type=int, help="the daemon's --sink-concurrency [default: its own, 4]")
    parser.add_argument("--no-warm-up", dest="warm_up", action="store_false",
                        help="measure from the first send (a fresh gateway's first Matrix sends take seconds)")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # stopped: the gateway and Synapse are stopped too
    if args.chat == "real":
        chat, stop, hs, _gateway = real_chat()
    else:
        chat, stop = standin_chat(args.cli_delay)
    results: dict[str, list[dict[str, Any]]] = {route: [] for route in args.routes}
    outages: dict[str, list[dict[str, Any]]] = {}
    try:
        if args.warm_up:  # one small run per route, not counted: the chat's first sends after a start
            for route in args.routes:
                print(f"warm-up {route}: {run_case(chat, route, 2, 3, concurrency=args.concurrency)}", flush=True)
        for _ in range(args.rounds):
            for route in args.routes:
                results[route].append(run_case(chat, route, args.tasks, args.steps, concurrency=args.concurrency))
                print(f"{route}: {results[route][-1]}", flush=True)
        if args.outages and args.chat == "real":
            def away(step: int) -> None:
                if step == 3:
                    threading.Thread(target=lambda: (hs.stop(), time.sleep(30), hs.start()), daemon=True).start()

            def hung(step: int) -> None:
                if step == 3:
                    threading.Thread(target=hang_homeserver, args=(hs, 30), daemon=True).start()

            for case, during in (("homeserver away 30 s", away), ("homeserver hung 30 s", hung)):
                outages[case] = [run_case(chat, "gateway", 2, args.steps, settle=60, during=during)]
                print(f"{case}: {outages[case][-1]}", flush=True)
    finally:
        stop()
    print(f"\n{args.chat} chat, {args.tasks} tasks x {args.steps} steps at 5 steps/s, {args.rounds} round(s)\n")
    print("| route | case | new msgs/task [max] | edits/task | closest edits (s) | done → in chat p50 / p95 / max (s) "
          "| duplicates | lost | processes left |")
    print("|---|---|---|---|---|---|---|---|---|")
    for route, runs in results.items():
        print(summary(route, "live", runs))
    for case, runs in outages.items():
        print(summary("gateway", case, runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
