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

Cost. Batches run from one payment to 10,000, so the path avoids pandas (tens of
microseconds a call whatever the size): keys are grouped with a dict (`_first_rows`),
everything else is a fixed number of numpy calls. A batch in which no customer and no
merchant comes twice, the usual case for concurrent single payments, needs nothing but
the store's view; otherwise customers and merchants are grouped in one pass, and the
three first-use flags in another. tests/test_live_batch.py holds the first, pandas-based
implementation as the oracle: the results are bitwise equal to it (every float sum adds
the same numbers in the same order).
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

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


def _first_rows(keys: Iterable[Hashable], n: int) -> tuple[np.ndarray, int]:
    """Per row, the row its key first appears at, and how many distinct keys there are.

    Ordering rows by this gives the groups in order of first appearance, as
    `pd.factorize(sort=False)` codes do, at a dict lookup a row instead of pandas' fixed
    cost of tens of microseconds a call.
    """
    first: dict[Hashable, int] = {}
    rows = np.fromiter(map(first.setdefault, keys, range(n)), dtype=np.int64, count=n)
    return rows, len(first)


def _earlier_added(codes: np.ndarray, adds: np.ndarray) -> np.ndarray:
    """Per row, whether an earlier row with the same code (a small int) joined the history."""
    rows = np.arange(len(codes))
    first_added = np.full(int(codes.max()) + 1 if len(codes) else 0, len(codes), dtype=np.int64)
    np.minimum.at(first_added, codes[adds], rows[adds])
    return first_added[codes] < rows


@dataclass(frozen=True)
class _Groups:
    """Rows grouped by a key, keeping canonical order inside each group."""

    order: np.ndarray  # positions sorted by group, then canonical order
    start: np.ndarray  # for each sorted position, the sorted position its group starts at
    inverse: np.ndarray  # sorted position of each row

    @classmethod
    def of(cls, first_rows: np.ndarray) -> _Groups:
        """Rows with equal `first_rows` (see `_first_rows`) as groups, in that order."""
        n = len(first_rows)
        order = first_rows.argsort(kind="stable")
        sorted_keys = first_rows[order]
        positions = np.arange(n)
        opens = np.concatenate(([True], sorted_keys[1:] != sorted_keys[:-1]))
        start = np.maximum.accumulate(np.where(opens, positions, 0)) if n else positions
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = positions
        return cls(order, start, inverse)

    def earlier_sum(self, values: np.ndarray) -> np.ndarray:
        """Per row, the sum of `values` ((n,) or (n, k)) over the earlier rows of its group."""
        running = np.cumsum(values[self.order], axis=0, dtype=np.float64)
        csum = np.concatenate((np.zeros((1, *running.shape[1:])), running))
        return (csum[:-1] - csum[self.start])[self.inverse]

    def earlier_windows(
        self, ts: np.ndarray, values: np.ndarray, windows: Mapping[str, int]
    ) -> dict[str, np.ndarray]:
        """Per row and window, the sum of `values` ((n,) or (n, k)) over the group's earlier
        rows in it."""
        _, sums = window_aggregates(ts[self.order], values[self.order], self.start, windows)
        return {k: v[self.inverse] for k, v in sums.items()}


