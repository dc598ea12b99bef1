"""Features of many live payments at once, exactly as if they were scored one by one.

A batch of payments is scored in canonical order (timestamp, then transaction id), and a
payment must see the batch's earlier payments of its customer and merchant as history,
as the one-by-one path does after each commit. Reading the store once per payment and
committing in between costs ~1 ms a payment; here the store is read once for the whole
batch (`HistoryBatch`: what it knew before the batch, per payment, at that payment's
time), and `batch_prior_state` adds the batch's own earlier payments with the same
`window_aggregates` maths the offline features use. `assemble` then builds the matrix.

The result equals the one-by-one path up to float rounding of sums (tested in
tests/serving/test_parity.py against the offline feature set).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from fraud_assets.core.features import (
    CATEGORICAL_FIELDS,
    MERCHANT_WINDOWS_MS,
    WINDOWS_MS,
    FeatureSpec,
    MerchantHistory,
    PriorState,
    UserHistory,
    assemble,
    window_aggregates,
)


@dataclass
class HistoryBatch:
    """What the store knew before a batch of n payments, one entry per payment.

    Each payment's customer and merchant state is as of that payment's own time; the
    customer's recent events (the last 7 days up to and including its time) are flat
    arrays tagged with the payment's row (`event_row`).
    """

    user_n: np.ndarray
    user_log_sum: np.ndarray
    user_log_sumsq: np.ndarray
    user_last_ts: np.ndarray
    seen_device: np.ndarray
    seen_merchant: np.ndarray
    seen_country: np.ndarray
    merchant_counts: dict[str, np.ndarray]
    merchant_known: np.ndarray
    merchant_fraud: np.ndarray
    event_row: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    event_ts: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    event_amount: np.ndarray = field(default_factory=lambda: np.empty(0, np.float64))

    def __len__(self) -> int:
        return len(self.user_n)

    def take(self, rows: np.ndarray) -> HistoryBatch:
        """The history of the payments at positions `rows` (in that order)."""
        if len(rows) == len(self) and np.array_equal(rows, np.arange(len(self))):
            return self
        position = np.full(len(self), -1, dtype=np.int64)
        position[rows] = np.arange(len(rows))
        keep = position[self.event_row] >= 0
        return HistoryBatch(
            user_n=self.user_n[rows],
            user_log_sum=self.user_log_sum[rows],
            user_log_sumsq=self.user_log_sumsq[rows],
            user_last_ts=self.user_last_ts[rows],
            seen_device=self.seen_device[rows],
            seen_merchant=self.seen_merchant[rows],
            seen_country=self.seen_country[rows],
            merchant_counts={k: v[rows] for k, v in self.merchant_counts.items()},
            merchant_known=self.merchant_known[rows],
            merchant_fraud=self.merchant_fraud[rows],
            event_row=position[self.event_row[keep]],
            event_ts=self.event_ts[keep],
            event_amount=self.event_amount[keep],
        )

    @classmethod
    def empty(cls, n: int) -> HistoryBatch:
        """Customers and merchants never seen before (and the store-down fallback)."""
        zeros = np.zeros(n, dtype=np.float64)
        return cls(
            user_n=zeros,
            user_log_sum=zeros,
            user_log_sumsq=zeros,
            user_last_ts=np.full(n, -1, dtype=np.int64),
            seen_device=np.zeros(n, dtype=bool),
            seen_merchant=np.zeros(n, dtype=bool),
            seen_country=np.zeros(n, dtype=bool),
            merchant_counts={k: zeros for k in MERCHANT_WINDOWS_MS},
            merchant_known=zeros,
            merchant_fraud=zeros,
        )

    @classmethod
    def from_histories(cls, pairs: Sequence[tuple[UserHistory, MerchantHistory]]) -> HistoryBatch:
        """Stack per-payment histories (stores without a columnar batch read)."""
        users = [u for u, _ in pairs]
        merchants = [m for _, m in pairs]
        sizes = [len(u.recent_ts) for u in users]
        return cls(
            user_n=np.array([u.n for u in users], dtype=np.float64),
            user_log_sum=np.array([u.log_sum for u in users], dtype=np.float64),
            user_log_sumsq=np.array([u.log_sumsq for u in users], dtype=np.float64),
            user_last_ts=np.array([u.last_ts for u in users], dtype=np.int64),
            seen_device=np.array([u.seen_device for u in users], dtype=bool),
            seen_merchant=np.array([u.seen_merchant for u in users], dtype=bool),
            seen_country=np.array([u.seen_country for u in users], dtype=bool),
            merchant_counts={
                k: np.array([m.counts.get(k, 0.0) for m in merchants], dtype=np.float64)
                for k in MERCHANT_WINDOWS_MS
            },
            merchant_known=np.array([m.labels_known for m in merchants], dtype=np.float64),
            merchant_fraud=np.array([m.labels_fraud for m in merchants], dtype=np.float64),
            event_row=np.repeat(np.arange(len(users), dtype=np.int64), sizes),
            event_ts=np.concatenate(
                [np.asarray(u.recent_ts, dtype=np.int64) for u in users] or [np.empty(0, np.int64)]
            ),
            event_amount=np.concatenate(
                [np.asarray(u.recent_amount, dtype=np.float64) for u in users]
                or [np.empty(0, np.float64)]
            ),
        )


@dataclass(frozen=True)
class _Groups:
    """Rows grouped by a key, keeping canonical order inside each group."""

    order: np.ndarray  # positions sorted by group, then canonical order
    start: np.ndarray  # for each sorted position, the sorted position its group starts at
    inverse: np.ndarray  # sorted position of each row

    @classmethod
    def of(cls, *keys: Sequence[str] | np.ndarray) -> _Groups:
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
        """Per row, the sum of `values` over the earlier rows of its group (all time)."""
        sorted_values = values[self.order]
        csum = np.concatenate(([0.0], np.cumsum(sorted_values, dtype=np.float64)))
        idx = np.arange(len(sorted_values))
        return (csum[idx] - csum[self.start])[self.inverse]

    def earlier_windows(
        self, ts: np.ndarray, values: np.ndarray, windows: Mapping[str, int]
    ) -> dict[str, np.ndarray]:
        """Per row and window, the sum of `values` over the group's earlier rows in it."""
        _, sums = window_aggregates(ts[self.order], values[self.order], self.start, windows)
        return {k: v[self.inverse] for k, v in sums.items()}


