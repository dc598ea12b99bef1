"""The engine's answer structs are the API's response models in another form: same fields in
the same order, JSON that the pydantic models validate, and the same values back."""

import json
import math
import uuid

import msgspec
import pytest

from serving.answers import Reason, Scored, ScoredBatch, as_model, decode_scored, encode
from serving.schemas import BatchResponse, FraudScore, ReasonCode


@pytest.mark.parametrize(
    ("struct", "model"),
    [(Reason, ReasonCode), (Scored, FraudScore), (ScoredBatch, BatchResponse)],
)
def test_same_fields_in_the_same_order(struct: type, model: type) -> None:
    assert struct.__struct_fields__ == tuple(model.model_fields)


def _answer(score: float = 0.8312, reasons: int = 3) -> Scored:
    return Scored(
        prediction_id=uuid.uuid4(),
        transaction_id="t-ü-1",
        fraud_score=score,
        decision="decline",
        is_fraud=True,
        reason_codes=[Reason(f"feature_{k}", 1e-7 * k, 2.5 / (k + 1)) for k in range(reasons)],
        model_version="12",
        latency_ms=0.731,
        degraded=False,
    )


@pytest.mark.parametrize("score", [0.0, 1.0, 1e-12, 0.1 + 0.2, 0.999999999])
def test_json_validates_as_the_model_with_the_same_values(score: float) -> None:
    answer = _answer(score)
    model = FraudScore.model_validate_json(encode(answer))
    assert model.prediction_id == answer.prediction_id
    assert model.fraud_score == answer.fraud_score  # floats round-trip exactly
    assert [(r.feature, r.value, r.contribution) for r in model.reason_codes] == [
        (r.feature, r.value, r.contribution) for r in answer.reason_codes
    ]
    assert json.loads(encode(answer)) == json.loads(model.model_dump_json())
    assert decode_scored(encode(answer)) == answer
    assert decode_scored(model.model_dump_json()) == answer


def test_batch_and_conversion_for_bentoml_methods() -> None:
    answers = [_answer(reasons=k) for k in range(4)]
    batch = ScoredBatch(results=answers)
    as_pydantic = as_model(batch, BatchResponse)
    assert isinstance(as_pydantic, BatchResponse)
    assert json.loads(encode(batch)) == json.loads(as_pydantic.model_dump_json())
    single = as_model(answers[0], FraudScore)
    assert isinstance(single, FraudScore) and single.transaction_id == "t-ü-1"


def test_degraded_copy_changes_one_field() -> None:
    answer = _answer()
    degraded = msgspec.structs.replace(answer, degraded=True)
    assert degraded.degraded and not answer.degraded
    assert msgspec.structs.asdict(degraded) | {"degraded": False} == msgspec.structs.asdict(answer)


def test_non_finite_values_are_written_as_pydantic_writes_them() -> None:
    for value in (math.nan, math.inf, -math.inf):
        model = ReasonCode.trusted(feature="a", value=value, contribution=1.5)
        assert encode(Reason("a", value, 1.5)) == model.model_dump_json().encode()
