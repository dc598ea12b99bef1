"""Model assets: training, ONNX export and registration, the promotion gate, explanations."""

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import dagster as dg
import numpy as np
import pandas as pd

from fraud_assets.core.baselines import DEFAULT_BASELINES, evaluate_baselines
from fraud_assets.core.bias import (
    BiasResult,
    BiasThresholds,
    ProtectedAttribute,
    compute_bias,
    render_bias_table,
)
from fraud_assets.core.drift import CRITICAL, NOT_COMPARABLE, compute_drift
from fraud_assets.core.features import FeatureSpec, compute_features
from fraud_assets.core.metrics import HEADLINE, CostModel, cost_optimal_threshold, evaluate
from fraud_assets.core.plots import (
    bar_png,
    confusion_matrix_png,
    markdown_image,
    pr_curve_png,
    roc_curve_png,
)
from fraud_assets.core.registry import (
    CHALLENGER,
    CHAMPION,
    INFO_FILE,
    ONNX_FILE,
    SPEC_FILE,
    Registry,
    canonical_onnx,
    model_info_json,
    sha256_bytes,
)
from fraud_assets.core.render import markdown_table
from fraud_assets.core.scoring import OnnxScorer
from fraud_assets.core.splits import SplitConfig, recency_weights, time_split
from fraud_assets.core.training import (
    TrainConfig,
    TrainedModel,
    save_native,
    to_onnx,
    train_model,
)
from fraud_assets.datasets import read_history
from fraud_assets.features import feature_set, load_feature_set
from fraud_pipelines.resources import (
    DataLake,
    MlflowTracking,
    atomic_write_bytes,
    atomic_write_parquet,
    atomic_write_text,
    pause_point,
)

ONNX_PARITY_CHECK = "onnx_matches_native"
BASELINE_CHECK = "meets_baselines"
FAIRNESS_CHECK = "fair_to_protected_groups"
GATES = (ONNX_PARITY_CHECK, BASELINE_CHECK, FAIRNESS_CHECK)
PARITY_TOLERANCE = 1e-5
BUNDLE = ("models", "latest")
REFERENCE_FILE = "reference.parquet"
# A sample of the validation window, with scores, that drift reports compare against.
REFERENCE_ROWS = 50_000


class FraudModelConfig(dg.Config):
    """Run config of `fraud_model`, editable in the launchpad."""

    algorithm: Literal["xgboost", "lightgbm", "logistic"] = "xgboost"
    imbalance: Literal["class_weight", "smote", "undersample", "none"] = "class_weight"
    n_estimators: int = 300
    max_depth: int = 6
    learning_rate: float = 0.08
    regularization_c: float = 1.0
    """Inverse regularization strength of the logistic baseline."""
    train_fraction: float = 0.6
    valid_fraction: float = 0.2
    train_end: str | None = None
    """Date that ends the training window (overrides train_fraction), e.g. 2026-07-15."""
    valid_end: str | None = None
    """Date that ends the validation window; the test window runs from here to the end."""
    label_delay_days: float = 7.0
    false_decline_cost: float = 15.0
    """What declining a genuine customer costs (review and churn), in the data's currency."""
    baselines: dict[str, str] = DEFAULT_BASELINES
    recent_days: float | None = None
    """Data strategy: weigh the last `recent_days` of the training window at `recent_weight`
    of the total and the older history at the rest. Empty: every row weighs the same."""
    recent_weight: float = 0.7
    fairness_attributes: list[str] = ["gender", "age"]  # noqa: RUF012
    """Protected attributes the fairness gate compares (age is binned by `age_bins`)."""
    age_bins: list[float] = [18, 25, 35, 50, 65, 120]  # noqa: RUF012
    disparate_impact_critical: float = 0.8
    fairness_gate_metrics: list[str] = ["fpr_gap"]  # noqa: RUF012
    """Metrics whose CRITICAL status blocks promotion. The default gates on the false-positive
    gap (good customers of one group wrongly declined more often). Add "disparate_impact" to
    gate on decline-rate ratios too; they also move when groups' fraud rates differ, so on
    their own they can punish an accurate model. Every metric is reported either way."""
    seed: int = 7

    def train_config(self) -> TrainConfig:
        if self.algorithm == "logistic":
            params: dict[str, object] = {"C": self.regularization_c}
        else:
            params = {
                "n_estimators": self.n_estimators,
                "max_depth": self.max_depth,
                "learning_rate": self.learning_rate,
            }
            if self.algorithm == "lightgbm":
                params.pop("max_depth")
        return TrainConfig(self.algorithm, self.imbalance, params, self.seed)


