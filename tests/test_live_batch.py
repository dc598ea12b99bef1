"""Tier 1: batch features of live payments equal scoring them one by one.

`batch_features` is checked on random batches against two references: the first
implementation of `batch_prior_state` (pandas groupings, kept below as the oracle: the
results must be bitwise equal), and the one-by-one path (`online_features` with each
payment's history updated by the batch's earlier payments, as the store does between
commits: equal within float rounding of sums). The batches repeat customers, merchants,
devices and countries, tie timestamps and leave some payments out of the history.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.features import (
    CATEGORICAL_FIELDS,
    HISTORY_MS,
    MERCHANT_WINDOWS_MS,
    MS_PER_DAY,
    MS_PER_HOUR,
    WINDOWS_MS,
    FeatureConfig,
    FeatureSpec,
    MerchantHistory,
    PriorState,
    UserHistory,
    assemble,
    build_feature_spec,
    online_features,
    window_aggregates,
)
from fraud_assets.core.live_batch import HistoryBatch, batch_features, batch_prior_state

START_MS = 1_780_000_000_000
TOLERANCE = 1e-6


@dataclass(frozen=True)
class _OracleGroups:
    """The first implementation's grouping (pandas), unchanged."""

    order: np.ndarray
    start: np.ndarray
    inverse: np.ndarray

    @classmethod
    def of(cls, *keys: Sequence[str] | np.ndarray) -> _OracleGroups:
        if len(keys) == 1:
            codes = pd.factorize(np.asarray(keys[0], dtype=object), sort=False)[0]
        else:
            frame = pd.DataFrame({str(i): np.asarray(k, dtype=object) for i, k in enumerate(keys)})
            codes = frame.groupby(list(frame.columns), sort=False).ngroup().to_numpy()
        n = len(codes)
        order = np.argsort(codes, kind="stable")
        sorted_codes = codes[order]
        starts = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1] if n else []
        start = np.repeat(np.asarray(starts, dtype=np.int64), np.diff(np.r_[starts, n]))
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        return cls(order, start, inverse)

    def earlier_sum(self, values: np.ndarray) -> np.ndarray:
        sorted_values = values[self.order]
        csum = np.concatenate(([0.0], np.cumsum(sorted_values, dtype=np.float64)))
        idx = np.arange(len(sorted_values))
        return (csum[idx] - csum[self.start])[self.inverse]

    def earlier_windows(
        self, ts: np.ndarray, values: np.ndarray, windows: Mapping[str, int]
    ) -> dict[str, np.ndarray]:
        _, sums = window_aggregates(ts[self.order], values[self.order], self.start, windows)
        return {k: v[self.inverse] for k, v in sums.items()}


