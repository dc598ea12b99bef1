"""The online store: what the scoring service knows of every customer and merchant.

Features of a live payment depend on the customer's and the merchant's past (counts and
sums over 1 h / 24 h / 7 d, the z-score of the amount, devices, merchants and countries
seen before, the merchant's volume and its fraud labels known so far). The store keeps
exactly the state `fraud_assets.core.features.online_features` needs, updates it after
every scored payment, and remembers each scored transaction_id with its result, so a
retried request returns the original answer and never counts twice.

Two implementations share one interface:

* `SqliteOnlineStore` (default): one SQLite file in WAL mode, safe for several worker
  processes on one machine.
* `RedisOnlineStore`: chosen when `FRAUD_ONLINE_STORE_URL` starts with `redis://`;
  sorted sets keep every window query and update O(log n), and each request costs two
  round trips (one pipelined read, one atomic Lua write).

`bulk_load` fills a fresh store from the offline history so the service knows every
customer's past from its first request; `python -m serving.online_store load` does it
from the platform's ingested transactions. The parity test (tests/serving/test_parity.py)
replays a day through this store and checks every feature against the offline
computation.
"""

from __future__ import annotations

import abc
import argparse
import json
import logging
import math
import re
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import pandas as pd

from fraud_assets.core.features import (
    HISTORY_MS,
    MERCHANT_WINDOWS_MS,
    FeatureSpec,
    MerchantHistory,
    UserHistory,
    label_known_ms,
    timestamps_ms,
)
from fraud_assets.core.live_batch import HistoryBatch

logger = logging.getLogger("serving.online_store")

NEVER = np.iinfo(np.int64).max
# A merchant's labels known before `through_ms` are kept as running totals; only labels
# since then are counted per request. The totals trail the newest payment by a day, so
# payments arriving up to a day late still take the fast path.
LABEL_TOTALS_LAG_MS = 86_400_000
LABEL_TOTALS_ADVANCE_MS = 2 * 86_400_000
DEFAULT_RETENTION_DAYS = 400
_KIND_DEVICE, _KIND_MERCHANT, _KIND_COUNTRY = 0, 1, 2


class StoreUnavailable(Exception):
    """The store could not be read or written (locked too long, Redis down, ...)."""


@dataclass(frozen=True)
class StoreTxn:
    """The fields of a payment the store reads and updates."""

    transaction_id: str
    user_id: str
    merchant_id: str
    ts_ms: int
    amount: float
    device_id: str = ""
    country: str = ""


@dataclass(frozen=True)
class StoredResult:
    """A transaction the service already scored: its features and the response it got."""

    transaction_id: str
    prediction_id: str
    features: list[float]
    response: str | None
    model_version: str


@dataclass(frozen=True)
class Prepared:
    """The history of a payment's customer and merchant, or its earlier result."""

    user: UserHistory
    merchant: MerchantHistory
    existing: StoredResult | None = None
    # True when the payment is part of the bulk-loaded history: it is already counted.
    in_history: bool = False


@dataclass(frozen=True)
class PreparedBatch:
    """The store's view of a batch of payments before any of them is recorded.

    `history` has one entry per payment, as of that payment's time; `existing` maps the
    position of each payment scored before to its result; `in_history[i]` is True for a
    payment already counted in the loaded history.
    """

    history: HistoryBatch
    existing: dict[int, StoredResult]
    in_history: np.ndarray


@dataclass(frozen=True)
class Commit:
    """A scored payment to record: its fields, features, prediction id and response."""

    txn: StoreTxn
    features: np.ndarray
    prediction_id: str
    model_version: str
    response: str | None


def _scored_row(c: Commit, features_json: str, now_ms: int, log_amount: float) -> tuple[Any, ...]:
    """The `transactions` row of a scored payment (its trigger updates the history)."""
    txn = c.txn
    return (
        txn.transaction_id,
        txn.merchant_id,
        txn.ts_ms,
        c.prediction_id,
        c.model_version,
        features_json,
        c.response,
        now_ms,
        txn.user_id,
        txn.amount,
        txn.device_id,
        txn.country,
        log_amount,
        log_amount * log_amount,
    )


def empty_history() -> tuple[UserHistory, MerchantHistory]:
    """The history of a customer and merchant never seen before."""
    user = UserHistory(np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float64))
    merchant = MerchantHistory({k: 0.0 for k in MERCHANT_WINDOWS_MS})
    return user, merchant


