"""Data drift: effect-size statuses, sample-size sanity, score and label drift, reports."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.drift import (
    CATEGORICAL,
    CRITICAL,
    INSUFFICIENT_DATA,
    NUMERIC,
    OK,
    WARNING,
    DriftThresholds,
    compute_drift,
    drift_bar_png,
    evidently_report,
    label_rate_drift,
    numeric_psi,
    psi_from_counts,
    render_drift_table,
    score_drift,
)
from fraud_assets.core.features import (
    FEATURE_DEFS,
    FeatureConfig,
    build_feature_spec,
    compute_features,
)
from fraud_assets.core.synthetic import SyntheticConfig, generate

FEATURES = [d.name for d in FEATURE_DEFS]
AMOUNT_FAMILY = ("amount", "log_amount", "user_amount_sum_1h", "user_amount_sum_24h")


def feature_like_frame(n: int, seed: int) -> pd.DataFrame:
    """27 columns shaped like the platform's features, drawn independently per column."""
    rng = np.random.default_rng(seed)
    cols: dict[str, np.ndarray] = {}
    amount = np.exp(3.7 + 0.8 * rng.standard_normal(n))
    for name in FEATURES:
        if name == "amount":
            col = amount
        elif name == "log_amount":
            col = np.log1p(amount)
        elif name.endswith("_code"):
            weights = np.linspace(1.0, 3.0, 8)
            col = np.searchsorted(np.cumsum(weights) / weights.sum(), rng.random(n))
        elif name.startswith("is_"):
            col = rng.random(n) < 0.08
        elif name == "hour":
            col = rng.integers(0, 24, n)
        elif name == "weekday":
            col = rng.integers(0, 7, n)
        elif "count" in name or name == "merchant_labels_known":
            col = rng.poisson(25.0, n)
        elif name == "user_amount_zscore":
            col = rng.standard_normal(n)
        else:
            col = np.exp(4.0 + rng.standard_normal(n))
        cols[name] = np.asarray(col, dtype=np.float64)
    return pd.DataFrame(cols)


def is_categorical_name(name: str) -> bool:
    return name.endswith("_code") or name.startswith("is_") or name in ("hour", "weekday")


@pytest.fixture(scope="module")
def million() -> tuple[pd.DataFrame, pd.DataFrame]:
    return feature_like_frame(1_000_000, seed=1), feature_like_frame(1_000_000, seed=2)


def test_million_rows_same_or_trivially_shifted_is_ok_real_shift_is_critical(million):
    """At 1M rows every p-value is ~0, so only effect sizes may decide: no false alarms."""
    reference, current = million
    numeric = [c for c in FEATURES if not is_categorical_name(c)]
    # 2% of a standard deviation (4x the usual "0.5%" example): nothing a model notices.
    tiny = current.copy()
    tiny[numeric] = tiny[numeric] + 0.02 * tiny[numeric].std()
    real = current.copy()
    for name in ("amount", "user_amount_sum_1h", "user_amount_sum_24h"):
        real[name] = real[name] * 1.6
    real["log_amount"] = np.log1p(real["amount"])

    results = {}
    for label, frame in (("same", current), ("tiny", tiny), ("real", real)):
        results[label] = compute_drift(reference, frame, FEATURES)

    assert len(results["same"].features) == 27
    for label in ("same", "tiny"):
        statuses = {r.feature: r.status for r in results[label].features}
        assert set(statuses.values()) == {OK}, (label, statuses)
        assert results[label].status == OK
    # The shifted features are "significant" beyond doubt, which is why p-values can't decide.
    assert max(results["tiny"].feature("amount").chi2_pvalue, 0.0) < 1e-6
    assert results["tiny"].feature("amount").ks_pvalue < 1e-3

    drifted = results["real"]
    assert drifted.status == CRITICAL
    assert drifted.feature("amount").status == CRITICAL
    assert drifted.feature("log_amount").status == CRITICAL
    assert drifted.worst_features[0] in AMOUNT_FAMILY
    assert {r.status for r in drifted.features if r.feature not in AMOUNT_FAMILY} == {OK}


