"""Reason codes and explanations: the compiled attributions equal xgboost's own.

Path attribution (Saabas) must equal `pred_contribs=True, approx_contribs=True`; TreeSHAP
must equal `pred_contribs=True` (exact), bias column included, on models that split on
missing values and repeat features along a path, so every branch of the algorithm runs:
read from the leaf tables, walked with Algorithm 2 when the tables may not take the
memory, and both at once when only some trees fit.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb
from serving_world import ModelWorld

from serving.attribution import PathAttribution, TreeEnsemble, TreeShap


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


@cache
def _synthetic(depth: int, trees: int) -> tuple[xgb.Booster, np.ndarray]:
    """A logistic model on 12 noisy features, 10% of them missing, and 300 rows to explain.

    Few features and deep trees make paths split on the same feature several times.
    """
    rng = np.random.default_rng(depth)
    n, width = 3000, 12
    x = rng.normal(size=(n, width)).astype(np.float32)
    logit = 1.5 * x[:, 0] - x[:, 1] * x[:, 2] + np.sin(2 * x[:, 3]) + (x[:, 4] > 0.5)
    y = (logit + rng.logistic(size=n) > 0.5).astype(np.float32)
    x[rng.random(x.shape) < 0.1] = np.nan
    params = {
        "objective": "binary:logistic",
        "max_depth": depth,
        "eta": 0.1,
        "nthread": 1,
        "seed": depth,
    }
    booster = xgb.train(params, xgb.DMatrix(x, y), trees)
    rows = rng.normal(size=(300, width)).astype(np.float32) * 1.5
    rows[rng.random(rows.shape) < 0.1] = np.nan
    return booster, rows


def _check_exact(explainer: TreeShap, booster: xgb.Booster, x: np.ndarray) -> np.ndarray:
    """Assert that the explainer's values are xgboost's `pred_contribs`; return them."""
    contrib, bias = explainer.contributions(x)
    expected = booster.predict(xgb.DMatrix(x), pred_contribs=True)
    np.testing.assert_allclose(contrib, expected[:, :-1], rtol=0, atol=1e-5)
    np.testing.assert_allclose(bias, expected[:, -1], rtol=0, atol=1e-5)
    margin = booster.predict(xgb.DMatrix(x), output_margin=True)
    np.testing.assert_allclose(contrib.sum(axis=1) + bias, margin, rtol=0, atol=1e-5)
    return contrib


@pytest.mark.parametrize(("depth", "trees"), [(2, 80), (3, 100), (6, 200), (8, 60)])
def test_tree_shap_equals_xgboost_pred_contribs(depth: int, trees: int) -> None:
    booster, x = _synthetic(depth, trees)
    ensemble = TreeEnsemble.from_booster(booster)
    assert ensemble.max_depth == depth
    explainer = TreeShap(ensemble)
    assert explainer.walked_trees == 0 and explainer.paths is None  # all from the tables
    if depth >= 6:
        # Features repeat along paths, both on a followed and on an unfollowed branch.
        assert (explainer.tables.new_bit == 0).sum() > 100

    contrib = _check_exact(explainer, booster, x)
    assert (np.abs(contrib).mean(axis=0) > 1e-2).sum() >= 4  # real attributions, not zeros
    # Exact values are not path attribution: the two must differ on this model.
    saabas, _ = PathAttribution(ensemble).contributions(x)
    assert np.abs(saabas - contrib).max() > 1e-2


@pytest.mark.parametrize(("depth", "trees"), [(6, 200), (8, 60)])
def test_tree_shap_walks_the_trees_whose_tables_exceed_the_memory_bound(
    depth: int, trees: int
) -> None:
    """A zero bound walks every tree (Algorithm 2); a small one splits the model in two."""
    booster, x = _synthetic(depth, trees)
    ensemble = TreeEnsemble.from_booster(booster)
    tabulated = TreeShap(ensemble)
    walked = TreeShap(ensemble, max_table_bytes=0)
    assert walked.walked_trees == trees and walked.table_bytes == 0
    assert walked.paths is not None and (walked.paths.repeat >= 0).sum() > 100
    bound = tabulated.table_bytes // 10
    mixed = TreeShap(ensemble, max_table_bytes=bound)
    assert 0 < mixed.walked_trees < trees and 0 < mixed.table_bytes <= bound

    exact = _check_exact(tabulated, booster, x)
    for explainer in (walked, mixed):
        np.testing.assert_allclose(_check_exact(explainer, booster, x), exact, rtol=0, atol=1e-9)


def test_tree_shap_of_trees_that_are_lone_leaves() -> None:
    """Rounds that could not split leave one-leaf trees: they move the bias, credit nothing."""
    booster, x = _synthetic(4, 30)
    stalled = xgb.train(
        {"objective": "binary:logistic", "max_depth": 4, "gamma": 1e9, "nthread": 1},
        xgb.DMatrix(x, (np.nan_to_num(x[:, 0]) > 0).astype(np.float32)),
        3,
        xgb_model=booster.copy(),
    )
    ensemble = TreeEnsemble.from_booster(stalled)
    assert ensemble.is_leaf[ensemble.roots].sum() == 3
    for bound in (0, 2**26):
        _check_exact(TreeShap(ensemble, max_table_bytes=bound), stalled, x)

    only_leaves = xgb.train(
        {"objective": "binary:logistic", "gamma": 1e9, "nthread": 1},
        xgb.DMatrix(x, (np.nan_to_num(x[:, 0]) > 0).astype(np.float32)),
        2,
    )
    contrib = _check_exact(TreeShap(only_leaves), only_leaves, x)
    assert not contrib.any()


def test_tree_shap_on_paths_that_split_on_one_feature_again_and_again() -> None:
    """Two features and deep trees: conditions on one feature AND together along a path."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(2000, 2)).astype(np.float32)
    y = (np.sin(3 * x[:, 0]) + 0.3 * x[:, 1] + rng.logistic(size=2000) * 0.3) > 0
    x[rng.random(x.shape) < 0.1] = np.nan
    params = {"objective": "binary:logistic", "max_depth": 7, "eta": 0.3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, y.astype(np.float32)), 20)
    explainer = TreeShap(booster)
    assert explainer.walked_trees == 0
    assert (explainer.tables.new_bit == 0).sum() > (explainer.tables.new_bit > 0).sum()
    rows = rng.normal(size=(300, 2)).astype(np.float32) * 1.5
    rows[rng.random(rows.shape) < 0.1] = np.nan
    exact = _check_exact(explainer, booster, rows)
    walked = _check_exact(TreeShap(booster, max_table_bytes=0), booster, rows)
    np.testing.assert_allclose(walked, exact, rtol=0, atol=1e-9)


