"""Point-in-time fraud features: the one implementation used offline and online.

Every feature of a transaction is a function of the transaction itself and of a
`PriorState`: what was known about its user and merchant strictly before it.
Offline, `offline_prior_state` derives that state for a whole sorted history in a
few vectorized passes; online, the scoring service reads it from the online store
(`online_prior_state`). Both then call the same `assemble` to turn transaction and
state into the feature matrix, and both use the same `window_aggregates` and
`zscore_from_moments` maths, so training and serving cannot drift apart.

Point-in-time rules:
- "prior" means earlier in the canonical order (timestamp, then transaction id);
  a transaction never sees itself or anything after it.
- merchant fraud rates only count labels whose `label_timestamp` is strictly
  before the transaction; a label with no timestamp is assumed known
  `label_maturity_days` after its transaction.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from itertools import repeat

import numpy as np
import pandas as pd

MS_PER_HOUR = 3_600_000
MS_PER_DAY = 86_400_000
WINDOWS_MS: dict[str, int] = {"1h": MS_PER_HOUR, "24h": MS_PER_DAY, "7d": 7 * MS_PER_DAY}
MERCHANT_WINDOWS_MS: dict[str, int] = {"24h": MS_PER_DAY, "7d": 7 * MS_PER_DAY}
HISTORY_MS = max(WINDOWS_MS.values())

MIN_STD = 1e-3
ZSCORE_CAP = 50.0

CATEGORICAL_FIELDS: tuple[str, ...] = (
    "merchant_category",
    "currency",
    "device_type",
    "channel",
    "country",
)
MAX_VOCAB = 256


@dataclass(frozen=True)
class FeatureDef:
    """A feature, the group it belongs to, and the canonical fields it needs."""

    name: str
    group: str
    needs: tuple[str, ...]
    description: str


def _defs() -> tuple[FeatureDef, ...]:
    defs: list[FeatureDef] = [
        FeatureDef("amount", "transaction", ("amount",), "Transaction amount."),
        FeatureDef("log_amount", "transaction", ("amount",), "log(1 + amount)."),
    ]
    defs += [
        FeatureDef(f"{c}_code", "transaction", (c,), f"Vocabulary index of {c} (-1 unseen).")
        for c in CATEGORICAL_FIELDS
    ]
    for w in WINDOWS_MS:
        defs.append(
            FeatureDef(
                f"user_txn_count_{w}", "behavioral", ("user_id",), f"User's prior txns in {w}."
            )
        )
    for w in WINDOWS_MS:
        defs.append(
            FeatureDef(
                f"user_amount_sum_{w}",
                "behavioral",
                ("user_id", "amount"),
                f"Sum of the user's prior amounts in {w}.",
            )
        )
    defs += [
        FeatureDef(
            "user_amount_zscore",
            "behavioral",
            ("user_id", "amount"),
            "z-score of log amount against all the user's prior log amounts (0 below 2 priors).",
        ),
        FeatureDef("user_prior_txn_count", "behavioral", ("user_id",), "User's prior txns."),
        FeatureDef(
            "seconds_since_last_txn",
            "behavioral",
            ("user_id",),
            "Seconds since the user's previous transaction (-1 for the first).",
        ),
        FeatureDef(
            "is_new_device", "behavioral", ("user_id", "device_id"), "First use of this device."
        ),
        FeatureDef(
            "is_new_merchant",
            "behavioral",
            ("user_id", "merchant_id"),
            "First payment to this merchant.",
        ),
        FeatureDef(
            "is_new_country", "behavioral", ("user_id", "country"), "First txn from this country."
        ),
        FeatureDef("hour", "temporal", (), "Hour of day (UTC)."),
        FeatureDef("weekday", "temporal", (), "Day of week, Monday = 0."),
        FeatureDef("is_night", "temporal", (), "Between 00:00 and 05:59 UTC."),
        FeatureDef("is_weekend", "temporal", (), "Saturday or Sunday."),
    ]
    for w in MERCHANT_WINDOWS_MS:
        defs.append(
            FeatureDef(
                f"merchant_txn_count_{w}",
                "aggregation",
                ("merchant_id",),
                f"Merchant's prior txns in {w}.",
            )
        )
    defs += [
        FeatureDef(
            "merchant_labels_known",
            "aggregation",
            ("merchant_id", "is_fraud"),
            "Labels known for the merchant before this transaction.",
        ),
        FeatureDef(
            "merchant_fraud_rate",
            "aggregation",
            ("merchant_id", "is_fraud"),
            "Smoothed fraud rate of the merchant from labels known before this transaction.",
        ),
    ]
    return tuple(defs)


FEATURE_DEFS: tuple[FeatureDef, ...] = _defs()
GROUPS: tuple[str, ...] = ("transaction", "behavioral", "temporal", "aggregation")


@dataclass(frozen=True)
class FeatureConfig:
    """Which feature groups to compute, and the knobs of the label-aware aggregates."""

    transaction: bool = True
    behavioral: bool = True
    temporal: bool = True
    aggregation: bool = True
    label_maturity_days: float = 30.0
    merchant_rate_prior_strength: float = 20.0

    def enabled(self, group: str) -> bool:
        return bool(getattr(self, group))


@dataclass(frozen=True)
class FeatureSpec:
    """Everything needed to compute the same features again: stored with the feature set and
    with every model, and loaded by the scoring service."""

    config: FeatureConfig
    features: tuple[str, ...]
    skipped: dict[str, str]
    vocab: dict[str, tuple[str, ...]]
    fraud_rate_prior: float
    version: str = ""

    def to_json(self) -> str:
        payload = asdict(self)
        return json.dumps(payload, sort_keys=True, indent=2)

    @classmethod
    def from_json(cls, text: str) -> FeatureSpec:
        raw = json.loads(text)
        return cls(
            config=FeatureConfig(**raw["config"]),
            features=tuple(raw["features"]),
            skipped=dict(raw["skipped"]),
            vocab={k: tuple(v) for k, v in raw["vocab"].items()},
            fraud_rate_prior=float(raw["fraud_rate_prior"]),
            version=raw["version"],
        )

    def index(self, name: str) -> int:
        return self.features.index(name)


def _spec_version(spec: FeatureSpec) -> str:
    payload = asdict(spec)
    payload.pop("version")
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
    return digest[:16]


def build_feature_spec(frame: pd.DataFrame, config: FeatureConfig) -> FeatureSpec:
    """Choose the features this dataset supports and learn the categorical vocabularies.

    A feature whose group is switched off, or that needs a field the source lacks,
    is listed in `skipped` with the reason, so the UI and logs can say why.
    """
    available = set(frame.columns)
    features: list[str] = []
    skipped: dict[str, str] = {}
    for d in FEATURE_DEFS:
        missing = [f for f in d.needs if f not in available]
        if not config.enabled(d.group):
            skipped[d.name] = f"group '{d.group}' is switched off"
        elif missing:
            skipped[d.name] = f"source has no {', '.join(missing)}"
        else:
            features.append(d.name)
    vocab: dict[str, tuple[str, ...]] = {}
    for c in CATEGORICAL_FIELDS:
        if f"{c}_code" in features:
            counts = frame[c].astype(str).value_counts()
            vocab[c] = tuple(sorted(counts.index[:MAX_VOCAB].tolist()))
    prior = 0.01
    if "is_fraud" in available:
        labels = pd.to_numeric(frame["is_fraud"], errors="coerce").dropna()
        if len(labels):
            prior = float(labels.mean())
    spec = FeatureSpec(config, tuple(features), skipped, vocab, round(prior, 6))
    return FeatureSpec(**{**spec.__dict__, "version": _spec_version(spec)})


@dataclass
class PriorState:
    """What was known before each transaction, one entry per transaction.

    Offline this is derived from the full history; online it is read from the store.
    """

    user_counts: dict[str, np.ndarray] = field(default_factory=dict)
    user_sums: dict[str, np.ndarray] = field(default_factory=dict)
    user_n: np.ndarray | None = None
    user_log_sum: np.ndarray | None = None
    user_log_sumsq: np.ndarray | None = None
    user_last_ts: np.ndarray | None = None
    new_device: np.ndarray | None = None
    new_merchant: np.ndarray | None = None
    new_country: np.ndarray | None = None
    merchant_counts: dict[str, np.ndarray] = field(default_factory=dict)
    merchant_known: np.ndarray | None = None
    merchant_fraud: np.ndarray | None = None


def window_aggregates(
    ts: np.ndarray,
    values: np.ndarray,
    group_start: np.ndarray,
    windows: Mapping[str, int],
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Count and sum of the earlier rows of the same group inside each trailing window.

    Rows are sorted by group, then in canonical time order; `group_start[i]` is the
    index of the first row of row i's group. Row j counts for row i when
    `group_start[i] <= j < i` and `ts[j] >= ts[i] - window`. `values` is one value a row
    (n,) or several (n, k), summed column by column (each column exactly as alone).
    """
    n = len(ts)
    idx = np.arange(n)
    # ufunc methods rather than np.cumsum / np.searchsorted: the same maths, and on a live
    # transaction the wrappers cost more than the work.
    running = np.add.accumulate(values, axis=0, dtype=np.float64)
    csum = np.concatenate((np.zeros((1, *running.shape[1:])), running))
    # Each group's times are offset into a disjoint band so one searchsorted serves all groups.
    changes = (group_start[1:] != group_start[:-1]).astype(np.int64)
    group_id = np.add.accumulate(np.concatenate(([0], changes))) if n else idx
    base = ts.min() if n else 0
    span = (int(ts.max() - base) if n else 0) + max(windows.values()) + 1
    keys = group_id.astype(np.int64) * span + (ts - base)
    upto = csum[:-1]
    counts: dict[str, np.ndarray] = {}
    sums: dict[str, np.ndarray] = {}
    for name, width in windows.items():
        lo = np.maximum(keys.searchsorted(keys - width, side="left"), group_start)
        lo = np.minimum(lo, idx)
        counts[name] = (idx - lo).astype(np.float64)
        sums[name] = upto - csum[lo]
    return counts, sums