def test_feature_kinds_follow_names_and_cardinality():
    """PSI over categories for codes/flags/hour/weekday, quantile bins for the rest."""
    reference = feature_like_frame(20_000, seed=3)
    result = compute_drift(reference, feature_like_frame(20_000, seed=4), FEATURES)
    kinds = {r.feature: r.kind for r in result.features}
    for name in filter(is_categorical_name, FEATURES):
        assert kinds[name] == CATEGORICAL, name
    assert kinds["amount"] == NUMERIC
    assert kinds["user_amount_zscore"] == NUMERIC
    assert result.feature("amount").ks_stat is not None
    assert result.feature("channel_code").ks_stat is None

    low_card = pd.DataFrame({"n_items": np.arange(2000) % 5})
    inferred = compute_drift(low_card, low_card, ["n_items"])
    assert inferred.features[0].kind == CATEGORICAL
    forced = compute_drift(low_card, low_card, ["n_items"], categorical=set())
    assert forced.features[0].kind == NUMERIC


def test_psi_is_finite_with_empty_bins_and_pools_unseen_categories():
    """Values outside the training range or new codes must give a large, finite PSI."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=5000)
    assert numeric_psi(reference, reference) == pytest.approx(0.0, abs=1e-12)
    beyond = numeric_psi(reference, reference + 100.0)
    assert np.isfinite(beyond) and beyond > 5.0
    assert np.isfinite(psi_from_counts(np.array([10, 0, 5]), np.array([0, 7, 0])))

    ref = pd.DataFrame({"country_code": rng.integers(0, 5, 5000).astype(float)})
    cur = pd.DataFrame({"country_code": np.where(rng.random(5000) < 0.5, 7.0, 1.0)})
    row = compute_drift(ref, cur, ["country_code"]).features[0]
    assert row.kind == CATEGORICAL and np.isfinite(row.psi) and row.status == CRITICAL

    text = pd.DataFrame({"channel": rng.choice(["web", "app"], 5000)})
    shifted = pd.DataFrame({"channel": rng.choice(["web", "app", "pos"], 5000)})
    text_row = compute_drift(text, shifted, ["channel"]).features[0]
    assert text_row.kind == CATEGORICAL and text_row.status == CRITICAL
    assert text_row.reference_mean is None


def test_too_few_rows_is_insufficient_data_never_critical():
    """A handful of rows after an outage must not page anyone, however odd they look."""
    reference = feature_like_frame(10_000, seed=5)
    current = feature_like_frame(150, seed=6) * 3.0
    result = compute_drift(reference, current, FEATURES)
    assert {r.status for r in result.features} == {INSUFFICIENT_DATA}
    assert result.status == INSUFFICIENT_DATA
    assert result.n_critical == 0


def test_small_samples_noise_is_vetoed_by_significance():
    """At a few hundred rows PSI alone is noisy; the p-value veto keeps same-data checks OK."""
    rng = np.random.default_rng(7)
    reference = pd.DataFrame({"merchant_category_code": rng.integers(0, 20, 50_000)})
    noisy_psi = 0
    for seed in range(20):
        draw = np.random.default_rng(seed).integers(0, 20, 220)
        current = pd.DataFrame({"merchant_category_code": draw})
        row = compute_drift(reference, current, ["merchant_category_code"]).features[0]
        assert row.status == OK, row
        noisy_psi += row.psi >= DriftThresholds().psi_warning
    assert noisy_psi > 0


def test_min_critical_features_sets_the_overall_bar():
    """One drifting feature can be configured to warn rather than page."""
    reference = feature_like_frame(20_000, seed=8)
    current = feature_like_frame(20_000, seed=9)
    current["amount"] = current["amount"] * 3.0
    assert compute_drift(reference, current, FEATURES).status == CRITICAL
    lenient = DriftThresholds(min_critical_features=3)
    result = compute_drift(reference, current, FEATURES, lenient)
    assert result.n_critical == 1
    assert result.status == WARNING


def test_synthetic_drift_late_period_is_critical_and_random_split_is_ok():
    """The generator's planted drift (amounts, channel mix) must be caught; a shuffle not."""
    frame = generate(SyntheticConfig(n_transactions=80_000, drift=True, seed=3))
    spec = build_feature_spec(frame, FeatureConfig())
    features = compute_features(frame, spec)
    features["is_fraud"] = frame["is_fraud"].to_numpy()
    names = list(spec.features)
    n = len(features)
    early, late = features.iloc[int(0.3 * n) : int(0.7 * n)], features.iloc[int(0.85 * n) :]
    result = compute_drift(early, late, names, label_col="is_fraud")
    assert result.status == CRITICAL
    assert result.feature("channel_code").status == CRITICAL
    assert result.feature("amount").status in (WARNING, CRITICAL)
    assert result.feature("amount").current_mean > 1.4 * result.feature("amount").reference_mean
    assert result.label_rate_drift is not None

    shuffled = early.sample(frac=1.0, random_state=0)
    half = len(shuffled) // 2
    same = compute_drift(shuffled.iloc[:half], shuffled.iloc[half:], names)
    assert same.status == OK, render_drift_table(same)