def _stored_windows(
    ts_ms: np.ndarray, base: HistoryBatch
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Count and amount sum of the store's recent events of each payment in each window."""
    n = len(ts_ms)
    if not len(base.event_row):
        zeros = np.zeros(n, dtype=np.float64)
        return dict.fromkeys(WINDOWS_MS, zeros), dict.fromkeys(WINDOWS_MS, zeros)
    event_age = ts_ms[base.event_row] - base.event_ts
    counts: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    for name, width in WINDOWS_MS.items():
        inside = (event_age <= width).astype(np.float64)
        counts[name] = np.bincount(base.event_row, weights=inside, minlength=n)
        sums[name] = np.bincount(base.event_row, weights=inside * base.event_amount, minlength=n)
    return counts, sums


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

    Only a customer or merchant met twice in the batch changes anything: without one, the
    state is the store's view as it is, which is what the general path gives too (it adds
    exact zeros), so most small batches skip it.
    """
    n = len(ts_ms)
    ts_ms = np.asarray(ts_ms, dtype=np.int64)
    amount = np.asarray(amount, dtype=np.float64)
    adds = np.asarray(adds, dtype=bool)
    user_counts, user_sums = _stored_windows(ts_ms, base)
    state = PriorState(
        user_counts=user_counts,
        user_sums=user_sums,
        user_n=np.asarray(base.user_n, dtype=np.float64),
        user_log_sum=np.asarray(base.user_log_sum, dtype=np.float64),
        user_log_sumsq=np.asarray(base.user_log_sumsq, dtype=np.float64),
        user_last_ts=np.maximum(base.user_last_ts, -1),
        new_device=(~base.seen_device).astype(float),
        new_merchant=(~base.seen_merchant).astype(float),
        new_country=(~base.seen_country).astype(float),
        merchant_counts={
            k: np.asarray(base.merchant_counts[k], dtype=np.float64) for k in MERCHANT_WINDOWS_MS
        },
        merchant_known=base.merchant_known,
        merchant_fraud=base.merchant_fraud,
    )
    user_rows, n_users = _first_rows(columns["user_id"], n)
    merchant_rows, n_merchants = _first_rows(columns["merchant_id"], n)
    if n_users < n or n_merchants < n:
        _add_batch(state, ts_ms, amount, adds, base, user_rows, merchant_rows)
    if n_users < n:
        _add_first_uses(state, columns, adds, base, user_rows, merchant_rows)
    return state


# Every width of a customer or merchant window, each searched once.
_WIDTHS: dict[str, int] = {
    str(width): width for width in sorted({*WINDOWS_MS.values(), *MERCHANT_WINDOWS_MS.values()})
}


def _add_batch(
    state: PriorState,
    ts_ms: np.ndarray,
    amount: np.ndarray,
    adds: np.ndarray,
    base: HistoryBatch,
    user_rows: np.ndarray,
    merchant_rows: np.ndarray,
) -> None:
    """Count in `state` the batch's earlier payments of each payment's customer and merchant.

    Customers and merchants are grouped in one pass over 2n rows, the customers' groups
    first, so their sums add up exactly as in a grouping of customers alone (the merchants'
    are counts, exact anyway). Sums sharing a grouping are taken together, column by column.
    """
    n = len(ts_ms)
    groups = _Groups.of(np.concatenate((user_rows, n + merchant_rows)))
    weight = adds.astype(np.float64)
    values = np.empty((2 * n, 2), dtype=np.float64)
    values[:n, 0] = values[n:, 0] = weight
    values[:n, 1] = values[n:, 1] = amount * weight
    sums = groups.earlier_windows(np.concatenate((ts_ms, ts_ms)), values, _WIDTHS)
    for k, width in WINDOWS_MS.items():
        in_window = sums[str(width)]
        state.user_counts[k] = state.user_counts[k] + in_window[:n, 0]
        state.user_sums[k] = state.user_sums[k] + in_window[:n, 1]
    for k, width in MERCHANT_WINDOWS_MS.items():
        state.merchant_counts[k] = base.merchant_counts[k] + sums[str(width)][n:, 0]
    # The customers' groups are the first n sorted positions.
    users = _Groups(groups.order[:n], groups.start[:n], groups.inverse[:n])
    log_amount = np.log1p(amount)
    moments = np.empty((n, 3), dtype=np.float64)
    moments[:, 0] = weight
    moments[:, 1] = log_amount * weight
    moments[:, 2] = log_amount * log_amount * weight
    moments = users.earlier_sum(moments)
    state.user_n = base.user_n + moments[:, 0]
    state.user_log_sum = base.user_log_sum + moments[:, 1]
    state.user_log_sumsq = base.user_log_sumsq + moments[:, 2]
    # The last earlier payment of the same customer that joined the history, if any.
    sorted_pos = np.where(weight[users.order] > 0, np.arange(n), -1)
    previous = np.maximum.accumulate(np.concatenate(([-1], sorted_pos[:-1])))
    previous = np.where(previous >= users.start, previous, -1)
    previous_ts = np.where(previous >= 0, ts_ms[users.order][np.maximum(previous, 0)], -1)
    state.user_last_ts = np.maximum(base.user_last_ts, previous_ts[users.inverse])


def _add_first_uses(
    state: PriorState,
    columns: Mapping[str, Sequence[str]],
    adds: np.ndarray,
    base: HistoryBatch,
    user_rows: np.ndarray,
    merchant_rows: np.ndarray,
) -> None:
    """Clear in `state` the first-use flags of what the customer used earlier in the batch.

    The three flags are one grouping of 3n keys: flag f of a payment with customer row u
    and device (merchant, country) row v has key (f * n + u) * n + v.
    """
    n = len(user_rows)
    used = np.empty((3, n), dtype=np.int64)
    used[0] = _first_rows(columns["device_id"], n)[0]
    used[1] = merchant_rows
    used[2] = _first_rows(columns["country"], n)[0]
    keys = ((np.arange(0, 3 * n, n)[:, np.newaxis] + user_rows) * n + used).ravel()
    # Keys are codes below 3n^2 already; past a few thousand, compact them.
    codes = keys if n <= 32 else np.unique(keys, return_inverse=True)[1]
    in_batch = _earlier_added(codes, np.concatenate((adds, adds, adds))).reshape(3, n)
    seen = np.array([base.seen_device, base.seen_merchant, base.seen_country], dtype=bool)
    state.new_device, state.new_merchant, state.new_country = (~(seen | in_batch)).astype(float)


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
