"""Tier 1: splits, metrics, thresholds, baselines and ONNX export as plain functions."""

import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.baselines import evaluate_baselines, parse_rule
from fraud_assets.core.metrics import (
    CostModel,
    cost_optimal_threshold,
    expected_cost,
    precision_at_k,
    recall_at_fpr,
    threshold_metrics,
)
from fraud_assets.core.scoring import OnnxScorer
from fraud_assets.core.splits import SplitConfig, time_split
from fraud_assets.core.training import TrainConfig, to_onnx, train_model


def _times(n: int) -> pd.Series:
    return pd.Series(pd.date_range("2026-06-01", periods=n, freq="h", tz="UTC"))


def test_split_is_ordered_in_time_with_a_label_delay_gap() -> None:
    """Random splits leak the future into training; these windows must follow each other."""
    ts = _times(1000)
    y = pd.Series(np.zeros(1000))
    split = time_split(ts, y, None, SplitConfig(label_delay_days=2))
    assert ts[split.train].max() < ts[split.valid].min()
    assert ts[split.valid].max() < ts[split.test].min()
    assert ts[split.train].max() < split.train_end - pd.Timedelta(days=2)
    assert split.delayed_out == 48


def test_split_uses_labels_as_known_at_the_cutoff() -> None:
    """A chargeback that arrives after the training cutoff was not known when training."""
    ts = _times(1000)
    y = pd.Series(np.zeros(1000))
    y[10] = 1
    y[11] = 1
    label_ts = ts + pd.Timedelta(days=1)
    label_ts[11] = ts.max()
    split = time_split(ts, y, label_ts, SplitConfig(label_delay_days=0))
    assert split.train_labels[10] == 1
    assert split.train_labels[11] == 0
    assert split.relabelled == 1


def test_split_dates_override_fractions_and_bad_dates_fail_clearly() -> None:
    """Teams reproduce a published evaluation window by giving its dates."""
    ts = _times(24 * 30)
    y = pd.Series(np.zeros(len(ts)))
    split = time_split(
        ts, y, None, SplitConfig(train_end="2026-06-10", valid_end="2026-06-20", label_delay_days=0)
    )
    assert split.train_end == pd.Timestamp("2026-06-10", tz="UTC")
    assert ts[split.test].min() == pd.Timestamp("2026-06-20", tz="UTC")
    with pytest.raises(ValueError, match="split boundaries"):
        time_split(ts, y, None, SplitConfig(train_end="2026-06-20", valid_end="2026-06-10"))


def test_low_fpr_metrics_on_a_known_ranking() -> None:
    """Recall at 1% FPR and precision@k are what fraud teams plan capacity with."""
    y = np.array([1, 1, 0, 1] + [0] * 196)
    score = np.linspace(1, 0, 200)
    assert recall_at_fpr(y, score, 0.01) == pytest.approx(1.0)
    assert recall_at_fpr(y, score, 0.0) == pytest.approx(2 / 3)
    assert precision_at_k(y, score, 4) == pytest.approx(0.75)
    m = threshold_metrics(y, score, score[3])
    assert (m["tp"], m["fp"], m["fn"]) == (3, 1, 0)


def test_cost_optimal_threshold_beats_every_other_threshold() -> None:
    """The stored threshold must minimize money lost, by exhaustive comparison."""
    rng = np.random.default_rng(1)
    y = (rng.random(3000) < 0.03).astype(int)
    score = np.clip(y * 0.4 + rng.random(3000) * 0.7, 0, 1)
    amount = rng.lognormal(4, 1, 3000)
    cost = CostModel(15.0)
    best, best_cost = cost_optimal_threshold(y, score, amount, cost)
    assert expected_cost(y, score, amount, best, cost) == pytest.approx(best_cost)
    for t in np.unique(score)[::37]:
        assert expected_cost(y, score, amount, t, cost) >= best_cost - 1e-6


def test_baselines_parse_and_fail_on_missing_metrics() -> None:
    """A misspelt metric must fail its baseline, not pass silently."""
    assert parse_rule(">= 0.9") == (">=", 0.9)
    with pytest.raises(ValueError, match="must look like"):
        parse_rule("at least 0.9")
    results = evaluate_baselines(
        {"fpr": 0.02, "recall": 0.5}, {"fpr": "<= 0.05", "recal": ">= 0.1"}
    )
    assert [r.passed for r in results] == [True, False]


@pytest.mark.parametrize("algorithm", ["xgboost", "lightgbm", "logistic"])
def test_onnx_matches_native_within_1e5(algorithm: str) -> None:
    """Serving runs ONNX; it must score like the model that was evaluated."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(6000, 8)).astype(np.float32)
    y = (x[:, 0] + 2 * x[:, 1] + rng.normal(size=6000) > 3).astype(int)
    model = train_model(
        x[:4000],
        y[:4000],
        x[4000:5000],
        y[4000:5000],
        [f"f{i}" for i in range(8)],
        TrainConfig(
            algorithm=algorithm, params={"n_estimators": 60} if algorithm != "logistic" else {}
        ),
    )
    onnx_score = OnnxScorer(to_onnx(model)).predict(x[5000:])
    assert np.max(np.abs(onnx_score - model.predict_proba(x[5000:]))) <= 1e-5
