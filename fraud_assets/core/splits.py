"""Time-based train / validation / test splits that respect label delay."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class SplitConfig:
    """Where the windows end. Dates win over fractions when given.

    `label_delay_days` is the gap before the training cutoff: a model trained at the
    cutoff could only have known the labels that had arrived by then, so training
    rows use labels as known at the cutoff (a fraud reported later counts as genuine,
    as it would have in production), and the last `label_delay_days` before the
    cutoff, whose labels are mostly still unknown, are left out.
    """

    train_fraction: float = 0.6
    valid_fraction: float = 0.2
    train_end: str | None = None
    valid_end: str | None = None
    label_delay_days: float = 7.0


@dataclass(frozen=True)
class TimeSplit:
    """Row masks of the three windows, their boundaries, and what label delay removed."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    train_labels: np.ndarray
    train_end: pd.Timestamp
    valid_end: pd.Timestamp
    start: pd.Timestamp
    end: pd.Timestamp
    delayed_out: int
    relabelled: int

    def describe(self) -> dict[str, object]:
        return {
            "start": self.start.isoformat(),
            "train_end": self.train_end.isoformat(),
            "valid_end": self.valid_end.isoformat(),
            "end": self.end.isoformat(),
            "train_rows": int(self.train.sum()),
            "valid_rows": int(self.valid.sum()),
            "test_rows": int(self.test.sum()),
            "left_out_for_label_delay": self.delayed_out,
            "fraud_unknown_at_cutoff": self.relabelled,
        }


def _ts(value: str) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def time_split(
    timestamp: pd.Series,
    is_fraud: pd.Series,
    label_timestamp: pd.Series | None,
    config: SplitConfig,
) -> TimeSplit:
    """Split rows by time: train, then validation, then test. Never at random."""
    ts = pd.to_datetime(timestamp, utc=True)
    start, end = ts.min(), ts.max()
    span = end - start
    train_end = _ts(config.train_end) if config.train_end else start + span * config.train_fraction
    valid_end = (
        _ts(config.valid_end)
        if config.valid_end
        else start + span * (config.train_fraction + config.valid_fraction)
    )
    if not start < train_end < valid_end <= end:
        raise ValueError(
            f"split boundaries must satisfy start < train_end < valid_end <= end; got "
            f"{start} < {train_end} < {valid_end} <= {end}"
        )
    labels = pd.to_numeric(is_fraud, errors="coerce")
    labelled = labels.notna().to_numpy()
    gap = pd.Timedelta(days=config.label_delay_days)
    in_train_window = (ts < train_end).to_numpy()
    train = in_train_window & (ts < train_end - gap).to_numpy() & labelled
    delayed_out = int((in_train_window & labelled).sum() - train.sum())
    known_by_cutoff = np.ones(len(ts), dtype=bool)
    if label_timestamp is not None:
        lt = pd.to_datetime(label_timestamp, utc=True)
        known_by_cutoff = (lt.isna() | (lt <= train_end)).to_numpy()
    y = labels.fillna(0).to_numpy().astype(np.int8)
    train_labels = np.where(known_by_cutoff, y, 0).astype(np.int8)
    relabelled = int((train & (y == 1) & ~known_by_cutoff).sum())
    valid = ((ts >= train_end) & (ts < valid_end)).to_numpy() & labelled
    test = (ts >= valid_end).to_numpy() & labelled
    if train.sum() == 0 or valid.sum() == 0 or test.sum() == 0:
        raise ValueError(
            "a split window is empty: "
            f"train={int(train.sum())} valid={int(valid.sum())} test={int(test.sum())}"
        )
    return TimeSplit(
        train, valid, test, train_labels, train_end, valid_end, start, end, delayed_out, relabelled
    )


def recency_weights(
    timestamp: pd.Series,
    train: np.ndarray,
    recent_days: float,
    recent_share: float = 0.7,
) -> np.ndarray:
    """Per-row training weights so that the last `recent_days` of the training window carry
    `recent_share` of the total weight and the older history the rest.

    Retraining after drift uses this: the newest behaviour dominates, while history keeps
    fraud patterns that are rare in the recent window. Rows outside `train` get weight 0.
    """
    ts = pd.to_datetime(timestamp, utc=True)
    cutoff = ts[train].max() - pd.Timedelta(days=recent_days)
    recent = train & (ts > cutoff).to_numpy()
    older = train & ~recent
    weights = np.zeros(len(ts), dtype=np.float64)
    if recent.any() and older.any():
        n = float(train.sum())
        weights[recent] = recent_share * n / recent.sum()
        weights[older] = (1.0 - recent_share) * n / older.sum()
    else:
        weights[train] = 1.0
    return weights
