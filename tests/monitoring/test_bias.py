"""Fairness of served decisions: planted bias found, no bias not flagged, fairlearn parity."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from fraud_assets.core.bias import (
    BiasThresholds,
    ProtectedAttribute,
    compute_bias,
    render_bias_table,
)
from fraud_assets.core.drift import CRITICAL, INSUFFICIENT_DATA, OK
from fraud_assets.core.synthetic import SyntheticConfig, generate

AGE_BINS = [18, 25, 35, 50, 65, 120]
ATTRIBUTES = [ProtectedAttribute("gender"), ProtectedAttribute("age", bins=AGE_BINS)]
THRESHOLD = 0.7


def scored(bias: float, n: int = 200_000) -> pd.DataFrame:
    """Synthetic payments scored by a simple rule: new device or new country looks risky."""
    frame = generate(SyntheticConfig(n_transactions=n, bias=bias))
    # The frame is in time order, so "first time seen" is known at payment time.
    new_device = ~frame.duplicated(["user_id", "device_id"])
    new_country = ~frame.duplicated(["user_id", "country"])
    noise = np.random.default_rng(0).random(len(frame))
    frame["score"] = 0.6 * new_device + 0.3 * new_country + 0.2 * noise
    return frame


@pytest.fixture(scope="module")
def biased() -> pd.DataFrame:
    return scored(bias=1.0)


@pytest.fixture(scope="module")
def unbiased() -> pd.DataFrame:
    return scored(bias=0.0)


def test_planted_bias_makes_young_users_fpr_critical(biased):
    """bias=1 makes young genuine users look risky; their wrongful declines must be flagged."""
    result = compute_bias(biased, "is_fraud", "score", THRESHOLD, ATTRIBUTES)
    age = result.attribute("age_band")
    assert age.status == CRITICAL
    assert age.metrics["fpr_gap"].status == CRITICAL
    assert age.metrics["disparate_impact"].value < 0.8
    young, middle = age.group("18-24"), age.group("35-49")
    assert young.fpr > 2 * middle.fpr
    assert young.fpr == max(g.fpr for g in age.groups)
    assert result.attribute("gender").status == OK
    intersection = result.attribute("gender x age_band")
    assert intersection.is_intersection and intersection.status == CRITICAL
    assert len(intersection.groups) == 10
    assert result.status == CRITICAL


def test_no_planted_bias_raises_no_critical(unbiased):
    """With bias=0 no group is treated worse, so nothing may escalate."""
    result = compute_bias(unbiased, "is_fraud", "score", THRESHOLD, ATTRIBUTES)
    assert result.status != CRITICAL, render_bias_table(result)
    assert all(m.status != CRITICAL for a in result.attributes for m in a.metrics.values())
    age = result.attribute("age_band")
    assert age.status == OK
    young = age.group("18-24")
    others = [g.fpr for g in age.groups if g.group != "18-24"]
    assert abs(young.fpr - np.mean(others)) < 0.005
    assert result.attribute("gender").status == OK


def test_group_rates_and_headline_metrics_match_fairlearn_row_level():
    """Our weighted-cell shortcut must give exactly what fairlearn gives on raw rows."""
    rng = np.random.default_rng(1)
    n = 20_000
    group = rng.choice(["a", "b", "c"], n, p=[0.5, 0.3, 0.2])
    y = (rng.random(n) < np.where(group == "c", 0.08, 0.05)).astype(int)
    score = rng.random(n) + 0.15 * y + np.where(group == "b", 0.05, 0.0)
    frame = pd.DataFrame({"g": group, "y": y, "score": score})
    result = compute_bias(
        frame, "y", "score", 0.8, [ProtectedAttribute("g")], n_bootstrap=50, intersections=False
    )
    attribute = result.attribute("g")
    d = (score >= 0.8).astype(int)
    reference = MetricFrame(
        metrics={"sel": selection_rate, "fpr": false_positive_rate, "tpr": true_positive_rate},
        y_true=y,
        y_pred=d,
        sensitive_features=group,
    ).by_group
    for g in attribute.groups:
        assert g.selection_rate == pytest.approx(reference.loc[g.group, "sel"], abs=1e-12)
        assert g.fpr == pytest.approx(reference.loc[g.group, "fpr"], abs=1e-12)
        assert g.tpr == pytest.approx(reference.loc[g.group, "tpr"], abs=1e-12)
        assert g.n == int((group == g.group).sum())
    m = attribute.metrics
    assert m["dpd"].value == pytest.approx(
        demographic_parity_difference(y, d, sensitive_features=group), abs=1e-12
    )
    assert m["disparate_impact"].value == pytest.approx(
        demographic_parity_ratio(y, d, sensitive_features=group), abs=1e-12
    )
    assert m["eod"].value == pytest.approx(
        equalized_odds_difference(y, d, sensitive_features=group), abs=1e-12
    )
    assert m["fpr_gap"].value == pytest.approx(
        reference["fpr"].max() - reference["fpr"].min(), abs=1e-12
    )


def test_continuous_attribute_needs_bins_and_bins_label_every_row():
    """A group per distinct age is meaningless; out-of-range and missing ages stay visible."""
    ages = np.random.default_rng(3).uniform(18, 90, 200).round(1)
    frame = pd.DataFrame({"age": ages, "y": 0, "score": 0.0})
    with pytest.raises(ValueError, match="pass bins"):
        compute_bias(frame, "y", "score", 0.5, [ProtectedAttribute("age")])
    banded = ProtectedAttribute("age", bins=AGE_BINS).assign(
        pd.DataFrame({"age": [17.0, 18.0, 24.9, 25.0, 64.0, 119.0, 130.0, np.nan]})
    )
    assert banded.tolist() == [
        "out_of_range",
        "18-24",
        "18-24",
        "25-34",
        "50-64",
        "65-119",
        "out_of_range",
        "missing",
    ]
    named = ProtectedAttribute("age", bins=[18, 40, 120], labels=["young", "older"])
    assert named.assign(pd.DataFrame({"age": [20, 50]})).tolist() == ["young", "older"]
    with pytest.raises(ValueError, match="labels"):
        ProtectedAttribute("age", bins=[18, 40, 120], labels=["one"]).assign(frame)
    mapped = ProtectedAttribute("country", groups={"DE": "EU", "FR": "EU", "US": "US"})
    assert mapped.assign(pd.DataFrame({"country": ["DE", "US", "BR", None]})).tolist() == [
        "EU",
        "US",
        "other",
        "missing",
    ]


def test_small_groups_are_reported_but_do_not_drive_status():
    """Twenty payments from one group can't justify a fairness alert, but must be visible."""
    rng = np.random.default_rng(2)
    n = 10_000
    frame = pd.DataFrame(
        {
            "segment": np.where(np.arange(n) < 20, "tiny", rng.choice(["x", "y"], n)),
            "y": (rng.random(n) < 0.05).astype(int),
            "score": rng.random(n),
        }
    )
    frame.loc[:19, "score"] = 1.0  # every payment of the tiny group declined
    result = compute_bias(frame, "y", "score", 0.9, [ProtectedAttribute("segment")])
    segment = result.attribute("segment")
    tiny = segment.group("tiny")
    assert not tiny.included and tiny.selection_rate == 1.0 and "excluded" in tiny.note
    assert segment.status == OK
    assert segment.metrics["disparate_impact"].value > 0.8

    alone = compute_bias(frame.head(60), "y", "score", 0.9, [ProtectedAttribute("segment")])
    assert alone.attribute("segment").status == INSUFFICIENT_DATA


