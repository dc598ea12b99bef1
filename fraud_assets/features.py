"""Feature assets: point-in-time features of every transaction."""

import time

import dagster as dg
import pandas as pd

from fraud_assets.core.features import (
    FEATURE_DEFS,
    FeatureConfig,
    FeatureSpec,
    build_feature_spec,
    compute_features,
)
from fraud_assets.core.render import frame_table, mapping_table, markdown_table
from fraud_assets.datasets import content_hash, read_history, transactions
from fraud_pipelines.resources import DataLake, atomic_write_parquet, atomic_write_text

FEATURES_FILE = ("features", "feature_set.parquet")
SPEC_FILE = ("features", "feature_spec.json")
LABEL_COLUMNS = ("is_fraud", "label_timestamp")


class FeatureSetConfig(dg.Config):
    """Run config of `feature_set`: which groups to compute and the label-aware knobs."""

    transaction: bool = True
    behavioral: bool = True
    temporal: bool = True
    aggregation: bool = True
    label_maturity_days: float = 30.0
    """A label without a timestamp counts as known this many days after its transaction."""
    merchant_rate_prior_strength: float = 20.0
    """How many labels a merchant needs before its own fraud rate outweighs the global one."""


def load_feature_set(lake: DataLake) -> tuple[pd.DataFrame, FeatureSpec]:
    """The materialized feature set and the spec that produced it."""
    spec = FeatureSpec.from_json(lake.path(*SPEC_FILE).read_text())
    return pd.read_parquet(lake.path(*FEATURES_FILE)), spec


@dg.asset(
    group_name="features",
    kinds={"pandas", "parquet"},
    deps=[transactions],
    code_version="features-v1",
)
def feature_set(
    context: dg.AssetExecutionContext, config: FeatureSetConfig, lake: DataLake
) -> dg.MaterializeResult:
    """Point-in-time features for every transaction, in four switchable groups.

    - transaction: amount, log amount, categorical codes
    - behavioral: the user's counts and amount sums over 1 h, 24 h and 7 d, amount z-score
      against the user's history, time since the last transaction, new device / merchant /
      country for this user
    - temporal: hour, weekday, night, weekend
    - aggregation: the merchant's recent volume and its fraud rate from labels already known
      at the transaction's time (no leakage from later chargebacks)

    A transaction never sees itself, a later transaction or a label not yet known. The same
    code computes these features in the scoring service. The version is a hash of the
    feature schema and config; every model records the version it was trained on.
    """
    history = read_history(lake)
    spec = build_feature_spec(history, FeatureConfig(**config.model_dump()))
    for name, reason in spec.skipped.items():
        context.log.info(f"feature {name} skipped: {reason}")
    started = time.perf_counter()
    features = compute_features(history, spec)
    elapsed = time.perf_counter() - started
    for column in LABEL_COLUMNS:
        if column in history.columns:
            features[column] = history[column].to_numpy()
    atomic_write_parquet(lake.path(*FEATURES_FILE), features)
    atomic_write_text(lake.path(*SPEC_FILE), spec.to_json())

    groups = {d.name: d.group for d in FEATURE_DEFS}
    described = features[list(spec.features)].describe().T
    stats = [
        {
            "feature": name,
            "group": groups[name],
            "mean": row["mean"],
            "std": row["std"],
            "min": row["min"],
            "max": row["max"],
        }
        for name, row in described.iterrows()
    ]
    rows_per_s = len(features) / elapsed if elapsed > 0 else float("nan")
    metadata: dict[str, object] = {
        "dagster/row_count": len(features),
        "feature_count": len(spec.features),
        "feature_spec_version": spec.version,
        "rows_per_second": rows_per_s,
        "compute_seconds": elapsed,
        "features": dg.MetadataValue.md(
            markdown_table(stats, ["feature", "group", "mean", "std", "min", "max"])
        ),
        "preview": dg.MetadataValue.md(frame_table(features.head(5).T.reset_index(), 40)),
        "spec_file": dg.MetadataValue.path(str(lake.path(*SPEC_FILE))),
    }
    if spec.skipped:
        metadata["skipped_features"] = dg.MetadataValue.md(
            mapping_table(spec.skipped, "feature", "why skipped")
        )
    version = f"{spec.version}-{content_hash(history[['transaction_id']])}"
    return dg.MaterializeResult(metadata=metadata, data_version=dg.DataVersion(version))
