"""Model training: xgboost (default), lightgbm, or a logistic-regression baseline.

Every model is exported twice: to ONNX, which the scoring service runs, and to the
library's own file format (never pickle), which explanations and audits use.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Algorithm = Literal["xgboost", "lightgbm", "logistic"]
Imbalance = Literal["class_weight", "smote", "undersample", "none"]

DEFAULT_PARAMS: dict[str, dict[str, Any]] = {
    "xgboost": {
        "n_estimators": 300,
        "max_depth": 6,
        "learning_rate": 0.08,
        "subsample": 0.9,
        "colsample_bytree": 0.8,
        "min_child_weight": 2.0,
        "early_stopping_rounds": 40,
    },
    "lightgbm": {
        "n_estimators": 300,
        "num_leaves": 31,
        "learning_rate": 0.08,
        "subsample": 0.9,
        "subsample_freq": 1,
        "colsample_bytree": 0.8,
    },
    "logistic": {"C": 1.0, "max_iter": 500},
}


@dataclass(frozen=True)
class TrainConfig:
    """Which algorithm, how to handle the rare fraud class, and its hyperparameters."""

    algorithm: Algorithm = "xgboost"
    imbalance: Imbalance = "class_weight"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 7
    n_jobs: int = 2

    def resolved_params(self) -> dict[str, Any]:
        return {**DEFAULT_PARAMS[self.algorithm], **self.params}


@dataclass
class TrainedModel:
    """A fitted model and what is needed to score with it natively."""

    algorithm: Algorithm
    estimator: Any
    feature_names: list[str]
    params: dict[str, Any]
    best_iteration: int | None = None

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Fraud probability per row, from the native library."""
        x = np.asarray(x, dtype=np.float32)
        if self.algorithm == "xgboost":
            return self.estimator.predict_proba(x)[:, 1]
        if self.algorithm == "lightgbm":
            return self.estimator.predict_proba(x)[:, 1]
        return self.estimator.predict_proba(x.astype(np.float64))[:, 1]


def _resample(
    x: np.ndarray, y: np.ndarray, imbalance: Imbalance, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    if imbalance == "smote":
        from imblearn.over_sampling import SMOTE

        return SMOTE(random_state=seed, sampling_strategy=0.1).fit_resample(x, y)
    if imbalance == "undersample":
        from imblearn.under_sampling import RandomUnderSampler

        return RandomUnderSampler(random_state=seed, sampling_strategy=0.1).fit_resample(x, y)
    return x, y


def train_model(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    feature_names: list[str],
    config: TrainConfig,
    sample_weight: np.ndarray | None = None,
) -> TrainedModel:
    """Fit on the training window; the validation window drives early stopping only.

    `sample_weight` (one per training row) lets retraining weigh recent data above history;
    resampling strategies (smote, undersample) ignore it, since they rebuild the rows.
    """
    x_train = np.asarray(x_train, dtype=np.float32)
    x_valid = np.asarray(x_valid, dtype=np.float32)
    x_fit, y_fit = _resample(x_train, np.asarray(y_train), config.imbalance, config.seed)
    weights = sample_weight if config.imbalance in ("class_weight", "none") else None
    pos = max(float(y_fit.sum()), 1.0)
    ratio = (len(y_fit) - pos) / pos
    params = config.resolved_params()
    weighted = config.imbalance == "class_weight"
    if config.algorithm == "xgboost":
        from xgboost import XGBClassifier

        model = XGBClassifier(
            **params,
            objective="binary:logistic",
            eval_metric="aucpr",
            tree_method="hist",
            scale_pos_weight=ratio if weighted else 1.0,
            random_state=config.seed,
            n_jobs=config.n_jobs,
        )
        model.fit(x_fit, y_fit, sample_weight=weights, eval_set=[(x_valid, y_valid)], verbose=False)
        best = getattr(model, "best_iteration", None)
        if best is not None:
            # Keep only the trees early stopping chose, so native and ONNX agree exactly.
            booster = model.get_booster()[: best + 1]
            model = XGBClassifier(n_jobs=config.n_jobs)
            model._Booster = booster  # noqa: SLF001
            model.n_classes_ = 2
        return TrainedModel("xgboost", model, feature_names, params, best)
    if config.algorithm == "lightgbm":
        from lightgbm import LGBMClassifier

        model = LGBMClassifier(
            **params,
            scale_pos_weight=ratio if weighted else 1.0,
            random_state=config.seed,
            n_jobs=config.n_jobs,
            verbose=-1,
        )
        model.fit(x_fit, y_fit, sample_weight=weights)
        return TrainedModel("lightgbm", model, feature_names, params)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(
        StandardScaler(),
        LogisticRegression(
            **params, class_weight="balanced" if weighted else None, random_state=config.seed
        ),
    )
    model.fit(x_fit.astype(np.float64), y_fit, logisticregression__sample_weight=weights)
    return TrainedModel("logistic", model, feature_names, params)


def to_onnx(model: TrainedModel) -> bytes:
    """The whole scoring model as ONNX: float32 features in, fraud probability out."""
    n = len(model.feature_names)
    if model.algorithm == "xgboost":
        from onnxmltools.convert import convert_xgboost
        from onnxmltools.convert.common.data_types import FloatTensorType

        onx = convert_xgboost(
            model.estimator, initial_types=[("features", FloatTensorType([None, n]))]
        )
    elif model.algorithm == "lightgbm":
        from onnxmltools.convert import convert_lightgbm
        from onnxmltools.convert.common.data_types import FloatTensorType

        onx = convert_lightgbm(
            model.estimator,
            initial_types=[("features", FloatTensorType([None, n]))],
            zipmap=False,
        )
    else:
        from skl2onnx import to_onnx as skl_to_onnx
        from skl2onnx.common.data_types import FloatTensorType

        onx = skl_to_onnx(
            model.estimator,
            initial_types=[("features", FloatTensorType([None, n]))],
            options={id(model.estimator): {"zipmap": False}},
            target_opset=17,
        )
    return onx.SerializeToString()


def save_native(model: TrainedModel, folder: Path) -> Path:
    """Write the model in its library's own format (no pickle) and return the file."""
    folder.mkdir(parents=True, exist_ok=True)
    if model.algorithm == "xgboost":
        path = folder / "model.ubj"
        model.estimator.get_booster().save_model(str(path))
    elif model.algorithm == "lightgbm":
        path = folder / "model.lgb.txt"
        model.estimator.booster_.save_model(str(path))
    else:
        scaler, logit = model.estimator[0], model.estimator[-1]
        path = folder / "model.logistic.json"
        path.write_text(
            json.dumps(
                {
                    "mean": scaler.mean_.tolist(),
                    "scale": scaler.scale_.tolist(),
                    "coef": logit.coef_[0].tolist(),
                    "intercept": float(logit.intercept_[0]),
                    "feature_names": model.feature_names,
                }
            )
        )
    return path


def load_native_booster(path: Path) -> Any:
    """Load an xgboost booster from its own format, e.g. for TreeSHAP explanations."""
    import xgboost as xgb

    booster = xgb.Booster()
    booster.load_model(str(path))
    return booster
