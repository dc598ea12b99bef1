"""Responses built from the engine's own values equal validated ones, in Python and JSON."""

from __future__ import annotations

import uuid

from serving.schemas import (
    BatchResponse,
    Explanation,
    FeatureContribution,
    FraudScore,
    ReasonCode,
)


def _score(build: str) -> FraudScore:
    def make(cls, **values):  # type: ignore[no-untyped-def]
        return cls.trusted(**values) if build == "trusted" else cls(**values)

    return make(
        FraudScore,
        prediction_id=uuid.UUID("01a23610-88a4-7860-9196-79d65cc32880"),
        transaction_id="t-1",
        fraud_score=0.25,
        decision="review",
        is_fraud=False,
        reason_codes=[
            make(ReasonCode, feature="amount", value=12.5, contribution=0.75),
            make(ReasonCode, feature="is_new_device", value=1.0, contribution=0.5),
        ],
        model_version="3",
        latency_ms=0.812,
        degraded=False,
    )


def test_trusted_responses_equal_validated_ones() -> None:
    trusted, validated = _score("trusted"), _score("validated")
    assert trusted == validated
    assert trusted.model_dump_json() == validated.model_dump_json()
    assert FraudScore.model_validate_json(trusted.model_dump_json()) == validated
    batch = BatchResponse.trusted(results=[trusted, trusted])
    assert (
        batch.model_dump_json() == BatchResponse(results=[validated, validated]).model_dump_json()
    )
    # A copy with one field changed, as a batch does when the store fails after scoring.
    degraded = trusted.model_copy(update={"degraded": True})
    assert degraded.degraded and not trusted.degraded
    values = {
        "transaction_id": "t-1",
        "model_version": "3",
        "fraud_score": 0.25,
        "decision": "review",
        "logit": -1.0986,
        "base_value": -4.2,
        "contributions": [FeatureContribution(feature="amount", value=12.5, contribution=0.7)],
        "from_history": False,
    }
    assert Explanation.trusted(**values) == Explanation(**values)