def _oracle_prior_state(
    ts_ms: np.ndarray,
    amount: np.ndarray,
    columns: Mapping[str, Sequence[str]],
    adds: np.ndarray,
    base: HistoryBatch,
) -> PriorState:
    """The first implementation of `batch_prior_state`, unchanged."""
    n = len(ts_ms)
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    weight = np.asarray(adds, dtype=np.float64)
    users = _OracleGroups.of(columns["user_id"])
    merchants = _OracleGroups.of(columns["merchant_id"])
    event_age = ts_ms[base.event_row] - base.event_ts
    user_counts: dict[str, np.ndarray] = {}
    user_sums: dict[str, np.ndarray] = {}
    in_batch_counts = users.earlier_windows(ts_ms, weight, WINDOWS_MS)
    in_batch_sums = users.earlier_windows(ts_ms, amount * weight, WINDOWS_MS)
    for name, width in WINDOWS_MS.items():
        inside = (event_age <= width).astype(np.float64)
        user_counts[name] = (
            np.bincount(base.event_row, weights=inside, minlength=n) + in_batch_counts[name]
        )
        user_sums[name] = (
            np.bincount(base.event_row, weights=inside * base.event_amount, minlength=n)
            + in_batch_sums[name]
        )
    log_amount = np.log1p(amount)
    sorted_pos = np.where(weight[users.order] > 0, np.arange(n), -1)
    previous = np.maximum.accumulate(np.r_[-1, sorted_pos[:-1]]) if n else sorted_pos
    previous = np.where(previous >= users.start, previous, -1)
    previous_ts = np.where(previous >= 0, ts_ms[users.order][np.maximum(previous, 0)], -1)
    last_ts = np.maximum(base.user_last_ts, previous_ts[users.inverse])

    def seen_in_batch(values: Sequence[str]) -> np.ndarray:
        return _OracleGroups.of(columns["user_id"], values).earlier_sum(weight) > 0

    merchant_in_batch = merchants.earlier_windows(ts_ms, weight, MERCHANT_WINDOWS_MS)
    return PriorState(
        user_counts=user_counts,
        user_sums=user_sums,
        user_n=base.user_n + users.earlier_sum(weight),
        user_log_sum=base.user_log_sum + users.earlier_sum(log_amount * weight),
        user_log_sumsq=base.user_log_sumsq + users.earlier_sum(log_amount * log_amount * weight),
        user_last_ts=last_ts,
        new_device=(~(base.seen_device | seen_in_batch(columns["device_id"]))).astype(float),
        new_merchant=(~(base.seen_merchant | seen_in_batch(columns["merchant_id"]))).astype(float),
        new_country=(~(base.seen_country | seen_in_batch(columns["country"]))).astype(float),
        merchant_counts={
            k: base.merchant_counts[k] + merchant_in_batch[k] for k in MERCHANT_WINDOWS_MS
        },
        merchant_known=base.merchant_known,
        merchant_fraud=base.merchant_fraud,
    )


@pytest.fixture(scope="module")
def spec() -> FeatureSpec:
    rng = np.random.default_rng(11)
    n = 400
    frame = pd.DataFrame(
        {
            "transaction_id": [f"t{i}" for i in range(n)],
            "timestamp": pd.to_datetime(START_MS + np.arange(n) * 60_000, unit="ms", utc=True),
            "user_id": [f"u{i % 40}" for i in range(n)],
            "merchant_id": [f"m{i % 13}" for i in range(n)],
            "amount": rng.gamma(2.0, 40.0, n),
            "device_id": [f"d{i % 3}" for i in range(n)],
            "merchant_category": rng.choice(["food", "travel", "games", "cash"], n),
            "currency": rng.choice(["EUR", "USD", "GBP"], n),
            "device_type": rng.choice(["mobile", "desktop"], n),
            "channel": rng.choice(["app", "web"], n),
            "country": rng.choice(["DE", "FR", "NL", "US"], n),
            "is_fraud": (rng.random(n) < 0.05).astype(int),
        }
    )
    return build_feature_spec(frame, FeatureConfig())


def _histories(
    rng: np.random.Generator, ts: np.ndarray
) -> list[tuple[UserHistory, MerchantHistory]]:
    """Random store views, one per payment, as of that payment's time."""
    pairs = []
    for t in ts.tolist():
        size = int(rng.integers(0, 6))
        recent = np.sort(t - rng.integers(0, HISTORY_MS + 2 * MS_PER_HOUR, size)).astype(np.int64)
        known = float(rng.integers(0, 30))
        user = UserHistory(
            recent_ts=recent,
            recent_amount=rng.gamma(2.0, 40.0, size),
            n=float(size + rng.integers(0, 20)),
            log_sum=float(rng.uniform(0, 80)),
            log_sumsq=float(rng.uniform(0, 400)),
            last_ts=int(recent[-1]) if size else -1,
            seen_device=bool(rng.random() < 0.5),
            seen_merchant=bool(rng.random() < 0.5),
            seen_country=bool(rng.random() < 0.5),
        )
        merchant = MerchantHistory(
            counts={k: float(rng.integers(0, 50)) for k in MERCHANT_WINDOWS_MS},
            labels_known=known,
            labels_fraud=float(rng.integers(0, known + 1)),
        )
        pairs.append((user, merchant))
    return pairs