def _log_png(mlflow_module: object, png: bytes, name: str) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(png)
        mlflow_module.log_artifact(str(path), artifact_path="plots")  # type: ignore[attr-defined]


def _save_native_atomically(model: TrainedModel, bundle: Path) -> Path:
    """The native model file in the bundle, replaced in one rename (see `atomic_write`).
    Staging folders left by a killed run are removed."""
    with tempfile.TemporaryDirectory(dir=bundle, prefix=".native.") as staging:
        written = save_native(model, Path(staging))
        target = bundle / written.name
        os.replace(written, target)
    for stale in bundle.glob(".native.*"):
        shutil.rmtree(stale, ignore_errors=True)
    return target


def interrupted_version(
    instance: dg.DagsterInstance, registry: Registry, onnx_sha: str, current_run_id: str
) -> str | None:
    """A registered version of this exact model whose registering run never recorded it.

    A run killed after MLflow registered its model but before Dagster recorded the
    materialization leaves a version nobody points at. Retraining on the same data and
    config gives the same ONNX bytes, so the rerun adopts that version instead of
    registering a duplicate. Only versions registered by a run of this Dagster instance that
    recorded no `fraud_model` materialization qualify: a version that was materialized, or
    that was registered from elsewhere, is never adopted (its tags would be overwritten).
    """
    for version, run_id in registry.versions_with_sha256(onnx_sha):
        if not run_id or run_id == current_run_id or instance.get_run_by_id(run_id) is None:
            continue
        recorded = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        keys = {e.asset_materialization.asset_key for e in recorded if e.asset_materialization}
        if dg.AssetKey("fraud_model") not in keys:
            return version
    return None


def _register(
    mlf: object, model_name: str, onnx_bytes: bytes, files: list[Path], metadata: dict
) -> str:
    """Log the ONNX model with the bundle's `files` to the active MLflow run and register it
    as a new version of `model_name`."""
    import onnx

    logged = mlf.onnx.log_model(  # type: ignore[attr-defined]
        onnx.load_from_string(onnx_bytes),
        name="model",
        registered_model_name=model_name,
        extra_files=[str(f) for f in files],
        save_as_external_data=False,
        pip_requirements=["onnx", "onnxruntime"],
        metadata=metadata,
    )
    return str(logged.registered_model_version)


def _end_orphaned_run(registry: Registry, version: str) -> None:
    """Mark the MLflow run of an adopted version as killed if it was left running."""
    run_id = registry.version(version).run_id
    if run_id and registry.client.get_run(run_id).info.status == "RUNNING":
        registry.client.set_terminated(run_id, status="KILLED")