def _to_ms(value: datetime | pd.Timestamp | int | float) -> int:
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, float):
        return int(value)
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return int(stamp.value // 1_000_000)


_encoder = msgspec.json.Encoder()


def _features_json(features: np.ndarray | Sequence[float]) -> str:
    # Floats are written in their shortest exact form, so stored features explain
    # bit-identically. msgspec would write NaN as null; json keeps it a float.
    values = np.asarray(features, dtype=np.float64)
    if not np.isfinite(values).all():
        return json.dumps(values.tolist(), separators=(",", ":"))
    return _encoder.encode(values.tolist()).decode()


@dataclass(frozen=True)
class _History:
    """A canonical-order history reduced to what the store keeps, computed vectorized."""

    end_ms: int
    txn: pd.DataFrame  # transaction_id, merchant_id, ts_ms
    users: pd.DataFrame  # user_id, n, log_sum, log_sumsq, last_ts
    user_events: pd.DataFrame  # user_id, ts_ms, amount, transaction_id (last 7 days)
    seen: pd.DataFrame  # user_id, kind, value
    merchant_events: pd.DataFrame  # merchant_id, ts_ms, transaction_id (last 7 days)
    labels: pd.DataFrame  # transaction_id, merchant_id, known_at_ms, is_fraud

    @classmethod
    def from_frame(cls, history: pd.DataFrame, spec: FeatureSpec) -> _History:
        frame = history.reset_index(drop=True)
        ts = timestamps_ms(frame["timestamp"])
        order = np.lexsort((frame["transaction_id"].astype(str).to_numpy(), ts))
        frame = frame.iloc[order].reset_index(drop=True)
        ts = ts[order]
        n = len(frame)
        text = {
            c: (
                frame[c].astype(object).where(frame[c].notna(), "").astype(str).to_numpy()
                if c in frame
                else np.full(n, "", dtype=object)
            )
            for c in ("transaction_id", "user_id", "merchant_id", "device_id", "country")
        }
        amount = frame["amount"].to_numpy(np.float64)
        log_amount = np.log1p(amount)
        # Per-user running sums in canonical order, added one by one like the live store.
        moments = pd.DataFrame(
            {"user_id": text["user_id"], "x": log_amount, "xx": log_amount * log_amount}
        )
        running = moments.groupby("user_id", sort=False)[["x", "xx"]].cumsum()
        per_user = pd.DataFrame(
            {
                "user_id": text["user_id"],
                "log_sum": running["x"].to_numpy(),
                "log_sumsq": running["xx"].to_numpy(),
                "last_ts": ts,
            }
        )
        users = per_user.groupby("user_id", sort=False).last()
        users["n"] = per_user.groupby("user_id", sort=False).size().astype(np.float64)
        users = users.reset_index()[["user_id", "n", "log_sum", "log_sumsq", "last_ts"]]
        end = int(ts.max()) if n else 0
        recent = ts >= end - HISTORY_MS
        user_events = pd.DataFrame(
            {
                "user_id": text["user_id"][recent],
                "ts_ms": ts[recent],
                "amount": amount[recent],
                "transaction_id": text["transaction_id"][recent],
            }
        )
        seen = pd.concat(
            [
                pd.DataFrame({"user_id": text["user_id"], "kind": kind, "value": text[col]})
                for kind, col in (
                    (_KIND_DEVICE, "device_id"),
                    (_KIND_MERCHANT, "merchant_id"),
                    (_KIND_COUNTRY, "country"),
                )
            ],
            ignore_index=True,
        ).drop_duplicates()
        merchant_events = pd.DataFrame(
            {
                "merchant_id": text["merchant_id"][recent],
                "ts_ms": ts[recent],
                "transaction_id": text["transaction_id"][recent],
            }
        )
        if "is_fraud" in frame:
            known = label_known_ms(frame, ts, spec.config)
            fraud = pd.to_numeric(frame["is_fraud"], errors="coerce").fillna(0).to_numpy()
        else:
            known = np.full(n, NEVER, dtype=np.int64)
            fraud = np.zeros(n)
        has = known != NEVER
        labels = pd.DataFrame(
            {
                "transaction_id": text["transaction_id"][has],
                "merchant_id": text["merchant_id"][has],
                "known_at_ms": known[has].astype(np.int64),
                "is_fraud": (fraud[has] > 0).astype(np.int64),
            }
        )
        txn = pd.DataFrame(
            {
                "transaction_id": text["transaction_id"],
                "merchant_id": text["merchant_id"],
                "ts_ms": ts,
            }
        )
        return cls(end, txn, users, user_events, seen, merchant_events, labels)


class OnlineStore(abc.ABC):
    """Per-customer and per-merchant state for live features, plus idempotency."""

    @abc.abstractmethod
    def prepare(self, txn: StoreTxn) -> Prepared:
        """The customer's and merchant's history as of `txn`, or `txn`'s earlier result."""

    @abc.abstractmethod
    def commit(
        self,
        txn: StoreTxn,
        features: np.ndarray,
        prediction_id: str,
        model_version: str,
        response: str | None,
    ) -> StoredResult | None:
        """Record `txn` as scored and add it to its customer's and merchant's history.

        Atomic: either everything is recorded or nothing. Returns the earlier result when
        the same transaction_id was committed first (e.g. by a concurrent retry); then
        nothing changes.
        """

    @abc.abstractmethod
    def prepare_many(self, txns: Sequence[StoreTxn]) -> PreparedBatch:
        """`prepare` of many payments in one read, all as of before the batch.

        Payments of the batch do not see each other here: `batch_features` adds them.
        """

    @abc.abstractmethod
    def commit_many(self, commits: Sequence[Commit]) -> dict[str, StoredResult]:
        """`commit` of many payments, in the given (canonical) order, in one write.

        Returns the earlier results of payments another request recorded first.
        """

    @abc.abstractmethod
    def save_responses(self, responses: Sequence[tuple[str, str]]) -> None:
        """Attach (transaction_id, response) to transactions committed without one (batches)."""

    @abc.abstractmethod
    def lookup(self, transaction_id: str) -> StoredResult | None:
        """The stored result of a scored transaction."""

    @abc.abstractmethod
    def find_prediction(self, prediction_id: str) -> StoredResult | None:
        """The scored transaction a prediction_id belongs to."""

    @abc.abstractmethod
    def record_label(
        self, transaction_id: str, is_fraud: bool, label_ts: datetime | pd.Timestamp | int
    ) -> bool:
        """A transaction's confirmed outcome, counted for its merchant from `label_ts` on.

        A later label of the same transaction replaces the earlier one. Returns False when
        the transaction is unknown to the store.
        """

    @abc.abstractmethod
    def bulk_load(self, history: pd.DataFrame, spec: FeatureSpec, replace: bool = True) -> int:
        """Load an offline history (canonical schema) so live features continue it.

        Every transaction and every label in `history` is loaded; a label counts for its
        merchant from its label_timestamp on, or `spec.config.label_maturity_days` after
        its transaction when it has none, exactly as offline. Labels that arrive later are
        added with `record_label`. `replace` wipes the store first. Returns the row count.
        """

    @abc.abstractmethod
    def ping(self) -> None:
        """Raise StoreUnavailable if the store cannot be reached."""

    def close(self) -> None:  # noqa: B027 - optional hook, most backends have nothing to do
        """Release connections."""


def open_store(url: str, timeout_s: float = 5.0) -> OnlineStore:
    """The store a URL names: `redis://...` for Redis, anything else is a SQLite path.

    `timeout_s` is Redis' network timeout. SQLite keeps its own lock wait: a busy file is
    a moment's wait on another writer, not an outage.
    """
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisOnlineStore(url, timeout_s=timeout_s)
    path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else url
    return SqliteOnlineStore(Path(path))


# Merchant windows are counted from hourly buckets plus the raw events of the two
# partial hours at the window's edges, so a busy merchant costs the same as a quiet one.
BUCKET_MS = 3_600_000
_RAW_KEEP_MS = HISTORY_MS + BUCKET_MS

_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS users(
    user_id TEXT PRIMARY KEY, n REAL NOT NULL, log_sum REAL NOT NULL,
    log_sumsq REAL NOT NULL, last_ts INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_events(
    user_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, transaction_id TEXT NOT NULL,
    amount REAL NOT NULL, PRIMARY KEY(user_id, ts_ms, transaction_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS user_seen(
    user_id TEXT NOT NULL, kind INTEGER NOT NULL, value TEXT NOT NULL,
    PRIMARY KEY(user_id, kind, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merchant_events(
    merchant_id TEXT NOT NULL, ts_ms INTEGER NOT NULL, transaction_id TEXT NOT NULL,
    PRIMARY KEY(merchant_id, ts_ms, transaction_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merchant_buckets(
    merchant_id TEXT NOT NULL, bucket INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY(merchant_id, bucket)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS merchant_labels(
    transaction_id TEXT PRIMARY KEY, merchant_id TEXT NOT NULL,
    known_at_ms INTEGER NOT NULL, is_fraud INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS merchant_labels_by_time
    ON merchant_labels(merchant_id, known_at_ms, is_fraud);
CREATE TABLE IF NOT EXISTS merchant_label_totals(
    merchant_id TEXT PRIMARY KEY, through_ms INTEGER NOT NULL,
    known INTEGER NOT NULL, fraud INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transactions(
    transaction_id TEXT PRIMARY KEY, merchant_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
    prediction_id TEXT UNIQUE, model_version TEXT, features TEXT, response TEXT,
    scored_ms INTEGER, user_id TEXT, amount REAL, device_id TEXT, country TEXT,
    log_amount REAL, log_amount_sq REAL);
-- A newly scored payment joins its customer's and merchant's history inside SQLite, in the
-- same transaction as its idempotency record (one statement from Python instead of ten).
CREATE TRIGGER IF NOT EXISTS scored_payment_history AFTER INSERT ON transactions
WHEN NEW.prediction_id IS NOT NULL BEGIN
    INSERT OR IGNORE INTO user_events
        VALUES (NEW.user_id, NEW.ts_ms, NEW.transaction_id, NEW.amount);
    -- REAL additions are IEEE doubles, exactly like the offline cumulative sums.
    INSERT INTO users VALUES (NEW.user_id, 1.0, NEW.log_amount, NEW.log_amount_sq, NEW.ts_ms)
        ON CONFLICT(user_id) DO UPDATE SET n = n + 1.0,
        log_sum = log_sum + excluded.log_sum, log_sumsq = log_sumsq + excluded.log_sumsq,
        last_ts = MAX(last_ts, excluded.last_ts);
    INSERT OR IGNORE INTO user_seen VALUES
        (NEW.user_id, 0, NEW.device_id), (NEW.user_id, 1, NEW.merchant_id),
        (NEW.user_id, 2, NEW.country);
    INSERT OR IGNORE INTO merchant_events VALUES (NEW.merchant_id, NEW.ts_ms, NEW.transaction_id);
    INSERT INTO merchant_buckets VALUES (NEW.merchant_id, NEW.ts_ms / {BUCKET_MS}, 1)
        ON CONFLICT(merchant_id, bucket) DO UPDATE SET count = count + 1;
    DELETE FROM user_events WHERE user_id = NEW.user_id AND ts_ms < NEW.ts_ms - {_RAW_KEEP_MS};
    DELETE FROM merchant_events
        WHERE merchant_id = NEW.merchant_id AND ts_ms < NEW.ts_ms - {_RAW_KEEP_MS};
    DELETE FROM merchant_buckets
        WHERE merchant_id = NEW.merchant_id AND bucket < (NEW.ts_ms - {_RAW_KEEP_MS}) / {BUCKET_MS};
END;
"""
_STATE_TABLES = (
    "users",
    "user_events",
    "user_seen",
    "merchant_events",
    "merchant_buckets",
    "merchant_labels",
    "merchant_label_totals",
    "transactions",
)
_FAR_PAST = -(2**62)


def _window_sql(name: str) -> str:
    return (
        "(SELECT COALESCE(SUM(count), 0) FROM merchant_buckets WHERE merchant_id = :m "
        f"AND bucket > :{name}_lob AND bucket < :hib) + "
        "(SELECT COUNT(*) FROM merchant_events WHERE merchant_id = :m "
        f"AND ts_ms >= :{name}_lo AND ts_ms < :{name}_loedge)"
    )


# Everything about a payment's history but the customer's recent events, in one statement.
_PREPARE_SQL = f"""
SELECT
  (SELECT prediction_id IS NOT NULL FROM transactions WHERE transaction_id = :tid),
  u.n, u.log_sum, u.log_sumsq, u.last_ts,
  EXISTS(SELECT 1 FROM user_seen WHERE user_id = :u AND kind = 0 AND value = :dev),
  EXISTS(SELECT 1 FROM user_seen WHERE user_id = :u AND kind = 1 AND value = :m),
  EXISTS(SELECT 1 FROM user_seen WHERE user_id = :u AND kind = 2 AND value = :cty),
  (SELECT COUNT(*) FROM merchant_events WHERE merchant_id = :m
     AND ts_ms >= :hiedge AND ts_ms <= :ts),
  {_window_sql("w24h")},
  {_window_sql("w7d")},
  COALESCE(lt.known, 0), COALESCE(lt.fraud, 0),
  (SELECT COUNT(*) FROM merchant_labels WHERE merchant_id = :m
     AND known_at_ms >= COALESCE(lt.through_ms, {_FAR_PAST}) AND known_at_ms < :ts),
  (SELECT COALESCE(SUM(is_fraud), 0) FROM merchant_labels WHERE merchant_id = :m
     AND known_at_ms >= COALESCE(lt.through_ms, {_FAR_PAST}) AND known_at_ms < :ts)
FROM (SELECT 1)
LEFT JOIN users AS u ON u.user_id = :u
LEFT JOIN merchant_label_totals AS lt ON lt.merchant_id = :m AND lt.through_ms <= :ts
"""
_SELECT_STORED = (
    "SELECT transaction_id, prediction_id, features, response, model_version "
    "FROM transactions WHERE transaction_id = ?"
)

# The same statement for a whole batch: one row per payment of the temp table batch_keys,
# whose columns are the named parameters above.
_BATCH_PREPARE_SQL = (
    re.sub(
        r":(\w+)",
        r"b.\1",
        _PREPARE_SQL.replace("SELECT\n", "SELECT b.i,\n", 1).replace(
            "FROM (SELECT 1)", "FROM temp.batch_keys AS b"
        ),
    )
    + "ORDER BY b.i"
)
_KEY_COLUMNS: tuple[str, ...] = (
    "tid",
    "u",
    "m",
    "dev",
    "cty",
    "ts",
    "hib",
    "hiedge",
    *(f"w{name}_{part}" for name in MERCHANT_WINDOWS_MS for part in ("lo", "lob", "loedge")),
)
_TEXT_KEYS = frozenset({"tid", "u", "m", "dev", "cty"})
_BATCH_EVENTS_SQL = f"""
SELECT b.i, e.ts_ms, e.amount FROM temp.batch_keys AS b
JOIN user_events AS e ON e.user_id = b.u AND e.ts_ms >= b.ts - {HISTORY_MS} AND e.ts_ms <= b.ts
ORDER BY b.i, e.ts_ms, e.transaction_id
"""
_BATCH_EXISTING_SQL = (
    "SELECT b.i, t.transaction_id, t.prediction_id, t.features, t.response, t.model_version "
    "FROM temp.batch_keys AS b JOIN transactions AS t ON t.transaction_id = b.tid "
    "WHERE t.prediction_id IS NOT NULL"
)
_INSERT_SCORED = (
    "INSERT INTO transactions VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
    "ON CONFLICT(transaction_id) DO NOTHING"
)


class SqliteOnlineStore(OnlineStore):
    """The online store in one SQLite file (WAL), shared by the worker processes."""

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        self._local = threading.local()
        # Lower bounds of each merchant's label-totals watermark seen by this process, so
        # most commits skip the check whether the totals should move forward.
        self._through: dict[str, int] = {}
        self._checkpointer: tuple[threading.Event, threading.Thread] | None = None
        with self._guard():
            self._conn().executescript(_SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=self.busy_timeout_s,
                isolation_level=None,
                check_same_thread=False,
                cached_statements=256,
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # WAL with NORMAL sync survives a process crash; a power cut may lose the last
            # few commits, which only costs a few payments their place in the history.
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA temp_store=MEMORY")
            conn.execute("PRAGMA cache_size=-65536")
            if self._checkpointer is not None:
                # Checkpoints (copying the WAL into the database, with an fsync) would land on
                # every ~100th request; the background checkpointer does them instead.
                conn.execute("PRAGMA wal_autocheckpoint=0")
            self._local.conn = conn
        return conn

    def start_checkpointer(self, interval_s: float = 1.0) -> None:
        """Move WAL checkpoints off the request path (call once, in a long-lived server)."""
        if self._checkpointer is not None:
            return
        stop = threading.Event()

        def run() -> None:
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout_s, isolation_level=None)
            try:
                while not stop.wait(interval_s):
                    try:
                        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
                    except sqlite3.Error as exc:
                        logger.warning("online store checkpoint failed: %s", exc)
            finally:
                conn.close()

        self._checkpointer = (
            stop,
            threading.Thread(target=run, name="wal-checkpoint", daemon=True),
        )
        self._checkpointer[1].start()
        # Connections opened before the checkpointer keep checkpointing themselves.
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.execute("PRAGMA wal_autocheckpoint=0")

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._guard():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def ping(self) -> None:
        with self._guard():
            self._conn().execute("SELECT 1").fetchone()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer[0].set()
            self._checkpointer[1].join(5.0)
            self._checkpointer = None
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @staticmethod
    def _stored(row: Sequence[Any]) -> StoredResult:
        return StoredResult(
            transaction_id=row[0],
            prediction_id=row[1],
            features=json.loads(row[2]),
            response=row[3],
            model_version=row[4] or "",
        )

    @staticmethod
    def _params(txn: StoreTxn) -> dict[str, Any]:
        ts = txn.ts_ms
        hib = ts // BUCKET_MS
        params: dict[str, Any] = {
            "tid": txn.transaction_id,
            "u": txn.user_id,
            "m": txn.merchant_id,
            "dev": txn.device_id,
            "cty": txn.country,
            "ts": ts,
            "hib": hib,
            "hiedge": hib * BUCKET_MS,
        }
        for name, width in MERCHANT_WINDOWS_MS.items():
            lo = ts - width
            lob = lo // BUCKET_MS
            params[f"w{name}_lo"] = lo
            params[f"w{name}_lob"] = lob
            params[f"w{name}_loedge"] = (lob + 1) * BUCKET_MS
        return params

    def prepare(self, txn: StoreTxn) -> Prepared:
        ts = txn.ts_ms
        # Two statements without a read transaction: a commit landing in between can only
        # come from a concurrent payment of the same customer, which races regardless.
        with self._guard():
            conn = self._conn()
            row = conn.execute(_PREPARE_SQL, self._params(txn)).fetchone()
            if row[0] == 1:
                stored = conn.execute(_SELECT_STORED, (txn.transaction_id,)).fetchone()
                user, merchant = empty_history()
                return Prepared(user, merchant, existing=self._stored(stored))
            events = conn.execute(
                "SELECT ts_ms, amount FROM user_events WHERE user_id = ? AND ts_ms >= ? "
                "AND ts_ms <= ? ORDER BY ts_ms, transaction_id",
                (txn.user_id, ts - HISTORY_MS, ts),
            ).fetchall()
        (
            _,
            n,
            log_sum,
            log_sumsq,
            last_ts,
            seen_device,
            seen_merchant,
            seen_country,
            current_hour,
            *windows,
        ) = row
        known, fraud, extra_known, extra_fraud = windows[len(MERCHANT_WINDOWS_MS) :]
        counts = {
            name: float(c + current_hour)
            for name, c in zip(MERCHANT_WINDOWS_MS, windows, strict=False)
        }
        if events:
            arr = np.asarray(events, dtype=np.float64)
            recent_ts, recent_amount = arr[:, 0].astype(np.int64), arr[:, 1]
        else:
            recent_ts, recent_amount = np.empty(0, np.int64), np.empty(0, np.float64)
        user = UserHistory(
            recent_ts=recent_ts,
            recent_amount=recent_amount,
            n=float(n or 0.0),
            log_sum=float(log_sum or 0.0),
            log_sumsq=float(log_sumsq or 0.0),
            last_ts=int(last_ts) if last_ts is not None else -1,
            seen_device=bool(seen_device),
            seen_merchant=bool(seen_merchant),
            seen_country=bool(seen_country),
        )
        merchant = MerchantHistory(counts, float(known + extra_known), float(fraud + extra_fraud))
        return Prepared(user, merchant, in_history=row[0] == 0)

    def _fill_batch_keys(self, conn: sqlite3.Connection, txns: Sequence[StoreTxn]) -> None:
        if not getattr(self._local, "batch_table", False):
            columns = ", ".join(
                f"{name} {'TEXT' if name in _TEXT_KEYS else 'INTEGER'}" for name in _KEY_COLUMNS
            )
            conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS batch_keys(i INTEGER PRIMARY KEY, {columns})"
            )
            self._local.batch_table = True
        conn.execute("DELETE FROM temp.batch_keys")
        marks = ", ".join("?" * (len(_KEY_COLUMNS) + 1))
        conn.executemany(
            f"INSERT INTO temp.batch_keys VALUES ({marks})",
            [(i, *self._params(txn).values()) for i, txn in enumerate(txns)],
        )

    def prepare_many(self, txns: Sequence[StoreTxn]) -> PreparedBatch:
        n = len(txns)
        with self._guard():
            conn = self._conn()
            # One read snapshot for the whole batch.
            conn.execute("BEGIN")
            try:
                self._fill_batch_keys(conn, txns)
                rows = conn.execute(_BATCH_PREPARE_SQL).fetchall()
                events = conn.execute(_BATCH_EVENTS_SQL).fetchall()
                scored = (
                    []
                    if all(r[1] is None for r in rows)
                    else (conn.execute(_BATCH_EXISTING_SQL).fetchall())
                )
            finally:
                conn.execute("COMMIT")
        # NULL (a new customer or merchant) reads as NaN here.
        values = np.array(rows, dtype=np.float64).reshape(n, -1)
        flag = values[:, 1]
        windows = len(MERCHANT_WINDOWS_MS)
        current_hour = np.nan_to_num(values[:, 9])
        counts = {
            name: values[:, 10 + k] + current_hour for k, name in enumerate(MERCHANT_WINDOWS_MS)
        }
        known, fraud, extra_known, extra_fraud = (values[:, 10 + windows + k] for k in range(4))
        ev = np.array(events, dtype=np.float64).reshape(-1, 3)
        history = HistoryBatch(
            user_n=np.nan_to_num(values[:, 2]),
            user_log_sum=np.nan_to_num(values[:, 3]),
            user_log_sumsq=np.nan_to_num(values[:, 4]),
            user_last_ts=np.nan_to_num(values[:, 5], nan=-1.0).astype(np.int64),
            seen_device=values[:, 6] == 1,
            seen_merchant=values[:, 7] == 1,
            seen_country=values[:, 8] == 1,
            merchant_counts=counts,
            merchant_known=known + extra_known,
            merchant_fraud=fraud + extra_fraud,
            event_row=ev[:, 0].astype(np.int64),
            event_ts=ev[:, 1].astype(np.int64),
            event_amount=ev[:, 2],
        )
        existing = {int(r[0]): self._stored(r[1:]) for r in scored}
        return PreparedBatch(history, existing, flag == 0)

    def commit_many(self, commits: Sequence[Commit]) -> dict[str, StoredResult]:
        if not commits:
            return {}
        now = int(time.time() * 1000)
        log_amount = np.log1p(np.array([c.txn.amount for c in commits], dtype=np.float64))
        rows = [
            _scored_row(c, _features_json(c.features), now, x)
            for c, x in zip(commits, log_amount.tolist(), strict=True)
        ]
        latest: dict[str, int] = {}
        for c in commits:
            latest[c.txn.merchant_id] = max(latest.get(c.txn.merchant_id, c.txn.ts_ms), c.txn.ts_ms)
        earlier: dict[str, StoredResult] = {}
        with self._write() as conn:
            inserted = conn.executemany(_INSERT_SCORED, rows).rowcount
            if inserted != len(rows):
                mine = {c.txn.transaction_id: c for c in commits}
                marks = ",".join("?" * len(mine))
                found = conn.execute(
                    "SELECT transaction_id, prediction_id, features, response, model_version "
                    f"FROM transactions WHERE transaction_id IN ({marks})",
                    list(mine),
                ).fetchall()
                for row in found:
                    c = mine[row[0]]
                    if row[1] is None:
                        # Part of the loaded history: already counted, only its result is new.
                        conn.execute(
                            "UPDATE transactions SET prediction_id = ?, model_version = ?, "
                            "features = ?, response = ?, scored_ms = ? WHERE transaction_id = ?",
                            (
                                c.prediction_id,
                                c.model_version,
                                _features_json(c.features),
                                c.response,
                                now,
                                row[0],
                            ),
                        )
                    elif row[1] != c.prediction_id:
                        earlier[row[0]] = self._stored(row)
            for merchant_id, ts in latest.items():
                through = self._through.get(merchant_id)
                if through is None or ts - through >= LABEL_TOTALS_ADVANCE_MS:
                    self._advance_label_totals(conn, merchant_id, ts)
        return earlier

    def commit(
        self,
        txn: StoreTxn,
        features: np.ndarray,
        prediction_id: str,
        model_version: str,
        response: str | None,
    ) -> StoredResult | None:
        now = int(time.time() * 1000)
        payload = _features_json(features)
        commit = Commit(txn, features, prediction_id, model_version, response)
        with self._write() as conn:
            inserted = conn.execute(
                _INSERT_SCORED, _scored_row(commit, payload, now, float(np.log1p(txn.amount)))
            ).rowcount
            if inserted:
                through = self._through.get(txn.merchant_id)
                if through is None or txn.ts_ms - through >= LABEL_TOTALS_ADVANCE_MS:
                    self._advance_label_totals(conn, txn.merchant_id, txn.ts_ms)
                return None
            row = conn.execute(_SELECT_STORED, (txn.transaction_id,)).fetchone()
            if row[1] is not None:
                # Scored before (a concurrent retry won the race): hand back its result.
                return self._stored(row)
            # Part of the loaded history: already counted, only its result is new.
            conn.execute(
                "UPDATE transactions SET prediction_id = ?, model_version = ?, "
                "features = ?, response = ?, scored_ms = ? WHERE transaction_id = ?",
                (prediction_id, model_version, payload, response, now, txn.transaction_id),
            )
        return None

    def _advance_label_totals(self, conn: sqlite3.Connection, merchant_id: str, ts: int) -> None:
        row = conn.execute(
            "SELECT through_ms FROM merchant_label_totals WHERE merchant_id = ?", (merchant_id,)
        ).fetchone()
        start = row[0] if row is not None else _FAR_PAST
        if row is not None and ts - start < LABEL_TOTALS_ADVANCE_MS:
            self._through[merchant_id] = start
            return
        target = ts - LABEL_TOTALS_LAG_MS
        if target <= start:
            return
        known, fraud = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(is_fraud), 0) FROM merchant_labels "
            "WHERE merchant_id = ? AND known_at_ms >= ? AND known_at_ms < ?",
            (merchant_id, start, target),
        ).fetchone()
        conn.execute(
            "INSERT INTO merchant_label_totals VALUES (?, ?, ?, ?) ON CONFLICT(merchant_id) "
            "DO UPDATE SET through_ms = excluded.through_ms, "
            "known = known + excluded.known, fraud = fraud + excluded.fraud",
            (merchant_id, target, int(known), int(fraud)),
        )
        self._through[merchant_id] = target

    def save_responses(self, responses: Sequence[tuple[str, str]]) -> None:
        if not responses:
            return
        with self._write() as conn:
            conn.executemany(
                "UPDATE transactions SET response = ? WHERE transaction_id = ?",
                [(response, tid) for tid, response in responses],
            )

    def lookup(self, transaction_id: str) -> StoredResult | None:
        with self._guard():
            row = (
                self._conn()
                .execute(_SELECT_STORED + " AND prediction_id IS NOT NULL", (transaction_id,))
                .fetchone()
            )
        return None if row is None else self._stored(row)

    def find_prediction(self, prediction_id: str) -> StoredResult | None:
        with self._guard():
            row = (
                self._conn()
                .execute(
                    "SELECT transaction_id, prediction_id, features, response, model_version "
                    "FROM transactions WHERE prediction_id = ?",
                    (prediction_id,),
                )
                .fetchone()
            )
        return None if row is None else self._stored(row)

    def record_label(
        self, transaction_id: str, is_fraud: bool, label_ts: datetime | pd.Timestamp | int
    ) -> bool:
        known_at = _to_ms(label_ts)
        with self._write() as conn:
            row = conn.execute(
                "SELECT merchant_id FROM transactions WHERE transaction_id = ?",
                (transaction_id,),
            ).fetchone()
            if row is None:
                return False
            merchant_id = row[0]
            through_row = conn.execute(
                "SELECT through_ms FROM merchant_label_totals WHERE merchant_id = ?",
                (merchant_id,),
            ).fetchone()
            through = through_row[0] if through_row is not None else None
            old = conn.execute(
                "SELECT known_at_ms, is_fraud FROM merchant_labels WHERE transaction_id = ?",
                (transaction_id,),
            ).fetchone()
            # Keep the running totals equal to the labels they summarize.
            if through is not None and old is not None and old[0] < through:
                conn.execute(
                    "UPDATE merchant_label_totals SET known = known - 1, fraud = fraud - ? "
                    "WHERE merchant_id = ?",
                    (int(old[1]), merchant_id),
                )
            if through is not None and known_at < through:
                conn.execute(
                    "UPDATE merchant_label_totals SET known = known + 1, fraud = fraud + ? "
                    "WHERE merchant_id = ?",
                    (int(is_fraud), merchant_id),
                )
            conn.execute(
                "INSERT OR REPLACE INTO merchant_labels VALUES (?, ?, ?, ?)",
                (transaction_id, merchant_id, known_at, int(is_fraud)),
            )
        return True

    def bulk_load(self, history: pd.DataFrame, spec: FeatureSpec, replace: bool = True) -> int:
        hist = _History.from_frame(history, spec)
        conn = self._conn()
        with self._guard():
            conn.execute("BEGIN IMMEDIATE")
            try:
                if replace:
                    for table in _STATE_TABLES:
                        conn.execute(f"DELETE FROM {table}")
                self._load(conn, hist)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
            conn.execute("ANALYZE")
        self._through.clear()
        return len(hist.txn)

    @staticmethod
    def _load(conn: sqlite3.Connection, hist: _History) -> None:
        def rows(frame: pd.DataFrame) -> Iterator[tuple[Any, ...]]:
            # itertuples yields numpy scalars sqlite3 cannot bind; tolist gives Python ones.
            columns = [frame[c].to_numpy().tolist() for c in frame.columns]
            return zip(*columns, strict=True)

        conn.executemany(
            "INSERT INTO transactions(transaction_id, merchant_id, ts_ms) VALUES (?, ?, ?)",
            rows(hist.txn),
        )
        conn.executemany("INSERT INTO users VALUES (?, ?, ?, ?, ?)", rows(hist.users))
        conn.executemany(
            "INSERT INTO user_events VALUES (?, ?, ?, ?)",
            rows(hist.user_events[["user_id", "ts_ms", "transaction_id", "amount"]]),
        )
        conn.executemany("INSERT OR IGNORE INTO user_seen VALUES (?, ?, ?)", rows(hist.seen))
        conn.executemany("INSERT INTO merchant_events VALUES (?, ?, ?)", rows(hist.merchant_events))
        buckets = (
            hist.merchant_events.assign(bucket=hist.merchant_events["ts_ms"] // BUCKET_MS)
            .groupby(["merchant_id", "bucket"], sort=False)
            .size()
            .reset_index(name="count")
        )
        conn.executemany("INSERT INTO merchant_buckets VALUES (?, ?, ?)", rows(buckets))
        conn.executemany(
            "INSERT INTO merchant_labels VALUES (?, ?, ?, ?)",
            rows(hist.labels[["transaction_id", "merchant_id", "known_at_ms", "is_fraud"]]),
        )
        done = hist.labels[hist.labels["known_at_ms"] < hist.end_ms]
        totals = done.groupby("merchant_id").agg(
            known=("is_fraud", "size"), fraud=("is_fraud", "sum")
        )
        merchants = pd.DataFrame({"merchant_id": hist.txn["merchant_id"].unique()})
        merchants = merchants.join(totals, on="merchant_id").fillna(0)
        merchants.insert(1, "through_ms", hist.end_ms)
        conn.executemany(
            "INSERT INTO merchant_label_totals VALUES (?, ?, ?, ?)",
            rows(merchants.astype({"known": np.int64, "fraud": np.int64})),
        )


# Atomic commit: idempotency check, result, and every history update in one round trip.
# Floats are written with %.17g, which round-trips IEEE doubles exactly, so the running
# log-amount sums equal the offline cumulative sums bit for bit.
_COMMIT_LUA = """
local existing = redis.call('HMGET', KEYS[1], 'p', 'f', 'r', 'v')
if existing[1] then return existing end
local in_history = redis.call('EXISTS', KEYS[1]) == 1
redis.call('HSET', KEYS[1], 'm', ARGV[1], 'ts', ARGV[2], 'p', ARGV[3], 'f', ARGV[4],
           'r', ARGV[5], 'v', ARGV[6])
redis.call('EXPIRE', KEYS[1], ARGV[13])
redis.call('SET', KEYS[8], ARGV[14], 'EX', ARGV[13])
if in_history then return false end
local ts = tonumber(ARGV[2])
redis.call('ZADD', KEYS[3], ts, ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', '(' .. ARGV[12])
local st = redis.call('HMGET', KEYS[2], 'n', 'ls', 'lss', 'last')
local x = tonumber(ARGV[8])
local n = (tonumber(st[1]) or 0) + 1
local ls = (tonumber(st[2]) or 0) + x
local lss = (tonumber(st[3]) or 0) + x * x
local last = math.max(tonumber(st[4]) or -1, ts)
redis.call('HSET', KEYS[2], 'n', string.format('%.17g', n), 'ls', string.format('%.17g', ls),
           'lss', string.format('%.17g', lss), 'last', string.format('%.17g', last))
redis.call('SADD', KEYS[4], ARGV[9])
redis.call('SADD', KEYS[5], ARGV[10])
redis.call('SADD', KEYS[6], ARGV[11])
redis.call('ZADD', KEYS[7], ts, ARGV[15])
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', '(' .. ARGV[12])
return false
"""

_LABEL_LUA = """
local merchant = redis.call('HGET', KEYS[1], 'm')
if not merchant then return 0 end
local lab = ARGV[4] .. 'm:' .. merchant .. ':lab'
local fr = ARGV[4] .. 'm:' .. merchant .. ':fr'
redis.call('ZADD', lab, ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('ZADD', fr, ARGV[2], ARGV[1])
else redis.call('ZREM', fr, ARGV[1]) end
return 1
"""


class RedisOnlineStore(OnlineStore):
    """The online store in Redis: sorted sets for windows and labels, hashes for counters.

    Keys are prefixed (default `fraud:`); a transaction's result is kept for
    `retention_days` so late labels can still find its merchant.
    """

    def __init__(
        self,
        url: str,
        prefix: str = "fraud:",
        retention_days: int = DEFAULT_RETENTION_DAYS,
        timeout_s: float = 5.0,
    ) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.ttl_s = int(retention_days * 86_400)
        self.client = redis.Redis.from_url(
            url, decode_responses=True, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._commit = self.client.register_script(_COMMIT_LUA)
        self._label = self.client.register_script(_LABEL_LUA)
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            raise StoreUnavailable(f"online store {self.url}: {exc}") from exc

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def ping(self) -> None:
        with self._guard():
            self.client.ping()

    def close(self) -> None:
        self.client.close()

    @staticmethod
    def _stored(transaction_id: str, values: Sequence[Any]) -> StoredResult:
        return StoredResult(
            transaction_id=transaction_id,
            prediction_id=values[0],
            features=json.loads(values[1]),
            response=values[2] or None,
            model_version=values[3] or "",
        )

    def _queue_prepare(self, pipe: Any, txn: StoreTxn) -> None:
        ts = txn.ts_ms
        u, m = txn.user_id, txn.merchant_id
        pipe.hmget(self._k("tx", txn.transaction_id), "p", "f", "r", "v", "m")
        pipe.zrangebyscore(self._k("u", u, "ev"), ts - HISTORY_MS, ts, withscores=True)
        pipe.hmget(self._k("u", u), "n", "ls", "lss", "last")
        pipe.sismember(self._k("u", u, "dev"), txn.device_id)
        pipe.sismember(self._k("u", u, "mer"), txn.merchant_id)
        pipe.sismember(self._k("u", u, "cty"), txn.country)
        for width in MERCHANT_WINDOWS_MS.values():
            pipe.zcount(self._k("m", m, "ev"), ts - width, ts)
        pipe.zcount(self._k("m", m, "lab"), "-inf", f"({ts}")
        pipe.zcount(self._k("m", m, "fr"), "-inf", f"({ts}")

    _PREPARE_REPLIES = 8 + len(MERCHANT_WINDOWS_MS)

    def _prepared(self, txn: StoreTxn, out: Sequence[Any]) -> Prepared:
        stored, events, moments, dev, mer, cty = out[:6]
        window_counts = out[6 : 6 + len(MERCHANT_WINDOWS_MS)]
        known, fraud = out[-2:]
        if stored[0]:
            user, merchant = empty_history()
            return Prepared(user, merchant, existing=self._stored(txn.transaction_id, stored))
        recent_ts = np.array([int(score) for _, score in events], dtype=np.int64)
        recent_amount = np.array(
            [float(member.rsplit("|", 1)[1]) for member, _ in events], dtype=np.float64
        )
        user = UserHistory(
            recent_ts=recent_ts,
            recent_amount=recent_amount,
            n=float(moments[0] or 0.0),
            log_sum=float(moments[1] or 0.0),
            log_sumsq=float(moments[2] or 0.0),
            last_ts=int(float(moments[3])) if moments[3] is not None else -1,
            seen_device=bool(dev),
            seen_merchant=bool(mer),
            seen_country=bool(cty),
        )
        counts = {
            name: float(c) for name, c in zip(MERCHANT_WINDOWS_MS, window_counts, strict=True)
        }
        merchant = MerchantHistory(counts, float(known), float(fraud))
        return Prepared(user, merchant, in_history=stored[4] is not None)

    def prepare(self, txn: StoreTxn) -> Prepared:
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            self._queue_prepare(pipe, txn)
            return self._prepared(txn, pipe.execute())

    def prepare_many(self, txns: Sequence[StoreTxn]) -> PreparedBatch:
        """Every payment's reads in one pipelined round trip."""
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for txn in txns:
                self._queue_prepare(pipe, txn)
            out = pipe.execute()
        k = self._PREPARE_REPLIES
        pairs: list[tuple[UserHistory, MerchantHistory]] = []
        existing: dict[int, StoredResult] = {}
        in_history = np.zeros(len(txns), dtype=bool)
        for i, txn in enumerate(txns):
            prepared = self._prepared(txn, out[i * k : (i + 1) * k])
            pairs.append((prepared.user, prepared.merchant))
            in_history[i] = prepared.in_history
            if prepared.existing is not None:
                existing[i] = prepared.existing
        return PreparedBatch(HistoryBatch.from_histories(pairs), existing, in_history)

    def _commit_call(self, c: Commit) -> tuple[list[str], list[str]]:
        """KEYS and ARGV of the atomic commit script for one scored payment."""
        txn, prediction_id = c.txn, c.prediction_id
        u, m = txn.user_id, txn.merchant_id
        keys = [
            self._k("tx", txn.transaction_id),
            self._k("u", u),
            self._k("u", u, "ev"),
            self._k("u", u, "dev"),
            self._k("u", u, "mer"),
            self._k("u", u, "cty"),
            self._k("m", m, "ev"),
            self._k("pred", prediction_id),
        ]
        args = [
            m,
            str(txn.ts_ms),
            prediction_id,
            _features_json(c.features),
            c.response or "",
            c.model_version,
            f"{txn.transaction_id}|{float(txn.amount)!r}",
            repr(float(np.log1p(txn.amount))),
            txn.device_id,
            txn.merchant_id,
            txn.country,
            str(txn.ts_ms - HISTORY_MS),
            str(self.ttl_s),
            txn.transaction_id,
            txn.transaction_id,
        ]
        return keys, args

    def commit(
        self,
        txn: StoreTxn,
        features: np.ndarray,
        prediction_id: str,
        model_version: str,
        response: str | None,
    ) -> StoredResult | None:
        commit = Commit(txn, features, prediction_id, model_version, response)
        keys, args = self._commit_call(commit)
        with self._guard():
            result = self._commit(keys=keys, args=args)
        if result:
            return self._stored(txn.transaction_id, result)
        return None

    def commit_many(self, commits: Sequence[Commit]) -> dict[str, StoredResult]:
        """Every payment's atomic commit script, pipelined in one round trip, in order."""
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for c in commits:
                keys, args = self._commit_call(c)
                self._commit(keys=keys, args=args, client=pipe)
            results = pipe.execute()
        return {
            c.txn.transaction_id: self._stored(c.txn.transaction_id, r)
            for c, r in zip(commits, results, strict=True)
            if r
        }

    def save_responses(self, responses: Sequence[tuple[str, str]]) -> None:
        if not responses:
            return
        with self._guard():
            pipe = self.client.pipeline(transaction=False)
            for tid, response in responses:
                pipe.hset(self._k("tx", tid), "r", response)
            pipe.execute()

    def lookup(self, transaction_id: str) -> StoredResult | None:
        with self._guard():
            values = self.client.hmget(self._k("tx", transaction_id), "p", "f", "r", "v")
        return self._stored(transaction_id, values) if values[0] else None

    def find_prediction(self, prediction_id: str) -> StoredResult | None:
        with self._guard():
            transaction_id = self.client.get(self._k("pred", prediction_id))
        return self.lookup(transaction_id) if transaction_id else None

    def record_label(
        self, transaction_id: str, is_fraud: bool, label_ts: datetime | pd.Timestamp | int
    ) -> bool:
        with self._guard():
            found = self._label(
                keys=[self._k("tx", transaction_id)],
                args=[transaction_id, str(_to_ms(label_ts)), "1" if is_fraud else "0", self.prefix],
            )
        return bool(found)

    def bulk_load(self, history: pd.DataFrame, spec: FeatureSpec, replace: bool = True) -> int:
        hist = _History.from_frame(history, spec)
        with self._guard():
            if replace:
                self._wipe()
            pipe = self.client.pipeline(transaction=False)
            queued = 0

            def flush_if_full(force: bool = False) -> None:
                nonlocal pipe, queued
                if queued >= 5_000 or (force and queued):
                    pipe.execute()
                    pipe = self.client.pipeline(transaction=False)
                    queued = 0

            for tid, mid, ts in zip(
                hist.txn["transaction_id"].tolist(),
                hist.txn["merchant_id"].tolist(),
                hist.txn["ts_ms"].tolist(),
                strict=True,
            ):
                key = self._k("tx", tid)
                pipe.hset(key, mapping={"m": mid, "ts": str(ts)})
                pipe.expire(key, self.ttl_s)
                queued += 2
                flush_if_full()
            for user_id, n, log_sum, log_sumsq, last_ts in zip(
                *(hist.users[c].tolist() for c in hist.users.columns), strict=True
            ):
                pipe.hset(
                    self._k("u", user_id),
                    mapping={
                        "n": repr(float(n)),
                        "ls": repr(float(log_sum)),
                        "lss": repr(float(log_sumsq)),
                        "last": str(int(last_ts)),
                    },
                )
                queued += 1
                flush_if_full()
            ev = hist.user_events
            members = ev["transaction_id"] + "|" + ev["amount"].map(lambda a: repr(float(a)))
            for user_id, idx in ev.groupby("user_id", sort=False).indices.items():
                pipe.zadd(
                    self._k("u", user_id, "ev"),
                    dict(
                        zip(members.iloc[idx].tolist(), ev["ts_ms"].iloc[idx].tolist(), strict=True)
                    ),
                )
                queued += 1
                flush_if_full()
            kinds = {_KIND_DEVICE: "dev", _KIND_MERCHANT: "mer", _KIND_COUNTRY: "cty"}
            for (user_id, kind), values in hist.seen.groupby(["user_id", "kind"], sort=False)[
                "value"
            ]:
                pipe.sadd(self._k("u", user_id, kinds[int(kind)]), *values.tolist())
                queued += 1
                flush_if_full()
            mev = hist.merchant_events
            for merchant_id, idx in mev.groupby("merchant_id", sort=False).indices.items():
                pipe.zadd(
                    self._k("m", merchant_id, "ev"),
                    dict(
                        zip(
                            mev["transaction_id"].iloc[idx].tolist(),
                            mev["ts_ms"].iloc[idx].tolist(),
                            strict=True,
                        )
                    ),
                )
                queued += 1
                flush_if_full()
            labels = hist.labels
            for merchant_id, idx in labels.groupby("merchant_id", sort=False).indices.items():
                part = labels.iloc[idx]
                for start in range(0, len(part), 10_000):
                    chunk = part.iloc[start : start + 10_000]
                    pipe.zadd(
                        self._k("m", merchant_id, "lab"),
                        dict(
                            zip(
                                chunk["transaction_id"].tolist(),
                                chunk["known_at_ms"].tolist(),
                                strict=True,
                            )
                        ),
                    )
                    fraud = chunk[chunk["is_fraud"] > 0]
                    if len(fraud):
                        pipe.zadd(
                            self._k("m", merchant_id, "fr"),
                            dict(
                                zip(
                                    fraud["transaction_id"].tolist(),
                                    fraud["known_at_ms"].tolist(),
                                    strict=True,
                                )
                            ),
                        )
                    queued += 2
                    flush_if_full()
            flush_if_full(force=True)
        return len(hist.txn)

    def _wipe(self) -> None:
        batch: list[str] = []
        for key in self.client.scan_iter(match=f"{self.prefix}*", count=10_000):
            batch.append(key)
            if len(batch) >= 10_000:
                self.client.unlink(*batch)
                batch = []
        if batch:
            self.client.unlink(*batch)


def _read_history(home: Path) -> pd.DataFrame:
    files = sorted((home / "data" / "transactions").glob("date=*/part.parquet"))
    if not files:
        raise SystemExit(f"no ingested transactions under {home / 'data' / 'transactions'}")
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    """`python -m serving.online_store load`: fill the store from the ingested history."""
    from serving.config import ServingSettings

    parser = argparse.ArgumentParser(
        prog="python -m serving.online_store",
        description="Load the scoring service's online store from the offline history.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="replace the store's content with the history")
    load.add_argument("--history", type=Path, help="parquet file (default: ingested days)")
    load.add_argument(
        "--spec", type=Path, help="feature_spec.json (default: FRAUD_HOME/data/features/)"
    )
    args = parser.parse_args(argv)
    settings = ServingSettings.from_env()
    history = pd.read_parquet(args.history) if args.history else _read_history(settings.home)
    spec_path = args.spec or settings.home / "data" / "features" / "feature_spec.json"
    spec = FeatureSpec.from_json(spec_path.read_text())
    store = open_store(settings.online_store_url)
    began = time.perf_counter()
    rows = store.bulk_load(history, spec)
    seconds = time.perf_counter() - began
    print(  # noqa: T201
        f"loaded {rows:,} transactions into {settings.online_store_url} in {seconds:.1f} s"
    )
    return 0 if math.isfinite(seconds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
