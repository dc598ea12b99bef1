"""Sustained load on a running scoring service: errors, memory growth, log completeness.

    .venv/bin/python benchmarks/load_test.py --url http://127.0.0.1:3001 --key fsk_... \\
        --log-url postgresql://... --payments live.jsonl --seconds 600 [--kill-worker-at 30]

wrk sends single payments (each a new transaction_id) at 16 connections for `--seconds`;
each pass over the payments file is sent a day later than the one before, as far as the
wall clock allows, so customers' histories grow as under real traffic.
Meanwhile the resident memory of the service's processes is sampled every second. At the
end it waits for the prediction log to settle and counts the rows of this run.

Prints one JSON object on its last line: requests, ok (HTTP 200), non_200, socket_errors,
rps, latency percentiles, rss_mb after warm-up and at the end with the growth in percent,
and logged_rows (which must equal ok). With `--kill-worker-at S` one worker process is
killed with SIGKILL after S seconds; the figures then say how many requests failed and
whether the worker came back.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd
import psutil
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serving_bench import ensure_wrk, lua, replay_days, time_marker

WARMUP_S = 10.0


def service_processes(port: int) -> list[psutil.Process]:
    """The server process listening on `port` and all of its descendants."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            if conn.pid is None:
                continue
            root = psutil.Process(conn.pid)
            # The arbiter of `bentoml serve` owns the socket; walk up to it.
            while root.parent() is not None and "bentoml" in " ".join(root.parent().cmdline()):
                root = root.parent()
            return [root, *root.children(recursive=True)]
    raise SystemExit(f"nothing listens on port {port}")


def worker_pids(port: int) -> list[int]:
    return [
        p.pid
        for p in service_processes(port)
        if "_bentoml_impl.worker.service" in " ".join(p.cmdline())
    ]


def rss_mb(port: int) -> float:
    total = 0
    for proc in service_processes(port):
        try:
            total += proc.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total / 2**20


def logged_rows(log_url: str, run: str, expect: int, settle_s: float = 60.0) -> int:
    """Rows of this run in the prediction log, once the count stops moving."""
    engine = sa.create_engine(log_url)
    query = sa.text("SELECT COUNT(*) FROM prediction_log WHERE transaction_id LIKE :p")
    last, stable_since, deadline = -1, time.monotonic(), time.monotonic() + settle_s
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            count = int(conn.execute(query, {"p": f"%-{run}-%"}).scalar_one())
        if count != last:
            last, stable_since = count, time.monotonic()
        elif count >= expect or time.monotonic() - stable_since > 10:
            break
        time.sleep(0.5)
    engine.dispose()
    return last


def run_load(
    url: str,
    key: str,
    log_url: str,
    payments: list[dict[str, object]],
    seconds: int,
    connections: int = 16,
    kill_worker_at: float | None = None,
    timeout_s: int = 10,
    faults: Sequence[tuple[float, Callable[[], None]]] = (),
) -> dict[str, object]:
    """Load `url` for `seconds`; see the module doc for the figures.

    `faults` are (seconds into the run, action) pairs, each action called once at its time
    (e.g. stopping and starting a database); the times they ran are in `faults_at_s`.
    """
    wrk = ensure_wrk()
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    run = f"load{int(time.time())}"
    # Each pass over the payments is replayed a day later (as far as the wall clock allows),
    # so customers' histories grow as under real traffic rather than piling onto one day.
    bodies = [
        json.dumps(
            {**p, "transaction_id": f"{p['transaction_id']}-#ID#"}
            | ({"timestamp": time_marker(str(p["timestamp"]))} if "timestamp" in p else {})
        )
        for p in payments
    ]
    stamps = [str(p["timestamp"]) for p in payments if "timestamp" in p]
    parsed = pd.to_datetime(stamps, format="ISO8601", utc=True)
    days = replay_days(pd.DataFrame({"timestamp": parsed})) if stamps else 0
    with tempfile.TemporaryDirectory() as folder:
        script = Path(folder) / "load.lua"
        # Scoring stops 3 s before wrk does, so every scoring request gets its answer.
        until = int(time.time()) + seconds - 3
        script.write_text(lua(bodies, "/predict", run, key, until_epoch=until, max_days=days))
        cmd = [wrk, "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", f"{timeout_s}s"]
        cmd += ["-s", str(script), url]
        print(" ".join(cmd), flush=True)
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        killed: dict[str, object] = {}
        pending = sorted(faults, key=lambda fault: fault[0])
        faults_at: list[float] = []

        def sample() -> None:
            began = time.monotonic()
            while not stop.wait(1.0):
                elapsed = time.monotonic() - began
                samples.append((elapsed, rss_mb(port)))
                while pending and elapsed >= pending[0][0]:
                    pending.pop(0)[1]()
                    faults_at.append(round(time.monotonic() - began, 1))
                if kill_worker_at is not None and not killed and elapsed >= kill_worker_at:
                    victims = worker_pids(port)
                    os.kill(victims[0], signal.SIGKILL)
                    killed.update({"pid": victims[0], "at_s": round(elapsed, 1)})

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        stop.set()
        sampler.join()
    figures = json.loads(next(x for x in out.splitlines() if x.startswith("WRKJSON "))[8:])
    ok = int(figures["scored_200"])
    after_warmup = [mb for t, mb in samples if t >= WARMUP_S] or [mb for _, mb in samples]
    result: dict[str, object] = {
        "seconds": seconds,
        "connections": connections,
        "requests": ok + int(figures["non_200"]),
        "ok": ok,
        "non_200": figures["non_200"],
        "socket_errors": figures["socket_errors"],
        "rps": round(ok / max(1.0, figures["seconds"] - 3.0)),
        "p50_ms": figures["p50_ms"],
        "p99_ms": figures["p99_ms"],
        "max_ms": figures["max_ms"],
        "rss_mb_after_warmup": round(after_warmup[0], 1),
        "rss_mb_end": round(after_warmup[-1], 1),
        "rss_growth_pct": round(100.0 * (after_warmup[-1] / after_warmup[0] - 1.0), 2),
        # Resident memory over the run, ten points: a leak climbs, a warming cache levels off.
        "rss_mb_curve": [
            [round(t), round(mb, 1)]
            for t, mb in samples[:: max(1, len(samples) // 10)] + samples[-1:]
        ],
        "logged_rows": logged_rows(log_url, run, ok),
        "run": run,
    }
    if faults:
        result["faults_at_s"] = faults_at
    if killed:
        time.sleep(2)
        result["killed_worker"] = killed
        result["workers_after"] = worker_pids(port)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--log-url", required=True, help="SQLAlchemy URL of the prediction log")
    parser.add_argument("--payments", type=Path, required=True, help="JSON lines of payments")
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--kill-worker-at", type=float)
    args = parser.parse_args()
    payments = [json.loads(x) for x in args.payments.read_text().splitlines() if x.strip()]
    result = run_load(
        args.url,
        args.key,
        args.log_url,
        payments,
        args.seconds,
        args.connections,
        args.kill_worker_at,
    )
    command = " ".join([Path(sys.executable).name, *sys.argv]).replace(args.key, "***")
    result["command"] = re.sub(r"://([^:/@\s]+):[^@\s]+@", r"://\1:***@", command)
    print(json.dumps(result))
    ok = result["non_200"] == 0 and result["socket_errors"] == 0 and args.kill_worker_at is None
    return 0 if ok or args.kill_worker_at is not None else 1


if __name__ == "__main__":
    sys.exit(main())
