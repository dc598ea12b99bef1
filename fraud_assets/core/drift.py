"""Data drift between a reference window (what the champion was trained on) and a current one.

Every feature gets a status:

* ``OK``: the current distribution is, for practical purposes, the one the model learned from.
* ``WARNING``: a moderate but real shift (PSI >= 0.1, or KS D >= 0.1 for numerics). Worth a
  look; the model usually still works, but check performance once labels arrive.
* ``CRITICAL``: a large shift (PSI >= 0.2). The model is scoring inputs unlike its training
  data; expect degraded or miscalibrated scores and consider retraining.
* ``INSUFFICIENT_DATA``: fewer than ``min_rows`` rows on a side. Nothing can be said, and such
  a feature never raises an alert.

Statuses are driven by effect sizes, not p-values. With a million rows a p-value is ~0 for a
shift nobody would care about (a mean moving by 1% of a standard deviation), so a p-value
can only *veto* a status: a large PSI measured on a few hundred rows that sampling noise could
explain (p >= ``alpha``) stays OK. The p-values are still reported for context.

Numeric features are binned on reference deciles (outer bins open-ended, so values beyond the
training range land in the first or last bin); categorical and low-cardinality ones
(``*_code``, ``is_*``, ``hour``, ``weekday``, or at most 20 distinct reference values) use one
bin per reference category plus one "other" bin for categories never seen in the reference.
Missing values have a bin of their own, so a rise in missing values is drift too.

`evidently_report` renders the same comparison with Evidently for humans; the authoritative
statuses are the ones computed here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from fraud_assets.core.render import json_safe, markdown_table

OK = "OK"
WARNING = "WARNING"
CRITICAL = "CRITICAL"
INSUFFICIENT_DATA = "INSUFFICIENT_DATA"
_RANK = {INSUFFICIENT_DATA: -1, OK: 0, WARNING: 1, CRITICAL: 2}

NUMERIC = "numeric"
CATEGORICAL = "categorical"
_CATEGORICAL_NAMES = frozenset({"hour", "weekday"})
_MAX_CATEGORY_BINS = 50


# Left out of drift by default, because they differ between periods by construction:
# lifetime counters only grow, a one-day window has one weekday, and a merchant's rolling
# volume is nearly constant within a day, so a one-day window holds one value per merchant
# (a measure of merchant mix, which merchant_category_code and the score already track).
NOT_COMPARABLE: tuple[str, ...] = (
    "user_prior_txn_count",
    "merchant_labels_known",
    "merchant_fraud_rate",
    "merchant_txn_count_24h",
    "merchant_txn_count_7d",
    "weekday",
    "is_weekend",
)


def worst_status(statuses: Iterable[str]) -> str:
    """The most severe status; INSUFFICIENT_DATA only when nothing else was measured."""
    ranked = sorted(statuses, key=lambda s: _RANK[s])
    return ranked[-1] if ranked else INSUFFICIENT_DATA


@dataclass(frozen=True)
class DriftThresholds:
    """Where drift starts to matter.

    Attributes:
        psi_warning: PSI at which a feature is WARNING. 0.1 is the industry rule of thumb for
            "some shift".
        psi_critical: PSI at which a feature is CRITICAL ("major shift", retrain territory).
        ks_warning: KS statistic D (largest gap between the two CDFs) at which a numeric
            feature is at least WARNING, catching shape changes that deciles blur.
        alpha: Significance a shift must also reach to count. It only protects small samples
            from noise; at large volumes every p-value is tiny and effect sizes decide.
        min_rows: Fewer rows than this on either side gives INSUFFICIENT_DATA.
        min_critical_features: CRITICAL features needed for an overall CRITICAL; with fewer,
            the overall status is WARNING.
        n_bins: Quantile bins for numeric PSI (edges deduplicated for tied values).
        epsilon: Added to every bin share so that an empty bin gives a large, finite PSI.
        max_categories: Distinct reference values up to which a numeric column is treated
            as categorical.
        ks_sample: Rows per side used for the KS test (PSI always uses every row); a random
            sample of this size estimates D to about +-0.003.
        label_rate_warning: Relative change of the fraud rate (0.25 = +-25%) for a WARNING.
        label_rate_critical: Relative change of the fraud rate for a CRITICAL.
        seed: Seed of the KS sampling, so reruns give identical numbers.
    """

    psi_warning: float = 0.1
    psi_critical: float = 0.2
    ks_warning: float = 0.1
    alpha: float = 0.01
    min_rows: int = 200
    min_critical_features: int = 1
    n_bins: int = 10
    epsilon: float = 1e-4
    max_categories: int = 20
    ks_sample: int = 200_000
    label_rate_warning: float = 0.25
    label_rate_critical: float = 0.5
    seed: int = 0


@dataclass
class FeatureDrift:
    """Drift of one feature (or of the model score). p-values are context, not the verdict."""

    feature: str
    kind: str
    psi: float
    status: str
    reason: str
    n_reference: int
    n_current: int
    reference_mean: float | None = None
    current_mean: float | None = None
    ks_stat: float | None = None
    ks_pvalue: float | None = None
    chi2_pvalue: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in asdict(self).items()}


@dataclass
class LabelRateDrift:
    """Change of the fraud rate between the windows, with a two-proportion z-test.

    Recent labels are immature (chargebacks take weeks), so a current rate below the
    reference rate is often just missing labels rather than less fraud.
    """

    reference_rate: float
    current_rate: float
    relative_change: float
    z: float
    pvalue: float
    n_reference: int
    n_current: int
    status: str
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in asdict(self).items()}


@dataclass
class DriftResult:
    """Per-feature drift plus an overall verdict.

    `status` summarises the input features only; `score_drift` and `label_rate_drift` carry
    their own status so an alert can say which signal moved.
    """

    features: list[FeatureDrift]
    status: str
    worst_features: list[str]
    n_reference: int
    n_current: int
    thresholds: DriftThresholds
    score_drift: FeatureDrift | None = None
    label_rate_drift: LabelRateDrift | None = None
    n_critical: int = 0
    n_warning: int = 0

    def feature(self, name: str) -> FeatureDrift:
        """The row of one feature."""
        for row in self.features:
            if row.feature == name:
                return row
        raise KeyError(name)

    def ranked(self) -> list[FeatureDrift]:
        """Features from the most to the least drifted (status first, then PSI)."""
        return sorted(self.features, key=lambda r: (_RANK[r.status], r.psi), reverse=True)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "n_critical": self.n_critical,
            "n_warning": self.n_warning,
            "worst_features": list(self.worst_features),
            "thresholds": asdict(self.thresholds),
            "features": [r.to_dict() for r in self.features],
            "score_drift": self.score_drift.to_dict() if self.score_drift else None,
            "label_rate_drift": self.label_rate_drift.to_dict() if self.label_rate_drift else None,
        }


def _floats(values: pd.Series) -> np.ndarray:
    """float64 values with NaN for missing, also for nullable (``Int64``, ``boolean``) dtypes."""
    if values.dtype == np.float64:
        return values.to_numpy()
    return values.to_numpy(np.float64, na_value=np.nan)


def _smoothed_shares(counts: np.ndarray, epsilon: float) -> np.ndarray:
    shares = counts / max(counts.sum(), 1)
    shares = shares + epsilon
    return shares / shares.sum()


def psi_from_counts(reference: np.ndarray, current: np.ndarray, epsilon: float = 1e-4) -> float:
    """Population stability index of two histograms over the same bins."""
    r = _smoothed_shares(np.asarray(reference, dtype=np.float64), epsilon)
    c = _smoothed_shares(np.asarray(current, dtype=np.float64), epsilon)
    return float(np.sum((c - r) * np.log(c / r)))


def _chi2_pvalue(reference: np.ndarray, current: np.ndarray) -> float:
    table = np.vstack([reference, current]).astype(np.float64)
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[1] < 2 or (table.sum(axis=1) == 0).any():
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def quantile_edges(reference: np.ndarray, n_bins: int = 10) -> np.ndarray:
    """Inner bin edges at reference quantiles, deduplicated; the outer bins are open-ended."""
    finite = reference[np.isfinite(reference)]
    if finite.size == 0:
        return np.empty(0)
    return np.unique(np.quantile(finite, np.linspace(0.0, 1.0, n_bins + 1)[1:-1]))


def binned_counts(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Counts per bin: one bin per gap between edges, two open outer bins, a missing bin.

    Bin i holds ``edges[i-1] <= x < edges[i]``.
    """
    # Counting values below each edge needs no per-row bin index: at 1M rows and 9 edges
    # this is several times faster than searchsorted + bincount.
    below = np.array([np.count_nonzero(values < edge) for edge in edges], dtype=np.int64)
    missing = int(np.count_nonzero(np.isnan(values)))
    present = len(values) - missing
    cumulative = np.concatenate([below, [present]])
    return np.concatenate([np.diff(cumulative, prepend=0), [missing]])