@dg.asset(
    group_name="models",
    kinds={"xgboost", "onnx", "mlflow"},
    deps=[feature_set],
    code_version="model-v1",
    check_specs=[
        dg.AssetCheckSpec(
            ONNX_PARITY_CHECK,
            asset="fraud_model",
            blocking=True,
            description="ONNX and native probabilities agree within 1e-5 on the test window.",
        ),
        dg.AssetCheckSpec(
            BASELINE_CHECK,
            asset="fraud_model",
            blocking=True,
            description="Test-window metrics meet every configured baseline.",
        ),
        dg.AssetCheckSpec(
            FAIRNESS_CHECK,
            asset="fraud_model",
            blocking=True,
            description="At the model's threshold on the test window, no protected group's "
            "good customers are wrongly declined significantly more often than another's "
            "(FPR gap; configurable to gate on disparate impact too). All fairness metrics "
            "are reported.",
        ),
    ],
)
def fraud_model(
    context: dg.AssetExecutionContext,
    config: FraudModelConfig,
    lake: DataLake,
    mlflow: MlflowTracking,
) -> dg.MaterializeResult:
    """A fraud classifier trained on a time-based split, exported to ONNX and registered.

    Train, validation and test windows follow each other in time; training uses only the
    labels known at its cutoff. The decision threshold minimizes expected cost on the
    validation window (a missed fraud costs its amount, a false decline costs
    `false_decline_cost`). Metrics are on the test window: average precision and recall at
    1% FPR first, never accuracy. The version is registered in MLflow as `fraud_detector`
    with alias `challenger`; the promotion gate decides whether it becomes `champion`.

    Training is seeded, so the same data and config give the same ONNX sha256. A rerun of a
    run that was killed after registering its model adopts that version rather than
    registering the same model twice. Every file is written atomically.
    """
    import mlflow as mlf

    features, spec = load_feature_set(lake)
    split = time_split(
        features["timestamp"],
        features["is_fraud"],
        features.get("label_timestamp"),
        SplitConfig(
            config.train_fraction,
            config.valid_fraction,
            config.train_end,
            config.valid_end,
            config.label_delay_days,
        ),
    )
    context.log.info(f"time split: {split.describe()}")
    x = features[list(spec.features)].to_numpy(np.float32)
    y = pd.to_numeric(features["is_fraud"], errors="coerce").fillna(0).to_numpy(np.int8)
    amount = features["amount"].to_numpy(np.float64) if "amount" in features else np.ones(len(y))
    train_cfg = config.train_config()
    weights = None
    if config.recent_days:
        weights = recency_weights(
            features["timestamp"], split.train, config.recent_days, config.recent_weight
        )[split.train]
    model = train_model(
        x[split.train],
        split.train_labels[split.train],
        x[split.valid],
        y[split.valid],
        list(spec.features),
        train_cfg,
        sample_weight=weights,
    )
    cost = CostModel(config.false_decline_cost)
    valid_score = model.predict_proba(x[split.valid])
    threshold, _ = cost_optimal_threshold(y[split.valid], valid_score, amount[split.valid], cost)
    test_score = model.predict_proba(x[split.test])
    y_test, amount_test = y[split.test], amount[split.test]
    test_metrics = evaluate(y_test, test_score, amount_test, threshold, cost)
    valid_metrics = evaluate(y[split.valid], valid_score, amount[split.valid], threshold, cost)

    onnx_bytes = canonical_onnx(to_onnx(model))
    onnx_score = OnnxScorer(onnx_bytes, threads=2).predict(x[split.test])
    parity = float(np.max(np.abs(onnx_score - test_score))) if len(test_score) else 0.0
    parity_ok = parity <= PARITY_TOLERANCE
    baseline_results = evaluate_baselines(test_metrics, config.baselines)
    baselines_ok = all(b.passed for b in baseline_results)
    onnx_sha = sha256_bytes(onnx_bytes)

    bundle = lake.path(*BUNDLE, ONNX_FILE).parent
    atomic_write_bytes(bundle / ONNX_FILE, onnx_bytes)
    native_path = _save_native_atomically(model, bundle)
    atomic_write_text(bundle / SPEC_FILE, spec.to_json())
    test_scores = pd.DataFrame(
        {
            "transaction_id": features.loc[split.test, "transaction_id"].to_numpy(),
            "is_fraud": y_test,
            "amount": amount_test,
            "score": test_score,
        }
    )
    atomic_write_parquet(bundle / "test_scores.parquet", test_scores)

    # The drift reference is the validation window: out-of-sample scores (training-window
    # scores are overfit) on history that is warm (the first days of any history have every
    # user "new" and short velocity windows), and the period closest to serving.
    valid_rows = np.flatnonzero(split.valid)
    rng = np.random.default_rng(config.seed)
    reference_rows = np.sort(
        rng.choice(valid_rows, size=min(REFERENCE_ROWS, len(valid_rows)), replace=False)
    )
    reference = features.iloc[reference_rows][["transaction_id", "timestamp", *spec.features]]
    reference = reference.assign(
        is_fraud=y[reference_rows], score=model.predict_proba(x[reference_rows])
    )
    atomic_write_parquet(bundle / REFERENCE_FILE, reference)

    history = read_history(lake)
    test_frame = pd.DataFrame(
        {
            "transaction_id": features.loc[split.test, "transaction_id"].to_numpy(),
            "score": test_score,
            "is_fraud": y_test,
        }
    )
    fairness = bias_of_scores(
        history,
        test_frame,
        threshold,
        protected_attributes(config.fairness_attributes, config.age_bins),
        BiasThresholds(disparate_impact_critical=config.disparate_impact_critical),
    )
    fairness_ok = fairness is None or not any(
        a.metrics[m].status == CRITICAL
        for a in fairness.attributes
        # Intersections (gender x age band) have small, noisy groups: they are reported for a
        # person to review, while single attributes gate promotion.
        if len(a.columns) == 1
        for m in config.fairness_gate_metrics
        if m in a.metrics
    )
    test_features = features.loc[split.test, list(spec.features)].assign(score=test_score)
    drift_at_training = compute_drift(
        reference,
        test_features,
        [f for f in spec.features if f not in NOT_COMPARABLE],
        score_col="score",
    )

    pr_png = pr_curve_png(y_test, test_score, threshold)
    roc_png = roc_curve_png(y_test, test_score)
    cm_png = confusion_matrix_png(
        test_metrics["tp"], test_metrics["fp"], test_metrics["fn"], test_metrics["tn"]
    )
    experiment_id = mlflow.experiment_id()
    registry = mlflow.registry()
    with mlf.start_run(experiment_id=experiment_id, run_name=f"{config.algorithm}") as run:
        # Tagged before anything is registered, so a version left by a killed run can still
        # be recognised by its model's fingerprint.
        mlf.set_tags({"onnx_sha256": onnx_sha, "dagster_run_id": context.run.run_id})
        mlf.log_params(
            {
                "algorithm": config.algorithm,
                "imbalance": config.imbalance,
                **{f"param_{k}": v for k, v in train_cfg.resolved_params().items()},
                "feature_spec_version": spec.version,
                "feature_count": len(spec.features),
                "false_decline_cost": config.false_decline_cost,
                "label_delay_days": config.label_delay_days,
                "recent_days": config.recent_days,
                "recent_weight": config.recent_weight if config.recent_days else None,
                **{f"split_{k}": v for k, v in split.describe().items()},
                "best_iteration": model.best_iteration,
                "dagster_run_id": context.run.run_id,
            }
        )
        mlf.log_metrics({f"test_{k}": v for k, v in test_metrics.items() if np.isfinite(v)})
        mlf.log_metrics({f"valid_{k}": v for k, v in valid_metrics.items() if np.isfinite(v)})
        mlf.log_metrics({"threshold": threshold, "onnx_max_abs_diff": parity})
        for png, name in ((pr_png, "pr_curve.png"), (roc_png, "roc_curve.png")):
            _log_png(mlf, png, name)
        _log_png(mlf, cm_png, "confusion_matrix.png")
        info = model_info_json(
            threshold,
            spec.version,
            onnx_sha,
            {
                "algorithm": config.algorithm,
                "native_file": native_path.name,
                "test_metrics": test_metrics,
                "split": split.describe(),
                "false_decline_cost": config.false_decline_cost,
                "fairness": fairness.to_dict() if fairness else None,
                "drift_test_vs_training": {
                    "status": drift_at_training.status,
                    "worst_features": drift_at_training.worst_features[:5],
                    "psi": {r.feature: r.psi for r in drift_at_training.features},
                },
                "trained_at": pd.Timestamp.now(tz="UTC").isoformat(),
                "rows": {"train": int(split.train.sum()), "test": int(split.test.sum())},
            },
        )
        atomic_write_text(bundle / INFO_FILE, info)
        adopted = interrupted_version(context.instance, registry, onnx_sha, context.run.run_id)
        if adopted is not None:
            context.log.warning(
                f"v{adopted} holds this exact model (sha256 {onnx_sha[:12]}) but its run never "
                "recorded it: adopting it instead of registering a duplicate"
            )
            _end_orphaned_run(registry, adopted)
            version = adopted
        else:
            version = _register(
                mlf,
                mlflow.model_name,
                onnx_bytes,
                [native_path, *(bundle / f for f in (SPEC_FILE, INFO_FILE, REFERENCE_FILE))],
                {"threshold": threshold, "feature_spec_version": spec.version},
            )
        pause_point("fraud_model:registered")
    tags = {
        "onnx_sha256": onnx_sha,
        "threshold": repr(threshold),
        "feature_spec_version": spec.version,
        "algorithm": config.algorithm,
        "dagster_run_id": context.run.run_id,
        ONNX_PARITY_CHECK: "passed" if parity_ok else "failed",
        BASELINE_CHECK: "passed" if baselines_ok else "failed",
        FAIRNESS_CHECK: "passed" if fairness_ok else "failed",
        **{f"test_{k}": f"{test_metrics[k]:.6f}" for k in HEADLINE},
    }
    for key, value in tags.items():
        registry.client.set_model_version_tag(mlflow.model_name, version, key, value)
    downloaded, _, _ = registry.fetch_onnx(version)
    if downloaded != onnx_bytes:
        raise RuntimeError(f"registered ONNX of v{version} differs from the exported bytes")
    registry.set_alias(
        CHALLENGER, version, "newly trained candidate", f"dagster run {context.run.run_id}"
    )
    atomic_write_text(bundle / "version.txt", version)

    run_url = mlflow.run_url(experiment_id, run.info.run_id)
    metadata: dict[str, object] = {
        **{k: float(test_metrics[k]) for k in HEADLINE},
        "threshold": threshold,
        "model_version": version,
        "algorithm": config.algorithm,
        "feature_spec_version": spec.version,
        "onnx_sha256": onnx_sha,
        "mlflow_run": dg.MetadataValue.url(run_url),
        "mlflow_model_version": dg.MetadataValue.url(mlflow.version_url(version)),
        "split": dg.MetadataValue.json(split.describe()),
        "test_metrics": dg.MetadataValue.md(
            markdown_table(
                [
                    {"metric": k, "test": test_metrics[k], "validation": valid_metrics[k]}
                    for k in (*HEADLINE, "expected_cost", "fraud_rate", "rows")
                ],
                ["metric", "test", "validation"],
            )
        ),
        "curves": dg.MetadataValue.md(
            "\n\n".join(
                [
                    markdown_image(pr_png, "precision-recall"),
                    markdown_image(roc_png, "ROC"),
                    markdown_image(cm_png, "confusion matrix"),
                ]
            )
        ),
    }
    checks = [
        dg.AssetCheckResult(
            check_name=ONNX_PARITY_CHECK,
            passed=parity_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={"max_abs_diff": parity, "tolerance": PARITY_TOLERANCE, "rows": len(y_test)},
        ),
        dg.AssetCheckResult(
            check_name=BASELINE_CHECK,
            passed=baselines_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "baselines": dg.MetadataValue.md(
                    markdown_table(
                        [
                            {
                                "metric": b.metric,
                                "rule": b.rule,
                                "value": b.value,
                                "passed": "yes" if b.passed else "NO",
                            }
                            for b in baseline_results
                        ],
                        ["metric", "rule", "value", "passed"],
                    )
                ),
                **{f"{b.metric}": b.value for b in baseline_results},
            },
        ),
    ]
    checks.append(
        dg.AssetCheckResult(
            check_name=FAIRNESS_CHECK,
            passed=fairness_ok,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "status": fairness.status if fairness else "no protected attributes",
                "report": dg.MetadataValue.md(
                    render_bias_table(fairness) if fairness else "no protected attributes"
                ),
            },
        )
    )
    return dg.MaterializeResult(metadata=metadata, check_results=checks)


