"""The SQLite store shared by several workers: each follows what the others commit.

Every `SqliteOnlineStore` object stands for one worker process: it holds its own copy of
the state in memory and its own connection to the one file.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_assets.core.features import FeatureConfig, build_feature_spec
from serving.online_store import Commit, SqliteOnlineStore, StoreTxn

FEATURES = np.zeros(3)
T0 = 1_780_000_000_000


def _txn(tid: str, ts: int, user: str = "u1", merchant: str = "m1") -> StoreTxn:
    return StoreTxn(tid, user, merchant, ts, 10.0, "d1", "DE")


def test_workers_see_each_others_payments_and_labels(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    a, b = SqliteOnlineStore(path), SqliteOnlineStore(path)
    try:
        assert a.commit(_txn("t1", T0), FEATURES, "p1", "1", "{}") is None
        assert b.commit(_txn("t2", T0 + 1000), FEATURES, "p2", "1", "{}") is None
        assert (
            b.commit_many(
                [
                    Commit(_txn(f"b{i}", T0 + 2000 + i), FEATURES, f"pb{i}", "1", None)
                    for i in range(3)
                ]
            )
            == {}
        )
        probe = _txn("t9", T0 + 10_000)
        for store in (a, b):
            prepared = store.prepare(probe)
            assert prepared.user.n == 5 and len(prepared.user.recent_ts) == 5
            assert prepared.merchant.counts == {"24h": 5.0, "7d": 5.0}
            assert prepared.user.seen_device and prepared.user.seen_merchant
        # The same transaction_id from the other worker gets the first result back.
        raced = b.commit(_txn("t1", T0), FEATURES, "p-other", "1", "{}")
        assert raced is not None and raced.prediction_id == "p1"
        assert a.prepare(probe).user.n == 5, "a lost race does not count"
        # Labels, and a relabel, reach the other worker's state.
        assert a.record_label("t1", True, T0 + 5000)
        assert b.prepare(probe).merchant.labels_fraud == 1
        assert b.record_label("t1", False, T0 + 6000)
        merchant = a.prepare(probe).merchant
        assert (merchant.labels_known, merchant.labels_fraud) == (1, 0)
        assert a.prepare(_txn("t8", T0 + 5500)).merchant.labels_known == 0, "not known yet"
        # A worker started later replays the log to the same state.
        c = SqliteOnlineStore(path)
        later = c.prepare(probe)
        assert later.user.n == 5 and later.merchant.labels_known == 1
        assert later.merchant.labels_fraud == 0
        c.close()
    finally:
        a.close()
        b.close()


def test_a_bulk_load_elsewhere_replaces_every_workers_state(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    worker = SqliteOnlineStore(path)
    try:
        worker.commit(_txn("old", T0), FEATURES, "p-old", "1", "{}")
        history = pd.DataFrame(
            {
                "transaction_id": ["h1", "h2"],
                "timestamp": pd.to_datetime([T0 - 60_000, T0 - 30_000], unit="ms", utc=True),
                "user_id": ["u2", "u2"],
                "merchant_id": ["m2", "m2"],
                "amount": [5.0, 7.0],
                "device_id": ["d2", "d2"],
                "country": ["FR", "FR"],
                "is_fraud": [1.0, 0.0],
                "label_timestamp": pd.to_datetime([T0 - 50_000, T0 - 20_000], unit="ms", utc=True),
            }
        )
        loader = SqliteOnlineStore(path)
        spec = build_feature_spec(history, FeatureConfig())
        assert loader.bulk_load(history, spec) == 2
        loader.close()
        gone = worker.prepare(_txn("probe", T0 + 1000))
        assert gone.user.n == 0, "the worker dropped the state the load replaced"
        loaded = worker.prepare(_txn("probe", T0 + 1000, user="u2", merchant="m2"))
        assert loaded.user.n == 2 and loaded.merchant.counts["24h"] == 2
        assert (loaded.merchant.labels_known, loaded.merchant.labels_fraud) == (2, 1)
        assert worker.prepare(_txn("h1", T0 - 60_000, "u2", "m2")).in_history
    finally:
        worker.close()


def test_a_store_of_the_trigger_schema_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "online.db"
    conn = sqlite3.connect(path)
    conn.executescript(
        """
        CREATE TABLE users(user_id TEXT PRIMARY KEY, n REAL NOT NULL, log_sum REAL NOT NULL,
            log_sumsq REAL NOT NULL, last_ts INTEGER NOT NULL) WITHOUT ROWID;
        CREATE TABLE user_events(user_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
            transaction_id TEXT NOT NULL, amount REAL NOT NULL,
            PRIMARY KEY(user_id, ts_ms, transaction_id)) WITHOUT ROWID;
        CREATE TABLE user_seen(user_id TEXT NOT NULL, kind INTEGER NOT NULL,
            value TEXT NOT NULL, PRIMARY KEY(user_id, kind, value)) WITHOUT ROWID;
        CREATE TABLE merchant_events(merchant_id TEXT NOT NULL, ts_ms INTEGER NOT NULL,
            transaction_id TEXT NOT NULL, PRIMARY KEY(merchant_id, ts_ms, transaction_id))
            WITHOUT ROWID;
        CREATE TABLE merchant_buckets(merchant_id TEXT, bucket INTEGER, count INTEGER);
        CREATE TABLE merchant_labels(transaction_id TEXT PRIMARY KEY, merchant_id TEXT NOT NULL,
            known_at_ms INTEGER NOT NULL, is_fraud INTEGER NOT NULL);
        CREATE TABLE merchant_label_totals(merchant_id TEXT PRIMARY KEY, through_ms INTEGER,
            known INTEGER, fraud INTEGER);
        CREATE TABLE transactions(transaction_id TEXT PRIMARY KEY, merchant_id TEXT NOT NULL,
            ts_ms INTEGER NOT NULL, prediction_id TEXT UNIQUE, model_version TEXT,
            features TEXT, response TEXT, scored_ms INTEGER, user_id TEXT, amount REAL,
            device_id TEXT, country TEXT, log_amount REAL, log_amount_sq REAL);
        CREATE TRIGGER scored_payment_history AFTER INSERT ON transactions
            WHEN NEW.prediction_id IS NOT NULL BEGIN SELECT 1; END;
        """
    )
    conn.execute("INSERT INTO users VALUES ('u1', 1.0, 2.4, 5.76, ?)", (T0,))
    conn.execute("INSERT INTO user_events VALUES ('u1', ?, 't1', 10.0)", (T0,))
    conn.executemany("INSERT INTO user_seen VALUES ('u1', ?, ?)", [(0, "d1"), (1, "m1"), (2, "DE")])
    conn.execute("INSERT INTO merchant_events VALUES ('m1', ?, 't1')", (T0,))
    conn.execute("INSERT INTO merchant_labels VALUES ('t1', 'm1', ?, 1)", (T0 + 10,))
    conn.execute(
        "INSERT INTO transactions(transaction_id, merchant_id, ts_ms, prediction_id, features, "
        "response, model_version) VALUES ('t1', 'm1', ?, 'p1', '[0.0]', '{}', '1')",
        (T0,),
    )
    conn.commit()
    conn.close()
    store = SqliteOnlineStore(path)
    try:
        prepared = store.prepare(_txn("t2", T0 + 1000))
        assert prepared.user.n == 1 and prepared.user.log_sum == 2.4
        assert prepared.user.seen_device and prepared.merchant.counts["7d"] == 1
        assert (prepared.merchant.labels_known, prepared.merchant.labels_fraud) == (1, 1)
        again = store.prepare(_txn("t1", T0))
        assert again.existing is not None and again.existing.prediction_id == "p1"
        assert store.commit(_txn("t2", T0 + 1000), FEATURES, "p2", "1", None) is None
        assert store.prepare(_txn("t3", T0 + 2000)).user.n == 2
    finally:
        store.close()
