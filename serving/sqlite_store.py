"""The embedded online store: one SQLite file shared by every worker process.

The file is the shared truth, laid out as a snapshot plus a log:

* `users`, `user_events`, `user_seen` and `merchant_events` hold every customer's and
  merchant's state through `meta.snapshot_seq`, as `bulk_load` (the `online_features`
  asset) wrote it from the offline history;
* `transactions` is the log of payments in commit order (`seq`): the loaded history first
  (just id, merchant and time), then every scored payment with everything needed to replay
  it into the state, its features and its response (the idempotency record);
* `labels` is the log of fraud labels: loaded ones and those reported to /feedback, each
  row remembering the label it replaced.

Each worker keeps the state in memory (`serving.store_state.StoreState`): it loads the
snapshot once, replays the log after it, and before every read applies what other workers
committed since (one `PRAGMA data_version` tells whether anything changed; if so, one
query per log returns the new rows). Reading a payment's history is then in memory, and
recording a scored payment is one indexed INSERT. SQLite lets one writer in at a time, so
`seq` is the commit order and every worker applies the same payments in the same order.

Write transactions wait for each other with a short polling backoff (25 µs doubling to
0.5 ms) rather than SQLite's busy handler, whose first waits are 1, 2 and 5 ms.

Memory: every worker holds the state of all customers (about 1 KB each with a week of
payments). Beyond a few million customers, or for several machines, use Redis.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fraud_assets.core.features import FeatureSpec
from serving.store_api import (
    Commit,
    HistoryTables,
    OnlineStore,
    Prepared,
    PreparedBatch,
    StoredResult,
    StoreTxn,
    StoreUnavailable,
    empty_history,
    log_amounts,
    to_ms,
)
from serving.store_state import StoreState

logger = logging.getLogger("serving.sqlite_store")

SCHEMA_VERSION = 2
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS transactions(
    seq INTEGER PRIMARY KEY, transaction_id TEXT NOT NULL UNIQUE, merchant_id TEXT NOT NULL,
    ts_ms INTEGER NOT NULL, user_id TEXT, amount REAL, device_id TEXT, country TEXT,
    prediction_id TEXT UNIQUE, model_version TEXT, features TEXT, response TEXT,
    scored_ms INTEGER);
CREATE TABLE IF NOT EXISTS labels(
    seq INTEGER PRIMARY KEY, transaction_id TEXT NOT NULL, merchant_id TEXT NOT NULL,
    known_at_ms INTEGER NOT NULL, is_fraud INTEGER NOT NULL, current INTEGER NOT NULL,
    prev_known_at_ms INTEGER, prev_is_fraud INTEGER);
CREATE INDEX IF NOT EXISTS labels_current ON labels(transaction_id) WHERE current = 1;
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
"""
_STATE_TABLES = ("transactions", "labels", "users", "user_events", "user_seen", "merchant_events")
_STORED_COLUMNS = "transaction_id, prediction_id, features, response, model_version"
_INSERT_SCORED = (
    "INSERT INTO transactions(transaction_id, merchant_id, ts_ms, user_id, amount, device_id, "
    "country, prediction_id, model_version, features, response, scored_ms) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(transaction_id) DO NOTHING"
)
_MARK_SCORED = (
    "UPDATE transactions SET prediction_id = ?, model_version = ?, features = ?, response = ?, "
    "scored_ms = ? WHERE transaction_id = ?"
)
_PAYMENT_LOG = (
    "SELECT seq, transaction_id, user_id, merchant_id, ts_ms, amount, device_id, country "
    "FROM transactions WHERE seq > ? ORDER BY seq"
)
_LABEL_LOG = (
    "SELECT seq, merchant_id, known_at_ms, is_fraud, prev_known_at_ms, prev_is_fraud "
    "FROM labels WHERE seq > ? ORDER BY seq"
)
# The oldest schema kept its state in the snapshot tables through a trigger: they already
# hold every payment of its log, which becomes the snapshot.
_MIGRATE_V1 = """
DROP TRIGGER IF EXISTS scored_payment_history;
ALTER TABLE transactions RENAME TO transactions_v1;
{schema}
INSERT INTO transactions(transaction_id, merchant_id, ts_ms, user_id, amount, device_id,
    country, prediction_id, model_version, features, response, scored_ms)
    SELECT transaction_id, merchant_id, ts_ms, user_id, amount, device_id, country,
    prediction_id, model_version, features, response, scored_ms
    FROM transactions_v1 ORDER BY rowid;
DROP TABLE transactions_v1;
INSERT INTO labels(transaction_id, merchant_id, known_at_ms, is_fraud, current)
    SELECT transaction_id, merchant_id, known_at_ms, is_fraud, 1 FROM merchant_labels;
DROP TABLE IF EXISTS merchant_labels;
DROP TABLE IF EXISTS merchant_buckets;
DROP TABLE IF EXISTS merchant_label_totals;
INSERT OR REPLACE INTO meta VALUES
    ('snapshot_seq', (SELECT COALESCE(MAX(seq), 0) FROM transactions));
"""
_BEGIN_FIRST_WAIT_S = 25e-6
_BEGIN_LONGEST_WAIT_S = 5e-4


