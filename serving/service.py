"""Fraud scoring API for merchants: `bentoml serve serving.service:FraudScorer`.

Endpoints (all POST bodies are JSON; send your key in `X-API-Key`):

* `POST /predict`: score one payment; returns the decision, the fraud probability and
  the three features that pushed it up most.
* `POST /predict/batch`: up to 10,000 payments in one call.
* `POST /predict/explain`: every feature's exact contribution for one payment.
* `POST /feedback`: report a payment's confirmed outcome (fraud or genuine).
* `GET /healthz` (alive), `GET /readyz` (a verified model is loaded, and why not),
  `GET /metrics` (Prometheus), `GET /` (this documentation).

Configuration is by environment variable, see `serving.config`. The service runs
`FRAUD_SERVING_WORKERS` processes (default 2) sharing the online store and the model cache.
"""

from __future__ import annotations

import gc
import logging

import bentoml

from serving import bentoml_fixes
from serving.answers import as_model
from serving.config import ServingSettings
from serving.engine import ScoringEngine
from serving.errors import REQUEST, ApiError
from serving.gateway import ENGINES, Gateway
from serving.schemas import (
    BatchRequest,
    BatchResponse,
    Explanation,
    Feedback,
    FeedbackAck,
    FraudScore,
    Transaction,
)

_SETTINGS = ServingSettings.from_env()
bentoml_fixes.apply()


def tune_gc() -> None:
    """Keep the garbage collector off the request path.

    After startup the heap holds millions of long-lived objects (BentoML, MLflow, numpy,
    ...). A full collection walks all of them and costs tens of milliseconds, which showed
    up as 65-127 ms p99 latency. Freezing moves them out of the collector's reach, and a
    larger first-generation threshold makes the remaining young collections rare.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


class _ExpectedClientErrors(logging.Filter):
    """BentoML logs every rejected request with a traceback; a bad request is no error."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None:
            from pydantic import ValidationError

            return not isinstance(record.exc_info[1], (ValidationError, ApiError))
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(_ExpectedClientErrors())


def _api_key() -> str | None:
    slot = REQUEST.get()
    return slot.api_key if slot is not None else None


@bentoml.service(
    name="fraud_scorer",
    workers=_SETTINGS.workers,
    traffic={"timeout": 300},
    logging={"access": {"enabled": _SETTINGS.access_log}},
    # Tracing costs ~14% CPU per request even when nothing is exported; excluding every
    # URL short-circuits the OpenTelemetry middleware BentoML always installs.
    tracing={"sample_rate": 0.0, "excluded_urls": ".*"},
)
class FraudScorer:
    """Real-time fraud scoring of card-not-present payments."""

    def __init__(self) -> None:
        self.engine = ScoringEngine(ServingSettings.from_env())
        ENGINES.engine = self.engine
        tune_gc()

    @bentoml.api(route="/predict")
    async def predict(self, transaction: Transaction, /) -> FraudScore:
        """Score one payment.

        Returns `approve`, `review` or `decline` with the fraud probability and the
        features that raised it. Retrying with the same transaction_id returns the same
        answer (same prediction_id) without counting the payment twice.
        """
        return as_model(self.engine.predict(transaction, _api_key()), FraudScore)

    @bentoml.api(route="/predict/batch")
    def predict_batch(self, request: BatchRequest, /) -> BatchResponse:
        """Score up to 10,000 payments, in time order; results come in request order."""
        return as_model(self.engine.predict_batch(request, _api_key()), BatchResponse)

    @bentoml.api(route="/predict/explain")
    def explain(self, transaction: Transaction, /) -> Explanation:
        """Every feature's exact (TreeSHAP) contribution to one payment's score.

        Explaining does not change the customer's history. A transaction_id that was
        already scored is explained with the features it had at that moment.
        """
        return self.engine.explain(transaction)

    @bentoml.api(route="/feedback")
    async def feedback(self, feedback: Feedback, /) -> FeedbackAck:
        """Report the confirmed outcome of a scored payment.

        Outcomes feed the merchant's fraud rate from `label_timestamp` on and are kept
        for retraining. An unknown prediction_id is answered with 404.
        """
        return self.engine.feedback(feedback, _api_key())

    @bentoml.on_shutdown
    def shutdown(self) -> None:
        """Stop polling the registry and write out the queued prediction log rows."""
        self.engine.close()


# In front of BentoML's middlewares: the gateway answers the API routes itself.
bentoml_fixes.in_front(FraudScorer, Gateway)