def numeric_psi(
    reference: np.ndarray, current: np.ndarray, n_bins: int = 10, epsilon: float = 1e-4
) -> float:
    """PSI of a numeric variable binned on reference quantiles."""
    ref = np.asarray(reference, dtype=np.float64)
    cur = np.asarray(current, dtype=np.float64)
    edges = quantile_edges(ref, n_bins)
    return psi_from_counts(binned_counts(ref, edges), binned_counts(cur, edges), epsilon)


def _category_counts(
    reference: pd.Series, current: pd.Series, max_bins: int
) -> tuple[np.ndarray, np.ndarray]:
    """Counts over [the `max_bins` most frequent reference categories, other, missing].

    Categories of the current window never seen in the reference (and rare reference ones
    beyond `max_bins`) are pooled into "other".
    """
    fast = _integer_category_counts(reference, current)
    if fast is not None:
        ref_full, cur_full = fast
    else:
        categories = pd.Index(reference.value_counts(dropna=True).index)
        ref_full, cur_full = (
            _indexed_counts(values, categories) for values in (reference, current)
        )
    # Columns: categories..., other, missing. Keep the most frequent reference categories.
    n_cat = len(ref_full) - 2
    order = np.argsort(-ref_full[:n_cat], kind="stable")
    keep = order[: min(max_bins, n_cat)]
    keep = keep[ref_full[keep] > 0]
    pooled = np.ones(n_cat, dtype=bool)
    pooled[keep] = False
    out = []
    for full in (ref_full, cur_full):
        other = full[:n_cat][pooled].sum() + full[n_cat]
        out.append(np.concatenate([full[keep], [other, full[n_cat + 1]]]))
    return out[0], out[1]


