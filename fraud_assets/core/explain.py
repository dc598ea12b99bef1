"""Exact per-feature contributions: TreeSHAP for tree models, linear terms for the baseline."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_assets.core.features import FeatureSpec


def contributions(algorithm: str, native_file: Path, x: np.ndarray) -> np.ndarray:
    """Per-row, per-feature contributions to the log-odds of fraud (rows x features)."""
    x = np.asarray(x, dtype=np.float32)
    if algorithm == "xgboost":
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(native_file))
        booster.set_param({"nthread": 1})
        return booster.predict(xgb.DMatrix(x), pred_contribs=True)[:, :-1]
    if algorithm == "lightgbm":
        import lightgbm as lgb

        booster = lgb.Booster(model_file=str(native_file))
        return booster.predict(x, pred_contrib=True)[:, :-1]
    params = json.loads(native_file.read_text())
    scaled = (x.astype(np.float64) - np.array(params["mean"])) / np.array(params["scale"])
    return scaled * np.array(params["coef"])


def global_importance(
    algorithm: str, native_file: Path, x: np.ndarray, spec: FeatureSpec
) -> pd.Series:
    """Mean absolute contribution of each feature, largest first."""
    values = np.abs(contributions(algorithm, native_file, x)).mean(axis=0)
    return pd.Series(values, index=list(spec.features)).sort_values(ascending=False)
