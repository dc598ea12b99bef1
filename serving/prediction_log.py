"""Every scored payment, kept for monitoring, audits and retraining.

Rows go to the `prediction_log` table of a SQLAlchemy database (`FRAUD_PREDICTION_LOG_URL`,
default the platform database): the payment's fields without its protected attributes
(only a 10-year age band is kept), the features the model saw, the score, decision,
model version, latency and prediction id. Outcomes reported to /feedback go to the
`feedback` table and join on prediction_id.

Writing never slows a request down: rows are queued and a background thread inserts
them in batches. On shutdown the queue is drained, so a graceful stop loses nothing; if
the database is down, rows are retried and, past a bounded backlog, dropped and counted.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa

logger = logging.getLogger("serving.prediction_log")

metadata = sa.MetaData()
prediction_log = sa.Table(
    "prediction_log",
    metadata,
    sa.Column("prediction_id", sa.String(36), primary_key=True),
    sa.Column("transaction_id", sa.String(128), nullable=False, index=True),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False, index=True),
    sa.Column("transaction_ts", sa.DateTime(timezone=True), nullable=False),
    sa.Column("user_id", sa.String(128), nullable=False),
    sa.Column("merchant_id", sa.String(128), nullable=False),
    sa.Column("merchant_category", sa.String(64)),
    sa.Column("amount", sa.Float, nullable=False),
    sa.Column("currency", sa.String(3)),
    sa.Column("device_id", sa.String(128)),
    sa.Column("device_type", sa.String(64)),
    sa.Column("channel", sa.String(64)),
    sa.Column("country", sa.String(2)),
    sa.Column("age_band", sa.String(8)),
    # JSON object feature name -> value, as text: sa.JSON doubles the writer's CPU cost.
    sa.Column("features", sa.Text, nullable=False),
    sa.Column("fraud_score", sa.Float, nullable=False),
    sa.Column("decision", sa.String(8), nullable=False),
    sa.Column("model_version", sa.String(32), nullable=False),
    sa.Column("latency_ms", sa.Float, nullable=False),
    sa.Column("degraded", sa.Boolean, nullable=False),
    sa.Column("endpoint", sa.String(32), nullable=False),
    sa.Column("api_key", sa.String(100)),
)
feedback = sa.Table(
    "feedback",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("prediction_id", sa.String(36), nullable=False, index=True),
    sa.Column("transaction_id", sa.String(128), nullable=False),
    sa.Column("is_fraud", sa.Boolean, nullable=False),
    sa.Column("label_timestamp", sa.DateTime(timezone=True), nullable=False),
    sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("api_key", sa.String(100)),
)


def age_band(age: float | None) -> str | None:
    """A 10-year band such as '30-39': enough for fairness reports, not the raw value."""
    if age is None:
        return None
    low = int(age // 10) * 10
    return f"{low}-{low + 9}"


def make_engine(url: str) -> sa.Engine:
    connect_args: dict[str, Any] = {}
    if url.startswith("sqlite"):
        # Several workers append to the same SQLite file; wait for the lock, don't fail.
        connect_args["timeout"] = 30
    return sa.create_engine(url, future=True, pool_pre_ping=True, connect_args=connect_args)


class PredictionLog:
    """Batched, off-request-path writer of the prediction log."""

    def __init__(
        self,
        url: str,
        batch_size: int = 1000,
        flush_interval_s: float = 0.5,
        max_backlog: int = 200_000,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self.url = url
        self.engine = make_engine(url)
        metadata.create_all(self.engine)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_backlog = max_backlog
        # A deque, not a Queue: appending must not wake the writer thread. A wake-up per
        # request hands the GIL back and forth and costs the request far more than the write.
        self._rows: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._enqueued = 0
        self._handled = 0
        self._stopping = False
        self._on_drop = on_drop
        self.dropped = 0
        self.written = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def log(self, row: dict[str, Any]) -> None:
        """Queue one prediction row; never blocks."""
        if len(self._rows) >= self.max_backlog:
            self._drop(1)
            return
        self._rows.append(row)
        self._enqueued += 1

    def record_feedback(
        self,
        prediction_id: str,
        transaction_id: str,
        is_fraud: bool,
        label_timestamp: datetime,
        api_key: str | None,
    ) -> None:
        """Store an outcome synchronously: the caller's acknowledgement means it is saved."""
        with self.engine.begin() as conn:
            conn.execute(
                feedback.insert().values(
                    prediction_id=prediction_id,
                    transaction_id=transaction_id,
                    is_fraud=is_fraud,
                    label_timestamp=label_timestamp,
                    received_at=datetime.now(UTC),
                    api_key=api_key,
                )
            )

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every row queued so far is written (or given up on)."""
        target = self._enqueued
        self._wake.set()
        deadline = time.monotonic() + timeout
        with self._done:
            while self._handled < target:
                left = deadline - time.monotonic()
                if left <= 0 or not self._thread.is_alive():
                    return False
                self._done.wait(min(left, 0.1))
        return True

    def close(self, timeout: float = 30.0) -> None:
        """Write out everything queued, then stop the writer."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("prediction log writer did not finish within %.0f s", timeout)
        self.engine.dispose()

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            while self._rows:
                batch: list[dict[str, Any]] = []
                while self._rows and len(batch) < self.batch_size:
                    batch.append(self._rows.popleft())
                self._write(batch, final=stopping)
                with self._done:
                    self._handled += len(batch)
                    self._done.notify_all()
            if stopping:
                return

    def _write(self, batch: list[dict[str, Any]], final: bool) -> None:
        attempts = 3 if final else 5
        for attempt in range(attempts):
            try:
                for row in batch:
                    if not isinstance(row["features"], str):
                        row["features"] = json.dumps(row["features"])
                with self.engine.begin() as conn:
                    conn.execute(prediction_log.insert(), batch)
                self.written += len(batch)
                return
            except sa.exc.IntegrityError:
                # A duplicate prediction id (replayed batch after a crash): write row by row.
                self._write_each(batch)
                return
            except Exception as exc:
                logger.warning(
                    "prediction log write failed (attempt %d/%d): %s", attempt + 1, attempts, exc
                )
                time.sleep(min(2.0**attempt * 0.2, 5.0))
        logger.error("dropping %d prediction log rows after %d attempts", len(batch), attempts)
        self._drop(len(batch))

    def _write_each(self, batch: list[dict[str, Any]]) -> None:
        for row in batch:
            try:
                with self.engine.begin() as conn:
                    conn.execute(prediction_log.insert(), [row])
                self.written += 1
            except sa.exc.IntegrityError:
                continue
            except Exception:
                self._drop(1)