def test_score_drift_and_label_rate_drift():
    """Model-score and fraud-rate moves are reported separately with their own statuses."""
    rng = np.random.default_rng(11)
    scores = rng.beta(0.5, 20.0, 300_000)
    assert score_drift(scores[:150_000], scores[150_000:]).status == OK
    assert score_drift(scores, rng.beta(0.5, 8.0, 100_000)).status == CRITICAL

    base = (rng.random(1_000_000) < 0.0100).astype(int)
    nudged = (rng.random(1_000_000) < 0.0102).astype(int)
    steady = label_rate_drift(base, nudged)
    assert steady.status == OK
    doubled = label_rate_drift(base, (rng.random(1_000_000) < 0.02).astype(int))
    assert doubled.status == CRITICAL
    assert doubled.relative_change == pytest.approx(1.0, abs=0.1)
    assert doubled.pvalue < 1e-10
    assert label_rate_drift(base, [0, 1, np.nan] * 30).status == INSUFFICIENT_DATA

    frame = pd.DataFrame({"x": rng.normal(size=4000), "score": scores[:4000], "y": base[:4000]})
    result = compute_drift(frame, frame, ["x"], score_col="score", label_col="y")
    assert result.score_drift is not None and result.score_drift.status == OK
    assert result.label_rate_drift is not None and result.label_rate_drift.status == OK


def test_result_renders_serialises_and_plots():
    """Asset pages need markdown, JSON metadata and a PNG from the same result."""
    reference = feature_like_frame(5_000, seed=12)
    current = feature_like_frame(5_000, seed=13)
    current["amount"] = current["amount"] * 2.0
    current["score"] = reference["amount"] / 1000
    reference["score"] = reference["amount"] / 1000
    result = compute_drift(reference, current, FEATURES, score_col="score")
    markdown = render_drift_table(result, top=5)
    assert markdown.startswith("**Drift: CRITICAL**")
    assert "| amount | numeric | CRITICAL |" in markdown
    assert markdown.count("\n| ") == 5 + 1 + 1  # header, five features, score row
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["status"] == CRITICAL and len(payload["features"]) == 27
    assert payload["score_drift"]["feature"] == "score"
    png = drift_bar_png(result)
    assert png.startswith(b"\x89PNG")


def test_evidently_report_writes_html_and_summarises(tmp_path):
    """The human-readable Evidently report must build from the same frames (sampled)."""
    reference = feature_like_frame(8_000, seed=14)
    current = feature_like_frame(3_000, seed=15)
    current["amount"] = current["amount"] * 3.0
    columns = ["amount", "channel_code", "is_new_device", "hour"]
    summary = evidently_report(
        reference, current, columns, tmp_path / "drift" / "report.html", max_rows=5_000
    )
    html = tmp_path / "drift" / "report.html"
    assert html.exists() and html.stat().st_size > 10_000
    assert summary["n_reference"] == 5_000 and summary["n_current"] == 3_000
    assert set(summary["column_scores"]) == set(columns)
    assert summary["column_scores"]["amount"] > summary["column_scores"]["hour"]
    assert summary["drifted_columns"] >= 1
    assert 0.0 < summary["drifted_share"] <= 1.0
