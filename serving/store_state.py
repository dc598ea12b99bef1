"""The online state in memory: every customer's and merchant's history, ready to read.

`StoreState` holds exactly what live features need (see `fraud_assets.core.features`):

* per customer: the recent payments (last 7 days and an hour, in canonical order), the
  lifetime count and log-amount moments, the time of the last payment, and the devices,
  merchants and countries seen;
* per merchant: the times of its recent payments (the 24 h and 7 d volumes are two binary
  searches) and the times its fraud labels became known (labels known before a payment
  are another binary search).

Reading a payment's history is then a few dictionary lookups and binary searches, and
adding a payment is O(log n) plus an append. The SQLite store keeps one `StoreState` per
worker process as a cache of its file: it is loaded once from the file and then follows
every payment and label any worker commits, in commit order, so all workers see the same
state (`serving.sqlite_store`).
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Sequence

import numpy as np

from fraud_assets.core.features import (
    HISTORY_MS,
    MERCHANT_WINDOWS_MS,
    MS_PER_HOUR,
    MerchantHistory,
    UserHistory,
)
from fraud_assets.core.live_batch import HistoryBatch
from serving.store_api import StoreTxn, empty_history

# Recent payments are kept an hour past the longest window; a merchant's list is trimmed
# an hour at a time, so a busy merchant's list is not shifted on every payment.
KEEP_MS = HISTORY_MS + MS_PER_HOUR
_MERCHANT_TRIM_SLACK_MS = MS_PER_HOUR
_WINDOWS = tuple(MERCHANT_WINDOWS_MS.items())
_WIDTHS = tuple(MERCHANT_WINDOWS_MS.values())


class UserState:
    """One customer: recent payments as (ts_ms, transaction_id, amount), sorted."""

    __slots__ = (
        "countries",
        "devices",
        "events",
        "last_ts",
        "log_sum",
        "log_sumsq",
        "merchants",
        "n",
    )

    def __init__(self) -> None:
        self.n = 0.0
        self.log_sum = 0.0
        self.log_sumsq = 0.0
        self.last_ts = -1
        self.events: list[tuple[int, str, float]] = []
        self.devices: set[str] = set()
        self.merchants: set[str] = set()
        self.countries: set[str] = set()

    def recent(self, ts: int) -> list[tuple[int, str, float]]:
        """The payments of the last 7 days up to and including `ts`, in canonical order."""
        events = self.events
        lo = bisect_left(events, (ts - HISTORY_MS,))
        hi = bisect_left(events, (ts + 1,), lo)
        return events[lo:hi]


class MerchantState:
    """One merchant: sorted payment times and sorted times its labels became known."""

    __slots__ = ("events", "fraud", "known")

    def __init__(self) -> None:
        self.events: list[int] = []
        self.known: list[int] = []  # every label
        self.fraud: list[int] = []  # the fraud labels only

    def window_counts(self, ts: int) -> list[int]:
        """Payments in each window [ts - width, ts], both ends included, in window order."""
        events = self.events
        hi = bisect_right(events, ts)
        return [hi - bisect_left(events, ts - width, 0, hi) for width in _WIDTHS]

    def counts(self, ts: int) -> dict[str, float]:
        """`window_counts` by window name."""
        return {
            name: float(count)
            for (name, _), count in zip(_WINDOWS, self.window_counts(ts), strict=True)
        }


class StoreState:
    """Every customer and merchant the store knows, updated payment by payment."""

    def __init__(self) -> None:
        self.users: dict[str, UserState] = {}
        self.merchants: dict[str, MerchantState] = {}

    def user(self, user_id: str) -> UserState:
        state = self.users.get(user_id)
        if state is None:
            state = self.users[user_id] = UserState()
        return state

    def merchant(self, merchant_id: str) -> MerchantState:
        state = self.merchants.get(merchant_id)
        if state is None:
            state = self.merchants[merchant_id] = MerchantState()
        return state

    def add_payment(
        self,
        transaction_id: str,
        user_id: str,
        merchant_id: str,
        ts: int,
        amount: float,
        log_amount: float,
        device_id: str,
        country: str,
    ) -> None:
        """A scored payment joins its customer's and merchant's history.

        The lifetime moments are running IEEE double sums in commit order, like the offline
        cumulative sums in canonical order, so both agree to the last bit.
        """
        user = self.user(user_id)
        user.n += 1.0
        user.log_sum += log_amount
        user.log_sumsq += log_amount * log_amount
        if ts > user.last_ts:
            user.last_ts = ts
        user.devices.add(device_id)
        user.merchants.add(merchant_id)
        user.countries.add(country)
        events = user.events
        entry = (ts, transaction_id, amount)
        if not events or events[-1] < entry:
            events.append(entry)
        else:
            insort(events, entry)
        cut = ts - KEEP_MS
        if events[0][0] < cut:
            del events[: bisect_left(events, (cut,))]
        times = self.merchant(merchant_id).events
        if not times or times[-1] <= ts:
            times.append(ts)
        else:
            insort(times, ts)
        if times[0] < cut - _MERCHANT_TRIM_SLACK_MS:
            del times[: bisect_left(times, cut)]

    def add_label(self, merchant_id: str, known_at: int, is_fraud: bool) -> None:
        merchant = self.merchant(merchant_id)
        insort(merchant.known, known_at)
        if is_fraud:
            insort(merchant.fraud, known_at)

    def remove_label(self, merchant_id: str, known_at: int, is_fraud: bool) -> None:
        """Take back a label that a later label of the same transaction replaces."""
        merchant = self.merchant(merchant_id)
        for times, applies in ((merchant.known, True), (merchant.fraud, is_fraud)):
            if applies:
                at = bisect_left(times, known_at)
                if at < len(times) and times[at] == known_at:
                    del times[at]

    def sort_labels(self) -> None:
        """Order label times after a bulk fill with `MerchantState.known/fraud.append`."""
        for merchant in self.merchants.values():
            merchant.known.sort()
            merchant.fraud.sort()

    def history(self, txn: StoreTxn) -> tuple[UserHistory, MerchantHistory]:
        """What was known of the payment's customer and merchant, as of its time."""
        user = self.users.get(txn.user_id)
        merchant = self.merchants.get(txn.merchant_id)
        if user is None and merchant is None:
            return empty_history()
        ts = txn.ts_ms
        if user is None:
            user_history, _ = empty_history()
        else:
            recent = user.recent(ts)
            user_history = UserHistory(
                recent_ts=np.array([e[0] for e in recent], dtype=np.int64),
                recent_amount=np.array([e[2] for e in recent], dtype=np.float64),
                n=user.n,
                log_sum=user.log_sum,
                log_sumsq=user.log_sumsq,
                last_ts=user.last_ts,
                seen_device=txn.device_id in user.devices,
                seen_merchant=txn.merchant_id in user.merchants,
                seen_country=txn.country in user.countries,
            )
        if merchant is None:
            _, merchant_history = empty_history()
        else:
            merchant_history = MerchantHistory(
                merchant.counts(ts),
                float(bisect_left(merchant.known, ts)),
                float(bisect_left(merchant.fraud, ts)),
            )
        return user_history, merchant_history

    def history_batch(self, txns: Sequence[StoreTxn]) -> HistoryBatch:
        """`history` of many payments at once, as columns (see `HistoryBatch`).

        Values are gathered in Python lists and turned into arrays once: writing numpy
        elements one by one costs ~0.1 µs each, and a payment has a dozen of them.
        """
        n = len(txns)
        zero_user = (0.0, 0.0, 0.0, -1, False, False, False)
        zero_merchant = (0,) * (len(_WINDOWS) + 2)
        user_rows: list[tuple[float, float, float, int, bool, bool, bool]] = []
        merchant_rows: list[tuple[int, ...]] = []
        event_row: list[int] = []
        event_ts: list[int] = []
        event_amount: list[float] = []
        users, merchants = self.users, self.merchants
        for i, txn in enumerate(txns):
            ts = txn.ts_ms
            user = users.get(txn.user_id)
            if user is None:
                user_rows.append(zero_user)
            else:
                user_rows.append(
                    (
                        user.n,
                        user.log_sum,
                        user.log_sumsq,
                        user.last_ts,
                        txn.device_id in user.devices,
                        txn.merchant_id in user.merchants,
                        txn.country in user.countries,
                    )
                )
                recent = user.recent(ts)
                if recent:
                    event_row += [i] * len(recent)
                    event_ts += [e[0] for e in recent]
                    event_amount += [e[2] for e in recent]
            merchant = merchants.get(txn.merchant_id)
            if merchant is None:
                merchant_rows.append(zero_merchant)
            else:
                merchant_rows.append(
                    (
                        *merchant.window_counts(ts),
                        bisect_left(merchant.known, ts),
                        bisect_left(merchant.fraud, ts),
                    )
                )
        user_cols = list(zip(*user_rows, strict=True)) if n else [()] * 7
        merchant_cols = (
            np.array(merchant_rows, dtype=np.float64).reshape(n, len(_WINDOWS) + 2).T.copy()
        )
        seen = np.array(user_cols[4:], dtype=bool).reshape(3, n)
        return HistoryBatch(
            user_n=np.array(user_cols[0], dtype=np.float64),
            user_log_sum=np.array(user_cols[1], dtype=np.float64),
            user_log_sumsq=np.array(user_cols[2], dtype=np.float64),
            user_last_ts=np.array(user_cols[3], dtype=np.int64),
            seen_device=seen[0],
            seen_merchant=seen[1],
            seen_country=seen[2],
            merchant_counts={name: merchant_cols[k] for k, (name, _) in enumerate(_WINDOWS)},
            merchant_known=merchant_cols[len(_WINDOWS)],
            merchant_fraud=merchant_cols[len(_WINDOWS) + 1],
            event_row=np.array(event_row, dtype=np.int64),
            event_ts=np.array(event_ts, dtype=np.int64),
            event_amount=np.array(event_amount, dtype=np.float64),
        )