def _indexed_counts(values: pd.Series, categories: pd.Index) -> np.ndarray:
    code = categories.get_indexer(values)
    code = np.where(code < 0, len(categories), code)
    code[values.isna().to_numpy()] = len(categories) + 1
    return np.bincount(code, minlength=len(categories) + 2)


def _integer_category_counts(
    reference: pd.Series, current: pd.Series, max_span: int = 4096
) -> tuple[np.ndarray, np.ndarray] | None:
    """Counts per integer value, other, missing; None unless the reference holds small ints.

    Codes, flags and hours are integers in a small range, where a bincount is an order of
    magnitude faster than hashing every row.
    """
    if not (
        pd.api.types.is_numeric_dtype(reference) and pd.api.types.is_numeric_dtype(current)
    ) or pd.api.types.is_bool_dtype(reference):
        return None
    ref = _floats(reference)
    finite = ref[np.isfinite(ref)]
    if finite.size == 0:
        return None
    low, high = float(finite.min()), float(finite.max())
    if high - low > max_span or not np.array_equal(finite, np.floor(finite)):
        return None
    size = int(high - low) + 1

    def counts(values: np.ndarray) -> np.ndarray:
        missing = int(np.count_nonzero(np.isnan(values)))
        with np.errstate(invalid="ignore"):
            as_int = values.astype(np.int64)
        inside = (as_int == values) & (as_int >= low) & (as_int <= high)
        per_value = np.bincount(as_int[inside] - int(low), minlength=size)
        other = len(values) - int(per_value.sum()) - missing
        return np.concatenate([per_value, [other, missing]])

    return counts(ref), counts(_floats(current))


