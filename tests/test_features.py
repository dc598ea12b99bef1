"""Tier 1: the feature maths, above all point-in-time correctness."""

import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.features import (
    FeatureConfig,
    MerchantHistory,
    UserHistory,
    build_feature_spec,
    compute_features,
    encode_categories,
    online_features,
    window_aggregates,
)
from fraud_assets.core.schema import sort_canonical
from fraud_assets.core.synthetic import SyntheticConfig, generate


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    return sort_canonical(generate(SyntheticConfig(n_transactions=6000, days=10, seed=3)))


def _frame(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    """Tiny history: (timestamp, user, amount) with fixed merchant and device."""
    return pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(len(rows))],
            "timestamp": pd.to_datetime([r[0] for r in rows], utc=True),
            "user_id": [r[1] for r in rows],
            "merchant_id": "m1",
            "amount": [r[2] for r in rows],
            "device_id": "d1",
            "country": "DE",
        }
    )


def test_windows_count_only_earlier_rows_of_the_same_user() -> None:
    """Velocity is what a fraud analyst reads first; off-by-one here is invisible later."""
    frame = _frame(
        [
            ("2026-06-01 00:00", "a", 10.0),
            ("2026-06-01 00:30", "a", 20.0),
            ("2026-06-01 00:45", "b", 99.0),
            ("2026-06-01 01:10", "a", 30.0),
            ("2026-06-02 00:20", "a", 40.0),
        ]
    )
    spec = build_feature_spec(frame, FeatureConfig())
    out = compute_features(frame, spec).set_index("transaction_id")
    assert out.loc["t0", "user_txn_count_1h"] == 0
    assert out.loc["t1", "user_txn_count_1h"] == 1
    assert out.loc["t3", "user_txn_count_1h"] == 1  # t0 is 70 minutes earlier
    assert out.loc["t3", "user_amount_sum_24h"] == 30.0
    assert out.loc["t4", "user_txn_count_24h"] == 2  # t1 and t3, not t0 (24h20m earlier)
    assert out.loc["t2", "user_txn_count_7d"] == 0  # user b has no history
    assert out.loc["t3", "seconds_since_last_txn"] == 40 * 60
    assert out.loc["t0", "seconds_since_last_txn"] == -1
    assert out.loc["t3", "merchant_txn_count_24h"] == 3


def test_window_aggregates_bound_at_group_start() -> None:
    """The composite-key search must never leak counts across users."""
    ts = np.array([0, 10, 5, 6], dtype=np.int64)
    group_start = np.array([0, 0, 2, 2])
    counts, sums = window_aggregates(ts, np.array([1.0, 2.0, 3.0, 4.0]), group_start, {"w": 100})
    assert counts["w"].tolist() == [0, 1, 0, 1]
    assert sums["w"].tolist() == [0, 1, 0, 3]


def test_window_aggregates_of_several_columns_equal_each_alone() -> None:
    """The live batch path sums several columns in one call: each must add up bit for bit
    as it would alone, or batch and one-by-one features drift apart."""
    rng = np.random.default_rng(5)
    n = 500
    ts = np.sort(rng.integers(0, 3 * 86_400_000, n)).astype(np.int64)
    group_start = np.repeat(np.arange(0, n, 50), 50)
    ts = np.sort(ts.reshape(-1, 50), axis=1).ravel()
    values = rng.gamma(2.0, 40.0, (n, 3))
    windows = {"1h": 3_600_000, "24h": 86_400_000, "all": 10**12}
    counts, sums = window_aggregates(ts, values, group_start, windows)
    for k in range(values.shape[1]):
        alone_counts, alone_sums = window_aggregates(ts, values[:, k].copy(), group_start, windows)
        for name in windows:
            np.testing.assert_array_equal(counts[name], alone_counts[name])
            np.testing.assert_array_equal(sums[name][:, k], alone_sums[name])


def test_features_never_see_later_transactions(history: pd.DataFrame) -> None:
    """Computing on a prefix of history must give the same row: nothing after it matters."""
    spec = build_feature_spec(history, FeatureConfig())
    full = compute_features(history, spec)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(history), size=25, replace=False):
        prefix = compute_features(history.iloc[: i + 1].reset_index(drop=True), spec)
        np.testing.assert_allclose(
            prefix.iloc[-1][list(spec.features)].to_numpy(float),
            full.iloc[i][list(spec.features)].to_numpy(float),
            rtol=1e-9,
            atol=1e-9,
        )


