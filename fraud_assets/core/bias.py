"""Fairness of the served fraud decisions across protected groups, with fairlearn.

A payment is declined when its score reaches the served threshold. For every protected
attribute (and every pair of them, e.g. gender x age band) the groups are compared on:

* **disparate impact**: lowest decline rate / highest decline rate. The US "four-fifths rule"
  calls a ratio under 0.8 adverse impact.
* **demographic parity difference (DPD)**: highest minus lowest decline rate.
* **equalized odds difference (EOD)**: the larger of the gaps in recall (fraud caught,
  TPR) and in false-positive rate between groups.
* **FPR gap**: highest minus lowest false-positive rate, i.e. how much more often one
  group's good customers are wrongly declined. For a fraud model this is the harm that
  customers feel, so it gets its own thresholds.

Each metric gets a bootstrap 95% confidence interval, a p-value (chi-square test that all
groups share one rate) and a status:

* ``OK``: no disparity beyond the warning threshold, or one that sampling noise explains
  (p >= ``alpha``); the reasons then say so.
* ``WARNING``: a significant disparity past the warning threshold. Investigate.
* ``CRITICAL``: a significant disparity past the critical threshold (e.g. disparate impact
  under 0.8). Escalate: the served decisions treat a group materially worse.
* ``INSUFFICIENT_DATA``: fewer than two groups have ``min_group_size`` rows.

As with drift, the size of the disparity sets the level and the p-value can only veto it:
with enough rows every trivial gap is significant, with few rows large gaps can be noise.
The intervals show how precisely each metric is known; note that max-minus-min gaps are
biased upwards when groups are small (noise always widens the spread).

Groups smaller than ``min_group_size`` are listed but left out of the metrics and statuses;
a group's recall is only compared when it has ``min_group_positives`` frauds, because a rate
over a handful of frauds is mostly noise (and fairlearn reports 0 when there are none).
Rows without a label are dropped: run this on a window whose labels have matured.
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy import stats

from fraud_assets.core.drift import CRITICAL, INSUFFICIENT_DATA, OK, WARNING, worst_status
from fraud_assets.core.render import json_safe, markdown_table

MAX_CATEGORIES = 20
METRICS: tuple[str, ...] = ("disparate_impact", "dpd", "eod", "fpr_gap")
_LOWER_IS_WORSE = frozenset({"disparate_impact"})
_METRIC_LABELS = {
    "disparate_impact": "disparate impact",
    "dpd": "DPD",
    "eod": "EOD",
    "fpr_gap": "FPR gap",
}
_MISSING = "missing"
_OUT_OF_RANGE = "out_of_range"


@dataclass(frozen=True)
class ProtectedAttribute:
    """A protected column and how its values form groups.

    Attributes:
        column: Column of the frame, e.g. ``"age"`` or ``"gender"``.
        bins: Edges for a continuous column, e.g. ``[18, 25, 35, 50, 65, 120]``; a value
            ``x`` falls in ``[edge_i, edge_i+1)``. Required for a numeric column with more
            than 20 distinct values: a group per distinct age would be meaningless.
        labels: Names of the bins (one fewer than the edges); default ``"18-24"`` style.
        groups: For a categorical column, an optional mapping from raw value to group name
            (values not in the mapping become ``"other"``); None keeps the raw values.
        name: Name in reports; default the column (``"<column>_band"`` when binned).
    """

    column: str
    bins: Sequence[float] | None = None
    labels: Sequence[str] | None = None
    groups: Mapping[Any, str] | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        if self.name:
            return self.name
        return f"{self.column}_band" if self.bins is not None else self.column

    def assign(self, frame: pd.DataFrame) -> pd.Series:
        """The group of every row as a string; missing values form the group "missing"."""
        values = frame[self.column]
        if self.bins is not None:
            return self._binned(values)
        if self.groups is not None:
            mapped = values.map(dict(self.groups)).astype(object)
            mapped = mapped.where(mapped.notna(), "other")
            return mapped.where(values.notna(), _MISSING).astype(str)
        distinct = values.nunique(dropna=True)
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            if distinct > MAX_CATEGORIES:
                raise ValueError(
                    f"protected attribute {self.column!r} looks continuous ({distinct} distinct "
                    f"values): pass bins, e.g. ProtectedAttribute({self.column!r}, "
                    "bins=[18, 25, 35, 50, 65, 120])"
                )
        return values.astype(object).where(values.notna(), _MISSING).astype(str)

    def _binned(self, values: pd.Series) -> pd.Series:
        edges = [float(e) for e in self.bins or ()]
        if len(edges) < 2 or any(b <= a for a, b in itertools.pairwise(edges)):
            raise ValueError(f"bins of {self.column!r} must be >= 2 increasing edges: {edges}")
        labels = list(self.labels) if self.labels is not None else _bin_labels(edges)
        if len(labels) != len(edges) - 1:
            raise ValueError(f"{self.column!r} needs {len(edges) - 1} labels, got {len(labels)}")
        numeric = pd.to_numeric(values, errors="coerce")
        banded = pd.cut(numeric, bins=edges, right=False, labels=labels).astype(object)
        banded = banded.where(banded.notna(), _OUT_OF_RANGE)
        return banded.where(numeric.notna(), _MISSING).astype(str)


def _bin_labels(edges: Sequence[float]) -> list[str]:
    """``"18-24"`` for integer edges (bins are right-open), ``"[0.5, 1.5)"`` otherwise."""
    if all(float(e).is_integer() for e in edges):
        return [f"{int(a)}-{int(b) - 1}" for a, b in itertools.pairwise(edges)]
    return [f"[{a:g}, {b:g})" for a, b in itertools.pairwise(edges)]


@dataclass(frozen=True)
class BiasThresholds:
    """Where a disparity between groups becomes a WARNING or a CRITICAL.

    Defaults assume a fraud model that declines about 1-3% of payments with a false-positive
    rate around 1%, where absolute gaps are small but ratios are large.

    Attributes:
        disparate_impact_warning: Decline-rate ratio (min/max group) below which to warn.
        disparate_impact_critical: The four-fifths rule: below 0.8 is adverse impact.
        dpd_warning: Decline-rate gap of 1 percentage point: at a 1-3% decline rate, one
            group is declined up to twice as often as another.
        dpd_critical: Decline-rate gap of 2 percentage points.
        eod_warning: Gap of 10 points in recall (or FPR). Recall per group rests on few
            frauds, so smaller gaps are usually noise.
        eod_critical: Gap of 20 points: one group's fraud is clearly caught less often.
        fpr_gap_warning: Good customers of one group wrongly declined 0.5 points more often,
            about 1.5x the typical 1% FPR.
        fpr_gap_critical: 1 point more often, about twice the typical FPR.
        min_group_size: Smaller groups are reported but excluded from metrics and status.
        min_group_positives: Frauds a group needs before its recall is compared.
        alpha: A disparity must also be statistically significant (chi-square test that the
            groups share one rate, p < alpha) to count, so that small groups' noise does not
            raise alerts. Rows are treated as independent; payments of one customer are
            not, so treat p-values near alpha with care.
    """

    disparate_impact_warning: float = 0.9
    disparate_impact_critical: float = 0.8
    dpd_warning: float = 0.01
    dpd_critical: float = 0.02
    eod_warning: float = 0.10
    eod_critical: float = 0.20
    fpr_gap_warning: float = 0.005
    fpr_gap_critical: float = 0.01
    min_group_size: int = 50
    min_group_positives: int = 10
    alpha: float = 0.01

    def limits(self, metric: str) -> tuple[float, float]:
        """(warning, critical) threshold of a metric."""
        return getattr(self, f"{metric}_warning"), getattr(self, f"{metric}_critical")


@dataclass
class GroupStats:
    """One group at the served threshold. ``included`` says whether it counts for status."""

    group: str
    n: int
    n_fraud: int
    fraud_rate: float
    selection_rate: float
    fpr: float
    tpr: float
    included: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in asdict(self).items()}


@dataclass
class MetricEstimate:
    """A headline metric, its bootstrap 95% interval and the status it earns."""

    value: float
    ci_low: float
    ci_high: float
    pvalue: float
    status: str
    warning: float
    critical: float

    def to_dict(self) -> dict[str, Any]:
        return {k: json_safe(v) for k, v in asdict(self).items()}


@dataclass
class AttributeBias:
    """Fairness metrics of one attribute (or an intersection of two) across its groups."""

    name: str
    columns: tuple[str, ...]
    groups: list[GroupStats]
    metrics: dict[str, MetricEstimate]
    status: str
    reasons: list[str] = field(default_factory=list)

    @property
    def is_intersection(self) -> bool:
        return len(self.columns) > 1

    def group(self, name: str) -> GroupStats:
        for g in self.groups:
            if g.group == name:
                return g
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "columns": list(self.columns),
            "status": self.status,
            "reasons": list(self.reasons),
            "metrics": {k: m.to_dict() for k, m in self.metrics.items()},
            "groups": [g.to_dict() for g in self.groups],
        }


@dataclass
class BiasResult:
    """Fairness of the decisions at `threshold` for every attribute and intersection."""

    attributes: list[AttributeBias]
    status: str
    threshold: float
    n_rows: int
    n_unlabelled: int
    n_bootstrap: int
    thresholds: BiasThresholds

    def attribute(self, name: str) -> AttributeBias:
        for a in self.attributes:
            if a.name == name:
                return a
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "threshold": self.threshold,
            "n_rows": self.n_rows,
            "n_unlabelled": self.n_unlabelled,
            "n_bootstrap": self.n_bootstrap,
            "thresholds": asdict(self.thresholds),
            "attributes": [a.to_dict() for a in self.attributes],
        }


def _cells(codes: np.ndarray, y: np.ndarray, d: np.ndarray, k: int) -> np.ndarray:
    """Per group counts of [TN, FP, FN, TP], shape (k, 4)."""
    flat = codes * 4 + y.astype(np.int64) * 2 + d.astype(np.int64)
    return np.bincount(flat, minlength=4 * k).reshape(k, 4).astype(np.float64)


def headline_from_cells(cells: np.ndarray, tpr_groups: np.ndarray) -> dict[str, np.ndarray]:
    """Headline metrics from per-group confusion counts (..., k, 4) = [TN, FP, FN, TP].

    Works on one table or a stack of bootstrap tables at once. Recall only counts for the
    groups flagged in `tpr_groups`; a group with no negatives has no FPR and is skipped.
    """
    tn, fp, fn, tp = np.moveaxis(cells, -1, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        n = tn + fp + fn + tp
        sel = np.where(n > 0, (fp + tp) / n, np.nan)
        fpr = np.where(tn + fp > 0, fp / (tn + fp), np.nan)
        tpr = np.where((fn + tp > 0) & tpr_groups, tp / (fn + tp), np.nan)
        top, bottom = _nanmax(sel), _nanmin(sel)
        # Nobody declined in any group is no disparity, not an undefined one.
        di = np.where(top > 0, bottom / top, 1.0)
        fpr_gap = _nanmax(fpr) - _nanmin(fpr)
        tpr_gap = _nanmax(tpr) - _nanmin(tpr)
    eod = np.fmax(np.nan_to_num(tpr_gap, nan=0.0), fpr_gap)
    return {
        "disparate_impact": di,
        "dpd": top - bottom,
        "eod": eod,
        "fpr_gap": fpr_gap,
        "tpr_gap": tpr_gap,
    }


def _nanmax(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        # An all-NaN row (e.g. no group with enough frauds) is NaN, which callers handle.
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmax(a, axis=-1)


def _nanmin(a: np.ndarray) -> np.ndarray:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return np.nanmin(a, axis=-1)


def _homogeneity_pvalue(table: np.ndarray) -> float:
    """Chi-square p-value that every row (group) of a k x 2 count table has the same rate."""
    table = table[table.sum(axis=1) > 0]
    table = table[:, table.sum(axis=0) > 0]
    if table.shape[0] < 2 or table.shape[1] < 2:
        return 1.0
    return float(stats.chi2_contingency(table, correction=False).pvalue)


def _status(metric: str, value: float, pvalue: float, t: BiasThresholds) -> tuple[str, str | None]:
    """Status from the size of the disparity; a p-value >= alpha vetoes it as noise."""
    warning, critical = t.limits(metric)
    if not math.isfinite(value):
        return INSUFFICIENT_DATA, f"{_METRIC_LABELS[metric]}: not enough data"
    if metric in _LOWER_IS_WORSE:
        level = CRITICAL if value < critical else WARNING if value < warning else OK
        cmp = "<"
    else:
        level = CRITICAL if value >= critical else WARNING if value >= warning else OK
        cmp = ">="
    if level == OK:
        return OK, None
    limit = critical if level == CRITICAL else warning
    text = f"{_METRIC_LABELS[metric]} {value:.3f} {cmp} {limit}"
    if pvalue >= t.alpha:
        return OK, f"{text} but not significant (p={pvalue:.2g}): consistent with noise"
    return level, f"{text} (p={pvalue:.2g}): {level}"


def _weighted_count(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray) -> float:
    return float(np.sum(sample_weight))


def _fraud_rate(y_true: np.ndarray, y_pred: np.ndarray, sample_weight: np.ndarray) -> float:
    total = float(np.sum(sample_weight))
    return float(np.dot(y_true, sample_weight) / total) if total > 0 else math.nan


_GROUP_METRICS = {
    "n": _weighted_count,
    "fraud_rate": _fraud_rate,
    "selection_rate": selection_rate,
    "fpr": false_positive_rate,
    "tpr": true_positive_rate,
}


def _analyse(
    name: str,
    columns: tuple[str, ...],
    groups: pd.Series,
    y: np.ndarray,
    d: np.ndarray,
    t: BiasThresholds,
    n_bootstrap: int,
    rng: np.random.Generator,
) -> AttributeBias:
    codes, uniques = pd.factorize(groups, sort=True)
    labels = [str(u) for u in uniques]
    cells = _cells(codes.astype(np.int64), y, d, len(labels))
    # fairlearn sees one row per (group, label, decision) cell weighted by its count: the
    # same numbers as one row per payment, without fairlearn's per-row Python overhead
    # (seconds per metric at 200k rows).
    g_idx, c_idx = np.nonzero(cells)
    weights = cells[g_idx, c_idx]
    cy, cd = c_idx // 2, c_idx % 2
    cg = np.asarray(labels, dtype=object)[g_idx]
    frame = MetricFrame(
        metrics=_GROUP_METRICS,
        y_true=cy,
        y_pred=cd,
        sensitive_features=pd.Series(cg, name=name),
        sample_params={m: {"sample_weight": weights} for m in _GROUP_METRICS},
    )
    by_group = frame.by_group.reindex(labels)
    sizes = cells.sum(axis=1)
    positives = cells[:, 2] + cells[:, 3]
    negatives = cells[:, 0] + cells[:, 1]
    eligible = sizes >= t.min_group_size
    tpr_groups = eligible & (positives >= t.min_group_positives)
    stats_rows: list[GroupStats] = []
    for i, label in enumerate(labels):
        row = by_group.iloc[i]
        note = ""
        if not eligible[i]:
            note = f"n < {t.min_group_size}: excluded"
        elif not tpr_groups[i]:
            note = f"< {t.min_group_positives} frauds: recall not compared"
        stats_rows.append(
            GroupStats(
                group=label,
                n=int(sizes[i]),
                n_fraud=int(positives[i]),
                fraud_rate=float(row["fraud_rate"]),
                selection_rate=float(row["selection_rate"]),
                fpr=float(row["fpr"]) if negatives[i] > 0 else math.nan,
                tpr=float(row["tpr"]) if positives[i] > 0 else math.nan,
                included=bool(eligible[i]),
                note=note,
            )
        )
    if eligible.sum() < 2:
        empty = {
            m: MetricEstimate(math.nan, math.nan, math.nan, 1.0, INSUFFICIENT_DATA, *t.limits(m))
            for m in METRICS
        }
        reason = f"fewer than 2 groups with >= {t.min_group_size} rows"
        return AttributeBias(name, columns, stats_rows, empty, INSUFFICIENT_DATA, [reason])

    kept = cells[eligible]
    point = {k: float(v) for k, v in headline_from_cells(kept, tpr_groups[eligible]).items()}
    in_scope = eligible[g_idx]
    # The decline-rate metrics come straight from fairlearn's own functions.
    fair_args = {
        "sensitive_features": cg[in_scope],
        "sample_weight": weights[in_scope],
    }
    point["dpd"] = float(demographic_parity_difference(cy[in_scope], cd[in_scope], **fair_args))
    ratio = float(demographic_parity_ratio(cy[in_scope], cd[in_scope], **fair_args))
    point["disparate_impact"] = ratio if math.isfinite(ratio) else 1.0

    approved, declined = kept[:, 0] + kept[:, 2], kept[:, 1] + kept[:, 3]
    p_selection = _homogeneity_pvalue(np.column_stack([approved, declined]))
    p_fpr = _homogeneity_pvalue(kept[:, :2])
    p_tpr = _homogeneity_pvalue(cells[tpr_groups][:, 2:])
    pvalues = {
        "disparate_impact": p_selection,
        "dpd": p_selection,
        "fpr_gap": p_fpr,
        "eod": p_tpr if point["tpr_gap"] >= point["fpr_gap"] else p_fpr,
    }

    draws = rng.multinomial(int(kept.sum()), (kept / kept.sum()).ravel(), size=n_bootstrap).reshape(
        n_bootstrap, *kept.shape
    )
    boot = headline_from_cells(draws.astype(np.float64), tpr_groups[eligible])
    metrics: dict[str, MetricEstimate] = {}
    reasons: list[str] = []
    for metric in METRICS:
        low, high = (float(q) for q in np.nanpercentile(boot[metric], [2.5, 97.5]))
        status, reason = _status(metric, point[metric], pvalues[metric], t)
        metrics[metric] = MetricEstimate(
            point[metric], low, high, pvalues[metric], status, *t.limits(metric)
        )
        if reason:
            reasons.append(f"{reason} (95% CI {low:.3f}-{high:.3f})")
    status = worst_status(m.status for m in metrics.values())
    return AttributeBias(name, columns, stats_rows, metrics, status, reasons)


def compute_bias(
    frame: pd.DataFrame,
    y_true_col: str,
    score_col: str,
    threshold: float,
    attributes: list[ProtectedAttribute],
    thresholds: BiasThresholds = BiasThresholds(),
    n_bootstrap: int = 200,
    seed: int = 0,
    intersections: bool = True,
) -> BiasResult:
    """Fairness of the decisions ``score >= threshold`` across protected groups.

    Args:
        frame: One row per scored payment with its label, score and protected attributes.
        y_true_col: Fraud label (1 fraud, 0 genuine); unlabelled rows are dropped.
        score_col: Model score.
        threshold: The threshold actually served, so the report describes real decisions.
        attributes: Protected attributes; continuous ones need bins.
        thresholds: Where WARNING and CRITICAL start; see `BiasThresholds`.
        n_bootstrap: Bootstrap resamples for the 95% intervals. They are drawn as
            multinomial counts over (group, label, decision) cells, which is the same as
            resampling rows but independent of the number of rows.
        seed: Seed of the bootstrap.
        intersections: Also analyse every pair of attributes (e.g. gender x age band).
    """
    labels = pd.to_numeric(frame[y_true_col], errors="coerce")
    labelled = labels.notna().to_numpy()
    data = frame.loc[labelled].reset_index(drop=True)
    y = labels[labelled].to_numpy().astype(np.int64)
    d = data[score_col].to_numpy(np.float64) >= threshold
    rng = np.random.default_rng(seed)
    assigned = [(a, a.assign(data)) for a in attributes]
    results = [
        _analyse(a.label, (a.column,), groups, y, d, thresholds, n_bootstrap, rng)
        for a, groups in assigned
    ]
    if intersections:
        for (a, ga), (b, gb) in itertools.combinations(assigned, 2):
            joint = ga.str.cat(gb, sep=" & ")
            name = f"{a.label} x {b.label}"
            results.append(
                _analyse(name, (a.column, b.column), joint, y, d, thresholds, n_bootstrap, rng)
            )
    return BiasResult(
        attributes=results,
        status=worst_status(r.status for r in results),
        threshold=float(threshold),
        n_rows=int(labelled.sum()),
        n_unlabelled=int((~labelled).sum()),
        n_bootstrap=n_bootstrap,
        thresholds=thresholds,
    )


def _pct(value: float) -> str:
    return "-" if not math.isfinite(value) else f"{value:.2%}"


def _with_ci(m: MetricEstimate) -> str:
    if not math.isfinite(m.value):
        return "-"
    return f"{m.value:.3f} [{m.ci_low:.3f}, {m.ci_high:.3f}]"


def render_bias_table(result: BiasResult) -> str:
    """Markdown: verdict, headline metrics with 95% intervals, then each group's rates."""
    parts = [
        f"**Fairness: {result.status}** at threshold {result.threshold:.4g} "
        f"({result.n_rows:,} labelled rows, {result.n_unlabelled:,} unlabelled dropped; "
        f"95% CIs from {result.n_bootstrap} bootstrap resamples)",
        "",
        markdown_table(
            [
                {
                    "attribute": a.name,
                    "status": a.status,
                    **{_METRIC_LABELS[m]: _with_ci(a.metrics[m]) for m in METRICS},
                }
                for a in result.attributes
            ],
            ["attribute", "status", *(_METRIC_LABELS[m] for m in METRICS)],
        ),
    ]
    for a in result.attributes:
        parts += ["", f"**{a.name}**: {a.status}"]
        parts += [f"- {r}" for r in a.reasons]
        parts += [
            "",
            markdown_table(
                [
                    {
                        "group": g.group,
                        "n": f"{g.n:,}",
                        "frauds": f"{g.n_fraud:,}",
                        "fraud rate": _pct(g.fraud_rate),
                        "decline rate": _pct(g.selection_rate),
                        "FPR": _pct(g.fpr),
                        "recall (TPR)": _pct(g.tpr),
                        "note": g.note,
                    }
                    for g in a.groups
                ],
                [
                    "group",
                    "n",
                    "frauds",
                    "fraud rate",
                    "decline rate",
                    "FPR",
                    "recall (TPR)",
                    "note",
                ],
            ),
        ]
    return "\n".join(parts)
