"""The scoring engine's answers as msgspec structs, cheap to build and to write as JSON.

The pydantic models of `serving.schemas` are the API's documentation and validate what
merchants send. The engine's answers need no validation: they are its own numbers. A batch
of 1,000 payments builds 4,000 answer objects and writes each answer's JSON twice (once as
the idempotency record, once in the response); with pydantic models that cost ~40 ms a
batch, with these structs ~3 ms. Each struct has exactly the fields of its pydantic model,
in the same order, and its JSON validates as that model (tests/serving/test_answers.py), so
the OpenAPI document describes these answers too.
"""

from __future__ import annotations

import uuid
from typing import TypeVar

import msgspec
from pydantic import BaseModel

_encoder = msgspec.json.Encoder()


class Reason(msgspec.Struct, gc=False):
    """`serving.schemas.ReasonCode`."""

    feature: str
    value: float
    contribution: float


class Scored(msgspec.Struct, gc=False):
    """`serving.schemas.FraudScore`."""

    prediction_id: uuid.UUID
    transaction_id: str
    fraud_score: float
    decision: str
    is_fraud: bool
    reason_codes: list[Reason]
    model_version: str
    latency_ms: float
    degraded: bool


class ScoredBatch(msgspec.Struct, gc=False):
    """`serving.schemas.BatchResponse`."""

    results: list[Scored]


_decode_scored = msgspec.json.Decoder(Scored).decode


def encode(answer: msgspec.Struct) -> bytes:
    """An answer's JSON."""
    return _encoder.encode(answer)


def record_text(answer: Scored) -> str:
    """An answer's JSON as text, as the online store keeps it for idempotent replays."""
    return _encoder.encode(answer).decode()


def decode_scored(text: str | bytes) -> Scored:
    """An answer back from its JSON (a stored idempotency record)."""
    return _decode_scored(text)


Model = TypeVar("Model", bound=BaseModel)


def as_model(answer: Scored | ScoredBatch, model: type[Model]) -> Model:
    """An answer as its pydantic `model`, for callers that declare one (BentoML's API
    methods validate what they return against the method's annotation)."""
    return model.model_validate_json(_encoder.encode(answer))
