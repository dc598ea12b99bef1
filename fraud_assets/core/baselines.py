"""Baselines: the minimum a model must reach on the test window, as `metric: "op value"`."""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass

OPERATORS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}

# Tuned on the bundled synthetic data. Across the realizations measured (200k rows over 60
# days starting 2026-06-01 and 2026-09-22, and 1M rows over 90 days) the default xgboost
# model reached AP 0.60-0.89, recall at 1% FPR 0.61-0.93, AUC-ROC 0.935-0.984 and, at its
# cost-optimal threshold, precision 0.31-0.45, recall 0.65-0.93, F1 0.42-0.61 and FPR
# 1.0-1.9% (docs/benchmarks.md). The textbook bars (precision 0.90, recall 0.85 at one
# threshold) are out of reach when ~1% of transactions are fraud and part of the fraud is
# planted to look genuine, and the cost-optimal threshold deliberately trades precision for
# recall because a missed fraud costs its whole amount while a false decline costs 15. Each
# bar sits a margin below the weakest healthy realization and far above a broken model
# (shuffled labels give AP ~0.01 and AUC ~0.5; a model without behavioural features misses
# card testing and account takeover).
DEFAULT_BASELINES: dict[str, str] = {
    "average_precision": ">= 0.45",
    "recall_at_1pct_fpr": ">= 0.45",
    "auc_roc": ">= 0.90",
    "precision": ">= 0.20",
    "recall": ">= 0.50",
    "f1": ">= 0.30",
    "fpr": "<= 0.03",
}

_RULE = re.compile(r"^\s*(>=|<=|>|<)\s*([-+0-9.eE]+)\s*$")


@dataclass(frozen=True)
class BaselineResult:
    metric: str
    rule: str
    value: float
    passed: bool


def parse_rule(rule: str) -> tuple[str, float]:
    """`">= 0.9"` -> (">=", 0.9); anything else is a clear error."""
    match = _RULE.match(rule)
    if not match:
        raise ValueError(f"baseline rule {rule!r} must look like '>= 0.9' (ops: >=, >, <=, <)")
    return match.group(1), float(match.group(2))


def evaluate_baselines(
    metrics: Mapping[str, float], baselines: Mapping[str, str]
) -> list[BaselineResult]:
    """Each baseline against the metrics; a missing or NaN metric fails its baseline."""
    results = []
    for metric, rule in baselines.items():
        op, bound = parse_rule(rule)
        value = float(metrics.get(metric, float("nan")))
        passed = not math.isnan(value) and OPERATORS[op](value, bound)
        results.append(BaselineResult(metric, rule, value, passed))
    return results
