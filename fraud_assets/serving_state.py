"""Serving assets: the online feature store the scoring service reads."""

import time

import dagster as dg

from fraud_assets.datasets import read_history
from fraud_assets.features import feature_set, load_feature_set
from fraud_assets.models import champion_model
from fraud_pipelines.resources import DataLake, OnlineStoreResource


@dg.asset(group_name="serving", kinds={"sqlite", "redis"}, deps=[feature_set, champion_model])
def online_features(
    context: dg.AssetExecutionContext, lake: DataLake, online_store: OnlineStoreResource
) -> dg.MaterializeResult:
    """Per-user and per-merchant state of the scoring service, loaded from the ingested
    history: recent transactions for the velocity windows, running amount statistics, the
    devices, merchants and countries each user has used, and the labels known per merchant.

    A freshly started service therefore knows every customer's past, and computes exactly
    the features the model was trained on (the same feature code, proven equal by a replay
    test). The store is SQLite by default and Redis when FRAUD_ONLINE_STORE_URL is redis://.
    """
    _, spec = load_feature_set(lake)
    history = read_history(lake)
    store = online_store.open()
    try:
        started = time.perf_counter()
        rows = store.bulk_load(history, spec)
        seconds = time.perf_counter() - started
    finally:
        store.close()
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": rows,
            "users": int(history["user_id"].nunique()),
            "merchants": int(history["merchant_id"].nunique()),
            "load_seconds": seconds,
            "store": online_store.url.split("@")[-1],
            "feature_spec_version": spec.version,
            "last_transaction": history["timestamp"].max().isoformat(),
        }
    )
