"""Monitoring assets: what the service scored, data drift, model performance, bias, model card."""

import json
import tempfile
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa

from fraud_assets.core.bias import BiasThresholds, render_bias_table
from fraud_assets.core.drift import (
    CRITICAL,
    INSUFFICIENT_DATA,
    NOT_COMPARABLE,
    WARNING,
    DriftThresholds,
    compute_drift,
    drift_bar_png,
    evidently_report,
    render_drift_table,
)
from fraud_assets.core.features import FeatureSpec
from fraud_assets.core.metrics import recall_at_fpr, threshold_metrics
from fraud_assets.core.plots import markdown_image
from fraud_assets.core.registry import CHAMPION, INFO_FILE, SPEC_FILE, RegisteredVersion
from fraud_assets.core.render import mapping_table, markdown_table
from fraud_assets.datasets import read_history
from fraud_assets.models import (
    REFERENCE_FILE,
    bias_of_scores,
    champion_model,
    model_explanations,
    protected_attributes,
)
from fraud_pipelines.resources import AlertsResource, DataLake, MlflowTracking, PredictionLogSource

SCORED_FILE = ("monitoring", "scored_predictions.parquet")


def _champion(mlflow: MlflowTracking) -> tuple[RegisteredVersion, Path]:
    registry = mlflow.registry()
    champion = registry.alias(CHAMPION)
    if champion is None:
        raise LookupError(
            f"{mlflow.model_name} has no champion yet: materialize `champion_model` first"
        )
    _, _, folder = registry.fetch_onnx(champion.version)
    return champion, folder


def _raise(
    alerts: AlertsResource,
    kind: str,
    status: str,
    title: str,
    details: dict,
    version: str | None,
) -> None:
    if status in (WARNING, CRITICAL):
        alerts.store().raise_alert(kind, status, title, details, model_version=version)


class ScoredPredictionsConfig(dg.Config):
    """Run config of `scored_predictions`."""

    window_days: float = 1.0
    """How many days of scored transactions, ending at `window_end`."""
    window_end: str | None = None
    """End of the window (UTC); empty means the newest scored transaction."""


@dg.asset(group_name="monitoring", kinds={"sql", "parquet"})
def scored_predictions(
    context: dg.AssetExecutionContext,
    config: ScoredPredictionsConfig,
    prediction_log: PredictionLogSource,
    lake: DataLake,
) -> dg.MaterializeResult:
    """Transactions the scoring service scored in the monitoring window, with what it decided.

    Read from the service's prediction log (one row per scored transaction: inputs, the
    features the model saw, score, decision, model version, latency) joined with the labels
    merchants reported through /feedback. Drift and bias reports read this snapshot.
    """
    engine = prediction_log.engine()
    inspector = sa.inspect(engine)
    if not inspector.has_table("prediction_log"):
        raise LookupError(f"no prediction_log table at {engine.url!r}: nothing scored yet")
    with engine.connect() as conn:
        newest = conn.execute(sa.text("SELECT MAX(transaction_ts) FROM prediction_log")).scalar()
        if newest is None:
            raise LookupError("the prediction log is empty: nothing scored yet")
        end = pd.Timestamp(config.window_end or newest)
        end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
        start = end - pd.Timedelta(days=config.window_days)
        frame = pd.read_sql(
            sa.text(
                "SELECT * FROM prediction_log WHERE transaction_ts > :start "
                "AND transaction_ts <= :end"
            ),
            conn,
            params={"start": start.to_pydatetime(), "end": end.to_pydatetime()},
        )
        if inspector.has_table("feedback"):
            feedback = pd.read_sql(
                sa.text("SELECT prediction_id, is_fraud, label_timestamp FROM feedback"), conn
            )
            feedback = feedback.drop_duplicates("prediction_id", keep="last")
            frame = frame.merge(
                feedback.rename(columns={"is_fraud": "feedback_is_fraud"}),
                on="prediction_id",
                how="left",
            )
    features = frame.pop("features").map(lambda v: json.loads(v) if isinstance(v, str) else v)
    expanded = pd.DataFrame(features.tolist(), index=frame.index)
    expanded.columns = [str(c) for c in expanded.columns]
    frame = pd.concat([frame, expanded.add_prefix("f_")], axis=1)
    frame.to_parquet(lake.path(*SCORED_FILE), index=False)
    latency = frame["latency_ms"].to_numpy() if len(frame) else np.array([np.nan])
    decisions = frame["decision"].value_counts().to_dict()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": len(frame),
            "window_start": start.isoformat(),
            "window_end": end.isoformat(),
            "model_versions": ", ".join(sorted(frame["model_version"].astype(str).unique())),
            "decline_rate": float((frame["decision"] == "decline").mean()) if len(frame) else 0.0,
            "latency_p50_ms": float(np.nanpercentile(latency, 50)),
            "latency_p99_ms": float(np.nanpercentile(latency, 99)),
            "decisions": dg.MetadataValue.md(mapping_table(decisions, "decision", "count")),
        }
    )


