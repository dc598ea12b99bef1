"""Latency and throughput of a running scoring service.

    python -m serving.bench --url http://127.0.0.1:3001 --key fsk_... \\
        --transactions replay.jsonl --requests 2000 --connections 1

Sends payments (one JSON transaction per line, sent in file order; a suffix keeps the
transaction ids unique per run) to /predict and prints p50 / p90 / p99 latency and the
request rate. Only point it at a service on this machine or one you operate.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time
import uuid
from pathlib import Path

import httpx


def _payloads(path: Path, count: int) -> list[bytes]:
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not lines:
        raise SystemExit(f"{path} has no transactions")
    run = uuid.uuid4().hex[:8]
    return [
        json.dumps({**lines[i % len(lines)], "transaction_id": f"{run}-{i}"}).encode()
        for i in range(count)
    ]


def _worker(
    url: str, headers: dict[str, str], bodies: list[bytes], out: list[float], errors: list[int]
) -> None:
    with httpx.Client(base_url=url, headers=headers, timeout=30.0) as client:
        for body in bodies:
            began = time.perf_counter()
            response = client.post("/predict", content=body)
            out.append(time.perf_counter() - began)
            if response.status_code != 200:
                errors.append(response.status_code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m serving.bench", description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1:3001")
    parser.add_argument("--key", default="", help="API key (X-API-Key)")
    parser.add_argument("--transactions", type=Path, required=True, help="JSONL file")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args(argv)
    headers = {"content-type": "application/json"}
    if args.key:
        headers["x-api-key"] = args.key
    bodies = _payloads(args.transactions, args.warmup + args.requests)
    _worker(args.url, headers, bodies[: args.warmup], [], [])
    rest = bodies[args.warmup :]
    shares = [rest[i :: args.connections] for i in range(args.connections)]
    results: list[list[float]] = [[] for _ in shares]
    errors: list[int] = []
    threads = [
        threading.Thread(target=_worker, args=(args.url, headers, share, results[i], errors))
        for i, share in enumerate(shares)
    ]
    began = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - began
    latencies = sorted(x * 1000.0 for r in results for x in r)
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    print(  # noqa: T201
        f"requests={len(latencies)} connections={args.connections} errors={len(errors)} "
        f"p50={q[49]:.2f}ms p90={q[89]:.2f}ms p99={q[98]:.2f}ms max={latencies[-1]:.2f}ms "
        f"rate={len(latencies) / seconds:.0f}/s"
    )
    return 0 if not errors else 1


if __name__ == "__main__":
    raise SystemExit(main())
