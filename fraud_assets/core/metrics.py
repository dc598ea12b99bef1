"""Fraud metrics: ranking quality, recall at low false-positive rates, and cost-based thresholds.

Accuracy is never used: with 1% fraud, a model that approves everything is 99% accurate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

HEADLINE: tuple[str, ...] = (
    "average_precision",
    "recall_at_1pct_fpr",
    "auc_roc",
    "precision",
    "recall",
    "f1",
    "fpr",
    "precision_at_100",
)
"""The metrics every model page, tag and card leads with, in that order."""


@dataclass(frozen=True)
class CostModel:
    """What a wrong decision costs: a missed fraud loses its amount (the chargeback), a
    declined genuine customer costs `false_decline_cost` (review effort and churn)."""

    false_decline_cost: float = 15.0


def recall_at_fpr(y: np.ndarray, score: np.ndarray, max_fpr: float = 0.01) -> float:
    """The highest recall reachable while wrongly flagging at most `max_fpr` of genuine rows."""
    if y.sum() == 0 or y.sum() == len(y):
        return float("nan")
    fpr, tpr, _ = roc_curve(y, score)
    ok = fpr <= max_fpr
    return float(tpr[ok].max()) if ok.any() else 0.0


def precision_at_k(y: np.ndarray, score: np.ndarray, k: int) -> float:
    """Share of fraud among the k highest scores: what a review team of size k would find."""
    k = min(k, len(y))
    if k == 0:
        return float("nan")
    top = np.argsort(-score, kind="stable")[:k]
    return float(y[top].mean())


def threshold_metrics(y: np.ndarray, score: np.ndarray, threshold: float) -> dict[str, float]:
    """Precision, recall, F1 and FPR of flagging every score >= threshold."""
    flag = score >= threshold
    tp = float((flag & (y == 1)).sum())
    fp = float((flag & (y == 0)).sum())
    fn = float((~flag & (y == 1)).sum())
    tn = float((~flag & (y == 0)).sum())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    fpr = fp / (fp + tn) if fp + tn else 0.0
    return {
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "fpr": fpr,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
    }


def expected_cost(
    y: np.ndarray, score: np.ndarray, amount: np.ndarray, threshold: float, cost: CostModel
) -> float:
    """Money lost at this threshold: missed fraud amounts plus false-decline costs."""
    flag = score >= threshold
    missed = amount[(~flag) & (y == 1)].sum()
    false_declines = ((flag) & (y == 0)).sum() * cost.false_decline_cost
    return float(missed + false_declines)


def cost_optimal_threshold(
    y: np.ndarray, score: np.ndarray, amount: np.ndarray, cost: CostModel
) -> tuple[float, float]:
    """The threshold with the lowest expected cost, and that cost.

    Every distinct score is a candidate; the cost of all of them is computed in one
    pass over the rows sorted by score.
    """
    order = np.argsort(-score, kind="stable")
    s, yy, amt = score[order], y[order], amount[order]
    fraud_amt_total = float(amt[yy == 1].sum())
    caught = np.cumsum(np.where(yy == 1, amt, 0.0))
    false_pos = np.cumsum(yy == 0)
    # Flagging the first i+1 rows is only a threshold when the next score is lower.
    last_of_tie = np.r_[s[1:] < s[:-1], True]
    costs = (fraud_amt_total - caught) + false_pos * cost.false_decline_cost
    costs = np.where(last_of_tie, costs, np.inf)
    best = int(np.argmin(costs))
    flag_none = fraud_amt_total
    if flag_none <= costs[best]:
        return float(np.nextafter(s[0], np.inf)), flag_none
    return float(s[best]), float(costs[best])


def evaluate(
    y: np.ndarray, score: np.ndarray, amount: np.ndarray, threshold: float, cost: CostModel
) -> dict[str, float]:
    """All headline metrics of a scored window."""
    y = np.asarray(y).astype(np.int8)
    out = {
        "auc_roc": float(roc_auc_score(y, score)) if 0 < y.sum() < len(y) else float("nan"),
        "average_precision": float(average_precision_score(y, score)) if y.sum() else float("nan"),
        "recall_at_1pct_fpr": recall_at_fpr(y, score, 0.01),
        "precision_at_100": precision_at_k(y, score, 100),
        "precision_at_1pct": precision_at_k(y, score, max(1, len(y) // 100)),
        "expected_cost": expected_cost(y, score, amount, threshold, cost),
        "fraud_rate": float(y.mean()) if len(y) else float("nan"),
        "rows": float(len(y)),
    }
    out.update(threshold_metrics(y, score, threshold))
    return out
