"""Online features equal offline features: the store replays history like the batch code.

The offline features of a 20-day synthetic history are the reference. The online store is
bulk-loaded with the first 19 days (labels not yet known at that point are held back),
then the last day is replayed one transaction at a time in canonical order: labels become
known through `record_label` as soon as their label_timestamp has passed, each
transaction's features are built from the store, and the store is updated. Every feature
of every replayed transaction must match the offline value within 1e-6, on SQLite and on
Redis.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.features import (
    CATEGORICAL_FIELDS,
    MS_PER_DAY,
    FeatureConfig,
    FeatureSpec,
    build_feature_spec,
    compute_features,
    label_known_ms,
    online_features,
    timestamps_ms,
)
from fraud_assets.core.live_batch import batch_features
from serving.featurizer import FeatureBuilder
from serving.online_store import (
    Commit,
    OnlineStore,
    RedisOnlineStore,
    SqliteOnlineStore,
    StoreTxn,
)

TOLERANCE = 1e-6
# The module's tests share one expensive world: keep them in one process.
pytestmark = pytest.mark.xdist_group("parity")
NEVER = np.iinfo(np.int64).max


@pytest.fixture(scope="module")
def world(history: pd.DataFrame) -> tuple[pd.DataFrame, FeatureSpec, pd.DataFrame]:
    frame = history.copy()
    # Exercise the label-maturity rule too: some labels arrive without a timestamp.
    rng = np.random.default_rng(3)
    no_time = rng.random(len(frame)) < 0.1
    frame.loc[no_time, "label_timestamp"] = pd.NaT
    # ... and some rows are still unlabelled.
    unlabelled = rng.random(len(frame)) < 0.03
    frame["is_fraud"] = frame["is_fraud"].astype("float64")
    frame.loc[unlabelled, "is_fraud"] = np.nan
    frame.loc[unlabelled, "label_timestamp"] = pd.NaT
    spec = build_feature_spec(frame, FeatureConfig())
    return frame, spec, compute_features(frame, spec)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OnlineStore]:
    if request.param == "sqlite":
        made: OnlineStore = SqliteOnlineStore(tmp_path / "online.db")
    else:
        made = RedisOnlineStore(
            request.getfixturevalue("redis_url"), prefix=f"t{uuid.uuid4().hex}:"
        )
    yield made
    made.close()


def _txn_dict(row: pd.Series) -> dict[str, object]:
    return {
        "ts_ms": int(row["ts_ms"]),
        "amount": float(row["amount"]),
        **{
            c: row[c]
            for c in ("merchant_category", "currency", "device_type", "channel", "country")
        },
    }


def _store_txn(row: pd.Series) -> StoreTxn:
    return StoreTxn(
        transaction_id=row["transaction_id"],
        user_id=row["user_id"],
        merchant_id=row["merchant_id"],
        ts_ms=int(row["ts_ms"]),
        amount=float(row["amount"]),
        device_id=row["device_id"],
        country=row["country"],
    )


def _score_one(store: OnlineStore, spec: FeatureSpec, row: pd.Series, check: bool) -> np.ndarray:
    """The one-by-one path of /predict: read the history, build, record."""
    txn = _store_txn(row)
    prepared = store.prepare(txn)
    assert prepared.existing is None and not prepared.in_history
    features = FeatureBuilder(spec).build(_txn_dict(row), prepared.user, prepared.merchant)
    if check:
        # The builder is the reference implementation with a faster category lookup.
        reference = online_features(_txn_dict(row), prepared.user, prepared.merchant, spec)
        np.testing.assert_array_equal(features, reference)
    assert store.commit(txn, features, str(uuid.uuid4()), "test", None) is None
    return features


def _score_batch(store: OnlineStore, spec: FeatureSpec, part: pd.DataFrame) -> np.ndarray:
    """The path of /predict/batch: one read for all, batch features, one write."""
    txns = [_store_txn(row) for _, row in part.iterrows()]
    prepared = store.prepare_many(txns)
    assert not prepared.existing and not prepared.in_history.any()
    columns: dict[str, object] = {
        c: part[c].astype(object).where(part[c].notna(), "").tolist()
        for c in ("user_id", "merchant_id", "device_id", *CATEGORICAL_FIELDS)
    }
    columns["ts_ms"] = part["ts_ms"].to_numpy()
    columns["amount"] = part["amount"].to_numpy()
    features = batch_features(columns, np.ones(len(part), dtype=bool), prepared.history, spec)
    # The batch's own earlier payments are part of its later payments' history.
    alone = batch_features(columns, np.zeros(len(part), dtype=bool), prepared.history, spec)
    assert (alone != features).any(axis=1).sum() > len(part) // 10
    commits = [
        Commit(txn, features[i], str(uuid.uuid4()), "test", None) for i, txn in enumerate(txns)
    ]
    assert store.commit_many(commits) == {}
    return features


@pytest.mark.parametrize("chunk", [1, 400], ids=["one-by-one", "batches"])
def test_replayed_day_matches_offline_features(
    world: tuple[pd.DataFrame, FeatureSpec, pd.DataFrame], store: OnlineStore, chunk: int
) -> None:
    frame, spec, offline = world
    ts = timestamps_ms(frame["timestamp"])
    known_at = label_known_ms(frame, ts, spec.config)
    cutoff = int((ts.max() // MS_PER_DAY) * MS_PER_DAY)
    before = ts < cutoff
    assert 500 < (~before).sum() < len(frame) // 5

    # The loaded history only carries the labels already known at the cutoff.
    loaded = frame.loc[before].copy()
    hidden = (known_at[before] >= cutoff) & (known_at[before] != NEVER)
    loaded.loc[hidden, "is_fraud"] = np.nan
    loaded.loc[hidden, "label_timestamp"] = pd.NaT
    started = time.perf_counter()
    assert store.bulk_load(loaded, spec) == before.sum()
    assert time.perf_counter() - started < 60

    pending_mask = (known_at >= cutoff) & (known_at != NEVER)
    pending = sorted(
        zip(
            known_at[pending_mask].tolist(),
            frame.loc[pending_mask, "transaction_id"].tolist(),
            frame.loc[pending_mask, "is_fraud"].tolist(),
            strict=True,
        )
    )
    day = frame.loc[~before].assign(ts_ms=ts[~before])
    expected = offline.loc[~before, list(spec.features)].to_numpy()
    got = np.empty_like(expected)
    next_label = 0
    labels_fed = 0
    for start in range(0, len(day), chunk):
        part = day.iloc[start : start + chunk]
        # A label counts from its known-at time on, so feeding it early changes nothing.
        t = int(part["ts_ms"].max())
        while next_label < len(pending) and pending[next_label][0] < t:
            at, tid, fraud = pending[next_label]
            assert store.record_label(tid, bool(fraud), at)
            next_label += 1
            labels_fed += 1
        if chunk == 1:
            got[start] = _score_one(store, spec, part.iloc[0], check=start % 25 == 0)
        else:
            got[start : start + len(part)] = _score_batch(store, spec, part)
    assert labels_fed > 0, "the replay should have fed late labels"

    diff = np.abs(got - expected)
    worst = np.unravel_index(np.argmax(diff), diff.shape)
    assert diff.max() <= TOLERANCE, (
        f"feature {spec.features[worst[1]]} of {day['transaction_id'].iloc[worst[0]]}: "
        f"online {got[worst]} vs offline {expected[worst]}"
    )
    # The replay exercised every kind of state.
    for name in ("user_txn_count_1h", "merchant_labels_known", "is_new_device"):
        column = expected[:, spec.index(name)]
        assert column.max() > 0 and column.min() != column.max(), name


def test_retry_is_idempotent_and_relabel_replaces(
    world: tuple[pd.DataFrame, FeatureSpec, pd.DataFrame], store: OnlineStore
) -> None:
    frame, spec, _ = world
    store.bulk_load(frame.iloc[:2000], spec)
    ts = int(timestamps_ms(frame["timestamp"]).max()) + 60_000
    txn = StoreTxn("new-1", "u-new", "m-new", ts, 12.5, "d-1", "DE")
    first = store.prepare(txn)
    assert first.user.n == 0 and not first.user.seen_device
    features = np.arange(len(spec.features), dtype=np.float64) / 7
    assert store.commit(txn, features, "p-1", "3", '{"x": 1}') is None
    again = store.prepare(txn)
    assert again.existing is not None and again.existing.prediction_id == "p-1"
    assert again.existing.features == features.tolist()
    # A concurrent duplicate loses the race and gets the first result back.
    raced = store.commit(txn, features, "p-2", "3", '{"x": 2}')
    assert raced is not None and raced.prediction_id == "p-1" and raced.response == '{"x": 1}'
    # The batch calls behave alike: the earlier result is found and handed back.
    batch = store.prepare_many([txn, StoreTxn("new-9", "u-9", "m-new", ts, 2.0, "d", "DE")])
    assert set(batch.existing) == {0} and batch.existing[0].prediction_id == "p-1"
    assert batch.history.merchant_counts["24h"][1] == 1, "the first payment counts"
    raced_many = store.commit_many([Commit(txn, features, "p-3", "3", '{"x": 3}')])
    assert list(raced_many) == ["new-1"] and raced_many["new-1"].prediction_id == "p-1"
    after = store.prepare(StoreTxn("new-2", "u-new", "m-new", ts + 1000, 1.0, "d-1", "DE"))
    assert after.user.n == 1 and after.user.seen_device and after.merchant.counts["24h"] == 1
    assert store.find_prediction("p-1") is not None
    assert store.find_prediction("nope") is None
    # Labels: a later label of the same transaction replaces the earlier one.
    assert store.record_label("new-1", True, ts + 10)
    probe = StoreTxn("new-3", "u-x", "m-new", ts + 20, 1.0, "d", "DE")
    merchant = store.prepare(probe).merchant
    assert (merchant.labels_known, merchant.labels_fraud) == (1, 1)
    assert store.record_label("new-1", False, ts + 10)
    merchant = store.prepare(probe).merchant
    assert (merchant.labels_known, merchant.labels_fraud) == (1, 0)
    assert not store.record_label("unknown-txn", True, ts)
    # A bulk-loaded transaction resubmitted for scoring is not counted twice.
    old = frame.iloc[10]
    loaded = StoreTxn(
        old["transaction_id"],
        old["user_id"],
        old["merchant_id"],
        int(timestamps_ms(frame["timestamp"].iloc[10:11])[0]),
        1.0,
        "d",
        "DE",
    )
    assert store.prepare(loaded).in_history