def _is_categorical(name: str, reference: pd.Series, max_categories: int) -> bool:
    if name.endswith("_code") or name.startswith("is_") or name in _CATEGORICAL_NAMES:
        return True
    if not pd.api.types.is_numeric_dtype(reference) or pd.api.types.is_bool_dtype(reference):
        return True
    # A head with more distinct values than the cut-off settles it without hashing every row.
    if reference.iloc[:5000].nunique() > max_categories:
        return False
    return reference.nunique() <= max_categories


def _mean(values: pd.Series) -> float | None:
    if not pd.api.types.is_numeric_dtype(values) or len(values) == 0:
        return None
    array = _floats(values)
    mean = float(array.mean())
    if not math.isfinite(mean):
        finite = array[np.isfinite(array)]
        mean = float(finite.mean()) if finite.size else math.nan
    return mean if math.isfinite(mean) else None


def _status(
    psi: float,
    pvalue: float,
    thresholds: DriftThresholds,
    ks_stat: float | None = None,
    ks_pvalue: float | None = None,
) -> tuple[str, str]:
    """Status from effect sizes; a p-value at or above alpha only vetoes (noise, not drift)."""
    t = thresholds
    level, reason = OK, f"PSI {psi:.3f} < {t.psi_warning}"
    if psi >= t.psi_warning:
        if pvalue >= t.alpha:
            reason = f"PSI {psi:.3f} but not significant (p={pvalue:.2g}): likely sampling noise"
        elif psi >= t.psi_critical:
            level, reason = CRITICAL, f"PSI {psi:.3f} >= {t.psi_critical}"
        else:
            level, reason = WARNING, f"PSI {psi:.3f} >= {t.psi_warning}"
    if (
        level == OK
        and ks_stat is not None
        and ks_stat >= t.ks_warning
        and ks_pvalue is not None
        and ks_pvalue < t.alpha
    ):
        level, reason = WARNING, f"KS D {ks_stat:.3f} >= {t.ks_warning} (PSI {psi:.3f})"
    return level, reason


def _sample_index(n: int, size: int, rng: np.random.Generator) -> np.ndarray | None:
    """Rows for the KS test; None means all of them. Drawn once per frame, shared by features."""
    if n <= size:
        return None
    return np.sort(rng.choice(n, size, replace=False))


def _ks(
    reference: np.ndarray,
    current: np.ndarray,
    ref_index: np.ndarray | None,
    cur_index: np.ndarray | None,
) -> tuple[float, float]:
    ref = reference if ref_index is None else reference[ref_index]
    cur = current if cur_index is None else current[cur_index]
    ref, cur = ref[np.isfinite(ref)], cur[np.isfinite(cur)]
    if len(ref) == 0 or len(cur) == 0:
        return math.nan, math.nan
    result = stats.ks_2samp(ref, cur, method="asymp")
    return float(result.statistic), float(result.pvalue)


def _feature_drift(
    name: str,
    kind: str,
    psi: float,
    n_ref: int,
    n_cur: int,
    reference: pd.Series,
    current: pd.Series,
    thresholds: DriftThresholds,
    chi2_p: float | None,
    ks_stat: float | None = None,
    ks_p: float | None = None,
) -> FeatureDrift:
    """One feature's row: its status from the statistics, or INSUFFICIENT_DATA when small."""
    if min(n_ref, n_cur) < thresholds.min_rows:
        status, reason = INSUFFICIENT_DATA, f"{min(n_ref, n_cur)} rows < {thresholds.min_rows}"
    else:
        status, reason = _status(psi, chi2_p, thresholds, ks_stat, ks_p)
    return FeatureDrift(
        feature=name,
        kind=kind,
        psi=psi,
        status=status,
        reason=reason,
        n_reference=n_ref,
        n_current=n_cur,
        reference_mean=_mean(reference),
        current_mean=_mean(current),
        ks_stat=ks_stat,
        ks_pvalue=ks_p,
        chi2_pvalue=chi2_p,
    )