def protected_attributes(names: list[str], age_bins: list[float]) -> list[ProtectedAttribute]:
    """The configured protected attributes; age is binned, categorical ones are not."""
    return [
        ProtectedAttribute(n, bins=age_bins, name="age_band")
        if n == "age"
        else ProtectedAttribute(n)
        for n in names
    ]


def bias_of_scores(
    history: pd.DataFrame,
    scores: pd.DataFrame,
    threshold: float,
    attributes: list[ProtectedAttribute],
    thresholds: BiasThresholds,
    n_bootstrap: int = 200,
) -> BiasResult | None:
    """Bias of the decisions at `threshold` for scored transactions (`transaction_id`,
    `score`, `is_fraud`), with protected attributes looked up in the ingested history.
    None when the dataset has none of the attributes."""
    present = [a for a in attributes if a.column in history.columns]
    if not present:
        return None
    attrs = history.set_index("transaction_id")[[a.column for a in present]]
    frame = scores.join(attrs, on="transaction_id")
    return compute_bias(
        frame, "is_fraud", "score", threshold, present, thresholds, n_bootstrap=n_bootstrap
    )


class PromotionConfig(dg.Config):
    """Run config of `champion_model`."""

    auto_promote: bool = True
    """Promote a passing challenger automatically; false leaves it for a person to promote by
    moving the `champion` alias in the MLflow UI."""
    tolerance: float = 0.01
    """How much worse than the champion (absolute) a challenger may be and still pass."""
    compare_metrics: list[str] = ["average_precision", "recall_at_1pct_fpr"]  # noqa: RUF012