def test_merchant_fraud_rate_ignores_labels_not_yet_known(history: pd.DataFrame) -> None:
    """Flipping every label that becomes known after a transaction must not change it."""
    spec = build_feature_spec(history, FeatureConfig())
    base = compute_features(history, spec)
    i = len(history) * 3 // 4
    t = history["timestamp"].iloc[i]
    changed = history.copy()
    later = changed["label_timestamp"] >= t
    changed.loc[later, "is_fraud"] = 1 - changed.loc[later, "is_fraud"]
    after = compute_features(changed, spec)
    cols = ["merchant_fraud_rate", "merchant_labels_known"]
    np.testing.assert_allclose(after.loc[:i, cols], base.loc[:i, cols])
    assert not np.allclose(after[cols].to_numpy(), base[cols].to_numpy())


def test_first_use_flags(history: pd.DataFrame) -> None:
    """A user's first device, merchant and country are new; repeats are not."""
    spec = build_feature_spec(history, FeatureConfig())
    out = compute_features(history, spec)
    for flag, col in (("is_new_device", "device_id"), ("is_new_country", "country")):
        expected = (~history.duplicated(["user_id", col])).astype(float).to_numpy()
        np.testing.assert_array_equal(out[flag].to_numpy(), expected)


def test_missing_field_skips_only_the_features_that_need_it(history: pd.DataFrame) -> None:
    """Bring-your-own data without device ids still trains, and says what was skipped."""
    spec = build_feature_spec(history.drop(columns=["device_id", "device_type"]), FeatureConfig())
    assert "is_new_device" not in spec.features
    assert "device_id" in spec.skipped["is_new_device"]
    assert "device_type_code" in spec.skipped
    assert "user_txn_count_1h" in spec.features


def test_groups_switch_off_and_change_the_version(history: pd.DataFrame) -> None:
    """A feature set's version must change with its config so models record what they used."""
    full = build_feature_spec(history, FeatureConfig())
    no_temporal = build_feature_spec(history, FeatureConfig(temporal=False))
    assert "hour" not in no_temporal.features
    assert no_temporal.skipped["hour"] == "group 'temporal' is switched off"
    assert full.version != no_temporal.version
    assert build_feature_spec(history, FeatureConfig()).version == full.version


def test_online_features_equal_offline_for_a_replayed_user(history: pd.DataFrame) -> None:
    """The online entry point runs the same maths; state built by hand must give equal rows."""
    spec = build_feature_spec(history, FeatureConfig(aggregation=False))
    offline = compute_features(history, spec)
    user = history["user_id"].value_counts().index[0]
    rows = history.index[history["user_id"] == user]
    state = UserHistory(np.array([], dtype=np.int64), np.array([]))
    devices: set[str] = set()
    merchants: set[str] = set()
    countries: set[str] = set()
    for i in rows:
        txn = history.loc[i]
        ts = int(txn["timestamp"].value // 1_000_000)
        state.seen_device = txn["device_id"] in devices
        state.seen_merchant = txn["merchant_id"] in merchants
        state.seen_country = txn["country"] in countries
        got = online_features(
            {"ts_ms": ts, **txn.to_dict()}, state, MerchantHistory(counts={}), spec
        )
        np.testing.assert_allclose(got, offline.loc[i, list(spec.features)].to_numpy(float))
        keep = state.recent_ts >= ts - 7 * 86_400_000
        state.recent_ts = np.append(state.recent_ts[keep], ts)
        state.recent_amount = np.append(state.recent_amount[keep], txn["amount"])
        x = np.log1p(txn["amount"])
        state.n, state.log_sum, state.log_sumsq = (
            state.n + 1,
            state.log_sum + x,
            state.log_sumsq + x * x,
        )
        state.last_ts = ts
        devices.add(txn["device_id"])
        merchants.add(txn["merchant_id"])
        countries.add(txn["country"])


@pytest.mark.parametrize("size", [0, 1, 16, 17, 3000])
def test_encode_categories_matches_a_categorical(size: int) -> None:
    """Lists, arrays and Series of any size map like `pd.Categorical` of their strings, so
    the offline and live paths agree: unseen values, None, NaN and numbers included."""
    rng = np.random.default_rng(size)
    vocab = ("", "1", "DE", "None", "US", "nan")
    pool = np.array(["DE", "US", "", "XX", None, np.nan, 1, "1", 2.5, "nan"], dtype=object)
    values = pool[rng.integers(0, len(pool), size)]
    want = pd.Categorical(pd.Series(values, dtype="object").astype(str), categories=list(vocab))
    for given in (values.tolist(), values, pd.Series(values, dtype="object")):
        got = encode_categories(given, vocab)
        assert got.dtype == np.float64
        np.testing.assert_array_equal(got, want.codes.astype(np.float64))