def _batch(
    rng: np.random.Generator, n: int
) -> tuple[dict[str, object], np.ndarray, list[tuple[UserHistory, MerchantHistory]]]:
    """n payments in canonical order, with few customers, merchants and distinct times."""
    pool = max(1, n // 3)
    # Few distinct times: ties, and gaps exactly one window wide (a window includes its edge).
    offsets = [0, 1, 1000, MS_PER_HOUR, 2 * MS_PER_HOUR, MS_PER_DAY, MS_PER_DAY + 1, 3 * MS_PER_DAY]
    ts = np.sort(START_MS + rng.choice(offsets, n)).astype(np.int64)
    txns: dict[str, object] = {
        "ts_ms": ts,
        "amount": np.round(rng.gamma(2.0, 40.0, n), 2),
        "user_id": [f"u{k}" for k in rng.integers(0, pool, n)],
        "merchant_id": [f"m{k}" for k in rng.integers(0, max(1, pool // 2), n)],
        "device_id": [f"d{k}" for k in rng.integers(0, 3, n)],
        "merchant_category": rng.choice(["food", "travel", "games", "shoes"], n).tolist(),
        "currency": rng.choice(["EUR", "USD", "CHF"], n).tolist(),
        "device_type": rng.choice(["mobile", "desktop", ""], n).tolist(),
        "channel": rng.choice(["app", "web"], n).tolist(),
        "country": rng.choice(["DE", "FR", "US", "BR"], n).tolist(),
    }
    adds = rng.random(n) < 0.8
    return txns, adds, _histories(rng, ts)


def _one_by_one(
    txns: Mapping[str, object],
    adds: np.ndarray,
    pairs: Sequence[tuple[UserHistory, MerchantHistory]],
    spec: FeatureSpec,
) -> np.ndarray:
    """Each payment through `online_features`, its history updated by the batch's earlier
    payments that joined it, as the store would after each commit."""
    ts = np.asarray(txns["ts_ms"]).tolist()
    amount = np.asarray(txns["amount"]).tolist()
    rows = []
    for i, (user, merchant) in enumerate(pairs):
        same_user = [j for j in range(i) if adds[j] and txns["user_id"][j] == txns["user_id"][i]]
        same_merchant = [
            j for j in range(i) if adds[j] and txns["merchant_id"][j] == txns["merchant_id"][i]
        ]
        events = sorted(
            [*zip(user.recent_ts.tolist(), user.recent_amount.tolist(), strict=True)]
            + [(ts[j], amount[j]) for j in same_user]
        )
        logs = [float(np.log1p(amount[j])) for j in same_user]

        def seen(field: str, before: bool, i: int = i, same_user: list[int] = same_user) -> bool:
            return before or any(txns[field][j] == txns[field][i] for j in same_user)

        now_user = UserHistory(
            recent_ts=np.array([e[0] for e in events], dtype=np.int64),
            recent_amount=np.array([e[1] for e in events], dtype=np.float64),
            n=user.n + len(same_user),
            log_sum=user.log_sum + sum(logs),
            log_sumsq=user.log_sumsq + sum(x * x for x in logs),
            last_ts=max([user.last_ts, *(ts[j] for j in same_user)]),
            seen_device=seen("device_id", user.seen_device),
            seen_merchant=seen("merchant_id", user.seen_merchant),
            seen_country=seen("country", user.seen_country),
        )
        now_merchant = MerchantHistory(
            counts={
                k: merchant.counts[k] + sum(ts[j] >= ts[i] - width for j in same_merchant)
                for k, width in MERCHANT_WINDOWS_MS.items()
            },
            labels_known=merchant.labels_known,
            labels_fraud=merchant.labels_fraud,
        )
        txn = {"ts_ms": ts[i], "amount": amount[i], **{c: txns[c][i] for c in CATEGORICAL_FIELDS}}
        rows.append(online_features(txn, now_user, now_merchant, spec))
    return np.array(rows).reshape(len(pairs), len(spec.features))


def _oracle_features(
    txns: Mapping[str, object], adds: np.ndarray, base: HistoryBatch, spec: FeatureSpec
) -> np.ndarray:
    ts = np.asarray(txns["ts_ms"], dtype=np.int64)
    amount = np.asarray(txns["amount"], dtype=np.float64)
    state = _oracle_prior_state(ts, amount, txns, adds, base)  # type: ignore[arg-type]
    cols = {c: txns[c] for c in CATEGORICAL_FIELDS}
    cols["amount"] = amount
    return assemble(cols, ts, state, spec)  # type: ignore[arg-type]


def _assert_states_equal(got: PriorState, want: PriorState) -> None:
    for f in fields(PriorState):
        a, b = getattr(got, f.name), getattr(want, f.name)
        if isinstance(b, dict):
            assert a.keys() == b.keys(), f.name
            for k in b:
                np.testing.assert_array_equal(a[k], b[k], err_msg=f"{f.name}[{k}]")
        else:
            np.testing.assert_array_equal(a, b, err_msg=f.name)


@pytest.mark.parametrize("n", [0, 1, 2, 3, 5, 8, 16, 17, 60, 700])
@pytest.mark.parametrize("seed", range(4))
def test_batch_features_equal_the_first_implementation_and_one_by_one(
    spec: FeatureSpec, n: int, seed: int
) -> None:
    """Small batches take the shortcuts (no customer or merchant twice), large ones the
    general path; both must give what the one-by-one path gives."""
    rng = np.random.default_rng(1000 * n + seed)
    txns, adds, pairs = _batch(rng, n)
    base = HistoryBatch.from_histories(pairs)
    got = batch_features(txns, adds, base, spec)
    assert got.shape == (n, len(spec.features))
    if n == 0:
        return  # the first implementation failed on an empty batch
    np.testing.assert_array_equal(got, _oracle_features(txns, adds, base, spec))
    ts = np.asarray(txns["ts_ms"])
    _assert_states_equal(
        batch_prior_state(ts, txns["amount"], txns, adds, base),  # type: ignore[arg-type]
        _oracle_prior_state(ts, txns["amount"], txns, adds, base),  # type: ignore[arg-type]
    )
    np.testing.assert_allclose(got, _one_by_one(txns, adds, pairs, spec), rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("adds", ["none", "all"])
@pytest.mark.parametrize("n", [0, 4, 300])
def test_all_or_no_payments_join_the_history(spec: FeatureSpec, adds: str, n: int) -> None:
    """Payments already in the store (or scored while it was down) add nothing."""
    rng = np.random.default_rng(n)
    txns, _, pairs = _batch(rng, n)
    flags = np.full(n, adds == "all")
    for base in (HistoryBatch.from_histories(pairs), HistoryBatch.empty(n)):
        got = batch_features(txns, flags, base, spec)
        assert got.shape == (n, len(spec.features))
        if n:
            np.testing.assert_array_equal(got, _oracle_features(txns, flags, base, spec))


def test_one_customer_repeated_with_tied_timestamps(spec: FeatureSpec) -> None:
    """Ties are ordered by position (transaction id): the earlier one counts for the later."""
    n = 6
    txns: dict[str, object] = {
        "ts_ms": np.full(n, START_MS, dtype=np.int64),
        "amount": np.arange(1.0, n + 1),
        "user_id": ["u"] * n,
        "merchant_id": ["m1", "m2"] * 3,
        "device_id": ["d"] * n,
        **{c: ["DE"] * n for c in CATEGORICAL_FIELDS},
    }
    adds = np.array([True, False, True, True, False, True])
    got = batch_features(txns, adds, HistoryBatch.empty(n), spec)
    np.testing.assert_array_equal(got[:, spec.index("user_prior_txn_count")], [0, 1, 1, 2, 3, 3])
    np.testing.assert_array_equal(got[:, spec.index("is_new_device")], [1, 0, 0, 0, 0, 0])
    np.testing.assert_array_equal(got[:, spec.index("merchant_txn_count_24h")], [0, 0, 1, 0, 2, 1])
    np.testing.assert_array_equal(got, _oracle_features(txns, adds, HistoryBatch.empty(n), spec))