def test_bootstrap_intervals_are_deterministic_and_ordered(biased):
    """Same seed, same intervals: reports must not change between reruns."""
    sample = biased.sample(50_000, random_state=0)
    first = compute_bias(sample, "is_fraud", "score", THRESHOLD, ATTRIBUTES, n_bootstrap=100)
    again = compute_bias(sample, "is_fraud", "score", THRESHOLD, ATTRIBUTES, n_bootstrap=100)
    assert first.to_dict() == again.to_dict()
    for attribute in first.attributes:
        for metric in attribute.metrics.values():
            assert metric.ci_low <= metric.ci_high
    fpr_gap = first.attribute("age_band").metrics["fpr_gap"]
    assert fpr_gap.ci_low > BiasThresholds().fpr_gap_critical


def test_unlabelled_rows_are_dropped_and_result_renders(biased):
    """Immature labels must not count as genuine; the report must render and serialise."""
    sample = biased.head(30_000).copy()
    sample["is_fraud"] = sample["is_fraud"].astype(float)
    sample.loc[sample.index[-5_000:], "is_fraud"] = np.nan
    result = compute_bias(sample, "is_fraud", "score", THRESHOLD, ATTRIBUTES, intersections=False)
    assert result.n_rows == 25_000 and result.n_unlabelled == 5_000
    assert [a.name for a in result.attributes] == ["gender", "age_band"]
    markdown = render_bias_table(result)
    assert markdown.startswith(f"**Fairness: {result.status}**")
    assert "| age_band |" in markdown and "| 18-24 |" in markdown
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["attributes"][1]["metrics"]["fpr_gap"]["ci_low"] is not None