def _scored_row(c: Commit, now_ms: int) -> tuple[Any, ...]:
    txn = c.txn
    return (
        txn.transaction_id,
        txn.merchant_id,
        txn.ts_ms,
        txn.user_id,
        txn.amount,
        txn.device_id,
        txn.country,
        c.prediction_id,
        c.model_version,
        c.features_json(),
        c.response,
        now_ms,
    )


def _stored(row: Sequence[Any]) -> StoredResult:
    return StoredResult(
        transaction_id=row[0],
        prediction_id=row[1],
        features=json.loads(row[2]),
        response=row[3],
        model_version=row[4] or "",
    )


class SqliteOnlineStore(OnlineStore):
    """The online store in one SQLite file (WAL), shared by the worker processes."""

    def __init__(self, path: Path, busy_timeout_s: float = 5.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout_s = busy_timeout_s
        # One connection and one in-memory state per store object; the lock serializes the
        # threads of a process (the event loop and BentoML's thread pool).
        self._lock = threading.Lock()
        self._state = StoreState()
        self._seq = 0  # the last payment of the log the state includes
        self._label_seq = 0  # the last label of the log the state includes
        self._generation = -1  # which bulk load the state derives from
        self._data_version = -1
        self._checkpointer: tuple[threading.Event, threading.Thread] | None = None
        with self._guard():
            self._conn = self._connect()
            self._create_schema()
            # From here on writes take the lock by polling (`_begin_write`) instead of
            # SQLite's busy handler, whose first waits are 1, 2 and 5 ms; in WAL mode reads
            # never wait for a lock, so the connection needs no busy timeout at all.
            self._conn.execute("PRAGMA busy_timeout = 0")
            with self._lock:
                self._reload()

    # --- connection and transactions -------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path,
            timeout=self.busy_timeout_s,
            isolation_level=None,
            check_same_thread=False,
            cached_statements=256,
        )
        conn.execute("PRAGMA journal_mode=WAL")
        # WAL with NORMAL sync survives a process crash; a power cut may lose the last few
        # commits, which only costs a few payments their place in the history.
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA temp_store=MEMORY")
        conn.execute("PRAGMA cache_size=-65536")
        return conn

    def _create_schema(self) -> None:
        conn = self._conn
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            old = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE name = 'scored_payment_history'"
            ).fetchone()
            script = _SCHEMA
            if old is not None:
                logger.info("online store %s: moving to schema %d", self.path, SCHEMA_VERSION)
                script = _MIGRATE_V1.format(schema=_SCHEMA)
            # Statement by statement: executescript would commit the transaction first.
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"online store {self.path}: {exc}") from exc

    def _begin_write(self) -> None:
        """BEGIN IMMEDIATE, polling for the write lock with a short backoff (up to
        `busy_timeout_s`); the connection itself never waits (busy_timeout 0)."""
        conn = self._conn
        deadline = time.monotonic() + self.busy_timeout_s
        wait = _BEGIN_FIRST_WAIT_S
        while True:
            try:
                conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise
            time.sleep(wait)
            wait = min(wait * 2, _BEGIN_LONGEST_WAIT_S)

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction, with the state caught up with the log inside it."""
        conn = self._conn
        with self._guard():
            self._begin_write()
            try:
                self._catch_up()
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

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
        # Checkpoints (copying the WAL into the database, with an fsync) would otherwise
        # land on every ~100th commit; the background checkpointer does them instead.
        with self._lock:
            self._conn.execute("PRAGMA wal_autocheckpoint=0")

    def ping(self) -> None:
        with self._lock, self._guard():
            self._conn.execute("SELECT 1").fetchone()

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer[0].set()
            self._checkpointer[1].join(5.0)
            self._checkpointer = None
        with self._lock:
            self._conn.close()

    # --- following the log ---------------------------------------------------------------

    def _meta(self, key: str) -> int:
        row = self._conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return int(row[0]) if row is not None else 0

    def _catch_up(self, force: bool = False) -> None:
        """Apply what other workers committed since the state was last brought up to date.

        `force` reads the logs even when no other connection changed the file (after this
        store's own label writes, which it applies through the log).
        """
        conn = self._conn
        version = conn.execute("PRAGMA data_version").fetchone()[0]
        if version == self._data_version and not force:
            return
        self._data_version = version
        if self._meta("generation") != self._generation:
            self._reload()
            return
        self._apply_payments(conn.execute(_PAYMENT_LOG, (self._seq,)).fetchall())
        self._apply_labels(conn.execute(_LABEL_LOG, (self._label_seq,)).fetchall())

    def _apply_payments(self, payments: Sequence[Sequence[Any]]) -> None:
        """Rows of the payment log (seq, transaction_id, user, merchant, ts, amount, device,
        country), in order, into the state."""
        if not payments:
            return
        state = self._state
        logs = log_amounts([p[5] for p in payments])
        for (seq, tid, user, merchant, ts, amount, device, country), log_amount in zip(
            payments, logs, strict=True
        ):
            state.add_payment(tid, user, merchant, ts, amount, log_amount, device, country)
            self._seq = seq

    def _apply_labels(self, rows: Sequence[Sequence[Any]]) -> None:
        state = self._state
        for seq, merchant, known_at, is_fraud, prev_known_at, prev_is_fraud in rows:
            if prev_known_at is not None:
                state.remove_label(merchant, prev_known_at, bool(prev_is_fraud))
            state.add_label(merchant, known_at, bool(is_fraud))
            self._label_seq = seq

    def _reload(self) -> None:
        """Build the state from the snapshot and the logs, in one read snapshot."""
        conn = self._conn
        began = time.perf_counter()
        # Inside a write transaction (a bulk load seen while committing) the read is
        # consistent already.
        own = not conn.in_transaction
        if own:
            conn.execute("BEGIN")
        try:
            self._data_version = conn.execute("PRAGMA data_version").fetchone()[0]
            self._generation = self._meta("generation")
            snapshot_seq = self._meta("snapshot_seq")
            state = StoreState()
            for user_id, n, log_sum, log_sumsq, last_ts in conn.execute("SELECT * FROM users"):
                user = state.user(user_id)
                user.n, user.log_sum, user.log_sumsq, user.last_ts = n, log_sum, log_sumsq, last_ts
            for user_id, ts, tid, amount in conn.execute(
                "SELECT user_id, ts_ms, transaction_id, amount FROM user_events "
                "ORDER BY user_id, ts_ms, transaction_id"
            ):
                state.user(user_id).events.append((ts, tid, amount))
            for user_id, kind, value in conn.execute("SELECT * FROM user_seen"):
                user = state.user(user_id)
                (user.devices, user.merchants, user.countries)[kind].add(value)
            for merchant_id, ts in conn.execute(
                "SELECT merchant_id, ts_ms FROM merchant_events ORDER BY merchant_id, ts_ms"
            ):
                state.merchant(merchant_id).events.append(ts)
            for merchant_id, known_at, is_fraud in conn.execute(
                "SELECT merchant_id, known_at_ms, is_fraud FROM labels WHERE current = 1"
            ):
                merchant = state.merchant(merchant_id)
                merchant.known.append(known_at)
                if is_fraud:
                    merchant.fraud.append(known_at)
            state.sort_labels()
            self._label_seq = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM labels").fetchone()[0]
            self._state, self._seq = state, snapshot_seq
            payments = conn.execute(_PAYMENT_LOG, (snapshot_seq,)).fetchall()
        finally:
            if own:
                conn.execute("COMMIT")
        self._apply_payments(payments)
        logger.info(
            "online store %s: %d customers, %d merchants, %d payments replayed in %.2f s",
            self.path,
            len(state.users),
            len(state.merchants),
            len(payments),
            time.perf_counter() - began,
        )

    # --- the store interface -------------------------------------------------------------

    def prepare(self, txn: StoreTxn) -> Prepared:
        with self._lock:
            with self._guard():
                self._catch_up()
                row = self._conn.execute(
                    f"SELECT {_STORED_COLUMNS} FROM transactions WHERE transaction_id = ?",
                    (txn.transaction_id,),
                ).fetchone()
            if row is not None and row[1] is not None:
                user, merchant = empty_history()
                return Prepared(user, merchant, existing=_stored(row))
            user, merchant = self._state.history(txn)
        return Prepared(user, merchant, in_history=row is not None)

    def prepare_many(self, txns: Sequence[StoreTxn]) -> PreparedBatch:
        with self._lock:
            with self._guard():
                self._catch_up()
                rows = self._conn.execute(
                    f"SELECT {_STORED_COLUMNS} FROM transactions "
                    "WHERE transaction_id IN (SELECT value FROM json_each(?))",
                    (json.dumps([t.transaction_id for t in txns]),),
                ).fetchall()
            history = self._state.history_batch(txns)
        found = {row[0]: row for row in rows}
        in_history = np.zeros(len(txns), dtype=bool)
        existing: dict[int, StoredResult] = {}
        for i, txn in enumerate(txns):
            row = found.get(txn.transaction_id)
            if row is None:
                continue
            if row[1] is None:
                in_history[i] = True
            else:
                existing[i] = _stored(row)
        return PreparedBatch(history, existing, in_history)

    def commit(
        self,
        txn: StoreTxn,
        features: np.ndarray,
        prediction_id: str,
        model_version: str,
        response: str | None,
    ) -> StoredResult | None:
        commit = Commit(txn, features, prediction_id, model_version, response)
        now = int(time.time() * 1000)
        row = _scored_row(commit, now)
        with self._lock:
            with self._write() as conn:
                cursor = conn.execute(_INSERT_SCORED, row)
                if not cursor.rowcount:
                    stored = conn.execute(
                        f"SELECT {_STORED_COLUMNS} FROM transactions WHERE transaction_id = ?",
                        (txn.transaction_id,),
                    ).fetchone()
                    if stored[1] is not None:
                        # Scored before (a concurrent retry won the race): its result.
                        return _stored(stored)
                    # Part of the loaded history: already counted, only its result is new.
                    conn.execute(
                        _MARK_SCORED, (prediction_id, model_version, row[9], response, now, row[0])
                    )
                    return None
                seq = cursor.lastrowid
            self._applied([commit], seq)
        return None

    def commit_many(self, commits: Sequence[Commit]) -> dict[str, StoredResult]:
        if not commits:
            return {}
        now = int(time.time() * 1000)
        rows = [_scored_row(c, now) for c in commits]
        earlier: dict[str, StoredResult] = {}
        with self._lock:
            with self._write() as conn:
                before = self._seq
                inserted = conn.executemany(_INSERT_SCORED, rows).rowcount
                new = commits
                if inserted != len(rows):
                    added = {
                        tid
                        for (tid,) in conn.execute(
                            "SELECT transaction_id FROM transactions WHERE seq > ?", (before,)
                        )
                    }
                    earlier = self._settle_conflicts(
                        conn, list(zip(commits, rows, strict=True)), added, now
                    )
                    # A transaction_id twice in one call is inserted once, the first time.
                    new = []
                    for c in commits:
                        if c.txn.transaction_id in added:
                            added.discard(c.txn.transaction_id)
                            new.append(c)
            self._applied(new, before + inserted)
        return earlier

    def _settle_conflicts(
        self,
        conn: sqlite3.Connection,
        pairs: Sequence[tuple[Commit, tuple[Any, ...]]],
        added: set[str],
        now: int,
    ) -> dict[str, StoredResult]:
        """Commits whose transaction_id was there already: loaded history, or scored first."""
        rest = {c.txn.transaction_id: (c, r) for c, r in pairs if c.txn.transaction_id not in added}
        earlier: dict[str, StoredResult] = {}
        found = conn.execute(
            f"SELECT {_STORED_COLUMNS} FROM transactions "
            "WHERE transaction_id IN (SELECT value FROM json_each(?))",
            (json.dumps(list(rest)),),
        ).fetchall()
        for stored in found:
            c, row = rest[stored[0]]
            if stored[1] is None:
                conn.execute(
                    _MARK_SCORED,
                    (c.prediction_id, c.model_version, row[9], c.response, now, row[0]),
                )
            elif stored[1] != c.prediction_id:
                earlier[stored[0]] = _stored(stored)
        return earlier

    def _applied(self, commits: Sequence[Commit], last_seq: int) -> None:
        """Add this store's own committed payments to the state (the log's next rows)."""
        state = self._state
        expected = self._seq + len(commits)
        logs = log_amounts([c.txn.amount for c in commits])
        for c, log_amount in zip(commits, logs, strict=True):
            t = c.txn
            state.add_payment(
                t.transaction_id,
                t.user_id,
                t.merchant_id,
                t.ts_ms,
                t.amount,
                log_amount,
                t.device_id,
                t.country,
            )
        self._seq = expected
        if expected != last_seq:  # never expected: read the log instead of guessing
            logger.warning(
                "online store log out of step (%d != %d); re-reading", expected, last_seq
            )
            with self._guard():
                self._reload()

    def save_responses(self, responses: Sequence[tuple[str, str]]) -> None:
        if not responses:
            return
        with self._lock, self._write() as conn:
            conn.executemany(
                "UPDATE transactions SET response = ? WHERE transaction_id = ?",
                [(response, tid) for tid, response in responses],
            )

    def lookup(self, transaction_id: str) -> StoredResult | None:
        with self._lock, self._guard():
            row = self._conn.execute(
                f"SELECT {_STORED_COLUMNS} FROM transactions "
                "WHERE transaction_id = ? AND prediction_id IS NOT NULL",
                (transaction_id,),
            ).fetchone()
        return None if row is None else _stored(row)

    def find_prediction(self, prediction_id: str) -> StoredResult | None:
        with self._lock, self._guard():
            row = self._conn.execute(
                f"SELECT {_STORED_COLUMNS} FROM transactions WHERE prediction_id = ?",
                (prediction_id,),
            ).fetchone()
        return None if row is None else _stored(row)

    def record_label(
        self, transaction_id: str, is_fraud: bool, label_ts: datetime | pd.Timestamp | int
    ) -> bool:
        known_at = to_ms(label_ts)
        with self._lock:
            with self._write() as conn:
                row = conn.execute(
                    "SELECT merchant_id FROM transactions WHERE transaction_id = ?",
                    (transaction_id,),
                ).fetchone()
                if row is None:
                    return False
                old = conn.execute(
                    "SELECT seq, known_at_ms, is_fraud FROM labels "
                    "WHERE transaction_id = ? AND current = 1",
                    (transaction_id,),
                ).fetchone()
                if old is not None:
                    conn.execute("UPDATE labels SET current = 0 WHERE seq = ?", (old[0],))
                conn.execute(
                    "INSERT INTO labels(transaction_id, merchant_id, known_at_ms, is_fraud, "
                    "current, prev_known_at_ms, prev_is_fraud) VALUES (?, ?, ?, ?, 1, ?, ?)",
                    (
                        transaction_id,
                        row[0],
                        known_at,
                        int(is_fraud),
                        None if old is None else old[1],
                        None if old is None else old[2],
                    ),
                )
            # The new label (and the one it replaces) reach the state through the log.
            with self._guard():
                self._catch_up(force=True)
        return True

    def bulk_load(self, history: pd.DataFrame, spec: FeatureSpec, replace: bool = True) -> int:
        if not replace:
            raise ValueError("the SQLite store loads a history only in place of its content")
        hist = HistoryTables.from_frame(history, spec)
        with self._lock:
            conn = self._conn
            with self._guard():
                self._begin_write()
                try:
                    for table in _STATE_TABLES:
                        conn.execute(f"DELETE FROM {table}")
                    self._load(conn, hist)
                    generation = self._meta("generation") + 1
                    conn.executemany(
                        "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                        [
                            ("snapshot_seq", conn.execute(
                                "SELECT COALESCE(MAX(seq), 0) FROM transactions"
                            ).fetchone()[0]),
                            ("generation", generation),
                        ],
                    )  # fmt: skip
                    conn.execute("ANALYZE")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                self._reload()
        return len(hist.txn)

    @staticmethod
    def _load(conn: sqlite3.Connection, hist: HistoryTables) -> None:
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
        conn.executemany(
            "INSERT INTO labels(transaction_id, merchant_id, known_at_ms, is_fraud, current) "
            "VALUES (?, ?, ?, ?, 1)",
            rows(hist.labels[["transaction_id", "merchant_id", "known_at_ms", "is_fraud"]]),
        )