def zscore_from_moments(
    x: np.ndarray, n: np.ndarray, total: np.ndarray, total_sq: np.ndarray
) -> np.ndarray:
    """z-score of x against a history given by its count, sum and sum of squares."""
    safe_n = np.maximum(n, 1.0)
    mean = total / safe_n
    var = np.maximum(total_sq / safe_n - mean * mean, 0.0)
    std = np.sqrt(var)
    # A history of (nearly) equal amounts has no spread to measure against.
    ok = (n >= 2) & (std > MIN_STD)
    return np.clip(np.where(ok, (x - mean) / np.where(ok, std, 1.0), 0.0), -ZSCORE_CAP, ZSCORE_CAP)


def smoothed_rate(
    fraud: np.ndarray, known: np.ndarray, prior: float, strength: float
) -> np.ndarray:
    """Fraud rate shrunk towards the prior, so a merchant with few labels is not extreme."""
    return (fraud + strength * prior) / (known + strength)


def timestamps_ms(values: pd.Series | np.ndarray) -> np.ndarray:
    """UTC timestamps as int64 milliseconds since the epoch."""
    series = pd.to_datetime(pd.Series(values), utc=True)
    return (series.astype("int64") // 1_000_000).to_numpy(np.int64)


def label_known_ms(frame: pd.DataFrame, ts_ms: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """When each row's label became known (ms); rows without a label get int64 max."""
    never = np.iinfo(np.int64).max
    labels = pd.to_numeric(frame["is_fraud"], errors="coerce").to_numpy(np.float64)
    maturity = ts_ms + int(config.label_maturity_days * MS_PER_DAY)
    if "label_timestamp" in frame.columns:
        lt = pd.to_datetime(frame["label_timestamp"], utc=True)
        known = np.where(lt.isna(), maturity, lt.astype("int64").to_numpy() // 1_000_000)
    else:
        known = maturity
    return np.where(np.isnan(labels), never, known).astype(np.int64)


def _first_occurrence(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    pairs = pd.DataFrame({"a": a, "b": b})
    return (~pairs.duplicated()).to_numpy(np.float64)


def _codes(values: pd.Series) -> np.ndarray:
    return pd.factorize(values, sort=False)[0].astype(np.int64)


def offline_prior_state(frame: pd.DataFrame, spec: FeatureSpec) -> PriorState:
    """Derive every transaction's prior state from a history in canonical order."""
    feats = set(spec.features)
    state = PriorState()
    ts = timestamps_ms(frame["timestamp"])
    n = len(frame)
    if any(
        f.startswith("user_") or f.startswith("is_new") or f == "seconds_since_last_txn"
        for f in feats
    ):
        user = _codes(frame["user_id"])
        order = np.argsort(user, kind="stable")
        u_sorted = user[order]
        starts = np.r_[0, np.flatnonzero(u_sorted[1:] != u_sorted[:-1]) + 1]
        run_len = np.diff(np.r_[starts, n])
        group_start = np.repeat(starts, run_len)
        ts_u = ts[order]
        amount = frame["amount"].to_numpy(np.float64) if "amount" in frame else np.zeros(n)
        amt_u = amount[order]
        counts, sums = window_aggregates(ts_u, amt_u, group_start, WINDOWS_MS)
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        state.user_counts = {k: v[inverse] for k, v in counts.items()}
        state.user_sums = {k: v[inverse] for k, v in sums.items()}
        pos = np.arange(n) - group_start
        # Per-user running sums accumulate in the same order as the online store adds,
        # so offline and online moments agree to the last bit.
        log_u = np.log1p(amt_u)
        moments = pd.DataFrame({"g": group_start, "x": log_u, "xx": log_u * log_u})
        running = moments.groupby("g", sort=False)[["x", "xx"]].cumsum().to_numpy()
        idx = np.arange(n)
        state.user_n = pos.astype(np.float64)[inverse]
        state.user_log_sum = (running[:, 0] - log_u)[inverse]
        state.user_log_sumsq = (running[:, 1] - log_u * log_u)[inverse]
        prev = np.where(pos > 0, ts_u[np.maximum(idx - 1, 0)], -1)
        state.user_last_ts = prev[inverse]
        for name, col in (
            ("new_device", "device_id"),
            ("new_merchant", "merchant_id"),
            ("new_country", "country"),
        ):
            if f"is_{name}" in feats:
                setattr(state, name, _first_occurrence(user, _codes(frame[col])))
    if any(f.startswith("merchant_") for f in feats):
        merchant = _codes(frame["merchant_id"])
        order = np.argsort(merchant, kind="stable")
        m_sorted = merchant[order]
        starts = np.r_[0, np.flatnonzero(m_sorted[1:] != m_sorted[:-1]) + 1]
        group_start = np.repeat(starts, np.diff(np.r_[starts, n]))
        counts, _ = window_aggregates(ts[order], np.zeros(n), group_start, MERCHANT_WINDOWS_MS)
        inverse = np.empty(n, dtype=np.int64)
        inverse[order] = np.arange(n)
        state.merchant_counts = {k: v[inverse] for k, v in counts.items()}
        if "merchant_fraud_rate" in feats:
            known_at = label_known_ms(frame, ts, spec.config)
            labels = pd.to_numeric(frame["is_fraud"], errors="coerce").fillna(0).to_numpy()
            has = known_at != np.iinfo(np.int64).max
            ev_m, ev_t, ev_f = merchant[has], known_at[has], labels[has].astype(np.float64)
            base = min(int(ts.min()), int(ev_t.min()) if len(ev_t) else int(ts.min()))
            top = max(int(ts.max()), int(ev_t.max()) if len(ev_t) else int(ts.max()))
            span = top - base + 2
            ev_keys = ev_m.astype(np.int64) * span + (ev_t - base)
            ev_order = np.argsort(ev_keys, kind="stable")
            ev_keys = ev_keys[ev_order]
            cf = np.concatenate(([0.0], np.cumsum(ev_f[ev_order])))
            lower = np.searchsorted(ev_keys, merchant * span, side="left")
            upper = np.searchsorted(ev_keys, merchant * span + (ts - base), side="left")
            state.merchant_known = (upper - lower).astype(np.float64)
            state.merchant_fraud = cf[upper] - cf[lower]
    return state


@lru_cache(maxsize=64)
def _vocab_index(vocab: tuple[str, ...]) -> dict[str, int]:
    return {value: i for i, value in enumerate(vocab)}


def encode_categories(values: Sequence[str] | pd.Series, vocab: Sequence[str]) -> np.ndarray:
    """Index of each value in the vocabulary, -1 for a value unseen in training.

    A value is looked up as its string (`str(value)`, as `astype(str)` makes it), so None,
    NaN and numbers find their training spelling.
    """
    if isinstance(values, pd.Series):
        if len(values) > 16:
            # A whole history (offline): on a long Series a Categorical is as fast as a dict
            # lookup a row, and the offline path stays as it was.
            cat = pd.Categorical(
                pd.Series(values, dtype="object").astype(str), categories=list(vocab)
            )
            return cat.codes.astype(np.float64)
        values = values.tolist()
    # Live transactions come as lists: a dict lookup a value costs far less than building
    # a Series and a Categorical (~1 ms at 1,000 values, ~150 us at one).
    index = _vocab_index(tuple(vocab))
    codes = list(map(index.get, values, repeat(-1)))
    if -1 in codes:
        # Only a value that is not a string can still match through str(): look again.
        codes = [index.get(str(v), -1) if c < 0 else c for c, v in zip(codes, values, strict=True)]
    return np.array(codes, dtype=np.float64)


@lru_cache(maxsize=64)
def _column_plan(features: tuple[str, ...]) -> tuple[tuple[int, str, str], ...]:
    """(position, kind, argument) of each feature, resolved once per feature list."""
    plan: list[tuple[int, str, str]] = []
    for j, name in enumerate(features):
        if name.endswith("_code"):
            plan.append((j, "code", name[: -len("_code")]))
        elif name.startswith(("user_txn_count_", "user_amount_sum_", "merchant_txn_count_")):
            plan.append((j, name.rsplit("_", 1)[0], name.rsplit("_", 1)[1]))
        elif name in _SIMPLE_COLUMNS:
            plan.append((j, name, ""))
        else:
            raise KeyError(f"unknown feature {name!r}")
    return tuple(plan)


_SIMPLE_COLUMNS = frozenset(
    {
        "amount",
        "log_amount",
        "user_amount_zscore",
        "user_prior_txn_count",
        "seconds_since_last_txn",
        "is_new_device",
        "is_new_merchant",
        "is_new_country",
        "hour",
        "weekday",
        "is_night",
        "is_weekend",
        "merchant_labels_known",
        "merchant_fraud_rate",
    }
)


def assemble(
    columns: Mapping[str, np.ndarray | pd.Series | Sequence],
    ts_ms: np.ndarray,
    state: PriorState,
    spec: FeatureSpec,
) -> np.ndarray:
    """The feature matrix (rows x spec.features, float64) from transactions and prior state."""
    n = len(ts_ms)
    out = np.empty((n, len(spec.features)), dtype=np.float64)
    amount = np.asarray(columns["amount"], dtype=np.float64) if "amount" in columns else np.zeros(n)
    hours = (ts_ms // MS_PER_HOUR) % 24
    # 1970-01-01 was a Thursday, which is weekday 3 when Monday is 0.
    weekday = (ts_ms // MS_PER_DAY + 3) % 7
    for j, kind, arg in _column_plan(spec.features):
        if kind == "amount":
            col = amount
        elif kind == "log_amount":
            col = np.log1p(amount)
        elif kind == "code":
            col = encode_categories(columns[arg], spec.vocab[arg])
        elif kind == "user_txn_count":
            col = state.user_counts[arg]
        elif kind == "user_amount_sum":
            col = state.user_sums[arg]
        elif kind == "user_amount_zscore":
            col = zscore_from_moments(
                np.log1p(amount), state.user_n, state.user_log_sum, state.user_log_sumsq
            )
        elif kind == "user_prior_txn_count":
            col = state.user_n
        elif kind == "seconds_since_last_txn":
            last = state.user_last_ts
            col = np.where(last >= 0, (ts_ms - last) / 1000.0, -1.0)
        elif kind == "is_new_device":
            col = state.new_device
        elif kind == "is_new_merchant":
            col = state.new_merchant
        elif kind == "is_new_country":
            col = state.new_country
        elif kind == "hour":
            col = hours
        elif kind == "weekday":
            col = weekday
        elif kind == "is_night":
            col = hours < 6
        elif kind == "is_weekend":
            col = weekday >= 5
        elif kind == "merchant_txn_count":
            col = state.merchant_counts[arg]
        elif kind == "merchant_labels_known":
            col = state.merchant_known
        else:  # merchant_fraud_rate
            col = smoothed_rate(
                state.merchant_fraud,
                state.merchant_known,
                spec.fraud_rate_prior,
                spec.config.merchant_rate_prior_strength,
            )
        out[:, j] = col
    return out


def compute_features(frame: pd.DataFrame, spec: FeatureSpec) -> pd.DataFrame:
    """Point-in-time features for every transaction of a history.

    `frame` must be in canonical order (`schema.sort_canonical`). The result has one
    row per transaction, `transaction_id` and `timestamp` first, then `spec.features`.
    """
    ts = timestamps_ms(frame["timestamp"])
    state = offline_prior_state(frame, spec)
    cols = {c: frame[c] for c in (*CATEGORICAL_FIELDS, "amount") if c in frame.columns}
    matrix = assemble(cols, ts, state, spec)
    out = pd.DataFrame(matrix, columns=list(spec.features))
    out.insert(0, "timestamp", frame["timestamp"].reset_index(drop=True))
    out.insert(0, "transaction_id", frame["transaction_id"].reset_index(drop=True))
    return out


@dataclass
class UserHistory:
    """What the online store knows of one user before a transaction."""

    recent_ts: np.ndarray  # int64 ms of the user's transactions in the last 7 days, ascending
    recent_amount: np.ndarray
    n: float = 0.0
    log_sum: float = 0.0
    log_sumsq: float = 0.0
    last_ts: int = -1
    seen_device: bool = False
    seen_merchant: bool = False
    seen_country: bool = False


@dataclass
class MerchantHistory:
    """What the online store knows of one merchant before a transaction."""

    counts: dict[str, float]  # prior transactions in each MERCHANT_WINDOWS_MS window
    labels_known: float = 0.0
    labels_fraud: float = 0.0


def online_prior_state(
    ts_ms: int, amount: float, user: UserHistory, merchant: MerchantHistory
) -> PriorState:
    """The prior state of one live transaction, from what the store holds."""
    hist_ts = np.concatenate((user.recent_ts.astype(np.int64, copy=False), [ts_ms]))
    hist_amt = np.concatenate((user.recent_amount.astype(np.float64, copy=False), [amount]))
    keep = hist_ts >= ts_ms - HISTORY_MS
    hist_ts, hist_amt = hist_ts[keep], hist_amt[keep]
    counts, sums = window_aggregates(
        hist_ts, hist_amt, np.zeros(len(hist_ts), dtype=np.int64), WINDOWS_MS
    )

    def one(x: float) -> np.ndarray:
        return np.array([x], dtype=np.float64)

    return PriorState(
        user_counts={k: v[-1:] for k, v in counts.items()},
        user_sums={k: v[-1:] for k, v in sums.items()},
        user_n=one(user.n),
        user_log_sum=one(user.log_sum),
        user_log_sumsq=one(user.log_sumsq),
        user_last_ts=np.array([user.last_ts], dtype=np.int64),
        new_device=one(0.0 if user.seen_device else 1.0),
        new_merchant=one(0.0 if user.seen_merchant else 1.0),
        new_country=one(0.0 if user.seen_country else 1.0),
        merchant_counts={k: one(v) for k, v in merchant.counts.items()},
        merchant_known=one(merchant.labels_known),
        merchant_fraud=one(merchant.labels_fraud),
    )


def online_features(
    txn: Mapping[str, object], user: UserHistory, merchant: MerchantHistory, spec: FeatureSpec
) -> np.ndarray:
    """Features of one live transaction, in spec order: the same `assemble` as offline."""
    ts = int(txn["ts_ms"])  # type: ignore[arg-type]
    amount = float(txn["amount"])  # type: ignore[arg-type]
    state = online_prior_state(ts, amount, user, merchant)
    cols: dict[str, list[object]] = {}
    for c in CATEGORICAL_FIELDS:
        value = txn.get(c)
        cols[c] = ["" if value is None else value]
    cols["amount"] = [amount]
    return assemble(cols, np.array([ts], dtype=np.int64), state, spec)[0]
