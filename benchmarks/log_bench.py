"""Cost of `PredictionLog.log()` and `log_many()` on the caller's thread, per row.

    .venv/bin/python benchmarks/log_bench.py --rows 2000 --repeats 15

Logs `--rows` rows shaped like the scoring engine's (27 features, datetimes, a UUID) into a
PredictionLog on a temporary SQLite file whose writer thread sleeps during the measurement
(flush interval of an hour), so the figure is what a request pays: `log()` one row at a
time, then `log_many()` in calls of `--batch` rows (when the PredictionLog has it). Per row
and mode it reports the caller's wall time (`wall_us`) and its thread's CPU time (`cpu_us`,
the robust figure on a shared machine), then delivers the rows and reports the process's
CPU time while the writer inserts them into SQLite (`writer_cpu_us`; the caller only
sleeps meanwhile). `cpu_us + writer_cpu_us` is what a row costs in all. Prints one JSON
object: the least of `--repeats` runs of each figure (the least disturbed by other work on
the machine), and the command.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from serving.prediction_log import PredictionLog

FEATURES = (
    "amount log_amount merchant_category_code currency_code device_type_code channel_code "
    "country_code user_txn_count_1h user_txn_count_24h user_txn_count_7d user_amount_sum_1h "
    "user_amount_sum_24h user_amount_sum_7d user_amount_zscore user_prior_txn_count "
    "seconds_since_last_txn is_new_device is_new_merchant is_new_country hour weekday is_night "
    "is_weekend merchant_txn_count_24h merchant_txn_count_7d merchant_labels_known "
    "merchant_fraud_rate"
).split()


def make_rows(count: int, rng: random.Random) -> list[dict[str, Any]]:
    """Fresh rows as `ScoringEngine._log_row` builds them (log() may convert features)."""
    now = datetime.now(UTC)
    return [
        {
            "prediction_id": str(uuid.uuid4()),
            "transaction_id": f"bench-{i}-{rng.random()}",
            "scored_at": now,
            "transaction_ts": now - timedelta(seconds=i),
            "user_id": f"user-{i % 9973}",
            "merchant_id": f"merchant-{i % 211}",
            "merchant_category": "electronics",
            "amount": round(rng.uniform(1, 2000), 2),
            "currency": "EUR",
            "device_id": f"device-{i % 5003}",
            "device_type": "mobile",
            "channel": "app",
            "country": "DE",
            "age_band": "30-39",
            "features": {name: rng.random() * 100 for name in FEATURES},
            "fraud_score": rng.random(),
            "decision": "approve",
            "model_version": "7",
            "latency_ms": rng.uniform(0.5, 5),
            "degraded": False,
            "endpoint": "predict",
            "api_key": "merchant",
        }
        for i in range(count)
    ]


def measure(log: PredictionLog, rows: list[dict[str, Any]], batch: int) -> dict[str, float]:
    """µs per row: the caller's wall and CPU time, then the writer's CPU time."""
    wall, cpu = time.perf_counter(), time.thread_time()
    if batch == 1:
        for row in rows:
            log.log(row)
    else:
        for i in range(0, len(rows), batch):
            log.log_many(rows[i : i + batch])
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    writer = time.process_time()
    if not log.wait_delivered(600):
        raise RuntimeError("rows not delivered")
    writer = time.process_time() - writer
    return {
        "wall_us": wall / len(rows) * 1e6,
        "cpu_us": cpu / len(rows) * 1e6,
        "writer_cpu_us": writer / len(rows) * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    rng = random.Random(7)
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="log-bench-") as tmp:
        log = PredictionLog(
            f"sqlite:///{Path(tmp) / 'log.db'}",
            spool_dir=Path(tmp) / "spool",
            flush_interval_s=3600,
            max_memory_rows=10 * args.rows,
            max_backlog=10 * args.rows,
        )
        modes = {"log": 1}
        if hasattr(log, "log_many"):
            modes[f"log_many_{args.batch}"] = args.batch
        for _ in range(args.repeats):
            for name, batch in modes.items():
                for kind, value in measure(log, make_rows(args.rows, rng), batch).items():
                    results.setdefault(f"{name}_{kind}", []).append(value)
        log.close()
    figures: dict[str, Any] = {k: round(min(v), 2) for k, v in results.items()}
    figures["rows"] = args.rows
    figures["repeats"] = args.repeats
    figures["python"] = platform.python_version()
    figures["command"] = " ".join([".venv/bin/python", *sys.argv])
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
