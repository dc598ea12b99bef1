"""Prometheus metrics of the scoring service, served on /metrics with BentoML's own.

BentoML already exports request counts and a latency histogram per endpoint and status
(`bentoml_service_request_total`, `bentoml_service_request_duration_seconds`). These add
what only the service knows: decisions, the model version in use, model loads refused,
scoring time, degraded scores, rejected requests and spooled, replayed and dropped log rows.

`prometheus_client` is imported only when `build_metrics` runs inside a worker, after
BentoML has set PROMETHEUS_MULTIPROC_DIR; importing it earlier would hide these metrics
from the multi-process /metrics endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_BUILT: Metrics | None = None


@dataclass(frozen=True)
class Metrics:
    decisions: Any
    model_info: Any
    model_swaps: Any
    model_failures: Any
    scoring_seconds: Any
    degraded: Any
    rejected: Any
    log_dropped: Any
    log_spooled: Any
    log_replayed: Any


def build_metrics() -> Metrics:
    """The service's metrics (created once per process)."""
    global _BUILT
    if _BUILT is not None:
        return _BUILT
    from prometheus_client import Counter, Gauge, Histogram

    _BUILT = Metrics(
        decisions=Counter(
            "fraud_decisions_total",
            "Scored payments by decision and model version.",
            ["decision", "model_version"],
        ),
        model_info=Gauge(
            "fraud_model_version_info",
            "1 for the model version each worker serves, 0 for versions it served before.",
            ["model_name", "model_version"],
            multiprocess_mode="liveall",
        ),
        model_swaps=Counter("fraud_model_swaps_total", "Champion versions loaded."),
        model_failures=Counter(
            "fraud_model_load_failures_total",
            "Champion refreshes that failed (unreachable registry, refused or broken model).",
        ),
        scoring_seconds=Histogram(
            "fraud_scoring_seconds",
            "Time to score inside the service (features, model, reason codes), per endpoint.",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0),
        ),
        degraded=Counter(
            "fraud_degraded_total", "Payments scored without the online store's state."
        ),
        rejected=Counter(
            "fraud_rejected_requests_total",
            "Requests refused before scoring, by reason.",
            ["reason"],
        ),
        log_dropped=Counter(
            "fraud_prediction_log_dropped_total",
            "Prediction log rows the database refused for their content (kept in the spool "
            "folder's rejected.jsonl).",
        ),
        log_spooled=Counter(
            "fraud_prediction_log_spooled_total",
            "Prediction log rows written to the local spool (database down or backlog).",
        ),
        log_replayed=Counter(
            "fraud_prediction_log_replayed_total",
            "Spooled prediction log rows written to the database afterwards.",
        ),
    )
    return _BUILT
