"""The prediction log never loses a row: PostgreSQL outages, shutdowns and kills.

Runs against a real PostgreSQL 15 that the tests stop (`pg_ctl stop -m fast`) and start
again, and checks the table row by row: every prediction_id present, none twice.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
import sqlalchemy as sa
from pg_server import Postgres

from fraud_pipelines.process import free_port
from serving.prediction_log import PredictionLog, decode_row, encode_row

REPO = Path(__file__).resolve().parents[2]
FIGURES = Path(os.environ.get("FRAUD_RELIABILITY_FIGURES", "/tmp/fraud-reliability-figures.jsonl"))


def record_figure(name: str, **values: Any) -> None:
    """Append a measured figure for docs/reliability.md (best effort, never fails a test)."""
    try:
        with FIGURES.open("a") as handle:
            handle.write(json.dumps({"test": name, **values}) + "\n")
    except OSError:
        pass


def make_row(i: int, prefix: str) -> dict[str, Any]:
    """A prediction log row as the engine writes it."""
    now = datetime.now(UTC)
    return {
        "prediction_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{prefix}-{i}")),
        "transaction_id": f"{prefix}-t{i}",
        "scored_at": now,
        "transaction_ts": now - timedelta(seconds=1),
        "user_id": f"u{i % 97}",
        "merchant_id": f"m{i % 13}",
        "merchant_category": "electronics",
        "amount": 10.0 + i,
        "currency": "EUR",
        "device_id": None,
        "device_type": "mobile",
        "channel": "app",
        "country": "DE",
        "age_band": "30-39",
        "features": {"amount": 10.0 + i, "user_txn_count_1h": float(i % 5)},
        "fraud_score": 0.01,
        "decision": "approve",
        "model_version": "1",
        "latency_ms": 0.5,
        "degraded": False,
        "endpoint": "predict",
        "api_key": "merchant",
    }


def journal_rows(path: Path) -> int:
    """Rows in a journal file (its first line is the header with the committed offset)."""
    with path.open("rb") as handle:
        return sum(1 for line in handle if not line.startswith(b"#"))


def stored_ids(url: str) -> list[str]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT prediction_id FROM prediction_log")).fetchall()
    finally:
        engine.dispose()
    return [r[0] for r in rows]


def assert_exactly(url: str, expected: set[str]) -> None:
    ids = stored_ids(url)
    assert len(ids) == len(set(ids)), "a prediction_id was stored twice"
    missing = expected - set(ids)
    assert not missing, f"{len(missing)} rows lost"
    assert set(ids) == expected


@pytest.fixture
def pg(postgres: Postgres) -> Iterator[Postgres]:
    """The PostgreSQL server with an empty prediction log, running again after the test."""
    postgres.reset()
    try:
        yield postgres
    finally:
        try:
            postgres.start()
        except subprocess.CalledProcessError:
            pass


def test_spool_lines_round_trip() -> None:
    """A spooled row reads back equal, datetimes and feature JSON included."""
    row = make_row(1, "round")
    back = decode_row(encode_row(row))
    assert back["scored_at"] == row["scored_at"]
    assert json.loads(back["features"]) == row["features"]
    assert {k: v for k, v in back.items() if k != "features"} == {
        k: v for k, v in row.items() if k != "features"
    }


def test_journal_lines_are_each_rows_json(tmp_path: Path) -> None:
    """log() and log_many() journal each row as msgspec's JSON of the row as given, features
    inlined as an object: the format every earlier version wrote and replays."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=3600)
    rows = [make_row(i, "lines") for i in range(5)]
    expected = b"".join(msgspec.json.encode(row) + b"\n" for row in rows)
    log.log(dict(rows[0]))
    log.log_many([dict(row) for row in rows[1:]])
    journal = log.journal.paths[0].read_bytes()
    log.close()
    assert journal.split(b"\n", 1)[1] == expected
    assert [json.loads(decode_row(line)["features"]) for line in expected.splitlines()] == [
        row["features"] for row in rows
    ]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_replayed_rows_are_stored_once(backend: str, tmp_path: Path, request: Any) -> None:
    """Writing the same prediction_id again (a replay) never duplicates it, on either database."""
    if backend == "postgresql":
        url = request.getfixturevalue("pg").url
    else:
        url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=0.05)
    rows = [make_row(i, f"dup-{backend}") for i in range(50)]
    for row in rows + rows[:20]:
        log.log(dict(row))
    assert log.wait_delivered(30)
    log.close()
    assert_exactly(url, {r["prediction_id"] for r in rows})
    assert log.dropped == 0


