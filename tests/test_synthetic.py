"""Tests of the synthetic transaction generator."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fraud_assets.core.schema import CURRENCIES, FIELD_BY_NAME, canonical_order, sort_canonical
from fraud_assets.core.synthetic import (
    CATEGORIES,
    COUNTRIES,
    PATTERNS,
    SyntheticConfig,
    generate,
    generate_with_truth,
    main,
    write,
)

ROWS = 30_000
COLUMNS = [
    "transaction_id",
    "timestamp",
    "user_id",
    "merchant_id",
    "merchant_category",
    "amount",
    "currency",
    "device_id",
    "device_type",
    "channel",
    "country",
    "gender",
    "age",
    "is_fraud",
    "label_timestamp",
]
DTYPE_KIND = {"string": "O", "float": "f", "int": "i", "datetime": "M"}

Generated = tuple[pd.DataFrame, np.ndarray]


@pytest.fixture(scope="module")
def base() -> Generated:
    """The default behaviour at test size."""
    return generate_with_truth(SyntheticConfig(n_transactions=ROWS))


@pytest.fixture(scope="module")
def drifted() -> Generated:
    """The same world with a shifted late period."""
    return generate_with_truth(SyntheticConfig(n_transactions=ROWS, drift=True))


@pytest.fixture(scope="module")
def biased() -> Generated:
    """The same world with the strongest bias."""
    return generate_with_truth(SyntheticConfig(n_transactions=ROWS, bias=1.0))


def _home_country(frame: pd.DataFrame, truth: np.ndarray) -> pd.Series:
    """Each user's most frequent country over untouched rows."""
    genuine = frame[truth == "none"]
    return genuine.groupby("user_id")["country"].agg(lambda s: s.mode().iloc[0])


def _new_device(frame: pd.DataFrame) -> pd.Series:
    """True where the user pays with a device for the first time."""
    return ~frame.duplicated(["user_id", "device_id"])


def _young_gap(frame: pd.DataFrame) -> float:
    """New-device rate of young genuine transactions minus that of older ones."""
    new = _new_device(frame)
    genuine = frame["is_fraud"] == 0
    young = frame["age"] < 30
    return float(new[genuine & young].mean() - new[genuine & ~young].mean())


