"""Jobs: named selections of the asset graph."""

from __future__ import annotations

import dagster as dg

training_job = dg.define_asset_job(
    "training_job",
    selection=dg.AssetSelection.assets("feature_set", "fraud_model", "champion_model")
    | dg.AssetSelection.assets("model_explanations"),
    description="Features, training, checks, promotion gate and explanations.",
)

ingestion_job = dg.define_asset_job(
    "ingestion_job",
    selection=dg.AssetSelection.assets("transactions"),
    description="Ingest one day of transactions from the configured dataset.",
)

ALL = [training_job, ingestion_job]

full_graph_job = dg.define_asset_job(
    "full_graph_job",
    selection=dg.AssetSelection.all(),
    description="Every asset once: ingestion of a range of days through promotion.",
)

ALL.append(full_graph_job)