@pytest.mark.integration
def test_postgres_outage_loses_no_row(pg: Postgres, tmp_path: Path) -> None:
    """Rows logged while PostgreSQL is down go to the spool and are all written when it returns."""
    spool = tmp_path / "spool"
    log = PredictionLog(
        pg.url,
        spool_dir=spool,
        batch_size=200,
        flush_interval_s=0.05,
        max_memory_rows=500,
        retry_max_s=0.5,
    )
    expected: set[str] = set()

    def log_rows(start: int, count: int) -> None:
        for i in range(start, start + count):
            row = make_row(i, "outage")
            expected.add(row["prediction_id"])
            log.log(row)
            if i % 100 == 0:
                time.sleep(0.02)

    log_rows(0, 1000)
    assert log.wait_delivered(30)
    pg.stop()
    down_at = time.monotonic()
    log_rows(1000, 5000)
    assert log.flush(60)
    assert log.spooled >= 5000 - 500, "rows past the memory bound must be on disk"
    assert log.pending == 5000 and log.journal.cached == 0, "set aside: in the journal only"
    outage_s = time.monotonic() - down_at
    pg.start()
    up_at = time.monotonic()
    log_rows(6000, 1000)
    assert log.wait_delivered(120), f"{log.pending} rows still pending"
    catch_up_s = time.monotonic() - up_at
    log.close()
    assert_exactly(pg.url, expected)
    assert log.replayed == log.spooled and log.dropped == 0
    assert not list(spool.iterdir()), "a committed journal is deleted"
    record_figure(
        "postgres_outage",
        rows=len(expected),
        spooled=log.spooled,
        replayed=log.replayed,
        lost=len(expected) - len(set(stored_ids(pg.url))),
        outage_s=round(outage_s, 2),
        catch_up_s=round(catch_up_s, 2),
    )


@pytest.mark.integration
def test_rows_spooled_at_shutdown_are_written_by_the_next_start(
    pg: Postgres, tmp_path: Path
) -> None:
    """A graceful stop while PostgreSQL is down keeps the rows on disk for the next instance."""
    spool = tmp_path / "spool"
    pg.stop()
    first = PredictionLog(pg.url, spool_dir=spool, flush_interval_s=0.05, retry_max_s=0.5)
    rows = [make_row(i, "shutdown") for i in range(3000)]
    for row in rows:
        first.log(row)
    journal = first.journal.paths
    first.close()
    assert journal and all(path.exists() for path in journal)
    assert first.written == 0 and first.spooled == len(rows)
    pg.start()
    second = PredictionLog(pg.url, spool_dir=spool, flush_interval_s=0.05)
    deadline = time.monotonic() + 60
    while len(stored_ids(pg.url)) < len(rows) and time.monotonic() < deadline:
        time.sleep(0.2)
    second.close()
    assert_exactly(pg.url, {r["prediction_id"] for r in rows})
    assert second.replayed == len(rows)
    assert not any(path.exists() for path in journal)


