"""Cost of the prediction log per row: on the caller's thread, and in the writer thread.

    .venv/bin/python benchmarks/log_bench.py --rows 2000 --repeats 15

Logs `--rows` rows shaped like the scoring engine's (27 features, datetimes, a UUID) into a
PredictionLog whose writer thread sleeps during the measurement (flush interval of an
hour), so the figure is what a request pays: `log()` one row at a time, then `log_many()`
in calls of `--batch` rows. Per row and mode it reports the caller's wall time (`wall_us`)
and its thread's CPU time (`cpu_us`, the robust figure on a shared machine), then delivers
the rows and reports the process's CPU time while the writer inserts them (`writer_cpu_us`;
the caller only sleeps meanwhile). `cpu_us + writer_cpu_us` is what a row costs the
scoring worker in all.

Each database is measured with both inserters, on tables of their own, one after the other
in every repeat: `fast` (what PredictionLog uses: executemany of pre-built tuples on SQLite,
COPY + INSERT ... SELECT on PostgreSQL) and `sqlalchemy` (SQLAlchemy's compiled statement
with a list of dicts, the writer before the fast paths). SQLite is a temporary file.
PostgreSQL is `--postgres-url` (where the databases log_bench_fast and log_bench_sqlalchemy
are created, replacing any of those names, and dropped at the end), or else a throwaway
PostgreSQL 15 started with tests/reliability/pg_server.py (fsync off) when its binaries are
in /usr/local/bin; without either it is skipped with a message. For a server it started,
`server_cpu_us_mean` is the CPU time of all the server's processes during the deliveries,
per row (a mean: the kernel counts it in 10 ms ticks). `--prefill` rows are stored in each
table first: SQLite's own cost per row grows with the table (two of its indexes have
random keys).

Prints one JSON object: the least of `--repeats` runs of each figure (the least disturbed
by other work on the machine), the load averages, and the command.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from cpu_meter import descendants, process_ticks

from fraud_pipelines.process import free_port
from serving.prediction_log import (
    PredictionLog,
    RowInserter,
    inserter_for,
    make_engine,
    metadata,
)

REPO = Path(__file__).resolve().parents[1]
FEATURES = (
    "amount log_amount merchant_category_code currency_code device_type_code channel_code "
    "country_code user_txn_count_1h user_txn_count_24h user_txn_count_7d user_amount_sum_1h "
    "user_amount_sum_24h user_amount_sum_7d user_amount_zscore user_prior_txn_count "
    "seconds_since_last_txn is_new_device is_new_merchant is_new_country hour weekday is_night "
    "is_weekend merchant_txn_count_24h merchant_txn_count_7d merchant_labels_known "
    "merchant_fraud_rate"
).split()
INSERTERS: dict[str, Callable[[sa.Dialect], RowInserter]] = {
    "fast": inserter_for,
    "sqlalchemy": lambda _dialect: RowInserter(),
}


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


class ServerClock:
    """CPU time of a local PostgreSQL server's processes (the postmaster and its children)."""

    def __init__(self, data_dir: Path | None) -> None:
        self.postmaster: int | None = None
        if data_dir is not None:
            self.postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])

    def seconds(self) -> float | None:
        if self.postmaster is None:
            return None
        ticks = process_ticks(descendants([self.postmaster]))
        return sum(whole for whole, _ in ticks.values()) / os.sysconf("SC_CLK_TCK")


def measure(
    log: PredictionLog, rows: list[dict[str, Any]], batch: int, server: ServerClock
) -> dict[str, float]:
    """µs per row: the caller's wall and CPU time, then the writer's (and server's) CPU time."""
    wall, cpu = time.perf_counter(), time.thread_time()
    if batch == 1:
        for row in rows:
            log.log(row)
    else:
        for i in range(0, len(rows), batch):
            log.log_many(rows[i : i + batch])
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    writer, server_before = time.process_time(), server.seconds()
    if not log.wait_delivered(600):
        raise RuntimeError("rows not delivered")
    writer = time.process_time() - writer
    figures = {
        "wall_us": wall / len(rows) * 1e6,
        "cpu_us": cpu / len(rows) * 1e6,
        "writer_cpu_us": writer / len(rows) * 1e6,
    }
    server_after = server.seconds()
    if server_before is not None and server_after is not None:
        figures["server_cpu_s"] = server_after - server_before
    return figures


def prefill(url: str, count: int, rng: random.Random) -> None:
    """Store `count` rows with the fast inserter, in batches of 10,000."""
    engine = make_engine(url)
    try:
        metadata.create_all(engine)
        inserter = inserter_for(engine.dialect)
        for start in range(0, count, 10_000):
            rows = make_rows(min(10_000, count - start), rng)
            for row in rows:
                row["features"] = json.dumps(row["features"], separators=(",", ":"))
            with engine.begin() as conn:
                inserter.insert(conn, rows)
    finally:
        engine.dispose()


