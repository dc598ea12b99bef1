"""Prometheus metrics of the scoring service, served on /metrics with BentoML's own.

The gateway answers the API routes itself (see `serving.gateway`), so request counts and
latency per route and status are `fraud_request_seconds` (a histogram; its `_count` is the
request count), refusals (401, 413, 415, 422, 429, 503) included. The other series are
what only the service knows: decisions, the model version in use, model loads refused,
scoring time, degraded scores, rejected requests and spooled, replayed and dropped
prediction log rows. BentoML's own `bentoml_service_*` series remain for anything BentoML
answers itself.

`prometheus_client` is imported only when `build_metrics` runs inside a worker, after
BentoML has set PROMETHEUS_MULTIPROC_DIR; importing it earlier would hide these metrics
from the multi-process /metrics endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass, field
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
    request_seconds: Any
    _request_children: dict[tuple[str, int], Any] = field(default_factory=dict)

    def observe_request(self, route: str, status: int, seconds: float) -> None:
        """Count one answered API request and its time inside the service."""
        child = self._request_children.get((route, status))
        if child is None:
            # A labelled child costs ~20 us to look up; requests reuse it.
            child = self.request_seconds.labels(route, str(status))
            self._request_children[(route, status)] = child
        child.observe(seconds)


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
            "folder's rejected.jsonl), or lost because the journal could not be written.",
        ),
        log_spooled=Counter(
            "fraud_prediction_log_spooled_total",
            "Prediction log rows left to the on-disk journal alone, to be read back "
            "(database down or backlog).",
        ),
        log_replayed=Counter(
            "fraud_prediction_log_replayed_total",
            "Prediction log rows read back from a journal (this worker's, or a stopped or "
            "killed one's) and written to the database.",
        ),
        request_seconds=Histogram(
            "fraud_request_seconds",
            "API requests, by route and HTTP status (refusals included), with their time "
            "from arrival at the gateway to the response (the _count series counts requests).",
            ["route", "status"],
            buckets=(0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.025, 0.1, 1.0, 10.0),
        ),
    )
    return _BUILT