KILLED_WRITER = """
import os, signal, sys
sys.path[:0] = [{tests!r}, {serving_tests!r}]
from test_prediction_spool import make_row
from serving.prediction_log import PredictionLog

log = PredictionLog({url!r}, spool_dir={spool!r}, flush_interval_s=0.05, retry_max_s=0.5)
for i in range({count}):
    log.log(make_row(i, "killed"))
assert log.flush(60)
print("spooled", log.spooled, flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.integration
def test_rows_in_the_spool_of_a_killed_process_are_delivered(pg: Postgres, tmp_path: Path) -> None:
    """kill -9 after rows reached the spool: the next PredictionLog writes every one of them."""
    spool = tmp_path / "spool"
    count = 2500
    # The killed writer's database is a port where nothing listens: every row is spooled.
    dead_url = f"postgresql+psycopg2://postgres@127.0.0.1:{free_port()}/postgres"
    script = KILLED_WRITER.format(
        tests=str(Path(__file__).parent),
        serving_tests=str(REPO / "tests" / "serving"),
        url=dead_url,
        spool=str(spool),
        count=count,
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    assert f"spooled {count}" in done.stdout
    left = list(spool.glob("*.jsonl"))
    assert len(left) == 1
    assert journal_rows(left[0]) == count
    log = PredictionLog(pg.url, spool_dir=spool, flush_interval_s=0.05)
    deadline = time.monotonic() + 60
    while len(stored_ids(pg.url)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    log.close()
    assert_exactly(pg.url, {make_row(i, "killed")["prediction_id"] for i in range(count)})
    assert not left[0].exists()
    record_figure("killed_writer", spooled=count, delivered=len(stored_ids(pg.url)), lost=0)


def test_rows_the_database_refuses_are_kept_with_the_reason(tmp_path: Path) -> None:
    """A row refused for its content is set aside in rejected.jsonl; its batch-mates are stored."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    log = PredictionLog(url, spool_dir=tmp_path / "spool", flush_interval_s=0.05)
    good = [make_row(i, "refused") for i in range(10)]
    bad = {**make_row(99, "refused"), "user_id": None}
    for row in [*good[:5], bad, *good[5:]]:
        log.log(row)
    assert log.wait_delivered(30)
    log.close()
    assert_exactly(url, {r["prediction_id"] for r in good})
    rejected = [json.loads(line) for line in (tmp_path / "spool" / "rejected.jsonl").open()]
    assert [r["row"]["prediction_id"] for r in rejected] == [bad["prediction_id"]]
    assert "NOT NULL" in rejected[0]["reason"] and log.dropped == 1


SIGKILLED_AFTER_ACK = """
import sys, time
sys.path[:0] = [{tests!r}, {serving_tests!r}]
from test_prediction_spool import make_row
from serving.prediction_log import PredictionLog

log = PredictionLog(
    {url!r}, spool_dir={spool!r}, flush_interval_s=3600, journal_segment_bytes={segment}
)
rows = [make_row(i, "acked") for i in range({count})]
for row in rows[:1000]:
    log.log(row)
log.log_many(rows[1000:2000])
assert log.wait_delivered(60)
for row in rows[2000:3000]:
    log.log(row)
for start in range(3000, {count}, 1000):
    log.log_many(rows[start : start + 1000])
print("done", log.pending, flush=True)
time.sleep(3600)
"""