@contextmanager
def postgres_databases(given_url: str | None) -> Iterator[tuple[str | None, Path | None, str]]:
    """A PostgreSQL server URL (None if none is available), its data folder when this
    script started it, and a note saying which server it is."""
    if given_url:
        yield given_url, None, "given by --postgres-url"
        return
    sys.path.insert(0, str(REPO / "tests" / "reliability"))
    from pg_server import PG_BIN, remove_postgres, start_postgres

    if not (PG_BIN / "initdb").exists() or (os.geteuid() == 0 and not shutil.which("runuser")):
        yield None, None, f"skipped: no PostgreSQL binaries in {PG_BIN} and no --postgres-url"
        return
    server = start_postgres(free_port())
    try:
        yield server.url, server.data_dir, "throwaway PostgreSQL 15 (fsync off) on loopback"
    finally:
        remove_postgres(server)


@contextmanager
def databases(server_url: str, names: list[str]) -> Iterator[dict[str, str]]:
    """A new, empty database on the server per name (log_bench_<name>, replaced if it
    exists), dropped afterwards: name -> URL."""
    admin = sa.create_engine(server_url, isolation_level="AUTOCOMMIT")
    created = {name: f"log_bench_{name}" for name in names}
    try:
        with admin.connect() as conn:
            for database in created.values():
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
                conn.exec_driver_sql(f"CREATE DATABASE {database}")
        base = server_url.rsplit("/", 1)[0]
        yield {name: f"{base}/{database}" for name, database in created.items()}
    finally:
        with admin.connect() as conn:
            for database in created.values():
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
        admin.dispose()


def run_backend(
    urls: dict[str, str], args: argparse.Namespace, server: ServerClock, tmp: Path
) -> dict[str, dict[str, float]]:
    """Every figure of each inserter on its own database, the least of the repeats."""
    rng = random.Random(7)
    logs: dict[str, PredictionLog] = {}
    for name, url in urls.items():
        if args.prefill:
            prefill(url, args.prefill, rng)
        engine = sa.create_engine(url)
        logs[name] = PredictionLog(
            url,
            spool_dir=tmp / f"spool-{name}",
            flush_interval_s=3600,
            max_memory_rows=10 * args.rows,
            max_backlog=10 * args.rows,
            inserter=INSERTERS[name](engine.dialect),
        )
        engine.dispose()
    results: dict[str, dict[str, list[float]]] = {name: {} for name in logs}
    modes = {"log": 1, f"log_many_{args.batch}": args.batch}
    try:
        for _ in range(args.repeats):
            for name, log in logs.items():
                for mode, batch in modes.items():
                    rows = make_rows(args.rows, rng)
                    for kind, value in measure(log, rows, batch, server).items():
                        results[name].setdefault(f"{mode}_{kind}", []).append(value)
    finally:
        for log in logs.values():
            log.close()
    summary: dict[str, dict[str, float]] = {}
    for name, figures in results.items():
        summary[name] = {}
        for key, values in figures.items():
            if key.endswith("_server_cpu_s"):
                # Clock ticks of 10 ms are coarse for one delivery: the mean over all.
                per_row = sum(values) / (len(values) * args.rows) * 1e6
                summary[name][key.removesuffix("_s") + "_us_mean"] = round(per_row, 2)
            else:
                summary[name][key] = round(min(values), 2)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--prefill", type=int, default=0, help="rows stored before measuring")
    parser.add_argument(
        "--backends", default="sqlite,postgresql", help="comma-separated: sqlite, postgresql"
    )
    parser.add_argument("--postgres-url", default=None, help="an existing server to measure")
    args = parser.parse_args()
    backends = args.backends.split(",")
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="log-bench-") as folder:
        tmp = Path(folder)
        if "sqlite" in backends:
            urls = {name: f"sqlite:///{tmp / f'{name}.db'}" for name in INSERTERS}
            figures["sqlite"] = run_backend(urls, args, ServerClock(None), tmp)
        if "postgresql" in backends:
            with postgres_databases(args.postgres_url) as (server_url, data_dir, note):
                figures["postgresql_server"] = note
                if server_url is not None:
                    with databases(server_url, list(INSERTERS)) as urls:
                        clock = ServerClock(data_dir)
                        figures["postgresql"] = run_backend(urls, args, clock, tmp)
    figures["rows"] = args.rows
    figures["repeats"] = args.repeats
    figures["prefill"] = args.prefill
    figures["python"] = platform.python_version()
    figures["load_average"] = [round(load, 2) for load in os.getloadavg()]
    figures["command"] = " ".join([".venv/bin/python", *sys.argv])
    print(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