def _numeric_drift(
    name: str,
    reference: pd.Series,
    current: pd.Series,
    thresholds: DriftThresholds,
    ref_index: np.ndarray | None,
    cur_index: np.ndarray | None,
    kind: str = NUMERIC,
) -> FeatureDrift:
    ref = _floats(reference)
    cur = _floats(current)
    # Edges from the KS sample of the reference are within a fraction of a percentile of
    # the exact deciles and save a full partition per feature; counts use every row.
    edges = quantile_edges(ref if ref_index is None else ref[ref_index], thresholds.n_bins)
    ref_counts, cur_counts = binned_counts(ref, edges), binned_counts(cur, edges)
    psi = psi_from_counts(ref_counts, cur_counts, thresholds.epsilon)
    chi2_p = _chi2_pvalue(ref_counts, cur_counts)
    ks_stat, ks_p = _ks(ref, cur, ref_index, cur_index)
    n_ref, n_cur = int(np.isfinite(ref).sum()), int(np.isfinite(cur).sum())
    return _feature_drift(
        name, kind, psi, n_ref, n_cur, reference, current, thresholds, chi2_p, ks_stat, ks_p
    )


def _categorical_drift(
    name: str, reference: pd.Series, current: pd.Series, thresholds: DriftThresholds
) -> FeatureDrift:
    ref_counts, cur_counts = _category_counts(reference, current, _MAX_CATEGORY_BINS)
    psi = psi_from_counts(ref_counts, cur_counts, thresholds.epsilon)
    chi2_p = _chi2_pvalue(ref_counts, cur_counts)
    return _feature_drift(
        name,
        CATEGORICAL,
        psi,
        len(reference),
        len(current),
        reference,
        current,
        thresholds,
        chi2_p,
    )


def score_drift(
    reference_scores: Sequence[float] | np.ndarray | pd.Series,
    current_scores: Sequence[float] | np.ndarray | pd.Series,
    thresholds: DriftThresholds = DriftThresholds(),
) -> FeatureDrift:
    """PSI (and KS) of the model's scores; a moving score distribution moves the decline rate."""
    ref = pd.Series(np.asarray(reference_scores, dtype=np.float64))
    cur = pd.Series(np.asarray(current_scores, dtype=np.float64))
    rng = np.random.default_rng(thresholds.seed)
    return _numeric_drift(
        "score",
        ref,
        cur,
        thresholds,
        _sample_index(len(ref), thresholds.ks_sample, rng),
        _sample_index(len(cur), thresholds.ks_sample, rng),
        kind="score",
    )


def label_rate_drift(
    reference_labels: Sequence[float] | np.ndarray | pd.Series,
    current_labels: Sequence[float] | np.ndarray | pd.Series,
    thresholds: DriftThresholds = DriftThresholds(),
) -> LabelRateDrift:
    """Fraud rate of the two windows, its relative change and a two-proportion z-test.

    Missing labels are dropped. The status follows the relative change (+-25% WARNING,
    +-50% CRITICAL by default); the z-test only vetoes changes that noise could explain.
    """
    ref = pd.to_numeric(pd.Series(np.asarray(reference_labels)), errors="coerce").dropna()
    cur = pd.to_numeric(pd.Series(np.asarray(current_labels)), errors="coerce").dropna()
    n1, n2 = len(ref), len(cur)
    p1 = float(ref.mean()) if n1 else math.nan
    p2 = float(cur.mean()) if n2 else math.nan
    pooled = (ref.sum() + cur.sum()) / max(n1 + n2, 1)
    se = math.sqrt(pooled * (1.0 - pooled) * (1.0 / max(n1, 1) + 1.0 / max(n2, 1)))
    z = (p2 - p1) / se if se > 0 else 0.0
    pvalue = float(2.0 * stats.norm.sf(abs(z))) if se > 0 else 1.0
    relative = (p2 - p1) / p1 if p1 > 0 else (math.inf if p2 > 0 else 0.0)
    t = thresholds
    if min(n1, n2) < t.min_rows:
        status, reason = INSUFFICIENT_DATA, f"{min(n1, n2)} labelled rows < {t.min_rows}"
    elif abs(relative) >= t.label_rate_warning and pvalue >= t.alpha:
        status, reason = OK, f"fraud rate {relative:+.0%} but not significant (p={pvalue:.2g})"
    elif abs(relative) >= t.label_rate_critical:
        status, reason = CRITICAL, f"fraud rate {relative:+.0%} (>= {t.label_rate_critical:.0%})"
    elif abs(relative) >= t.label_rate_warning:
        status, reason = WARNING, f"fraud rate {relative:+.0%} (>= {t.label_rate_warning:.0%})"
    else:
        status, reason = OK, f"fraud rate {relative:+.0%}"
    return LabelRateDrift(p1, p2, relative, z, pvalue, n1, n2, status, reason)