@pytest.mark.integration
@pytest.mark.parametrize(
    ("backend", "segment"),
    [("sqlite", 8 << 20), ("sqlite", 64 << 10), ("postgresql", 8 << 20), ("postgresql", 64 << 10)],
)
def test_acknowledged_rows_survive_sigkill(
    backend: str, segment: int, tmp_path: Path, request: Any
) -> None:
    """kill -9 right after log()/log_many() returned, rows still only in memory and in the
    journal: the next PredictionLog over the folder delivers every row exactly once. The
    first 2,000 rows were committed before the kill, so they are not replayed (the writer may
    have committed a few more meanwhile)."""
    if backend == "postgresql":
        url = request.getfixturevalue("pg").url
    else:
        url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    count = 5000
    script = SIGKILLED_AFTER_ACK.format(
        tests=str(Path(__file__).parent),
        serving_tests=str(REPO / "tests" / "serving"),
        url=url,
        spool=str(spool),
        segment=segment,
        count=count,
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None and child.stderr is not None
        line = child.stdout.readline()
        child.send_signal(signal.SIGKILL)
        child.wait(30)
        assert line.startswith("done "), child.stderr.read()[-2000:]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL
    stored_before = len(stored_ids(url))
    assert stored_before >= 2000
    log = PredictionLog(url, spool_dir=spool, flush_interval_s=0.05)
    deadline = time.monotonic() + 60
    while len(stored_ids(url)) < count and time.monotonic() < deadline:
        time.sleep(0.1)
    log.close()
    assert_exactly(url, {make_row(i, "acked")["prediction_id"] for i in range(count)})
    assert count - stored_before <= log.replayed <= count - 2000, "replay from the committed offset"
    assert not list(spool.iterdir())
    record_figure(
        f"sigkill_after_ack_{backend}_{segment}",
        rows=count,
        stored_before_kill=stored_before,
        replayed=log.replayed,
        in_table=len(stored_ids(url)),
    )


def test_journal_segments_are_rotated_and_deleted(tmp_path: Path) -> None:
    """Under steady logging, committed segments are deleted: the journal stays small."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    log = PredictionLog(url, spool_dir=spool, flush_interval_s=0.02, journal_segment_bytes=32 << 10)
    rows = [make_row(i, "rotate") for i in range(3000)]
    most_files = 0
    for start in range(0, len(rows), 100):
        log.log_many(rows[start : start + 50])
        for row in rows[start + 50 : start + 100]:
            log.log(row)
        time.sleep(0.01)
        most_files = max(most_files, len(list(spool.glob("*.jsonl"))))
    assert log.wait_delivered(30)
    assert len(list(spool.glob("*.jsonl"))) <= 2
    log.close()
    assert_exactly(url, {r["prediction_id"] for r in rows})
    assert not list(spool.iterdir())
    assert most_files <= 4, f"{most_files} journal files at once"
    assert log.replayed == log.spooled == 0


def test_rows_are_delivered_when_the_journal_cannot_be_written(tmp_path: Path) -> None:
    """A journal folder that cannot be created (disk full, permissions) costs the kill
    guarantee, not the rows: they are kept in memory and written."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    (tmp_path / "not-a-folder").write_text("")
    log = PredictionLog(url, spool_dir=tmp_path / "not-a-folder" / "spool", flush_interval_s=0.05)
    rows = [make_row(i, "nojournal") for i in range(300)]
    log.log_many(rows[:100])
    for row in rows[100:]:
        log.log(row)
    assert log.wait_delivered(30)
    log.close()
    assert_exactly(url, {r["prediction_id"] for r in rows})
    assert log.dropped == 0


def test_spool_files_of_the_previous_version_are_delivered(tmp_path: Path) -> None:
    """A spool file left by the version before the journal (no header line, features as an
    escaped string) is delivered by the first start, from its first line."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    spool.mkdir()
    rows = [make_row(i, "legacy") for i in range(30)]
    lines = []
    for row in rows:
        old = {**row, "features": json.dumps(row["features"])}
        for name in ("scored_at", "transaction_ts"):
            old[name] = old[name].isoformat()
        lines.append(json.dumps(old, separators=(",", ":")) + "\n")
    (spool / "oldhost-123-abcdef12.jsonl").write_text("".join(lines))
    log = PredictionLog(url, spool_dir=spool, flush_interval_s=0.05)
    deadline = time.monotonic() + 30
    while len(stored_ids(url)) < len(rows) and time.monotonic() < deadline:
        time.sleep(0.05)
    log.close()
    assert_exactly(url, {r["prediction_id"] for r in rows})
    assert log.replayed == len(rows) and not list(spool.iterdir())


def test_concurrent_loggers_with_set_aside_rows(tmp_path: Path) -> None:
    """Threads logging at once while the writer keeps setting rows aside (a small memory bound)
    and reading them back from the journal: every row stored once, none left pending."""
    url = f"sqlite:///{tmp_path / 'log.db'}"
    spool = tmp_path / "spool"
    log = PredictionLog(
        url,
        spool_dir=spool,
        # Small batches and a tiny memory bound: the writer sets rows aside on almost every
        # cycle however fast the loggers are.
        batch_size=5,
        flush_interval_s=0.01,
        max_memory_rows=10,
        max_backlog=2000,
        journal_segment_bytes=64 << 10,
    )
    rows = [make_row(i, "threads") for i in range(4000)]

    def worker(part: list[dict[str, Any]]) -> None:
        for start in range(0, len(part), 20):
            chunk = part[start : start + 20]
            if start % 40:
                log.log_many(chunk)
            else:
                for row in chunk:
                    log.log(row)
            time.sleep(0.002)

    threads = [threading.Thread(target=worker, args=(rows[k::4],)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.wait_delivered(60), f"{log.pending} rows pending"
    log.close()
    assert_exactly(url, {r["prediction_id"] for r in rows})
    assert log.spooled > 0 and log.replayed == log.spooled and log.dropped == 0
    assert not list(spool.iterdir())
    record_figure(
        "concurrent_loggers", rows=len(rows), set_aside=log.spooled, replayed=log.replayed
    )