def _split_late(frame: pd.DataFrame, config: SyntheticConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows before and after the drift start of ``config``."""
    start = pd.Timestamp(config.start, tz="UTC")
    cut = start + pd.Timedelta(days=config.days * config.drift_start_fraction)
    late = frame["timestamp"] >= cut
    return frame[~late], frame[late]


def test_schema_columns_and_dtypes(base: Generated) -> None:
    """Every downstream asset relies on the canonical names, order and dtypes."""
    frame, truth = base
    assert list(frame.columns) == COLUMNS
    assert canonical_order(frame.columns) == COLUMNS
    for column in COLUMNS:
        assert frame[column].dtype.kind == DTYPE_KIND[FIELD_BY_NAME[column].kind], column
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert str(frame["label_timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["is_fraud"].dtype == np.int8
    assert frame["amount"].dtype == np.float64 and frame["age"].dtype == np.float64
    assert len(frame) == ROWS and len(truth) == ROWS
    assert not frame.isna().any().any()


def test_schema_values(base: Generated) -> None:
    """Values must be plausible so features and fairness reports mean something."""
    frame, _ = base
    assert frame["transaction_id"].is_unique
    assert frame["transaction_id"].str.fullmatch(r"t\d{10}").all()
    assert (frame["amount"] > 0).all()
    assert np.allclose(frame["amount"], frame["amount"].round(2))
    assert set(frame["currency"]) == {"EUR", "USD", "GBP"} <= CURRENCIES
    assert set(frame["merchant_category"]) == set(CATEGORIES)
    assert set(frame["country"]) <= set(COUNTRIES) and len(set(frame["country"])) == 10
    assert set(frame["device_type"]) == {"mobile", "desktop", "tablet"}
    assert set(frame["channel"]) == {"web", "app"}
    assert set(frame["gender"]) == {"F", "M"}
    assert frame["age"].between(18, 90).all()
    assert set(frame["is_fraud"].unique()) == {0, 1}
    gb = frame[frame["country"] == "GB"]
    assert (gb["currency"] == "GBP").mean() > 0.85
    assert frame.groupby("user_id")["gender"].nunique().max() == 1
    assert frame.groupby("device_id")["device_type"].nunique().max() == 1


def test_sorted_by_timestamp_then_id(base: Generated) -> None:
    """Feature computation assumes the canonical row order."""
    frame, _ = base
    pd.testing.assert_frame_equal(frame, sort_canonical(frame))


def test_write_roundtrip(base: Generated, tmp_path: Path) -> None:
    """Datasets are handed between assets as files, attrs included."""
    frame, _ = base
    json.dumps(frame.attrs)
    parquet = write(frame, tmp_path / "nested" / "tx.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(parquet), frame)
    csv = write(frame.head(100), tmp_path / "tx.csv")
    assert len(pd.read_csv(csv)) == 100


def test_cli_writes_and_summarises(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The CLI is how operators produce datasets by hand."""
    out = tmp_path / "cli" / "tx.parquet"
    assert main(["--rows", "5000", "--days", "14", "--seed", "3", "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "rows=5000" in line and "fraud_rate=" in line
    assert len(pd.read_parquet(out)) == 5000


def test_invalid_config_rejected() -> None:
    """A silently clipped config would produce data that does not match its description."""
    with pytest.raises(ValueError):
        generate(SyntheticConfig(n_transactions=10))
    with pytest.raises(ValueError):
        generate(SyntheticConfig(n_transactions=5000, bias=2.0))


def test_deterministic_by_seed(base: Generated) -> None:
    """Experiments and tests must be reproducible from the config alone."""
    frame, truth = base
    again, truth_again = generate_with_truth(SyntheticConfig(n_transactions=ROWS))
    pd.testing.assert_frame_equal(frame, again)
    np.testing.assert_array_equal(truth, truth_again)
    other = generate(SyntheticConfig(n_transactions=ROWS, seed=7))
    assert not frame["amount"].equals(other["amount"])
    assert not frame["timestamp"].equals(other["timestamp"])


@pytest.mark.parametrize(
    "config",
    [
        SyntheticConfig(n_transactions=20_000),
        SyntheticConfig(n_transactions=50_000, seed=1, drift=True),
        SyntheticConfig(n_transactions=20_000, seed=2, bias=1.0),
    ],
)
def test_fraud_rate_in_range(config: SyntheticConfig) -> None:
    """A realistic class imbalance is what the training and threshold code is built for."""
    rate = generate(config)["is_fraud"].mean()
    assert 0.005 <= rate <= 0.02


def test_every_pattern_planted(base: Generated, drifted: Generated) -> None:
    """Each pattern exercises a different feature family, so none may be missing."""
    frame, truth = base
    assert set(truth) == set(PATTERNS) - {"drift_pattern"}
    assert (frame["is_fraud"][truth != "none"] == 1).all()
    noise = int(frame["is_fraud"][truth == "none"].sum())
    assert 1 <= noise <= 0.05 * frame["is_fraud"].sum()
    _, drift_truth = drifted
    assert set(drift_truth) == set(PATTERNS)


def test_card_testing_bursts(base: Generated) -> None:
    """Card testing must be visible to velocity, amount and new-device features."""
    frame, truth = base
    rows = frame[truth == "card_testing"]
    bursts = rows.groupby(["user_id", "device_id"])
    assert bursts.size().between(5, 20).all()
    assert bursts["timestamp"].agg(lambda s: s.max() - s.min()).max() < pd.Timedelta(minutes=30)
    assert rows["amount"].between(0.5, 5.0).all()
    genuine = frame[truth == "none"]
    digital = bursts["merchant_category"].first() == "digital_goods"
    assert digital.mean() >= max(0.4, (genuine["merchant_category"] == "digital_goods").mean())
    seen = set(zip(genuine["user_id"], genuine["device_id"], strict=True))
    assert not seen & set(zip(rows["user_id"], rows["device_id"], strict=True))


def test_account_takeover_new_device_abroad(base: Generated) -> None:
    """Takeovers must be separable by new-device, new-country and amount features."""
    frame, truth = base
    rows = frame[truth == "account_takeover"]
    genuine = frame[truth == "none"]
    seen = set(zip(genuine["user_id"], genuine["device_id"], strict=True))
    assert not seen & set(zip(rows["user_id"], rows["device_id"], strict=True))
    assert (rows["country"] != rows["user_id"].map(_home_country(frame, truth))).all()
    events = rows.groupby(["user_id", "device_id"])
    assert events.size().min() >= 3
    assert events["timestamp"].agg(lambda s: s.max() - s.min()).max() < pd.Timedelta(hours=24)
    usual = genuine.groupby("user_id")["amount"].median()
    cash_out = rows[events.cumcount() > 0]
    assert (cash_out["amount"] / cash_out["user_id"].map(usual)).median() > 3


def test_compromised_merchant_window(base: Generated) -> None:
    """A merchant-level fraud burst is what the merchant fraud-rate feature has to catch."""
    frame, truth = base
    rows = frame[truth == "compromised_merchant"]
    assert 1 <= rows["merchant_id"].nunique() <= 2
    for merchant, part in rows.groupby("merchant_id"):
        lo, hi = part["timestamp"].min(), part["timestamp"].max()
        assert pd.Timedelta(days=3) <= hi - lo <= pd.Timedelta(days=9)
        window = frame[(frame["merchant_id"] == merchant) & frame["timestamp"].between(lo, hi)]
        assert window["is_fraud"].mean() > 0.3


def test_amount_outliers_relative_to_user(base: Generated) -> None:
    """Outliers must stand out against the user's own history, not the population's."""
    frame, truth = base
    rows = frame[truth == "amount_outlier"]
    usual = frame[truth == "none"].groupby("user_id")["amount"].median()
    assert (rows["amount"] / rows["user_id"].map(usual)).median() > 5


def test_label_timestamps(base: Generated) -> None:
    """Label delay drives the point-in-time correct training cut-off."""
    frame, _ = base
    delay = frame["label_timestamp"] - frame["timestamp"]
    assert (delay >= pd.Timedelta(0)).all()
    genuine = delay[frame["is_fraud"] == 0]
    assert (genuine == pd.Timedelta(days=30)).all()
    fraud_days = delay[frame["is_fraud"] == 1].dt.total_seconds() / 86_400
    assert 5.0 < fraud_days.median() < 9.5
    assert fraud_days.std() > 1.0


def test_daily_and_weekly_rhythm(base: Generated) -> None:
    """Hour-of-day is a model feature, so genuine traffic needs a realistic rhythm."""
    frame, truth = base
    genuine = frame[truth == "none"]
    hour = genuine["timestamp"].dt.hour
    night = hour.between(0, 5).mean() / 6
    evening = hour.between(18, 22).mean() / 5
    assert night < evening / 4
    per_day = genuine.groupby(genuine["timestamp"].dt.floor("D")).size()
    weekend = per_day.index.dayofweek >= 5
    assert per_day[weekend].mean() > 1.05 * per_day[~weekend].mean()


def test_drift_shifts_late_period(drifted: Generated) -> None:
    """The drift monitors need a dataset whose late period really is different."""
    frame, truth = drifted
    config = SyntheticConfig(n_transactions=ROWS, drift=True)
    early, late = _split_late(frame, config)
    assert 1.3 < late["amount"].median() / early["amount"].median() < 2.0
    assert not early["merchant_id"].str.startswith("M_new_").any()
    assert late["merchant_id"].str.startswith("M_new_").mean() > 0.25
    assert (late["channel"] == "app").mean() > (early["channel"] == "app").mean() + 0.1
    assert (late["device_type"] == "mobile").mean() > (early["device_type"] == "mobile").mean()
    pattern = frame[truth == "drift_pattern"]
    assert pattern["timestamp"].min() >= late["timestamp"].min()
    assert (pattern["merchant_category"] == "gaming").all()


def test_no_drift_keeps_late_period(base: Generated) -> None:
    """Without drift a monitor must not fire, or its alerts would be meaningless."""
    frame, truth = base
    early, late = _split_late(frame, SyntheticConfig(n_transactions=ROWS))
    assert 0.9 < late["amount"].median() / early["amount"].median() < 1.1
    assert not frame["merchant_id"].str.startswith("M_new_").any()
    mix_early = early["merchant_id"].value_counts(normalize=True)
    mix_late = late["merchant_id"].value_counts(normalize=True)
    assert 0.5 * mix_early.sub(mix_late, fill_value=0).abs().sum() < 0.1
    assert abs((late["channel"] == "app").mean() - (early["channel"] == "app").mean()) < 0.05
    assert "drift_pattern" not in set(truth)


def test_bias_knob(base: Generated, biased: Generated) -> None:
    """The fairness report must find a gap when bias is planted and none when it is not."""
    assert abs(_young_gap(base[0])) < 0.04
    assert _young_gap(biased[0]) > 0.08


def test_bias_only_touches_young_genuine_rows(base: Generated, biased: Generated) -> None:
    """Bias must act through age alone, so everything else stays comparable."""
    keys = [c for c in COLUMNS if c != "transaction_id"]

    def older(frame: pd.DataFrame) -> pd.DataFrame:
        rows = frame.loc[(frame["age"] >= 30) & (frame["is_fraud"] == 0), keys]
        return rows.sort_values(keys).reset_index(drop=True)

    pd.testing.assert_frame_equal(older(base[0]), older(biased[0]))
    np.testing.assert_array_equal(np.sort(base[1]), np.sort(biased[1]))