def batch_prior_state(
    ts_ms: np.ndarray,
    amount: np.ndarray,
    columns: Mapping[str, Sequence[str]],
    adds: np.ndarray,
    base: HistoryBatch,
) -> PriorState:
    """The prior state of n payments in canonical order, given the store's view before them.

    `columns` holds user_id, merchant_id, device_id and country of each payment. `adds`
    says which payments join the history for the later ones (False for payments already
    in the store, e.g. part of the loaded history, or scored while the store was down).
    """
    n = len(ts_ms)
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    weight = np.asarray(adds, dtype=np.float64)
    users = _Groups.of(columns["user_id"])
    merchants = _Groups.of(columns["merchant_id"])

    # The customer's recent events from the store that fall in each window of each payment.
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
    # The last earlier payment of the same customer that joined the history, if any.
    sorted_pos = np.where(weight[users.order] > 0, np.arange(n), -1)
    previous = np.maximum.accumulate(np.r_[-1, sorted_pos[:-1]]) if n else sorted_pos
    previous = np.where(previous >= users.start, previous, -1)
    previous_ts = np.where(previous >= 0, ts_ms[users.order][np.maximum(previous, 0)], -1)
    last_ts = np.maximum(base.user_last_ts, previous_ts[users.inverse])

    def seen_in_batch(values: Sequence[str]) -> np.ndarray:
        return _Groups.of(columns["user_id"], values).earlier_sum(weight) > 0

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


def batch_features(
    txns: Mapping[str, Sequence[object] | np.ndarray],
    adds: np.ndarray,
    base: HistoryBatch,
    spec: FeatureSpec,
) -> np.ndarray:
    """Features (rows x spec.features) of payments in canonical order; see the module doc.

    `txns` has ts_ms, amount, user_id, merchant_id, device_id, country and the categorical
    fields; a missing categorical value is the empty string, as in `online_features`.
    """
    ts = np.asarray(txns["ts_ms"], dtype=np.int64)
    amount = np.asarray(txns["amount"], dtype=np.float64)
    state = batch_prior_state(ts, amount, txns, adds, base)  # type: ignore[arg-type]
    cols: dict[str, Sequence[object] | np.ndarray] = {c: txns[c] for c in CATEGORICAL_FIELDS}
    cols["amount"] = amount
    return assemble(cols, ts, state, spec)