def compute_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: list[str],
    thresholds: DriftThresholds = DriftThresholds(),
    categorical: set[str] | None = None,
    *,
    score_col: str | None = None,
    label_col: str | None = None,
) -> DriftResult:
    """Drift of every feature from `reference` (the champion's training window) to `current`.

    Args:
        reference: Reference rows, e.g. the features the champion was trained on.
        current: Rows to check, e.g. yesterday's scored payments.
        features: Columns to compare.
        thresholds: Where WARNING and CRITICAL start; see `DriftThresholds`.
        categorical: Features to treat as categorical; None infers them (``*_code``,
            ``is_*``, ``hour``, ``weekday``, non-numeric, or <= 20 distinct reference values).
        score_col: Model score column present in both frames, for `score_drift`.
        label_col: Fraud label column present in both frames, for `label_rate_drift`.

    PSI uses every row; the KS test uses up to ``thresholds.ks_sample`` rows per side. The
    overall status is CRITICAL when at least ``min_critical_features`` features are, else the
    worst feature status (a lone CRITICAL below that count reads WARNING).
    """
    missing = [f for f in features if f not in reference.columns or f not in current.columns]
    if missing:
        raise KeyError(f"features missing from reference or current: {missing}")
    t = thresholds
    rng = np.random.default_rng(t.seed)
    ref_index = _sample_index(len(reference), t.ks_sample, rng)
    cur_index = _sample_index(len(current), t.ks_sample, rng)
    rows: list[FeatureDrift] = []
    for name in features:
        ref, cur = reference[name], current[name]
        is_cat = (
            name in categorical
            if categorical is not None
            else _is_categorical(name, ref, t.max_categories)
        )
        if is_cat:
            rows.append(_categorical_drift(name, ref, cur, t))
        else:
            rows.append(_numeric_drift(name, ref, cur, t, ref_index, cur_index))
    statuses = [r.status for r in rows]
    n_critical, n_warning = statuses.count(CRITICAL), statuses.count(WARNING)
    if n_critical >= t.min_critical_features:
        overall = CRITICAL
    elif n_critical or n_warning:
        overall = WARNING
    else:
        overall = worst_status(statuses)
    result = DriftResult(
        features=rows,
        status=overall,
        worst_features=[],
        n_reference=len(reference),
        n_current=len(current),
        thresholds=t,
        n_critical=n_critical,
        n_warning=n_warning,
    )
    result.worst_features = [r.feature for r in result.ranked() if r.status in (WARNING, CRITICAL)]
    if score_col is not None:
        result.score_drift = score_drift(reference[score_col], current[score_col], t)
    if label_col is not None:
        result.label_rate_drift = label_rate_drift(reference[label_col], current[label_col], t)
    return result


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


def render_drift_table(result: DriftResult, top: int = 10) -> str:
    """Markdown: the verdict, then the `top` most drifted features and the score/label rows."""
    head = (
        f"**Drift: {result.status}** ({result.n_critical} critical, {result.n_warning} warning "
        f"of {len(result.features)} features; {result.n_reference:,} reference vs "
        f"{result.n_current:,} current rows)"
    )
    extra = [r for r in (result.score_drift,) if r is not None]
    rows = [
        {
            "feature": r.feature,
            "kind": r.kind,
            "status": r.status,
            "PSI": _fmt(r.psi),
            "KS D": _fmt(r.ks_stat),
            "p-value": _fmt(r.ks_pvalue if r.ks_pvalue is not None else r.chi2_pvalue, 2),
            "reference mean": _fmt(r.reference_mean, 4),
            "current mean": _fmt(r.current_mean, 4),
            "why": r.reason,
        }
        for r in [*result.ranked()[:top], *extra]
    ]
    columns = [
        "feature",
        "kind",
        "status",
        "PSI",
        "KS D",
        "p-value",
        "reference mean",
        "current mean",
        "why",
    ]
    parts = [head, "", markdown_table(rows, columns)]
    label = result.label_rate_drift
    if label is not None:
        parts += [
            "",
            f"Fraud rate: {label.reference_rate:.3%} -> {label.current_rate:.3%} "
            f"({label.relative_change:+.0%}, p={label.pvalue:.2g}): **{label.status}**",
        ]
    return "\n".join(parts)