def champion_window_scores(
    spec: FeatureSpec, scorer: OnnxScorer, lake: DataLake, transaction_ids: pd.Series
) -> np.ndarray:
    """Scores of the champion on the given transactions, with its own feature spec."""
    features, current_spec = load_feature_set(lake)
    if current_spec.version != spec.version:
        features = compute_features(read_history(lake), spec)
    rows = features.set_index("transaction_id").loc[transaction_ids.to_numpy()]
    return scorer.predict(rows[list(spec.features)].to_numpy(np.float32))


def compare_models(
    challenger: dict[str, float],
    champion: dict[str, float],
    metrics: list[str],
    tolerance: float,
) -> tuple[bool, list[dict[str, object]]]:
    """Whether the challenger is not worse than the champion on every metric, within tolerance."""
    rows = []
    for name in metrics:
        ok = challenger[name] >= champion[name] - tolerance
        rows.append(
            {
                "metric": name,
                "challenger": challenger[name],
                "champion": champion[name],
                "passed": "yes" if ok else "NO",
            }
        )
    return all(r["passed"] == "yes" for r in rows), rows


@dg.asset(group_name="models", kinds={"mlflow"}, deps=[fraud_model])
def champion_model(
    context: dg.AssetExecutionContext,
    config: PromotionConfig,
    lake: DataLake,
    mlflow: MlflowTracking,
) -> dg.MaterializeResult:
    """The model in production: MLflow alias `champion` on `fraud_detector`.

    The challenger is promoted only if its blocking checks passed (ONNX parity, baselines)
    and it is not worse than the current champion on the same recent window, within a
    tolerance. The first model that passes becomes champion. Every alias move is appended
    to the promotion log; `python -m fraud_pipelines.cli rollback` undoes the last one.
    """
    registry = mlflow.registry()
    bundle = lake.path(*BUNDLE, ONNX_FILE).parent
    version = (bundle / "version.txt").read_text().strip()
    challenger = registry.version(version)
    failed = [c for c in (ONNX_PARITY_CHECK, BASELINE_CHECK) if challenger.tags.get(c) != "passed"]
    champion = registry.alias(CHAMPION)
    window = pd.read_parquet(bundle / "test_scores.parquet")
    y, amount = window["is_fraud"].to_numpy(), window["amount"].to_numpy()
    cost = CostModel()
    chall_metrics = evaluate(y, window["score"].to_numpy(), amount, challenger.threshold, cost)
    rows: list[dict[str, object]] = []
    if failed:
        decision, promote = f"refused: checks {', '.join(failed)} did not pass", False
    elif champion is None:
        decision, promote = "first model that passed its checks", True
    elif champion.version == version:
        decision, promote = "already champion", False
    else:
        data, info, folder = registry.fetch_onnx(champion.version)
        champ_spec = FeatureSpec.from_json((folder / SPEC_FILE).read_text())
        champ_score = champion_window_scores(
            champ_spec, OnnxScorer(data, threads=2), lake, window["transaction_id"]
        )
        champ_metrics = evaluate(y, champ_score, amount, info.threshold, cost)
        better, rows = compare_models(
            chall_metrics, champ_metrics, config.compare_metrics, config.tolerance
        )
        decision = (
            f"not worse than champion v{champion.version} within {config.tolerance}"
            if better
            else f"worse than champion v{champion.version}"
        )
        promote = better
    actor = f"dagster run {context.run.run_id}"
    promoted = False
    if promote and config.auto_promote:
        registry.set_alias(CHAMPION, version, decision, actor)
        promoted = True
    elif promote:
        decision += "; awaiting a person to move `champion` in the MLflow UI (auto_promote off)"
    context.log.info(f"v{version}: {decision}")
    current = registry.alias(CHAMPION)
    history = registry.log.entries(mlflow.model_name)[-10:]
    metadata: dict[str, object] = {
        "challenger_version": version,
        "champion_version": current.version if current else "none",
        "promoted": promoted,
        "decision": decision,
        "mlflow_model": dg.MetadataValue.url(mlflow.version_url(version)),
        "promotion_log": dg.MetadataValue.md(
            markdown_table(
                [
                    {
                        "when": e.at.isoformat(timespec="seconds") if e.at else "",
                        "alias": e.alias,
                        "from": e.from_version or "-",
                        "to": e.to_version or "-",
                        "why": e.reason,
                        "by": e.actor,
                    }
                    for e in reversed(history)
                ],
                ["when", "alias", "from", "to", "why", "by"],
            )
        ),
    }
    if rows:
        metadata["comparison"] = dg.MetadataValue.md(
            markdown_table(rows, ["metric", "challenger", "champion", "passed"])
        )
    return dg.MaterializeResult(
        metadata=metadata, data_version=dg.DataVersion(current.version if current else "none")
    )