def _scored_features(lake: DataLake, spec: FeatureSpec) -> pd.DataFrame:
    frame = pd.read_parquet(lake.path(*SCORED_FILE))
    columns = {f"f_{name}": name for name in spec.features}
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"the scored predictions lack features of the champion's spec: {missing[:5]}"
        )
    current = frame[list(columns)].rename(columns=columns)
    current["score"] = frame["fraud_score"].to_numpy()
    return current


class DriftReportConfig(dg.Config):
    """Run config of `drift_report`: thresholds and what to leave out."""

    psi_warning: float = 0.1
    psi_critical: float = 0.2
    ks_warning: float = 0.1
    min_rows: int = 200
    min_critical_features: int = 1
    exclude_features: list[str] = list(NOT_COMPARABLE)  # noqa: RUF012


@dg.asset(group_name="monitoring", kinds={"evidently", "html"}, deps=[scored_predictions])
def drift_report(
    context: dg.AssetExecutionContext,
    config: DriftReportConfig,
    lake: DataLake,
    mlflow: MlflowTracking,
    alerts: AlertsResource,
) -> dg.MaterializeResult:
    """Data drift of the monitoring window against the champion's reference: a sample of the
    held-out window it was validated on, with its out-of-sample scores.

    Per feature: PSI on reference quantile bins (categories for codes and flags), plus the KS
    statistic for numeric features and chi-square for categorical ones. The status comes
    from effect sizes (PSI >= 0.1 WARNING, >= 0.2 CRITICAL; KS D >= 0.1 at least WARNING),
    never from p-values alone, so a million-row window does not flag trivial shifts. Score
    drift and label-rate drift are reported beside. The Evidently HTML report is linked.
    A CRITICAL report starts retraining through the drift sensor.
    """
    champion, folder = _champion(mlflow)
    spec = FeatureSpec.from_json((folder / SPEC_FILE).read_text())
    reference = pd.read_parquet(folder / REFERENCE_FILE)
    current = _scored_features(lake, spec)
    features = [f for f in spec.features if f not in config.exclude_features]
    thresholds = DriftThresholds(
        psi_warning=config.psi_warning,
        psi_critical=config.psi_critical,
        ks_warning=config.ks_warning,
        min_rows=config.min_rows,
        min_critical_features=config.min_critical_features,
    )
    result = compute_drift(reference, current, features, thresholds, score_col="score")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
    html = lake.path("monitoring", "drift", f"drift_{stamp}.html")
    summary = evidently_report(reference, current, features, html, thresholds=thresholds)
    details = {
        "status": result.status,
        "worst_features": result.worst_features[:5],
        "n_critical": result.n_critical,
        "n_warning": result.n_warning,
        "psi": {r.feature: r.psi for r in result.features if r.feature in result.worst_features},
    }
    _raise(alerts, "DRIFT", result.status, "Data drift", details, champion.version)
    metadata: dict[str, object] = {
        "status": result.status,
        "champion_version": champion.version,
        "n_reference": result.n_reference,
        "n_current": result.n_current,
        "n_critical": result.n_critical,
        "n_warning": result.n_warning,
        "max_psi": max((r.psi for r in result.features), default=0.0),
        "worst_features": dg.MetadataValue.md(render_drift_table(result, top=10)),
        "psi_plot": dg.MetadataValue.md(markdown_image(drift_bar_png(result), "PSI")),
        "evidently_report": dg.MetadataValue.path(str(html)),
        "evidently_drift_share": float(summary.get("drift_share", float("nan"))),
        "excluded_features": ", ".join(config.exclude_features),
    }
    for row in result.features:
        metadata[f"psi/{row.feature}"] = float(row.psi)
    if result.score_drift is not None:
        metadata["score_psi"] = float(result.score_drift.psi)
        metadata["score_status"] = result.score_drift.status
    lake.path("monitoring", "drift", "latest.json").write_text(
        json.dumps(result.to_dict(), default=str)
    )
    return dg.MaterializeResult(metadata=metadata)