def drift_bar_png(result: DriftResult, top: int = 20) -> bytes:
    """PSI of the most drifted features as bars coloured by status, thresholds marked."""
    # Imported here so that computing drift does not pay for matplotlib and scikit-learn.
    import matplotlib.pyplot as plt

    from fraud_assets.core.plots import _png

    ranked = result.ranked()[:top]
    colours = {
        CRITICAL: "crimson",
        WARNING: "orange",
        OK: "seagreen",
        INSUFFICIENT_DATA: "grey",
    }
    fig, ax = plt.subplots(figsize=(6.5, 0.3 * max(len(ranked), 1) + 1.4))
    labels = [r.feature for r in ranked][::-1]
    values = [r.psi for r in ranked][::-1]
    ax.barh(labels, values, color=[colours[r.status] for r in ranked][::-1])
    t = result.thresholds
    ax.axvline(t.psi_warning, color="orange", ls="--", lw=1, label=f"warning {t.psi_warning}")
    ax.axvline(t.psi_critical, color="crimson", ls="--", lw=1, label=f"critical {t.psi_critical}")
    ax.set(title=f"Feature drift (PSI): {result.status}", xlabel="PSI")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def evidently_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    html_path: str | Path,
    *,
    thresholds: DriftThresholds = DriftThresholds(),
    categorical: set[str] | None = None,
    max_rows: int = 50_000,
    seed: int = 0,
) -> dict[str, Any]:
    """An Evidently 0.7 data-drift report of the same comparison, saved as HTML.

    Each frame is randomly sampled down to at most `max_rows` rows (50k by default) so the
    report builds in seconds; drift shares that large samples show are stable at that size.
    Evidently uses PSI for every column with ``psi_critical`` as its "drifted" threshold, so
    its headline roughly matches our CRITICAL, but it bins numerics differently (equal-width
    over both samples) and its scores differ from ours: the statuses from `compute_drift`
    are authoritative, this report is for reading.

    Returns a summary: number and share of drifted columns and Evidently's PSI per column.
    """
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    def sample(frame: pd.DataFrame) -> pd.DataFrame:
        frame = frame[columns]
        if len(frame) > max_rows:
            frame = frame.sample(n=max_rows, random_state=seed)
        return frame.reset_index(drop=True)

    ref, cur = sample(reference), sample(current)
    cats = [
        c
        for c in columns
        if (
            c in categorical
            if categorical is not None
            else _is_categorical(c, ref[c], thresholds.max_categories)
        )
    ]
    definition = DataDefinition(
        numerical_columns=[c for c in columns if c not in cats], categorical_columns=cats
    )
    report = Report(
        [
            DataDriftPreset(
                columns=columns,
                method="psi",
                threshold=thresholds.psi_critical,
            )
        ]
    )
    snapshot = report.run(
        current_data=Dataset.from_pandas(cur, data_definition=definition),
        reference_data=Dataset.from_pandas(ref, data_definition=definition),
    )
    path = Path(html_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    summary: dict[str, Any] = {
        "html_path": str(path),
        "method": "psi",
        "threshold": thresholds.psi_critical,
        "n_reference": len(ref),
        "n_current": len(cur),
        "drifted_columns": None,
        "drifted_share": None,
        "column_scores": {},
    }
    for metric in snapshot.dict()["metrics"]:
        config, value = metric.get("config", {}), metric.get("value")
        kind = str(config.get("type", ""))
        if kind.endswith("DriftedColumnsCount") and isinstance(value, dict):
            summary["drifted_columns"] = int(value["count"])
            summary["drifted_share"] = float(value["share"])
        elif kind.endswith("ValueDrift"):
            summary["column_scores"][config["column"]] = json_safe(float(value))
    return summary
