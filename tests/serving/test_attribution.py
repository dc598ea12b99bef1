"""Reason codes: path attribution equals xgboost's own approximate contributions."""

from __future__ import annotations

import numpy as np
import xgboost as xgb
from serving_world import ModelWorld

from serving.attribution import PathAttribution


def test_path_attribution_equals_xgboost_approx_contribs(model_world: ModelWorld) -> None:
    booster = xgb.Booster()
    booster.load_model(str(model_world.bundle / "model.ubj"))
    x = model_world.features[list(model_world.spec.features)].to_numpy(np.float32)[:2000].copy()
    rng = np.random.default_rng(3)
    x[rng.random(x.shape) < 0.05] = np.nan  # missing values follow each split's default branch
    expected = booster.predict(
        xgb.DMatrix(x), pred_contribs=True, approx_contribs=True, validate_features=False
    )
    contrib, bias = PathAttribution(booster).contributions(x)
    np.testing.assert_allclose(contrib, expected[:, :-1], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bias, expected[:, -1], rtol=1e-5, atol=1e-5)
    margin = booster.predict(xgb.DMatrix(x), output_margin=True, validate_features=False)
    np.testing.assert_allclose(contrib.sum(axis=1) + bias, margin, rtol=1e-4, atol=1e-4)
    assert (np.abs(contrib) > 0).any(axis=0).sum() > 5  # many features carry credit