def test_tree_shap_rows_are_independent_and_thread_safe() -> None:
    booster, x = _synthetic(6, 200)
    explainer = TreeShap(booster)
    batch, _ = explainer.contributions(x[:40])
    with ThreadPoolExecutor(4) as pool:
        singles = list(pool.map(lambda row: explainer.contributions(row)[0][0], x[:40]))
    np.testing.assert_array_equal(np.stack(singles), batch)


def test_tree_shap_refuses_rows_of_the_wrong_width() -> None:
    booster, x = _synthetic(6, 200)
    with pytest.raises(ValueError, match="12 features"):
        TreeShap(booster).contributions(x[:, :-1])


def test_explainers_never_unpickle() -> None:
    """Numba unpickles the class of an array it allocates and hands to Python; none may.

    A fresh process (nothing compiled or memoized yet) builds and uses both explainers,
    tables and walker, with every unpickler refusing.
    """
    probe = textwrap.dedent(
        """
        import pickle, _pickle
        import numpy as np, xgboost as xgb

        rng = np.random.default_rng(0)
        x = rng.normal(size=(500, 4)).astype(np.float32)
        booster = xgb.train(
            {"max_depth": 3, "objective": "binary:logistic", "nthread": 1},
            xgb.DMatrix(x, (x[:, 0] > 0).astype(np.float32)),
            5,
        )

        def refuse(*args, **kwargs):
            raise RuntimeError("unpickling on the explain path")

        for module in (pickle, _pickle):
            module.load = module.loads = module.Unpickler = refuse
        from serving.attribution import PathAttribution, TreeShap

        for explainer in (TreeShap(booster), TreeShap(booster, max_table_bytes=0)):
            explainer.contributions(x[:3])
        PathAttribution(booster).contributions(x[:3])
        """
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=repo, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