def matured_labels(lake: DataLake, scored: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """The label of each scored transaction known by `as_of`: feedback first, then the labels
    that arrived with ingested transactions. Unknown labels are NaN and are left out."""
    label = pd.Series(np.nan, index=scored.index)
    if "feedback_is_fraud" in scored:
        known = pd.to_datetime(scored["label_timestamp"], utc=True) <= as_of
        label = label.where(~known, scored["feedback_is_fraud"].astype(float))
    history = read_history(lake)[["transaction_id", "is_fraud", "label_timestamp"]]
    history = history[pd.to_datetime(history["label_timestamp"], utc=True) <= as_of]
    by_id = history.set_index("transaction_id")["is_fraud"]
    from_files = scored["transaction_id"].map(by_id).astype(float)
    return label.fillna(from_files)


class PerformanceReportConfig(dg.Config):
    """Run config of `performance_report`."""

    as_of: str | None = None
    """Labels known at this time (UTC) count; empty means now."""
    min_frauds: int = 20
    ap_drop_warning: float = 0.10
    """Relative drop of average precision against the champion's test baseline."""
    ap_drop_critical: float = 0.25
    recall_drop_warning: float = 0.10
    recall_drop_critical: float = 0.25


@dg.asset(group_name="monitoring", kinds={"sql"}, deps=[scored_predictions])
def performance_report(
    context: dg.AssetExecutionContext,
    config: PerformanceReportConfig,
    lake: DataLake,
    mlflow: MlflowTracking,
    alerts: AlertsResource,
) -> dg.MaterializeResult:
    """Concept drift: how the served model does on predictions whose labels have matured.

    Labels come from /feedback and from label files ingested with transactions; a label
    counts only once it was known (its label timestamp is before `as_of`), so recent
    predictions wait for their chargebacks. Average precision, recall at the served
    threshold, precision and FPR are compared with the champion's test-window baselines;
    a relative drop past 10% is WARNING and past 25% CRITICAL.
    """
    champion, _ = _champion(mlflow)
    scored = pd.read_parquet(lake.path(*SCORED_FILE))
    as_of = pd.Timestamp(config.as_of) if config.as_of else pd.Timestamp.now(tz="UTC")
    as_of = as_of.tz_localize("UTC") if as_of.tzinfo is None else as_of
    labels = matured_labels(lake, scored, as_of)
    known = labels.notna().to_numpy()
    y = labels[known].to_numpy().astype(int)
    score = scored.loc[known, "fraud_score"].to_numpy()
    declined = (scored.loc[known, "decision"] == "decline").to_numpy()
    baseline = {
        k: float(champion.tags.get(f"test_{k}", "nan"))
        for k in ("average_precision", "recall", "precision", "fpr")
    }
    metrics: dict[str, float] = {"matured": float(known.sum()), "frauds": float(y.sum())}
    status = INSUFFICIENT_DATA
    if y.sum() >= config.min_frauds and (y == 0).sum() > 0:
        from sklearn.metrics import average_precision_score

        at_threshold = threshold_metrics(y, declined.astype(float), 0.5)
        metrics.update(
            average_precision=float(average_precision_score(y, score)),
            recall=at_threshold["recall"],
            precision=at_threshold["precision"],
            fpr=at_threshold["fpr"],
            recall_at_1pct_fpr=recall_at_fpr(y, score, 0.01),
        )
        ap_drop = 1 - metrics["average_precision"] / baseline["average_precision"]
        recall_drop = 1 - metrics["recall"] / baseline["recall"]
        metrics.update(ap_relative_drop=ap_drop, recall_relative_drop=recall_drop)
        status = "OK"
        if ap_drop >= config.ap_drop_warning or recall_drop >= config.recall_drop_warning:
            status = WARNING
        if ap_drop >= config.ap_drop_critical or recall_drop >= config.recall_drop_critical:
            status = CRITICAL
    _raise(alerts, "PERFORMANCE", status, "Model performance", metrics, champion.version)
    rows = [
        {"metric": k, "served": metrics.get(k, float("nan")), "champion baseline": baseline[k]}
        for k in baseline
    ]
    return dg.MaterializeResult(
        metadata={
            "status": status,
            "champion_version": champion.version,
            "as_of": as_of.isoformat(),
            **{k: float(v) for k, v in metrics.items()},
            "comparison": dg.MetadataValue.md(
                markdown_table(rows, ["metric", "served", "champion baseline"])
            ),
        }
    )


class BiasReportConfig(dg.Config):
    """Run config of `bias_report`."""

    attributes: list[str] = ["gender", "age"]  # noqa: RUF012
    age_bins: list[float] = [18, 25, 35, 50, 65, 120]  # noqa: RUF012
    disparate_impact_warning: float = 0.9
    disparate_impact_critical: float = 0.8
    n_bootstrap: int = 200


@dg.asset(group_name="monitoring", kinds={"fairlearn"}, deps=[scored_predictions])
def bias_report(
    context: dg.AssetExecutionContext,
    config: BiasReportConfig,
    lake: DataLake,
    mlflow: MlflowTracking,
    alerts: AlertsResource,
) -> dg.MaterializeResult:
    """Fairness of the served decisions across protected groups, at the threshold in use.

    For each protected attribute (age is binned into bands) and each pair of them:
    demographic parity difference, equalized odds difference, disparate impact (lowest over
    highest decline rate; below 0.8 is CRITICAL) and the false-positive-rate gap (good
    customers wrongly declined), with a per-group breakdown (n, FPR, TPR, selection rate)
    and bootstrap 95% intervals. Only predictions with matured labels count. The same
    computation gates every challenger before promotion.
    """
    champion, _ = _champion(mlflow)
    scored = pd.read_parquet(lake.path(*SCORED_FILE))
    labels = matured_labels(lake, scored, pd.Timestamp.now(tz="UTC"))
    frame = pd.DataFrame(
        {
            "transaction_id": scored["transaction_id"],
            "score": scored["fraud_score"],
            "is_fraud": labels,
        }
    )
    result = bias_of_scores(
        read_history(lake),
        frame,
        champion.threshold,
        protected_attributes(config.attributes, config.age_bins),
        BiasThresholds(
            disparate_impact_warning=config.disparate_impact_warning,
            disparate_impact_critical=config.disparate_impact_critical,
        ),
        n_bootstrap=config.n_bootstrap,
    )
    if result is None:
        raise LookupError(f"the dataset has none of the protected attributes {config.attributes}")
    details = {a.name: a.status for a in result.attributes}
    _raise(alerts, "BIAS", result.status, "Bias in decisions", details, champion.version)
    metadata: dict[str, object] = {
        "status": result.status,
        "champion_version": champion.version,
        "threshold": champion.threshold,
        "rows": result.n_rows,
        "report": dg.MetadataValue.md(render_bias_table(result)),
    }
    for attribute in result.attributes:
        di = attribute.metrics.get("disparate_impact")
        if di is not None and np.isfinite(di.value):
            metadata[f"disparate_impact/{attribute.name}"] = float(di.value)
    lake.path("monitoring", "bias", "latest.json").write_text(
        json.dumps(result.to_dict(), default=str)
    )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name="monitoring",
    kinds={"markdown", "mlflow"},
    deps=[champion_model, model_explanations],
)
def model_card(
    context: dg.AssetExecutionContext, lake: DataLake, mlflow: MlflowTracking
) -> dg.MaterializeResult:
    """One readable document per champion: data and its version, features, metrics,
    threshold and cost assumptions, bias results, top explanations, and drift at promotion.
    Saved beside the data and logged to the champion's MLflow run."""
    from fraud_assets.core.model_card import render_model_card

    champion, folder = _champion(mlflow)
    info = json.loads((folder / INFO_FILE).read_text())
    spec = FeatureSpec.from_json((folder / SPEC_FILE).read_text())
    import mlflow as mlf

    registry = mlflow.registry()
    try:
        local = registry.client.download_artifacts(
            champion.run_id or "", "explanations/shap_importance.json", tempfile.mkdtemp()
        )
        importance = json.loads(Path(local).read_text())
    except Exception as exc:
        context.log.warning(f"no explanations for v{champion.version}: {exc}")
        importance = None
    text = render_model_card(champion, info, spec, importance)
    path = lake.path("monitoring", "model_cards", f"{mlflow.model_name}_v{champion.version}.md")
    path.write_text(text)
    experiment_id = mlflow.experiment_id()
    with mlf.start_run(run_id=champion.run_id):
        mlf.log_text(text, "model_card.md")
    return dg.MaterializeResult(
        metadata={
            "champion_version": champion.version,
            "card": dg.MetadataValue.md(text),
            "file": dg.MetadataValue.path(str(path)),
            "mlflow_run": dg.MetadataValue.url(
                mlflow.run_url(experiment_id, champion.run_id or "")
            ),
        }
    )