class ExplanationsConfig(dg.Config):
    """Run config of `model_explanations`."""

    sample_rows: int = 2000
    top_features: int = 15


@dg.asset(group_name="models", kinds={"shap", "mlflow"}, deps=[fraud_model])
def model_explanations(
    context: dg.AssetExecutionContext,
    config: ExplanationsConfig,
    lake: DataLake,
    mlflow: MlflowTracking,
) -> dg.MaterializeResult:
    """Which features drive the model: mean |SHAP value| per feature on the test window.

    Tree models use exact TreeSHAP on the native model; the logistic baseline uses its
    exact linear contributions. The plot is attached here and logged to the MLflow run.
    """
    from fraud_assets.core.explain import global_importance

    bundle = lake.path(*BUNDLE, ONNX_FILE).parent
    info = json.loads((bundle / INFO_FILE).read_text())
    features, spec = load_feature_set(lake)
    window = pd.read_parquet(bundle / "test_scores.parquet")
    rows = features.set_index("transaction_id").loc[window["transaction_id"].to_numpy()]
    sample = rows.sample(min(config.sample_rows, len(rows)), random_state=0)
    x = sample[list(spec.features)].to_numpy(np.float32)
    importance = global_importance(info["algorithm"], bundle / info["native_file"], x, spec)
    top = importance.head(config.top_features)
    png = bar_png(
        top.index.tolist(), top.to_numpy().tolist(), "Global importance", "mean |SHAP value|"
    )
    version = (bundle / "version.txt").read_text().strip()
    run_id = mlflow.registry().version(version).run_id
    experiment_id = mlflow.experiment_id()
    import mlflow as mlf

    with mlf.start_run(run_id=run_id):
        _log_png(mlf, png, "shap_importance.png")
        mlf.log_dict(importance.to_dict(), "explanations/shap_importance.json")
    return dg.MaterializeResult(
        metadata={
            "model_version": version,
            "rows_explained": len(sample),
            "top_feature": top.index[0],
            "importance": dg.MetadataValue.md(
                markdown_table(
                    [{"feature": k, "mean_abs_shap": v} for k, v in top.items()],
                    ["feature", "mean_abs_shap"],
                )
            ),
            "plot": dg.MetadataValue.md(markdown_image(png, "SHAP importance")),
            "mlflow_run": dg.MetadataValue.url(mlflow.run_url(experiment_id, run_id or "")),
        }
    )
