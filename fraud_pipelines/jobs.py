"""Jobs: named selections of the asset graph."""

from __future__ import annotations

import dagster as dg

MODEL_ASSETS = ("fraud_model", "champion_model", "model_explanations", "model_card")

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.assets("transactions"),
    description="Ingest days of transactions from the configured dataset.",
)

features_job = dg.define_asset_job(
    "features_job",
    selection=dg.AssetSelection.assets("feature_set"),
    description="Recompute point-in-time features over the ingested history.",
)

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("feature_set", *MODEL_ASSETS),
    description="Features, training, checks, promotion gate, explanations and model card.",
)

retraining_job = dg.define_asset_job(
    "retraining_job",
    selection=dg.AssetSelection.assets("feature_set", *MODEL_ASSETS),
    description="Training started by drift: recent data weighs 0.7, history 0.3; the same "
    "gates as any training decide promotion.",
    config={"ops": {"fraud_model": {"config": {"recent_days": 7.0, "recent_weight": 0.7}}}},
)

drift_job = dg.define_asset_job(
    "drift_job",
    selection=dg.AssetSelection.assets("scored_predictions", "drift_report"),
    description="Data drift of the last day of scored transactions.",
)

performance_job = dg.define_asset_job(
    "performance_job",
    selection=dg.AssetSelection.assets("scored_predictions", "performance_report"),
    description="Served-model performance on matured labels.",
)

bias_job = dg.define_asset_job(
    "bias_job",
    selection=dg.AssetSelection.assets("scored_predictions", "bias_report"),
    description="Fairness of the served decisions across protected groups.",
)

monitoring_job = dg.define_asset_job(
    "monitoring_job",
    selection=dg.AssetSelection.assets(
        "scored_predictions", "drift_report", "performance_report", "bias_report"
    ),
    description="Every monitoring report at once.",
)

full_graph_job = dg.define_asset_job(
    "full_graph_job",
    selection=dg.AssetSelection.all() - dg.AssetSelection.groups("monitoring")
    | dg.AssetSelection.assets("model_card"),
    description="Every asset once, from ingesting a range of days through promotion.",
)

ALL = [
    ingestion_job,
    features_job,
    training_job,
    retraining_job,
    drift_job,
    performance_job,
    bias_job,
    monitoring_job,
    full_graph_job,
]
