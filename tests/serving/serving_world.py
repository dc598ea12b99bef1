"""Helpers of the scoring service tests: synthetic histories and a registered model world.

`build_model_world` builds, without touching any real platform data, a small platform in
a folder: ~20k synthetic transactions ingested into the canonical schema, point-in-time
features, a small xgboost model exported to ONNX and registered in a temporary MLflow
store exactly as `fraud_assets/models.py` registers it (tags onnx_sha256, threshold,
feature_spec_version; extra files model.ubj, feature_spec.json, model_info.json; alias
champion). `ModelWorld.register` adds versions (optionally with a tampered model.onnx) for
hot-swap and integrity tests. conftest.py exposes it as the session fixture `model_world`.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from fraud_assets.core.features import FeatureConfig, FeatureSpec, build_feature_spec
from fraud_assets.core.features import compute_features as offline_features
from fraud_assets.core.schema import sort_canonical
from fraud_assets.core.synthetic import SyntheticConfig, generate

MODEL_NAME = "fraud_detector"


@cache
def synthetic_history(rows: int = 20_000, days: int = 20, seed: int = 11) -> pd.DataFrame:
    """A canonical, ingested synthetic history (cached: treat it as read-only)."""
    from fraud_assets.core.ingest import DatasetConfig, ingest_frame

    raw = generate(SyntheticConfig(n_transactions=rows, days=days, seed=seed))
    result = ingest_frame(raw, DatasetConfig(name="serving-tests", path="<memory>"))
    assert len(result.rejects) == 0, result.rejects.head()
    return sort_canonical(result.valid)


@dataclass
class ModelWorld:
    """A temporary platform with a registered champion; see the module docstring."""

    root: Path
    tracking_uri: str
    platform_db_url: str
    history: pd.DataFrame
    features: pd.DataFrame
    spec: FeatureSpec
    bundle: Path
    threshold: float
    versions: list[str] = field(default_factory=list)

    def env(self, home: Path, **extra: str) -> dict[str, str]:
        """Environment of a service instance whose state lives under `home`."""
        return {
            "FRAUD_HOME": str(home),
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "FRAUD_PLATFORM_DB_URL": self.platform_db_url,
            "FRAUD_MODEL_NAME": MODEL_NAME,
            "FRAUD_MODEL_POLL_SECONDS": "0.2",
            **extra,
        }

    def process_env(self, home: Path, **extra: str) -> dict[str, str]:
        """`env` on top of this process's environment without the platform's own variables,
        for a service started as a separate process."""
        inherited = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("FRAUD_", "MLFLOW_", "PROMETHEUS_MULTIPROC_DIR", "BENTOML_"))
        }
        # Its own BentoML home: `bentoml serve` empties the Prometheus folder there when it
        # starts, which would wipe the metrics of any other service sharing it.
        return {**inherited, "BENTOML_HOME": str(home / "bentoml"), **self.env(home, **extra)}

    def register(
        self,
        alias: str | None = "champion",
        tamper: bool = False,
        onnx_bytes: bytes | None = None,
    ) -> str:
        """Register the bundle's model as a new version; `tamper` corrupts its model.onnx
        in the artifact store after registration (the sha256 tag keeps the true hash)."""
        import mlflow
        import onnx

        from fraud_assets.core.registry import Registry, model_info_json

        data = onnx_bytes if onnx_bytes is not None else (self.bundle / "model.onnx").read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        (self.bundle / "model_info.json").write_text(
            model_info_json(
                self.threshold,
                self.spec.version,
                sha,
                {"algorithm": "xgboost", "native_file": "model.ubj"},
            )
        )
        mlflow.set_tracking_uri(self.tracking_uri)
        mlflow.set_registry_uri(self.tracking_uri)
        experiment = mlflow.get_experiment_by_name("serving-tests")
        experiment_id = (
            experiment.experiment_id
            if experiment
            else mlflow.create_experiment(
                "serving-tests", artifact_location=(self.root / "artifacts").as_uri()
            )
        )
        with mlflow.start_run(experiment_id=experiment_id):
            logged = mlflow.onnx.log_model(
                onnx.load_from_string(data),
                name="model",
                registered_model_name=MODEL_NAME,
                extra_files=[
                    str(self.bundle / "model.ubj"),
                    str(self.bundle / "feature_spec.json"),
                    str(self.bundle / "model_info.json"),
                ],
                save_as_external_data=False,
                metadata={"threshold": self.threshold, "feature_spec_version": self.spec.version},
            )
        version = str(logged.registered_model_version)
        registry = Registry(self.tracking_uri, MODEL_NAME, self.platform_db_url)
        tags = {
            "onnx_sha256": sha,
            "threshold": repr(self.threshold),
            "feature_spec_version": self.spec.version,
            "algorithm": "xgboost",
        }
        for key, value in tags.items():
            registry.client.set_model_version_tag(MODEL_NAME, version, key, value)
        if tamper:
            stored = [
                p
                for p in (self.root / "artifacts").rglob("model.onnx")
                if hashlib.sha256(p.read_bytes()).hexdigest() == sha
            ]
            assert stored, "registered model.onnx not found in the artifact store"
            newest = max(stored, key=lambda p: p.stat().st_mtime)
            corrupted = bytearray(newest.read_bytes())
            corrupted[len(corrupted) // 2] ^= 0xFF
            newest.write_bytes(bytes(corrupted))
        if alias:
            registry.set_alias(alias, version, "serving tests", "pytest")
        self.versions.append(version)
        return version


def _train(world_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, FeatureSpec, Path, float]:
    from fraud_assets.core.metrics import CostModel, cost_optimal_threshold
    from fraud_assets.core.training import TrainConfig, save_native, to_onnx, train_model

    history = synthetic_history()
    spec = build_feature_spec(history, FeatureConfig())
    features = offline_features(history, spec)
    x = features[list(spec.features)].to_numpy(np.float32)
    y = history["is_fraud"].to_numpy(np.int8)
    n = len(x)
    train, valid = slice(0, int(n * 0.7)), slice(int(n * 0.7), n)
    model = train_model(
        x[train],
        y[train],
        x[valid],
        y[valid],
        list(spec.features),
        TrainConfig(
            "xgboost",
            params={"n_estimators": 60, "max_depth": 4, "early_stopping_rounds": 15},
            n_jobs=1,
        ),
    )
    score = model.predict_proba(x[valid])
    amount = history["amount"].to_numpy(np.float64)[valid]
    threshold, _ = cost_optimal_threshold(y[valid], score, amount, CostModel())
    threshold = float(min(max(threshold, 0.05), 0.95))
    bundle = world_root / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "model.onnx").write_bytes(to_onnx(model))
    save_native(model, bundle)
    (bundle / "feature_spec.json").write_text(spec.to_json())
    return history, features, spec, bundle, threshold


def build_model_world(root: Path) -> ModelWorld:
    """Train, export and register the first champion of a new model world under `root`."""
    history, features, spec, bundle, threshold = _train(root)
    world = ModelWorld(
        root=root,
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        platform_db_url=f"sqlite:///{root / 'platform.db'}",
        history=history,
        features=features,
        spec=spec,
        bundle=bundle,
        threshold=threshold,
    )
    world.register()
    return world
