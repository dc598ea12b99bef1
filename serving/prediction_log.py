"""Every scored payment, kept for monitoring, audits and retraining.

Rows go to the `prediction_log` table of a SQLAlchemy database (`FRAUD_PREDICTION_LOG_URL`,
default the platform database): the payment's fields without its protected attributes
(only a 10-year age band is kept), the features the model saw, the score, decision,
model version, latency and prediction id. Outcomes reported to /feedback go to the
`feedback` table and join on prediction_id.

Writing never slows a request down, and no row is lost while the disk holds:

* rows are queued in memory and a background thread inserts them in batches;
* when the database is down, or the queue grows past `max_memory_rows`, rows are appended
  to a spool file under `FRAUD_HOME/serving/spool/` (JSON lines, fsync'd per batch) and
  replayed in order once the database answers again;
* inserts are idempotent (`ON CONFLICT (prediction_id) DO NOTHING` on PostgreSQL and
  SQLite), so a batch replayed twice, e.g. after a crash between insert and bookkeeping,
  is stored once;
* a graceful stop writes out the queue; rows the database still refuses stay in the spool,
  and the next start (of this or any other worker sharing the folder) delivers them;
* a row the database rejects for its content (not for being unreachable) goes to
  `spool/rejected.jsonl` with the reason and is counted as dropped.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

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


DATETIME_COLUMNS = frozenset(
    c.name for c in prediction_log.columns if isinstance(c.type, sa.DateTime)
)
REJECTED_FILE = "rejected.jsonl"


def encode_row(row: dict[str, Any]) -> bytes:
    """One row as a JSON line: datetimes in ISO 8601, features as their JSON text."""
    out = dict(row)
    if not isinstance(out.get("features"), str):
        out["features"] = json.dumps(out["features"])
    for name in DATETIME_COLUMNS:
        value = out.get(name)
        if isinstance(value, datetime):
            out[name] = value.isoformat()
    return json.dumps(out, separators=(",", ":")).encode() + b"\n"


def decode_row(line: bytes) -> dict[str, Any]:
    """The row `encode_row` wrote."""
    row: dict[str, Any] = json.loads(line)
    for name in DATETIME_COLUMNS:
        value = row.get(name)
        if isinstance(value, str):
            row[name] = datetime.fromisoformat(value)
    return row


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_transient(exc: BaseException) -> bool:
    """True when the database could not be reached, as opposed to refusing the row itself."""
    return not isinstance(exc, (sa.exc.DataError, sa.exc.IntegrityError))


class _TransientFailure(Exception):
    """The database is unreachable: the batch is still ours to keep."""


class Spool:
    """This process's append-only spool file, and the orphaned ones of processes gone.

    Each `PredictionLog` appends to its own file and holds an exclusive `flock` on it while
    alive, so another process can tell a live spool from an orphan by trying the lock.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / (
            f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        )
        self._file: IO[bytes] | None = None
        self._read_offset = 0
        self.pending = 0
        self._lock = threading.Lock()

    def _open(self) -> IO[bytes]:
        if self._file is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            handle = self.path.open("ab")
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            _fsync_dir(self.directory)
            self._file = handle
        return self._file

    def append(self, rows: list[dict[str, Any]]) -> None:
        """Append rows and fsync: once this returns, they survive a crash."""
        data = b"".join(encode_row(row) for row in rows)
        with self._lock:
            handle = self._open()
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
            self.pending += len(rows)

    def peek(self, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Up to `limit` of the oldest undelivered rows and the offset just after them."""
        with self._lock:
            if self._file is None or self.pending == 0:
                return [], self._read_offset
            rows: list[dict[str, Any]] = []
            offset = self._read_offset
            with self.path.open("rb") as reader:
                reader.seek(offset)
                for line in reader:
                    if not line.endswith(b"\n"):
                        break
                    offset += len(line)
                    rows.append(decode_row(line))
                    if len(rows) >= limit:
                        break
            return rows, offset

    def commit(self, offset: int, count: int) -> None:
        """Mark the rows up to `offset` delivered; an emptied spool is truncated."""
        with self._lock:
            self._read_offset = offset
            self.pending -= count
            if self.pending == 0 and self._file is not None:
                self._file.truncate(0)
                self._file.seek(0)
                os.fsync(self._file.fileno())
                self._read_offset = 0

    def close(self) -> None:
        """Release the file; an empty one is removed, a non-empty one waits for a replay."""
        with self._lock:
            if self._file is None:
                return
            if self.pending == 0:
                self.path.unlink(missing_ok=True)
            self._file.close()
            self._file = None

    @contextmanager
    def orphans(self) -> Iterator[list[tuple[Path, IO[bytes]]]]:
        """Spool files left by processes that are gone, each opened and locked by us."""
        taken: list[tuple[Path, IO[bytes]]] = []
        try:
            candidates = sorted(
                (p for p in self.directory.glob("*.jsonl") if p.name != REJECTED_FILE),
                key=lambda p: p.stat().st_mtime,
            )
        except FileNotFoundError:
            candidates = []
        for path in candidates:
            if path == self.path:
                continue
            try:
                handle = path.open("rb")
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            taken.append((path, handle))
        try:
            yield taken
        finally:
            for _, handle in taken:
                handle.close()


class PredictionLog:
    """Batched, off-request-path writer of the prediction log that never loses a row."""

    def __init__(
        self,
        url: str,
        batch_size: int = 1000,
        flush_interval_s: float = 0.5,
        max_memory_rows: int = 20_000,
        max_backlog: int = 200_000,
        on_drop: Callable[[int], None] | None = None,
        spool_dir: Path | str | None = None,
        retry_max_s: float = 5.0,
        on_spool: Callable[[int], None] | None = None,
        on_replay: Callable[[int], None] | None = None,
    ) -> None:
        """`max_memory_rows` queued rows send the rest to disk until the queue is written;
        at `max_backlog` the request thread itself spills the queue (never blocking on the
        database). `spool_dir` defaults to `FRAUD_HOME/serving/spool`."""
        if spool_dir is None:
            from serving.config import ServingSettings

            spool_dir = ServingSettings.from_env().serving_dir / "spool"
        self.url = url
        self.engine = make_engine(url)
        self._table_ready = False
        try:
            self._ensure_table()
        except Exception as exc:
            logger.warning("prediction log database unavailable at start, spooling: %s", exc)
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.max_memory_rows = max_memory_rows
        self.max_backlog = max(max_backlog, max_memory_rows)
        self.retry_max_s = retry_max_s
        self.spool = Spool(Path(spool_dir))
        # A deque, not a Queue: appending must not wake the writer thread. A wake-up per
        # request hands the GIL back and forth and costs the request far more than the write.
        self._rows: deque[dict[str, Any]] = deque()
        self._wake = threading.Event()
        self._done = threading.Condition()
        self._enqueued = 0
        self._handled = 0
        self._stopping = False
        self._on_drop = on_drop
        self._on_spool = on_spool
        self._on_replay = on_replay
        self._retry_at = 0.0
        self._backoff = 0.0
        self._orphans_at = 0.0
        self.dropped = 0
        self.written = 0
        self.spooled = 0
        self.replayed = 0
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Rows not yet in the database: queued in memory or waiting in this spool."""
        return len(self._rows) + self.spool.pending

    def log(self, row: dict[str, Any]) -> None:
        """Queue one prediction row; never waits for the database."""
        self._rows.append(row)
        self._enqueued += 1
        if len(self._rows) >= self.max_backlog:
            self._spill_queue()

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
        """Wait until every row queued so far is in the database or safe in the spool."""
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

    def wait_delivered(self, timeout: float = 30.0) -> bool:
        """Wait until every row queued so far, spooled ones included, is in the database."""
        deadline = time.monotonic() + timeout
        while self.pending > 0:
            if time.monotonic() > deadline or not self._thread.is_alive():
                return False
            self._retry_at = 0.0
            self._wake.set()
            time.sleep(0.05)
        return self.flush(max(0.0, deadline - time.monotonic()))

    def close(self, timeout: float = 30.0) -> None:
        """Write out everything queued; what the database refuses stays in the spool."""
        if self._stopping:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.error("prediction log writer did not finish within %.0f s", timeout)
            self._spill_queue()
        if self.spool.pending:
            logger.warning(
                "%d prediction log rows stay in %s; the next start writes them",
                self.spool.pending,
                self.spool.path,
            )
        self.spool.close()
        self.engine.dispose()

    def _ensure_table(self) -> None:
        if not self._table_ready:
            metadata.create_all(self.engine)
            self._table_ready = True

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self._on_drop is not None:
            self._on_drop(count)

    def _handled_rows(self, count: int) -> None:
        with self._done:
            self._handled += count
            self._done.notify_all()

    def _spill(self, batch: list[dict[str, Any]]) -> None:
        self.spool.append(batch)
        self.spooled += len(batch)
        if self._on_spool is not None:
            self._on_spool(len(batch))

    def _spill_queue(self) -> None:
        """Move the whole in-memory queue to the spool (overload, or a stuck writer)."""
        batch: list[dict[str, Any]] = []
        while True:
            try:
                batch.append(self._rows.popleft())
            except IndexError:
                break
        if batch:
            self._spill(batch)
            self._handled_rows(len(batch))

    def _down(self, exc: BaseException) -> None:
        self._backoff = min(max(self._backoff * 2, 0.25), self.retry_max_s)
        self._retry_at = time.monotonic() + self._backoff
        logger.warning(
            "prediction log database unavailable (retry in %.1f s): %s", self._backoff, exc
        )

    def _database_due(self, final: bool) -> bool:
        return final or time.monotonic() >= self._retry_at

    def _run(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            stopping = self._stopping
            try:
                self._cycle(final=stopping)
            except Exception:
                # The spool itself failed (disk full, permissions): keep the rows in memory.
                logger.exception("prediction log writer cycle failed")
                time.sleep(1.0)
            if stopping:
                return

    def _cycle(self, final: bool) -> None:
        if self._database_due(final) and time.monotonic() >= self._orphans_at:
            self._orphans_at = time.monotonic() + 30.0
            self._replay_orphans()
        while self._rows:
            batch: list[dict[str, Any]] = []
            while self._rows and len(batch) < self.batch_size:
                batch.append(self._rows.popleft())
            direct = (
                self.spool.pending == 0
                and self._database_due(final)
                and len(self._rows) <= self.max_memory_rows
            )
            try:
                if not direct:
                    raise _TransientFailure("spooling")
                self._deliver(batch)
            except _TransientFailure:
                try:
                    self._spill(batch)
                except OSError:
                    self._rows.extendleft(reversed(batch))
                    raise
            self._handled_rows(len(batch))
        if self.spool.pending and self._database_due(final):
            self._replay_own()

    def _replay_own(self) -> None:
        while self.spool.pending:
            rows, offset = self.spool.peek(self.batch_size)
            if not rows:
                return
            try:
                self._deliver(rows)
            except _TransientFailure:
                return
            self.spool.commit(offset, len(rows))
            self._replayed(len(rows))

    def _replay_orphans(self) -> None:
        with self.spool.orphans() as orphans:
            for path, handle in orphans:
                count = 0
                rows: list[dict[str, Any]] = []
                try:
                    for line in handle:
                        if not line.endswith(b"\n"):
                            logger.warning("%s ends with a partial row; it was never acked", path)
                            break
                        try:
                            rows.append(decode_row(line))
                        except ValueError as exc:
                            self._reject([({"line": line.decode("utf-8", "replace")}, str(exc))])
                            continue
                        if len(rows) >= self.batch_size:
                            self._deliver(rows)
                            count += len(rows)
                            rows = []
                    if rows:
                        self._deliver(rows)
                        count += len(rows)
                except _TransientFailure:
                    self._replayed(count)
                    return
                path.unlink(missing_ok=True)
                self._replayed(count)
                logger.info("replayed %d prediction log rows from %s", count, path.name)

    def _replayed(self, count: int) -> None:
        if count:
            self.replayed += count
            if self._on_replay is not None:
                self._on_replay(count)

    def _insert(self) -> Any:
        dialect = self.engine.dialect.name
        if dialect == "postgresql":
            return postgresql.insert(prediction_log).on_conflict_do_nothing(
                index_elements=["prediction_id"]
            )
        if dialect == "sqlite":
            return sqlite.insert(prediction_log).on_conflict_do_nothing(
                index_elements=["prediction_id"]
            )
        return prediction_log.insert()

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        """Insert a batch; raises `_TransientFailure` if the database cannot be reached."""
        for row in batch:
            if not isinstance(row["features"], str):
                row["features"] = json.dumps(row["features"])
        try:
            self._ensure_table()
            with self.engine.begin() as conn:
                conn.execute(self._insert(), batch)
        except Exception as exc:
            if _is_transient(exc):
                self._down(exc)
                raise _TransientFailure(str(exc)) from exc
            self._deliver_each(batch)
            return
        self._backoff = 0.0
        self.written += len(batch)

    def _deliver_each(self, batch: list[dict[str, Any]]) -> None:
        """Row by row, to set aside only the rows the database refuses for their content."""
        refused: list[tuple[dict[str, Any], str]] = []
        for row in batch:
            try:
                with self.engine.begin() as conn:
                    conn.execute(self._insert(), [row])
            except Exception as exc:
                if _is_transient(exc):
                    self._down(exc)
                    raise _TransientFailure(str(exc)) from exc
                if isinstance(exc, sa.exc.IntegrityError) and self._stored(row["prediction_id"]):
                    continue
                refused.append((row, str(getattr(exc, "orig", exc))))
            else:
                self.written += 1
        if refused:
            self._reject(refused)

    def _stored(self, prediction_id: str) -> bool:
        with self.engine.connect() as conn:
            found = conn.execute(
                sa.select(prediction_log.c.prediction_id).where(
                    prediction_log.c.prediction_id == prediction_id
                )
            ).first()
        return found is not None

    def _reject(self, refused: list[tuple[dict[str, Any], str]]) -> None:
        path = self.spool.directory / REJECTED_FILE
        self.spool.directory.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as handle:
            for row, reason in refused:
                entry = json.loads(encode_row(row)) if "prediction_id" in row else row
                handle.write(json.dumps({"reason": reason[:500], "row": entry}).encode() + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        logger.error(
            "%d prediction log rows refused by the database, kept in %s", len(refused), path
        )
        self._drop(len(refused))
